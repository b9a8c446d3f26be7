"""A benchmark's data: Hugging Face `datasets` by name, or local files in the same layout.

`--data` is one of:
- nothing: the settings' dataset names through `datasets.load_dataset(NAME, CONFIG, split=SPLIT)`
  (network, or the user's HF cache);
- `hf:NAME`: the same with NAME in place of the task's own dataset (parts with a dataset of their own,
  such as XCOPA's English COPA training data, keep theirs);
- a local folder: `DIR/CONFIG/SPLIT.EXT` for each config and split the protocol names (EXT: jsonl, json,
  parquet or csv), or `DIR/SPLIT.EXT` where a part has a single config. A split may also be in shards
  as a Hub dataset repository holds them (`DIR/CONFIG/SPLIT-00000-of-00002.parquet`, ...; a download of
  `nyu-mll/glue` is such a folder) or as the Hub's parquet conversion does (`DIR/CONFIG/SPLIT/0000.parquet`),
  read in name order. The files hold the real datasets' columns and label ids (a `datasets` split saved
  with `to_json` is such a file). A `.json` file may also be SQuAD's own nested format (`data` ->
  `paragraphs` -> `qas`), flattened here.

Each split read is recorded for the result: a local file's path and sha256, or the dataset name,
config, split, requested revision and `datasets`' fingerprint.
"""

from __future__ import annotations

import glob
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmbert.benchmark.settings import Part
from mmbert.data.records import BadInputError, iter_csv, iter_jsonl, read_json
from mmbert.errors import MmbertError

EXTENSIONS = (".jsonl", ".json", ".parquet", ".csv")
Row = tuple[str, dict[str, Any]]  # ("file:line", record)


class BenchmarkDataError(MmbertError, ValueError):
    """Data that cannot be used; the message names the file (and line) or the dataset."""


@dataclass(frozen=True)
class DataSource:
    """Where a benchmark's data comes from (`--data`)."""

    spec: str | None = None

    @property
    def local(self) -> Path | None:
        if self.spec is None or self.spec.startswith("hf:"):
            return None
        return Path(self.spec)

    def dataset_name(self, part: Part, task_dataset: str | None) -> str | None:
        """The HF dataset a part reads: `hf:NAME` replaces the task's own dataset, not a part's own."""
        if self.spec is not None and self.spec.startswith("hf:") and part.dataset == task_dataset:
            return self.spec[3:]
        return part.dataset


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_split(
    source: DataSource, part: Part, config: str, task_dataset: str | None, revision: str | None
) -> tuple[list[Row], dict[str, Any]]:
    """The rows of one config's split, and the record of what was read."""
    root = source.local
    if root is not None:
        paths = _local_files(root, part, config)
        rows = [row for path in paths for row in read_rows(path)]
        if not rows:
            raise BenchmarkDataError(f"{', '.join(map(str, paths))}: the split is empty (no rows)")
        if len(paths) == 1:
            return rows, {"file": str(paths[0]), "sha256": sha256_file(paths[0]), "rows": len(rows)}
        return rows, {"files": [str(p) for p in paths], "sha256": [sha256_file(p) for p in paths],
                      "rows": len(rows)}  # fmt: skip
    name = source.dataset_name(part, task_dataset)
    if name is None:
        raise BenchmarkDataError("this task has no dataset name: give --data PATH or --data hf:NAME")
    return _load_hf(name, None if config == "default" else config, part.split, revision)


def _local_files(root: Path, part: Part, config: str) -> list[Path]:
    """The file (or the shards, in name order) that hold one config's split under `--data`."""
    if not root.exists():
        raise BenchmarkDataError(f"--data {root}: no such file or folder")
    if root.is_file():
        if len(part.configs) == 1:
            return [root]
        raise BenchmarkDataError(
            f"--data {root}: a file, but the protocol reads configs {list(part.configs)}"
        )
    single = len(part.configs) == 1
    folders = [root / config] + ([root, root / "data"] if single else [])
    split = part.split
    for folder in folders:
        for ext in EXTENSIONS:
            if (folder / f"{split}{ext}").is_file():
                return [folder / f"{split}{ext}"]
            shards = sorted(folder.glob(f"{glob.escape(split)}-[0-9]*-of-[0-9]*{ext}"))
            shards = shards or sorted((folder / split).glob(f"*{ext}"))
            if shards:
                return shards
    tried = [str((folder / f"{split}{ext}").relative_to(root)) for folder in folders for ext in EXTENSIONS]
    raise BenchmarkDataError(
        f"--data {root}: no file for config {config!r}, split {split!r} (looked for {', '.join(tried)}, "
        f"and for shards {split}-00000-of-0000N.EXT or {split}/*.EXT in the same folders)"
    )


def read_rows(path: Path) -> list[Row]:
    """Records of a .jsonl / .json / .parquet / .csv file, each with its `file:line`."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            return _jsonl_rows(path)
        if suffix == ".csv":
            return [(f"{path}:{line}", row) for line, row in iter_csv(path)]
        if suffix == ".json":
            try:
                data = read_json(path)
            except BadInputError as whole:
                # `datasets`' to_json writes JSON Lines whatever the name (lines=True by default).
                try:
                    return _jsonl_rows(path)
                except (BadInputError, BenchmarkDataError):
                    raise whole from None
            return _json_rows(path, data)
        if suffix == ".parquet":
            import pyarrow.parquet as pq  # heavy: only parquet input needs it

            return [(f"{path}[{i}]", r) for i, r in enumerate(pq.read_table(path).to_pylist())]
    except BadInputError as e:
        raise BenchmarkDataError(str(e)) from None
    raise BenchmarkDataError(f"{path}: unsupported file type {suffix!r} (use {', '.join(EXTENSIONS)})")


def _jsonl_rows(path: Path) -> list[Row]:
    out = []
    for line, obj in iter_jsonl(path):
        if not isinstance(obj, dict):
            raise BenchmarkDataError(f"{path}:{line}: expected a JSON object, got {type(obj).__name__}")
        out.append((f"{path}:{line}", obj))
    return out


def _json_rows(path: Path, data: Any) -> list[Row]:
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if isinstance(data, list) and data and isinstance(data[0], dict) and "paragraphs" in data[0]:
        return _flatten_squad(path, data)
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise BenchmarkDataError(
            f"{path}: expected a list of objects, {{'data': [...]}} or SQuAD's nested format"
        )
    return [(f"{path}[{i}]", r) for i, r in enumerate(data)]


def _flatten_squad(path: Path, articles: list[dict]) -> list[Row]:
    """SQuAD's nested JSON (`data[].paragraphs[].qas[]`) as HF's flat rows."""
    rows = []
    for a, article in enumerate(articles):
        for p, para in enumerate(article.get("paragraphs", [])):
            for q, qa in enumerate(para.get("qas", [])):
                where = f"{path}[data.{a}.paragraphs.{p}.qas.{q}]"
                answers = qa.get("answers", [])
                if not all(isinstance(x, dict) and "text" in x and "answer_start" in x for x in answers):
                    raise BenchmarkDataError(f"{where}: each answer needs `text` and `answer_start`")
                rows.append((where, {
                    "id": str(qa.get("id", where)),
                    "title": article.get("title", ""),
                    "context": para.get("context"),
                    "question": qa.get("question"),
                    "answers": {"text": [x["text"] for x in answers],
                                "answer_start": [int(x["answer_start"]) for x in answers]},
                }))  # fmt: skip
    return rows


def _load_hf(
    name: str, config: str | None, split: str, revision: str | None
) -> tuple[list[Row], dict[str, Any]]:
    try:
        import datasets  # optional (the `hf` extra): only Hub data needs it
    except ImportError as e:  # pragma: no cover - datasets is in the hf/dev extras
        raise BenchmarkDataError(f"{name}: loading HF datasets needs `pip install datasets`") from e
    label = f"{name}" + (f"/{config}" if config else "") + f"[{split}]"
    try:
        ds = datasets.load_dataset(name, config, split=split, revision=revision)
    except Exception as e:  # noqa: BLE001 - offline, unknown name/config/split, bad files: all one message
        raise BenchmarkDataError(f"{label}: `datasets` cannot load it: {' '.join(str(e).split())}") from e
    rows = [(f"{label}[{i}]", r) for i, r in enumerate(ds)]
    if not rows:
        raise BenchmarkDataError(f"{label}: the split is empty (no rows)")
    record = {"dataset": name, "config": config, "split": split, "revision": revision,
              "fingerprint": getattr(ds, "_fingerprint", None), "rows": len(rows)}  # fmt: skip
    return rows, record
