"""bench/learning_curves.py --smoke: a shape trains, its held-out loss is measured along the way, a choice is written."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "learning_curves.py"


def test_smoke_run_writes_curves_and_a_choice(tmp_path):
    spec = importlib.util.spec_from_file_location("learning_curves", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "lc.json"
    assert module.main(["--smoke", "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    (name,) = results["shapes"]
    assert results["choice"] == name
    points = results["shapes"][name]["points"]
    assert len(points) >= 2 and points[0]["tokens"] == 0
    assert [p["tokens"] for p in points] == sorted({p["tokens"] for p in points})  # one per time mark
    for p in points:
        low, high = p["heldout_loss_ci"]
        assert low <= p["heldout_loss"] <= high
        assert p["nats_per_char"] == results["shapes"][name]["tokens_per_char"] * p["heldout_loss"]
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
