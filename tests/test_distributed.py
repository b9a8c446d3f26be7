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
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmbert import checkpoint as ckpt
from mmbert import distributed, train
from mmbert.recipe import load_recipe
from tests.conftest import read_metrics

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


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "worker":
    worker(*sys.argv[2:6])  # under torchrun, with PYTHONPATH set by `_torchrun`
