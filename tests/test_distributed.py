"""Two CPU processes (gloo, torchrun) against one: disjoint data per rank, the same losses.

The test file is also the worker script: under torchrun it runs the real `Trainer` with two small
recording wrappers (the micro-batches each rank trained on, the documents each rank drew). The test then
trains a single process on the union of both ranks' micro-batches at every step and checks that its
losses match the 2-rank run's: the global loss is a mean over all masked tokens of the global batch, so
the split across ranks must not change it (beyond float summation order).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmbert import checkpoint as ckpt
from mmbert import distributed, train
from mmbert.model import MmBertForMaskedLM
from mmbert.recipe import load_recipe
from tests.conftest import TINY, read_metrics

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ["phases.0.tokens=384", "phases.0.warmup_tokens=64", "phases.1.tokens=256", "phases.2.tokens=128"]


def _record(trainer, record_dir: Path, rank: int) -> None:
    """Wrap the trainer so that each step's micro-batches and each drawn document are saved."""
    original = trainer.loader.next_step
    drawn: list[list] = []

    def next_step(step_tokens: int, seq_len: int, mask_rate: float):
        micro = original(step_tokens, seq_len, mask_rate)
        torch.save(micro, record_dir / f"rank{rank}-step{trainer.step + 1}.pt")
        return micro

    next_document = trainer.loader.sampler.next_document

    def record_document():
        doc = next_document()
        drawn.append([doc.source, doc.lang, doc.index, doc.epoch])
        (record_dir / f"rank{rank}-docs.json").write_text(json.dumps(drawn))
        return doc

    trainer.loader.next_step = next_step
    trainer.loader.sampler.next_document = record_document


def worker(recipe_path: str, out: str, record_dir: str, strategy: str) -> None:
    env = distributed.init_distributed("cpu")
    assert env.world_size == 2
    recipe = load_recipe(recipe_path, OVERRIDES)
    options = train.TrainOptions(strategy=strategy, progress=False, tensorboard=False)
    trainer = train.Trainer(recipe, Path(out), env, options)
    _record(trainer, Path(record_dir), env.rank)
    trainer.run()
    distributed.shutdown()


def _torchrun(recipe: Path, out: Path, record_dir: Path, strategy: str) -> None:
    record_dir.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        __file__, "worker", str(recipe), str(out), str(record_dir), strategy,
    ]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


# As in the workers (OMP_NUM_THREADS=1).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_draw_disjoint_data_and_match_one_process(strategy, train_inputs, tmp_path, monkeypatch):
    recipe, _ = train_inputs

    records = tmp_path / "records"
    _torchrun(recipe, tmp_path / "ddp", records, strategy)
    ddp = read_metrics(tmp_path / "ddp")
    assert {r["phase"] for r in ddp} == {"pre", "mid", "decay"}

    # Disjoint data: within an epoch of a (source, language) cell, no document goes to both ranks.
    docs = [{tuple(d) for d in json.loads((records / f"rank{r}-docs.json").read_text())} for r in (0, 1)]
    assert docs[0] and docs[1] and not docs[0] & docs[1]

    # One process, fed at every step the two ranks' micro-batches together.
    def union(step_tokens: int, seq_len: int, mask_rate: float):
        step = trainer.step + 1
        return [m for r in (0, 1) for m in torch.load(records / f"rank{r}-step{step}.pt", weights_only=False)]

    env = distributed.init_distributed("cpu")
    options = train.TrainOptions(progress=False, tensorboard=False)
    trainer = train.Trainer(load_recipe(recipe, OVERRIDES), tmp_path / "single", env, options)
    monkeypatch.setattr(trainer.loader, "next_step", union)
    trainer.run()
    single = read_metrics(tmp_path / "single")
    assert [r["tokens"] for r in single] == [r["tokens"] for r in ddp]
    assert [r["masked_tokens"] for r in single] == [r["masked_tokens"] for r in ddp]
    for a, b in zip(single, ddp, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    # Only rank 0 writes: one metrics file, the checkpoints hold both ranks' data-stream states.
    state = ckpt.load_checkpoint(ckpt.latest(tmp_path / "ddp"))
    assert state["world_size"] == 2 and [r["data"]["sampler"]["rank"] for r in state["ranks"]] == [0, 1]


# ---------------------------------------------------------------------------------------------- sync
def _micro_batches(rank: int, n: int = 3) -> list[dict[str, torch.Tensor]]:
    """`n` packed micro-batches for `rank`: three sequences (one longer than the window), 30% labelled."""
    batches = []
    for k in range(n):
        g = torch.Generator().manual_seed(100 * rank + k)
        lengths = torch.tensor([20, 13, 31])
        ids = torch.randint(5, TINY.vocab_size, (int(lengths.sum()),), generator=g)
        labels = torch.where(torch.rand(ids.shape, generator=g) < 0.3, ids, -100)
        labels[0] = ids[0]  # at least one labelled token
        cu = torch.cat([torch.zeros(1, dtype=torch.int32), lengths.cumsum(0).to(torch.int32)])
        batches.append(
            {"input_ids": ids, "cu_seqlens": cu, "max_seqlen": int(lengths.max()), "labels": labels}
        )
    return batches


def grad_sync_worker(out: str) -> None:
    """DDP, then FSDP: three micro-batches per rank, the gradient sync skipped for the first two
    (`no_grad_sync`); records whether the gradients were synced after each and the final full gradients."""
    env = distributed.init_distributed("cpu")
    result = {}
    for strategy in ("ddp", "fsdp"):
        torch.manual_seed(0)
        model = distributed.wrap_model(MmBertForMaskedLM(TINY), env, strategy)
        synced = []
        micro = _micro_batches(env.rank)
        for k, inputs in enumerate(micro):
            with distributed.no_grad_sync(model, k < len(micro) - 1):
                (model(**inputs).loss / len(micro)).backward()  # DDP/FSDP average over the ranks
            if strategy == "ddp":  # synced = every rank holds the same gradient
                norm = torch.stack([p.grad.norm() for p in model.parameters()]).norm()
                synced.append(len({float(x) for x in distributed.all_gather_objects(float(norm))}) == 1)
            else:  # FSDP2 keeps unsynced gradients unsharded: the sharded ones appear with the sync
                synced.append(all(p.grad is not None for p in model.parameters()))
        grads = {
            name: (p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad).clone()
            for name, p in distributed.unwrap(model).named_parameters()
        }
        result[strategy] = {"synced": synced, "grads": grads}
    if env.is_main:
        torch.save(result, out)
    distributed.shutdown()


def test_no_grad_sync_defers_the_sync_to_the_last_micro_batch(tmp_path):
    """Two ranks x three micro-batches: no sync until the last one, then the gradient of all six."""
    out = tmp_path / "grads.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           __file__, "grad-sync-worker", str(out)]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = torch.load(out, weights_only=True)

    torch.manual_seed(0)
    model = MmBertForMaskedLM(TINY)
    micro = [m for rank in (0, 1) for m in _micro_batches(rank)]
    for inputs in micro:
        (model(**inputs).loss / len(micro)).backward()
    expected = {name: p.grad for name, p in model.named_parameters()}
    for strategy in ("ddp", "fsdp"):
        assert recorded[strategy]["synced"] == [False, False, True], strategy
        grads = recorded[strategy]["grads"]
        assert grads.keys() == expected.keys()
        for name, grad in expected.items():
            torch.testing.assert_close(grads[name], grad, atol=1e-6, rtol=1e-4, msg=f"{strategy} {name}")


def test_fsdp_run_killed_and_rerun_gives_the_same_losses(train_inputs, tmp_path):
    """FSDP, two ranks, several micro-batches per rank and step: SIGKILL the whole torchrun after a
    checkpoint, rerun the same command: the metrics are those of a run that was never interrupted."""
    recipe, _ = train_inputs
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    overrides = ["phases.0.tokens=768", "phases.0.warmup_tokens=64", "phases.1.tokens=512", "phases.2.tokens=256",
                 "train.batch_tokens=256"]  # fmt: skip

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "mmbert.cli", "train", str(recipe), "--out", str(out), "--strategy", "fsdp",
                "--micro-batch-tokens", "32", "--no-progress", "--no-tensorboard", *overrides]  # fmt: skip

    reference = subprocess.run(cmd(tmp_path / "ref"), env=env, capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected = read_metrics(tmp_path / "ref")
    # A full step (256 tokens) gives each rank 2-4 rows of 32 or 64 tokens, one per micro-batch.
    assert all(r["micro_batches"] >= 2 for r in expected if r["batch_tokens"] == 256)
    assert sum(r["batch_tokens"] == 256 for r in expected) >= 2

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        cmd(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and ckpt.latest(out) is None:
            time.sleep(0.01)
        assert proc.poll() is None, "the run finished before it could be killed: make it longer"
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert len(read_metrics(out)) < len(expected)
    done = subprocess.run(cmd(out), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stderr
    keys = ("step", "tokens", "phase", "lr", "batch_tokens", "masked_tokens", "micro_batches")
    resumed = read_metrics(out)
    assert [{k: r[k] for k in keys} for r in resumed] == [{k: r[k] for k in keys} for r in expected]
    for a, b in zip(resumed, expected, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6), a["step"]


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "worker":
    worker(*sys.argv[2:6])  # under torchrun, with PYTHONPATH set by `_torchrun`
if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "grad-sync-worker":
    grad_sync_worker(sys.argv[2])
