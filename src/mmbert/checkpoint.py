"""Atomic, sharded, resumable training state: a checkpoint is a directory any number of ranks can read.

A checkpoint is `RUN/checkpoints/step-<step>/` (`step-<step>-end-<phase>/` when a phase ends;
`mmbert.run_layout`). It holds the training state that `Trainer.state_dict()` returns, split by who
owns each part:

    .metadata, __<rank>_0.distcp   the tensors ("model", "optimizer"), through torch.distributed.checkpoint
                                   (DCP): each rank writes its own part (FSDP: its shards; DDP: the
                                   replicated tensors are divided among the ranks, each written once)
                                   and reads only the pieces its own state needs, resharded to the
                                   world size that loads it; the tied embedding is stored once
    rng/rank-<rank>.json           each rank's random generators (restored where the world size is the same)
    train_state.json               everything else, the same on every rank, written once: counters,
                                   schedule position, data stream position, the data and tokenizer
                                   fingerprints, the run's inputs (recipe, model config, tokenizer)

Nothing is gathered to one rank on this path (the HF export at a phase end is the one full gather).

Why a directory written under a temporary name: a run can be killed at any moment (SIGKILL, a
pre-empted node). Every rank writes into `checkpoints/.step-<step>.<pid>.<random>.tmp/` (named by rank
0, on a file system every rank sees), all ranks meet, then rank 0 writes `train_state.json` last, with
the size of every other file, fsyncs the tree and renames the directory to its final name (atomic on
POSIX). A reader therefore sees either no checkpoint or a complete one; `latest()` still checks that
each candidate's files have the sizes its state records, and falls back, with a warning, to an older one.

Checkpoints from before this layout (one `.pt` file, format 1) are refused with a message that says so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed.checkpoint as dcp

from mmbert import distributed as dist
from mmbert.errors import MmbertError
from mmbert.io import atomic_write_text, fsync_dir, remove_stale_temps
from mmbert.run_layout import CHECKPOINT_RE, RunLayout

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
STATE_FILE = "train_state.json"
RNG_DIR = "rng"
TENSOR_PARTS = ("model", "optimizer")  # through DCP, each rank its own part
RANK_PARTS = ("rng",)  # one small file per rank
# The rest of a training state is the same on every rank and written once into STATE_FILE.


class CheckpointError(MmbertError, ValueError):
    """A checkpoint that cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint directory found on disk (parsed from its name, not yet validated)."""

    path: Path
    step: int
    phase_end: str | None  # name of the phase this checkpoint ends, None for a periodic one


def list_checkpoints(run_dir: str | os.PathLike) -> list[CheckpointInfo]:
    """All checkpoint directories of a run, oldest first (temporary ones are not listed).

    A checkpoint file of format 1 (`step-*.pt`, before sharded checkpoints) raises `CheckpointError`.
    """
    root = RunLayout(run_dir).checkpoints
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = CHECKPOINT_RE.match(path.name)
        if match and path.is_dir():
            found.append(CheckpointInfo(path, int(match["step"]), match["phase"]))
        elif CHECKPOINT_RE.match(path.name.removesuffix(".pt")) and path.suffix == ".pt":
            raise CheckpointError(
                f"{path}: a checkpoint file of an older mmbert (format 1, one .pt file); this version "
                f"writes and reads sharded checkpoint directories (format {FORMAT_VERSION}). Finish this "
                "run with the version that started it, or start it afresh in a new directory"
            )
    # A phase-end checkpoint and a periodic one can share a step; the phase-end one sorts last.
    return sorted(found, key=lambda c: (c.step, c.phase_end is not None))


def is_complete(path: str | os.PathLike) -> bool:
    """True when `path` holds a checkpoint whose files all exist with the sizes its state records."""
    path = Path(path)
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        sizes = state["files"]
        return state.get("format") == FORMAT_VERSION and all(
            (path / name).stat().st_size == size for name, size in sizes.items()
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
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


# --- writing -----------------------------------------------------------------------------------------


def save_checkpoint(
    run_dir: str | os.PathLike,
    state: dict[str, Any],
    *,
    step: int,
    rank: int = 0,
    phase_end: str | None = None,
    keep_last: int = 3,
) -> Path:
    """Write `state` (a `Trainer.state_dict()`) as the checkpoint of `step`; every rank calls this.

    The `keep_last` newest periodic checkpoints are kept; phase-end checkpoints are always kept
    (decay variants and merges start from them). Returns the checkpoint's directory.
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    layout = RunLayout(run_dir)
    final = layout.checkpoint(step, phase_end)
    tmp = None
    if rank == 0:
        layout.checkpoints.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(layout.checkpoints)
        tmp = Path(
            tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp", dir=layout.checkpoints)
        )
    tmp = Path(dist.all_gather_objects(tmp)[0])  # rank 0's, everywhere
    try:
        with _quiet_alone():
            dcp.save({k: state[k] for k in TENSOR_PARTS}, checkpoint_id=tmp, no_dist=not dist.initialized())
        _write_json(tmp / RNG_DIR / rank_file(rank), state["rng"])
        dist.barrier()  # every rank's part is on disk
        if rank == 0:
            shared = {k: v for k, v in state.items() if k not in TENSOR_PARTS + RANK_PARTS}
            files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
            _write_json(tmp / STATE_FILE, {"format": FORMAT_VERSION, **shared, "files": files})
            _publish(tmp, final)
            periodic = [c for c in list_checkpoints(run_dir) if c.phase_end is None]
            for old in periodic[:-keep_last]:
                shutil.rmtree(old.path, ignore_errors=True)
            fsync_dir(layout.checkpoints)
            logger.info("checkpoint %s", final)
    except BaseException:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    dist.barrier()
    return final


def rank_file(rank: int) -> str:
    return f"rank-{rank:05d}.json"


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, separators=(",", ":")))


def _publish(tmp: Path, final: Path) -> None:
    """Rename the written directory to its final name (a rewrite of the same step replaces it)."""
    for path in sorted(tmp.rglob("*"), reverse=True):
        if path.is_dir():
            fsync_dir(path)
    fsync_dir(tmp)
    if final.exists():  # the same step written again after a resume from an older checkpoint
        shutil.rmtree(final)
    os.replace(tmp, final)


# --- reading -----------------------------------------------------------------------------------------


def read_train_state(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's shared state (`train_state.json`): small, no tensors, read before building."""
    path = Path(path)
    if path.is_file() and path.suffix == ".pt":
        list_checkpoints(path.parent.parent)  # raises the format-1 message
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not an mmbert checkpoint of format {FORMAT_VERSION}")
    return state


def load_checkpoint(path: str | os.PathLike, state: dict[str, Any], rank: int = 0) -> dict[str, Any]:
    """Fill `state`'s tensor parts (Stateful model / optimizer) in place from `path`, through DCP (each
    rank reads only what it holds), and return the rest: the shared state, plus this rank's `rng` (None
    when the checkpoint has no file for this rank)."""
    path = Path(path)
    shared = read_train_state(path)
    with _quiet_alone():
        dcp.load({k: state[k] for k in TENSOR_PARTS}, checkpoint_id=path, no_dist=not dist.initialized())
    rng_path = path / RNG_DIR / rank_file(rank)
    shared["rng"] = json.loads(rng_path.read_text(encoding="utf-8")) if rng_path.exists() else None
    return shared


def load_model_weights(path: str | os.PathLike, model: torch.nn.Module) -> None:
    """Read only the model's tensors of checkpoint `path` into `model` (one process, no optimizer)."""
    with _quiet_alone():
        dcp.load({"model": dist.ModelState(model)}, checkpoint_id=Path(path), no_dist=True)


@contextlib.contextmanager
def _quiet_alone() -> Iterator[None]:
    """DCP warns on every call in a single process that it assumes one process: that is intended here."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="torch.distributed is disabled, unavailable or uninitialized"
        )
        yield


# --- RNG states as JSON ------------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """The python, numpy, torch CPU and (if present) CUDA generator states, as plain JSON values."""
    version, mt_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [int(version), list(mt_state), gauss],
        "numpy": [
            str(np_name),
            np.asarray(np_keys).tolist(),
            int(np_pos),
            int(np_has_gauss),
            float(np_gauss),
        ],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`."""
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    name, keys, pos, has_gauss, np_gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, np_gauss))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
