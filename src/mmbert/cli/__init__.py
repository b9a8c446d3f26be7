"""`mmbert COMMAND`: the command layer, apart from the library.

Each command is one module here with two functions: `add_arguments(parser)` declares its options and
`run(args) -> int` turns them into one call of a library function and prints what it returned. The
library takes typed arguments, returns results and logs through `logging`; argument parsing, printing
and the logging set-up live here only, and so does the handling of errors:

- an expected failure (`mmbert.errors.MmbertError`, `ValueError`, `OSError`: bad input, a refused
  overwrite, a missing file) prints one line, `mmbert COMMAND: error: ...`, and exits with 2 (or the
  error's own `exit_code`); `--debug` or `MMBERT_DEBUG=1` shows the traceback as well;
- Ctrl-C prints one line (with the command's own advice, e.g. how to resume) and exits with 130;
- anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
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
from collections.abc import Callable
from types import ModuleType
from typing import Any, TextIO, TypeVar

from mmbert import __version__
from mmbert.data.records import lone_surrogate
from mmbert.errors import MmbertError
from mmbert.process import retain_freed_memory

# name -> (module, one line of help). Modules are imported only when their command runs: importing
# every command pulls in torch and transformers (3-6 s here), which `mmbert --help` should not pay.
COMMANDS: dict[str, tuple[str, str]] = {
    "tokenizer": ("mmbert.cli.tokenizer", "train, inspect or adapt a multilingual tokenizer"),
    "prepare": ("mmbert.cli.prepare", "tokenize documents into per-language shards"),
    "plan": ("mmbert.cli.plan", "show each phase's language/source sampling budget"),
    "train": ("mmbert.cli.train", "run a recipe's phases (resumable, distributed)"),
    "merge": ("mmbert.cli.merge", "merge checkpoints (TIES, linear, EMA)"),
    "convert": ("mmbert.cli.convert", "convert a Composer .pt training checkpoint to HF format"),
    "evaluate": ("mmbert.cli.evaluate", "per-language MLM accuracy and cross-lingual retrieval"),
    "fill-mask": ("mmbert.cli.fill_mask", "top predictions for <mask> tokens"),
    "embed": ("mmbert.cli.embed", "mean-pooled embeddings of a file of texts"),
    "finetune": ("mmbert.cli.finetune", "fine-tune sequence classification / regression"),
    "benchmark": ("mmbert.cli.benchmark", "the paper's evaluation: GLUE, XTREME tasks, QA, NER, MTEB"),
    "demo": ("mmbert.cli.demo", "the end-to-end demo on the bundled corpus"),
    "ablate": ("mmbert.cli.ablate", "seeded ablations of the recipe's choices, with intervals"),
}
# Commands that run a model forward again and again: their processes keep freed tensor memory for the next
# step (`mmbert.process.retain_freed_memory`).
RUNS_MODELS = {"train", "evaluate", "fill-mask", "embed", "finetune", "benchmark", "demo", "ablate"}
DEBUG_ENV = "MMBERT_DEBUG"
T = TypeVar("T")


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: mmbert [--version] COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
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


# Options several commands share, declared once: name -> (flags, argparse keywords). The destination is
# the library's parameter name (`--no-progress` stores `progress=False`), so `call` can forward it.
SHARED_OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "device": (
        ("--device",),
        {"type": _device, "help": "cpu, cuda, cuda:1 ... (default: cuda when available)"},
    ),
    "progress": (
        ("--no-progress",),
        {"dest": "progress", "action": "store_false", "help": "no progress bars"},
    ),
    "batch_tokens": (
        ("--batch-tokens",),
        {"type": int_at_least(1), "default": 16_384, "help": "tokens per forward pass"},
    ),
    "overwrite": (("--overwrite",), {"action": "store_true", "help": "replace the output if it exists"}),
    "json": (("--json",), {"action": "store_true", "help": "print JSON instead of text"}),
    "text_field": (("--text-field",), {"default": "text", "help": "the JSON/parquet field holding the text"}),
    "lang_field": (("--lang-field",), {"help": "field holding the language (lang_Script or ISO 639-3)"}),
    "lang": (("--lang",), {"help": "one language key for every document (e.g. fra_Latn)"}),
}


def add_shared(parser: argparse.ArgumentParser, *names: str, **changes: dict[str, Any]) -> None:
    """Declare shared options (`changes[name]` overrides some of its keywords, e.g. the help)."""
    for name in names:
        flags, keywords = SHARED_OPTIONS[name]
        parser.add_argument(*flags, **{**keywords, **changes.get(name, {})})


def call(fn: Callable[..., T], args: argparse.Namespace, *positional: Any, **given: Any) -> T:
    """`fn(*positional, ...)` with each further parameter taken from the parsed option of that name.

    The options are declared under the library's parameter names, so a command forwards them without
    restating each one; `given` supplies (or replaces) the rest.
    """
    names = list(inspect.signature(fn).parameters)[len(positional) :]
    kwargs = {name: getattr(args, name) for name in names if hasattr(args, name)}
    return fn(*positional, **{**kwargs, **given})


def build_parser(name: str, module: ModuleType) -> argparse.ArgumentParser:
    doc = (module.__doc__ or "").strip().split("\n\n")[0]
    parser = argparse.ArgumentParser(prog=f"mmbert {name}", description=doc)
    module.add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def run_command(name: str, argv: list[str]) -> int:
    """Parse `argv` for command `name`, run it, and turn expected failures into one line."""
    module = importlib.import_module(COMMANDS[name][0])
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
