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
from tests.helpers.exports import make_tiny_export, udhr_texts
from tests.helpers.tokenizer import make_tokenizer

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
        "comma.csv": "text,label\nsample text 1,pos\nsample text 2,neg\nsample text 3, with a comma,pos\n",
        "twolabels.csv": "text,label,label\na,pos,neg\nb,neg,pos\n",
        "openquote.csv": 'text,label\na,pos\n"b,neg\nc,pos\nd,neg\n',
        "twolabels.jsonl": '{"text": "a", "label": "pos"}\n{"text": "b", "label": "neg", "label": "pos"}\n',
    }.items():
        (root / name).write_text(text)
        paths[name.replace(".", "_")] = root / name
    (root / "utf16.jsonl").write_bytes('{"text": "hi", "lang": "eng_Latn"}\n'.encode("utf-16"))  # with BOM
    (root / "surrogate.jsonl").write_text('{"text": "half a pair \\ud800 <mask>", "lang": "eng_Latn"}\n')
    recipe_text = recipe.read_text()
    (root / "dupkey.yaml").write_text(recipe_text + "seed: 5\n")
    paths.update({n.replace(".", "_"): root / n for n in ("utf16.jsonl", "surrogate.jsonl", "dupkey.yaml")})
    (root / "foreign").mkdir()
    (root / "emptydir").mkdir()
    (root / "dangling").symlink_to(root / "gone")
    (root / "foreign" / "notes.txt").write_text("mine")
    (root / "badtok").mkdir()
    (root / "badtok" / "tokenizer.json").write_text("{not json")
    notok = root / "notok"
    shutil.copytree(paths["data"], notok)
    manifest = json.loads((notok / "manifest.json").read_text())
    del manifest["tokenizer"]
    (notok / "manifest.json").write_text(json.dumps(manifest))
    return {
        **paths,
        **_mismatched_models(root, paths["model"]),
        "root": root,
        "emptydir": root / "emptydir",
        "dangling": root / "dangling",
        "foreign": root / "foreign",
        "badtok": root / "badtok",
        "notok": notok,
    }


def _mismatched_models(root: Path, model: Path) -> dict[str, Path]:
    """Copies of `model` with another tokenizer (fewer and more ids than its embedding's rows), with a
    config.json of another vocabulary size, and with a NaN weight."""
    out = {"badconfig": root / "badconfig"}
    shutil.copytree(model, out["badconfig"])
    config = json.loads((model / "config.json").read_text())
    (out["badconfig"] / "config.json").write_text(json.dumps({**config, "vocab_size": 600}))
    for name, size in (("smalltok", 300), ("bigtok", 700)):
        out[name] = root / name
        shutil.copytree(model, out[name])
        for file in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (out[name] / file).unlink(missing_ok=True)
        make_tokenizer(out[name], udhr_texts(), size)
    from safetensors.torch import load_file, save_file

    out["cutconfig"] = root / "cutconfig"  # a tokenizer_config.json cut short by a copy
    shutil.copytree(model, out["cutconfig"])
    text = (model / "tokenizer_config.json").read_text()
    (out["cutconfig"] / "tokenizer_config.json").write_text(text[: len(text) // 2])
    out["noshard"] = root / "noshard"  # a sharded export whose index names a shard that is not there
    out["noshard"].mkdir()
    for file in model.glob("*.json"):
        shutil.copy(file, out["noshard"])
    shutil.copy(model / "model.safetensors", out["noshard"] / "model-00001-of-00002.safetensors")
    keys = load_file(model / "model.safetensors")
    shards = {k: f"model-0000{1 + i % 2}-of-00002.safetensors" for i, k in enumerate(keys)}
    (out["noshard"] / "model.safetensors.index.json").write_text(json.dumps({"weight_map": shards}))
    out["nanmodel"] = root / "nanmodel"
    shutil.copytree(model, out["nanmodel"])
    weights = load_file(out["nanmodel"] / "model.safetensors")
    weights["model.layers.0.mlp.Wo.weight"][0, 0] = float("nan")
    save_file(weights, out["nanmodel"] / "model.safetensors", metadata={"format": "pt"})
    return out


# (argv with {name} placeholders for `fx`, a part of the one-line error)
BAD_INPUTS = [
    ("tokenizer info /no/such/dir", "no such tokenizer directory"),
    ("tokenizer info {plain_txt}", "a tokenizer is a directory"),
    ("tokenizer info {badtok}", "badtok/tokenizer.json: not valid JSON"),
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
    ("merge --method linear --models {model} --out {foreign}", "did not write"),
    ("convert /no/such.pt --out {root}/c1", "/no/such.pt"),
    ("convert {plain_txt} --out {root}", "would overwrite the input"),
    ("tokenizer adapt /no/such --out {root}/a1", "no such tokenizer directory"),
    ("tokenizer adapt {tok} --out {model}", "did not write"),
    ("evaluate /no/such", "/no/such: no such model directory"),
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
    # issue 23: options accepted and ignored or misread
    ("ablate --out {root}/ab1 --seeds 0", "--seeds must be >= 2"),
    ("ablate --out {root}/ab2 --quick --scale 2", "--quick and --scale cannot be combined"),
    ("ablate --out {foreign} --quick", "did not write"),
    ("demo --out {foreign} --quick", "did not write"),
    # issue 23: outputs never delete inputs
    ("merge --method linear --models {model} --out {dangling}", "is a symbolic link to"),
    ("finetune --model {model} --train {good_jsonl} --out {dangling}", "which does not exist"),
    ("merge --method linear --models {model} --out {root}", "would overwrite the input"),
    ("merge --method linear --models {model} --out {root} --overwrite", "would overwrite the input"),
    ("convert {plain_txt} --out {root} --overwrite", "would overwrite the input"),
    (
        "merge --method linear --models {model} --out {plain_txt} --overwrite",
        "is a file; a directory goes there",
    ),
    ("embed {model} --input {good_jsonl} --out {emptydir}", "must end in .npy"),
    ("fill-mask {model} a-<mask> --top-k 0", "top_k must be >= 1"),
    (
        "tokenizer train --out {root}/t5 --input {good_jsonl} --lang eng_Latn --tau -1",
        "--tau must be in [0, 1]",
    ),
    (
        "tokenizer train --out {root}/t6 --input {good_jsonl} --lang eng_Latn --max-chars 0",
        "--max-chars must",
    ),
    # issue 23: a model and its tokenizer checked together; NaN weights said
    ("fill-mask {bigtok} a-<mask>", "bigtok (the tokenizer) has 700 ids, but the model"),
    ("fill-mask {smalltok} a-<mask>", "smalltok (the tokenizer) has 300 ids, but the model"),
    ("embed {bigtok} --input {good_jsonl} --out {root}/e2.npy", "the tokenizer files are not this model's"),
    ("evaluate {smalltok}", "the tokenizer files are not this model's"),
    ("finetune --model {bigtok} --train {good_jsonl} --out {root}/f7", "the tokenizer files are not this"),
    ("merge --method linear --models {bigtok} --out {root}/m4", "the tokenizer files are not this model's"),
    ("fill-mask {badconfig} a-<mask>", "in the weights, but the config (config.json) gives (600, "),
    ("fill-mask {nanmodel} a-<mask>", "model.layers.0.mlp.Wo.weight has 1 NaN and 0 infinite values"),
    ("embed {nanmodel} --input {good_jsonl} --out {root}/e3.npy", "has 1 NaN"),
    ("evaluate {nanmodel}", "has 1 NaN"),
    (
        "merge --method linear --models {model} {nanmodel} --out {root}/m5",
        "nanmodel: model.layers.0.mlp.Wo.weight has 1",
    ),
    ("tokenizer adapt {tok} --out {model} --overwrite", "has 300 ids, but the model in"),
    ("tokenizer adapt {tok} --out {root}/a3 --model-max-length -5", "--model-max-length must be >= 2"),
    ("tokenizer info {tok} --model-max-length 0", "--model-max-length must be >= 2"),
    ("tokenizer info {emptydir}", "emptydir: an empty directory (a tokenizer has tokenizer.json"),
    # i23r: other encodings, lone surrogates, repeated and misspelt recipe keys
    (
        "prepare --source {utf16_jsonl} --tokenizer {tok} --out {root}/d9 --lang eng_Latn",
        "utf16.jsonl:1: UTF-16 text, not UTF-8: save the file as UTF-8",
    ),
    ("finetune --model {model} --train {utf16_jsonl} --out {root}/f9", "utf16.jsonl:1: UTF-16 text"),
    ("fill-mask {model} --file {surrogate_jsonl}", "surrogate.jsonl:1: lone surrogate in a string"),
    ("embed {model} --input {surrogate_jsonl} --out {root}/e4.npy", "surrogate.jsonl:1: lone surrogate"),
    (
        "prepare --source {surrogate_jsonl} --tokenizer {tok} --out {root}/d10 --lang eng_Latn",
        "surrogate.jsonl:1: lone surrogate",
    ),
    ("plan {dupkey_yaml}", "invalid YAML: duplicate key 'seed' (first given on line 2)"),
    ("plan {recipe} train.lrr=1", "train.lrr: unknown key (did you mean 'lr'?"),
    ("train {recipe} --dry-run model.hiden_size=8", "(did you mean 'hidden_size'?"),
    # i23r: a directory where a file goes and the other way round, named as such (before the work)
    ("embed {model} --input {emptydir} --out {root}/e5.npy", "emptydir: a directory, not a file"),
    ("evaluate {model}/config.json", "config.json: a file, not a model directory"),
    ("demo --recipe {emptydir} --out {root}/demo2", "emptydir: a directory, not a recipe file"),
    ("evaluate {model} --languages eng_Latn --out {plain_txt}", "is a file; a directory goes there"),
    ("evaluate {model} --languages eng_Latn --out {dangling}", "is a symbolic link to"),
    ("embed {model} --input {in_txt} --out {root}/e7.npy --text-field body", "applies to .jsonl input"),
    ("merge --method ema --models {model} --out {root}/m7", "exactly one of decay (--decay) or half_life"),
    # i23r: damaged model folders: the file is named
    ("fill-mask {cutconfig} a-<mask>", "cutconfig/tokenizer_config.json: not valid JSON"),
    ("merge --method linear --models {model} {noshard} --out {root}/m6", "names 1 shard(s) of 2 that are"),
    ("embed {noshard} --input {good_jsonl} --out {root}/e6.npy", "model-00002-of-00002.safetensors"),
    # issue 23: labels never silently wrong
    (
        "finetune --model {model} --train {comma_csv} --out {root}/f4",
        "comma.csv:4: 3 fields where the header has 2",
    ),
    ("finetune --model {model} --train {twolabels_csv} --out {root}/f5", "twolabels.csv:1: duplicate column"),
    ("finetune --model {model} --train {openquote_csv} --out {root}/f6", "openquote.csv:3: unbalanced quote"),
    (
        "finetune --model {model} --train {twolabels_jsonl} --out {root}/f8",
        "twolabels.jsonl:2: duplicate key",
    ),
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


@pytest.mark.parametrize(
    "argv",
    [
        "tokenizer train --out {root}/ro/t --input {good_jsonl} --lang eng_Latn",
        "ablate --out {root}/ro/ab --quick",
        "prepare --source {good_jsonl} --tokenizer {tok} --out {root}/ro/d --lang eng_Latn",
        "merge --method linear --models {model} --out {root}/ro/m",
        "embed {model} --input {good_jsonl} --out {root}/ro/e.npy",
    ],
)
def test_a_read_only_out_fails_before_the_work(fx, capsys, monkeypatch, argv):
    import os

    readonly = fx["root"] / "ro"
    readonly.mkdir(exist_ok=True)
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != readonly and access(path, mode))
    assert cli.main([part.format(**fx) for part in argv.split()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"{readonly} is not writable (read-only): choose another --out")
    assert not any("training" in line or "step" in line for line in err[:-1])  # nothing ran first


@pytest.mark.parametrize(
    "argv",
    [
        "merge --method linear --models {model} --out . --overwrite",
        "tokenizer adapt {tok} --out .. --overwrite",
        "finetune --model {model} --train {good_jsonl} --out . --overwrite",
    ],
)
def test_an_out_that_holds_the_working_directory_is_refused_before_the_work(fx, capsys, monkeypatch, argv):
    """Replacing `.` fails only after the work (EBUSY); it is refused first, --overwrite or not."""
    here = fx["root"] / "cwd" / "sub"
    here.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(here)
    assert cli.main([part.format(**fx) for part in argv.split()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "is the current directory" in err[-1] or "holding the current one" in err[-1], err[-1]
    assert here.is_dir() and not any("merged" in line or "step" in line for line in err[:-1])


@pytest.mark.parametrize(
    "argv, module, writer, advice",
    [
        (
            "prepare --source {good_jsonl} --tokenizer {tok} --out {root}/full1 --lang eng_Latn --no-progress",
            "numpy",
            "save",
            "finished units are kept: rerun the same command to resume once there is space",
        ),
        (
            "train {recipe} --out {root}/full2 --no-progress",
            "torch.distributed.checkpoint",  # mmbert.checkpoint writes through it
            "save",
            "the last complete checkpoint is kept: rerun the same command to resume once there is space",
        ),
    ],
    ids=["prepare", "train"],
)
def test_a_full_disk_is_one_line_naming_the_file_and_the_rerun(
    fx, capsys, monkeypatch, argv, module, writer, advice
):
    """The writers' own words for a full disk ("N requested and M written", torch's "file write failed")
    become one line: no space, which file, how much is free, and that a rerun resumes."""
    import importlib

    from mmbert import io

    def short_write(*args, **kwargs):
        raise OSError("49601 requested and 24560 written")

    monkeypatch.setattr(importlib.import_module(module), writer, short_write)
    monkeypatch.setattr(io, "_free_bytes", lambda directory: 0)
    assert cli.main([part.format(**fx) for part in argv.split()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "no space left on device: could not write" in err[-1] and "0 bytes free" in err[-1]
    assert err[-1].endswith(advice) and "Traceback" not in "".join(err)


@pytest.mark.parametrize(
    "argv",
    [
        "fill-mask {model} a-<mask> --device cuda",
        "embed {model} --input {good_jsonl} --out {root}/e9.npy --device cuda:1",
        "evaluate {model} --device cuda",
        "finetune --model {model} --train {good_jsonl} --out {root}/f9 --device cuda",
    ],
)
def test_a_cuda_device_on_a_host_without_one_is_one_line(fx, capsys, monkeypatch, argv):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert cli.main([part.format(**fx) for part in argv.split()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("was asked for, but torch sees no CUDA device") and "Traceback" not in "".join(
        err
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        ("ablate --scale nan", "argument --scale: must be a finite number > 0"),
        ("demo --scale inf", "argument --scale: must be a finite number > 0"),
        ("plan {recipe} --max-epochs -1", "argument --max-epochs: must be a finite number > 0"),
        ("plan {recipe} --max-epochs nan", "argument --max-epochs: must be a finite number > 0"),
        ("plan {recipe} --top -1", "argument --top: must be >= 0"),
        ("fill-mask {model} a-<mask> --batch-tokens 0", "argument --batch-tokens: must be >= 1"),
        ("evaluate {model} --batch-tokens x", "argument --batch-tokens: not an integer: 'x'"),
        # bytes that are not UTF-8 in argv arrive as lone surrogates, which a tokenizer cannot take
        ("fill-mask {model} \udcff<mask>", "argument texts: not UTF-8 text: '\\udcff<mask>'"),
    ],
)
def test_a_number_out_of_range_fails_at_parse_naming_the_option(fx, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        cli.main([part.format(**fx) for part in argv.split()])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_training_on_a_terminal_shows_bars_and_phase_lines_not_step_lines(fx, capsys):
    """`--log-every 0` (the demo's default): no per-step log lines; every step is still in metrics.jsonl,
    and each phase still gets its line."""
    import importlib

    out = fx["root"] / "quiet"
    short = ["phases.0.tokens=256", "phases.0.warmup_tokens=64", "phases.1.tokens=128", "phases.2.tokens=128"]
    argv = ["train", str(fx["recipe"]), *short, "--out", str(out), "--log-every", "0", "--no-tensorboard"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps and " | step " not in err
    assert all(f"phase {name}:" in err for name in {s["phase"] for s in steps})
    demo = cli.build_parser("demo", importlib.import_module("mmbert.cli.demo"))
    assert demo.parse_args([]).log_every_steps == 0


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
