"""`mmbert train` on a tiny model and tiny prepared data: resume after SIGKILL, phases, variants, exports.

The data is four fake languages tokenized by `mmbert prepare` with a tiny BPE tokenizer (`train_inputs`,
built once per session); every run is a few dozen optimizer steps of the `tiny` preset on CPU.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from mmbert import checkpoint as ckpt
from mmbert import distributed, runs, train
from mmbert.cli import main as cli_main
from mmbert.cli import train as cli_train
from mmbert.config import MmBertConfig
from mmbert.flops import doc_attention_pairs
from mmbert.metrics import MetricsLog, step_line
from mmbert.model import MmBertForMaskedLM
from mmbert.optim import build_optimizer
from mmbert.process import LOCK_FILE, DirectoryInUseError
from mmbert.recipe import load_recipe
from mmbert.tokenizer import read_tokenizer_files
from tests.helpers.composer import write_composer_checkpoint
from tests.helpers.exports import save_tiny
from tests.helpers.files import dir_with
from tests.helpers.tokenizer import make_gemma_like_tokenizer, make_tokenizer
from tests.helpers.training import fake_documents, read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

# One thread, as in-process (`one_thread`).
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run_main(*args) -> int:
    return cli_main(["train", *[str(a) for a in args], "--no-progress", "--no-tensorboard"])


def _cli(recipe: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "mmbert.cli", "train", str(recipe), "--out", str(out), "--no-progress"]


def _kill_after(
    recipe: Path,
    out: Path,
    lines: int,
    extra_delay: float,
    sig: int = signal.SIGKILL,
    while_running: Callable[[subprocess.Popen], None] | None = None,
) -> tuple[int, str]:
    """Start a run in a subprocess and send it `sig` once metrics.jsonl has `lines` lines (+ a delay);
    `while_running(proc)` is called just before. Returns the exit status and stderr."""
    proc = subprocess.Popen(
        _cli(recipe, out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    metrics = out / "metrics.jsonl"
    # Generous: on a loaded machine (a full suite beside other work) a run can take minutes to start.
    deadline = time.monotonic() + 600
    try:
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= lines):
            assert proc.poll() is None, "the run finished before it could be killed: make it longer"
            assert time.monotonic() < deadline, f"{metrics} did not reach {lines} lines in 600 s"
            time.sleep(0.01)
        time.sleep(extra_delay)
        assert proc.poll() is None, "the run finished before it could be killed: make it longer"
        if while_running is not None:
            while_running(proc)
        proc.send_signal(sig)
    finally:
        _, err = proc.communicate()
    return proc.returncode, err


KEYS = ("step", "tokens", "phase", "loss", "lr", "mask_rate", "seq_len", "batch_tokens", "masked_tokens")


def test_sigkill_and_rerun_gives_identical_losses(train_inputs, tmp_path):
    recipe, _ = train_inputs
    # Reference: never interrupted (in this process, on one thread like the subprocesses).
    assert run_main(recipe, "--out", tmp_path / "ref") == 0
    reference = [{k: r[k] for k in KEYS} for r in read_metrics(tmp_path / "ref")]
    assert len(reference) >= 12 and {r["phase"] for r in reference} == {"pre", "mid", "decay"}

    out = tmp_path / "killed"

    def second_run_is_refused(proc: subprocess.Popen) -> None:
        # The run directory is locked: a second run on it stops at once, naming the first one.
        with pytest.raises(
            DirectoryInUseError, match=rf"`mmbert train` \(pid {proc.pid} on {os.uname().nodename}"
        ):
            runs.run_recipe(
                load_recipe(recipe), out, distributed.init_distributed("cpu"), train.TrainOptions()
            )

    # Two kills at different moments (the second one soon after a checkpoint is due), a Ctrl-C, then a
    # clean finish. Each rerun takes over the lock of the killed run.
    _kill_after(recipe, out, lines=3, extra_delay=0.0, while_running=second_run_is_refused)
    _, err = _kill_after(recipe, out, lines=len(read_metrics(out)) + 6, extra_delay=0.05)
    assert "taking over the lock of `mmbert train`" in err
    # Ctrl-C at the next step: later, on a quiet machine, it can land after the last step, in the exit.
    code, err = _kill_after(recipe, out, lines=len(read_metrics(out)) + 1, extra_delay=0.0, sig=signal.SIGINT)
    assert code == 130 and err.splitlines()[-1] == f"mmbert train: interrupted; {cli_train.INTERRUPTED}", (
        code,
        err[-3000:],
    )
    checkpoints = ckpt.list_checkpoints(out)
    assert checkpoints and all(ckpt.is_complete(c.path) for c in checkpoints)
    done = subprocess.run(_cli(recipe, out), env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stderr and "taking over the lock" not in done.stderr  # Ctrl-C released it
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # the killed runs' leftovers are gone
    resumed = [{k: r[k] for k in KEYS} for r in read_metrics(out)]
    assert resumed == reference
    # The exports of the resumed run are bit-identical to the reference ones.
    for phase in ("pre", "mid", "decay"):
        a = (tmp_path / "ref" / "export" / phase / "model.safetensors").read_bytes()
        assert a == (out / "export" / phase / "model.safetensors").read_bytes()


def test_phases_switch_in_place_and_export(train_inputs, tmp_path):
    recipe_path, _ = train_inputs
    recipe = load_recipe(recipe_path)
    env = distributed.init_distributed("cpu")
    trainer = train.Trainer(recipe, tmp_path, env, train.TrainOptions(progress=False, tensorboard=False))
    optimizer, model = trainer.optimizer, trainer.model
    assert trainer.run() == 0
    assert trainer.optimizer is optimizer and trainer.model is model  # nothing rebuilt at phase changes
    records = read_metrics(tmp_path)
    # The optimizer's step counter ran through all phases (its moments were never reset).
    assert int(optimizer.param_groups[0]["step"]) == len(records)

    starts = dict(zip([p.name for p in recipe.phases], recipe.phase_starts(), strict=True))
    by_phase = {p.name: [r for r in records if r["phase"] == p.name] for p in recipe.phases}
    for phase in recipe.phases:
        rows = by_phase[phase.name]
        assert {(r["mask_rate"], r["tau"], r["seq_len"]) for r in rows} == {
            (phase.mask_rate, phase.tau, phase.seq_len)
        }
        # A step never straddles a phase boundary: the phase's first step starts at or after its start.
        assert rows[0]["tokens"] - rows[0]["batch_tokens"] >= starts[phase.name]
        assert rows[-1]["tokens"] >= starts[phase.name] + phase.tokens
        assert all(r["batch_tokens"] % phase.seq_len == 0 for r in rows)
    # Batch-size warmup: the first steps are smaller than the full batch.
    assert records[0]["batch_tokens"] < records[-2]["batch_tokens"] == 128
    # LR: warmup from ~0, then the one_minus_sqrt decay ends at 2% of the peak.
    assert records[0]["lr"] < 3e-3 and records[-1]["lr"] == pytest.approx(0.02 * 3e-3, rel=1e-6)
    assert all(math.isfinite(r["loss"]) for r in records)
    # Language shares every 10 steps and at each phase end, over the tokens since the last report.
    ends = {by_phase[p.name][-1]["step"] for p in recipe.phases}
    reported = [r for r in records if "lang_shares" in r]
    assert {r["step"] for r in reported} == {r["step"] for r in records if r["step"] % 10 == 0} | ends
    assert all(sum(r["lang_shares"].values()) == pytest.approx(1.0) for r in reported)
    assert set(by_phase["pre"][-1]["lang_shares"]) <= {"aaa_Latn", "bbb_Latn"}

    from mmbert.model import MmBertForMaskedLM
    from mmbert.tokenizer import load_tokenizer

    for phase, theta in (("pre", 10_000.0), ("mid", 160_000.0), ("decay", 160_000.0)):
        export = tmp_path / "export" / phase
        model = MmBertForMaskedLM.from_pretrained(export)
        assert model.config.global_rope_theta == theta == model.config.local_rope_theta
        assert len(load_tokenizer(export)) == model.config.vocab_size
    # The last phase-end checkpoints are kept beside the newest periodic ones.
    names = [c.path.name for c in ckpt.list_checkpoints(tmp_path)]
    assert sum("-end-" in n for n in names) == 3
    assert len([n for n in names if "-end-" not in n]) <= 2
    # Rerunning a finished run does nothing.
    assert run_main(recipe_path, "--out", tmp_path) == 0
    assert len(read_metrics(tmp_path)) == len(records)


def test_decay_variants_share_the_pre_decay_checkpoint(train_inputs, tmp_path):
    _, recipe = train_inputs
    assert run_main(recipe, "--out", tmp_path, "--variant", "eng") == 0
    shared = read_metrics(tmp_path)
    assert {r["phase"] for r in shared} == {"pre", "mid"}
    pre_decay = ckpt.phase_end_checkpoint(tmp_path, "mid")
    assert pre_decay is not None
    eng = read_metrics(tmp_path / "variants" / "eng")
    assert eng[0]["step"] == shared[-1]["step"] + 1 and {r["phase"] for r in eng} == {"decay"}
    # Only aaa_Latn is drawn; the packer may carry the rest of one mid-training document (of up to ~200
    # tokens, a large part of this 300-token phase) into the phase: one other language at most.
    shares = eng[-1]["lang_shares"]
    assert shares["aaa_Latn"] > 0.25 and len(set(shares) - {"aaa_Latn"}) <= 1
    # A second variant, run later (as on another machine), reuses the shared checkpoint: no retraining.
    assert run_main(recipe, "--out", tmp_path, "--variant", "all") == 0
    assert read_metrics(tmp_path) == shared
    other = read_metrics(tmp_path / "variants" / "all")
    assert other[0]["step"] == eng[0]["step"] and other[0]["tokens"] == eng[0]["tokens"]
    # The decay-only language is drawn by decay-all, never by decay-eng.
    drawn = {
        name: set().union(*(r.get("lang_shares") or {} for r in rows))
        for name, rows in (("eng", eng), ("all", other))
    }
    assert "ddd_Grek" in drawn["all"] and "ddd_Grek" not in drawn["eng"]
    assert drawn["all"] <= {"aaa_Latn", "bbb_Latn", "ccc_Cyrl", "ddd_Grek"}
    for name in ("eng", "all"):
        export = tmp_path / "variants" / name / "export" / "decay"
        assert (export / "model.safetensors").exists() and (export / "tokenizer.json").exists()
    assert run_main(recipe, "--out", tmp_path, "--variant", "nope") == 2


def test_nonfinite_losses_are_skipped_then_stop_the_run(train_inputs, tmp_path, monkeypatch):
    recipe, _ = train_inputs
    forward = MmBertForMaskedLM.forward
    calls = {"n": 0}

    def flaky(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3 or calls["n"] >= 6:  # one bad step, then bad forever
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(MmBertForMaskedLM, "forward", flaky)
    assert run_main(recipe, "--out", tmp_path, "--max-nonfinite-steps", "2") == 3
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records if r.get("skipped")] == [3, 6, 7, 8]
    assert not records[3].get("skipped") and math.isfinite(records[3]["loss"])
    # The last checkpoint precedes the bad streak and holds finite weights.
    latest = ckpt.latest(tmp_path)
    assert ckpt.read_train_state(latest)["trainer"]["step"] <= 5
    model = MmBertForMaskedLM(MmBertConfig(**ckpt.read_train_state(latest)["run"]["model_config"]))
    ckpt.load_model_weights(latest, model)
    assert all(torch.isfinite(t).all() for t in model.state_dict().values())


def test_init_from_hf_export(train_inputs, tmp_path):
    from mmbert.model import MmBertForMaskedLM

    recipe_path, _ = train_inputs
    recipe = load_recipe(
        recipe_path,
        ["phases.0.tokens=128", "phases.0.warmup_tokens=0", "phases.1.tokens=64", "phases.2.tokens=64"],
    )
    env = distributed.init_distributed("cpu")
    options = train.TrainOptions(progress=False, tensorboard=False)
    train.Trainer(recipe, tmp_path / "a", env, options).run()
    export = tmp_path / "a" / "export" / "decay"
    trainer = train.Trainer(recipe, tmp_path / "b", env, options, init_from=export)
    expected = MmBertForMaskedLM.from_pretrained(export).state_dict()
    got = trainer.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.items())
    assert trainer.step == 0 and trainer.tokenizer_dir == export
    trainer.close()


def test_tensorboard_events_log_lines_and_progress_bars(train_inputs, tmp_path, capsys):
    """What a run reports besides metrics.jsonl: TensorBoard scalars of every step, one log line per
    step (`metrics.step_line`), and a progress bar per phase in tokens."""
    # tensorboard takes seconds to import: only this test pays
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe, _ = train_inputs
    short = ["phases.0.tokens=256", "phases.0.warmup_tokens=64", "phases.1.tokens=128", "phases.2.tokens=128"]
    capsys.readouterr()
    assert cli_main(["train", str(recipe), "--out", str(tmp_path), *short]) == 0
    err = capsys.readouterr().err
    records = read_metrics(tmp_path)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    for key in ("loss", "lr", "tokens"):
        scalars = events.Scalars(f"train/{key}")
        assert [e.step for e in scalars] == [r["step"] for r in records], key
        assert [e.value for e in scalars] == pytest.approx([r[key] for r in records], rel=1e-6), key
    assert {f"lang_share/{lang}" for lang in records[-1]["lang_shares"]} <= set(events.Tags()["scalars"])
    lines = [line for line in err.splitlines() if " | step " in line]
    assert len(lines) == len(records)
    for line, record in zip(lines, records, strict=True):
        assert line.endswith(step_line(record)), (line, record)
    assert re.fullmatch(
        r"pre \| step 1 \| tokens 64 \| loss \d+\.\d{4} \| lr \d\.\d\de-\d\d \| mask 0\.30 \| tau 0\.70 \| "
        r"\d+ tok/s \| mfu (\d+\.\d%|-)",
        step_line(records[0]),
    )
    for phase in (
        "pre",
        "mid",
        "decay",
    ):  # tqdm: "pre: 100%|...| 256/256 [00:01<00:00, 180tok/s, loss 5.1234]"
        pattern = rf"{phase}: 100%\|.*\| \d+(\.\d+)?k?/\d+(\.\d+)?k? \[[^]]*tok/s, loss \d+\.\d{{4}}\]"
        assert re.search(pattern, err), phase


def test_metrics_log_drops_lines_past_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        "".join(json.dumps({"step": i, "loss": 1.0}) + "\n" for i in range(1, 6)) + '{"step": 6, "lo'
    )
    log = MetricsLog(path, resume_step=3)
    log.write({"step": 4, "loss": 2.0})
    log.close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4]


def test_optimizer_excludes_norms_and_biases_from_weight_decay(tiny_config):
    from mmbert.model import MmBertForMaskedLM
    from mmbert.recipe import Recipe

    model = MmBertForMaskedLM(tiny_config)
    for name, kind in (("stable_adamw", "StableAdamW"), ("adamw", "AdamW")):
        recipe = Recipe.from_dict({"phases": [{"name": "p", "tokens": 10}], "train": {"optimizer": name}})
        first = recipe.phases[0]
        opt = build_optimizer(model, recipe.train, first.lr, first.weight_decay)
        assert type(opt).__name__ == kind
        decay, no_decay = opt.param_groups
        names = {id(p): n for n, p in model.named_parameters()}
        assert all("norm" in names[id(p)] or names[id(p)].endswith("bias") for p in no_decay["params"])
        assert {names[id(p)] for p in decay["params"]} >= {"model.embeddings.tok_embeddings.weight"}
        assert no_decay["weight_decay"] == 0 and decay["weight_decay"] > 0
        n_params = sum(len(g["params"]) for g in opt.param_groups)
        assert n_params == len({id(p) for p in model.parameters()})  # the tied decoder counted once


def test_attention_pairs_match_brute_force():
    for lengths, window in (([5, 40, 17], 8), ([1, 2, 100], 64), ([9], 8)):
        brute = sum(sum(1 for i in range(n) for j in range(n) if abs(i - j) <= window) for n in lengths)
        assert doc_attention_pairs(lengths, window) == brute
        assert doc_attention_pairs(lengths, None) == sum(n * n for n in lengths)


def test_dry_run_prints_recipe_and_plan(train_inputs, capsys):
    _, recipe = train_inputs
    assert cli_main(["train", str(recipe), "--dry-run", "phases.0.tau=0.6"]) == 0
    out = capsys.readouterr().out
    assert "tau: 0.6" in out and "# pre:" in out and "decay variants: eng, all" in out
    assert cli_main(["train", str(recipe), "--dry-run", "phases.0.nope=1"]) == 2


def test_limits_and_bad_model_keys_fail_when_the_recipe_loads(train_inputs, tmp_path, capsys):
    """In --dry-run too: a seq_len beyond the model's positions (the recipe's preset, or --init-from's
    config), a phase shorter than a step of the phase before (it would be skipped), a bad model key."""
    recipe, _ = train_inputs

    def error(*args: str) -> str:
        assert cli_main(["train", str(recipe), "--dry-run", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"mmbert train: error: {recipe}: ")
        return err

    assert "phases[2].seq_len: 1024 is more than the model's max_position_embeddings (512)" in error(
        "phases.2.seq_len=1024"
    )
    assert "phases[2].tokens: 50 is less than one row per rank of the phase before" in error(
        "phases.2.tokens=50"
    )
    assert "model.hidden_size: 'big' is not a count" in error("model.hidden_size=big")
    assert "model.num_attention_heads" in error("model.num_attention_heads=0")
    assert "model.hiden_size: not a model config field" in error("model.hiden_size=64")
    # --init-from: the model's own limit counts, not the recipe's preset.
    longer = save_tiny(tmp_path / "long", ["a b c d"], max_position_embeddings=2048)
    assert (
        cli_main(["train", str(recipe), "--dry-run", "phases.2.seq_len=1024", "--init-from", str(longer)])
        == 0
    )
    capsys.readouterr()
    assert "of " + str(longer) in error("phases.2.seq_len=4096", "--init-from", str(longer))


def test_out_is_never_an_input_or_a_foreign_directory(train_inputs, tmp_path, capsys):
    recipe_path, _ = train_inputs
    recipe = load_recipe(recipe_path)
    foreign = dir_with(tmp_path / "mine", "notes.txt", "x")
    for out in (recipe.data[0], recipe.tokenizer, foreign, Path(recipe.data[0]).parent):
        assert run_main(recipe_path, "--out", out) == 2
        err = capsys.readouterr().err
        assert (
            "would overwrite the input" in err or "non-empty directory that this command did not write" in err
        )
    assert (foreign / "notes.txt").read_text() == "x" and not (foreign / "checkpoints").exists()


def test_data_and_tokenizer_must_agree(train_inputs, tmp_path, capsys):
    """The run's tokenizer is the one the data was cut with, or the run stops before its first step."""
    recipe_path, _ = train_inputs
    recipe = load_recipe(recipe_path)
    manifest = Path(recipe.data[0]) / "manifest.json"
    recorded = json.loads(manifest.read_text())["tokenizer"]
    # a larger tokenizer (other ids for the same text) and a smaller one
    for vocab_size in (400, 280):
        other = make_tokenizer(
            tmp_path / f"tok{vocab_size}", [t for _, t in fake_documents(seed=1)], vocab_size
        )
        assert run_main(recipe_path, "--out", tmp_path / "run", f"tokenizer={other}") == 2
        err = capsys.readouterr().err
        assert f"{manifest}: the data was prepared with tokenizer {recorded['path']}" in err
        assert f"fingerprint {recorded['fingerprint']}" in err and f"this run's tokenizer is {other}" in err
        assert [p.name for p in (tmp_path / "run").iterdir()] == [LOCK_FILE]  # nothing but the run's lock
    # a tokenizer whose special tokens sit at other ids
    odd = make_gemma_like_tokenizer(tmp_path / "odd", [t for _, t in fake_documents()], 300,
                                    specials=("<bos>", "<pad>", "<eos>", "<unk>", "<mask>"))  # fmt: skip
    assert run_main(recipe_path, "--out", tmp_path / "run", f"tokenizer={odd}") == 2
    assert (
        f"tokenizer {odd}: pad token '<pad>' has id 1, mmBERT's layout needs id 0" in capsys.readouterr().err
    )
    # a model whose vocabulary is smaller than its tokenizer
    small = tmp_path / "small"
    MmBertForMaskedLM(MmBertConfig.preset("tiny", vocab_size=100)).save_pretrained(small)
    shutil.copy(Path(recipe.tokenizer) / "tokenizer.json", small / "tokenizer.json")
    assert run_main(recipe_path, "--out", tmp_path / "run", "--init-from", small) == 2
    assert f"tokenizer {small} has {recorded['vocab_size']} ids, the model's vocabulary only 100" in (
        capsys.readouterr().err
    )


def test_token_ids_outside_the_vocabulary_never_reach_the_model(train_inputs, tmp_path, capsys):
    recipe_path, _ = train_inputs
    data = tmp_path / "data"
    shutil.copytree(Path(load_recipe(recipe_path).data[0]), data)
    (shard,) = sorted(data.glob("web/*.tokens.npy"))
    tokens = np.load(shard)
    tokens[len(tokens) // 2] = 70_000
    np.save(shard, tokens)
    # A manifest from before id ranges were recorded: checked (and upgraded) once, before the first step.
    manifest = json.loads((data / "manifest.json").read_text())
    for entry in manifest["sources"]["web"].values():
        del entry["ids"]
    (data / "manifest.json").write_text(json.dumps(manifest))
    assert run_main(recipe_path, "--out", tmp_path / "run", f"data=[{data}]") == 2
    err = capsys.readouterr().err
    assert f"{shard}: token id 70000 is outside the model's vocabulary of" in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists() or not read_metrics(tmp_path / "run")


def test_from_phase_starts_the_schedule_there_from_a_composer_checkpoint(train_inputs, tmp_path, capsys):
    """`--init-from CKPT.pt --from-phase decay --variant V`: mmBERT's decay from its end-of-mid checkpoint."""
    _, recipe_path = train_inputs
    recipe = load_recipe(recipe_path)
    torch.manual_seed(3)
    vocab = read_tokenizer_files(recipe.tokenizer).vocab_size
    model = MmBertForMaskedLM(MmBertConfig.preset("tiny", vocab_size=vocab))
    pt = write_composer_checkpoint(tmp_path / "ext.pt", model.state_dict())
    env = distributed.init_distributed("cpu")
    options = train.TrainOptions(progress=False, tensorboard=False)
    trainer = train.Trainer(
        recipe.with_variant("all"), tmp_path / "x", env, options, init_from=pt, from_phase="decay"
    )
    starts = recipe.phase_starts()
    assert trainer.tokens == starts[2] and trainer.phase.name == "decay" and trainer.step == 0
    got = trainer.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in model.state_dict().items())
    assert trainer.tokenizer_dir == Path(recipe.tokenizer)
    trainer.close()

    out = tmp_path / "run"
    args = [recipe_path, "--out", out, "--init-from", pt, "--from-phase", "decay", "--variant", "all"]
    assert run_main(*args) == 0
    records = read_metrics(out / "variants" / "all")
    assert {r["phase"] for r in records} == {"decay"}
    assert records[0]["tokens"] == starts[2] + records[0]["batch_tokens"] and records[0]["step"] == 1
    assert records[-1]["tokens"] >= recipe.total_tokens and records[-1]["lr"] == pytest.approx(0.02 * 3e-3)
    assert sorted(p.name for p in (out / "variants" / "all" / "export").iterdir()) == ["decay"]
    assert not ckpt.list_checkpoints(out) and not (out / "variants" / "eng").exists()  # nothing else ran
    assert run_main(*args) == 0 and len(read_metrics(out / "variants" / "all")) == len(
        records
    )  # resumes: done
    # from the phase before the variants: the shared phase runs from the checkpoint, then the variant
    assert run_main(*args[:6], "mid", "--variant", "eng", "--out", tmp_path / "mid") == 0
    shared = read_metrics(tmp_path / "mid")
    assert {r["phase"] for r in shared} == {"mid"} and shared[0]["tokens"] > starts[1]
    assert read_metrics(tmp_path / "mid" / "variants" / "eng")[0]["step"] == shared[-1]["step"] + 1
    assert run_main(*args[:6], "decay", "--dry-run") == 0
    assert "# pre: skipped (--from-phase decay)" in capsys.readouterr().out
    assert run_main(recipe_path, "--out", tmp_path / "y", "--from-phase", "decay") == 2
    assert "--from-phase: needs --init-from" in capsys.readouterr().err
    assert run_main(*args[:6], "nope", "--out", tmp_path / "z") == 2
    assert "no phase 'nope' (phases: pre, mid, decay)" in capsys.readouterr().err
