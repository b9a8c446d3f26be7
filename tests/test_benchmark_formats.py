"""`mmbert benchmark` on inputs as users download them, beyond test_benchmark.py's fixtures: a Hub
dataset repository's parquet shards, label names instead of ids, unlabelled test splits, the languages
filter under zero-shot transfer, questions too long for QA windows, and MLQA's own answer normalization.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from mmbert import cli
from mmbert.benchmark import metrics
from mmbert.benchmark.settings import load_settings
from tests.test_benchmark import FAST, _copa, _jsonl, _pairs, _squad_rows, export  # noqa: F401 (fixture)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


def _parquet(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _bench(task, export, data, out, *extra):  # noqa: F811 (export is the fixture's value)
    return cli.main(
        ["benchmark", task, "--model", str(export), "--data", str(data), "--out", str(out), *FAST, *extra]
    )


def test_hub_repository_shards_and_label_names(export, tmp_path, capsys):  # noqa: F811
    """RTE as a download of nyu-mll/glue holds it (rte/train-0000K-of-00002.parquet) and a dev split in
    the Hub's parquet-conversion layout (rte/validation/0000.parquet), its labels written as names."""
    data = tmp_path / "glue"
    rows = _pairs(12, 0, ("sentence1", "sentence2"), 2, idx=0)
    _parquet(data / "rte" / "train-00000-of-00002.parquet", rows[:7])
    _parquet(data / "rte" / "train-00001-of-00002.parquet", rows[7:])
    dev = [
        {**r, "label": ["entailment", "not_entailment"][r["label"]]}
        for r in _pairs(6, 1, ("sentence1", "sentence2"), 2)
    ]
    _parquet(data / "rte" / "validation" / "0000.parquet", dev)
    assert _bench("rte", export, data, tmp_path / "o") == 0
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    train = result["data"]["splits"]["train"]["rte"]
    assert train["rows"] == 12 and [p.rsplit("/", 1)[1] for p in train["files"]] == [
        "train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]  # fmt: skip
    assert len(train["sha256"]) == 2 and result["data"]["splits"]["dev"]["rte"]["rows"] == 6

    # GLUE's test splits carry label -1: refused with the file, not scored as if labelled.
    _parquet(
        data / "stsb" / "train.parquet",
        [{"sentence1": "a b", "sentence2": "c d", "label": 2.5, "idx": 0}] * 4,
    )
    _parquet(
        data / "stsb" / "test.parquet",
        [{"sentence1": "a b", "sentence2": "c d", "label": -1.0, "idx": 0}] * 4,
    )
    capsys.readouterr()
    assert _bench("stsb", export, data, tmp_path / "s", "dev.split=test", "eval.split=test") == 2
    err = capsys.readouterr().err
    assert "stsb/test.parquet" in err and "-1 in every row" in err
    dev[2]["label"] = "neutral"  # not one of RTE's names
    _parquet(data / "rte" / "validation" / "0000.parquet", dev)
    assert _bench("rte", export, data, tmp_path / "o2") == 2
    assert (
        "validation/0000.parquet[2]: column 'label': 'neutral' is not a label id" in capsys.readouterr().err
    )


def test_ner_tags_as_names_equal_tags_as_ids(export):  # noqa: F811
    from mmbert.benchmark.kinds import TokenClassification
    from mmbert.tokenizer import load_tokenizer

    tok = load_tokenizer(export, adapt=True)
    ner = TokenClassification(load_settings("wikiann"))
    words, ids = ["Eleanor", "Roosevelt", "spoke", "in", "Paris"], [1, 2, 0, 0, 5]
    names = [ner.names[i] for i in ids]
    a = ner.encode([("a", {"tokens": words, "ner_tags": ids})], tok, "en")
    b = ner.encode([("b", {"tokens": words, "ner_tags": names})], tok, "en")
    assert a.targets == b.targets and a.extra["tags"] == b.extra["tags"] == [ids]
    c = ner.encode([("c", {"tokens": words, "ner_tags": [float(i) for i in ids]})], tok, "en")
    assert c.extra["tags"] == [ids]  # 1.0: an int column with gaps, as pandas writes it
    with pytest.raises(ValueError, match=r"b: column 'ner_tags'\[4\]: 'B-MISC' is not a label id"):
        ner.encode([("b", {"tokens": words, "ner_tags": [*names[:4], "B-MISC"]})], tok, "en")


def test_languages_filter_keeps_the_zero_shot_training_data(export, tmp_path):  # noqa: F811
    """`languages=[...]` picks the scored languages; zero-shot transfer still trains on English COPA
    (it used to drop the `copa` config too and stop with "no train data left")."""
    data = tmp_path / "xcopa"
    _jsonl(data / "copa" / "train.jsonl", _copa(8, 0))
    _jsonl(data / "copa" / "validation.jsonl", _copa(4, 1))
    for lang in ("et", "ht"):
        _jsonl(data / lang / "test.jsonl", _copa(4, 2))
    assert _bench("xcopa", export, data, tmp_path / "o", "languages=[ht]") == 0
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    assert set(result["data"]["splits"]["train"]) == {"copa"} and set(result["score"]["groups"]) == {"ht"}


def test_a_question_too_long_for_the_windows_is_named(export):  # noqa: F811
    """tokenizers panics (not an Exception: the CLI died with a Rust backtrace) when the question leaves
    no more than doc_stride tokens of context; the longest question that fits still encodes."""
    from mmbert.benchmark.kinds import QuestionAnswering
    from mmbert.tokenizer import load_tokenizer

    tok = load_tokenizer(export, adapt=True)
    qa = QuestionAnswering(load_settings("squad", overrides=["max_length=40", "doc_stride=12"]))
    room = 40 - tok.num_special_tokens_to_add(pair=True) - 12
    row = _squad_rows(1, 0)[0]
    words = ("right " * 60).split()
    for n in range(1, 60):  # the longest question under `room` tokens, and one token more
        if len(tok(" ".join(words[:n]), add_special_tokens=False)["input_ids"]) >= room:
            break
    fits, too_long = " ".join(words[: n - 1]), " ".join(words[:n])
    assert len(tok(fits, add_special_tokens=False)["input_ids"]) < room
    assert len(qa.encode([("ok", {**row, "question": fits})], tok, "x")) >= 1
    with pytest.raises(ValueError, match=rf"q:3: the question is \d+ tokens.*under {room} tokens"):
        qa.encode([("q:3", {**row, "question": too_long})], tok, "x")


def test_mlqa_scores_with_mlqa_normalization_xquad_with_xtremes_languages(export):  # noqa: F811
    """MLQA's script (as XTREME scores MLQA): Chinese compared by character, each language's articles,
    Unicode punctuation; SQuAD's v1.1 script elsewhere. Values by hand."""
    assert metrics.token_f1("北京大学", "北京", "zh") == pytest.approx(2 / 3)  # 2 of 4 characters
    assert metrics.token_f1("北京大学", "北京") == 0.0  # SQuAD's: one "word" each
    assert (
        metrics.exact_match("Der Hund.", "hund", "de") == 1.0
        and metrics.exact_match("Der Hund", "hund") == 0.0
    )
    assert metrics.normalize_answer("«Hola», el mundo¡", "es") == "hola mundo"
    assert metrics.normalize_answer("الكتاب", "ar") == "كتاب"
    s = metrics.squad_scores(
        ["in Paris, France", "The Eiffel Tower!"], [["Paris"], ["eiffel tower", "Tower"]]
    )
    assert s == {"exact_match": 0.5, "f1": 0.75}  # F1 (1/3 precision, recall 1) = 0.5, then 1
    with pytest.raises(ValueError, match="not 'th'"):
        metrics.normalize_answer("x", "th")

    from mmbert.benchmark.kinds import QuestionAnswering
    from mmbert.tokenizer import load_tokenizer
    from tests.test_benchmark import _Oracle

    mlqa = load_settings("mlqa")
    assert (
        mlqa["answer_normalization"] == "mlqa" and load_settings("tydiqa")["answer_normalization"] == "squad"
    )
    assert "xquad.ro" not in load_settings("xquad").part("eval").configs
    assert len(load_settings("xquad").part("eval").configs) == 11 and mlqa.version == 2  # changed: bumped
    # Through the kind: a prediction of "北京大学" for gold "北京" scores 2/3 under mlqa.zh.zh.
    tok = load_tokenizer(export, adapt=True)
    qa = QuestionAnswering(load_settings("mlqa", overrides=["max_length=64", "doc_stride=16"]))
    context = "他在北京大学工作。"
    row = {
        "id": "1",
        "context": context,
        "question": "在哪里?",
        "answers": {"text": ["北京"], "answer_start": [2]},
    }
    enc = qa.encode([("r", row)], tok, "mlqa.zh.zh")
    offsets = enc.extra["offsets"][0]
    start = next(i for i, o in enumerate(offsets) if o is not None and o[0] <= 2 < o[1])
    end = next(i for i, o in enumerate(offsets) if o is not None and o[0] < 6 <= o[1])
    span = context[offsets[start][0] : offsets[end][1]]
    scores = qa.evaluate(_Oracle([(start, end)]), enc, torch.device("cpu"))
    assert scores["groups"]["mlqa.zh.zh"]["f1"] == pytest.approx(metrics.token_f1(span, "北京", "zh"))
    assert metrics.token_f1(span, "北京", "zh") > 0 == metrics.token_f1(span, "北京")  # SQuAD: all or nothing


def test_fine_tuning_drops_the_pretraining_only_output_dropout(export, tmp_path, monkeypatch):  # noqa: F811
    """An export trained under the released recipes says `attention_output_dropout: 0.1`; transformers
    ignores that key, so the paper's HF fine-tuning ran without it: the benchmark's model does too."""
    import shutil

    from mmbert.benchmark import run

    model = shutil.copytree(export, tmp_path / "model")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "attention_output_dropout": 0.1}))
    seen, fit = [], run.fit
    monkeypatch.setattr(
        run, "fit", lambda m, *a, **k: seen.append(m.config.attention_output_dropout) or fit(m, *a, **k)
    )
    data = tmp_path / "sst2"
    _jsonl(
        data / "train.jsonl", [{"sentence": s["premise"], "label": s["label"], "idx": 0} for s in _copa(8, 0)]
    )
    _jsonl(
        data / "validation.jsonl",
        [{"sentence": s["premise"], "label": s["label"], "idx": 0} for s in _copa(4, 1)],
    )
    assert _bench("sst2", model, data, tmp_path / "o", "lr=1e-4") == 0
    assert seen == [None]


def test_pawsx_translated_training_rows_with_blank_sentences_are_kept(export, tmp_path, capsys):  # noqa: F811
    """PAWS-X's machine-translated training sets have blank sentences where translation failed
    (google-research-datasets/paws#4): translate-train-all trains on them as the HF scripts do; a
    missing value (null) is still an error naming the row."""
    data = tmp_path / "pawsx"
    for lang in ("en", "zh"):
        rows = _pairs(8, 0, ("sentence1", "sentence2"), 2, id=1)
        rows[3]["sentence2"] = ""
        _jsonl(data / lang / "train.jsonl", rows)
        _jsonl(data / lang / "validation.jsonl", _pairs(4, 1, ("sentence1", "sentence2"), 2, id=2))
        _jsonl(data / lang / "test.jsonl", _pairs(4, 2, ("sentence1", "sentence2"), 2, id=3))
    langs = ["protocol=translate-train-all", "languages=[en,zh]"]
    assert _bench("pawsx", export, data, tmp_path / "o", *langs) == 0
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    assert set(result["data"]["splits"]["train"]) == {"en", "zh"}
    rows[5]["sentence1"] = None
    _jsonl(data / "zh" / "train.jsonl", rows)
    capsys.readouterr()
    assert _bench("pawsx", export, data, tmp_path / "o2", *langs) == 2
    assert "zh/train.jsonl:6: column 'sentence1' must be a string, got None" in capsys.readouterr().err


def test_the_sweep_picks_its_learning_rate_on_dev_not_on_the_reported_split(export, tmp_path):  # noqa: F811
    """A sweep over XNLI must not pick on the target languages' test sets (XTREME picks on English dev)."""
    from mmbert.benchmark.run import _choose

    runs = [{"lr": 1e-5, "seed": 0, "score": 0.9, "dev_score": 0.5},
            {"lr": 3e-5, "seed": 0, "score": 0.6, "dev_score": 0.7}]  # fmt: skip
    assert _choose(runs, "accuracy")[0] == 3e-5
    assert _choose(runs, "mse")[0] == 1e-5  # lower is better
    data = tmp_path / "xnli"
    for split, n in (("train", 8), ("validation", 4), ("test", 4)):
        _jsonl(data / "en" / f"{split}.jsonl", _pairs(n, len(split), ("premise", "hypothesis"), 3))
    assert _bench("xnli", export, data, tmp_path / "o", "eval.configs=[en]", "lr=[1e-5,1e-3]") == 0
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    by_lr = {r["lr"]: r for r in result["runs"]}
    for r in result["runs"]:
        assert r["dev_score"] == next(h["accuracy"] for h in r["dev_history"] if h["step"] == r["best_step"])
    assert result["lr"] == max(by_lr, key=lambda lr: by_lr[lr]["dev_score"])
    assert "the sweep's best mean dev score)" in (tmp_path / "o" / "report.md").read_text()


def test_overrides_with_the_usual_learning_rates_are_numbers():
    """`lr=2e-5` was written back as JSON's `2e-05`, which YAML 1.1 reads as a string: refused (lr) or
    kept as text (weight_decay) before."""
    assert load_settings("cola", overrides=["lr=2e-5"])["lr"] == 2e-5
    assert load_settings("cola", overrides=["lr=[1e-5, 3e-5, 0.00005]"])["lr"] == [1e-5, 3e-5, 5e-5]
    assert load_settings("cola", overrides=["weight_decay=1e-6"])["weight_decay"] == 1e-6
    assert load_settings("xnli", overrides=["eval={configs: [en], split: test}"]).part("eval").configs == (
        "en",
    )
    with pytest.raises(ValueError, match="warmup_ratio must be a number"):
        load_settings("cola", overrides=["warmup_ratio=lots"])


def test_a_json_file_written_by_datasets_to_json_is_json_lines(tmp_path):
    """`Dataset.to_json("test.json")` writes JSON Lines (lines=True by default) whatever the name; a
    broken single-document .json still names its line."""
    from mmbert.benchmark.data import read_rows

    path = tmp_path / "test.json"
    path.write_text(
        '{"premise":"a b","hypothesis":"c","label":1}\n{"premise":"d","hypothesis":"e","label":0}\n'
    )
    rows = read_rows(path)
    assert [r for _, r in rows][1] == {"premise": "d", "hypothesis": "e", "label": 0}
    assert rows[1][0] == f"{path}:2"
    path.write_text('{"data": [\n{"a": 1},\n')
    with pytest.raises(ValueError, match=r"test.json:3: invalid JSON"):
        read_rows(path)


def test_tydiqa_languages_filter_trains_in_language_on_the_kept_languages_only(export, tmp_path):  # noqa: F811
    data = tmp_path / "tydiqa"
    rows = _squad_rows(4, 0, "english-") + _squad_rows(4, 1, "swahili-") + _squad_rows(4, 2, "thai-")
    _jsonl(data / "secondary_task" / "train.jsonl", rows)
    _jsonl(data / "secondary_task" / "validation.jsonl", rows)
    _jsonl(data / "plain_text" / "train.jsonl", _squad_rows(4, 3))
    _jsonl(data / "plain_text" / "validation.jsonl", _squad_rows(4, 4))
    keep = ["languages=[english,swahili]", "doc_stride=16"]
    assert _bench("tydiqa", export, data, tmp_path / "in", "protocol=in-language", *keep) == 0
    splits = json.loads((tmp_path / "in" / "result.json").read_text())["data"]["splits"]
    assert [splits[r]["secondary_task"]["rows_kept"] for r in ("train", "dev", "eval")] == [8, 8, 8]
    assert _bench("tydiqa", export, data, tmp_path / "zs", *keep) == 0  # zero-shot: all of SQuAD
    splits = json.loads((tmp_path / "zs" / "result.json").read_text())["data"]["splits"]
    assert (
        "rows_kept" not in splits["train"]["plain_text"]
        and splits["eval"]["secondary_task"]["rows_kept"] == 8
    )
