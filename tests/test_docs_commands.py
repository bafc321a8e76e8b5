"""Every command the docs mark runnable runs, so the docs cannot drift from the CLI.

The convention (docs/runnable.md): an HTML comment ``<!-- runnable -->`` on the line
before a fenced block marks it. MkDocs and GitHub render the comment as nothing, so the
reader sees an ordinary block. In such a block a line starting with ``$ `` is a command
(a line ending in ``\\`` continues it); every other line is output, shown for the reader
and not compared here: the pages show the packaged SmolLM2's output, the test runs a tiny
random Llama. Each page's blocks run in order, in a fresh directory holding a copy of
``docs/examples``, with ``EMBRM_STORE`` a fresh store, ``$MODEL`` the tiny model (the
fixture of conftest.py) and ``$MODEL_KEY`` its fingerprint's hash, computed here without
the CLI. Each command must exit 0.

A second test keeps every page of docs/ in mkdocs.yml's nav, so none is orphaned.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MARK = "<!-- runnable -->"
BLOCK = re.compile(r"^<!-- runnable -->[ \t]*\n(```)[^\n]*\n(.*?)\n\1[ \t]*$", re.M | re.S)
# A block fenced with four or more backticks shows markdown source (docs/runnable.md's
# example of the convention): what it quotes is not run.
QUOTED = re.compile(r"^(`{4,})[^\n]*\n.*?^\1[ \t]*$", re.M | re.S)
COMMAND_TIMEOUT_S = 120


def runnable_blocks(text: str) -> list[list[str]]:
    """The commands of each runnable block in ``text``, in order, continuation lines joined."""
    text = QUOTED.sub("", text)
    if text.count(MARK) != len(BLOCK.findall(text)):
        raise ValueError(f"a {MARK} comment is not directly followed by a fenced block")
    blocks = []
    for _fence, body in BLOCK.findall(text):
        cmds: list[str] = []
        pending: str | None = None
        for line in body.splitlines():
            if pending is not None:
                pending += "\n" + line
            elif line.startswith("$ "):
                pending = line[2:]
            else:
                continue
            if not pending.endswith("\\"):
                cmds.append(pending)
                pending = None
        if pending is not None:
            raise ValueError(f"a command ends in a continuation: {pending!r}")
        blocks.append(cmds)
    return blocks


def doc_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def pages_with_commands() -> list[Path]:
    return [p for p in doc_pages() if any(runnable_blocks(p.read_text()))]


def test_runnable_blocks_parse_commands_and_skip_output() -> None:
    text = ("intro\n\n<!-- runnable -->\n```console\n$ embrm store ls\nMODEL  DATASET\n"
            "$ embrm train --model-key \"$MODEL_KEY\" \\\n    --out runs/x\ntrained\n```\n\n"
            "```console\n$ embrm serve\n```\n"
            "````markdown\n<!-- runnable -->\n```console\n$ embrm quoted\n```\n````\n")
    assert runnable_blocks(text) == [["embrm store ls", 'embrm train --model-key "$MODEL_KEY" \\\n    --out runs/x']]
    with pytest.raises(ValueError, match="not directly followed"):
        runnable_blocks("<!-- runnable -->\n\ntext\n")


def test_the_docs_mark_enough_commands_runnable() -> None:
    """The convention is in use: the tour and the CLI examples across the pages."""
    per_page = {p.relative_to(ROOT).as_posix(): sum(len(b) for b in runnable_blocks(p.read_text()))
                for p in pages_with_commands()}
    assert per_page.get("README.md", 0) >= 4, per_page
    assert len(per_page) >= 5, per_page
    assert sum(per_page.values()) >= 25, per_page


@pytest.fixture(scope="session")
def docs_env(tiny_model: Path) -> dict[str, str]:
    from embrm.extractor import EmbeddingSpec
    from embrm.extractor.embedder import Embedder

    model_hash = Embedder(EmbeddingSpec(model=str(tiny_model))).model_hash
    bindir = str(Path(sys.executable).parent)
    return {"MODEL": str(tiny_model), "MODEL_KEY": model_hash[:12],
            "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.mark.slow
@pytest.mark.parametrize("page", pages_with_commands(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_commands_run(page: Path, docs_env: dict[str, str], tmp_path: Path) -> None:
    """Every runnable command of one page exits 0, in order, against a tiny model and a fresh store."""
    shutil.copytree(DOCS / "examples", tmp_path / "docs" / "examples")
    env = {**os.environ, **docs_env, "EMBRM_STORE": str(tmp_path / "store"), "HF_HUB_OFFLINE": "1"}
    ran = 0
    for block in runnable_blocks(page.read_text()):
        for cmd in block:
            t0 = time.monotonic()
            proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
            took = time.monotonic() - t0
            assert proc.returncode == 0, (f"{page.name}: `{cmd}` exited {proc.returncode} after {took:.1f} s\n"
                                          f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
            ran += 1
    assert ran > 0


def nav_files(node: object) -> list[str]:
    """Every page file named anywhere in an mkdocs nav."""
    if isinstance(node, str):
        return [node] if node.endswith(".md") else []
    if isinstance(node, dict):
        return [f for v in node.values() for f in nav_files(v)]
    if isinstance(node, list):
        return [f for v in node for f in nav_files(v)]
    return []


def test_every_docs_page_is_in_the_nav() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML comes with mkdocs (`make docs`)")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["docs_dir"] == "docs"
    in_nav = nav_files(config["nav"])
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(set(in_nav)) == sorted(in_nav), "a page is in the nav twice"
    assert [p for p in pages if p not in in_nav] == [], "pages of docs/ missing from mkdocs.yml's nav"
    assert [p for p in in_nav if p not in pages] == [], "nav entries with no page in docs/"


def heading_anchors(markdown: str) -> set[str]:
    """The ids MkDocs (Python-Markdown's toc) gives the headings of a page."""
    text = QUOTED.sub("", re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S))
    anchors = set()
    for title in re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.M):
        plain = re.sub(r"[^\w\s-]", "", title.replace("`", "")).strip().lower()
        anchors.add(re.sub(r"[-\s]+", "-", plain))
    return anchors


def test_readme_links_resolve() -> None:
    """README.md is outside the MkDocs build, so its links to pages, anchors and images are checked here."""
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [u for u in links if not re.match(r"[a-z]+://", u)]
    assert len(local) >= 10, local
    broken = []
    for url in local:
        path, _, anchor = url.partition("#")
        target = ROOT / path if path else ROOT / "README.md"
        if not target.is_file():
            broken.append(url)
        elif anchor and anchor not in heading_anchors(target.read_text()):
            broken.append(url)
    assert broken == []
