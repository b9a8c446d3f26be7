"""Where a training run's files live: the one home of every path inside a run directory.

    RUN/
      recipe.yaml            the recipe as this run resolved and uses it (its real model and tokenizer)
      metrics.jsonl          one JSON object per optimizer step
      tb/                    TensorBoard events
      checkpoints/           step-<9 digits>[-end-<phase>]/: one directory per checkpoint (`mmbert.checkpoint`)
      export/<phase>/        HF-format model + tokenizer written at the end of each phase
      variants/<name>/       a decay variant's own run directory, laid out like RUN
      .lock                  the writer's lock (`mmbert.process`)

Every module that reads or writes one of these (train, runs, metrics, checkpoint, report, ablate,
demo) asks a `RunLayout` instead of spelling the name again.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from mmbert.process import LOCK_FILE

CHECKPOINT_RE = re.compile(r"^step-(?P<step>\d{9})(?:-end-(?P<phase>[A-Za-z0-9_.-]+))?$")
PHASE_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run directory (`root`); nothing is created by asking."""

    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tb"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def exports(self) -> Path:
        return self.root / "export"

    @property
    def variants(self) -> Path:
        return self.root / "variants"

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE

    def checkpoint(self, step: int, phase_end: str | None = None) -> Path:
        """The checkpoint directory after `step` optimizer steps (`phase_end`: the phase it closes)."""
        if phase_end is not None and not PHASE_NAME_RE.fullmatch(phase_end):
            raise ValueError(f"phase name {phase_end!r} cannot be used in a checkpoint name")
        suffix = f"-end-{phase_end}" if phase_end else ""
        return self.checkpoints / f"step-{step:09d}{suffix}"

    def export(self, phase: str) -> Path:
        """The HF-format export (model + tokenizer) of the end of `phase`."""
        return self.exports / phase

    def variant(self, name: str) -> RunLayout:
        """The run directory of decay variant `name`."""
        return RunLayout(self.variants / name)

    def own_entries(self) -> tuple[Path, ...]:
        """What makes a directory one of ours: any of these present."""
        return (self.recipe, self.metrics, self.checkpoints, self.exports, self.variants, self.tensorboard,
                self.lock)  # fmt: skip

    def is_run(self) -> bool:
        """Whether `root` was written by `mmbert train`."""
        return any(p.exists() for p in self.own_entries())

    def temp_dirs(self) -> tuple[Path, ...]:
        """Where a killed run can leave temporary files (not the variants: they have their own)."""
        return (self.root, self.checkpoints, self.exports)
