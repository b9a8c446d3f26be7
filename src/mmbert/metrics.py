"""The run's record of every step: `metrics.jsonl`, TensorBoard events and one dense log line.

`metrics.jsonl` holds one JSON object per optimizer step; it is the source of the report's curves and
the tests' loss comparisons. It is append-only during a run and truncated to the resumed checkpoint's
step when a run resumes (with the TensorBoard events purged past that step too), so that a run killed
at any moment and rerun has exactly the lines of a run that never stopped. `sync()` makes the lines
durable before a checkpoint claims their steps are done. Only the main process (rank 0) writes;
`read_metrics` reads the records back (the reports' curves).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from mmbert.io import atomic_open
from mmbert.recipe import format_tokens

logger = logging.getLogger(__name__)

TB_KEYS = ("loss", "lr", "grad_norm", "mask_rate", "tau", "seq_len", "tokens_per_s", "mfu", "data_wait_s")


class MetricsLog:
    """`metrics.jsonl`, append-only; on resume the lines after the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        kept = []
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if record.get("step", math.inf) <= resume_step:
                    kept.append(line)
        with atomic_open(path, "w") as f:
            f.write("".join(line + "\n" for line in kept))
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the whole run)

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def sync(self) -> None:
        """Make the lines so far durable (before a checkpoint claims their steps are done)."""
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


class RunLog:
    """Everything a step reports: the metrics file, TensorBoard (optional) and the log line."""

    def __init__(self, run_dir: Path, resume_step: int, log_every_steps: int, tensorboard: bool) -> None:
        self.metrics = MetricsLog(run_dir / "metrics.jsonl", resume_step)
        self.log_every_steps = log_every_steps
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: seconds, only if asked

            # purge_step drops events past the resumed step, as metrics.jsonl does
            self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step + 1)

    def write(self, record: dict[str, Any]) -> None:
        step = record["step"]
        self.metrics.write(record)
        if self.log_every_steps and step % self.log_every_steps == 0:  # 0: no step lines
            logger.info(step_line(record))
        if self.tb is not None:
            for key in TB_KEYS:
                value = record.get(key)
                if value is not None and math.isfinite(value):
                    self.tb.add_scalar(f"train/{key}", value, step)
            self.tb.add_scalar("train/tokens", record["tokens"], step)
            for lang, share in (record.get("lang_shares") or {}).items():
                self.tb.add_scalar(f"lang_share/{lang}", share, step)

    def sync(self) -> None:
        self.metrics.sync()

    def close(self) -> None:
        self.metrics.close()
        if self.tb is not None:
            self.tb.close()


def step_line(record: dict[str, Any]) -> str:
    """`pre | step 120 | tokens 1.23M | loss 2.4100 | lr 3.00e-04 | mask 0.30 | tau 0.70 | 41k tok/s | mfu 38.0%`."""
    mfu = f"{100 * record['mfu']:.1f}%" if record.get("mfu") is not None else "-"
    return (
        f"{record['phase']} | step {record['step']} | tokens {format_tokens(record['tokens'])} | "
        f"loss {record['loss']:.4f} | lr {record['lr']:.2e} | mask {record['mask_rate']:.2f} | "
        f"tau {record['tau']:.2f} | {record['tokens_per_s']:.0f} tok/s | mfu {mfu}"
        + (" | SKIPPED" if record.get("skipped") else "")
    )


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a `metrics.jsonl` (a line cut by a kill is skipped); [] when absent."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
