"""An exported model works with the libraries users already have: transformers, Sentence
Transformers (dense, cross-encoder, sparse, multi-vector) and PyLate.

Each test loads the same tiny export (written by `MmBertForMaskedLM.save_pretrained` and
`mmbert.tokenizer`, so these are tests of OUR export format) and checks a
number the library computes against one computed by hand from the raw model, so a silently wrong
load (wrong pooling, special tokens, missing weights) fails rather than just "runs".
"""

from __future__ import annotations

import pytest
import torch

from tests.helpers.exports import make_tiny_export, udhr_texts
from tests.helpers.model import TINY

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")

# Three articles in two languages, longer than the 8-token window.
TEXTS = [
    t for lang in ("eng_Latn", "rus_Cyrl") for t in [x for x in udhr_texts((lang,)) if 60 < len(x) < 200][:3]
]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return make_tiny_export(tmp_path_factory.mktemp("export"))


@pytest.fixture(scope="module")
def hidden_reference(export):
    """Last hidden states and masks of TEXTS from the bare encoder, the ground truth for poolers."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(export)
    model = AutoModel.from_pretrained(export).eval()
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (B, T, H)
    return batch, hidden


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1)


def test_auto_tokenizer_uses_mmbert_layout(export):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(export)
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id, tok.mask_token_id) == (
        0,
        1,
        2,
        3,
        4,
    )
    batch = tok(["a", TEXTS[0]], padding=True)
    short, long_ = batch["input_ids"]
    assert long_[0] == 2 and long_[-1] == 1
    n = sum(batch["attention_mask"][0])
    assert short[0] == 2 and short[n - 1] == 1 and set(short[n:]) == {0}
    pair = tok("ab", "cd")["input_ids"]
    assert pair[0] == 2 and pair.count(1) == 2 and pair[-1] == 1


def test_tokenizer_config_names_a_class_transformers_4_has(export):
    """transformers 4.x (PyLate's environment, older user installs) cannot resolve transformers 5's
    "TokenizersBackend" class name, so the config names the generic fast class, which both have; loaded
    through that class it tokenizes as AutoTokenizer does. (Loading under transformers 4.57 itself is
    done by `scripts/crosscheck.py pylate`, whose environment has it: scripts/results/crosscheck-pylate.json.)"""
    import json

    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    config = json.loads((export / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["model_input_names"] == ["input_ids", "attention_mask"]  # ModernBERT: no token_type_ids
    generic = PreTrainedTokenizerFast.from_pretrained(export)
    auto = AutoTokenizer.from_pretrained(export)
    assert generic(TEXTS, padding=True)["input_ids"] == auto(TEXTS, padding=True)["input_ids"]
    assert (generic.pad_token_id, generic.bos_token_id, generic.eos_token_id, generic.mask_token_id) == (
        0,
        2,
        1,
        4,
    )


def test_auto_masked_lm_loads_every_weight(export):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model, info = AutoModelForMaskedLM.from_pretrained(export, output_loading_info=True)
    assert type(model).__name__ == "ModernBertForMaskedLM"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tok = AutoTokenizer.from_pretrained(export)
    batch = tok(TEXTS[:2], padding=True, return_tensors="pt")
    logits = model(**batch).logits
    assert logits.shape == (*batch["input_ids"].shape, len(tok))


def test_fill_mask_pipeline_matches_argmax(export):
    from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

    tok = AutoTokenizer.from_pretrained(export)
    words = TEXTS[0].split()
    text = " ".join([*words[:3], tok.mask_token, *words[4:]])
    fill = pipeline("fill-mask", model=str(export), tokenizer=str(export), device="cpu", top_k=3)
    preds = fill(text)
    assert len(preds) == 3 and preds[0]["score"] >= preds[1]["score"] >= preds[2]["score"]

    model = AutoModelForMaskedLM.from_pretrained(export).eval()
    ids = tok(text, return_tensors="pt")["input_ids"]
    pos = (ids[0] == tok.mask_token_id).nonzero().item()
    with torch.no_grad():
        probs = model(input_ids=ids).logits[0, pos].softmax(-1)
    assert preds[0]["token"] == int(probs.argmax())
    assert preds[0]["score"] == pytest.approx(float(probs.max()), rel=1e-4)


def test_auto_model_hidden_states(export, hidden_reference):
    from transformers import AutoModel, AutoModelForMaskedLM

    batch, hidden = hidden_reference
    model = AutoModel.from_pretrained(export).eval()
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
        mlm = AutoModelForMaskedLM.from_pretrained(export).eval()
        base = mlm.model(**batch).last_hidden_state
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert out.last_hidden_state.shape == (*batch["input_ids"].shape, model.config.hidden_size)
    torch.testing.assert_close(out.last_hidden_state, base)


def test_auto_sequence_classification_trains(export):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, info = AutoModelForSequenceClassification.from_pretrained(
        export, num_labels=3, output_loading_info=True
    )
    # Only the new head is fresh: the encoder weights all come from the export.
    assert info["missing_keys"] and all(k.startswith(("classifier", "head")) for k in info["missing_keys"])
    tok = AutoTokenizer.from_pretrained(export)
    batch = tok(TEXTS[:3], padding=True, return_tensors="pt")
    labels = torch.tensor([0, 1, 2])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model(**batch, labels=labels).loss
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert model(**batch).logits.shape == (3, 3)
    assert losses[-1] < losses[0]


def test_sentence_transformer_mean_pooling(export, hidden_reference, tmp_path):
    from sentence_transformers import SentenceTransformer, models

    st = SentenceTransformer(
        modules=[models.Transformer(str(export)), models.Pooling(TINY.hidden_size, pooling_mode="mean")],
        device="cpu",
    )
    emb = st.encode(TEXTS, convert_to_tensor=True, batch_size=len(TEXTS))
    batch, hidden = hidden_reference
    torch.testing.assert_close(emb, _mean_pool(hidden, batch["attention_mask"]), atol=1e-5, rtol=1e-4)
    # One at a time (no padding) gives the same vectors as the padded batch.
    torch.testing.assert_close(
        st.encode(TEXTS, convert_to_tensor=True, batch_size=1), emb, atol=1e-5, rtol=1e-4
    )
    st.save(str(tmp_path / "st"))
    again = SentenceTransformer(str(tmp_path / "st"), device="cpu")
    torch.testing.assert_close(again.encode(TEXTS, convert_to_tensor=True), emb, atol=1e-6, rtol=1e-5)


def test_cross_encoder_scores_pairs(export, tmp_path):
    from sentence_transformers import CrossEncoder
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    ce = CrossEncoder(str(export), num_labels=1, device="cpu")
    pairs = [(TEXTS[0], TEXTS[3]), (TEXTS[0], TEXTS[1])]
    scores = ce.predict(pairs, convert_to_tensor=True)
    assert scores.shape == (2,)
    ce.save(str(tmp_path / "ce"))
    # The saved reranker is a plain transformers classifier: its logit, through a sigmoid, is the score.
    tok = AutoTokenizer.from_pretrained(tmp_path / "ce")
    clf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ce").eval()
    with torch.no_grad():
        logits = clf(**tok(*map(list, zip(*pairs, strict=True)), padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(scores.float(), logits[:, 0].sigmoid(), atol=1e-5, rtol=1e-4)
    again = CrossEncoder(str(tmp_path / "ce"), device="cpu")
    torch.testing.assert_close(again.predict(pairs, convert_to_tensor=True), scores)


def test_sparse_encoder_splade(export, tmp_path):
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import SpladePooling, Transformer
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    splade = SparseEncoder(
        modules=[
            Transformer(str(export), transformer_task="fill-mask"),
            SpladePooling(pooling_strategy="max"),
        ],
        device="cpu",
    )
    emb = splade.encode(TEXTS[:2], convert_to_tensor=True, convert_to_sparse_tensor=False)
    tok = AutoTokenizer.from_pretrained(export)
    mlm = AutoModelForMaskedLM.from_pretrained(export).eval()
    batch = tok(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = mlm(**batch).logits  # (B, T, V)
    # SPLADE: max over real tokens of log(1 + relu(logit)).
    act = torch.log1p(torch.relu(logits)) * batch["attention_mask"].unsqueeze(-1)
    torch.testing.assert_close(emb, act.max(1).values, atol=1e-5, rtol=1e-4)
    assert emb.shape == (2, len(tok)) and (emb >= 0).all()
    splade.save(str(tmp_path / "splade"))
    again = SparseEncoder(str(tmp_path / "splade"), device="cpu")
    torch.testing.assert_close(
        again.encode(TEXTS[:2], convert_to_tensor=True, convert_to_sparse_tensor=False),
        emb,
        atol=1e-6,
        rtol=1e-5,
    )


def test_multi_vector_encoder_colbert(export, hidden_reference, tmp_path):
    """Sentence Transformers' own ColBERT (MultiVectorEncoder): token vectors = normalize(W · hidden state)
    of every real token, with W its projection and the hidden states the bare encoder's; MaxSim scores."""
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    mve = MultiVectorEncoder(
        modules=[
            Transformer(str(export)),
            Dense(
                TINY.hidden_size,
                16,
                bias=False,
                activation_function=None,
                module_input_name="token_embeddings",
            ),
            MultiVectorMask(),
            Normalize(module_input_name="token_embeddings"),
        ],
        device="cpu",
    )
    docs = mve.encode_document(TEXTS[:2])
    queries = mve.encode_query(TEXTS[:1])
    batch, hidden = hidden_reference
    projection = mve[1].linear.weight.detach()  # (16, H)
    for got, i in ((docs[0], 0), (docs[1], 1), (queries[0], 0)):
        real = hidden[i][batch["attention_mask"][i].bool()]  # (T_i, H)
        expected = torch.nn.functional.normalize(real @ projection.T, dim=-1)  # (T_i, 16)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    scores = mve.similarity(queries, docs)
    assert scores.shape == (1, 2)
    # MaxSim by hand: each query vector's best document vector, summed.
    for j, d in enumerate(docs):
        assert scores[0, j].item() == pytest.approx(
            (queries[0] @ d.T).max(dim=1).values.sum().item(), rel=1e-5
        )
    mve.save(str(tmp_path / "colbert"))
    again = MultiVectorEncoder(str(tmp_path / "colbert"), device="cpu")
    torch.testing.assert_close(
        again.similarity(again.encode_query(TEXTS[:1]), again.encode_document(TEXTS[:2])), scores
    )


def test_pylate_colbert(export, tmp_path):
    pylate = pytest.importorskip(
        "pylate",
        reason="PyLate cannot be installed beside torch 2.13 / sentence-transformers 6 (see README: ColBERT)",
    )
    from pylate import models, scores

    def maxsim(model) -> torch.Tensor:
        queries = model.encode(TEXTS[:1], is_query=True)
        docs = model.encode(TEXTS[:2], is_query=False)
        assert queries[0].shape[-1] == 16
        # colbert_scores stacks documents into one array: score documents of different lengths one by one.
        return torch.tensor([float(scores.colbert_scores(queries, [d])[0, 0]) for d in docs])

    colbert = models.ColBERT(model_name_or_path=str(export), embedding_size=16, device="cpu")
    s = maxsim(colbert)
    colbert.save(str(tmp_path / "colbert"))
    again = pylate.models.ColBERT(model_name_or_path=str(tmp_path / "colbert"), device="cpu")
    torch.testing.assert_close(maxsim(again), s, atol=1e-5, rtol=1e-4)
