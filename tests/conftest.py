"""Shared fixtures: real LanceDB stores in tmp_path, tiny real transformers models."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
HH_RLHF = SHARED / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _private_load_cache(tmp_path_factory, monkeypatch) -> None:
    """Each test's load materialisations go to a folder of its own, never ~/.cache."""
    monkeypatch.setenv("EMBRM_CACHE", str(tmp_path_factory.mktemp("embrm-cache")))


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def py() -> str:
    return sys.executable


def build_tiny_model(path: Path, vocab_words: list[str] | None = None, layers: int = 2, hidden: int = 32) -> Path:
    """A randomly initialised 2-layer Llama with a real fast tokenizer and chat template,
    saved with save_pretrained, so the real loading code runs in seconds."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = vocab_words or []
    alphabet = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for tok in alphabet + words:
        vocab.setdefault(tok, len(vocab))
    tk = Tokenizer(models.WordPiece(vocab=vocab, unk_token="<unk>", max_input_chars_per_word=1000))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")  # one token per character
    tk.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
                          "{% if add_generation_prompt %}<assistant>{% endif %}")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(cfg)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


def extract_config(dataset, model=None, store=None, **kw):
    """An ExtractConfig from flat keyword arguments, as the tests like to write them."""
    from dataclasses import fields

    from embrm.extractor.datasets import DatasetSpec
    from embrm.extractor.embedder import EmbeddingSpec
    from embrm.extractor.extraction import ExtractConfig, RunOptions

    parts = {}
    for cls in (DatasetSpec, EmbeddingSpec, RunOptions):
        names = {f.name for f in fields(cls)}
        parts[cls] = {k: kw.pop(k) for k in list(kw) if k in names}
    assert not kw, f"unknown options {kw}"
    emb = parts[EmbeddingSpec]
    if model is not None:
        emb["model"] = str(model)
    run = parts[RunOptions]
    if store is not None:
        run["store"] = str(store)
    return ExtractConfig(DatasetSpec(str(dataset), **parts[DatasetSpec]), EmbeddingSpec(**emb), RunOptions(**run))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """A real S3-compatible server (moto in server mode) on a loopback port, with
    credentials checked: an IAM user's key works, anything else is refused."""

    SECRET_HINT = "embrm-test-secret"

    def __init__(self, tmp: Path):
        import subprocess
        import time
        import urllib.request

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4", "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
        self.log = open(tmp / "moto.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/data.json", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.2)
        import boto3

        boot = dict(endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id="boot",
                    aws_secret_access_key="boot")
        iam = boto3.client("iam", **boot)  # the first requests are unauthenticated: make a user
        iam.create_user(UserName="embrm")
        iam.put_user_policy(UserName="embrm", PolicyName="all", PolicyDocument='{"Version": "2012-10-17", '
                            '"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}')
        key = iam.create_access_key(UserName="embrm")["AccessKey"]
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        self.client("s3").create_bucket(Bucket="embrm")

    def env(self, secret: str | None = None) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": secret or self.secret,
                "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint}

    def client(self, service: str):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.key_id, aws_secret_access_key=self.secret)

    def keys(self, prefix: str) -> list[str]:
        out, token = [], None
        while True:
            kw = {"Bucket": "embrm", "Prefix": prefix, **({"ContinuationToken": token} if token else {})}
            page = self.client("s3").list_objects_v2(**kw)
            out += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return out
            token = page["NextContinuationToken"]

    def stop(self) -> None:
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except Exception:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    pytest.importorskip("moto")
    server = S3Server(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, request):
    """The environment of a user of ``s3://embrm/<test>``: the standard AWS variables."""
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    s3_server.uri = f"s3://embrm/{request.node.name[:40]}"
    return s3_server
