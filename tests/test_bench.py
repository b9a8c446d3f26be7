"""The GPU check's smoke mode runs here on CPU (tiny shapes), so the one-command GPU bench cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _smoke(tmp_path: Path, bench: str, timeout: int) -> tuple[dict, str]:
    """Run `bench/<bench> --smoke` in a process of its own: its JSON output, and what it printed."""
    out = tmp_path / f"{Path(bench).stem}.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / bench), "--smoke", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_gpu_bench_smoke_runs_every_section_on_cpu(tmp_path):
    result, printed = _smoke(tmp_path, "gpu.py", timeout=600)
    assert result["errors"] == [] and result["skipped"] == []
    sections = {row["section"] for row in result["rows"]}
    assert sections == {"parity", "train", "inference", "memory", "ddp"}
    checks = [row for row in result["rows"] if row["ok"] is not None]
    assert checks and all(row["ok"] for row in checks)
    # Parity rows for both backends that run on CPU, with and without a window; the table was printed.
    parity = {
        (r["backend"], r["window"], r["pass_"])
        for r in result["rows"]
        if r["section"] == "parity" and "pass_" in r
    }
    assert {("sdpa", 4, "backward"), ("sdpa", None, "forward"), ("flex", 4, "forward")} <= parity
    assert "ours / transformers padded" in printed and "DDP step" in printed


def test_gpu_bench_writes_its_table_row_by_row_and_skips_past_the_deadline(tmp_path):
    """A device call killed at its time limit keeps what was printed: the JSON is rewritten after each
    row; a section that would start past --deadline is listed as skipped (here: all of them)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu
    finally:
        sys.path.remove(str(ROOT / "bench"))
    out = tmp_path / "partial.json"
    report = gpu.Report(out, {"device": "cpu"}, deadline=0.0)
    report.add("parity", "sdpa float32 forward", "max rel err 1e-7", True, error=1e-7)
    on_disk = json.loads(out.read_text())
    assert [r["item"] for r in on_disk["rows"]] == ["sdpa float32 forward"]
    assert on_disk["meta"]["device"] == "cpu"
    assert report.past_deadline()

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--smoke", "--deadline", "0", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["skipped"] == list(gpu.SECTIONS) and result["rows"] == [] and result["errors"] == []


def test_inference_profile_splits_a_forward_into_its_groups(tmp_path):
    """bench/profile_inference.py (the README's breakdown) runs, on the tiny preset, and its shares add up."""
    out = tmp_path / "profile.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "profile_inference.py"), "--preset", "tiny", "--forwards", "1",
         "--threads", "1", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    share = result["share"]
    assert abs(sum(share.values()) - 1) < 1e-9 and share["matmul"] > 0 and share["attention"] > 0
    assert result["real_tokens"] > 0 and 0 < result["matmul_fraction_of_peak"] and 0 < result["mfu"]


def test_scale_bench_smoke_measures_every_sweep(tmp_path):
    """bench/scale.py at tiny sizes: every sweep, the mmBERT-like layout, the plan check and the
    extrapolation are measured and written; open shards stay bounded by the store's cache."""
    result, printed = _smoke(tmp_path, "scale.py", timeout=300)
    for sweep in ("documents", "cells", "shards"):
        assert len(result[sweep]) == 2 and all(row["draws_per_s"] > 0 for row in result[sweep])
    rows = [*result["documents"], *result["cells"], *result["shards"], result["layout"]]
    assert all(row["open_fds"] <= 2 * 64 + 16 and row["open_shards"] <= 64 for row in rows)
    assert all(row["data_maps"] == 0 for row in rows)  # positional reads: no shard is memory-mapped
    assert result["shards"][-1]["shard_opens"] > 64  # more shards than the cache: reopened as needed
    assert result["layout"]["cells"] > 1800  # the released languages, by source
    assert [row["phase"] for row in result["sampler_vs_plan"]] == ["pretrain", "mid", "decay"]
    # Each draw opens its shard (headers, first and last offsets) and reads its offsets and tokens.
    assert 1 < result["extrapolation"]["bytes_read_per_token_byte"]["measured"] < 2
    # The loader's ranks read their own rows' tokens (plus lengths and straddling pieces), not the batch's.
    reads = result["loader_reads"]
    assert reads["ranks"] == 8 and len(reads["bytes_read_per_rank_per_step"]) == 8
    assert 1 < reads["read_over_own"] < 2
    assert max(reads["bytes_read_per_rank_per_step"]) < reads["global_token_bytes_per_step"] / 4
    assert "real run" in printed
