"""Tests for `mmbert merge`: TIES/linear/EMA arithmetic against hand computations, the streamed
directory merge against the in-memory one, and a CLI round trip that transformers reloads."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mmbert import cli
from mmbert.merge import (
    DECODER_KEY,
    EMBEDDING_KEY,
    MergeError,
    ema_weights,
    merge_dirs,
    merge_ema,
    merge_linear,
    merge_ties,
)
from mmbert.weights import SafetensorsWriter, TensorInfo
from tests.helpers.composer import write_composer_checkpoint
from tests.helpers.exports import make_tiny_export
from tests.helpers.model import TINY

# ----------------------------------------------------------------------------------------------
# Arithmetic on hand-written tensors.


def test_ties_against_hand_computation():
    base = {"x": torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])}
    # Task vectors (powers of two, so every value below is exact in fp32).
    d1 = torch.tensor([0.5, -1.0, 0.125, 2.0, 0.0625, 0.25])
    d2 = torch.tensor([0.25, 0.75, -0.0625, -1.5, 1.0, 0.125])
    models = [{"x": base["x"] + d1}, {"x": base["x"] + d2}]
    # density 0.5 of 6 entries: each vector keeps its 3 largest magnitudes.
    #   trim(d1) = [0.5, -1, 0, 2, 0, 0]         trim(d2) = [0, 0.75, 0, -1.5, 1, 0]
    # weights (1, 2): weighted sum = [0.5, 0.5, 0, -1, 2, 0] -> elected signs [+, +, +, -, +, +]
    #   entry 0: only d1 kept                 -> 0.5 / 1
    #   entry 1: signs disagree, + wins       -> 2 * 0.75 / 2 = 0.75 (d1's -1 is dropped)
    #   entry 2: every vector trimmed         -> stays at the base
    #   entry 3: disagree, - wins             -> 2 * -1.5 / 2 = -1.5
    #   entry 4: only d2 kept                 -> 2 * 1 / 2 = 1
    #   entry 5: every vector trimmed         -> base
    merged = merge_ties(base, models, weights=[1.0, 2.0], density=0.5)
    expected = torch.tensor([1.5, 2.75, 3.0, 2.5, 6.0, 6.0])
    assert torch.equal(merged["x"], expected)


def test_ties_weighted_mean_of_agreeing_vectors():
    base = {"w": torch.zeros(2, 2)}
    models = [
        {"w": torch.tensor([[1.0, -2.0], [4.0, 2.0]])},
        {"w": torch.tensor([[3.0, 1.0], [-1.0, 0.0]])},
        {"w": torch.tensor([[2.0, -1.0], [-2.0, -1.0]])},
    ]
    # density 1: nothing trimmed. weights (1, 1, 2):
    #   [0,0]: all +            -> (1 + 3 + 4) / 4 = 2
    #   [0,1]: sum -2+1-2 < 0   -> (-2 - 2) / (1 + 2) = -4/3
    #   [1,0]: sum 4-1-4 < 0    -> (-1 - 4) / (1 + 2) = -5/3
    #   [1,1]: sum 2+0-2 = 0    -> elected + (0 counts as +); the 0 has no sign -> 2 / 1
    merged = merge_ties(base, models, weights=[1.0, 1.0, 2.0], density=1.0)
    expected = torch.tensor([[2.0, -4.0 / 3.0], [-5.0 / 3.0, 2.0]])
    torch.testing.assert_close(merged["w"], expected)


def test_ties_density_ties_are_kept_in_row_major_order():
    base = {"x": torch.zeros(2, 3)}
    model = {"x": torch.tensor([[1.0, -3.0, 1.0], [1.0, 1.0, 0.5]])}
    # k = int(0.5 * 6) = 3: the -3, then the first two of the four tied 1.0s.
    merged = merge_ties(base, [model], density=0.5)
    assert torch.equal(merged["x"], torch.tensor([[1.0, -3.0, 1.0], [0.0, 0.0, 0.0]]))


def _reference_ties(base, models, weights, density):
    """A direct, whole-tensor transcription of the TIES steps (continuous values: no magnitude ties)."""
    deltas = torch.stack([m - base for m in models])  # (M, *shape)
    k = int(density * base.numel())
    trimmed = []
    for d in deltas:
        keep = torch.zeros(d.numel(), dtype=torch.bool)
        keep[d.abs().flatten().topk(k).indices] = True
        trimmed.append(d * keep.view(d.shape))
    w = torch.tensor(weights).view(-1, *([1] * base.dim()))
    weighted = torch.stack(trimmed) * w
    elected = torch.where(weighted.sum(0) >= 0, 1.0, -1.0)
    agree = weighted.sign() == elected
    total = (weighted * agree).sum(0)
    divisor = (w * agree).sum(0)
    return base + total / torch.where(divisor == 0, 1.0, divisor)


def test_ties_matches_direct_transcription():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(16, 12, generator=g)
    models = [base + torch.randn(16, 12, generator=g) for _ in range(3)]
    merged = merge_ties({"w": base}, [{"w": m} for m in models], weights=[0.5, 1.0, 2.0], density=0.3)
    torch.testing.assert_close(merged["w"], _reference_ties(base, models, [0.5, 1.0, 2.0], 0.3))


def test_merging_identical_models_returns_that_model():
    g = torch.Generator().manual_seed(1)
    model = {"a": torch.randn(5, 4, generator=g), "b": torch.randn(7, generator=g)}
    other = {k: v + torch.randn(v.shape, generator=g) for k, v in model.items()}
    for merged in (
        merge_ties(model, [model, model, model], density=0.3),  # zero task vectors
        merge_ties(other, [model, model], weights=[1.0, 3.0], density=1.0),
        merge_linear([model, model, model], weights=[1.0, 2.0, 3.0]),
        merge_ema([model, model, model, model], half_life=2.0),
    ):
        assert merged.keys() == model.keys()
        for key in model:
            torch.testing.assert_close(merged[key], model[key], rtol=0, atol=1e-6)


def test_linear_one_model_is_identity():
    g = torch.Generator().manual_seed(2)
    model = {"f32": torch.randn(3, 5, generator=g), "bf16": torch.randn(9, generator=g).bfloat16()}
    merged = merge_linear([model])
    for key in model:
        assert merged[key].dtype == model[key].dtype
        assert torch.equal(merged[key], model[key])


def test_linear_normalizes_weights():
    a, b = {"x": torch.tensor([0.0, 4.0])}, {"x": torch.tensor([8.0, 0.0])}
    merged = merge_linear([a, b], weights=[3.0, 1.0])
    torch.testing.assert_close(merged["x"], torch.tensor([2.0, 3.0]))


def test_ema_against_hand_computation():
    ckpts = [{"x": torch.tensor([7.0])}, {"x": torch.tensor([14.0])}, {"x": torch.tensor([0.0])}]
    # beta = 0.5, oldest first: weights 0.25 : 0.5 : 1, normalized by 1.75 -> 1/7, 2/7, 4/7.
    assert ema_weights(3, decay=0.5) == pytest.approx([1 / 7, 2 / 7, 4 / 7])
    assert ema_weights(3, half_life=1.0) == pytest.approx([1 / 7, 2 / 7, 4 / 7])
    # half-life 2 checkpoints: beta = 1/sqrt(2); the checkpoint 2 steps older weighs half as much.
    w = ema_weights(4, half_life=2.0)
    assert w[1] == pytest.approx(w[3] / 2) and sum(w) == pytest.approx(1.0)
    torch.testing.assert_close(merge_ema(ckpts, decay=0.5)["x"], torch.tensor([(7 + 28) / 7]))
    assert torch.equal(merge_ema(ckpts, decay=0.0)["x"], ckpts[-1]["x"])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: merge_ties(m[0], m[1:], weights=[1.0]), "2 models"),
        (lambda m: merge_ties(m[0], m[1:], density=0.0), r"density must be in \(0, 1\]"),
        (lambda m: merge_ties(m[0], m[1:], density=1.5), r"density must be in \(0, 1\]"),
        (lambda m: merge_ties(m[0], [], density=0.5), "at least one model"),
        (lambda m: merge_linear(m, weights=[1.0, -1.0, 1.0]), ">= 0"),
        (lambda m: merge_ema(m, decay=1.0), r"decay must be in \[0, 1\)"),
        (lambda m: merge_ema(m), "exactly one of decay \\(--decay\\) or half_life"),
    ],
)
def test_bad_arguments_are_named(call, message):
    models = [{"x": torch.zeros(3)} for _ in range(3)]
    with pytest.raises(MergeError, match=message):
        call(models)


def test_mismatched_keys_and_shapes_are_named():
    base = {"a": torch.zeros(3), "b": torch.zeros(2, 2)}
    with pytest.raises(MergeError, match=r"missing from models\[0\]: b"):
        merge_ties(base, [{"a": torch.zeros(3)}])
    with pytest.raises(MergeError, match=r"present in models\[1\] but not in base: c"):
        merge_ties(base, [base, {**base, "c": torch.zeros(1)}])
    with pytest.raises(MergeError, match=r"shape mismatch for 'b': \[2, 2\] in base vs \[4\] in models\[0\]"):
        merge_ties(base, [{"a": torch.zeros(3), "b": torch.zeros(4)}])


def test_safetensors_writer_output_reads_back(tmp_path):
    tensors = {"b": torch.randn(3, 2).bfloat16(), "a": torch.arange(5), "e": torch.zeros(0, 4)}
    path = tmp_path / "t.safetensors"
    with open(path, "wb") as f:
        writer = SafetensorsWriter(
            f, [(k, TensorInfo(tuple(v.shape), v.dtype)) for k, v in tensors.items()], {"format": "pt"}
        )
        for key, value in tensors.items():
            flat = value.reshape(-1)
            for start in range(0, max(flat.numel(), 1), 4):
                writer.write(key, flat[start : start + 4])
        writer.close()
    loaded = load_file(path)
    assert loaded.keys() == tensors.keys()
    for key in tensors:
        assert torch.equal(loaded[key], tensors[key])


# ----------------------------------------------------------------------------------------------
# Directories and the command line.


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """A tiny base export and three perturbed variants sharing its tokenizer, in three file layouts."""
    from transformers import ModernBertForMaskedLM

    root = tmp_path_factory.mktemp("merge")
    base = make_tiny_export(root / "base")
    model = ModernBertForMaskedLM.from_pretrained(base)
    dirs = {"base": base}
    g = torch.Generator().manual_seed(3)
    for name in ("eng", "cont", "all"):
        variant = ModernBertForMaskedLM.from_pretrained(base)
        with torch.no_grad():
            for p in variant.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=g))
        path = root / name
        if name == "cont":
            variant.save_pretrained(path, max_shard_size="20KB")  # sharded safetensors + index
            assert (path / "model.safetensors.index.json").is_file()
        else:
            variant.save_pretrained(path)
        for f in base.iterdir():
            if f.name.startswith(("tokenizer", "special_tokens")):
                shutil.copy(f, path / f.name)
        dirs[name] = path
    # "all" as a pytorch_model.bin holding the tied decoder under its own name too.
    state = dict(load_file(dirs["all"] / "model.safetensors"))
    state[DECODER_KEY] = state[EMBEDDING_KEY].clone()
    (dirs["all"] / "model.safetensors").unlink()
    torch.save(state, dirs["all"] / "pytorch_model.bin")
    del model
    return dirs


def _state(directory: Path) -> dict[str, torch.Tensor]:
    from transformers import ModernBertForMaskedLM

    state = ModernBertForMaskedLM.from_pretrained(directory).state_dict()
    state.pop(DECODER_KEY)  # tied: the same tensor as the embedding
    return state


def test_cli_round_trip_reloads_in_transformers(exports, tmp_path, capsys):
    from transformers import AutoModelForMaskedLM, ModernBertConfig, ModernBertForMaskedLM

    out = tmp_path / "merged"
    variants = [exports["eng"], exports["cont"], exports["all"]]
    argv = ["merge", "--method", "ties", "--base", str(exports["base"]), "--models", *map(str, variants)]
    argv += ["--weights", "1", "1", "2", "--density", "0.4", "--out", str(out)]
    assert cli.main(argv) == 0
    assert "ties merge of 3 models" in capsys.readouterr().out
    assert {"config.json", "model.safetensors", "tokenizer.json", "merge_config.json", "README.md"} <= {
        p.name for p in out.iterdir()
    }
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind
    record = json.loads((out / "merge_config.json").read_text())
    assert record["method"] == "ties" and record["density"] == 0.4 and record["weights"] == [1.0, 1.0, 2.0]

    # Written as transformers writes it: the tied decoder is not in the file.
    written = load_file(out / "model.safetensors")
    assert DECODER_KEY not in written and EMBEDDING_KEY in written
    expected = merge_ties(
        _state(exports["base"]), [_state(v) for v in variants], weights=[1, 1, 2], density=0.4
    )
    assert written.keys() == expected.keys()
    for key in expected:
        assert torch.equal(written[key], expected[key]), key

    model, info = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.decoder.weight.data_ptr() == model.model.embeddings.tok_embeddings.weight.data_ptr()
    ours = ModernBertForMaskedLM(ModernBertConfig.from_pretrained(out))
    ours.load_state_dict({**expected, DECODER_KEY: expected[EMBEDDING_KEY]})
    ids = torch.tensor([[2, 10, 11, 12, 1, 0], [2, 13, 14, 15, 16, 1]])
    mask = (ids != 0).long()
    model.eval(), ours.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids, attention_mask=mask).logits, ours(ids, attention_mask=mask).logits
        )


def test_streamed_merge_equals_in_memory_merge(exports, tmp_path):
    # Chunks of 517 elements: thresholds and tie quotas must carry across chunk boundaries.
    models = [exports["eng"], exports["all"]]
    out = merge_dirs("ties", exports["base"], models, tmp_path / "m", density=0.3, chunk_elements=517)
    expected = merge_ties(_state(exports["base"]), [_state(m) for m in models], density=0.3)
    written = load_file(out / "model.safetensors")
    for key in expected:
        assert torch.equal(written[key], expected[key]), key
    out = merge_dirs("ema", None, [exports["base"], *models], tmp_path / "e", decay=0.5, chunk_elements=517)
    expected = merge_ema([_state(exports["base"]), *[_state(m) for m in models]], decay=0.5)
    written = load_file(out / "model.safetensors")
    for key in expected:
        assert torch.equal(written[key], expected[key]), key
    assert json.loads((out / "merge_config.json").read_text())["weights"] == pytest.approx(
        [1 / 7, 2 / 7, 4 / 7]
    )


def test_linear_one_directory_is_identity(exports, tmp_path):
    out = merge_dirs("linear", None, [exports["cont"]], tmp_path / "m")
    written = load_file(out / "model.safetensors")
    for key, value in _state(exports["cont"]).items():
        assert torch.equal(written[key], value), key


def test_directory_errors_name_the_problem(exports, tmp_path):
    base, eng = exports["base"], exports["eng"]
    other_tok = tmp_path / "other_tok"
    shutil.copytree(eng, other_tok)
    tok = json.loads((other_tok / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    first, second = sorted(vocab, key=vocab.get)[10:12]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (other_tok / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(MergeError, match=rf"different tokenizers: {other_tok}/tokenizer.json"):
        merge_dirs("ties", base, [eng, other_tok], tmp_path / "out")

    wrong_shape = tmp_path / "wrong_shape"
    shutil.copytree(eng, wrong_shape)
    state = load_file(wrong_shape / "model.safetensors")
    state["head.norm.weight"] = torch.ones(5)
    save_file(state, wrong_shape / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        MergeError,
        match=rf"shape mismatch for 'head.norm.weight': \[{TINY.hidden_size}\] in {base} vs \[5\] in {wrong_shape}",
    ):
        merge_dirs("ties", base, [eng, wrong_shape], tmp_path / "out")

    with pytest.raises(MergeError, match="ties needs a base model"):
        merge_dirs("ties", None, [eng], tmp_path / "out")
    with pytest.raises(MergeError, match="linear does not use a base model"):
        merge_dirs("linear", base, [eng], tmp_path / "out")
    with pytest.raises(MergeError, match="no config.json"):
        merge_dirs("linear", None, [tmp_path], tmp_path / "out")
    assert not (tmp_path / "out").exists()

    out = merge_dirs("linear", None, [eng], tmp_path / "out")
    with pytest.raises(MergeError, match="already exists; pass --overwrite"):
        merge_dirs("linear", None, [eng], out)
    merge_dirs("linear", None, [base], out, overwrite=True)
    assert json.loads((out / "merge_config.json").read_text())["models"] == [str(base.resolve())]


def test_cli_reports_errors(exports, tmp_path, capsys):
    argv = ["merge", "--method", "ties", "--base", str(exports["base"]), "--models", str(exports["eng"])]
    assert cli.main([*argv, "--weights", "1", "2", "--out", str(tmp_path / "o")]) == 2
    assert "got 2 weights for 1 models" in capsys.readouterr().err
    assert cli.main([*argv, "--density", "0", "--out", str(tmp_path / "o")]) == 2
    assert "density must be in (0, 1]" in capsys.readouterr().err


def test_merges_our_own_exports(tmp_path):
    from mmbert import MmBertConfig, MmBertForMaskedLM

    cfg = MmBertConfig.preset("tiny", vocab_size=100)
    dirs = []
    for seed in range(3):
        torch.manual_seed(seed)
        dirs.append(MmBertForMaskedLM(cfg).save_pretrained(tmp_path / f"m{seed}"))
    out = merge_dirs("ties", dirs[0], dirs[1:], tmp_path / "out", density=0.5)
    expected = merge_ties(
        load_file(dirs[0] / "model.safetensors"),
        [load_file(d / "model.safetensors") for d in dirs[1:]],
        density=0.5,
    )
    state = MmBertForMaskedLM.from_pretrained(out).state_dict()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key
    assert torch.equal(state[DECODER_KEY], expected[EMBEDDING_KEY])


def test_ties_threshold_with_many_ties_and_zeros():
    # Small integers times (1 + j 2^-20): most magnitudes are tied, zeros (and a -0.0) are common,
    # and values like 1 and 1 + 2^-20 differ only in the low bits of their float32 pattern.
    g = torch.Generator().manual_seed(4)
    base = torch.randint(-3, 4, (9, 7), generator=g).float()
    deltas = [
        torch.randint(-3, 4, (9, 7), generator=g) * (1 + torch.randint(0, 3, (9, 7), generator=g) * 2.0**-20)
        for _ in range(2)
    ]
    deltas[0][0, :3] = -0.0
    for density in (0.1, 0.37, 0.5, 0.9):
        k = int(density * base.numel())
        expected = []
        for d in deltas:
            # Stable sort by descending magnitude: among equal magnitudes the earlier entry wins.
            order = torch.sort(d.abs().flatten(), descending=True, stable=True).indices[:k]
            keep = torch.zeros(d.numel(), dtype=torch.bool)
            keep[order] = True
            expected.append(d * keep.view(d.shape))
        want = merge_ties({"w": base}, [{"w": base + e} for e in expected], density=1.0)
        models = [{"w": base + d} for d in deltas]
        assert torch.equal(merge_ties({"w": base}, models, density=density)["w"], want["w"]), density
        # In chunks of 5: the tied entries still to keep are counted across chunk boundaries.
        chunked = merge_ties({"w": base}, models, density=density, chunk_elements=5)
        assert torch.equal(chunked["w"], want["w"]), density


def test_a_killed_merge_leaves_nothing_behind_the_next_run_and_overwrite_is_whole(exports, tmp_path):
    out = tmp_path / "merged"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".merged.{int(dead.stdout)}.k1ll3d.tmp"  # what a killed merge into `out` leaves
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"\0" * 4096)
    merge_dirs("linear", None, [exports["eng"]], out)
    assert not stale.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["merged"]
    # --overwrite replaces an earlier output in one step, never briefly absent.
    merge_dirs("linear", None, [exports["cont"]], out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]
    assert json.loads((out / "merge_config.json").read_text())["models"] == [str(exports["cont"].resolve())]


def test_merge_overwrite_never_deletes_an_input(exports, tmp_path, capsys):
    """--out over an input, its parent folder, or a symbolic link to either: refused, with or without
    --overwrite, and the refusal names the input."""
    inputs = tmp_path / "inputs"
    shutil.copytree(exports["eng"], inputs / "eng")
    (tmp_path / "link").symlink_to(inputs)
    for out in (inputs / "eng", inputs, tmp_path / "link", tmp_path):
        for flag in ([], ["--overwrite"]):
            argv = ["merge", "--method", "linear", "--models", str(inputs / "eng"), "--out", str(out), *flag]
            assert cli.main(argv) == 2
            err = capsys.readouterr().err
            assert f"would overwrite the input {inputs / 'eng'}" in err and err.count("\n") == 1
    assert (inputs / "eng" / "model.safetensors").is_file()


def test_composer_checkpoints_merge_as_they_are(exports, tmp_path, capsys):
    """mmBERT's raw `.pt` checkpoints go into a merge directly: the same result as their HF conversions."""
    pts = {}
    for name in ("base", "eng"):
        pts[name] = write_composer_checkpoint(tmp_path / f"{name}.pt", _state(exports[name]))
    argv = ["merge", "--method", "ties", "--base", str(pts["base"]), "--density", "0.5", "--models"]
    assert cli.main([*argv, str(pts["eng"]), str(exports["all"]), "--out", str(tmp_path / "from_pt")]) == 0
    capsys.readouterr()
    expected = merge_dirs(
        "ties", exports["base"], [exports["eng"], exports["all"]], tmp_path / "hf", density=0.5
    )
    written, want = (
        load_file(tmp_path / "from_pt" / "model.safetensors"),
        load_file(expected / "model.safetensors"),
    )
    assert written.keys() == want.keys() and all(torch.equal(written[k], want[k]) for k in want)
    # the config comes from the base checkpoint (its shapes, the tiny preset's thetas), the tokenizer
    # from the one input that has one
    config = json.loads((tmp_path / "from_pt" / "config.json").read_text())
    assert config["vocab_size"] == written[EMBEDDING_KEY].shape[0] and config["local_rope_theta"] == 10_000
    assert (tmp_path / "from_pt" / "tokenizer.json").read_bytes() == (
        exports["all"] / "tokenizer.json"
    ).read_bytes()
    assert cli.main([*argv, str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x")]) == 2
    assert "missing.pt: not a model directory or a checkpoint file" in capsys.readouterr().err
