"""Run a transformers model over (prompt, response) pairs and store pooled vectors."""
from embrm.extractor.datasets import Columns, DatasetSpec, iter_rows
from embrm.extractor.extract import ExtractConfig, ExtractResult, extract

__all__ = ["Columns", "DatasetSpec", "ExtractConfig", "ExtractResult", "extract", "iter_rows"]
