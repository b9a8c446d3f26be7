"""Records from a user's files, one reader per format, every failure naming the file and line.

Everything that reads a file a user hands over goes through here: the local-files document source
(`.jsonl`, `.jsonl.gz`, `.parquet`, `.txt`; also behind `mmbert tokenizer train --input`), the texts of
`mmbert embed` and `fill-mask` (`.txt` one text per line, `.jsonl`) and fine-tuning data (`.csv`,
`.tsv`, `.jsonl`, `.json`). A reader yields `(line, record)` with 1-based line numbers (row numbers for
parquet) and checks only the format; what a record must hold (a text field, a label) is the caller's
to check, with the same `BadInputError` and the same line.

A bad line (invalid UTF-8, broken JSON) goes to `on_error`, which raises by default; `mmbert prepare
--skip-bad` passes one that counts it, and reading goes on with the next line. A file that cannot be
read at all ends the iteration after its error.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import yaml

from mmbert.errors import MmbertError


class BadInputError(MmbertError, ValueError):
    """A record that cannot be used, with the file (or dataset) and line (or row) it came from."""

    def __init__(self, reason: str, file: str, line: int | None = None, detail: str = "") -> None:
        self.reason, self.file, self.line, self.detail = reason, file, line, detail
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {reason}" + (f": {detail}" if detail else ""))

    def __reduce__(self) -> tuple:
        # Raised in worker processes: pickle the constructor arguments, not the formatted message.
        return (BadInputError, (self.reason, self.file, self.line, self.detail))


OnError = Callable[[BadInputError], None]


def raise_error(err: BadInputError) -> None:
    """The default `on_error`: stop at the first bad line."""
    raise err


BOM = "\ufeff"  # a UTF-8 byte-order mark, which Excel and Notepad put at the start of a file
# Byte-order marks of the encodings Windows editors offer as "Unicode": such a file is not UTF-8 as a
# whole, which its first byte already shows (UTF-32's marks first: UTF-16 LE's is a prefix of one).
_OTHER_BOMS = {
    codecs.BOM_UTF32_LE: "UTF-32",
    codecs.BOM_UTF32_BE: "UTF-32",
    codecs.BOM_UTF16_LE: "UTF-16",
    codecs.BOM_UTF16_BE: "UTF-16",
}


def _not_utf8(path: Path, start: bytes, line: int, detail: str) -> BadInputError:
    """The error for bytes that are not UTF-8; a file starting with a UTF-16/32 byte-order mark is
    named as such, since "invalid UTF-8 at column 1" does not tell a user what to do."""
    for mark, name in _OTHER_BOMS.items():
        if line == 1 and start.startswith(mark):
            return BadInputError(f"{name} text, not UTF-8", str(path), 1, "save the file as UTF-8")
    return BadInputError("invalid UTF-8", str(path), line, f"{detail} (save the file as UTF-8)")


# A JSON escape of half a UTF-16 surrogate pair (`\ud800`): json accepts one alone, and the string it
# gives cannot be encoded, so a tokenizer fails on it far from the file.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def lone_surrogate(value: Any) -> str | None:
    """The first string in `value` (a string, or JSON data) holding a lone surrogate, else None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value
        return None
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return next((bad for item in items if (bad := lone_surrogate(item)) is not None), None)


def _surrogate_error(text: str, value: Any, path: Path, line: int | None) -> BadInputError | None:
    if "\\u" not in text or not _SURROGATE_ESCAPE.search(text):  # the cheap test first
        return None
    bad = lone_surrogate(value)
    if bad is None:  # escapes of whole pairs (an emoji), which json joins into one character
        return None
    detail = f"{bad[:60]!r}: a \\uD800-\\uDFFF escape must be half of a pair; this one is not a character"
    return BadInputError("lone surrogate in a string", str(path), line, detail)


def read_text(path: Path) -> str:
    """A whole text file (one document), without a byte-order mark."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8").removeprefix(BOM)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise _not_utf8(path, data[:4], line, f"byte offset {e.start}") from None


def _decoded(f: IO[bytes], path: Path, on_error: OnError) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of a binary file, without a byte-order mark; a line that is
    not UTF-8 goes to `on_error` (a UTF-16/32 file ends the iteration: no line of it is UTF-8)."""
    for lineno, raw in enumerate(f, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            err = _not_utf8(path, raw, lineno, f"column {e.start + 1}")
            on_error(err)
            if err.reason.endswith("not UTF-8"):
                return
            continue
        yield lineno, line.removeprefix(BOM) if lineno == 1 else line


def iter_lines(path: Path, on_error: OnError = raise_error) -> Iterator[tuple[int, str]]:
    """Every line of a text file, blank ones included, without its line ending (`\\n` or `\\r\\n`)."""
    with open(path, "rb") as f:
        for lineno, line in _decoded(f, path, on_error):
            yield lineno, line.removesuffix("\n").removesuffix("\r")


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are each given once (json keeps the last of a repeated key silently)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"{key!r} is given twice")
        out[key] = value
    return out


def iter_jsonl(
    path: Path, on_error: OnError = raise_error, *, unique_keys: bool = False
) -> Iterator[tuple[int, Any]]:
    """The parsed value of every non-blank line of a JSON Lines file (gzip-compressed when `.gz`).

    `unique_keys`: an object with a repeated key is a bad line (fine-tuning data, where the last
    `label` would win without a word)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    hook = _unique_keys if unique_keys else None
    try:
        with opener(path, "rb") as f:
            for lineno, line in _decoded(f, path, on_error):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line, object_pairs_hook=hook)
                except _DuplicateKey as e:
                    on_error(BadInputError("duplicate key", str(path), lineno, str(e)))
                    continue
                except json.JSONDecodeError as e:
                    on_error(BadInputError("broken JSON line", str(path), lineno, e.msg))
                    continue
                if err := _surrogate_error(line, value, path, lineno):
                    on_error(err)
                    continue
                yield lineno, value
    except (OSError, EOFError) as e:  # a truncated or corrupt .gz
        on_error(BadInputError("unreadable file", str(path), None, str(e)))


def read_json(path: Path, *, unique_keys: bool = False) -> Any:
    """The value of a whole JSON file (`unique_keys`: as in `iter_jsonl`)."""
    text = read_text(path)
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys if unique_keys else None)
    except _DuplicateKey as e:
        raise BadInputError("duplicate key", str(path), None, str(e)) from None
    except json.JSONDecodeError as e:
        raise BadInputError("invalid JSON", str(path), e.lineno, e.msg) from None
    if err := _surrogate_error(text, value, path, None):
        raise err
    return value


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping key given twice (PyYAML keeps the last one without a
    word, so a recipe's second `seed:` or a phase's second `tokens:` would win silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                continue  # an unhashable key: the safe loader's own error says so
            if key in first:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first given on line {first[key]})",
                    key_node.start_mark,
                )
            first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """The data of a YAML document (a recipe, a settings file), safe types only, each key given once.
    A `yaml.YAMLError` (its `problem_mark` holds the line) is the caller's to name with its file."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def iter_csv(path: Path, delimiter: str = ",") -> Iterator[tuple[int, dict[str, Any]]]:
    """The rows of a CSV (or, with `delimiter="\\t"`, TSV) file with a header line, as dicts.

    Strict, because a lenient reader turns a slip into a wrong label without a word: a row whose
    field count differs from the header's (an unquoted comma in a text), a duplicated column
    name, a quote left open or a character after a closing quote are errors naming the line.
    The byte-order mark of Excel's "CSV UTF-8" is dropped (as by every reader here). Blank lines are
    skipped. The line of a row is the physical line where it starts (1 is the header), so a quote
    that is never closed is reported where it opens, not at the end of the file.
    """
    text = read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    header: list[str] | None = None
    end = 0  # the physical line where the previous row ended
    while True:
        start = end + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            if str(e) == "unexpected end of data":  # the file ends inside a quoted field
                detail = "a quote opened in the row on this line is never closed"
                raise BadInputError("unbalanced quote", str(path), start, detail) from None
            raise BadInputError("broken CSV", str(path), reader.line_num, str(e)) from None
        end = reader.line_num
        if not row:
            continue
        if header is None:
            header = _csv_header(row, path, start)
            continue
        if len(row) != len(header):
            spans = f" (the row runs to line {end}: a quote left open?)" if end > start else ""
            raise BadInputError(
                f"{len(row)} fields where the header has {len(header)}",
                str(path),
                start,
                f"a field holding {delimiter!r} must be quoted{spans}",
            )
        yield start, dict(zip(header, row, strict=True))


def _csv_header(row: list[str], path: Path, line: int) -> list[str]:
    """The column names of a CSV header, each named one given once (an unnamed column, such as the
    index pandas writes, is allowed)."""
    names = [name.strip() for name in row]
    seen: set[str] = set()
    for name in filter(None, names):
        if name in seen:
            raise BadInputError("duplicate column name", str(path), line, f"{name!r} is given twice")
        seen.add(name)
    return names


def iter_parquet(
    path: Path,
    columns: Sequence[str],
    required: Mapping[str, str] | None = None,
    on_error: OnError = raise_error,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """The rows of a parquet file (numbered from 1) as dicts of those of `columns` that it has.

    `required` maps a column the file must have to the reason given when it lacks it: one error for
    the file, not one per row.
    """
    import pyarrow.parquet as pq  # heavy, and only parquet input needs it

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a bad file
        on_error(BadInputError("unreadable parquet file", str(path), None, str(e)))
        return
    names = pf.schema_arrow.names
    for column, reason in (required or {}).items():
        if column not in names:
            on_error(BadInputError(reason, str(path), None, f"no column {column!r} (has {names})"))
            return
    row = 0
    for batch in pf.iter_batches(batch_size=4096, columns=[c for c in columns if c in names]):
        for record in batch.to_pylist():
            row += 1
            yield row, record
