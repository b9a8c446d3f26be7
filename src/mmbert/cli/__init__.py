"""`mmbert COMMAND`: the command layer, apart from the library.

Each command is one module here with two functions: `add_arguments(parser)` declares its options and
`run(args) -> int` turns them into one call of a library function and prints what it returned. The
library takes typed arguments, returns results and logs through `logging`; argument parsing, printing
and the logging set-up live here only, and so does the handling of errors.

An option is declared by the library parameter it reaches (`Options(parser, fn).add("top_k")` is
`--top-k`, typed, defaulted and checked as `fn` says), or as the command's own (`own_option`: what it
prints, a file it reads); `call(fn, args)` passes every option declared for `fn` and refuses one that
reaches nothing. A command adds an option in one line, a default lives in the library alone, and a
parameter renamed there fails when the parser is built (`tests/test_cli.py` builds every command's).

Errors:

- an expected failure (`mmbert.errors.MmbertError`, `ValueError`, `OSError`: bad input, a refused
  overwrite, a missing file) prints one line, `mmbert COMMAND: error: ...`, and exits with 2 (or the
  error's own `exit_code`); `--debug` or `MMBERT_DEBUG=1` shows the traceback as well;
- Ctrl-C prints one line (with the command's own advice, e.g. how to resume) and exits with 130;
- anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import errno
import importlib
import inspect
import logging
import math
import os
import re
import signal
import sys
import traceback
import types
import typing
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO, TypeVar

from mmbert import __version__
from mmbert.data.records import lone_surrogate
from mmbert.errors import MmbertError
from mmbert.process import retain_freed_memory

# name -> one line of help; the command's module is `mmbert.cli.<name>` (`-` as `_`: `command_module`).
# Modules are imported only when their command runs: importing every command pulls in torch and
# transformers (3-6 s here), which `mmbert --help` should not pay.
COMMANDS: dict[str, str] = {
    "tokenizer": "train, inspect or adapt a multilingual tokenizer",
    "prepare": "tokenize documents into per-language shards",
    "plan": "show each phase's language/source sampling budget",
    "train": "run a recipe's phases (resumable, distributed)",
    "merge": "merge checkpoints (TIES, linear, EMA)",
    "convert": "convert a Composer .pt training checkpoint to HF format",
    "evaluate": "per-language MLM accuracy and cross-lingual retrieval",
    "fill-mask": "top predictions for <mask> tokens",
    "embed": "mean-pooled embeddings of a file of texts",
    "finetune": "fine-tune sequence classification / regression",
    "benchmark": "the paper's evaluation: GLUE, XTREME tasks, QA, NER, MTEB",
    "demo": "the end-to-end demo on the bundled corpus",
    "ablate": "seeded ablations of the recipe's choices, with intervals",
}
# Commands that run a model forward again and again: their processes keep freed tensor memory for the next
# step (`mmbert.process.retain_freed_memory`).
RUNS_MODELS = {"train", "evaluate", "fill-mask", "embed", "finetune", "benchmark", "demo", "ablate"}
DEBUG_ENV = "MMBERT_DEBUG"
T = TypeVar("T")


def command_module(name: str) -> str:
    """The module of command `name`: `mmbert.cli.fill_mask` for `fill-mask`."""
    return f"mmbert.cli.{name.replace('-', '_')}"


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: mmbert [--version] COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, help_ in COMMANDS.items()]
    lines += ["", "`mmbert COMMAND --help` describes a command; `--debug` shows tracebacks."]
    return "\n".join(lines)


class _Formatter(logging.Formatter):
    """`HH:MM:SS message`, with `warning:` / `error:` in front of the messages that are not news."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            time_, _, message = text.partition(" ")
            text = f"{time_} {record.levelname.lower()}: {message}"
        return text


class _StderrHandler(logging.StreamHandler):
    """Writes to `sys.stderr` as it is when a record comes, not as it was at set-up (like logging's
    last-resort handler): a later redirection, or a test's capture that has since been closed, must
    neither lose the records nor make each one an error."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def setup_logging() -> None:
    """The one logging set-up: INFO on the main process (rank 0 under torchrun), WARNING elsewhere."""
    rank = int(os.environ.get("RANK", "0") or 0)
    handler = _StderrHandler()
    handler.setFormatter(_Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_mmbert", False):
            root.removeHandler(old)
    handler._mmbert = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (`--scale`, `--max-epochs`); nan and inf are refused
    here, naming the option, not deep inside the run."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `minimum` (`--batch-tokens 0` refused at parse, naming the option)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {text}")
        return value

    return parse


def text(value: str) -> str:
    """An argparse type: a text argument (fill-mask's texts). Bytes that are not UTF-8 in argv reach
    Python as lone surrogates, which no tokenizer can take: refused here, naming the argument."""
    if lone_surrogate(value) is not None:
        raise argparse.ArgumentTypeError(f"not UTF-8 text: {ascii(value)} (is the terminal set to UTF-8?)")
    return value


def _device(value: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a device (cpu, cuda or cuda:N)")
    return value


# ---------------------------------------------------------------------------------------------- options
# Options several commands share, declared once: name (the library's parameter) -> (flags, argparse
# keywords). Type, default and choices come from the library function the option reaches (`Options`).
SHARED_OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "device": (
        ("--device",),
        {
            "type": _device,
            "help": "where the model runs: cpu, cuda, cuda:1 ... (default: cuda when available)",
        },
    ),
    # On the command line progress bars show unless asked not to (the library's default may be off).
    "progress": (("--no-progress",), {"default": True, "help": "no progress bars"}),
    "batch_tokens": (("--batch-tokens",), {"type": int_at_least(1), "help": "tokens per forward pass"}),
    "overwrite": (("--overwrite",), {"help": "replace the output if it exists"}),
    "json": (("--json",), {"action": "store_true", "help": "print JSON instead of text"}),
    "text_field": (("--text-field",), {"help": "the JSON/parquet field holding the text"}),
    "lang_field": (("--lang-field",), {"help": "field holding the language (lang_Script or ISO 639-3)"}),
    "lang": (("--lang",), {"help": "one language key for every document (e.g. fra_Latn)"}),
}
# Attributes of the parsed arguments that are no option of the command's own.
_DECLARED = "_mmbert_options"
_META = {"debug", "cmd", _DECLARED}


@dataclasses.dataclass
class Declared:
    """Where each option of a command goes: `routes` maps an option (its destination, the parameter's
    name) to the library function or dataclass it reaches; `own` holds the options the command uses
    itself (printing, reading a file). `call` refuses an option that is in neither."""

    routes: dict[str, Any] = dataclasses.field(default_factory=dict)
    own: set[str] = dataclasses.field(default_factory=set)


def declared(parser: argparse.ArgumentParser | argparse._ActionsContainer) -> Declared:
    """The record of `parser`'s options (an argument group shares its parser's)."""
    record = parser.get_default(_DECLARED)
    if record is None:
        record = Declared()
        parser.set_defaults(**{_DECLARED: record})
    return record


class Options:
    """The options of one library function or dataclass (`target`), derived from its typed signature.

    An option is named by the parameter it reaches (`add("top_k")` declares `--top-k`): its type, its
    default, its choices (a `Literal`), `nargs` (a sequence) and whether it is required (no default) come
    from the signature, so a default is written once, in the library, and a parameter renamed there
    fails when the parser is built (every command's parser is built by the tests). The command adds
    only what is its own: flags, help, and a default where the command line differs from the library
    on purpose (progress bars on).
    """

    def __init__(self, parser: argparse.ArgumentParser | argparse._ActionsContainer, target: Any) -> None:
        self.parser = parser
        self.target = target
        self.parameters = inspect.signature(target).parameters
        self.hints = typing.get_type_hints(target)  # a dataclass: its fields
        self.comments = _field_comments(target) if isinstance(target, type) else {}

    def add(
        self, name: str, *flags: str, positional: bool = False, group: Any = None, **keywords: Any
    ) -> argparse.Action:
        """Declare `--name` (or `flags`; `positional`: a positional argument) reaching parameter `name`."""
        if name not in self.parameters:
            raise TypeError(
                f"option {flags[0] if flags else name!r}: {_qualname(self.target)} has no parameter {name!r}"
            )
        if "help" not in keywords and name in self.comments:
            keywords["help"] = self.comments[name]
        default = self.parameters[name].default
        derived = _from_annotation(self.hints.get(name), default, keywords.get("default", default))
        if positional or "default" in keywords:
            derived.pop("required", None)
        if positional:
            flags = (name,)
        else:
            if not flags:
                negated = {**derived, **keywords}.get("action") == "store_false"
                flags = (f"--{'no-' if negated else ''}{name.replace('_', '-')}",)
            derived["dest"] = name
        options = {**derived, **keywords}
        shown = options.get("default")
        help_ = options.get("help")
        if (
            help_
            and "default" not in help_
            and not (shown is None or isinstance(shown, bool) or shown in ((), []))
        ):
            options["help"] = f"{help_} (default: {_show(shown)})"
        action = (group or self.parser).add_argument(*flags, **options)
        declared(self.parser).routes[action.dest] = self.target
        return action

    def add_all(self, **changes: dict[str, Any]) -> None:
        """Every parameter as an option, in order (a shared one as `SHARED_OPTIONS` declares it);
        `changes[name]` adds keywords (choices, a positional, ...). For a dataclass whose fields say
        what they are in a comment (`lr: float = 5e-5  # peak learning rate`), that is the help."""
        for name in self.parameters:
            if name in SHARED_OPTIONS:
                self.shared(name, **{name: changes.get(name, {})})
            else:
                self.add(name, **changes.get(name, {}))

    def shared(self, *names: str, **changes: dict[str, Any]) -> None:
        """Declare shared options (`SHARED_OPTIONS`) reaching this target; `changes[name]` overrides some
        of an option's keywords (e.g. its help)."""
        for name in names:
            flags, keywords = SHARED_OPTIONS[name]
            self.add(name, *flags, **{**keywords, **changes.get(name, {})})


def own_option(
    parser: argparse.ArgumentParser | argparse._ActionsContainer, *flags: str, **keywords: Any
) -> argparse.Action:
    """An option the command uses itself (what to print, a file to read): it reaches no library call."""
    action = parser.add_argument(*flags, **keywords)
    declared(parser).own.add(action.dest)
    return action


# The shared options a command uses itself rather than passing them to the library.
OWN_SHARED = ("json",)


def add_shared(parser: argparse.ArgumentParser, *names: str, **changes: dict[str, Any]) -> None:
    """Declare shared options the command uses itself (`OWN_SHARED`: `--json`). One that reaches a
    library parameter goes through `Options(parser, fn).shared(name)`, which `call` then passes on."""
    for name in names:
        if name not in OWN_SHARED:
            raise TypeError(
                f"--{name.replace('_', '-')} reaches a library parameter: Options(parser, fn).shared"
            )
        flags, keywords = SHARED_OPTIONS[name]
        own_option(parser, *flags, **{**keywords, **changes.get(name, {})})


def _field_comments(cls: type) -> dict[str, str]:
    """A class's field comments: `name: type = default  # what it is` -> {name: "what it is"}."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    found = (re.match(r"\s+(\w+): [^#]+#\s*(.+)$", line) for line in source.splitlines())
    return {m.group(1): m.group(2).strip() for m in found if m}


def _from_annotation(hint: Any, default: Any, shown_default: Any) -> dict[str, Any]:
    """argparse keywords for a parameter of type `hint` with `default` (inspect's `empty`: required)."""
    out: dict[str, Any] = {}
    if default is inspect.Parameter.empty:
        out["required"] = True
    else:
        out["default"] = default
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint, args = args[0], list(typing.get_args(args[0]))
    origin = typing.get_origin(hint)
    if hint is bool:
        out["action"] = "store_false" if shown_default is True else "store_true"
    elif origin is typing.Literal:
        out["choices"] = list(args)
    elif origin in (list, collections.abc.Sequence, collections.abc.Iterable) or (
        origin is tuple and len(args) == 2 and args[1] is Ellipsis
    ):
        out["nargs"] = "+"
        out["type"] = _scalar(args[0])
    elif origin is not tuple:
        out["type"] = _scalar(hint)
    return {k: v for k, v in out.items() if v is not None}


def _scalar(hint: Any) -> Any:
    """The argparse type of a scalar annotation: int, float, Path (a path, or a path or a name), else str."""
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for kind in (Path, int, float):
        if kind in members:
            return kind
    return None


def _show(value: Any) -> str:
    """A default as `--help` shows it: `16,384`, `a b` for a list."""
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return f"{value:,}" if isinstance(value, int) else str(value)


def _qualname(target: Any) -> str:
    return f"{target.__module__}.{target.__qualname__}"


def call(fn: Callable[..., T], args: argparse.Namespace, *positional: Any, **given: Any) -> T:
    """`fn(*positional, **options, **given)`: every option declared for `fn` (`Options`), by name.

    `given` supplies (or replaces) the rest. An option that reaches no parameter is refused: one
    declared for `fn` that `fn` lacks, or one neither declared for a library call nor the command's
    own (a plain `add_argument`), which would otherwise be dropped without a word.
    """
    record = getattr(args, _DECLARED, None) or Declared()
    names = list(inspect.signature(fn).parameters)
    taken = names[: len(positional)]
    kwargs = {}
    for dest, value in vars(args).items():
        if dest in _META or dest in record.own:
            continue
        if dest not in record.routes:
            raise TypeError(
                f"option {dest!r} reaches no parameter: declare it with `Options` or `own_option`"
            )
        if record.routes[dest] != fn or dest in taken or dest in given:
            continue
        if dest not in names:
            raise TypeError(f"option {dest!r}: {_qualname(fn)} has no parameter {dest!r}")
        kwargs[dest] = value
    return fn(*positional, **{**kwargs, **given})


def build_parser(name: str, module: ModuleType) -> argparse.ArgumentParser:
    doc = (module.__doc__ or "").strip().split("\n\n")[0]
    parser = argparse.ArgumentParser(prog=f"mmbert {name}", description=doc)
    module.add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def run_command(name: str, argv: list[str]) -> int:
    """Parse `argv` for command `name`, run it, and turn expected failures into one line."""
    module = importlib.import_module(command_module(name))
    parser = build_parser(name, module)
    # Intermixed (train, plan): `RECIPE key=value --out DIR key=value` keeps every override; it cannot
    # parse sub-commands (tokenizer train|info), hence per command.
    args = (
        parser.parse_intermixed_args(argv)
        if getattr(module, "INTERMIXED", False)
        else parser.parse_args(argv)
    )
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    setup_logging()
    if name in RUNS_MODELS:
        retain_freed_memory()
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        advice = getattr(module, "INTERRUPTED", "")
        print(f"mmbert {name}: interrupted{'; ' + advice if advice else ''}", file=sys.stderr)
        return 130
    except (MmbertError, ValueError, OSError) as err:
        if debug:
            traceback.print_exc()
        message = _one_line(err)
        advice = getattr(module, "INTERRUPTED", "")
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT) and advice:
            message += f"; {advice} once there is space"  # what was written whole is kept
        print(f"mmbert {name}: error: {message}", file=sys.stderr)
        return int(getattr(err, "exit_code", 2))


def _one_line(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    return " ".join(text.split())


def console() -> int:
    """The `mmbert` program: `main()`, then an exit that Ctrl-C no longer cuts short.

    The command has finished and said so; a Ctrl-C during the interpreter's shutdown (a second or
    so with torch loaded) would otherwise end the process by the signal, as if it had failed.
    """
    code = main()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"mmbert: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return run_command(name, rest)
