"""The document-source interface, and what every kind of source shares: units, bad-input handling, language keys.

A `DocumentSource` is a collection of documents split into work units (a file, a chunk of rows, an MDS
shard): the unit is what `mmbert prepare` hands to a worker process and what it records as finished,
so a unit's id must not change between runs over the same data. `fingerprint()` identifies the data
and the reading options, so that a rerun over changed data is refused rather than mixed in.

Bad input raises `BadInputError` naming the file and line; with a `SkipReport` a source counts the bad
record and carries on instead (`mmbert prepare --skip-bad`).
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmbert import languages
from mmbert.data.documents import Document, TokenizedDocument
from mmbert.data.records import BadInputError, OnError, raise_error


@dataclass(frozen=True)
class Unit:
    """A piece of a source that one worker reads on its own; `uid` names its shards and its resume record."""

    uid: str
    arg: Any
    docs: int | None = None  # number of documents when known cheaply (for the progress bar's ETA)


@dataclass
class SkipReport:
    """What `--skip-bad` skipped: counts per reason and the first few messages."""

    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    max_examples: int = 10

    def add(self, err: BadInputError) -> None:
        self.counts[err.reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(str(err))

    def merge(self, other: dict[str, Any]) -> None:
        self.counts.update(other.get("counts", {}))
        room = self.max_examples - len(self.examples)
        self.examples.extend(other.get("examples", [])[: max(room, 0)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        return {"counts": dict(sorted(self.counts.items())), "examples": list(self.examples)}


def error_handler(report: SkipReport | None) -> OnError:
    """What to do with a bad record: raise it, or count it in `report` when the caller skips bad input."""
    return raise_error if report is None else report.add


class DocumentSource(ABC):
    """A collection of documents, split into units that can be read independently (and in parallel)."""

    kind: str = ""

    @property
    @abstractmethod
    def default_name(self) -> str:
        """The source's name in the manifest when `--name` is not given."""

    @abstractmethod
    def spec(self) -> str:
        """The `--source` string that recreates this source."""

    @abstractmethod
    def units(self) -> list[Unit]:
        """The work units, in a stable order."""

    @abstractmethod
    def read(
        self, unit: Unit, source_name: str, report: SkipReport | None = None
    ) -> Iterator[Document | TokenizedDocument]:
        """Yield the unit's documents; bad records raise, or are counted in `report` when given."""

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """What identifies the data and the reading options: a changed fingerprint means re-prepare."""


def unit_id(text: str) -> str:
    """A file-name-safe, stable unit id: a readable stem plus a short hash of the full name."""
    stem = safe_name(text)[-60:].strip("._") or "unit"
    return f"{stem}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def safe_name(text: str) -> str:
    """`text` with every run of characters other than letters, digits, `.`, `_`, `-` replaced by `_`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def sha256_json(obj: Any) -> str:
    """The hash of a JSON-able value, independent of dict order (for fingerprints)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------------------------------
# Language keys

# FineWeb2 language keys: ISO 639-3 (or 639-1/2 for a few) + "_" + ISO 15924 script; data keys may add
# a variant suffix (`deu_Latn-1996`, see `mmbert.languages`). Directory names must be plain keys:
# FineWeb2's `fra_Latn_removed` (filtered-out data) is not a language directory.
LANG_DIR_RE = re.compile(r"^[a-z]{2,3}_[A-Z][a-z]{3}$")
LANG_KEY_RE = re.compile(r"^[a-z]{2,3}_[A-Z][a-z]{3}(-[A-Za-z0-9]+)?$")
# Keys that are not natural languages but are sampled like one (the code source).
SPECIAL_LANG_KEYS = frozenset({"code"})


def normalize_lang(value: Any, file: str, line: int | None = None) -> str:
    """Return the `lang_Script` key for `value` (a key, or a plain ISO 639-3 code the language table maps).

    Raises `BadInputError("unknown language code")` for anything else.
    """
    if not isinstance(value, str) or not value:
        raise BadInputError("unknown language code", file, line, repr(value))
    if value in SPECIAL_LANG_KEYS or LANG_KEY_RE.match(value):
        return value
    key = _iso3_to_key(value)
    if key is None:
        raise BadInputError(
            "unknown language code",
            file,
            line,
            f"{value!r} (expected a key like 'fra_Latn', or an ISO 639-3 code of a bundled language)",
        )
    return key


def _iso3_to_key(code: str) -> str | None:
    """Map a plain ISO 639-3 code to its `lang_Script` key (the script the bundled corpus uses for it)."""
    if not re.match(r"^[a-z]{3}$", code):
        return None
    try:
        return languages.to_key(code)
    except ValueError:
        return None


def lang_from_path(path: Path) -> str | None:
    """The deepest `lang_Script` directory in `path` (FineWeb2's layout: `.../fra_Latn/train/000.parquet`)."""
    for part in reversed(path.parts[:-1]):
        if LANG_DIR_RE.match(part):
            return part
    return None


def file_lang_error(path: Path, how: str) -> BadInputError:
    """The error for a file whose language nothing names (`how`: why its records cannot say)."""
    return BadInputError(
        "cannot tell the language",
        str(path),
        None,
        f"{how}, no --lang and no lang_Script directory (like fra_Latn/) in the path",
    )
