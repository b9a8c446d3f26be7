"""Parity with transformers' ModernBERT in both directions, config forms, weight formats, FlexBERT names."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import torch
import transformers
from packaging.requirements import Requirement
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
)

from mmbert import MmBertConfig, MmBertForMaskedLM, MmBertForSequenceClassification, MmBertModel
from mmbert.hf import convert_state_dict, read_weights
from tests.helpers.composer import composer_names
from tests.helpers.exports import hf_model, real_logits
from tests.helpers.model import TINY, ragged_batch

HF_KW = TINY.to_hf_dict()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_hf_to_ours_parity(tmp_path, attn):
    ref = hf_model(attn=attn)
    ref.save_pretrained(tmp_path)
    ours = MmBertForMaskedLM.from_pretrained(tmp_path)
    assert ours.config.layer_types == ref.config.layer_types
    assert ours.config.local_rope_theta == 10_000.0 and ours.config.global_rope_theta == 160_000.0
    ids, mask = ragged_batch(vocab=1024)
    torch.testing.assert_close(
        real_logits(ours, ids, mask), real_logits(ref, ids, mask), atol=1e-4, rtol=1e-4
    )


def test_ours_to_hf_parity_without_key_warnings(tmp_path):
    torch.manual_seed(1)
    cfg = TINY
    ours = MmBertForMaskedLM(cfg).eval()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if "norm" in name or "bias" in name:
                p.add_(torch.randn_like(p) * 0.1)
    ours.save_pretrained(tmp_path)
    ref, info = AutoModelForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert ref.decoder.weight.data_ptr() == ref.model.embeddings.tok_embeddings.weight.data_ptr()
    ref.eval()
    ids, mask = ragged_batch(vocab=1024, seed=3)
    torch.testing.assert_close(
        real_logits(ref, ids, mask), real_logits(ours, ids, mask), atol=1e-4, rtol=1e-4
    )
    saved = json.loads((tmp_path / "config.json").read_text())
    # Both config forms, so transformers 4.57 (which reads local_rope_theta) loads it right too.
    assert (
        saved["local_rope_theta"] == 10_000.0
        and saved["rope_parameters"]["sliding_attention"]["rope_theta"] == 10_000.0
    )


def test_old_config_form_and_pytorch_bin(tmp_path):
    ref = hf_model(seed=2)
    cfg = {k: v for k, v in HF_KW.items() if k not in ("layer_types", "rope_parameters")}
    cfg.update(model_type="modernbert", architectures=["ModernBertForMaskedLM"])
    (tmp_path / "config.json").write_text(json.dumps(cfg))  # no layer_types / rope_parameters
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    ours = MmBertForMaskedLM.from_pretrained(tmp_path)
    assert ours.config.local_rope_theta == 10_000.0
    ids, mask = ragged_batch(vocab=1024)
    torch.testing.assert_close(
        real_logits(ours, ids, mask), real_logits(ref, ids, mask), atol=1e-4, rtol=1e-4
    )


def test_sharded_safetensors(tmp_path):
    """A checkpoint saved in several safetensors files (+ model.safetensors.index.json) loads whole."""
    ref = hf_model(seed=3)
    ref.save_pretrained(tmp_path, max_shard_size="50KB")
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 2 and not (tmp_path / "model.safetensors").exists()
    ours = MmBertForMaskedLM.from_pretrained(tmp_path)
    expected = ref.state_dict()
    got = ours.state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.items())
    ids, mask = ragged_batch(vocab=1024)
    torch.testing.assert_close(
        real_logits(ours, ids, mask), real_logits(ref, ids, mask), atol=1e-4, rtol=1e-4
    )
    # A shard named in the index but missing is an error that names it.
    shards[-1].unlink()
    with pytest.raises(FileNotFoundError, match=shards[-1].name):
        MmBertForMaskedLM.from_pretrained(tmp_path)


def test_flexbert_composer_names():
    """ModernBERT's training code names (bert.encoder.layers.N...), Composer-wrapped in `model.`."""
    ref = hf_model(seed=4)
    flex = composer_names(ref.state_dict())
    assert all(k.startswith(("model.bert.", "model.head.", "model.decoder.")) for k in flex)
    converted, expected = convert_state_dict(flex), ref.state_dict()
    assert converted.keys() == expected.keys()
    assert all(torch.equal(converted[k], v) for k, v in expected.items())


def test_load_errors_name_the_key(tmp_path):
    ref = hf_model()
    sd = ref.state_dict()
    ours = MmBertForMaskedLM(TINY)
    bad = dict(sd)
    bad["model.layers.1.attn.Wqkv.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"model\.layers\.1\.attn\.Wqkv\.weight has shape \(3, 3\)"):
        ours.load_hf_state_dict(bad)
    missing = {k: v for k, v in sd.items() if k != "model.final_norm.weight"}
    with pytest.raises(ValueError, match="missing keys.*final_norm"):
        ours.load_hf_state_dict(missing)
    with pytest.raises(ValueError, match="unexpected keys.*model.layers.9"):
        ours.load_hf_state_dict({**sd, "model.layers.9.mlp.Wi.weight": torch.zeros(1)})
    with pytest.raises(FileNotFoundError, match="no config.json"):
        MmBertForMaskedLM.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{\n  "hidden_size": 64,\n  oops\n}')
    with pytest.raises(ValueError, match="config.json: invalid JSON at line 3"):
        MmBertForMaskedLM.from_pretrained(tmp_path)


def test_encoder_and_classifier_exports_load_in_transformers(tmp_path):
    torch.manual_seed(5)
    cfg = TINY.replace(num_labels=3, id2label={0: "a", 1: "b", 2: "c"}, classifier_pooling="mean")
    clf = MmBertForSequenceClassification(cfg).eval()
    clf.save_pretrained(tmp_path / "clf")
    ref, info = AutoModelForSequenceClassification.from_pretrained(tmp_path / "clf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert ref.config.id2label == {0: "a", 1: "b", 2: "c"}
    ids, mask = ragged_batch(vocab=1024)
    with torch.no_grad():
        torch.testing.assert_close(
            ref.eval()(input_ids=ids, attention_mask=mask).logits,
            clf(ids, attention_mask=mask).logits,
            atol=1e-4,
            rtol=1e-4,
        )
    back = MmBertForSequenceClassification.from_pretrained(tmp_path / "clf")
    with torch.no_grad():
        torch.testing.assert_close(
            back(ids, attention_mask=mask).logits, clf(ids, attention_mask=mask).logits
        )

    enc = MmBertModel(TINY).eval()
    enc.save_pretrained(tmp_path / "enc")
    ref_enc = AutoModel.from_pretrained(tmp_path / "enc").eval()
    with torch.no_grad():
        a = ref_enc(input_ids=ids, attention_mask=mask).last_hidden_state[mask.bool()]
        b = enc(ids, attention_mask=mask).last_hidden_state[mask.bool()]
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_mlm_checkpoint_loads_into_encoder_and_classifier(tmp_path):
    ref = hf_model(seed=6)
    ref.save_pretrained(tmp_path)
    enc = MmBertModel.from_pretrained(tmp_path)
    clf = MmBertForSequenceClassification.from_pretrained(tmp_path, num_labels=4)
    torch.testing.assert_close(clf.model.layers[2].mlp.Wi.weight, ref.model.layers[2].mlp.Wi.weight)
    torch.testing.assert_close(enc.final_norm.weight, ref.model.final_norm.weight)
    assert clf.classifier.weight.abs().sum() > 0 and torch.isfinite(clf.classifier.weight).all()
    assert read_weights(tmp_path).keys() >= {"model.final_norm.weight"}


def test_transformers_version_is_in_the_declared_range():
    """The installed transformers and constraints.txt's pin (the version these parity tests ran on)
    both satisfy pyproject.toml's requirement."""
    root = Path(__file__).resolve().parents[1]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    (declared,) = [Requirement(d) for d in deps if Requirement(d).name == "transformers"]
    pins = [Requirement(line) for line in (root / "constraints.txt").read_text().splitlines() if "==" in line]
    (pinned,) = [str(r.specifier).removeprefix("==") for r in pins if r.name == "transformers"]
    assert declared.specifier.contains(transformers.__version__), (transformers.__version__, declared)
    assert declared.specifier.contains(pinned), (pinned, declared)


def test_gradients_match_transformers(tmp_path):
    """The training path (packed, in-place RoPE, blocked local attention) has HF's gradients."""
    ref = hf_model(seed=7, attn="eager")
    ref.save_pretrained(tmp_path)
    ours = MmBertForMaskedLM.from_pretrained(tmp_path).train()
    ref.train()
    ids, mask = ragged_batch(vocab=1024, seed=8)
    labels = torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.3, ids, -100)
    labels[mask == 0] = -100
    ref_loss = torch.nn.functional.cross_entropy(
        ref(input_ids=ids, attention_mask=mask).logits[labels != -100], labels[labels != -100]
    )
    ref_loss.backward()
    ours(ids, attention_mask=mask, labels=labels).loss.backward()
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[name].grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("out_dropout", [None, 0.1])
def test_attention_output_dropout_round_trips_through_transformers(tmp_path, out_dropout):
    """transformers has no field for it: config.json carries ours by name, transformers keeps it when it
    loads and saves the config again, and leaving it out (None) writes nothing."""
    cfg = TINY.replace(attention_output_dropout=out_dropout)
    cfg.save(tmp_path / "ours")
    saved = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert saved.get("attention_output_dropout") == out_dropout and saved["attention_dropout"] == 0.0
    transformers.AutoConfig.from_pretrained(tmp_path / "ours").save_pretrained(tmp_path / "hf")
    for directory in ("ours", "hf"):
        assert MmBertConfig.load(tmp_path / directory) == cfg
