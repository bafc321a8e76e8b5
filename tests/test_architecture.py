"""The shape the code keeps: no import circles, layers that do not reach up, one place that
reads a store URI, and every backend behind one interface."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from embrm.cli import main as cli
from embrm.errors import EmbrmError
from embrm.store import LocalStore, ObjectStore, ServiceStore, Store, open_store

PKG = Path(__file__).resolve().parents[1] / "embrm"


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _runtime_imports(path: Path) -> set[str]:
    """Modules of embrm this file imports when it runs: at top level or inside functions,
    but not under ``if TYPE_CHECKING:`` (annotations only)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for b in node.body for n in ast.walk(b)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("embrm")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("embrm") and not node.level:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PKG.rglob("*.py")}
    return {m: {i for i in _runtime_imports(p) if i in files and i != m} for m, p in files.items()}


def test_no_module_imports_itself_back_through_others():
    graph = _graph()
    # a package's __init__ re-exporting its modules is not a circle of logic: leave those edges out
    edges = {m: {d for d in deps if not (m.startswith(d + ".") and d in graph)} for m, deps in graph.items()}
    seen: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        seen[m] = 1
        for d in edges[m]:
            if seen.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in seen:
                visit(d, [*stack, d])
        seen[m] = 2

    for m in sorted(edges):
        if m not in seen:
            visit(m, [m])
    assert not cycles, cycles[:5]


@pytest.mark.parametrize("layer,forbidden", [("embrm.store", {"torch", "transformers", "embrm.rm", "embrm.serve",
                                                                "embrm.extractor"}),
                                             ("embrm.rm", {"transformers", "embrm.extractor", "embrm.serve"}),
                                             ("embrm.runformat", {"torch", "embrm.store", "embrm.rm"})])
def test_layers_do_not_reach_up(layer, forbidden):
    bad = []
    for p in PKG.rglob("*.py"):
        m = _module(p)
        if m != layer and not m.startswith(layer + "."):
            continue
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad += [(m, n) for n in names if any(n == f or n.startswith(f + ".") for f in forbidden)]
    assert not bad, bad


def test_only_the_location_module_reads_a_store_uri():
    """Scheme tests on store URIs live in store/location.py; everything else asks the backend."""
    offenders = []
    for p in PKG.rglob("*.py"):
        text = p.read_text()
        if p.name == "location.py":
            continue
        for needle in ('startswith(("http://"', "is_remote(", '"://" in uri', "'://' in uri", "'s3://')"):
            if needle in text:
                offenders.append((p.relative_to(PKG), needle))
    assert not offenders, offenders


def test_open_store_returns_one_backend_per_kind_of_place(tmp_path):
    local = open_store(tmp_path / "s", create=True)
    assert isinstance(local, LocalStore) and isinstance(local, Store) and local.backend == "local disk"
    service = open_store("http://127.0.0.1:9")
    assert isinstance(service, ServiceStore) and service.backend == "service"
    assert issubclass(ObjectStore, Store) and ObjectStore.backend == "object storage"
    with pytest.raises(EmbrmError, match="scheme ftp:// is not supported"):
        open_store("ftp://host/x")
    with pytest.raises(EmbrmError, match=r"embrm serve is not possible on a store on service \(http://127.0.0.1:9\)"):
        service.check_engine("local", "embrm serve")
    assert local.check_engine("local", "x") is None and local.extraction_engines() == ("local", "ray")


def test_commands_refuse_what_a_backend_cannot_do_in_one_line(tmp_path):
    r = CliRunner()
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n')
    res = r.invoke(cli, ["extract", "--dataset", str(data), "--store", "http://127.0.0.1:9", "--engine", "ray"])
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "is a service" in res.output
    res = r.invoke(cli, ["serve", "--store", "http://127.0.0.1:9", "--model", str(tmp_path)])
    assert res.exit_code == 2 and res.output.count("\n") == 1
    assert "embrm serve is not possible on a store on service" in res.output
    res = r.invoke(cli, ["extract", "--dataset", str(data), "--store", "http://127.0.0.1:9", "--server",
                         "http://127.0.0.1:9"])
    assert res.exit_code == 2 and "give one of them" in res.output


STORE_PARTS = {"rows", "vectors", "writer", "catalog", "registry", "reader", "tables", "cache"}


def _outside(package: str) -> list[Path]:
    return [p for p in PKG.rglob("*.py") if not _module(p).startswith(package)]


def test_no_module_outside_the_store_calls_a_store_part():
    """Callers write and read through Store's methods (its write protocol included), never
    through a backend's parts: ``store.rows.write`` and the like stay inside ``store/``."""
    bad = []
    for p in _outside("embrm.store"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in STORE_PARTS and \
                    ast.unparse(node.value).split(".")[-1] == "store":
                bad.append((str(p.relative_to(PKG)), node.lineno, ast.unparse(node)))
    assert not bad, bad


def test_the_store_interface_names_no_backend():
    """store/base.py is the interface: it imports no backend, even for annotations."""
    text = (PKG / "store" / "base.py").read_text()
    imported = {n for n in _runtime_imports(PKG / "store" / "base.py")}
    tree = ast.parse(text)
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    backends = {"embrm.store.lance_store", "embrm.store.service", "embrm.store.object_store", "embrm.store.tables",
                "embrm.store.backends"}
    assert not imported & backends, imported & backends
    assert "LanceStore" not in text and "ServiceStore" not in text.split('"""', 2)[2]


def test_the_engine_is_chosen_by_asking_the_store():
    text = (PKG / "extractor" / "engines" / "__init__.py").read_text()
    assert "isinstance" not in text and "extraction_engines()" in text


def test_service_jobs_run_through_the_extract_pipeline():
    """One pipeline: a dataset job registers, runs and finishes through the function
    `embrm extract` uses, not a copy of its steps."""
    text = (PKG / "serve" / "jobs.py").read_text()
    assert "execute(" in text and "finish_entry" not in text
    assert "execute(" in (PKG / "extractor" / "engines" / "planned.py").read_text().split("def run_planned", 1)[1]


def _store_reaches() -> set[str]:
    """Every embrm module outside store/ that a store module imports, lazily or not."""
    graph = _graph()
    return {d for m, deps in graph.items() if m.startswith("embrm.store") for d in deps
            if not d.startswith("embrm.store") and d != "embrm"}


def test_no_loop_between_the_store_and_the_modules_above_it():
    """What store/ imports from outside itself (errors, paths, runformat...) never
    imports store/ back, however indirectly: the store is a layer, not a knot."""
    graph = _graph()
    loops = []
    for start in sorted(_store_reaches()):
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m in seen:
                continue
            seen.add(m)
            todo += list(graph.get(m, ()))
        back = sorted(m for m in seen if m.startswith("embrm.store"))
        if back:
            loops.append((start, back[:3]))
    assert not loops, loops


def _functions() -> list[tuple[Path, ast.FunctionDef | ast.AsyncFunctionDef]]:
    return [(p, fn) for p in sorted(PKG.rglob("*.py")) for fn in ast.walk(ast.parse(p.read_text()))
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_no_function_level_imports_of_the_standard_library():
    """A standard-library import inside a function has no reason to be lazy: it is cheap
    and always there (lazy imports are for heavy optional packages: torch, ray, fastapi)."""
    lazy = []
    for p, fn in _functions():
        for node in ast.walk(fn):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            lazy += [(str(p.relative_to(PKG)), fn.name, n) for n in names if n.split(".")[0] in sys.stdlib_module_names]
    assert len(lazy) == 0, lazy  # 19 before issue 29


def test_no_function_over_80_lines():
    long = [(str(p.relative_to(PKG)), fn.name, fn.end_lineno - fn.lineno + 1) for p, fn in _functions()
            if fn.end_lineno - fn.lineno + 1 > 80]
    assert len(long) == 0, long  # 2 before issue 29: trainer.train (103), run_local (86)


def test_no_route_module_imports_another():
    """Routes are thin: what two routes share (request models, item checks) lives in
    serve/protocol/, so no route module imports another."""
    routes = {_module(p) for p in (PKG / "serve" / "routes").glob("*.py") if p.name != "__init__.py"}
    bad = []
    for p in (PKG / "serve" / "routes").glob("*.py"):
        tree = ast.parse(p.read_text())
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | \
            {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                  for a in n.names}
        bad += [(p.name, m) for m in names & routes if m != _module(p)]
    assert not bad, bad


def test_no_lazy_name_of_the_store_package_is_also_a_module_name():
    """``embrm.store`` hands out its names lazily; a submodule of the same spelling, once
    imported, would be what ``from embrm.store import NAME`` returns (a module, not the
    function): that broke ``export`` once, depending on the order tests ran in."""
    import embrm.store as pkg

    modules = {p.stem for p in (PKG / "store").glob("*.py")}
    assert not modules & set(pkg._WHERE), modules & set(pkg._WHERE)
