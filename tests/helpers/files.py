"""Files and directories a test puts in a command's way (an input, someone else's directory)."""

from __future__ import annotations

from pathlib import Path


def dir_with(path: Path, name: str, text: str) -> Path:
    """`path` made a directory holding one file, `name`, of `text` (an input, or someone else's directory)."""
    path.mkdir(parents=True)
    (path / name).write_text(text)
    return path
