"""The base class of expected failures: bad input, a refused action, a run that cannot go on.

Library code raises a subclass with a message that names the file, line or key (`RecipeError`: the
key path of a recipe, or of the data mixture a recipe phase declares); the command layer
(`mmbert.cli`) prints that message on one line and exits non-zero, and shows a traceback only with
`--debug`. Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class MmbertError(Exception):
    """An expected failure whose message is complete on its own (no traceback needed to act on it)."""


class RecipeError(MmbertError, ValueError):
    """A recipe problem; `key` is the dotted/indexed path of the offending key (may be empty)."""

    def __init__(self, key: str, message: str, file: str | None = None) -> None:
        self.key = key
        self.message = message
        self.file = file
        where = ": ".join(p for p in (file, key) if p)
        super().__init__(f"{where}: {message}" if where else message)

    def under(self, prefix: str) -> RecipeError:
        """The same error, with `prefix` (e.g. `phases[1]`) in front of its key."""
        if not prefix:
            return self
        key = f"{prefix}.{self.key}" if self.key and not self.key.startswith("[") else prefix + self.key
        return RecipeError(key, self.message, self.file)

    def in_file(self, file: str) -> RecipeError:
        return RecipeError(self.key, self.message, file)
