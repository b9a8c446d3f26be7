"""Process groups and model wrapping for multi-process training under `torchrun`.

`torchrun --nproc_per_node N mmbert train ...` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR /
MASTER_PORT; `init_distributed()` reads them and joins the group (gloo on CPU, nccl on CUDA). Without
them everything degrades to one process and no collective is ever called, so the single-process path
has no distributed overhead.

Two strategies, as in torchtitan: DDP (the default: every rank holds the whole model, gradients are
all-reduced) and FSDP2 (`fully_shard` on every encoder layer and then on the root, so that parameters,
gradients and optimizer state are sharded and gathered one layer at a time). The model classes know
nothing about either: wrapping happens here.

The training state's tensors are handed to `torch.distributed.checkpoint` as each rank holds them
(`ModelState`, `OptimizerState`: FSDP's shards, DDP's replicas), so that every rank writes and reads
its own part and a checkpoint loads on any number of ranks; the one full gather is the HF export at
a phase end (`full_model_state_dict`).

When one process of the group goes, the others go too, within a bounded time: a rank started by
torchrun ends with torchrun (`mmbert.process.die_with_parent`: left alive by a killed torchrun, it
would keep training into the run directory), torchrun ends the other ranks when one fails, and a rank
whose peer is gone without torchrun noticing (another machine) sees its next collective fail at once
(a closed connection) or after the group's timeout; `lost_peer(error)` tells such a failure from a bug.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mmbert.errors import MmbertError
from mmbert.process import die_with_parent

logger = logging.getLogger(__name__)

STRATEGIES = ("ddp", "fsdp")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits: its rank among `world_size` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(device: str | None = None, timeout_s: float = 1800.0) -> DistEnv:
    """Join the process group described by torchrun's environment (a no-op for one process).

    `device` means what it means to every command: "cpu", "cuda", "cuda:N" or None (CUDA when
    available). Under torchrun each rank uses `cuda:LOCAL_RANK`, so a device number is refused there;
    one process uses the device named (`cuda`: `cuda:0`).
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise MmbertError(f"--device {device or 'cuda'} was asked for, but torch sees no CUDA device")
    index = torch.device(device).index if device is not None and use_cuda else None
    if index is not None and world_size > 1:
        raise MmbertError(
            f"--device {device}: under torchrun each rank uses cuda:LOCAL_RANK; give --device cuda"
        )
    if use_cuda:
        dev = torch.device("cuda", local_rank if index is None else index)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and "TORCHELASTIC_RUN_ID" in os.environ:
        die_with_parent(os.getppid())  # torchrun's agent
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
        logger.info("rank %d/%d joined the %s group", rank, world_size, dist.get_backend())
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


# What a collective raises when a peer process is gone (gloo: a closed connection or a timeout).
_PEER_LOST = (
    "Connection reset by peer",
    "Connection closed by peer",
    "Broken pipe",
    "Timed out",
    "timed out",
)


class PeerLostError(MmbertError, RuntimeError):
    """A collective failed because another process of the run is gone."""

    exit_code = 4


def lost_peer(error: BaseException) -> bool:
    """Whether `error`, raised in a distributed run, is a collective that failed because a peer went."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error)
    return (
        isinstance(error, RuntimeError)
        and ("gloo" in text or "NCCL" in text)
        and any(p in text for p in _PEER_LOST)
    )


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, env: DistEnv, strategy: str = "ddp") -> nn.Module:
    """Wrap `model` for data-parallel training (returned unchanged for one process)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"distributed strategy must be one of {STRATEGIES}, got {strategy!r}")
    if not env.is_distributed:
        return model
    if strategy == "ddp":
        device_ids = [env.local_rank] if env.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)
    from torch.distributed.fsdp import fully_shard  # 1.4 s to import (measured): FSDP runs only

    # One FSDP unit per encoder layer: its parameters are gathered just before it runs and freed after.
    for layer in _encoder_layers(model):
        fully_shard(layer)
    fully_shard(model)
    return model


def _encoder_layers(model: nn.Module) -> list[nn.Module]:
    base = getattr(model, "model", model)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no `.model.layers` to shard per layer")
    return list(layers)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP wrapper (FSDP2 modifies the module in place)."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def is_fsdp(model: nn.Module) -> bool:
    # Not imported yet (it takes 1.4 s): then nothing can have been sharded.
    fsdp = sys.modules.get("torch.distributed.fsdp")
    return fsdp is not None and isinstance(model, fsdp.FSDPModule)


@contextlib.contextmanager
def no_grad_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce while accumulating micro-batches (all but the last)."""
    if not enabled or not dist.is_initialized():
        yield
    elif is_fsdp(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    elif hasattr(model, "no_sync"):
        with model.no_sync():
            yield
    else:
        yield


def full_model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full, CPU state dict of the (possibly wrapped) model, for the HF export at a phase end (the one
    full gather of a run); with FSDP every rank takes part and only rank 0 gets the tensors."""
    if is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import (  # FSDP (1.4 s)
            StateDictOptions,
            get_model_state_dict,
        )

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}


def tied_names(model: nn.Module) -> list[str]:
    """State-dict names of parameters that are another parameter under a second name (the decoder tied
    to the embedding): stored once, under the first name."""
    seen: set[int] = set()
    tied = []
    for name, param in unwrap(model).named_parameters(remove_duplicate=False):
        if id(param) in seen:
            tied.append(name)
        seen.add(id(param))
    return tied


class ModelState:
    """The model's part of the training state, as each rank holds it (FSDP: its shards; DDP or one
    process: the whole tensors), so that `torch.distributed.checkpoint` saves and loads each rank's own
    part and reshards on load; tied names are left out (stored once). Stateful (DCP's protocol)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def state_dict(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict  # imports FSDP (1.4 s)

        state = get_model_state_dict(self.model)
        for name in tied_names(self.model):
            state.pop(name, None)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        result = set_model_state_dict(self.model, state_dict, options=StateDictOptions(strict=False))
        # DDP reports its wrapper's names ("module.<name>")
        missing = {
            k.removeprefix("module.") if self.model is not unwrap(self.model) else k
            for k in result.missing_keys
        }
        missing = sorted(missing - set(tied_names(self.model)))
        if missing or result.unexpected_keys:
            raise MmbertError(
                f"checkpoint and model differ: missing {missing[:5]}, unexpected {list(result.unexpected_keys)[:5]}"
            )


class OptimizerState:
    """The optimizer's moments and counters, keyed by parameter name, each rank its own part (as
    `ModelState`); a fresh optimizer's state is created before a load so that DCP can fill it in place."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer

    def state_dict(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict  # imports FSDP (1.4 s)

        return get_optimizer_state_dict(self.model, self.optimizer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        set_optimizer_state_dict(self.model, self.optimizer, state_dict)


def new_gloo_group() -> dist.ProcessGroup:
    """A gloo group of every rank, beside the default one (every rank must call this at the same point)."""
    return dist.new_group(backend="gloo")


def initialized() -> bool:
    """Whether this process is in a process group (else it runs alone)."""
    return dist.is_initialized()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks in place (identity for one process) and return it."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a one-element list for one process)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
