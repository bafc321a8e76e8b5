"""The command line as a whole: light imports, every --help, every list option's bad value."""
from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from embrm.cli import COMMANDS
from embrm.cli import main as cli
from embrm.options import ChoiceList, ListParam


def _commands() -> list[tuple[list[str], click.Command]]:
    """Every command and subcommand, found from the CLI itself (a new one cannot be missed)."""
    ctx = click.Context(cli)
    out = []

    def walk(path: list[str], cmd: click.Command) -> None:
        out.append((path, cmd))
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                walk([*path, name], cmd.get_command(ctx, name))

    for name in cli.list_commands(ctx):
        walk([name], cli.get_command(ctx, name))
    return out


@pytest.mark.parametrize("module", ["embrm.cli", "embrm.store", "embrm.extractor", "embrm.rm"])
def test_light_imports_pull_no_torch_or_transformers(module):
    code = (f"import sys, {module}; heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; "
            "print(','.join(heavy))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "", f"import {module} pulled in {res.stdout.strip()}"


def test_every_command_has_help_and_is_listed():
    assert {p[0] for p, _ in _commands()} == set(COMMANDS)
    r = CliRunner()
    for path, _ in [([], cli), *_commands()]:
        res = r.invoke(cli, [*path, "--help"])
        assert res.exit_code == 0 and "Usage:" in res.output, (path, res.output)


def test_every_list_option_refuses_a_bad_value_in_one_line():
    r = CliRunner()
    checked = 0
    for path, cmd in _commands():
        for p in cmd.params:
            if not isinstance(p.type, (ListParam, ChoiceList)):
                continue
            opt = p.opts[0]
            for bad in ("1,x", ""):
                res = r.invoke(cli, [*path, opt, bad])
                lines = res.output.strip().splitlines()
                assert res.exit_code == 2, (path, opt, bad, res.output)
                assert len(lines) == 1 and lines[0].startswith("error: ") and opt in lines[0], (path, opt, lines)
                assert "Traceback" not in res.output
            checked += 1
    assert checked >= 8  # layers, hidden, bon (train, eval, reproduce), qualities, methods, ...


def test_usage_errors_are_one_line_too():
    r = CliRunner()
    for args in (["train"], ["nonsense"], ["store", "ls", "--bogus"],
                 ["extract", "--dataset", "x", "--max-length", "1"],
                 ["reproduce", "ensemble", "--model-key", "m", "--dataset-key", "d", "--out", "o", "--hidden", "10,a"]):
        res = r.invoke(cli, args)
        lines = res.output.strip().splitlines()
        assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args, res.output)


def test_store_option_honours_the_environment_everywhere(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBRM_STORE", str(tmp_path / "from-env"))
    r = CliRunner()
    res = r.invoke(cli, ["store", "ls"])
    assert res.exit_code == 2 and "from-env" in res.output
    with_store = [path for path, cmd in _commands() if any(p.name == "store_uri" for p in cmd.params)]
    assert {"demo", "extract", "train", "eval", "score"} <= {p[0] for p in with_store}
    for path, cmd in _commands():
        for p in cmd.params:
            if p.name == "store_uri":
                assert p.envvar == "EMBRM_STORE" and p.default is None, path
