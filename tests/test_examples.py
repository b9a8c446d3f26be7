"""The fine-tuning examples run end to end on a tiny export: each trains a few steps on bundled UDHR
data (or a small local file), its loss falls, and the saved model reloads with its library (each
script reloads its output itself before writing metrics.json).

The scripts are called in-process through their `main(argv)`; `examples/` is not a package, so it
goes on sys.path the way `python examples/x.py` puts it there.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from mmbert.data.corpus import HELDOUT_ARTICLES
from tests.helpers.exports import make_tiny_export

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
pytestmark = pytest.mark.filterwarnings(
    "ignore::FutureWarning", "ignore::DeprecationWarning", "ignore::UserWarning"
)

# Two Latin-script languages: shared names and numbers make pairs learnable in a few steps.
LANGS = "eng_Latn,fra_Latn"
SMALL = ["--batch-size", "8", "--max-seq-length", "24", "--lr", "3e-3", "--langs", LANGS]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return make_tiny_export(tmp_path_factory.mktemp("export"))


@pytest.fixture
def examples(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))

    def load(name: str):
        return importlib.import_module(name)

    return load


def _falls(losses: list[float], k: int = 3) -> bool:
    return sum(losses[-k:]) / k < sum(losses[:k]) / k


def _run(examples, name: str, argv: list[str], out: Path) -> dict:
    assert examples(name).main([*argv, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "final").is_dir()
    return metrics


def test_udhr_pairs_are_parallel(examples):
    common = examples("common")
    decls = common.udhr_declarations(["eng_Latn", "fra_Latn", "rus_Cyrl"])
    text = {(d.lang, a.number): a.text for d in decls for a in d.articles}
    rows = common.udhr_pairs(decls, "train", seed=0)
    n_train = len({a.number for a in decls[0].articles} - HELDOUT_ARTICLES)
    assert len(rows) == n_train * 3 * 2  # every article, every ordered language pair
    for r in rows:
        assert r["anchor_lang"] != r["positive_lang"] and r["article"] not in HELDOUT_ARTICLES
        assert r["anchor"] == text[(r["anchor_lang"], r["article"])]
        assert r["positive"] == text[(r["positive_lang"], r["article"])]
        # The negative: another article, in the positive's language.
        others = {
            text[(r["positive_lang"], n)]
            for n in range(31)
            if n != r["article"] and n not in HELDOUT_ARTICLES
        }
        assert r["negative"] in others
    dev = common.udhr_pairs(decls, "heldout", pivot_only=True)
    assert {r["article"] for r in dev} == HELDOUT_ARTICLES and {r["anchor_lang"] for r in dev} == {"eng_Latn"}
    queries, corpus, relevant = common.retrieval_data(dev)
    assert len(queries) == len(HELDOUT_ARTICLES) and all(len(v) == 2 for v in relevant.values())
    assert not set(queries.values()) & set(corpus.values())  # no query is its own unjudged document


def test_dataset_file_is_checked(examples, tmp_path):
    common = examples("common")
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"anchor": f"a{i}", "pos": f"b{i}"}) + "\n" for i in range(6)))
    with pytest.raises(SystemExit, match=r"pairs.jsonl \(train\): missing column\(s\) \['positive'\]"):
        common.load_split_rows(str(path), ("anchor", "positive"))
    with pytest.raises(SystemExit, match="no bundled UDHR declaration for 'xxx_Latn'"):
        common.udhr_declarations(["eng_Latn", "xxx_Latn"])


def test_train_dense(examples, export, tmp_path):
    m = _run(examples, "train_dense", ["--model", str(export), "--max-steps", "6", *SMALL], tmp_path)
    assert len(m["losses"]) == 6 and _falls(m["losses"])
    assert {"dev_cosine_accuracy", "dev_cosine_mrr@10"} <= set(m["eval_after"])


def test_train_splade(examples, export, tmp_path):
    # SPLADE's loss adds a regularizer that ramps up over the run: a lower LR and a few more steps than
    # the other recipes, so that the falling ranking loss shows through it.
    argv = ["--model", str(export), "--max-steps", "10", *SMALL, "--lr", "1e-3"]
    m = _run(examples, "train_splade", argv, tmp_path)
    assert _falls(m["losses"])
    assert "dev_dot_mrr@10" in m["eval_after"]


def test_train_colbert_with_sentence_transformers(examples, export, tmp_path):
    argv = ["--model", str(export), "--backend", "st", "--dim", "16", "--max-steps", "6", *SMALL]
    m = _run(examples, "train_colbert", argv, tmp_path)
    assert m["backend"] == "st" and _falls(m["losses"])


def test_train_colbert_with_pylate(examples, export, tmp_path):
    pytest.importorskip("pylate", reason="PyLate needs its own environment (README: ColBERT with PyLate)")
    argv = ["--model", str(export), "--backend", "pylate", "--dim", "16", "--max-steps", "6", *SMALL]
    m = _run(examples, "train_colbert", argv, tmp_path)
    assert m["backend"] == "pylate" and _falls(m["losses"])


def test_train_reranker_with_mined_negatives(examples, export, tmp_path):
    """A small local pair file: the cross-encoder memorises it, so its loss falls in a few steps."""
    common = examples("common")
    rows = common.udhr_pairs(common.udhr_declarations(LANGS.split(",")), "train")[:12]
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        "".join(json.dumps({"anchor": r["anchor"], "positive": r["positive"]}) + "\n" for r in rows)
    )
    argv = [
        "--model",
        str(export),
        "--dataset",
        str(data),
        "--num-negatives",
        "1",
        "--max-steps",
        "12",
        *SMALL,
    ]
    m = _run(examples, "train_reranker", argv, tmp_path / "out")
    # Per-step BCE on 8 pairs is noisy: compare the first and last four steps.
    assert len(m["losses"]) == 12 and _falls(m["losses"], k=4)
    assert "dev_ndcg@10" in m["eval_after"]


@pytest.mark.parametrize("backend", ["transformers", "mmbert"])
def test_train_classifier_language_id(examples, export, tmp_path, backend):
    langs = "eng_Latn,fra_Latn,rus_Cyrl,arb_Arab"
    argv = ["--model", str(export), "--max-steps", "8", *SMALL, "--langs", langs, "--backend", backend]
    m = _run(examples, "train_classifier", argv, tmp_path)
    assert m["backend"] == backend and _falls(m["losses"])
    assert m["eval_after"]["accuracy"] > max(0.5, m["eval_before"]["accuracy"])
