"""Multi-node, rehearsed on one machine: two `torchrun` agents (`--nnodes`, c10d rendezvous on
127.0.0.1, one CPU process each, gloo) train a tiny recipe as two nodes would.

- Two nodes train to the end; one node's agent and its rank are killed mid-run (the other rank then
  fails: its peer is gone); the same two commands run again resume from the last checkpoint, and the
  steps are those of a run that was never interrupted.
- Elastic (`--nnodes 1:2 --max-restarts 3`): one node's process tree is killed mid-run; the surviving
  agent restarts its rank, the rendezvous closes with one node, and the run continues on one rank from
  the last checkpoint with the same data stream (the stream does not depend on the number of ranks).

The rendezvous store lives in the agent that binds the endpoint first (the first started here, the
first node of a Slurm job); the node killed is the other one.
"""

from __future__ import annotations

import datetime
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from torch.distributed import TCPStore

from mmbert import checkpoint as ckpt
from mmbert.cli import main as cli_main
from tests.helpers.processes import child_pids, running
from tests.helpers.training import read_metrics

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ["phases.0.tokens=768", "phases.0.warmup_tokens=64", "phases.1.tokens=512", "phases.2.tokens=256",
             "train.batch_tokens=256", "train.checkpoint_every_tokens=256"]  # fmt: skip
KEYS = ("step", "tokens", "phase", "lr", "batch_tokens", "masked_tokens")

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agent(
    recipe: Path, out: Path, logs: Path, nnodes: str, port: int, restarts: int = 0
) -> subprocess.Popen:
    """One node's `torchrun` agent (one rank) joining the c10d rendezvous at 127.0.0.1:`port`."""
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'src'}",
           "GLOO_SOCKET_IFNAME": "lo"}  # fmt: skip
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", nnodes, "--nproc-per-node", "1",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "mmbert-test",
        # a node gone is noticed within seconds; a round with fewer nodes than the most closes 4 s later
        "--rdzv-conf", "join_timeout=120,last_call_timeout=4,keep_alive_interval=1,keep_alive_max_attempt=3",
        "--max-restarts", str(restarts), "--monitor-interval", "0.2", "--local-addr", "127.0.0.1",
        "--log-dir", str(logs), "--redirects", "3",
        "-m", "mmbert.cli", "train", str(recipe), "--out", str(out), "--no-progress", "--no-tensorboard",
        "--timeout", "60", *OVERRIDES,
    ]  # fmt: skip
    out_file = open(logs / "agent.log", "a")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(cmd, env=env, stdout=out_file, stderr=subprocess.STDOUT)


def _two_agents(
    recipe: Path, out: Path, logs: Path, nnodes: str, restarts: int = 0
) -> list[subprocess.Popen]:
    port = _free_port()
    first = _agent(recipe, out, logs / "node0", nnodes, port, restarts)
    # The first agent hosts the rendezvous store (the agent that binds the endpoint does): start the
    # second once it listens, so that the node killed below is never the host.
    deadline = time.monotonic() + 120
    while True:
        assert first.poll() is None and time.monotonic() < deadline, f"no rendezvous store\n{_logs(logs)}"
        try:  # a store client, as the agents are (a bare socket disturbs the store)
            TCPStore("127.0.0.1", port, is_master=False, timeout=datetime.timedelta(seconds=1))
            break
        except (RuntimeError, OSError):
            time.sleep(0.05)
    return [first, _agent(recipe, out, logs / "node1", nnodes, port, restarts)]


def _logs(logs: Path) -> str:
    return "\n".join(
        f"----- {f}\n{f.read_text(errors='replace')[-3000:]}" for f in sorted(logs.rglob("*.log"))
    )


def _wait(procs: list[subprocess.Popen], logs: Path, timeout: float = 300) -> list[int]:
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"the agents did not finish in {timeout} s\n{_logs(logs)}")
    return [p.returncode for p in procs]


def _kill_tree_after_checkpoint(procs: list[subprocess.Popen], victim: int, out: Path, logs: Path) -> None:
    """Once `out` has a complete checkpoint, SIGKILL agent `victim` and its rank (a node going down)."""
    deadline = time.monotonic() + 300
    while ckpt.latest(out) is None:
        assert all(p.poll() is None for p in procs), f"an agent ended before a checkpoint\n{_logs(logs)}"
        assert time.monotonic() < deadline, f"no checkpoint in 300 s\n{_logs(logs)}"
        time.sleep(0.02)
    agent = procs[victim]
    tree = [agent.pid, *child_pids(agent.pid)]
    for pid in tree:
        os.kill(pid, signal.SIGKILL)
    agent.wait()
    while any(running(pid) for pid in tree):
        time.sleep(0.05)


@pytest.fixture(scope="module")
def reference(train_inputs, tmp_path_factory) -> list[dict]:
    """The same recipe, one process, never interrupted."""
    recipe, _ = train_inputs
    out = tmp_path_factory.mktemp("reference")
    assert (
        cli_main(["train", str(recipe), "--out", str(out), "--no-progress", "--no-tensorboard", *OVERRIDES])
        == 0
    )
    return read_metrics(out)


def _same_run(records: list[dict], reference: list[dict]) -> None:
    assert [{k: r[k] for k in KEYS} for r in records] == [{k: r[k] for k in KEYS} for r in reference]
    for a, b in zip(records, reference, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5), a["step"]


def test_two_nodes_killed_and_rerun_resume_identically(train_inputs, reference, tmp_path):
    recipe, _ = train_inputs
    out = tmp_path / "run"
    procs = _two_agents(recipe, out, tmp_path / "logs1", "2")
    _kill_tree_after_checkpoint(procs, 1, out, tmp_path / "logs1")
    assert _wait(procs, tmp_path / "logs1")[0] != 0  # the other node's rank lost its peer
    assert len(read_metrics(out)) < len(reference)

    assert _wait(_two_agents(recipe, out, tmp_path / "logs2", "2"), tmp_path / "logs2") == [0, 0], _logs(
        tmp_path / "logs2"
    )
    assert "resuming from" in _logs(tmp_path / "logs2")
    _same_run(read_metrics(out), reference)


def test_elastic_survivor_continues_on_one_node(train_inputs, reference, tmp_path):
    recipe, _ = train_inputs
    out = tmp_path / "run"
    logs = tmp_path / "logs"
    procs = _two_agents(recipe, out, logs, "1:2", restarts=3)
    _kill_tree_after_checkpoint(procs, 1, out, logs)
    assert _wait(procs[:1], logs) == [0], _logs(logs)
    text = _logs(logs / "node0")
    assert "written by 2 rank(s)" in text and "resuming from" in text
    _same_run(read_metrics(out), reference)
    assert ckpt.read_train_state(ckpt.latest(out))["run"]["world_size"] == 1


def test_slurm_example_is_valid_bash_and_launches_as_rehearsed():
    script = ROOT / "examples" / "slurm" / "train.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    for flag in (
        "--rdzv-backend c10d",
        '--nnodes "$MIN_NODES:$SLURM_NNODES"',
        "--max-restarts",
        "-m mmbert.cli train",
    ):
        assert flag in text, flag
