"""Two CPU processes (gloo, torchrun) against one: the same data stream and the same losses; a run
killed on two ranks and resumed on one, then on two; and what happens when a process of the run dies.

The test file is also the worker script: under torchrun it runs the real `Trainer` with a small
recording wrapper (the documents drawn and the rows trained at every step, per rank). A single process
runs the same recipe with the same wrapper: every step must draw the same documents on every rank and
in the single process, the ranks' rows together must be the single process's rows (same packing, same
masks), and the losses must agree: the global loss is a mean over all masked tokens of the global
batch, so the split across ranks must not change it (beyond float summation order).

Every torchrun here runs on the loopback interface (`--local-addr 127.0.0.1`, gloo on `lo`), so that
nothing depends on how the machine's name resolves, and writes each rank's whole output to its own log
file, which a failure prints in full. A run whose process group never formed (a failure of the
machine's networking, before any code under test ran) is tried once more.
"""

from __future__ import annotations

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
from mmbert.cli import main as cli_main
from mmbert.model import MmBertForMaskedLM
from mmbert.process import directory_lock
from mmbert.recipe import load_recipe
from tests.helpers.model import TINY
from tests.helpers.processes import child_pids, running
from tests.helpers.training import read_metrics

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ["phases.0.tokens=384", "phases.0.warmup_tokens=64", "phases.1.tokens=256", "phases.2.tokens=128"]
JOINED = "joined the process group"  # what every worker prints once the group has formed
TRAIN = ["-m", "mmbert.cli", "train", "--no-progress", "--no-tensorboard"]


def _record(trainer, record_dir: Path, rank: int) -> None:
    """Wrap the trainer so that each step's drawn documents and trained rows are saved for `rank`."""
    original = trainer.loader.next_step
    sampler = trainer.loader.sampler
    next_document = sampler.next_document
    drawn: list[list] = []

    def record_document():
        doc = next_document()
        drawn.append([doc.source, doc.lang, doc.index, doc.epoch])
        return doc

    def next_step(step_tokens: int, seq_len: int, mask_rate: float):
        drawn.clear()
        micro = original(step_tokens, seq_len, mask_rate)
        rows = [(m.input_ids, m.labels, m.cu_seqlens) for m in micro]
        torch.save({"docs": list(drawn), "rows": rows}, record_dir / f"rank{rank}-step{trainer.step + 1}.pt")
        return micro

    sampler.next_document = record_document
    trainer.loader.next_step = next_step


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
def _env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}",
        "GLOO_SOCKET_IFNAME": "lo",
    }


def _start(args: list[str], logs: Path) -> subprocess.Popen:
    """`torchrun` with two CPU ranks on the loopback interface; each rank's output goes to `logs`."""
    logs.mkdir(parents=True, exist_ok=True)
    env = _env()
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
def test_one_and_two_ranks_train_the_same_stream(strategy, train_inputs, tmp_path):
    recipe, _ = train_inputs
    records = tmp_path / "records"
    run_torchrun(_worker_args(recipe, tmp_path / "two", records, strategy), tmp_path / "logs")
    two = read_metrics(tmp_path / "two")
    assert {r["phase"] for r in two} == {"pre", "mid", "decay"}

    single_records = tmp_path / "single-records"
    single_records.mkdir()
    env = distributed.init_distributed("cpu")
    options = train.TrainOptions(progress=False, tensorboard=False)
    trainer = train.Trainer(load_recipe(recipe, OVERRIDES), tmp_path / "single", env, options)
    _record(trainer, single_records, 0)
    trainer.run()
    single = read_metrics(tmp_path / "single")

    keys = ("step", "tokens", "phase", "batch_tokens", "masked_tokens", "lr")
    assert [{k: r[k] for k in keys} for r in single] == [{k: r[k] for k in keys} for r in two]
    for a, b in zip(single, two, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
    drawn = 0
    for step in range(1, len(single) + 1):
        one = torch.load(single_records / f"rank0-step{step}.pt", weights_only=True)
        ranks = [torch.load(records / f"rank{r}-step{step}.pt", weights_only=True) for r in (0, 1)]
        # The same documents drawn on every rank and in the single process (none in a step that only
        # packs the rest of a long document) ...
        assert ranks[0]["docs"] == ranks[1]["docs"] == one["docs"], step
        drawn += len(one["docs"])
        # ... packed into the same rows, masked the same way: the ranks' slices make up the global batch.
        for i in (0, 1):  # input ids, labels
            together = torch.cat([row[i] for r in ranks for row in r["rows"]])
            assert torch.equal(together, torch.cat([row[i] for row in one["rows"]])), step
    assert drawn >= 3
    # Only rank 0 writes the shared state; each rank wrote its own part of the tensors and its RNG.
    path = ckpt.latest(tmp_path / "two")
    assert ckpt.read_train_state(path)["run"]["world_size"] == 2
    assert {p.name for p in path.iterdir()} >= {"__0_0.distcp", "__1_0.distcp", "rng", "train_state.json"}
    assert sorted(p.name for p in (path / "rng").iterdir()) == ["rank-00000.json", "rank-00001.json"]

    # A run started from the two ranks' end-of-mid checkpoint on one process (as a decay variant
    # started on another number of ranks) continues the stream: its steps are the two-rank run's.
    start = ckpt.phase_end_checkpoint(tmp_path / "two", "mid")
    variant = train.Trainer(
        load_recipe(recipe, OVERRIDES), tmp_path / "variant", env, options, start_from=start
    )
    variant.run()
    decay = [r for r in two if r["phase"] == "decay"]
    continued = read_metrics(tmp_path / "variant")
    assert [{k: r[k] for k in keys} for r in continued] == [{k: r[k] for k in keys} for r in decay]
    for a, b in zip(continued, decay, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)


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


def _kill_after_new_checkpoint(proc: subprocess.Popen, out: Path, logs: Path, after: int) -> None:
    """SIGKILL `proc` (torchrun or a single `mmbert train`; its ranks die with it) once `out` has a
    checkpoint past step `after`."""
    try:
        deadline = time.monotonic() + 300
        newest = -1
        while time.monotonic() < deadline and proc.poll() is None and newest <= after:
            newest = max((c.step for c in ckpt.list_checkpoints(out) if ckpt.is_complete(c.path)), default=-1)
            time.sleep(0.01)
        assert proc.poll() is None, (
            f"the run finished before it could be killed: make it longer\n{rank_logs(logs)}"
        )
        ranks = child_pids(proc.pid)
        proc.kill()
    finally:
        proc.wait()
    _gone_within(ranks, 15)


def test_killed_on_two_ranks_resumed_on_one_then_on_two(train_inputs, tmp_path):
    """FSDP on two ranks, several micro-batches per rank and step, SIGKILLed after a checkpoint; the same
    command on one process, killed again after its next checkpoint; then two ranks with DDP finish it.
    The two-rank runs write their checkpoints asynchronously (`--async-checkpoint`).
    The steps, tokens and LRs are those of a run that was never interrupted, the losses equal to float
    summation order: the checkpoint reshards, and the data stream does not depend on the ranks."""
    recipe, _ = train_inputs
    overrides = ["phases.0.tokens=768", "phases.0.warmup_tokens=64", "phases.1.tokens=512", "phases.2.tokens=256",
                 "train.batch_tokens=256", "train.checkpoint_every_tokens=256"]  # fmt: skip

    def args(out: Path, strategy: str, *extra: str) -> list[str]:
        return [*TRAIN, str(recipe), "--out", str(out), "--strategy", strategy, "--micro-batch-tokens", "32",
                *extra, *overrides]  # fmt: skip

    # The uninterrupted reference, in this process.
    assert cli_main(args(tmp_path / "ref", "ddp")[2:]) == 0
    expected = read_metrics(tmp_path / "ref")
    # A full step (256 tokens) gives each of two ranks 2-4 rows of 32 or 64 tokens, one per micro-batch.
    assert sum(r["batch_tokens"] == 256 for r in expected) >= 4

    out = tmp_path / "killed"
    logs = tmp_path / "logs-two"
    _kill_after_new_checkpoint(_start(args(out, "fsdp", "--async-checkpoint"), logs), out, logs, after=-1)
    first = ckpt.latest(out)
    assert ckpt.read_train_state(first)["run"]["world_size"] == 2
    log = tmp_path / "one.log"
    with open(log, "w") as f:
        one = subprocess.Popen([sys.executable, *args(out, "ddp")], env=_env(), stdout=f, stderr=f)
        _kill_after_new_checkpoint(one, out, logs, after=ckpt.read_train_state(first)["trainer"]["step"])
    assert "resuming from" in log.read_text() and one.returncode == -signal.SIGKILL
    assert ckpt.read_train_state(ckpt.latest(out))["run"]["world_size"] == 1
    assert len(read_metrics(out)) < len(expected)
    assert "resuming from" in run_torchrun(args(out, "ddp", "--async-checkpoint"), tmp_path / "logs-rerun")

    keys = ("step", "tokens", "phase", "lr", "batch_tokens", "masked_tokens")
    resumed = read_metrics(out)
    assert [{k: r[k] for k in keys} for r in resumed] == [{k: r[k] for k in keys} for r in expected]
    for a, b in zip(resumed, expected, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5), a["step"]
    for phase in ("pre", "mid", "decay"):
        assert (out / "export" / phase / "model.safetensors").exists()


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "worker":
    worker(*sys.argv[2:6])  # under torchrun, with PYTHONPATH set by `_start`
if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "grad-sync-worker":
    grad_sync_worker(sys.argv[2])
