"""What names an extraction: which data (:class:`~embrm.extractor.datasets.DatasetSpec`),
which embedding (:class:`~embrm.extractor.embedder.EmbeddingSpec`), how to run it."""
from __future__ import annotations

from dataclasses import dataclass

from embrm.errors import EmbrmError
from embrm.extractor.datasets import DatasetSpec
from embrm.extractor.embedder import EmbeddingSpec


@dataclass(frozen=True)
class RunOptions:
    """How to run an extraction; nothing here changes a vector."""

    device: str = "auto"
    batch_tokens: int | None = None  # None: 2048 padded tokens on CPU, 32768 on GPUs
    window: int = 1024  # rows per store commit: a crash loses at most one
    store: str | None = None  # None: $EMBRM_STORE or ./embrm-store
    quiet: bool = False

    def validate(self) -> None:
        if self.window < 1:
            raise EmbrmError("--window must be positive")
        if self.batch_tokens is not None and self.batch_tokens < 1:
            raise EmbrmError("--batch-tokens must be positive")


@dataclass
class ExtractConfig:
    """An extraction: which data, which embedding, how to run.

    ``embedding`` None means "the engine's default": :class:`EmbeddingSpec`'s defaults
    here, the served model's settings on a service.
    """

    data: DatasetSpec
    embedding: EmbeddingSpec | None = None
    run: RunOptions = RunOptions()

    @property
    def spec(self) -> EmbeddingSpec:
        return self.embedding or EmbeddingSpec()

    def validate(self) -> None:
        self.data.validate()
        self.spec.validate()
        self.run.validate()
