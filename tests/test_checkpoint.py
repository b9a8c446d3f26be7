"""Checkpoints: the training state's keys (pinned), atomic directories, retention, damaged-checkpoint
fallback, the tied embedding stored once, RNG round trip, and refusals (old format, other data or
tokenizer, another --init-from)."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributed.checkpoint import FileSystemReader

from mmbert import checkpoint as ckpt
from mmbert import distributed, train
from mmbert.config import MmBertConfig
from mmbert.model import MmBertForMaskedLM
from mmbert.recipe import load_recipe
from mmbert.run_inputs import InputsChangedError
from mmbert.run_layout import RunLayout
from tests.helpers.model import TINY
from tests.helpers.tokenizer import make_tokenizer
from tests.helpers.training import fake_documents, read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

SHORT = ["phases.0.tokens=128", "phases.0.warmup_tokens=0", "phases.1.tokens=64", "phases.2.tokens=64"]
OPTIONS = train.TrainOptions(progress=False, tensorboard=False)


def _trainer(recipe_path: Path, run: Path, *overrides: str, **kwargs) -> train.Trainer:
    recipe = load_recipe(recipe_path, [*SHORT, *overrides])
    return train.Trainer(recipe, run, distributed.init_distributed("cpu"), OPTIONS, **kwargs)


def _state(trainer: train.Trainer) -> dict:
    """A trainer's state with plain values where Stateful parts stand (as a checkpoint holds them)."""
    state = trainer.state_dict()
    state["model"], state["optimizer"] = state["model"].state_dict(), state["optimizer"].state_dict()
    return state


def test_training_state_keys_are_pinned(train_inputs, tmp_path):
    """The contract of a checkpoint: renaming, adding or dropping a key is a format change (bump
    `checkpoint.FORMAT_VERSION` and update this test)."""
    recipe, _ = train_inputs
    trainer = _trainer(recipe, tmp_path / "run")
    trainer.train_step()  # the optimizer has its moments
    state = _state(trainer)
    assert list(state) == ["model", "optimizer", "trainer", "data", "rng", "fingerprints", "run"]
    assert list(state["trainer"]) == ["step", "tokens", "phase", "first_phase", "nonfinite_streak"]
    assert list(state["data"]) == ["sampler", "packer", "rows_drawn"]
    assert list(state["fingerprints"]) == ["data", "tokenizer"]
    assert list(state["run"]) == [
        "recipe",
        "model_config",
        "tokenizer_dir",
        "init_from",
        "world_size",
        "strategy",
    ]
    assert set(state["rng"]) == {"python", "numpy", "torch"}
    assert ckpt.TENSOR_PARTS == ("model", "optimizer") and ckpt.RANK_PARTS == ("rng",)
    # The model's keys: every parameter and buffer, the decoder tied to the embedding stored once.
    names = set(MmBertForMaskedLM(trainer.config).state_dict())
    assert set(state["model"]) == names - {"decoder.weight"}
    assert set(state["optimizer"]) == {"state", "param_groups"}
    assert set(state["optimizer"]["state"]) == {n for n, p in trainer.model.named_parameters()}
    trainer.close()


def test_checkpoint_directory_round_trip(train_inputs, tmp_path):
    """What a checkpoint directory holds; a new trainer restores everything and continues identically."""
    recipe, _ = train_inputs
    a = _trainer(recipe, tmp_path / "a", "phases.0.tokens=1024")  # the steps stay in one phase
    for _ in range(3):
        a.train_step()
    a.save()
    saved = {k: v.clone() for k, v in _state(a)["model"].items()}
    path = ckpt.latest(tmp_path / "a")
    assert path == RunLayout(tmp_path / "a").checkpoint(3)
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    assert files == [".metadata", "__0_0.distcp", "rng/rank-00000.json", "train_state.json"]
    shared = ckpt.read_train_state(path)
    assert shared["format"] == ckpt.FORMAT_VERSION and set(shared["files"]) == set(files) - {
        "train_state.json"
    }
    assert shared["trainer"]["step"] == 3 and shared["run"]["world_size"] == 1
    # The tied embedding is stored once (the decoder's weight is the embedding).
    stored = FileSystemReader(path).read_metadata().state_dict_metadata
    assert "model.model.embeddings.tok_embeddings.weight" in stored and "model.decoder.weight" not in stored
    expected = [a.train_step()["loss"] for _ in range(3)]
    a.close()

    b = _trainer(recipe, tmp_path / "a", "phases.0.tokens=1024")
    assert b.step == 3 and b.tokens == shared["trainer"]["tokens"]
    restored = _state(b)["model"]
    assert restored.keys() == saved.keys() and all(torch.equal(restored[k], v) for k, v in saved.items())
    assert [b.train_step()["loss"] for _ in range(3)] == expected
    b.close()


def test_latest_skips_partial_and_damaged_checkpoints(train_inputs, tmp_path, caplog):
    recipe, _ = train_inputs
    t = _trainer(recipe, tmp_path)
    t.train_step()
    t.save()
    good = ckpt.latest(tmp_path)
    t.train_step()
    t.save()
    t.close()
    newest = ckpt.latest(tmp_path)
    # A killed writer leaves a temporary directory: never listed, never resumed from.
    shutil.copytree(newest, newest.parent / f".{newest.name}.999999.abc.tmp")
    # A shard cut short (a disk fault): the newest is skipped, with a warning.
    shard = newest / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        assert ckpt.latest(tmp_path) == good
    assert newest.name in caplog.text
    (good / "train_state.json").unlink()  # a directory without its state was never published
    assert ckpt.latest(tmp_path) is None
    assert ckpt.latest(tmp_path / "missing") is None


def test_retention_keeps_last_k_and_phase_ends(train_inputs, tmp_path):
    recipe, _ = train_inputs
    t = _trainer(recipe, tmp_path, "train.keep_last=2")
    for step in range(1, 6):
        t.train_step()
        t.save(phase_end=None)
        if step == 2:
            ckpt.save_checkpoint(tmp_path, t.state_dict(), step=t.step, phase_end="pre", keep_last=2)
    t.close()
    names = [c.path.name for c in ckpt.list_checkpoints(tmp_path)]
    assert names == ["step-000000002-end-pre", "step-000000004", "step-000000005"]
    assert ckpt.phase_end_checkpoint(tmp_path, "pre").name == "step-000000002-end-pre"
    assert ckpt.phase_end_checkpoint(tmp_path, "mid") is None
    with pytest.raises(ValueError, match="phase name"):
        RunLayout(tmp_path).checkpoint(1, "a/b")


def test_old_single_file_checkpoints_are_refused_clearly(tmp_path):
    layout = RunLayout(tmp_path)
    layout.checkpoints.mkdir()
    torch.save({"format": 1}, layout.checkpoints / "step-000000004.pt")
    with pytest.raises(ckpt.CheckpointError, match="older mmbert .format 1, one .pt file.*start it afresh"):
        ckpt.latest(tmp_path)


def test_resume_over_other_data_tokenizer_or_init_from_is_refused(train_inputs, tmp_path):
    recipe, _ = train_inputs
    run = tmp_path / "run"
    t = _trainer(recipe, run)
    t.train_step()
    t.save()
    t.close()
    saved = ckpt.read_train_state(ckpt.latest(run))["fingerprints"]

    # The same data, prepared again with one document less: another fingerprint.
    data = tmp_path / "data"
    shutil.copytree(load_recipe(recipe).data[0], data)
    manifest = json.loads((data / "manifest.json").read_text())
    entry = next(iter(manifest["sources"]["web"].values()))
    entry["docs"] -= 1
    entry["ranges"][-1][1] -= 1
    (data / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputsChangedError, match=rf"prepared data with fingerprint {saved['data']}; this run's prepared data has fingerprint [0-9a-f]{{16}}"):  # fmt: skip
        _trainer(recipe, run, f"data=[{data}]")

    # The recipe now names another tokenizer.
    other = make_tokenizer(tmp_path / "tok", [t for _, t in fake_documents(seed=1)], 400)
    with pytest.raises(
        InputsChangedError, match=rf"fingerprint {saved['tokenizer']}.*now names {other} .fingerprint"
    ):
        _trainer(recipe, run, f"tokenizer={other}")

    # Another --init-from than the run started with (it started with none: any one is another).
    export = tmp_path / "export"
    MmBertForMaskedLM(MmBertConfig.preset("tiny", vocab_size=TINY.vocab_size)).save_pretrained(export)
    with pytest.raises(
        InputsChangedError, match=f"started without --init-from, not from --init-from {export}"
    ):
        _trainer(recipe, run, init_from=export)


def test_rng_state_roundtrip_through_json():
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's legacy state
    state = json.loads(json.dumps(ckpt.capture_rng_state()))
    expected = (random.random(), np.random.standard_normal(3), torch.rand(4))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    ckpt.restore_rng_state(state)
    got = (random.random(), np.random.standard_normal(3), torch.rand(4))
    assert got[0] == expected[0]
    assert np.array_equal(got[1], expected[1])
    assert torch.equal(got[2], expected[2])


KILLED_IN_WRITE = """
import os, signal, sys
from pathlib import Path
from mmbert import checkpoint, distributed, train
from mmbert.recipe import load_recipe

def killed(tmp, final):  # every file of the checkpoint written, not yet renamed into place
    os.kill(os.getpid(), signal.SIGKILL)

checkpoint._rename_into_place = killed
recipe = load_recipe(sys.argv[1], sys.argv[3:])
options = train.TrainOptions(progress=False, tensorboard=False)
train.Trainer(recipe, Path(sys.argv[2]), distributed.init_distributed("cpu"), options).run()
"""


def test_a_kill_during_a_write_leaves_no_checkpoint_to_resume_from(train_inputs, tmp_path):
    recipe, _ = train_inputs
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", KILLED_IN_WRITE, str(recipe), str(run), *SHORT], env=env)
    assert proc.returncode == -signal.SIGKILL
    (leftover,) = RunLayout(run).checkpoints.iterdir()  # the whole checkpoint, under its temporary name
    assert leftover.name.startswith(".step-") and (leftover / "train_state.json").exists()
    assert ckpt.latest(run) is None and ckpt.list_checkpoints(run) == []
    t = _trainer(recipe, run)  # starts afresh, and its first save clears the dead writer's directory
    assert t.step == 0
    t.train_step()
    t.save()
    t.close()
    assert [p.name for p in RunLayout(run).checkpoints.iterdir()] == ["step-000000001"]


def test_asynchronous_writes_publish_the_same_checkpoints(train_inputs, tmp_path):
    """`--async-checkpoint`: the same checkpoints, each published once written (by the next save or the
    end of the run), and the same losses."""
    recipe, _ = train_inputs
    runs = {}
    for name, asynchronous in (("sync", False), ("async", True)):
        options = train.TrainOptions(progress=False, tensorboard=False, async_checkpoint=asynchronous)
        t = train.Trainer(
            load_recipe(recipe, SHORT), tmp_path / name, distributed.init_distributed("cpu"), options
        )
        t.run()
        runs[name] = t
    names = {n: [c.path.name for c in ckpt.list_checkpoints(tmp_path / n)] for n in runs}
    assert names["async"] == names["sync"] and names["sync"]
    assert all(ckpt.is_complete(c.path) for c in ckpt.list_checkpoints(tmp_path / "async"))
    assert not list(RunLayout(tmp_path / "async").checkpoints.glob(".*"))
    losses = {n: [r["loss"] for r in read_metrics(tmp_path / n)] for n in runs}
    assert losses["async"] == losses["sync"]
    a, b = (ckpt.read_train_state(ckpt.latest(tmp_path / n)) for n in ("sync", "async"))
    assert a["data"] == b["data"] and a["trainer"] == b["trainer"]


def test_an_unreadable_checkpoint_is_an_error_naming_it(train_inputs, tmp_path):
    """DCP's own failures (a BaseException) come out as `CheckpointError`s naming the checkpoint."""
    recipe, _ = train_inputs
    t = _trainer(recipe, tmp_path)
    t.train_step()
    t.save()
    t.close()
    path = ckpt.latest(tmp_path)
    metadata = path / ".metadata"
    metadata.write_bytes(b"\0" * metadata.stat().st_size)  # same size: passes the completeness check
    model = MmBertForMaskedLM(t.config)
    with pytest.raises(ckpt.CheckpointError, match=f"{path}: not a readable checkpoint"):
        ckpt.load_model_weights(path, model)
