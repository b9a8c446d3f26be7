"""Atomic, resumable training state.

A checkpoint is one file, `RUN/checkpoints/step-<step>.pt` (or `step-<step>-end-<phase>.pt` for the
checkpoint written when a phase ends), holding everything needed to continue a run bit for bit: model
and optimizer state, the token position (step, tokens seen, phase), each rank's sampler, packer and RNG
states, trainer counters and the resolved recipe.

Why one file written through a temporary name: a run can be killed at any moment (SIGKILL, a pre-empted
node). The file is written under a temporary `.<name>.*.tmp` name in the same directory, flushed and fsynced, renamed over its
final name with `os.replace` (atomic on POSIX), and the directory is fsynced so the rename itself is
durable. A reader therefore sees either no file or a complete one; `latest()` still checks each
candidate (zip CRCs) and falls back, with a warning, to an older one if the newest is damaged.

The content is restricted to what `torch.load(weights_only=True)` accepts (tensors, dicts, lists,
tuples, ints, floats, strings, bools, None): RNG states are stored as tensors, not pickled objects.
"""

from __future__ import annotations

import logging
import os
import random
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmbert.io import atomic_open, fsync_dir, remove_stale_temps

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CHECKPOINT_DIRNAME = "checkpoints"
_NAME = re.compile(r"^step-(?P<step>\d{9})(?:-end-(?P<phase>[A-Za-z0-9_.-]+))?\.pt$")


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint file found on disk (parsed from its name, not yet validated)."""

    path: Path
    step: int
    phase_end: str | None  # name of the phase this checkpoint ends, None for a periodic one


def checkpoint_name(step: int, phase_end: str | None = None) -> str:
    """File name of the checkpoint after `step` optimizer steps (`phase_end`: the phase it closes)."""
    if phase_end is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", phase_end):
        raise ValueError(f"phase name {phase_end!r} cannot be used in a checkpoint file name")
    suffix = f"-end-{phase_end}" if phase_end else ""
    return f"step-{step:09d}{suffix}.pt"


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / CHECKPOINT_DIRNAME


def list_checkpoints(run_dir: str | os.PathLike) -> list[CheckpointInfo]:
    """All checkpoint files of a run, oldest first (temporary files are not listed)."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append(CheckpointInfo(path, int(match["step"]), match["phase"]))
    # A phase-end checkpoint and a periodic one can share a step; the phase-end one sorts last.
    return sorted(found, key=lambda c: (c.step, c.phase_end is not None))


def is_complete(path: str | os.PathLike) -> bool:
    """True when `path` is a readable torch zip archive whose records all pass their CRC check."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


def latest(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run, or None. Damaged ones are skipped with a warning."""
    for info in reversed(list_checkpoints(run_dir)):
        if is_complete(info.path):
            return info.path
        logger.warning("ignoring incomplete or corrupt checkpoint %s", info.path)
    return None


def phase_end_checkpoint(run_dir: str | os.PathLike, phase: str) -> Path | None:
    """The complete checkpoint written at the end of `phase` in this run, or None."""
    for info in reversed(list_checkpoints(run_dir)):
        if info.phase_end == phase:
            if is_complete(info.path):
                return info.path
            logger.warning("ignoring incomplete or corrupt checkpoint %s", info.path)
    return None


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save(obj)` to `path` through a temporary file in the same directory, fsynced and renamed."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def save_checkpoint(
    run_dir: str | os.PathLike,
    state: dict[str, Any],
    *,
    step: int,
    phase_end: str | None = None,
    keep_last: int = 3,
) -> Path:
    """Write `state` as the checkpoint of `step`, then prune old periodic checkpoints.

    The `keep_last` newest periodic checkpoints are kept; phase-end checkpoints are always kept (decay
    variants and merges start from them). Leftover temporary files of killed writers are removed.
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(root)
    payload = {"format": FORMAT_VERSION, **state, "step": int(step)}
    path = atomic_torch_save(payload, root / checkpoint_name(step, phase_end))
    periodic = [c for c in list_checkpoints(run_dir) if c.phase_end is None]
    for old in periodic[:-keep_last]:
        old.path.unlink(missing_ok=True)
    fsync_dir(root)
    logger.info("checkpoint %s", path)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` (safe loader: no arbitrary code is unpickled)."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged archive
        raise ValueError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: not an mmbert checkpoint of format {FORMAT_VERSION}")
    return state


# --- RNG states as tensors (so that weights_only loading accepts them) ---------------------------


def capture_rng_state() -> dict[str, Any]:
    """The python, numpy, torch CPU and (if present) CUDA generator states, as tensors."""
    version, mt_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": torch.tensor(mt_state, dtype=torch.int64),  # 625 words of the Mersenne twister
        "python_version": int(version),
        "python_gauss": gauss,
        "numpy_name": str(np_name),
        "numpy": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`."""
    random.setstate(
        (state["python_version"], tuple(int(x) for x in state["python"].tolist()), state["python_gauss"])
    )
    np.random.set_state(
        (
            state["numpy_name"],
            state["numpy"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
