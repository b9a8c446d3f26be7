"""`mmbert finetune`: language identification on bundled UDHR text learns, the output reloads in
transformers with identical logits, regression and text pairs run, early stopping stops, and bad
data fails with messages that name the file, line and column."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from mmbert import cli, finetune
from mmbert.data.corpus import HELDOUT_ARTICLES, load_udhr
from tests.helpers.exports import TINY_LANGS, make_tiny_export
from tests.helpers.files import dir_with


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return make_tiny_export(tmp_path_factory.mktemp("export"))


def _paragraphs(split: str, per_lang: int) -> list[dict]:
    """Language-ID rows: the first `per_lang` short paragraphs of each tiny language."""
    rows = []
    for d in load_udhr():
        if d.key not in TINY_LANGS:
            continue
        paras = [
            p
            for a in d.articles
            if (a.number in HELDOUT_ARTICLES) == (split == "heldout")
            for p in a.text.split("\n")
            if 20 < len(p) < 200
        ]
        rows += [{"text": p, "label": d.lang} for p in paras[:per_lang]]
    return rows


def _write_csv(path, rows, fields=("text", "label")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerows(rows)
    return path


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


FAST = ["--batch-size", "8", "--max-length", "32", "--no-progress", "--lr", "2e-3", "--warmup-ratio", "0"]


def _finetune(model, train, out) -> list[str]:
    """`mmbert finetune` on `model` and `train` into `out`, at the tests' small settings."""
    return ["finetune", "--model", str(model), "--train", str(train), "--out", str(out), *FAST]


def test_language_id_learns_and_reloads_in_transformers(export, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from mmbert import MmBertForSequenceClassification

    train = _write_csv(tmp_path / "train.csv", _paragraphs("train", 10))
    dev = _write_csv(tmp_path / "dev.csv", _paragraphs("heldout", 4))
    out = tmp_path / "out"
    argv = ["--model", str(export), "--train", str(train), "--dev", str(dev), "--out", str(out)]
    assert (
        cli.main(["finetune", *argv, *FAST, "--max-steps", "12", "--eval-every", "6", "--patience", "5"]) == 0
    )

    # The label set is shown with its counts before the first step.
    err = capsys.readouterr().err
    counts = {row["label"]: 0 for row in _paragraphs("train", 10)}
    for row in _paragraphs("train", 10):
        counts[row["label"]] += 1
    shown = ", ".join(f"'{k}' {n}" for k, n in sorted(counts.items()))
    assert f"4 labels in {train}: {shown}" in err
    summary = json.loads((out / "finetune.json").read_text())
    losses = summary["train_losses"]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    # Four balanced languages: chance is 0.25.
    assert (
        summary["best"]["accuracy"] >= 0.5 and summary["best"]["accuracy"] > summary["history"][0]["accuracy"]
    )
    assert summary["labels"] == {"0": "arb_Arab", "1": "eng_Latn", "2": "fra_Latn", "3": "rus_Cyrl"}

    hf = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert hf.config.id2label == {0: "arb_Arab", 1: "eng_Latn", 2: "fra_Latn", 3: "rus_Cyrl"}
    assert hf.config.label2id["rus_Cyrl"] == 3
    tok = AutoTokenizer.from_pretrained(out)
    texts = [r["text"] for r in _paragraphs("heldout", 2)]
    batch = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    ours = MmBertForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(**batch).logits, ours(**batch).logits, atol=1e-5, rtol=1e-4)


def test_regression_with_text_pairs_from_jsonl(export, tmp_path):
    """Regression on a text pair: the target is 1.0 for the same article in two languages, else 0.2."""
    eng = {a.number: a.text for d in load_udhr() if d.key == "eng_Latn" for a in d.articles}
    fra = {a.number: a.text for d in load_udhr() if d.key == "fra_Latn" for a in d.articles}
    rows = [
        {"text": eng[n], "text_pair": fra[m], "label": 1.0 if n == m else 0.2}
        for n in range(1, 13)
        for m in (n, n % 12 + 1)
    ]
    train = _write_jsonl(tmp_path / "train.jsonl", rows)
    out = tmp_path / "out"
    argv = [
        "--model",
        str(export),
        "--train",
        str(train),
        "--out",
        str(out),
        "--text-pair-column",
        "text_pair",
    ]
    assert cli.main(["finetune", *argv, *FAST, "--max-steps", "6", "--dev-fraction", "0.25"]) == 0
    summary = json.loads((out / "finetune.json").read_text())
    assert summary["task"] == "regression" and summary["metric"] == "pearson"
    assert set(summary["best"]) >= {"mse", "pearson", "loss"}
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "regression" and config["id2label"] == {"0": "score"}


def test_pairs_are_tokenized_as_bos_a_eos_b_eos(export):
    from mmbert.tokenizer import load_tokenizer

    tok = load_tokenizer(export)
    ex = [finetune.Example("Everyone has rights", "Tout individu", 1, "x:2")]
    (ids,) = finetune.tokenize(tok, ex, max_length=64)
    assert ids[0] == 2 and ids[-1] == 1 and ids.count(1) == 2


def test_early_stopping_stops_without_improvement(export, tmp_path):
    train = _write_csv(tmp_path / "train.csv", _paragraphs("train", 4))
    out = tmp_path / "out"
    argv = ["--model", str(export), "--train", str(train), "--out", str(out), *FAST]
    # lr 0: the dev metric cannot improve, so patience 1 stops at the first evaluation.
    assert (
        cli.main(
            ["finetune", *argv, "--lr", "0", "--eval-every", "1", "--patience", "1", "--max-steps", "50"]
        )
        == 0
    )
    summary = json.loads((out / "finetune.json").read_text())
    assert summary["steps"] == 1 and summary["best_step"] == 0


def test_metrics_by_hand():
    m = finetune.classification_metrics([0, 1, 1, 2], [0, 1, 2, 2], num_labels=3)
    assert m["accuracy"] == 0.75
    # F1 per class: 1.0, 2/3, 2/3.
    assert m["f1_macro"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    r = finetune.regression_metrics([1.0, 2.0, 4.0], [1.0, 3.0, 5.0])
    assert r["mse"] == pytest.approx(2 / 3)
    assert r["pearson"] == pytest.approx(
        float(torch.corrcoef(torch.tensor([[1.0, 2, 4], [1.0, 3, 5]]))[0, 1])
    )


def test_integer_labels_keep_their_ids_and_strings_sort():
    ex = [finetune.Example("a", None, lab, f"f:{i}") for i, lab in enumerate([2, 0, 1, 1.0])]
    assert finetune.label_space(ex, "f", "label") == {0: "0", 1: "1", 2: "2"}
    ex = [finetune.Example("a", None, lab, f"f:{i}") for i, lab in enumerate(["b", "a", "c"])]
    assert finetune.label_space(ex, "f", "label") == {0: "a", 1: "b", 2: "c"}
    assert finetune.infer_task([finetune.Example("a", None, x, "f") for x in ("1", "0.5")]) == "regression"
    assert finetune.infer_task([finetune.Example("a", None, x, "f") for x in ("1", "0")]) == "classification"


@pytest.mark.parametrize(
    ("rows", "extra", "message"),
    [
        ([{"sentence": "a b", "label": "x"}] * 4, [], "missing column 'text'"),
        (
            [{"text": "a b", "label": 1.5}, {"text": "c d", "label": "not a number"}] * 2,
            ["--task", "regression"],
            ":2: column 'label': a regression label must be a number, got 'not a number'",
        ),
        (
            [{"text": "a b", "label": 0.5}, {"text": "c", "label": 1}] * 2,
            ["--task", "classification"],
            "0.5 is not a class label",
        ),
        ([{"text": "a b", "label": 1}, {"text": "c", "label": "x"}] * 2, [], "mixes numeric labels"),
        ([{"text": "", "label": "x"}] * 4, [], ":1: column 'text' must be a non-empty string"),
        ([{"text": "a", "label": "x"}] * 4, [], "has a single label"),
        ([], [], "the split is empty"),
    ],
)
def test_bad_data_is_reported_with_file_line_and_column(tmp_path, capsys, rows, extra, message):
    train = _write_jsonl(tmp_path / "train.jsonl", rows)
    rc = cli.main(
        ["finetune", "--model", str(tmp_path), "--train", str(train), "--out", str(tmp_path / "o"), *extra]
    )
    err = capsys.readouterr().err
    assert rc == 2 and str(train) in err and message in err


def test_dev_label_unseen_in_training_and_missing_file(tmp_path, capsys):
    train = _write_csv(tmp_path / "train.csv", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    dev = _write_csv(tmp_path / "dev.csv", [{"text": "a", "label": "x"}, {"text": "b", "label": "z"}])
    argv = ["--model", str(tmp_path), "--train", str(train), "--dev", str(dev), "--out", str(tmp_path / "o")]
    assert cli.main(["finetune", *argv]) == 2
    assert (
        f"{dev}:3: column 'label': label 'z' does not occur in the training split" in capsys.readouterr().err
    )
    assert cli.main(["finetune", *argv[:3], str(tmp_path / "nope.csv"), *argv[4:]]) == 2
    assert "nope.csv: no such file" in capsys.readouterr().err
    # Good data, but a model that is neither a directory nor reachable (tests run offline).
    good = ["--train", str(train), "--dev", str(train), "--out", str(tmp_path / "o")]
    assert cli.main(["finetune", "--model", "no-such-org/no-such-model", *good]) == 2
    assert "--model no-such-org/no-such-model: not a directory" in capsys.readouterr().err


def test_empty_csv_split_names_the_file(tmp_path, capsys):
    train = _write_csv(tmp_path / "train.csv", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    dev = _write_csv(tmp_path / "dev.csv", [])
    argv = ["--model", str(tmp_path), "--train", str(train), "--dev", str(dev), "--out", str(tmp_path / "o")]
    assert cli.main(["finetune", *argv]) == 2
    assert f"{dev}: the split is empty" in capsys.readouterr().err


def test_dataset_directory_gives_train_and_validation_splits(tmp_path):
    """A folder that `datasets` reads (as a cloned Hub dataset would be): its validation split is dev."""
    data = tmp_path / "langid"
    data.mkdir()
    _write_csv(data / "train.csv", _paragraphs("train", 3))
    _write_csv(data / "validation.csv", _paragraphs("heldout", 2))
    options = finetune.FinetuneOptions(model="m", train=str(data), out="o")
    train, dev, test, note = finetune.load_splits(options)
    assert (len(train), len(dev), test) == (12, 8, None)
    assert "validation" in note and train[0].where == f"{data}[train][0]"
    with pytest.raises(finetune.DataError, match="cannot load split 'nope'"):
        finetune.read_records(f"{data}:nope")


def test_out_never_replaces_the_model_or_a_foreign_directory(export, tmp_path, capsys):
    train = _write_csv(tmp_path / "train.csv", _paragraphs("train", 4))
    before = {p.name: p.read_bytes() for p in export.iterdir()}
    foreign = dir_with(tmp_path / "mine", "notes.txt", "x")
    for out in (export, foreign):
        assert cli.main(_finetune(export, train, out)) == 2
        err = capsys.readouterr().err
        assert "--out" in err and "--overwrite" in err and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in export.iterdir()} == before
    assert (foreign / "notes.txt").read_text() == "x"
    for value, option in (
        ("0", "--batch-size"),
        ("0", "--epochs"),
        ("1", "--max-length"),
        ("2", "--dev-fraction"),
    ):
        assert cli.main([*_finetune(export, train, tmp_path / "o"), option, value]) == 2
        assert f"{option} must be" in capsys.readouterr().err


def test_output_appears_whole_or_not_at_all(export, tmp_path, monkeypatch):
    train = _write_csv(tmp_path / "train.csv", _paragraphs("train", 4))
    out = tmp_path / "out"
    argv = [*_finetune(export, train, out), "--max-steps", "1"]
    assert cli.main(argv) == 0
    first = (out / "model.safetensors").read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(finetune, "write_tokenizer_files", fail)  # the model is written, then this fails
    assert cli.main([*argv, "--seed", "1"]) == 2
    assert (out / "model.safetensors").read_bytes() == first and (out / "finetune.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
