"""Synthetic inputs for the GPU check: random-weight Llama models, an in-process
tokenizer, HH-RLHF-shaped texts and reward-model data. Nothing here reads the network,
the packaged GGUF or a store.

* Models: ``LlamaModel`` with random weights in the SmolLM2-135M shape and in a 1B-class
  shape (Llama-3.2-1B's hidden size, depth, heads and MLP width; a 32k vocabulary),
  saved with ``save_pretrained`` next to their tokenizer, so that ``EmbeddingSpec(model=dir)``
  loads them through embrm's own code.
* Tokenizer: a word-level ``tokenizers`` model (words ``w4``, ``w5``, ... one token each,
  ``<s>`` prepended), so a text of k words is exactly k + 1 tokens.
* Texts: lengths drawn from a log-normal fitted to HH-RLHF harmless-base under the
  SmolLM2 tokenizer (log-std 0.79; its 2312 x 2 texts: median 136 tokens, p99 646, max
  996) and centred so that the mean after truncation to 512 tokens is about 143 (the
  mean of the 96 items that ``bench_extract.py`` times); 2-3% of items are longer than
  512; about 30% of each item is the response (HH: 45 of 170 tokens).
* Reward data: as ``benchmarks/bench_rm.py``: Gaussian embeddings, reward
  ``2 tanh(x w1) + x w2``, pairs of neighbouring items, perfect labels.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from embrm.rm.pairs import Pairs

LOG_MU, LOG_SIGMA = 4.685, 0.79  # mean 148 tokens, 143 once truncated to 512
RESPONSE_SHARE = 0.3


@dataclass(frozen=True)
class Shape:
    """A Llama configuration (the fields LlamaConfig takes, plus a name)."""

    name: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int

    def config(self) -> dict:
        d = asdict(self)
        d.pop("name")
        return d


SHAPES = {
    "smollm2-135m": Shape("smollm2-135m", 576, 30, 9, 3, 1536, 49152),
    "llama-1b": Shape("llama-1b", 2048, 16, 32, 8, 8192, 32000),
}
SMOKE_SHAPES = {  # the same code on 2 CPU cores in seconds
    "smollm2-135m": Shape("smollm2-135m", 64, 2, 4, 2, 128, 1000),
    "llama-1b": Shape("llama-1b", 128, 2, 4, 2, 256, 2000),
}


def build_tokenizer(vocab_size: int):
    """A fast word-level tokenizer with ``vocab_size`` entries: <pad> <s> </s> <unk> w4 w5 ..."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({f"w{i}": i for i in range(4, vocab_size)})
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B:1",
                                                      special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def build_model(shape: Shape, path: Path, device: str = "cpu", seed: int = 0) -> Path:
    """Random-weight ``LlamaModel`` of ``shape`` plus its tokenizer, saved (bf16) to ``path``.

    Initialised on ``device`` (a 1B model initialises in a blink on a GPU, in tens of
    seconds on a CPU), moved to the CPU and written with ``save_pretrained``.
    """
    import torch
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(seed)
    cfg = LlamaConfig(**shape.config(), max_position_embeddings=2048, pad_token_id=0, bos_token_id=1,
                      eos_token_id=2, tie_word_embeddings=True)
    with torch.device(device):
        model = LlamaModel(cfg)
    model = model.to(torch.bfloat16).to("cpu")
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    build_tokenizer(shape.vocab_size).save_pretrained(path)
    del model
    return path


def lengths(n: int, seed: int = 0) -> np.ndarray:
    """Token counts (BOS included) of ``n`` items, HH-RLHF-shaped (see the module doc)."""
    rng = np.random.default_rng(seed)
    return np.maximum(3, np.rint(rng.lognormal(LOG_MU, LOG_SIGMA, n))).astype(int)


def texts(n: int, vocab_size: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` (prompt, response) pairs of random words whose token counts follow :func:`lengths`.

    The raw format joins prompt and response, so the response starts with a space.
    """
    rng = np.random.default_rng([seed, 1])
    prompts, responses = [], []
    for k in lengths(n, seed) - 1:  # words; the tokenizer adds <s>
        words = [f"w{i}" for i in rng.integers(4, vocab_size, k)]
        r = min(k - 1, max(1, int(round(k * RESPONSE_SHARE))))
        prompts.append(" ".join(words[:k - r]))
        responses.append(" " + " ".join(words[k - r:]))
    return prompts, responses


def reward_data(dim: int, n_pairs: int, n_val: int, seed: int = 0) -> tuple[np.ndarray, Pairs, Pairs]:
    """Embeddings (float32), training and validation pairs with perfect labels, as bench_rm.data."""
    rng = np.random.default_rng(seed)
    n_items = 2 * (n_pairs + n_val)
    x = rng.standard_normal((n_items, dim), dtype=np.float32)
    w1, w2 = (rng.standard_normal((2, dim), dtype=np.float32) / np.sqrt(dim)).astype(np.float32)
    r = np.tanh(x @ w1) * 2 + x @ w2
    a = np.arange(0, n_items, 2)
    b = a + 1
    y = (r[a] > r[b]).astype(np.float32)
    pid = np.arange(len(a))
    return x, Pairs(a[:n_pairs], b[:n_pairs], y[:n_pairs], pid[:n_pairs]), \
        Pairs(a[n_pairs:], b[n_pairs:], y[n_pairs:], pid[n_pairs:])
