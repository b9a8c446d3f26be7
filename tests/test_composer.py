"""ModernBERT training checkpoints (Composer `.pt`): read without running pickled code, converted to HF
format with transformers' logits, in bf16, without a head, with extra entries; errors name the file."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForMaskedLM

from mmbert import MmBertConfig, MmBertForMaskedLM, cli
from mmbert.composer import (
    CheckpointError,
    ComposerCheckpoint,
    infer_config,
    load_checkpoint_model,
    read_composer_checkpoint,
)
from mmbert.weights import SkippedObject, load_pickled, read_safetensors_header
from tests.helpers.composer import ComposerTimestamp, RunsCode, composer_names, write_composer_checkpoint
from tests.helpers.exports import hf_model, real_logits
from tests.helpers.files import dir_with
from tests.helpers.model import ragged_batch


def test_load_pickled_rebuilds_data_and_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    obj = {
        "t": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3),
        "np": np.random.default_rng(0).integers(0, 9, (3, 2), dtype=np.uint32),
        "scalar": np.float64(1.5),
        "rng": (random.getstate(), np.random.get_state()),
        "misc": [b"bytes", {1, 2}, frozenset({3}), 2 + 1j, torch.Size([2]), torch.float16, None],
        "unknown": ComposerTimestamp(7),
        "evil": [RunsCode(marker)],
    }
    for legacy in (False, True):
        path = tmp_path / f"obj-{legacy}.pt"
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
        loaded, skipped = load_pickled(path)
        assert not marker.exists()
        assert sorted(set(skipped)) == ["io.open", "tests.helpers.composer.ComposerTimestamp"]
        assert isinstance(loaded["unknown"], SkippedObject) and isinstance(loaded["evil"][0], SkippedObject)
        assert torch.equal(loaded["t"], obj["t"]) and loaded["t"].dtype == torch.bfloat16
        np.testing.assert_array_equal(loaded["np"], obj["np"])
        assert loaded["scalar"] == 1.5 and loaded["misc"] == obj["misc"]
        assert loaded["rng"][0] == obj["rng"][0]
        np.random.set_state(loaded["rng"][1])  # a NumPy RNG state that NumPy takes back
        np.testing.assert_array_equal(loaded["rng"][1][1], obj["rng"][1][1])


def _checkpoint(tmp_path, seed=0, **config):
    ref = hf_model(seed=seed, **config)
    marker = tmp_path / "pwned"
    path = write_composer_checkpoint(tmp_path / "ep1-ba100-rank0.pt", ref.state_dict(), marker=marker)
    return ref, path, marker


def test_convert_composer_checkpoint_gives_transformers_logits(tmp_path, caplog, capsys):
    ref, path, marker = _checkpoint(tmp_path)
    out = tmp_path / "hf"
    with caplog.at_level(logging.WARNING):
        assert cli.main(["convert", str(path), "--out", str(out)]) == 0  # the tiny preset matches the shapes
    assert not marker.exists()
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert (
        "tests.helpers.composer.ComposerTimestamp x1" in warned
        and "io.open x1" in warned
        and "never executed" in warned
    )
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "4 layers, hidden 64" in printed and "RoPE 160000/10000" in printed
    ids, mask = ragged_batch(vocab=1024)
    expected = real_logits(ref, ids, mask)
    theirs = AutoModelForMaskedLM.from_pretrained(out).eval()
    torch.testing.assert_close(real_logits(theirs, ids, mask), expected, atol=1e-4, rtol=1e-4)
    ours = MmBertForMaskedLM.from_pretrained(out)
    torch.testing.assert_close(real_logits(ours, ids, mask), expected, atol=1e-4, rtol=1e-4)
    direct = load_checkpoint_model(path)  # what `train --init-from` and `merge` read
    torch.testing.assert_close(real_logits(direct, ids, mask), expected, atol=1e-4, rtol=1e-4)
    # rerunning into the same directory is refused; a preset that gives other thetas is taken
    assert cli.main(["convert", str(path), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    args = [
        "convert",
        str(path),
        "--out",
        str(out),
        "--overwrite",
        "--preset",
        "tiny",
        "local_rope_theta=5000",
    ]
    assert cli.main(args) == 0
    assert json.loads((out / "config.json").read_text())["local_rope_theta"] == 5000


def test_bf16_checkpoint_without_head_with_extra_entries(tmp_path, caplog):
    ref, path, _ = _checkpoint(tmp_path, seed=1)
    sd = {k: v.to(torch.bfloat16) for k, v in ref.state_dict().items() if k.startswith("model.")}
    sd["model.layers.0.attn.rotary_emb.inv_freq"] = torch.ones(8)  # a recomputed buffer
    sd["model.teacher.proj.weight"] = torch.ones(2, 2)  # not a weight of the model at all
    write_composer_checkpoint(path, sd)
    ckpt = read_composer_checkpoint(path)
    assert ckpt.dtype == torch.bfloat16 and "model.layers.0.attn.rotary_emb.inv_freq" in ckpt.skipped_keys
    with caplog.at_level(logging.WARNING):
        assert cli.main(["convert", str(path), "--out", str(tmp_path / "hf"), "--preset", "tiny"]) == 0
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "model.teacher.proj.weight" in warned and "head.dense.weight" in warned and "afresh" in warned
    header, _ = read_safetensors_header(tmp_path / "hf" / "model.safetensors")
    assert header["model.layers.1.mlp.Wi.weight"]["dtype"] == "BF16"
    # the encoder is the bf16 weights exactly: transformers' encoder on the same values agrees
    encoder = AutoModel.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    reference = hf_model(seed=1).model
    with torch.no_grad():
        for p in reference.parameters():
            p.copy_(p.to(torch.bfloat16).float())
        ids, mask = ragged_batch(vocab=1024, seed=2)
        got = encoder(input_ids=ids, attention_mask=mask).last_hidden_state[mask.bool()]
        want = reference(input_ids=ids, attention_mask=mask).last_hidden_state[mask.bool()]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    ours = MmBertForMaskedLM.from_pretrained(tmp_path / "hf")  # a full MLM: the head initialized afresh
    assert torch.isfinite(ours(ids, attention_mask=mask).logits).all()


def test_shapes_come_from_the_tensors(tmp_path, caplog):
    # untied decoder, biases, a hidden size no preset has: the tensors decide, the preset the rest
    ref = hf_model(seed=2, hidden_size=96, num_attention_heads=6, tie_word_embeddings=False, mlp_bias=True)
    path = write_composer_checkpoint(tmp_path / "x.pt", ref.state_dict())
    ckpt = read_composer_checkpoint(path)
    with pytest.raises(CheckpointError, match="no preset has hidden size 96.*--preset"):
        infer_config(ckpt)
    with caplog.at_level(logging.WARNING):
        config = infer_config(ckpt, "tiny")
    assert "hidden_size 64 -> 96" in caplog.text
    assert (config.hidden_size, config.num_attention_heads, config.tie_word_embeddings, config.mlp_bias) == (
        96, 6, False, True,
    )  # fmt: skip
    ids, mask = ragged_batch(vocab=1024, seed=4)
    model = load_checkpoint_model(path, "tiny")
    torch.testing.assert_close(
        real_logits(model, ids, mask), real_logits(ref, ids, mask), atol=1e-4, rtol=1e-4
    )


def test_convert_refuses_nan_weights(tmp_path, capsys):
    ref = hf_model(seed=3)
    state = ref.state_dict()
    state["model.layers.1.attn.Wqkv.weight"][0, :3] = float("inf")
    path = write_composer_checkpoint(tmp_path / "x.pt", state)
    assert cli.main(["convert", str(path), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "model.layers.1.attn.Wqkv.weight has 0 NaN and 3 infinite values" in err
    assert not (tmp_path / "hf").exists()


def test_a_killed_converts_nested_temporary_is_removed_by_the_next_run(tmp_path):
    """convert writes the model inside its temporary directory through another temporary beside it
    (`..hf.<pid>.<x>.tmp.<pid>.<y>.tmp`): a kill leaves both, and the next convert removes both."""
    _, path, _ = _checkpoint(tmp_path)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    outer = tmp_path / f".hf.{pid}.k1ll3d.tmp"
    nested = tmp_path / f".{outer.name}.{pid}.n3st3d.tmp"
    for leftover in (outer, nested):
        leftover.mkdir()
        (leftover / "model.safetensors").write_bytes(b"\0" * 4096)
    assert cli.main(["convert", str(path), "--out", str(tmp_path / "hf")]) == 0
    assert not outer.exists() and not nested.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_convert_and_merge_errors_name_what_to_do(tmp_path, capsys):
    """An unknown KEY=VALUE names the key and the known ones; a merge of a checkpoint no preset fits
    points to `convert --preset` (merge has no such option); a model directory is not a checkpoint."""
    ref = hf_model(seed=2, hidden_size=96, num_attention_heads=6)
    path = write_composer_checkpoint(tmp_path / "x.pt", ref.state_dict())
    assert (
        cli.main(["convert", str(path), "--out", str(tmp_path / "a"), "--preset", "tiny", "hiden_size=3"])
        == 2
    )
    err = capsys.readouterr().err
    assert "unknown model config key hiden_size; the keys are" in err and "hidden_size," in err
    assert cli.main(["merge", "--method", "linear", "--models", str(path), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "`mmbert convert CKPT --preset NAME`" in err.splitlines()[-1]
    ref.save_pretrained(tmp_path / "hfdir")
    assert cli.main(["convert", str(tmp_path / "hfdir"), "--out", str(tmp_path / "c")]) == 2
    assert "is an HF model directory, not a checkpoint file" in capsys.readouterr().err


@pytest.mark.parametrize("preset, params", [("mmbert-small", 140_897_536), ("mmbert-base", 307_786_240)])
def test_released_shapes_pick_their_preset(preset, params):
    """mmBERT's checkpoints: the preset is found from the shapes and gives heads, window, thetas, context."""
    with torch.device("meta"):  # shapes only: no memory for 256k x 768 embeddings
        model = MmBertForMaskedLM(MmBertConfig.preset(preset))
    tensors = {k: v for k, v in model.state_dict().items() if k != "decoder.weight"}
    config = infer_config(ComposerCheckpoint(Path(f"{preset}.pt"), tensors))
    assert config == MmBertConfig.preset(preset) and config.num_parameters() == params


def test_wrapped_names(tmp_path):
    """transformers' names inside a wrapper's `model.`, DDP's `module.`, torch.compile's `_orig_mod.`."""
    ref = hf_model(seed=5)
    ids, mask = ragged_batch(vocab=1024, seed=6)
    expected = real_logits(ref, ids, mask)
    wrapped = {
        "hf": {f"model.{k}": v for k, v in ref.state_dict().items()},
        "ddp": {f"module.{k}": v for k, v in composer_names(ref.state_dict()).items()},
        "compiled": {k.replace("model.bert.", "model._orig_mod.bert."): v for k, v in composer_names(ref.state_dict()).items()},
    }  # fmt: skip
    for name, model in wrapped.items():
        torch.save({"state": {"model": model}}, tmp_path / f"{name}.pt")
        loaded = load_checkpoint_model(tmp_path / f"{name}.pt")
        torch.testing.assert_close(real_logits(loaded, ids, mask), expected, atol=1e-4, rtol=1e-4, msg=name)


def test_not_a_modernbert_checkpoint(tmp_path, capsys):
    torch.save({"state": {"model": {"encoder.weight": torch.ones(2)}}}, tmp_path / "a.pt")
    assert cli.main(["convert", str(tmp_path / "a.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "a.pt: not a ModernBERT checkpoint: no token embeddings" in capsys.readouterr().err
    torch.save({"state": {"optimizers": {}}}, tmp_path / "b.pt")
    assert cli.main(["convert", str(tmp_path / "b.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "b.pt: no model weights" in capsys.readouterr().err
    (tmp_path / "c.pt").write_bytes(b"not a checkpoint")
    assert cli.main(["convert", str(tmp_path / "c.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "c.pt: cannot read as a PyTorch checkpoint" in capsys.readouterr().err
    sd = composer_names(hf_model().state_dict())
    sd["model.bert.encoder.layers.1.mlp.Wi.weight"] = torch.ones(3, 3)
    torch.save({"state": {"model": sd}}, tmp_path / "d.pt")
    assert cli.main(["convert", str(tmp_path / "d.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "model.layers.1.mlp.Wi.weight has shape (3, 3)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_convert_never_replaces_an_input_and_writes_its_output_whole(tmp_path, capsys, monkeypatch):
    _, path, _ = _checkpoint(tmp_path)
    tok = dir_with(tmp_path / "tok", "tokenizer.json", "mine")
    foreign = dir_with(tmp_path / "home", "notes.txt", "mine")
    for out, message in [
        (tmp_path, f"--out {tmp_path} would overwrite the input {path}"),
        (tok, f"--out {tok} would overwrite the input {tok}"),
        (foreign, f"{foreign} already exists; pass --overwrite"),
    ]:
        assert cli.main(["convert", str(path), "--out", str(out), "--tokenizer", str(tok)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    for out in (tmp_path, tok):  # --overwrite into the folder holding the .pt or the tokenizer: refused too
        assert (
            cli.main(["convert", str(path), "--out", str(out), "--tokenizer", str(tok), "--overwrite"]) == 2
        )
        assert "would overwrite the input" in capsys.readouterr().err
    assert (
        path.is_file()
        and (tok / "tokenizer.json").read_text() == (foreign / "notes.txt").read_text() == "mine"
    )
    # --overwrite of an earlier output that fails half-way: the old output stays whole, no temporary is left.
    out = tmp_path / "hf"
    assert cli.main(["convert", str(path), "--out", str(out)]) == 0
    before = {f.name: f.read_bytes() for f in out.iterdir()}

    def disk_full(self, directory):
        (Path(directory) / "model.safetensors").write_bytes(b"partial")
        raise OSError(f"{directory}: No space left on device")

    monkeypatch.setattr(MmBertForMaskedLM, "save_pretrained", disk_full)
    assert cli.main(["convert", str(path), "--out", str(out), "--overwrite"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
