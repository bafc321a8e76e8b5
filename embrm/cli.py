"""The ``embrm`` command line: a thin layer over the Python API.

Commands are imported only when used (see :class:`~embrm.options.EmbrmGroup`), so
``embrm --help`` and ``embrm store ls`` start without torch or transformers. Every
user error prints one ``error:`` line and exits 2.
"""
from __future__ import annotations

import click

from embrm import __version__
from embrm.options import EmbrmGroup

COMMANDS = {
    "store": "embrm.store.cli:store",
    "extract": "embrm.extractor.cli:extract_cmd",
    "serve": "embrm.serve.cli:serve_cmd",
    "train": "embrm.rm.cli:train_cmd",
    "eval": "embrm.rm.cli:eval_cmd",
    "score": "embrm.pipeline.cli:score_cmd",
    "rerank": "embrm.pipeline.cli:rerank_cmd",
    "rm": "embrm.store.cli:rm_group",
    "generate": "embrm.pipeline.cli:generate_cmd",
    "annotate": "embrm.pipeline.cli:annotate_cmd",
    "demo": "embrm.pipeline.cli:demo_cmd",
    "reproduce": "embrm.pipeline.cli:reproduce",
    "active": "embrm.pipeline.cli:active",
    "bench": "embrm.pipeline.compare_cli:bench_cmd",
}


@click.group(cls=EmbrmGroup, lazy=COMMANDS)
@click.version_option(__version__, prog_name="embrm")
def main() -> None:
    """Reward-model research on reusable LLM embeddings."""


if __name__ == "__main__":
    main()
