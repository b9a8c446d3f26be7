"""The manifest of a prepared data directory, `DATA/manifest.json`: its format, read, checked and written here.

`mmbert prepare` writes it (a merge: several sources can be prepared into one DATA) and
`mmbert.data.shards.TokenStore` reads it. Version 1:

    {"version": 1,
     "tokenizer": {"path", "vocab_size", "special_ids", "sha256", "fingerprint"},
     "sources": {SOURCE: {LANG: {"docs": int, "tokens": int,
                                 "shards": [path of a .tokens.npy relative to DATA, ...],
                                 "ranges": [[first, end), the documents LANG owns in that shard, ...],
                                 "ids": [[smallest, largest] token id in that shard, ...]}}},
     "source_info": {SOURCE: {"spec", "kind", "fingerprint", "tokenizer_sha256", "units", "skipped",
                              "no_tokens", "prepared_at"}}}

`tokenizer` says what the token ids mean (`mmbert.tokenizer.fingerprint_sha256` is `sha256`, its first
16 hex digits `fingerprint`); a shard holds the documents of several languages, each a contiguous
range, so a language's entry lists its shards and its range in each. `ids` is each shard's token-id
range as `prepare` wrote it (a run checks it against the model's vocabulary instead of reading every
shard); manifests written before it was recorded lack it, and `mmbert.data.shards.record_id_ranges`
adds it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mmbert.errors import MmbertError
from mmbert.io import atomic_write_text

MANIFEST = "manifest.json"
VERSION = 1
SOURCE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # also a directory name of DATA
SHARD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*\.tokens\.npy$")


class ManifestError(MmbertError, ValueError):
    """A manifest that cannot be read or does not agree with itself; the message names the file."""


class ManifestTokenizerError(ManifestError):
    """A manifest that does not say which tokenizer cut its shards (`prepare --overwrite` rewrites it)."""


def new_manifest() -> dict[str, Any]:
    """An empty manifest (no tokenizer yet, no sources)."""
    return {"version": VERSION, "sources": {}, "source_info": {}}


def read_manifest(data: str | Path) -> dict[str, Any] | None:
    """`data`'s manifest, checked (`ManifestError` when corrupt); None when there is none yet."""
    path = Path(data) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path}: corrupt manifest: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("version") != VERSION:
        version = manifest.get("version") if isinstance(manifest, dict) else None
        raise ManifestError(f"{path}: manifest version {version}, expected {VERSION}")
    sources = manifest.get("sources")
    if not isinstance(sources, dict):
        raise ManifestError(f"{path}: manifest has no 'sources' table")
    if sources:
        _check_tokenizer(path, manifest.get("tokenizer"))
    for source, langs in sources.items():
        # A source's name is a directory of DATA (`prepare --overwrite` deletes it): a plain name only.
        if not isinstance(source, str) or not SOURCE_NAME_RE.match(source):
            raise ManifestError(f"{path}: sources: {source!r} is not a source name")
        if not isinstance(langs, dict):
            raise ManifestError(f"{path}: sources.{source}: expected a table of languages")
        for lang, entry in langs.items():
            _check_entry(path, f"{source}/{lang}", entry)
    return manifest


def _check_tokenizer(path: Path, tokenizer: Any) -> None:
    """What the token ids mean must be recorded: vocabulary size, special ids and fingerprint."""
    if not isinstance(tokenizer, dict):
        raise ManifestTokenizerError(
            f"{path}: no 'tokenizer' entry (which tokenizer cut these shards?); prepare the data again "
            "with `mmbert prepare --overwrite`"
        )
    for key, kind in (("vocab_size", int), ("special_ids", dict), ("sha256", str)):
        if not isinstance(tokenizer.get(key), kind):
            raise ManifestTokenizerError(f"{path}: tokenizer.{key} is missing or not a {kind.__name__}")


def _check_entry(path: Path, name: str, entry: Any) -> None:
    shards, ranges = (entry.get("shards"), entry.get("ranges")) if isinstance(entry, dict) else (None, None)
    if not isinstance(shards, list) or not isinstance(ranges, list) or len(shards) != len(ranges):
        raise ManifestError(f"{path}: {name}: shards and ranges do not match")
    for shard in shards:
        # Read relative to DATA: `<directory>/<file>.tokens.npy` inside it, never a path elsewhere.
        if not isinstance(shard, str) or not SHARD_RE.match(shard):
            raise ManifestError(
                f"{path}: {name}: {shard!r} is not a shard path (DIR/NAME.tokens.npy inside the data directory)"
            )
    if not all(
        isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r) and 0 <= r[0] <= r[1]
        for r in ranges
    ):
        raise ManifestError(f"{path}: {name}: a shard range is not [first, end] document numbers")
    ids = entry.get("ids")
    if ids is not None and not (
        isinstance(ids, list)
        and len(ids) == len(shards)
        and all(
            isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r) and 0 <= r[0] <= r[1]
            for r in ids
        )
    ):
        raise ManifestError(f"{path}: {name}: ids is not a [smallest, largest] token id per shard")
    docs = sum(b - a for a, b in ranges)
    if docs != entry.get("docs"):
        raise ManifestError(
            f"{path}: {name} lists {entry.get('docs')} documents, its shard ranges hold {docs}"
        )


def write_manifest(data: str | Path, manifest: dict[str, Any]) -> Path:
    """Write `data`'s manifest atomically; returns its path."""
    path = Path(data) / MANIFEST
    atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path


def language_entries(shards: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One source's per-language entries from its shards, in order, sorted by language.

    A shard is `{"path": ..., "langs": {lang: [first, end, tokens]}, "ids": [smallest, largest]}`, as
    `mmbert prepare` records it.
    """
    langs: dict[str, dict[str, Any]] = {}
    for shard in shards:
        for lang, (a, b, n_tokens) in shard["langs"].items():
            entry = langs.setdefault(lang, {"docs": 0, "tokens": 0, "shards": [], "ranges": [], "ids": []})
            entry["docs"] += b - a
            entry["tokens"] += n_tokens
            entry["shards"].append(shard["path"])
            entry["ranges"].append([a, b])
            entry["ids"].append(list(shard["ids"]))
    return dict(sorted(langs.items()))
