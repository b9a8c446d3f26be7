"""The paper's figures (`mmbert/resources/benchmarks/paper.yaml`), looked up by a settings `paper` key."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import yaml

from mmbert.benchmark.settings import SettingsError


@functools.cache
def _paper() -> dict[str, Any]:
    path = resources.files("mmbert") / "resources" / "benchmarks" / "paper.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def paper_figures(key: str | None) -> dict[str, Any]:
    """{model: figure or None, ..., "table": source} for `family.task` (e.g. `glue.cola`); {} for None."""
    if not key:
        return {}
    data = _paper()
    family, _, task = str(key).partition(".")
    table = data["figures"].get(family)
    if table is None or task not in table:
        known = [f"{f}.{t}" for f, ts in data["figures"].items() for t in ts if t != "table"]
        raise SettingsError(f"paper: no figure {key!r}; known: {', '.join(known)}")
    return {**dict(zip(data["models"], table[task], strict=True)), "table": table["table"]}
