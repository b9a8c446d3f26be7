"""Checkpoint save and load at the mmBERT-base shape on 2 CPU ranks: one gathered file (before) against
sharded checkpoint directories (after, `mmbert.checkpoint`), side by side in one run.

Each of two gloo ranks (spawned here) holds mmBERT-base (307M parameters, fp32, tied decoder) wrapped
for DDP or FSDP2 and an optimizer with both moments (3.7 GB of state in all), then, in turn:

- before, save: the code this project had up to dbe70ba: the full model and optimizer state on rank 0
  (FSDP: gathered to it), written by rank 0 alone as one `torch.save` file through a temporary name;
- before, load: every rank checks the whole file's CRCs (`zipfile.testzip`, as `latest()` did) and
  `torch.load`s all of it, then loads the state into its model and optimizer;
- after, save / load: `mmbert.checkpoint.save_checkpoint` / `latest` + `load_checkpoint`
  (torch.distributed.checkpoint: each rank writes and reads its own part);
- async save / wait: `CheckpointWriter(asynchronous=True)`: `save` holds training for the staging copy
  only; `wait` is the rest of the write and the publication (training would run meanwhile).

Per rank it records the wall time, the bytes its process read and wrote (`/proc/self/io` rchar /
wchar: file reads through the page cache count, so a warm cache does not hide them) and the peak
resident memory above what the rank held before the operation (VmHWM, reset through
`/proc/self/clear_refs` before each one). The weights are not initialized (the bench measures I/O,
not values); the optimizer is torch's AdamW, whose state has the sizes of StableAdamW's (two moments
per parameter). The files go to a temporary directory (`--work`), removed at the end.

    PYTHONPATH=src .venv/bin/python bench/checkpoint.py --strategy ddp     # ~1-2 minutes, ~15 GB RAM peak
    -> table on stdout, bench/results/checkpoint.json (one entry per strategy and preset)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

RESULTS = Path(__file__).parent / "results" / "checkpoint.json"
OPERATIONS = ("before_save", "before_load", "after_save", "after_load", "async_save", "async_wait")


def _io() -> dict[str, int]:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return {"read": int(fields["rchar"]), "written": int(fields["wchar"])}


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _measure(name: str, action, results: dict) -> None:
    """Run `action` between two barriers; record its time, I/O and peak memory above the start."""
    tdist.barrier()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    rss = _status_kb("VmRSS")
    io = _io()
    start = time.perf_counter()
    action()
    tdist.barrier()
    seconds = time.perf_counter() - start
    after = _io()
    results[name] = {
        "seconds": round(seconds, 3),
        "bytes_read": after["read"] - io["read"],
        "bytes_written": after["written"] - io["written"],
        "peak_extra_bytes": (_status_kb("VmHWM") - rss) * 1024,
    }


def _build(preset: str, strategy: str):
    from mmbert import distributed as dist
    from mmbert.config import MmBertConfig
    from mmbert.model import MmBertForMaskedLM
    from mmbert.optim import build_optimizer
    from mmbert.recipe import Recipe

    config = MmBertConfig.preset(preset)
    with torch.device("meta"):
        model = MmBertForMaskedLM(config)
    model = model.to_empty(device="cpu")
    model.decoder.weight = model.model.embeddings.tok_embeddings.weight  # to_empty unties
    env = dist.DistEnv(rank=tdist.get_rank(), world_size=tdist.get_world_size())
    model = dist.wrap_model(model, env, strategy)
    recipe = Recipe.from_dict({"phases": [{"name": "p", "tokens": 1}], "train": {"optimizer": "adamw"}})
    optimizer = build_optimizer(model, recipe.train, 1e-3, 0.0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    optimizer.step()  # creates the moments
    optimizer.zero_grad(set_to_none=True)
    return model, optimizer, env


def _before_save(model, optimizer, env, path: Path) -> None:
    """dbe70ba's `Trainer.save`: the full state, gathered, one file written by rank 0."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    from mmbert import checkpoint as ckpt
    from mmbert import distributed as dist
    from mmbert.io import atomic_open

    if dist.is_fsdp(model):
        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_state = get_model_state_dict(model, options=full)
        optim_state = get_optimizer_state_dict(model, optimizer, options=full)
    else:
        model_state = {k: v.detach().cpu() for k, v in dist.unwrap(model).state_dict().items()}
        optim_state = optimizer.state_dict()
    ranks = dist.all_gather_objects({"rng": ckpt.capture_rng_state()})
    if env.is_main:
        with atomic_open(path, "wb") as f:
            torch.save({"format": 1, "model": model_state, "optimizer": optim_state, "ranks": ranks}, f)


def _before_load(model, optimizer, path: Path) -> None:
    """dbe70ba's resume: every rank CRC-checks and loads the whole file."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    from mmbert import distributed as dist

    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if dist.is_fsdp(model):
        full = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, state["model"], options=full)
        set_optimizer_state_dict(model, optimizer, state["optimizer"], options=full)
    else:
        dist.unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])


def _worker(rank: int, world: int, port: int, preset: str, strategy: str, work: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    tdist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=1800))
    torch.set_num_threads(1)
    from mmbert import checkpoint as ckpt
    from mmbert import distributed as dist

    model, optimizer, env = _build(preset, strategy)
    work_dir = Path(work)
    single = work_dir / "before.pt"
    run = work_dir / "run"

    def state():
        return {"model": dist.ModelState(model), "optimizer": dist.OptimizerState(model, optimizer),
                "rng": ckpt.capture_rng_state(), "trainer": {"step": 1}}  # fmt: skip

    results: dict = {}
    _measure("before_save", lambda: _before_save(model, optimizer, env, single), results)
    _measure("before_load", lambda: _before_load(model, optimizer, single), results)
    if env.is_main:
        results["before_file_bytes"] = single.stat().st_size
    _measure("after_save", lambda: ckpt.save_checkpoint(run, state(), step=1, rank=rank), results)

    def after_load():
        path = ckpt.latest(run)
        ckpt.load_checkpoint(path, state(), rank)

    _measure("after_load", after_load, results)
    # Asynchronous: the time training is held (the staging copy), then the rest of the write.
    writer = ckpt.CheckpointWriter(work_dir / "async", rank=rank, asynchronous=True)
    _measure("async_save", lambda: writer.save(state(), step=1), results)
    _measure("async_wait", writer.wait, results)
    if env.is_main:
        path = ckpt.latest(run)
        results["after_dir_bytes"] = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    results["resident_bytes"] = _status_kb("VmRSS") * 1024
    (work_dir / f"rank{rank}.json").write_text(json.dumps(results))
    tdist.barrier()
    tdist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="mmbert-base")
    parser.add_argument("--strategy", choices=("ddp", "fsdp"), default="ddp")
    parser.add_argument("--work", type=Path, help="where the checkpoints go (default: a temporary directory)")
    parser.add_argument("--port", type=int, default=29571)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mmbert-bench-ckpt-", dir=args.work))
    try:
        start = time.perf_counter()
        mp.spawn(_worker, args=(2, args.port, args.preset, args.strategy, str(work)), nprocs=2, join=True)
        ranks = [json.loads((work / f"rank{r}.json").read_text()) for r in range(2)]
        total = time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"{args.preset}, {args.strategy}, 2 CPU ranks (gloo); per rank: seconds / read / written / peak extra memory"
    )
    for op in OPERATIONS:
        cells = [
            f"{r[op]['seconds']:7.2f} s {r[op]['bytes_read'] / 1e9:6.2f} GB {r[op]['bytes_written'] / 1e9:6.2f} GB "
            f"{r[op]['peak_extra_bytes'] / 1e9:6.2f} GB"
            for r in ranks
        ]
        print(f"{op:12s} rank 0: {cells[0]} | rank 1: {cells[1]}")
    print(f"one file: {ranks[0]['before_file_bytes'] / 1e9:.2f} GB, sharded directory: "
          f"{ranks[0]['after_dir_bytes'] / 1e9:.2f} GB; {total:.0f} s in all")  # fmt: skip

    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[f"{args.preset}/{args.strategy}"] = {
        "ranks": ranks,
        "command": f"PYTHONPATH=src python bench/checkpoint.py --preset {args.preset} --strategy {args.strategy}",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
        },  # fmt: skip
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
