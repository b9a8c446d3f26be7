"""Benchmark protocols: versioned YAML settings files, one task's settings resolved, key=value overrides.

A settings file (`mmbert/resources/benchmarks/*.yaml`) has a `version`, a `family`, `defaults` and
`tasks`; a task's settings are the defaults, then its own entry, then (when the task names protocols)
the entry of its `protocol`, then the user's `key=value` overrides (dotted keys, YAML values:
`lr=3e-5`, `seeds=[0,1]`, `eval.configs=[fr,de]`, `protocol=translate-train-all`). Unknown keys are
refused with the file and key named, so a typo cannot silently run the default.
"""

from __future__ import annotations

import copy
import functools
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mmbert.data.records import load_yaml
from mmbert.errors import MmbertError
from mmbert.recipe import RecipeError, apply_override, known_keys

FAMILY_FILES = ("glue.yaml", "xtreme.yaml", "mteb.yaml")
# A family runs its tasks one after another, each into OUT/TASK; its average sits beside the paper's.
FAMILIES = {
    "glue": ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte"),
    "xtreme": ("xnli", "pawsx", "xcopa", "xquad", "mlqa", "tydiqa", "wikiann"),
}
KINDS = ("classification", "regression", "multiple_choice", "qa", "token", "mteb")
# Every key a task may have, and what it means (the result prints the resolved settings).
KEYS = {
    "kind", "dataset", "revision", "columns", "labels", "metric", "paper", "protocol", "protocols",
    "train", "dev", "eval", "lr", "epochs", "max_steps", "batch_size", "max_length", "warmup_ratio",
    "weight_decay", "seeds", "select", "eval_every", "patience", "classifier_pooling", "template",
    "language_from", "doc_stride", "max_answer_length", "n_best", "prefix_space", "tasks", "languages",
    "local_score_range", "answer_normalization",
}  # fmt: skip
PART_KEYS = {"dataset", "configs", "split"}
# The metrics each kind computes (any may be the task's `metric`); mse is the one where lower is better.
METRICS = {
    "classification": ("accuracy", "matthews", "f1"),
    "regression": ("pearson", "spearman", "mse"),
    "multiple_choice": ("accuracy",),
    "qa": ("f1", "exact_match"),
    "token": ("f1", "precision", "recall"),
}
LOWER_IS_BETTER = {"mse"}


class SettingsError(MmbertError, ValueError):
    """A settings file or override that cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class Part:
    """One role of a task's data (train, dev or eval): a dataset, its configs and one split."""

    dataset: str | None
    configs: tuple[str, ...]
    split: str


@dataclass
class Settings:
    """One task's resolved settings and where they came from."""

    task: str
    family: str
    version: int
    file: Path
    values: dict[str, Any]
    overrides: tuple[str, ...]

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    @property
    def kind(self) -> str:
        return self.values["kind"]

    def part(self, role: str) -> Part:
        """The train / dev / eval data of this task."""
        raw = self.values.get(role)
        if not isinstance(raw, dict) or "split" not in raw:
            raise SettingsError(f"{self.file}: task {self.task}: `{role}` needs a split")
        configs = raw.get("configs") or ["default"]
        return Part(
            raw.get("dataset") or self.values.get("dataset"), tuple(map(str, configs)), str(raw["split"])
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "family": self.family,
            "version": self.version,
            "file": str(self.file),
            "overrides": list(self.overrides),
            "values": self.values,
        }


def builtin_files() -> list[Path]:
    root = resources.files("mmbert") / "resources" / "benchmarks"
    return [Path(str(root / name)) for name in FAMILY_FILES]


def _read(path: Path) -> dict[str, Any]:
    """The settings file's data (a fresh copy: callers merge into it)."""
    try:
        stat = path.stat()
    except OSError as err:
        raise SettingsError(f"{path}: cannot read settings: {err.strerror}") from None
    return copy.deepcopy(_parse(str(path), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=32)
def _parse(path_text: str, mtime_ns: int, size: int) -> dict[str, Any]:
    """Parse once per file version (pure-Python YAML is slow, and every task lookup reads all files)."""
    path = Path(path_text)
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise SettingsError(f"{path}: cannot read settings: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise SettingsError(f"{where}: invalid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
        raise SettingsError(f"{path}: a settings file is a mapping with `version`, `defaults` and `tasks`")
    if not isinstance(data.get("version"), int):
        raise SettingsError(f"{path}: `version` must be an integer (the protocol's version)")
    return data


def task_names() -> dict[str, Path]:
    """Every task of the built-in settings files -> its file."""
    return {task: path for path in builtin_files() for task in _read(path)["tasks"]}


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in (top or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_settings(
    task: str, file: str | Path | None = None, overrides: tuple[str, ...] | list[str] = ()
) -> Settings:
    """Resolve `task`'s settings from `file` (default: the built-in file that defines it)."""
    if file is None:
        known = task_names()
        if task not in known:
            raise SettingsError(
                f"unknown benchmark task {task!r}; tasks: {', '.join(sorted(known))}; families: {', '.join(FAMILIES)}"
            )
        file = known[task]
    path = Path(file)
    data = _read(path)
    if task not in data["tasks"]:
        raise SettingsError(f"{path}: no task {task!r} (tasks: {', '.join(sorted(data['tasks']))})")
    values = _merge(data.get("defaults") or {}, data["tasks"][task] or {})
    protocol = next(
        (o.split("=", 1)[1].strip() for o in overrides if o.split("=", 1)[0].strip() == "protocol"), None
    )
    protocols = values.pop("protocols", None)
    if protocols:
        protocol = protocol or values.get("protocol")
        if protocol not in protocols:
            raise SettingsError(
                f"{path}: task {task}: protocol {protocol!r} is not one of {', '.join(protocols)}"
            )
        values = _merge(values, protocols[protocol])
        values["protocol"] = protocol
    elif protocol is not None:
        raise SettingsError(
            f"{path}: task {task} has a single protocol; `protocol={protocol}` does not apply"
        )
    for assignment in overrides:
        try:
            apply_override(values, _numbers_as_numbers(assignment))
        except RecipeError as err:
            raise SettingsError(f"override {assignment!r}: {err.key}: {err.message}") from None
    settings = Settings(
        task, str(data.get("family", path.stem)), data["version"], path, values, tuple(overrides)
    )
    _check(settings)
    return settings


def _numbers_as_numbers(assignment: str) -> str:
    """`lr=1e-4` means the number: YAML 1.1 reads `1e-4` (no dot) as a string. The value is written back
    in a form YAML 1.1 reads as a float (`1.0e-05`: JSON's `1e-05` would be a string again)."""
    key, sep, raw = assignment.partition("=")
    if not sep:
        return assignment
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        return assignment

    def fix(x: Any) -> Any:
        if isinstance(x, list):
            return [fix(y) for y in x]
        if isinstance(x, dict):
            return {k: fix(y) for k, y in x.items()}
        if isinstance(x, str):
            try:
                return float(x)
            except ValueError:
                return x
        return x

    return f"{key}={_yaml_text(fix(value))}"


def _yaml_text(x: Any) -> str:
    """`x` as YAML flow text that reads back as the same value (floats with a dot and a signed exponent)."""
    if isinstance(x, list):
        return "[" + ", ".join(_yaml_text(y) for y in x) + "]"
    if isinstance(x, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))}: {_yaml_text(y)}" for k, y in x.items()) + "}"
    if isinstance(x, float) and math.isfinite(x):
        mantissa, e, exponent = repr(x).partition("e")
        if "." not in mantissa:
            mantissa += ".0"
        return mantissa + (f"e{exponent if exponent[0] in '+-' else '+' + exponent}" if e else "")
    return json.dumps(x)


def _check(s: Settings) -> None:
    v, where = s.values, f"{s.file}: task {s.task}"
    unknown = sorted(set(v) - KEYS)
    if unknown:
        raise SettingsError(f"{where}: unknown key {unknown[0]!r}{known_keys(unknown[0], sorted(KEYS))}")

    def need(ok: bool, key: str, rule: str) -> None:
        if not ok:
            raise SettingsError(f"{where}: {key} {rule}, got {v.get(key)!r}")

    need(v.get("kind") in KINDS, "kind", f"must be one of {', '.join(KINDS)}")
    seeds = v.get("seeds")
    need(
        isinstance(seeds, list) and seeds and all(isinstance(x, int) for x in seeds),
        "seeds",
        "must be a list of integers",
    )
    if v["kind"] == "mteb":
        return
    lrs = v.get("lr") if isinstance(v.get("lr"), list) else [v.get("lr")]
    need(
        all(isinstance(x, int | float) and x >= 0 for x in lrs) and lrs,
        "lr",
        "must be a number >= 0 or a list of them",
    )
    need(
        isinstance(v.get("batch_size"), int) and v["batch_size"] >= 1, "batch_size", "must be an integer >= 1"
    )
    need(
        isinstance(v.get("max_length"), int) and v["max_length"] >= 8, "max_length", "must be an integer >= 8"
    )
    need(isinstance(v.get("epochs"), int | float) and v["epochs"] > 0, "epochs", "must be > 0")
    for key in ("weight_decay", "warmup_ratio"):
        need(isinstance(v.get(key), int | float) and 0 <= v[key] <= 1, key, "must be a number in [0, 1]")
    need(
        v.get("max_steps") is None or (isinstance(v["max_steps"], int) and v["max_steps"] >= 1),
        "max_steps",
        "must be null or >= 1",
    )
    need(v.get("select") in ("best", "last"), "select", "must be best or last")
    need(v.get("metric") in METRICS[v["kind"]], "metric", f"must be one of {', '.join(METRICS[v['kind']])}")
    if v.get("metric") == "f1" and v["kind"] == "classification":
        need(len(v.get("labels") or []) == 2, "metric", "f1 is the positive class's: binary tasks only")
    need(v.get("classifier_pooling") in ("mean", "cls"), "classifier_pooling", "must be mean or cls")
    for role in ("train", "dev", "eval"):
        part = v.get(role)
        need(
            isinstance(part, dict) and "split" in part and not set(part) - PART_KEYS,
            role,
            f"must be a mapping of {sorted(PART_KEYS)} with a split",
        )
    if v["kind"] == "qa":
        need(
            v.get("answer_normalization", "squad") in ("squad", "mlqa"),
            "answer_normalization",
            "must be squad (SQuAD v1.1's script) or mlqa (MLQA's, per context language)",
        )
        need(
            isinstance(v.get("doc_stride"), int) and 0 < v["doc_stride"] < v["max_length"] // 2,
            "doc_stride",
            f"(the overlap of a context's windows) must be an integer in 1..{v['max_length'] // 2 - 1} (max_length / 2)",
        )
    if v["kind"] in ("classification", "token"):
        need(
            isinstance(v.get("labels"), list) and len(v["labels"]) >= 2,
            "labels",
            "must list the label names (ids in order)",
        )
