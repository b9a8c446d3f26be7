"""The data path at scale, end to end: `mmbert train` over thousands of tiny shards under a low
descriptor limit, killed mid-phase and rerun.

The shards are the documents of `train_inputs` cut into 4-token pieces, one piece per shard: ~4,000
shards (8,000 files), so a run of a few dozen steps touches far more shards than `ulimit -n 256` lets a
process hold open. Before the store bounded its open shards (dbe70ba), this run stopped at its ~10th
step with "corrupt shard file: [Errno 24] Too many open files".
"""

from __future__ import annotations

import gc
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from mmbert import distributed, train
from mmbert.data.manifest import language_entries, read_manifest, write_manifest
from mmbert.data.shards import DEFAULT_OPEN_SHARDS, TokenStore
from mmbert.recipe import load_recipe
from tests.helpers.training import read_metrics

LOW_FILES = 256
ENV = {
    **os.environ,
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")]
    ),
}
KEYS = ("step", "tokens", "phase", "loss", "lr", "seq_len", "batch_tokens", "masked_tokens")


def _cut_into_tiny_shards(data: Path, out: Path, piece: int = 4) -> int:
    """Write `data`'s documents cut into `piece`-token documents, one per shard, as a DATA directory
    with `data`'s tokenizer; returns the number of shards."""
    store = TokenStore(data)
    (out / "web").mkdir(parents=True)
    shards = []
    for lang in store.languages("web"):
        for i in range(store.num_docs("web", lang)):
            doc = store.doc("web", lang, i)
            for p in range(0, doc.size, piece):
                part, name = doc[p : p + piece], f"web/{lang}.{i}.{p}"
                np.save(out / f"{name}.offsets.npy", np.array([0, part.size], np.int64))
                np.save(out / f"{name}.tokens.npy", part)
                shards.append({"path": f"{name}.tokens.npy", "langs": {lang: [0, 1, int(part.size)]},
                               "ids": [int(part.min()), int(part.max())]})  # fmt: skip
    store.close()
    manifest = read_manifest(data)
    manifest["sources"] = {"web": language_entries(shards)}
    write_manifest(out, manifest)
    return len(shards)


def _data_of(recipe: Path) -> Path:
    return Path(load_recipe(recipe).data[0])


def _low_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_FILES, LOW_FILES))


def _train(recipe: Path, out: Path) -> subprocess.Popen:
    """`mmbert train` under `ulimit -n 256`, its pre-training phase long enough to draw ~1,000 documents."""
    cmd = [sys.executable, "-m", "mmbert.cli", "train", str(recipe), "--out", str(out), "--no-progress",
           "--no-tensorboard", "phases.0.tokens=3000"]  # fmt: skip
    return subprocess.Popen(
        cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=_low_limit
    )


def _finish(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "corrupt" not in err and "Too many open files" not in err, err[-3000:]
    return err


def test_training_over_thousands_of_shards_under_a_low_descriptor_limit_resumes_after_sigkill(
    train_inputs, tmp_path
):
    recipe_text = train_inputs[0].read_text()
    data = _data_of(train_inputs[0])
    n_shards = _cut_into_tiny_shards(data, tmp_path / "many")
    assert n_shards > 3000
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(recipe_text.replace(str(data), str(tmp_path / "many")))

    _finish(_train(recipe, tmp_path / "ref"))
    reference = [{k: r[k] for k in KEYS} for r in read_metrics(tmp_path / "ref")]
    pre = [r for r in reference if r["phase"] == "pre"]
    assert len(pre) > 12 and {r["phase"] for r in reference} == {"pre", "mid", "decay"}

    # Killed in the middle of the pre-training phase, after a checkpoint, then rerun to the end.
    out = tmp_path / "killed"
    proc = _train(recipe, out)
    metrics, deadline = out / "metrics.jsonl", time.monotonic() + 600
    try:
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= len(pre) // 2):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    killed_at = len(read_metrics(out))
    assert killed_at < len(pre), "killed after the phase it should have been killed in: make it longer"
    err = _finish(_train(recipe, out))
    assert "resuming from" in err
    assert [{k: r[k] for k in KEYS} for r in read_metrics(out)] == reference


def _read_ahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "mmbert-read-ahead"]


def test_a_finished_run_leaves_no_thread_and_no_open_shard(train_inputs, tmp_path, one_thread):
    """A process that trains several runs (`mmbert ablate`, decay variants) must not keep each one's
    read-ahead thread and open shards (128 descriptors each at the default cache) after it ends."""
    before = _read_ahead_threads()
    env = distributed.init_distributed("cpu")
    trainer = train.Trainer(
        load_recipe(train_inputs[0]), tmp_path, env, train.TrainOptions(progress=False, tensorboard=False)
    )
    assert trainer.run() == 0
    assert _read_ahead_threads() == before
    assert trainer.loader.sampler.store.open_shards == 0


def test_a_dropped_store_closes_its_descriptors(train_inputs, tmp_path):
    _cut_into_tiny_shards(_data_of(train_inputs[0]), tmp_path / "many")
    fds = len(os.listdir("/proc/self/fd"))
    store = TokenStore(tmp_path / "many")
    for i in range(200):
        store.doc("web", "aaa_Latn", i)
    assert store.open_shards == DEFAULT_OPEN_SHARDS and len(os.listdir("/proc/self/fd")) == fds + 128
    del store
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) == fds
