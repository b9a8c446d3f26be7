"""The command layer: `mmbert --help` lists every command, each command parses its options, an
expected failure is one line on stderr and exit status 2 (`--debug` adds the traceback), and no
module outside `mmbert/cli/` parses arguments."""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pytest

from mmbert import cli
from mmbert.recipe import load_recipe
from tests.conftest import make_tiny_export

PACKAGE = Path(cli.__file__).resolve().parents[1]  # src/mmbert


def test_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    usage = capsys.readouterr().out
    for name, help_ in cli.COMMANDS.items():
        assert re.search(rf"^  {re.escape(name)} +{re.escape(help_)}$", usage, re.MULTILINE), name


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([name, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: mmbert {name}")


def test_expected_failure_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "missing.yaml"
    assert cli.main(["plan", str(missing), "--released-counts"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mmbert plan: error: ") and "missing.yaml" in err
    assert cli.main(["plan", str(missing), "--released-counts", "--debug"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last)")
    assert err.splitlines()[-1].startswith("mmbert plan: error: ")
    monkeypatch.setenv(cli.DEBUG_ENV, "1")  # the environment variable, for a command run by a script
    assert cli.main(["plan", str(missing), "--released-counts"]) == 2
    assert capsys.readouterr().err.startswith("Traceback (most recent call last)")


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


# ---------------------------------------------------------------------------------------------- options
def _parsers(parser: argparse.ArgumentParser):
    """A command's parser and its sub-commands' (`tokenizer train|info|adapt`)."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_option_reaches_a_library_parameter_or_is_the_commands_own(name):
    module = importlib.import_module(cli.command_module(name))
    for parser in _parsers(cli.build_parser(name, module)):
        record = cli.declared(parser)
        for action in parser._actions:
            dest = action.dest
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or dest == "debug":
                continue
            if dest in record.own:
                continue
            assert dest in record.routes, f"mmbert {name}: {action.option_strings or dest} is undeclared"
            target = record.routes[dest]
            assert dest in inspect.signature(target).parameters, (name, dest, target)


def test_a_parameter_renamed_in_the_library_fails_when_the_parser_is_built(monkeypatch):
    import mmbert.cli.fill_mask as command
    from mmbert.inference import DEFAULT_BATCH_TOKENS

    def renamed(model_dir, texts, k=5, device=None, batch_tokens=DEFAULT_BATCH_TOKENS):  # `top_k` renamed
        raise AssertionError("never called")

    monkeypatch.setattr(command, "fill_mask_dir", renamed)
    with pytest.raises(TypeError, match="has no parameter 'top_k'"):
        cli.build_parser("fill-mask", command)


def test_options_take_type_default_and_choices_from_the_signature():
    def library(
        path: Path,
        n: int = 3,
        ratio: float | None = None,
        kind: Literal["a", "b"] = "a",
        ids: Sequence[int] | None = None,
        fast: bool = False,
        progress: bool = True,
    ) -> None:
        """A library function with one parameter of each kind."""

    parser = argparse.ArgumentParser()
    options = cli.Options(parser, library)
    for name in ("path", "n", "ratio", "kind", "ids", "fast", "progress"):
        options.add(name)
    with pytest.raises(SystemExit):
        parser.parse_args([])  # --path has no default: required
    args = parser.parse_args(["--path", "x", "--n", "4", "--ids", "1", "2", "--fast", "--no-progress"])
    assert (args.path, args.n, args.ratio, args.kind, args.ids) == (Path("x"), 4, None, "a", [1, 2])
    assert args.fast is True and args.progress is False
    assert parser.parse_args(["--path", "x"]).n == 3  # the library's default, stated once
    with pytest.raises(SystemExit):
        parser.parse_args(["--path", "x", "--kind", "c"])


def test_call_refuses_an_option_that_reaches_no_parameter():
    def library(a: int = 0) -> int:
        return a

    parser = argparse.ArgumentParser()
    cli.Options(parser, library).add("a")
    assert cli.call(library, parser.parse_args(["--a", "2"])) == 2
    parser.add_argument(
        "--b", type=int, default=1
    )  # declared neither for a library call nor as the command's own
    with pytest.raises(TypeError, match="option 'b' reaches no parameter"):
        cli.call(library, parser.parse_args(["--a", "2"]))


def test_device_is_one_option_with_one_meaning():
    """`--device` is declared once (`SHARED_OPTIONS`) and every command that takes it validates it alike."""
    for name in ("train", "evaluate", "fill-mask", "embed", "finetune"):
        module = importlib.import_module(cli.command_module(name))
        parser = cli.build_parser(name, module)
        (action,) = [a for a in parser._actions if a.dest == "device"]
        assert action.type is cli.SHARED_OPTIONS["device"][1]["type"], name


# ---------------------------------------------------------------------------------------------- sweep
@pytest.fixture(scope="module")
def fx(tmp_path_factory, train_inputs) -> dict[str, Path]:
    """Inputs good and bad for every command: a model export, a tokenizer, prepared data, a recipe."""
    recipe, _ = train_inputs
    root = tmp_path_factory.mktemp("sweep")
    spec = load_recipe(recipe)
    paths = {"model": make_tiny_export(root / "model"), "recipe": recipe, "tok": Path(spec.tokenizer)}
    paths["data"] = Path(spec.data[0])
    for name, text in {
        "good.jsonl": '{"text": "hello world", "label": "a"}\n{"text": "bye world", "label": "b"}\n' * 5,
        "bad.jsonl": '{"text": "x"\n',
        "empty.jsonl": "",
        "in.txt": "hello\n\nworld\n",
        "bad.yaml": "phases: [\n",
        "plain.txt": "x",
    }.items():
        (root / name).write_text(text)
        paths[name.replace(".", "_")] = root / name
    (root / "foreign").mkdir()
    (root / "foreign" / "notes.txt").write_text("mine")
    (root / "badtok").mkdir()
    (root / "badtok" / "tokenizer.json").write_text("{not json")
    notok = root / "notok"
    shutil.copytree(paths["data"], notok)
    manifest = json.loads((notok / "manifest.json").read_text())
    del manifest["tokenizer"]
    (notok / "manifest.json").write_text(json.dumps(manifest))
    return {**paths, "root": root, "foreign": root / "foreign", "badtok": root / "badtok", "notok": notok}


# (argv with {name} placeholders for `fx`, a part of the one-line error)
BAD_INPUTS = [
    ("tokenizer info /no/such/dir", "no such tokenizer directory"),
    ("tokenizer info {plain_txt}", "a tokenizer is a directory"),
    ("tokenizer info {badtok}", "cannot load tokenizer"),
    ("tokenizer train --out {root}/t1 --input /no/such.jsonl --lang eng_Latn", "does not exist"),
    ("tokenizer train --out {root}/t2 --input {empty_jsonl} --lang eng_Latn", "empty file"),
    ("tokenizer train --out {root}/t3 --input {bad_jsonl} --lang eng_Latn", "bad.jsonl:1: broken JSON line"),
    ("tokenizer train --out {root}/t4 --input {good_jsonl} --lang eng_Latn --vocab-size 10", "at least 325"),
    ("tokenizer train --out {model} --input {good_jsonl} --lang eng_Latn", "did not write"),
    ("prepare --source /no/such --tokenizer {tok} --out {root}/d1", "does not exist"),
    (
        "prepare --source {good_jsonl} --tokenizer /no/such --out {root}/d2 --lang eng_Latn",
        "no such tokenizer directory",
    ),
    ("prepare --source {good_jsonl} --tokenizer {badtok} --out {root}/d3", "tokenizer.json: not a tokenizer"),
    ("prepare --source {good_jsonl} --tokenizer {tok} --out {root}/d4", "cannot tell the language"),
    (
        "prepare --source {good_jsonl} --tokenizer {tok} --out {root}/d5 --lang zzz_Zzzz",
        "unknown language key",
    ),
    (
        "prepare --source {good_jsonl} --tokenizer {tok} --out {root}/d6 --lang eng_Latn --workers 0",
        "--workers",
    ),
    (
        "prepare --source {good_jsonl} --tokenizer {tok} --out {root}/d7 --lang eng_Latn --name ../x",
        "source name",
    ),
    ("prepare --source mds:/no/such --tokenizer {tok} --out {root}/d8", "does not exist"),
    ("prepare --source {good_jsonl} --tokenizer {tok} --out {plain_txt} --lang eng_Latn", "plain.txt"),
    ("prepare --source {good_jsonl} --tokenizer {tok} --out {foreign} --lang eng_Latn", "did not write"),
    (
        "prepare --source {good_jsonl} --tokenizer {tok} --out {notok} --lang eng_Latn --name more",
        "no 'tokenizer'",
    ),
    ("plan /no/such.yaml", "cannot read recipe"),
    ("plan {bad_yaml}", "bad.yaml:2: invalid YAML"),
    ("plan {recipe} phases.9.tokens=1", "index 9 out of range"),
    ("plan {recipe} --data {notok}", "no 'tokenizer' entry"),
    ("train {recipe} --dry-run model.hidden_size=[1]", "model.hidden_size"),
    ("train {recipe} --dry-run model.preset=nope", "model.preset: unknown model preset"),
    ("train {recipe} --dry-run phases.0.seq_len=100000", "max_position_embeddings (512)"),
    ("train {recipe} --dry-run phases.0.name=../x", "phases[0].name"),
    ("train {recipe} --out {data}", "would overwrite the input"),
    ("train {recipe} --out {root}/r1 --init-from /no/such", "--init-from /no/such: no such model directory"),
    ("train {recipe} --out {root}/r2 data=[{notok}]", "no 'tokenizer' entry"),
    ("train {recipe} --out {root}/r3 tokenizer=/no/such", "no such tokenizer directory"),
    ("train {recipe} --out {root}/r4 --micro-batch-tokens 0", "--micro-batch-tokens"),
    ("train {recipe} --out {root}/r5 --device cuda", "sees no CUDA device"),
    ("train {recipe} --out {root}/r6 phases.0.languages=[zzz_Zzzz]", "languages not in the data: zzz_Zzzz"),
    ("merge --method ties --models {model} {model} --out {root}/m1", "needs a base model"),
    ("merge --method linear --models /no/such --out {root}/m2", "not a model directory or a checkpoint file"),
    ("merge --method linear --models {model} {foreign} --out {root}/m3", "no config.json"),
    ("merge --method linear --models {model} --out {foreign}", "already exists"),
    ("convert /no/such.pt --out {root}/c1", "/no/such.pt"),
    ("convert {plain_txt} --out {root}", "would overwrite the input"),
    ("tokenizer adapt /no/such --out {root}/a1", "no such tokenizer directory"),
    ("tokenizer adapt {tok} --out {model}", "did not write"),
    ("evaluate /no/such", "not a model directory"),
    ("evaluate {model} --languages zzz", "languages not in the data: zzz"),
    ("evaluate {model} --max-length 1", "max_length must be >= 2"),
    ("fill-mask {model} no-mask-here", "has no <mask> token"),
    ("fill-mask {model} --file /no/such.txt", "no such file"),
    ("fill-mask {tok} a-<mask>", "not a model directory"),
    ("embed {model} --input {in_txt} --out {root}/e.npy", "in.txt:2: empty line"),
    ("embed {model} --input {good_jsonl} --out {root}/e.csv", "must end in .npy or .parquet"),
    ("finetune --model /no/such --train {good_jsonl} --out {root}/f1", "no such model directory"),
    ("finetune --model {model} --train /no/such.csv --out {root}/f2", "no such file"),
    ("finetune --model {model} --train {good_jsonl} --out {model}", "would overwrite the input"),
    ("finetune --model {model} --train {good_jsonl} --out {root}/f3 --batch-size 0", "--batch-size must be"),
    ("demo --recipe /no/such.yaml --out {root}/demo", "no such recipe file"),
]


@pytest.mark.parametrize("argv, message", BAD_INPUTS, ids=[a for a, _ in BAD_INPUTS])
def test_bad_inputs_give_one_line_and_no_traceback(fx, capsys, argv, message):
    args = [part.format(**fx) for part in argv.split()]
    rc = cli.main(args)
    err = capsys.readouterr().err.strip().splitlines()
    command = argv.split()[0]
    assert rc == 2 and err and "Traceback" not in "\n".join(err)
    assert err[-1].startswith(f"mmbert {command}: error: ") and message in err[-1], err[-1]
    assert not [line for line in err[:-1] if "error" in line.lower()]  # the one error line is the last


def test_model_commands_keep_freed_memory_and_the_others_do_not(tmp_path, monkeypatch):
    """`retain_freed_memory` (glibc's mallopt) applies here, and runs for the commands that run models."""
    import ctypes
    import sys

    from mmbert.process import retain_freed_memory

    glibc = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")
    assert retain_freed_memory() is glibc
    calls = []
    monkeypatch.setattr(cli, "retain_freed_memory", lambda: calls.append(True))
    missing = tmp_path / "missing.yaml"
    assert cli.main(["plan", str(missing), "--released-counts"]) == 2
    assert calls == []
    assert cli.main(["fill-mask", str(tmp_path / "no-model"), "a <mask>"]) == 2  # fails after the setting
    assert calls == [True]
