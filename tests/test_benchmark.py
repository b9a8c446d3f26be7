"""`mmbert benchmark`: every task end to end through the CLI on fixture files in the real datasets'
formats (column names, config and split names, label ids), made here, on the tiny model; the new heads
load in transformers with the same logits; the metrics by hand; the settings files' contract.

Each run trains a couple of steps on a handful of rows: these tests check the plumbing and the
records (settings, model and data fingerprints, seeds, per-language scores, the paper's figures), not
what a real model scores.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from mmbert import cli
from mmbert.benchmark import metrics
from mmbert.benchmark.settings import SettingsError, load_settings, task_names
from tests.helpers.exports import make_tiny_export, udhr_texts

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")

SENTENCES = [
    s.strip() for t in udhr_texts(("eng_Latn", "fra_Latn")) for s in t.split(".") if 20 < len(s) < 120
]
FAST = ["max_steps=2", "batch_size=4", "max_length=48", "seeds=[0]", "warmup_ratio=0", "--no-progress"]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return make_tiny_export(tmp_path_factory.mktemp("export"))


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(SENTENCES) for _ in range(n)]


def _run(task: str, export: Path, data: Path, out: Path, *extra: str) -> dict:
    argv = ["benchmark", task, "--model", str(export), "--data", str(data), "--out", str(out), *FAST, *extra]
    assert cli.main(argv) == 0
    result = json.loads((out / "result.json").read_text())
    assert (out / "report.md").is_file()
    return result


def _check_records(result: dict, data: Path) -> None:
    """What every result records: the settings and version, the model's sha256, each file read and its
    sha256, the seeds and their scores."""
    assert result["settings"]["version"] >= 1 and "max_steps=2" in result["settings"]["overrides"]
    assert len(result["model"]["sha256"]) == 64
    for role in ("train", "dev", "eval"):
        for rec in result["data"]["splits"][role].values():
            assert Path(rec["file"]).is_relative_to(data) and len(rec["sha256"]) == 64
    assert result["score"]["seeds"] == [0] and len(result["runs"]) == 1
    assert result["runs"][0]["steps"] == 2


# ---------------------------------------------------------------------------------------------- GLUE
def _glue_rows(task: str, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    a, b = _sentences(n, seed), _sentences(n, seed + 1)
    label = {"stsb": lambda: round(rng.uniform(0, 5), 2)}.get(
        task, lambda: rng.randint(0, 2 if task == "mnli" else 1)
    )
    cols = {
        "cola": ("sentence",), "sst2": ("sentence",), "mrpc": ("sentence1", "sentence2"),
        "qqp": ("question1", "question2"), "stsb": ("sentence1", "sentence2"), "mnli": ("premise", "hypothesis"),
        "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2"),
    }[task]  # fmt: skip
    return [{**dict(zip(cols, (a[i], b[i]), strict=False)), "label": label(), "idx": i} for i in range(n)]


GLUE = ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte"]


def test_every_glue_task_runs_and_records_its_protocol(export, tmp_path, capsys):
    """`mmbert benchmark glue`: the eight tasks from one folder of config folders, then the average."""
    data = tmp_path / "glue"
    for task in GLUE:
        _jsonl(data / task / "train.jsonl", _glue_rows(task, 12, 0))
        dev = "validation_matched" if task == "mnli" else "validation"
        _jsonl(data / task / f"{dev}.jsonl", _glue_rows(task, 8, 1))
    out = tmp_path / "out"
    argv = [
        "benchmark",
        "glue",
        "--model",
        str(export),
        "--data",
        str(data),
        "--out",
        str(out),
        *FAST,
        "lr=1e-4",
    ]
    assert cli.main(argv) == 0
    metric = {"cola": "matthews", "stsb": "pearson", "mrpc": "f1", "qqp": "f1"}
    for task in GLUE:
        result = json.loads((out / task / "result.json").read_text())
        _check_records(result, data)
        assert result["metric"] == metric.get(task, "accuracy")
        assert result["settings"]["values"]["batch_size"] == 4 and result["lr"] == 1e-4
        assert set(result["data"]["splits"]["train"]) == {task}
    report = (out / "cola" / "report.md").read_text()
    assert "61.8" in report and "differs from the paper" in report and "`max_steps=2`" in report
    summary = json.loads((out / "summary.json").read_text())
    assert summary["average"] == pytest.approx(sum(t["mean"] for t in summary["tasks"].values()) / 8)
    # The paper's published GLUE averages (84.7 / 86.3 / 83.3) are not the means of its eight columns
    # (85.6 / 86.9 / 84.0): the report shows both and says so.
    assert summary["paper_average_published"]["mmBERT-small"] == 84.7
    assert summary["paper_average_same_tasks"]["mmBERT-small"] == pytest.approx(685.0 / 8)
    report = (out / "report.md").read_text()
    assert "| average |" in report and "not the mean of its per-task figures" in report
    assert "glue average" in capsys.readouterr().out


def test_lr_sweep_and_seeds_give_an_interval(export, tmp_path):
    data = tmp_path / "rte"
    _jsonl(data / "train.jsonl", _glue_rows("rte", 8, 0))
    _jsonl(data / "validation.jsonl", _glue_rows("rte", 8, 1))
    argv = ["benchmark", "rte", "--model", str(export), "--data", str(data), "--out", str(tmp_path / "o"), *FAST,
            "seeds=[0,1]", "lr=[0,1e-3]", "max_steps=1"]  # fmt: skip
    assert cli.main(argv) == 0
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    assert len(result["runs"]) == 4 and {r["lr"] for r in result["runs"]} == {0.0, 1e-3}
    chosen = [r for r in result["runs"] if r["lr"] == result["lr"]]
    means = {lr: sum(r["score"] for r in result["runs"] if r["lr"] == lr) / 2 for lr in (0.0, 1e-3)}
    assert means[result["lr"]] == max(means.values())
    score = result["score"]
    assert score["values"] == pytest.approx([100 * r["score"] for r in chosen]) and score["seeds"] == [0, 1]
    assert score["ci"][0] is None or score["ci"][0] <= score["mean"] <= score["ci"][1]
    assert all(r["steps"] == 1 for r in result["runs"])


# ---------------------------------------------------------------------------------------------- XTREME
def _pairs(n: int, seed: int, cols: tuple[str, str], labels: int, **extra) -> list[dict]:
    rng = random.Random(seed)
    a, b = _sentences(n, seed), _sentences(n, seed + 7)
    return [{cols[0]: a[i], cols[1]: b[i], "label": rng.randrange(labels), **extra} for i in range(n)]


def test_xnli_zero_shot_and_translate_train_all(export, tmp_path):
    data = tmp_path / "xnli"
    for lang in ("en", "fr", "de"):
        for split, n in (("train", 10), ("validation", 6), ("test", 6)):
            _jsonl(
                data / lang / f"{split}.jsonl",
                _pairs(n, hash((lang, split)) % 100, ("premise", "hypothesis"), 3),
            )
    langs = "eval.configs=[en,fr,de]"
    result = _run("xnli", export, data, tmp_path / "zs", langs)
    _check_records(result, data)
    assert result["protocol"] == "zero-shot" and set(result["data"]["splits"]["train"]) == {"en"}
    assert set(result["score"]["groups"]) == {"de", "en", "fr"}
    assert result["score"]["mean"] == pytest.approx(sum(result["score"]["groups"].values()) / 3)
    assert "74.6" in (tmp_path / "zs" / "report.md").read_text()  # XLM-R base's XNLI figure

    # Every language's training data, less the languages filtered out (de: "unsupported").
    overrides = ["protocol=translate-train-all", "train.configs=[en,fr,de]", "dev.configs=[en,fr]", langs]
    result = _run("xnli", export, data, tmp_path / "tta", *overrides, "languages=[en,fr]")
    assert result["protocol"] == "translate-train-all"
    assert set(result["data"]["splits"]["train"]) == {"en", "fr"} and set(result["score"]["groups"]) == {
        "en",
        "fr",
    }
    assert "translate-train-all" in (tmp_path / "tta" / "report.md").read_text()


def test_pawsx(export, tmp_path):
    data = tmp_path / "paws-x"
    _jsonl(data / "en" / "train.jsonl", _pairs(10, 0, ("sentence1", "sentence2"), 2, id=1))
    _jsonl(data / "en" / "validation.jsonl", _pairs(6, 1, ("sentence1", "sentence2"), 2, id=2))
    for lang in ("de", "fr"):
        _jsonl(data / lang / "test.jsonl", _pairs(6, 2, ("sentence1", "sentence2"), 2, id=3))
    result = _run("pawsx", export, data, tmp_path / "o", "eval.configs=[de,fr]")
    _check_records(result, data)
    assert set(result["score"]["groups"]) == {"de", "fr"} and result["paper"]["mmBERT-base"] == 87.7


def _copa(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    s = _sentences(3 * n, seed)
    return [{"premise": s[3 * i], "choice1": s[3 * i + 1], "choice2": s[3 * i + 2], "question": rng.choice(["cause", "effect"]),
             "idx": i, "label": rng.randrange(2)} for i in range(n)]  # fmt: skip


def test_xcopa_multiple_choice_trains_on_copa(export, tmp_path):
    data = tmp_path / "xcopa"
    _jsonl(data / "copa" / "train.jsonl", _copa(8, 0))
    _jsonl(data / "copa" / "validation.jsonl", _copa(4, 1))
    for lang in ("et", "ht"):
        _jsonl(data / lang / "test.jsonl", _copa(6, 2))
    result = _run("xcopa", export, data, tmp_path / "o", "eval.configs=[et,ht]")
    _check_records(result, data)
    assert set(result["score"]["groups"]) == {"et", "ht"} and result["metric"] == "accuracy"
    assert set(result["data"]["splits"]["train"]) == {"copa"}


def _squad_rows(n: int, seed: int, id_prefix: str = "") -> list[dict]:
    """SQuAD-format rows whose answer is a word of the context."""
    rng = random.Random(seed)
    rows = []
    for i, context in enumerate(_sentences(n, seed)):
        words = [w for w in context.split() if len(w) > 3] or context.split()
        word = rng.choice(words)
        start = context.index(word)
        rows.append({"id": f"{id_prefix}{seed}-{i}", "title": "udhr", "context": context,
                     "question": f"Which word is {word[::-1]}?", "answers": {"text": [word], "answer_start": [start]}})  # fmt: skip
    return rows


def test_xquad_and_mlqa_score_each_language_config(export, tmp_path):
    data = tmp_path / "qa"
    _jsonl(data / "plain_text" / "train.jsonl", _squad_rows(8, 0))
    _jsonl(data / "plain_text" / "validation.jsonl", _squad_rows(4, 1))
    _jsonl(data / "xquad.de" / "validation.jsonl", _squad_rows(4, 2))
    _jsonl(data / "xquad.ru" / "validation.jsonl", _squad_rows(4, 3))
    _jsonl(data / "mlqa.de.de" / "test.jsonl", _squad_rows(4, 4))
    result = _run("xquad", export, data, tmp_path / "x", "doc_stride=16", "eval.configs=[xquad.de,xquad.ru]")
    assert (
        set(result["score"]["groups"]) == {"xquad.de", "xquad.ru"} and result["paper"]["mmBERT-base"] == 77.6
    )
    result = _run("mlqa", export, data, tmp_path / "m", "doc_stride=16", "eval.configs=[mlqa.de.de]")
    assert set(result["score"]["groups"]) == {"mlqa.de.de"} and result["paper"]["XLM-R base"] == 62.1


def test_tydiqa_zero_shot_from_squad_per_language(export, tmp_path):
    data = tmp_path / "tydiqa"
    _jsonl(data / "plain_text" / "train.jsonl", _squad_rows(10, 0))
    _jsonl(data / "plain_text" / "validation.jsonl", _squad_rows(4, 1))
    gold = _squad_rows(4, 2, "english-") + _squad_rows(4, 3, "swahili-")
    _jsonl(data / "secondary_task" / "validation.jsonl", gold)
    # Windows of 48 tokens with a stride: long contexts become several features.
    result = _run("tydiqa", export, data, tmp_path / "o", "doc_stride=16")
    _check_records(result, data)
    groups = result["runs"][0]["eval"]["groups"]
    assert set(groups) == {"english", "swahili"} and set(groups["english"]) == {"exact_match", "f1"}
    assert result["paper"]["XLM-R base"] == 70.5
    result = _run("tydiqa", export, data, tmp_path / "sw", "doc_stride=16", "languages=[swahili]")
    assert set(result["score"]["groups"]) == {"swahili"}
    assert result["data"]["splits"]["eval"]["secondary_task"]["rows_kept"] == 4


def test_squad_format_set_from_nested_json(export, tmp_path):
    """TiQuAD / FoQA ship SQuAD's own nested JSON: flattened on reading."""
    data = tmp_path / "tiquad"
    data.mkdir()
    for split, seed in (("train", 0), ("validation", 1)):
        rows = _squad_rows(6, seed)
        nested = {"version": "1.1", "data": [{"title": "udhr", "paragraphs": [
            {"context": r["context"], "qas": [{"id": r["id"], "question": r["question"],
             "answers": [{"text": r["answers"]["text"][0], "answer_start": r["answers"]["answer_start"][0]}]}]}
            for r in rows]}]}  # fmt: skip
        (data / f"{split}.json").write_text(json.dumps(nested), encoding="utf-8")
    result = _run("squad", export, data, tmp_path / "o", "paper=decay_languages.tiquad", "doc_stride=16")
    _check_records(result, data)
    assert result["paper"]["mmBERT-base"] == 26.8 and result["paper"]["mmBERT-small"] is None


def _wikiann(n: int, seed: int, lang: str) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for s in _sentences(n, seed):
        words = s.split()[:12]
        tags, i = [0] * len(words), 0
        while i < len(words):
            if rng.random() < 0.3:
                kind = rng.choice([1, 3, 5])
                tags[i] = kind
                if i + 1 < len(words) and rng.random() < 0.5:
                    tags[i + 1] = kind + 1
                    i += 1
            i += 1
        rows.append({"tokens": words, "ner_tags": tags, "langs": [lang] * len(words), "spans": []})
    return rows


def test_wikiann_ner_entity_f1_per_language(export, tmp_path):
    data = tmp_path / "wikiann"
    _jsonl(data / "en" / "train.jsonl", _wikiann(10, 0, "en"))
    _jsonl(data / "en" / "validation.jsonl", _wikiann(4, 1, "en"))
    for lang in ("fr", "de"):
        _jsonl(data / lang / "test.jsonl", _wikiann(5, 2, lang))
    result = _run("wikiann", export, data, tmp_path / "o", "eval.configs=[fr,de]", "max_length=12")
    _check_records(result, data)
    assert set(result["score"]["groups"]) == {"de", "fr"}
    assert set(result["runs"][0]["eval"]["groups"]["fr"]) == {"precision", "recall", "f1"}
    assert "prefix space on" in (tmp_path / "o" / "report.md").read_text()


# ---------------------------------------------------------------------------------------------- MTEB
def test_mteb_local_sts_task(export, tmp_path):
    pytest.importorskip("mteb")  # the `mteb` extra
    eng = [t for t in udhr_texts(("eng_Latn",)) if 30 < len(t) < 300][:6]
    fra = [t for t in udhr_texts(("fra_Latn",)) if 30 < len(t) < 300][:6]
    rows = [{"sentence1": e, "sentence2": f, "score": 5.0 if i == j else 1.0} for i, e in enumerate(eng)
            for j, f in enumerate(fra) if j in (i, (i + 1) % 6)]  # fmt: skip
    data = _jsonl(tmp_path / "sts" / "test.jsonl", rows)
    argv = [
        "benchmark",
        "mteb",
        "--model",
        str(export),
        "--data",
        str(data.parent),
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
    ]
    assert cli.main(argv) == 0
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    assert result["metric"] == "main_score" and set(result["score"]["groups"]) == {"LocalSTS"}
    assert -100 <= result["score"]["mean"] <= 100
    assert len(result["data"]["splits"]["eval"]["LocalSTS"]["sha256"]) == 64
    assert "MS MARCO" in (tmp_path / "o" / "report.md").read_text()


# ---------------------------------------------------------------------------------------------- heads
@pytest.mark.parametrize(
    "ours, theirs",
    [("MmBertForTokenClassification", "ModernBertForTokenClassification"),
     ("MmBertForQuestionAnswering", "ModernBertForQuestionAnswering"),
     ("MmBertForMultipleChoice", "ModernBertForMultipleChoice")],
)  # fmt: skip
def test_heads_load_in_transformers_with_the_same_logits(ours, theirs, tmp_path):
    import transformers

    import mmbert
    from mmbert.config import MmBertConfig

    labels = {"MmBertForTokenClassification": {"id2label": {0: "O", 1: "B-PER", 2: "I-PER"}},
              "MmBertForQuestionAnswering": {"num_labels": 2}}.get(ours, {})  # fmt: skip
    torch.manual_seed(0)
    model = getattr(mmbert, ours)(MmBertConfig.preset("tiny", vocab_size=120, **labels)).eval()
    with torch.no_grad():  # a trained-looking head: norms and biases away from their init
        for name, p in model.named_parameters():
            if "norm" in name or "bias" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path)
    hf = getattr(transformers, theirs).from_pretrained(tmp_path).eval()
    ids = torch.randint(5, 120, (2, 30))
    mask = torch.ones_like(ids)
    mask[1, 17:] = 0
    if ours == "MmBertForMultipleChoice":
        ids, mask = ids.view(1, 2, 30), mask.view(1, 2, 30)
    with torch.no_grad():
        a, b = model(input_ids=ids, attention_mask=mask), hf(input_ids=ids, attention_mask=mask)
    real = mask.bool()
    if ours == "MmBertForQuestionAnswering":
        torch.testing.assert_close(a.start_logits[real], b.start_logits[real], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(a.end_logits[real], b.end_logits[real], atol=1e-5, rtol=1e-4)
    elif ours == "MmBertForTokenClassification":
        torch.testing.assert_close(a.logits[real], b.logits[real], atol=1e-5, rtol=1e-4)
        assert hf.config.id2label == {0: "O", 1: "B-PER", 2: "I-PER"}
    else:
        torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-4)
    # Packed input gives what padded input gives.
    if ours == "MmBertForTokenClassification":
        packed = model(input_ids=torch.cat([ids[0], ids[1, :17]]), cu_seqlens=torch.tensor([0, 30, 47]))
        torch.testing.assert_close(packed.logits, a.logits[real], atol=1e-5, rtol=1e-4)


def test_qa_loss_is_per_sequence_cross_entropy():
    from mmbert.config import MmBertConfig
    from mmbert.model import MmBertForQuestionAnswering

    torch.manual_seed(0)
    model = MmBertForQuestionAnswering(MmBertConfig.preset("tiny", vocab_size=100, num_labels=2)).eval()
    ids = [torch.randint(5, 100, (n,)) for n in (9, 14)]
    out = model(input_ids=torch.cat(ids), cu_seqlens=torch.tensor([0, 9, 23]),
                start_positions=torch.tensor([3, 10]), end_positions=torch.tensor([4, 12]))  # fmt: skip
    by_hand = 0.0
    for k, (lo, hi) in enumerate(((0, 9), (9, 23))):
        s, e = out.start_logits[lo:hi], out.end_logits[lo:hi]
        by_hand += (torch.nn.functional.cross_entropy(s[None], torch.tensor([[3, 10][k]]))
                    + torch.nn.functional.cross_entropy(e[None], torch.tensor([[4, 12][k]]))) / 2  # fmt: skip
    torch.testing.assert_close(out.loss, by_hand / 2)


# ---------------------------------------------------------------------------------------------- metrics
def test_metrics_by_hand():
    assert metrics.matthews([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(1 / 3**0.5)
    assert metrics.binary_f1([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)
    assert metrics.spearman([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(0.8)
    assert metrics.normalize_answer("The  Universal, Declaration!") == "universal declaration"
    s = metrics.squad_scores(["the cat sat", "dog"], [["a cat sat down"], ["cat", "dog."]])
    assert s["exact_match"] == 0.5 and s["f1"] == pytest.approx((2 * (2 / 2) * (2 / 3) / (1 + 2 / 3) + 1) / 2)
    # seqeval's default reading: I- after O starts an entity; a type change ends one.
    assert metrics.entities(["B-PER", "I-PER", "O", "I-LOC", "I-ORG", "B-ORG"]) == {
        ("PER", 0, 1), ("LOC", 3, 3), ("ORG", 4, 4), ("ORG", 5, 5)}  # fmt: skip
    e = metrics.entity_scores([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-ORG"]])
    assert (e["precision"], e["recall"], e["f1"]) == (0.5, 0.5, 0.5)


# ---------------------------------------------------------------------------------------------- settings
def test_every_task_has_a_versioned_protocol_and_overrides_are_checked():
    names = task_names()
    assert set(
        GLUE + ["xnli", "pawsx", "xcopa", "xquad", "mlqa", "tydiqa", "squad", "wikiann", "mteb"]
    ) <= set(names)
    for task in names:
        s = load_settings(task)
        assert s.version >= 1 and s["seeds"]
    xnli = load_settings("xnli")
    assert xnli["protocol"] == "zero-shot" and xnli.part("train").configs == ("en",)
    assert "zero-shot" in xnli.file.read_text() and "mmbert.md" in xnli.file.read_text()
    assert len(load_settings("xnli", overrides=["protocol=translate-train-all"]).part("train").configs) == 15
    with pytest.raises(SettingsError, match="unknown key 'lrr' \\(did you mean 'lr'\\?"):
        load_settings("cola", overrides=["lrr=1e-5"])
    with pytest.raises(SettingsError, match="protocol 'bogus'"):
        load_settings("xnli", overrides=["protocol=bogus"])
    with pytest.raises(SettingsError, match="seeds"):
        load_settings("rte", overrides=["seeds=[]"])
    with pytest.raises(SettingsError, match="metric must be one of pearson, spearman, mse"):
        load_settings("stsb", overrides=["metric=accuracy"])
    with pytest.raises(SettingsError, match="binary tasks only"):
        load_settings("mnli", overrides=["metric=f1"])
    with pytest.raises(SettingsError, match="doc_stride"):
        load_settings("tydiqa", overrides=["max_length=48"])  # the 128-token stride does not fit


def test_missing_local_file_is_named(export, tmp_path, capsys):
    data = tmp_path / "empty"
    (data / "cola").mkdir(parents=True)
    argv = [
        "benchmark",
        "cola",
        "--model",
        str(export),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "o"),
        *FAST,
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "no file for config 'cola', split 'train'" in err and "cola/train.jsonl" in err


class _Oracle(torch.nn.Module):
    """Stands for a trained model: returns, feature by feature in order, logits that peak at given
    positions (QA: (start, end) per feature; tokens: a label per token)."""

    def __init__(self, answers: list):
        super().__init__()
        self.answers, self.next = answers, 0

    def forward(self, input_ids, cu_seqlens, max_seqlen, **_):
        from types import SimpleNamespace

        lengths = torch.diff(cu_seqlens).tolist()
        outs = []
        for n in lengths:
            outs.append((n, self.answers[self.next]))
            self.next += 1
        if isinstance(outs[0][1], tuple):  # QA
            start = torch.cat([torch.nn.functional.one_hot(torch.tensor(s), n).float() for n, (s, _) in outs])
            end = torch.cat([torch.nn.functional.one_hot(torch.tensor(e), n).float() for n, (_, e) in outs])
            return SimpleNamespace(start_logits=start, end_logits=end)
        labels = torch.cat([torch.tensor([max(x, 0) for x in a]) for _, a in outs])
        return SimpleNamespace(logits=torch.nn.functional.one_hot(labels, 7).float())


def test_qa_spans_map_back_to_the_answer_text_and_ner_to_the_gold_entities(export):
    """The encoding and the scoring agree: a model that predicts the training targets exactly scores
    EM 1 (the answer's characters come back through the windows' offsets) and entity F1 1."""
    from mmbert.benchmark.kinds import QuestionAnswering, TokenClassification
    from mmbert.tokenizer import load_tokenizer

    tok = load_tokenizer(export, adapt=True)
    qa = QuestionAnswering(
        load_settings("squad", overrides=["max_length=40", "doc_stride=12", "batch_size=3"])
    )
    rows = [(f"r{i}", r) for i, r in enumerate(_squad_rows(8, 5))]
    enc = qa.encode(rows, tok, "x")
    assert len(enc) > len(rows)  # long contexts became several windows
    scores = qa.evaluate(_Oracle(enc.targets), enc, torch.device("cpu"))
    assert scores["all"]["exact_match"] == 1.0 and scores["all"]["f1"] == 1.0

    ner = TokenClassification(load_settings("wikiann", overrides=["batch_size=2"]))
    rows = [(f"w{i}", r) for i, r in enumerate(_wikiann(5, 3, "en"))]
    enc = ner.encode(rows, tok, "en")
    assert any(
        len(ids) > len(r["tokens"]) + 2 for ids, (_, r) in zip(enc.ids, rows, strict=True)
    )  # split words
    scores = ner.evaluate(_Oracle(enc.targets), enc, torch.device("cpu"))
    assert scores["all"]["f1"] == 1.0


def test_hub_names_configs_and_splits_as_the_real_datasets(export, tmp_path, monkeypatch):
    """Without --data, XCOPA asks `datasets` for English COPA to train and XCOPA's languages to score,
    under their real Hub names, configs and splits (load_dataset stood in: nothing downloads)."""
    import datasets

    calls = []

    def load_dataset(name, config, split, revision=None):
        calls.append((name, config, split, revision))
        return datasets.Dataset.from_list(_copa(6, len(calls)))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    argv = ["benchmark", "xcopa", "--model", str(export), "--out", str(tmp_path / "o"), *FAST,
            "eval.configs=[et,zh]", "revision=abc123"]  # fmt: skip
    assert cli.main(argv) == 0
    assert calls == [
        ("aps/super_glue", "copa", "train", "abc123"),
        ("aps/super_glue", "copa", "validation", "abc123"),
        ("cambridgeltl/xcopa", "et", "test", "abc123"),
        ("cambridgeltl/xcopa", "zh", "test", "abc123"),
    ]
    result = json.loads((tmp_path / "o" / "result.json").read_text())
    rec = result["data"]["splits"]["eval"]["zh"]
    assert rec["dataset"] == "cambridgeltl/xcopa" and rec["revision"] == "abc123" and rec["fingerprint"]
    # hf:NAME replaces the task's dataset, not the training part's own.
    from mmbert.benchmark.data import DataSource

    settings = load_settings("xcopa")
    names = [
        DataSource("hf:me/xcopa-copy").dataset_name(settings.part(r), settings["dataset"])
        for r in ("train", "eval")
    ]
    assert names == ["aps/super_glue", "me/xcopa-copy"]


def test_a_learnable_task_is_learned(export, tmp_path):
    """SST-2's format carrying language identification (English 0, French 1): eight steps of the
    benchmark's training lift dev accuracy well above chance, so the loop trains, not only runs."""
    eng = [s.strip() for t in udhr_texts(("eng_Latn",)) for s in t.split(".") if 20 < len(s) < 120]
    fra = [s.strip() for t in udhr_texts(("fra_Latn",)) for s in t.split(".") if 20 < len(s) < 120]
    rows = [
        {"sentence": s, "label": y, "idx": 0}
        for pair in zip(eng, fra, strict=False)
        for s, y in zip(pair, (0, 1), strict=True)
    ]
    data = tmp_path / "sst2"
    _jsonl(data / "train.jsonl", rows[:48])
    _jsonl(data / "validation.jsonl", rows[48:80])
    result = _run("sst2", export, data, tmp_path / "o", "max_steps=8", "batch_size=8", "lr=2e-3")
    before = result["runs"][0]["dev_history"][0]["accuracy"]
    assert result["score"]["mean"] >= 80 and result["score"]["mean"] > 100 * before


def test_ner_words_past_max_length_are_cut_not_skipped(export):
    """A sentence longer than max_length keeps its first words whole; every later word is predicted O,
    even one short enough to fit after a long word was cut."""
    from mmbert.benchmark.kinds import TokenClassification
    from mmbert.tokenizer import load_tokenizer

    tok = load_tokenizer(export, adapt=True)
    ner = TokenClassification(load_settings("wikiann", overrides=["max_length=10"]))
    words = ["Everyone", "has", "the", "right", "Zzxqvbnmplkjh", "a"]
    enc = ner.encode([("r", {"tokens": words, "ner_tags": [1, 0, 0, 0, 3, 0]})], tok, "en")
    first = enc.extra["firsts"][0]
    cut = first.index(-1)
    assert all(f >= 1 for f in first[:cut]) and all(f == -1 for f in first[cut:])
    assert len(enc.ids[0]) <= 10 and enc.targets[0][first[0]] == 1
