"""fill-mask and embed: the unpadded, length-sorted batches give what a plain padded forward gives."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmbert import cli
from mmbert.data.corpus import load_udhr
from mmbert.inference import (
    embed,
    encode_masked,
    fill_mask,
    length_batches,
    load,
    read_texts,
    token_text,
)
from mmbert.model import mean_pool
from tests.helpers.exports import resave_with_transformers, save_tiny

TEXTS = [
    d.article(n).text
    for n in (1, 2, 3)
    for d in load_udhr()
    if d.lang in ("eng_Latn", "fra_Latn", "rus_Cyrl")
]


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    """Our tiny model (both layer types, window 16) saved with a tokenizer: an HF-format directory."""
    return save_tiny(tmp_path_factory.mktemp("ours"), TEXTS)


@pytest.fixture(scope="module")
def hf_export(ours, tmp_path_factory):
    """A directory written by transformers' ModernBertForMaskedLM."""
    return resave_with_transformers(ours, tmp_path_factory.mktemp("hf"))


def masked_texts(n: int = 5) -> list[str]:
    out = []
    for i, text in enumerate(TEXTS[:n]):
        words = text.split()
        words[i % len(words)] = "<mask>"
        if i % 2:  # some texts with two masks, and texts of different lengths
            words[-1] = "<mask>"
            words = words * (1 + i)
        out.append(" ".join(words))
    return out


def reference_fill(model, tok, texts, k):
    """Softmax over full padded logits at the mask positions, one text at a time."""
    out = []
    for text in texts:
        ids = torch.tensor([encode_masked(tok, text)])
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
        probs = logits[ids[0] == tok.mask_token_id].softmax(-1)
        out.append(probs.topk(k, dim=-1))
    return out


def test_length_batches_cover_everything_in_length_order():
    lengths = [5, 1, 9, 3, 3, 20, 2]
    batches = length_batches(lengths, batch_tokens=10, max_sequences=3)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths)
    for b in batches:
        assert len(b) <= 3
        assert sum(lengths[i] for i in b) <= 10 or len(b) == 1


@pytest.mark.parametrize("which", ["ours", "hf_export"])
def test_fill_mask_matches_padded_forward(which, request):
    model, tok = load(request.getfixturevalue(which), "cpu")
    texts = masked_texts()
    # a small token budget forces several batches, each holding several texts
    results = fill_mask(model, tok, texts, top_k=4, batch_tokens=60)
    with torch.no_grad():
        expected = reference_fill(model, tok, texts, 4)
    for text, r, (probs, ids) in zip(texts, results, expected, strict=True):
        assert r.text == text
        assert len(r.predictions) == text.count("<mask>")
        for preds, p_row, i_row in zip(r.predictions, probs, ids, strict=True):
            assert [p.token_id for p in preds] == i_row.tolist()
            np.testing.assert_allclose([p.score for p in preds], p_row.numpy(), rtol=1e-4, atol=1e-6)
            assert preds[0].token == token_text(tok, preds[0].token_id)
        assert "<mask>" not in r.sequence


def test_fill_mask_agrees_with_transformers(hf_export):
    from transformers import ModernBertForMaskedLM

    model, tok = load(hf_export, "cpu")
    reference = ModernBertForMaskedLM.from_pretrained(hf_export, attn_implementation="eager").eval()
    texts = masked_texts(3)
    results = fill_mask(model, tok, texts, top_k=3)
    for text, r in zip(texts, results, strict=True):
        ids = torch.tensor([encode_masked(tok, text)])
        with torch.no_grad():
            logits = reference(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]
        probs = logits[ids[0] == tok.mask_token_id].softmax(-1)
        for preds, row in zip(r.predictions, probs, strict=True):
            top = row.topk(3)
            assert [p.token_id for p in preds] == top.indices.tolist()
            np.testing.assert_allclose([p.score for p in preds], top.values.numpy(), rtol=1e-3, atol=1e-5)


def test_space_before_mask_is_left_to_the_mask(ours):
    _, tok = load(ours, "cpu")
    plain = tok(TEXTS[0].split()[0] + " <mask>")["input_ids"]
    ids = encode_masked(tok, TEXTS[0].split()[0] + " <mask>")
    assert len(ids) == len(plain) - 1  # the lone "▁" before <mask> is gone
    assert ids[-2] == tok.mask_token_id


def test_fill_mask_without_mask_is_an_error(ours):
    model, tok = load(ours, "cpu")
    with pytest.raises(ValueError, match="text 2 has no <mask>"):
        fill_mask(model, tok, ["a <mask>", "no mask here"])


def test_embed_is_order_preserving_mean_pooling(ours):
    model, tok = load(ours, "cpu")
    texts = TEXTS[:7]
    vectors = embed(model, tok, texts, batch_size=3, max_length=64)
    assert vectors.shape == (7, model.config.hidden_size) and vectors.dtype == np.float32
    enc = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        hidden = model.model(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
        ).last_hidden_state
    expected = mean_pool(hidden, enc["attention_mask"]).numpy()
    np.testing.assert_allclose(vectors, expected, rtol=1e-4, atol=1e-5)


def test_embed_agrees_with_transformers_mean_pooling(hf_export):
    from transformers import ModernBertModel

    model, tok = load(hf_export, "cpu")
    reference = ModernBertModel.from_pretrained(hf_export, attn_implementation="eager").eval()
    texts = TEXTS[:5]
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = reference(**enc).last_hidden_state
    expected = mean_pool(hidden, enc["attention_mask"]).numpy()
    np.testing.assert_allclose(embed(model, tok, texts, batch_size=2), expected, rtol=1e-3, atol=1e-4)


def test_embed_cli_writes_npy_and_parquet(ours, tmp_path):
    import pyarrow.parquet as pq

    txt = tmp_path / "texts.txt"
    txt.write_text("\n".join(TEXTS[:4]) + "\n", encoding="utf-8")
    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(TEXTS[:4])))
    npy_args = [str(ours), "--input", str(txt), "--out", str(tmp_path / "v.npy"), "--no-progress"]
    assert cli.main(["embed", *npy_args]) == 0
    out = tmp_path / "v.parquet"
    assert cli.main(["embed", str(ours), "--input", str(jsonl), "--out", str(out), "--batch-size", "2"]) == 0
    npy = np.load(tmp_path / "v.npy")
    table = pq.read_table(out)
    assert table.column("text").to_pylist() == TEXTS[:4]
    np.testing.assert_allclose(np.array(table.column("embedding").to_pylist()), npy, rtol=1e-5, atol=1e-6)


def test_read_texts_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "no"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: expected an object with a string 'text'"):
        read_texts(bad)
    blank = tmp_path / "blank.txt"
    blank.write_text("one\n\nthree\n")
    with pytest.raises(ValueError, match=r"blank\.txt:2: empty line"):
        read_texts(blank)
    csv = tmp_path / "x.csv"
    csv.write_text("a\n")
    with pytest.raises(ValueError, match="expected a .txt"):
        read_texts(csv)


def test_fill_mask_cli_json(ours, tmp_path, capsys):
    f = tmp_path / "more.txt"
    f.write_text(masked_texts(2)[1] + "\n")
    assert (
        cli.main(["fill-mask", str(ours), masked_texts(1)[0], "--file", str(f), "--top-k", "2", "--json"])
        == 0
    )
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 2
    assert all(len(preds) == 2 for r in results for preds in r["predictions"])
    assert cli.main(["fill-mask", str(tmp_path / "missing"), "a <mask>"]) == 2
    assert "missing: no such model directory" in capsys.readouterr().err


def test_texts_beyond_the_model_positions_are_cut_with_a_warning(ours, tmp_path, caplog):
    """The tiny model has 512 positions: a 3000-word text is not sent whole (issue: 52k tokens were)."""
    model, tok = load(ours, "cpu")
    limit = model.config.max_position_embeddings
    long = " ".join(TEXTS) * 8
    with caplog.at_level("WARNING"):
        (result,) = fill_mask(model, tok, [long + " <mask> " + long])
    assert f"more than the model's {limit} positions" in caplog.text and len(result.predictions) == 1
    assert len(encode_masked(tok, long + " <mask> " + long)) > 2 * limit
    with pytest.raises(ValueError, match=f"its masks span .* more than the model's {limit} positions"):
        fill_mask(model, tok, [tok.mask_token + long + tok.mask_token])
    caplog.clear()
    with caplog.at_level("WARNING"):
        vectors = embed(model, tok, [long, "short"], max_length=100_000)
    assert f"max length 100000 is more than the model's {limit} positions" in caplog.text
    assert np.allclose(vectors[0], embed(model, tok, [long], max_length=limit)[0], atol=1e-5)
