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

import json
import logging
import os
import random
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from mmbert import distributed as dist
from mmbert.errors import MmbertError
from mmbert.io import atomic_write_text, disk_full_error, fsync_dir, interrupts_deferred, remove_stale_temps
from mmbert.run_layout import CHECKPOINT_RE, RunLayout

logger = logging.getLogger(__name__)
# DCP warns on every call in a single process that it assumes one process: that is intended here.
warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")

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


class CheckpointWriter:
    """Writes a run's checkpoints; every rank holds one and calls `save` at the same steps.

    With `asynchronous`, `save` returns once the tensors are copied (DCP's staging: a second copy of
    this rank's part in host memory, for as long as the write lasts), and the files are written in a
    background thread (`torch.distributed.checkpoint.async_save`, on a gloo group of its own so that its
    collectives never interleave with training's); the checkpoint is published when the write has
    ended, at the latest at the next `save` or at `wait()`. A run killed meanwhile leaves only the
    temporary directory: the previous checkpoint stays the newest.
    """

    def __init__(self, run_dir: str | os.PathLike, *, rank: int = 0, keep_last: int = 3,
                 asynchronous: bool = False) -> None:  # fmt: skip
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.layout, self.rank, self.keep_last, self.asynchronous = (
            RunLayout(run_dir),
            rank,
            keep_last,
            asynchronous,
        )
        self._group = dist.new_gloo_group() if asynchronous and dist.initialized() else None
        self._pending: tuple[Any, Path, Path, str] | None = None

    def save(self, state: dict[str, Any], *, step: int, phase_end: str | None = None) -> Path:
        """Write `state` (a `Trainer.state_dict()`) as the checkpoint of `step`; returns its final path.

        The `keep_last` newest periodic checkpoints are kept; phase-end checkpoints are always kept
        (decay variants and merges start from them).
        """
        self.wait()
        final = self.layout.checkpoint(step, phase_end)
        tmp = self._temp_dir(final)
        try:
            _write_json(tmp / RNG_DIR / rank_file(self.rank), state["rng"])
            # The shared part as it is now (the data stream moves on while an asynchronous write runs).
            shared = json.dumps({k: v for k, v in state.items() if k not in TENSOR_PARTS + RANK_PARTS})
            tensors = {k: state[k] for k in TENSOR_PARTS}
            alone = not dist.initialized()
            if self.asynchronous:
                written = dcp.async_save(tensors, checkpoint_id=tmp, process_group=self._group, no_dist=alone)
                self._pending = (written, tmp, final, shared)
                return final
            with interrupts_deferred():  # a Ctrl-C lands after the checkpoint, not inside DCP's writer
                dcp.save(tensors, checkpoint_id=tmp, no_dist=alone)
                dist.barrier()  # every rank's part is on disk
                self._publish(tmp, final, shared)
        except BaseException as err:
            self._fail(err, tmp)
        dist.barrier()
        return final

    def wait(self) -> None:
        """Finish the asynchronous write in flight, if any, and publish its checkpoint (every rank)."""
        if self._pending is None:
            return
        written, tmp, final, shared = self._pending
        self._pending = None
        try:
            getattr(written, "upload_completion", written).result()  # a Future, or DCP's response
            if self.rank == 0:  # rank 0's write ends after every rank's (it writes the metadata last)
                self._publish(tmp, final, shared)
        except BaseException as err:
            self._fail(err, tmp)
        dist.barrier()  # published before any rank looks for it

    def _temp_dir(self, final: Path) -> Path:
        """A new temporary directory beside `final`, named by rank 0 (with its pid), the same on every rank."""
        tmp = None
        if self.rank == 0:
            self.layout.checkpoints.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.layout.checkpoints)
            prefix = f".{final.name}.{os.getpid()}."
            tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=self.layout.checkpoints))
        return Path(dist.all_gather_objects(tmp)[0])

    def _publish(self, tmp: Path, final: Path, shared: str) -> None:
        """Rank 0: the shared state with every file's size, written last; then the rename, then pruning."""
        if self.rank != 0:
            return
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        _write_json(tmp / STATE_FILE, {"format": FORMAT_VERSION, **json.loads(shared), "files": files})
        _rename_into_place(tmp, final)
        periodic = [c for c in list_checkpoints(self.layout.root) if c.phase_end is None]
        for old in periodic[: -self.keep_last]:
            shutil.rmtree(old.path, ignore_errors=True)
        fsync_dir(self.layout.checkpoints)
        logger.info("checkpoint %s", final)

    def _fail(self, err: BaseException, tmp: Path) -> NoReturn:
        """Remove the unpublished directory and raise `err` as an expected failure where it is one: a
        full disk (`mmbert.io.DiskFullError`, naming the file) or another rank's or DCP's write error."""
        rank, cause = _rank_failure(err)
        full = disk_full_error(
            cause, tmp / f"__{self.rank if rank is None else rank}_0.distcp"
        )  # before freeing
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        if full is not None:
            raise full from err
        if isinstance(cause, KeyboardInterrupt):  # DCP wraps a Ctrl-C like any failure: it stays a Ctrl-C
            raise KeyboardInterrupt from err
        if cause is not err:
            raise CheckpointError(f"{tmp}: writing the checkpoint failed on rank {rank}: {cause}") from err
        raise err


def save_checkpoint(
    run_dir: str | os.PathLike,
    state: dict[str, Any],
    *,
    step: int,
    rank: int = 0,
    phase_end: str | None = None,
    keep_last: int = 3,
) -> Path:
    """Write `state` as the checkpoint of `step`, synchronously (`CheckpointWriter.save`)."""
    return CheckpointWriter(run_dir, rank=rank, keep_last=keep_last).save(
        state, step=step, phase_end=phase_end
    )


def rank_file(rank: int) -> str:
    return f"rank-{rank:05d}.json"


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, separators=(",", ":")))


def _rename_into_place(tmp: Path, final: Path) -> None:
    """Rename the written directory to its final name (a rewrite of the same step replaces it)."""
    for path in sorted(tmp.rglob("*"), reverse=True):
        if path.is_dir():
            fsync_dir(path)
    fsync_dir(tmp)
    if final.exists():  # the same step written again after a resume from an older checkpoint
        shutil.rmtree(final)
    os.replace(tmp, final)


# --- reading -----------------------------------------------------------------------------------------


def _rank_failure(err: BaseException) -> tuple[int | None, BaseException]:
    """The first failing rank and its own error inside DCP's `CheckpointException` (which derives from
    BaseException, so that it would escape the command layer's one-line errors); else (None, err)."""
    if isinstance(err, CheckpointException) and err.failures:
        rank, (cause, _) = min(err.failures.items(), key=lambda item: item[0])
        return rank, cause
    return None, err


def _load(state: dict[str, Any], path: Path, no_dist: bool) -> None:
    """`dcp.load` of `state` from `path`, its failures as `CheckpointError`s naming the checkpoint."""
    try:
        dcp.load(state, checkpoint_id=path, no_dist=no_dist)
    except CheckpointException as err:
        rank, cause = _rank_failure(err)
        raise CheckpointError(f"{path}: not a readable checkpoint (rank {rank}: {cause})") from err


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
    _load({k: state[k] for k in TENSOR_PARTS}, path, no_dist=not dist.initialized())
    rng_path = path / RNG_DIR / rank_file(rank)
    shared["rng"] = json.loads(rng_path.read_text(encoding="utf-8")) if rng_path.exists() else None
    return shared


def load_model_weights(path: str | os.PathLike, model: torch.nn.Module) -> None:
    """Read only the model's tensors of checkpoint `path` into `model` (one process, no optimizer)."""
    _load({"model": dist.ModelState(model)}, Path(path), no_dist=True)


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
