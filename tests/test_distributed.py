"""Two CPU processes (gloo, torchrun) against one: disjoint data per rank, the same losses; and what
happens when a process of the run dies.

The test file is also the worker script: under torchrun it runs the real `Trainer` with two small
recording wrappers (the micro-batches each rank trained on, the documents each rank drew). The test then
trains a single process on the union of both ranks' micro-batches at every step and checks that its
losses match the 2-rank run's: the global loss is a mean over all masked tokens of the global batch, so
the split across ranks must not change it (beyond float summation order).

Every torchrun here runs on the loopback interface (`--local-addr 127.0.0.1`, gloo on `lo`), so that
nothing depends on how the machine's name resolves, and writes each rank's whole output to its own log
file, which a failure prints in full. A run whose process group never formed (a failure of the
machine's networking, before any code under test ran) is tried once more.
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
from mmbert.process import directory_lock
from mmbert.recipe import load_recipe
from tests.conftest import TINY, child_pids, read_metrics, running

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ["phases.0.tokens=384", "phases.0.warmup_tokens=64", "phases.1.tokens=256", "phases.2.tokens=128"]
JOINED = "joined the process group"  # what every worker prints once the group has formed
TRAIN = ["-m", "mmbert.cli", "train", "--no-progress", "--no-tensorboard"]


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
    # A bounded wait in collectives: a rank whose peer hangs fails (with its log) instead of the test hanging.
    env = distributed.init_distributed("cpu", timeout_s=240)
    print(f"rank {env.rank} {JOINED}", flush=True)
    assert env.world_size == 2
    recipe = load_recipe(recipe_path, OVERRIDES)
    options = train.TrainOptions(strategy=strategy, progress=False, tensorboard=False)
    trainer = train.Trainer(recipe, Path(out), env, options)
    _record(trainer, Path(record_dir), env.rank)
    trainer.run()
    distributed.shutdown()


# ---------------------------------------------------------------------------------------------- torchrun
def _start(args: list[str], logs: Path) -> subprocess.Popen:
    """`torchrun` with two CPU ranks on the loopback interface; each rank's output goes to `logs`."""
    logs.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}",
        "GLOO_SOCKET_IFNAME": "lo",
    }
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "--local-addr", "127.0.0.1", "--log-dir", str(logs), "--redirects", "3", *args,
    ]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def rank_logs(logs: Path) -> str:
    """Every rank's whole stdout and stderr under `logs`."""
    parts = [
        f"----- {f.relative_to(logs)}\n{f.read_text(errors='replace')}" for f in sorted(logs.rglob("*.log"))
    ]
    return "\n".join(parts) or f"(no rank logs under {logs})"


def _wait(proc: subprocess.Popen, logs: Path, timeout: float = 600) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s\n{out}\n{rank_logs(logs)}")
    return proc.returncode, out


def run_torchrun(args: list[str], logs: Path) -> str:
    """Run torchrun to completion (once more if its process group never formed); returns the rank logs."""
    for attempt in (1, 2):
        attempt_logs = logs / f"try{attempt}"
        code, out = _wait(_start(args, attempt_logs), attempt_logs)
        text = rank_logs(attempt_logs)
        if code == 0:
            return text
        if attempt == 1 and JOINED not in text and "joined the gloo group" not in text:
            print(
                f"torchrun failed before its process group formed, trying again:\n{out}\n{text}",
                file=sys.stderr,
            )
            continue
        pytest.fail(f"torchrun exited with {code}\n{out[-4000:]}\n{text}")
    raise AssertionError("unreachable")


def _worker_args(recipe: Path, out: Path, record_dir: Path, strategy: str) -> list[str]:
    record_dir.mkdir(parents=True)
    return [__file__, "worker", str(recipe), str(out), str(record_dir), strategy]


# As in the workers (OMP_NUM_THREADS=1).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_ranks_draw_disjoint_data_and_match_one_process(strategy, train_inputs, tmp_path, monkeypatch):
    recipe, _ = train_inputs

    records = tmp_path / "records"
    run_torchrun(_worker_args(recipe, tmp_path / "ddp", records, strategy), tmp_path / "logs")
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


# ---------------------------------------------------------------------------------------------- deaths
def _start_killable(recipe: Path, out: Path, logs: Path) -> tuple[subprocess.Popen, list[int]]:
    """torchrun on the `train` command, returned once both ranks run and have written a new checkpoint."""

    def newest() -> int:
        return max((c.step for c in ckpt.list_checkpoints(out)), default=-1)

    before = newest()
    proc = _start([*TRAIN, str(recipe), "--out", str(out), *OVERRIDES], logs)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and newest() <= before:
        time.sleep(0.05)
    ranks = child_pids(proc.pid)
    if proc.poll() is not None or len(ranks) != 2:
        proc.kill()
        pytest.fail(f"the run ended or had {len(ranks)} ranks before it could be killed\n{rank_logs(logs)}")
    return proc, ranks


def _gone_within(pids: list[int], seconds: float) -> None:
    start = time.monotonic()
    while alive := [p for p in pids if running(p)]:
        assert time.monotonic() - start < seconds, f"ranks {alive} still alive after {seconds} s"
        time.sleep(0.05)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_dead_rank_or_dead_torchrun_leaves_no_rank_behind_and_the_run_resumes(train_inputs, tmp_path):
    recipe, _ = train_inputs
    out = tmp_path / "run"

    # A rank dies: torchrun ends the other one and exits non-zero.
    proc, ranks = _start_killable(recipe, out, tmp_path / "logs1")
    os.kill(ranks[1], signal.SIGKILL)
    _gone_within(ranks, 60)
    assert _wait(proc, tmp_path / "logs1")[0] != 0

    # torchrun itself is killed: its ranks (in sessions of their own) die with it.
    proc, ranks = _start_killable(recipe, out, tmp_path / "logs2")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _gone_within(ranks, 15)
    with directory_lock(out, "test"):  # nobody holds the run directory any more
        pass

    logs = run_torchrun([*TRAIN, str(recipe), "--out", str(out), *OVERRIDES], tmp_path / "logs3")
    assert "resuming from" in logs
    steps = read_metrics(out)
    assert [r["step"] for r in steps] == list(range(1, len(steps) + 1)) and steps[-1]["tokens"] >= 768
    assert {r["phase"] for r in steps} == {"pre", "mid", "decay"}
    assert all(ckpt.is_complete(c.path) for c in ckpt.list_checkpoints(out))


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
    env = distributed.init_distributed("cpu", timeout_s=240)
    print(f"rank {env.rank} {JOINED}", flush=True)
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
    run_torchrun([__file__, "grad-sync-worker", str(out)], tmp_path / "logs")
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
    overrides = ["phases.0.tokens=768", "phases.0.warmup_tokens=64", "phases.1.tokens=512", "phases.2.tokens=256",
                 "train.batch_tokens=256"]  # fmt: skip

    def args(out: Path) -> list[str]:
        return [*TRAIN, str(recipe), "--out", str(out), "--strategy", "fsdp", "--micro-batch-tokens", "32",
                *overrides]  # fmt: skip

    run_torchrun(args(tmp_path / "ref"), tmp_path / "logs-ref")
    expected = read_metrics(tmp_path / "ref")
    # A full step (256 tokens) gives each rank 2-4 rows of 32 or 64 tokens, one per micro-batch.
    assert all(r["micro_batches"] >= 2 for r in expected if r["batch_tokens"] == 256)
    assert sum(r["batch_tokens"] == 256 for r in expected) >= 2

    out = tmp_path / "killed"
    logs = tmp_path / "logs-killed"
    proc = _start(args(out), logs)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and ckpt.latest(out) is None:
            time.sleep(0.01)
        assert proc.poll() is None, (
            f"the run finished before it could be killed: make it longer\n{rank_logs(logs)}"
        )
        ranks = child_pids(proc.pid)
        proc.kill()  # torchrun; its ranks die with it
    finally:
        proc.wait()
    _gone_within(ranks, 15)
    assert proc.returncode == -signal.SIGKILL
    assert len(read_metrics(out)) < len(expected)
    assert "resuming from" in run_torchrun(args(out), tmp_path / "logs-rerun")
    keys = ("step", "tokens", "phase", "lr", "batch_tokens", "masked_tokens", "micro_batches")
    resumed = read_metrics(out)
    assert [{k: r[k] for k in keys} for r in resumed] == [{k: r[k] for k in keys} for r in expected]
    for a, b in zip(resumed, expected, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6), a["step"]


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "worker":
    worker(*sys.argv[2:6])  # under torchrun, with PYTHONPATH set by `_start`
if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "grad-sync-worker":
    grad_sync_worker(sys.argv[2])
