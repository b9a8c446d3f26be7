"""The command layer: `mmbert --help` lists every command, each command parses its options, an
expected failure is one line on stderr and exit status 2 (`--debug` adds the traceback), and no
module outside `mmbert/cli/` parses arguments."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from mmbert import cli

PACKAGE = Path(cli.__file__).resolve().parents[1]  # src/mmbert


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    usage = capsys.readouterr().out
    for name, (_, help_) in cli.COMMANDS.items():
        assert re.search(rf"^  {re.escape(name)} +{re.escape(help_)}$", usage, re.MULTILINE), name


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([name, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: mmbert {name}")


def test_expected_failure_is_one_line_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    assert cli.main(["plan", str(missing), "--released-counts"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mmbert plan: error: ") and "missing.yaml" in err
    assert cli.main(["plan", str(missing), "--released-counts", "--debug"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last)")
    assert err.splitlines()[-1].startswith("mmbert plan: error: ")


def test_no_argument_parsing_outside_the_command_layer():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "cli") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            if any(m == "argparse" or m.startswith("argparse.") for m in modules):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []
