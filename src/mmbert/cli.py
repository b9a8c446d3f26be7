"""`mmbert` command line: one sub-command per module, each a `main(argv) -> int` with its own argparse.

The table maps a command to `module:function`, imported only when that command runs, so that
`mmbert --help` stays fast and a command's heavy imports are paid only by that command.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "tokenizer": ("mmbert.tokenizer:main", "train or inspect a multilingual tokenizer"),
    "prepare": ("mmbert.data.prepare:main", "tokenize documents into per-language shards"),
    "plan": ("mmbert.plan:main", "show each phase's language/source sampling budget"),
    "train": ("mmbert.train:main", "run a recipe's phases (resumable, distributed)"),
    "merge": ("mmbert.merge:main", "merge HF-format checkpoints (TIES, linear, EMA)"),
    "evaluate": ("mmbert.evaluate:main", "per-language MLM accuracy and cross-lingual retrieval"),
    "fill-mask": ("mmbert.inference:fill_mask_main", "top predictions for <mask> tokens"),
    "embed": ("mmbert.inference:embed_main", "mean-pooled embeddings of a file of texts"),
    "finetune": ("mmbert.finetune:main", "fine-tune sequence classification / regression"),
    "demo": ("mmbert.demo:main", "the end-to-end demo on the bundled corpus"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: mmbert COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`mmbert COMMAND --help` describes a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name == "--version":
        from mmbert import __version__

        print(__version__)
        return 0
    if name not in COMMANDS:
        print(f"mmbert: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
