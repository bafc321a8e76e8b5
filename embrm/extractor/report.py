"""What an extraction tells its user: counts of one run, the result, a progress bar."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from embrm.store.keys import short


@dataclass
class LoopCounts:
    """What one run of the loop did."""

    computed: int = 0
    cached: int = 0  # rows whose item was stored before this run
    duplicates: int = 0  # rows whose item appeared earlier in this dataset (computed once)
    tokens: int = 0
    compute_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.compute_seconds if self.compute_seconds else 0.0


@dataclass
class ExtractResult:
    model_name: str
    model_hash: str
    dataset_name: str
    dataset_hash: str
    kind: str
    rows: int
    computed: int
    cached: int
    skipped: int  # bad records skipped with skip_bad_rows
    duplicates: int  # rows whose item appeared earlier in this dataset (computed once)
    truncated: int
    tokens: int
    seconds: float
    compute_seconds: float
    model_loaded: bool
    status: str

    def report(self) -> str:
        tps = self.tokens / self.compute_seconds if self.compute_seconds else 0.0
        return "\n".join([
            f"model    {self.model_name}  [{short(self.model_hash)}]",
            f"dataset  {self.dataset_name}  [{short(self.dataset_hash)}]  ({self.kind}, {self.rows} rows)",
            f"computed {self.computed}   cached {self.cached}   duplicates {self.duplicates}   "
            f"truncated {self.truncated}   skipped {self.skipped}   status {self.status}",
            f"time     {self.seconds:.1f} s" + (f"   {tps:,.0f} tok/s in forward passes" if self.model_loaded
                                                else "   (all cached: model not loaded)"),
        ])


def progress_bar(total: int, desc: str, quiet: bool, unit: str = "row") -> Any:
    """A tqdm bar, or None when quiet."""
    if quiet:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True)
