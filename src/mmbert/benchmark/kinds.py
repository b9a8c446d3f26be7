"""What differs between the benchmark kinds: how rows become model inputs, and how outputs are scored.

Each kind (`classification`, `regression`, `multiple_choice`, `qa`, `token`) has a model class, the
config it needs (labels), `encode` (rows -> an encoded split), `batch` (indices -> the keyword
arguments of the model's packed forward, labels included) and `evaluate` (an encoded split -> metrics).
Training is `mmbert.finetune.fit` for all of them: every batch is unpadded (`PackedBatch`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from mmbert.benchmark import metrics
from mmbert.benchmark.data import BenchmarkDataError, Row
from mmbert.benchmark.settings import Settings
from mmbert.data.packing import PackedBatch
from mmbert.finetune import batches
from mmbert.model import (
    MmBertForMultipleChoice,
    MmBertForQuestionAnswering,
    MmBertForSequenceClassification,
    MmBertForTokenClassification,
)
from mmbert.tokens import IGNORE_INDEX


@dataclass
class Encoded:
    """An encoded split: model sequences (`ids`), their targets, and what scoring needs."""

    ids: list[list[int]]  # one token list per model sequence
    targets: list[Any]  # per training item (an example, or a QA feature)
    groups: list[str] = field(default_factory=list)  # per example: the language / config it is scored under
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.targets)


def _column(row: Row, name: str) -> Any:
    where, record = row
    if name not in record:
        raise BenchmarkDataError(f"{where}: missing column {name!r}; the row has {sorted(record)}")
    return record[name]


def _text(row: Row, name: str, empty_ok: bool = False) -> str:
    """A text column. Sentence (pair) tasks take an empty string as it is: the released data has such
    rows (PAWS-X's machine-translated training sets have blank sentences where translation failed, and
    the HF scripts the paper ran keep them); extractive QA needs a question and a context."""
    value = _column(row, name)
    if not isinstance(value, str) or not (empty_ok or value.strip()):
        kind = "a string" if empty_ok else "a non-empty string"
        raise BenchmarkDataError(f"{row[0]}: column {name!r} must be {kind}, got {value!r}")
    return value


def _class_id(row: Row, name: str, names: list[str] | int) -> int:
    """The label id in column `name`: an id (also as digits, as CSV holds it) or, where the settings name
    the labels, a label name (`entailment`, `B-PER`), as exports that write ClassLabel names hold it."""
    return _label_id(_column(row, name), names, f"{row[0]}: column {name!r}")


def _label_id(value: Any, names: list[str] | int, where: str) -> int:
    n = names if isinstance(names, int) else len(names)
    if isinstance(value, str) and not isinstance(names, int) and value in names:
        return names.index(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():  # a pandas export of an int column with gaps
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        named = "" if isinstance(names, int) else f" or a name of {names}"
        raise BenchmarkDataError(
            f"{where}: {value!r} is not a label id in 0..{n - 1}{named}"
            + (" (-1 marks an unlabelled test split)" if value == -1 else "")
        )
    return value


def _predict(model, enc: Encoded, inputs_of, batch_size: int, device: torch.device) -> list[Any]:
    """The model's outputs for every item of `enc`, batch by batch, in order."""
    was_training = model.training
    model.eval()
    outs = []
    with torch.no_grad():
        for idx in batches(len(enc), batch_size, None):
            outs.append((idx, model(**inputs_of(idx))))
    model.train(was_training)
    return outs


def _packed(seqs: list[list[int]], device: torch.device) -> dict[str, Any]:
    return PackedBatch.from_sequences(seqs).model_inputs(device)


def mean_by_group(values: list[float], groups: list[str]) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for v, g in zip(values, groups, strict=True):
        sums.setdefault(g, []).append(v)
    return {g: sum(v) / len(v) for g, v in sorted(sums.items())}


# ---------------------------------------------------------------------------------------------- classification
class Classification:
    """Sentence or sentence-pair classification (GLUE, XNLI, PAWS-X) and regression (STS-B)."""

    model_class = MmBertForSequenceClassification

    def __init__(self, settings: Settings):
        self.s = settings
        self.regression = settings.kind == "regression"

    def config(self) -> dict[str, Any]:
        if self.regression:
            return {"num_labels": 1, "id2label": {0: "score"}, "problem_type": "regression"}
        return {
            "id2label": dict(enumerate(map(str, self.s["labels"]))),
            "problem_type": "single_label_classification",
        }

    def encode(self, rows: list[Row], tokenizer, group: str) -> Encoded:
        cols = self.s["columns"]
        names = cols["text"]
        firsts = [_text(r, names[0], empty_ok=True) for r in rows]
        seconds = [_text(r, names[1], empty_ok=True) for r in rows] if len(names) > 1 else None
        if self.regression:
            labels = []
            for r in rows:
                value = _column(r, cols["label"])
                try:
                    labels.append(float(value))
                except (TypeError, ValueError):
                    raise BenchmarkDataError(
                        f"{r[0]}: column {cols['label']!r}: {value!r} is not a number"
                    ) from None
            if all(x == -1 for x in labels):
                raise BenchmarkDataError(
                    f"{rows[0][0]}: column {cols['label']!r} is -1 in every row: an unlabelled test "
                    "split cannot be scored (GLUE's test labels are private; score the validation split)"
                )
        else:
            labels = [_class_id(r, cols["label"], [str(x) for x in self.s["labels"]]) for r in rows]
        enc = tokenizer(firsts, seconds, truncation=True, max_length=self.s["max_length"])
        return Encoded(enc["input_ids"], labels, [group] * len(rows))

    def batch(self, enc: Encoded, idx: list[int], device: torch.device) -> dict[str, Any]:
        labels = torch.tensor([enc.targets[i] for i in idx], device=device)
        return {**_packed([enc.ids[i] for i in idx], device), "labels": labels}

    def evaluate(self, model, enc: Encoded, device: torch.device) -> dict[str, Any]:
        outs = _predict(
            model, enc, lambda idx: _packed([enc.ids[i] for i in idx], device), self.s["batch_size"], device
        )
        logits = torch.cat([o.logits.float().cpu() for _, o in outs])
        if self.regression:
            return score_groups(logits[:, 0].tolist(), enc.targets, enc.groups, metrics.regression_scores)
        n = len(self.s["labels"])
        return score_groups(
            logits.argmax(-1).tolist(),
            enc.targets,
            enc.groups,
            lambda p, g: metrics.classification_scores(p, g, n),
        )


def score_groups(pred: list, gold: list, groups: list[str], score) -> dict[str, Any]:
    """`score(pred, gold)` over all examples and per group (language / config):
    {"all": {...}, "groups": {group: {...}}}."""
    by_group: dict[str, tuple[list, list]] = {}
    for p, t, g in zip(pred, gold, groups, strict=True):
        by_group.setdefault(g, ([], []))
        by_group[g][0].append(p)
        by_group[g][1].append(t)
    return {"all": score(pred, gold), "groups": {g: score(p, t) for g, (p, t) in sorted(by_group.items())}}


# ---------------------------------------------------------------------------------------------- multiple choice
class MultipleChoice:
    """COPA / XCOPA: each (premise, choice) pair scored by one head, a softmax over the choices."""

    model_class = MmBertForMultipleChoice

    def __init__(self, settings: Settings):
        self.s = settings

    def config(self) -> dict[str, Any]:
        return {}

    def encode(self, rows: list[Row], tokenizer, group: str) -> Encoded:
        cols = self.s["columns"]
        first_t, second_t = self.s["template"]
        firsts, seconds, labels, n_choices = [], [], [], None
        for r in rows:
            choices = [_text(r, c) for c in cols["choices"]]
            n_choices = n_choices or len(choices)
            fields = {"premise": _text(r, cols["premise"]), "question": str(_column(r, cols["question"]))}
            for choice in choices:
                firsts.append(first_t.format(**fields, choice=choice))
                seconds.append(second_t.format(**fields, choice=choice))
            labels.append(_class_id(r, cols["label"], len(choices)))
        enc = tokenizer(firsts, seconds, truncation=True, max_length=self.s["max_length"])
        ids = enc["input_ids"]
        grouped = [ids[i * n_choices : (i + 1) * n_choices] for i in range(len(rows))]
        return Encoded(grouped, labels, [group] * len(rows), {"num_choices": n_choices})

    def batch(self, enc: Encoded, idx: list[int], device: torch.device) -> dict[str, Any]:
        labels = torch.tensor([enc.targets[i] for i in idx], device=device)
        return {**self._inputs(enc, idx, device), "labels": labels}

    def _inputs(self, enc: Encoded, idx: list[int], device: torch.device) -> dict[str, Any]:
        seqs = [s for i in idx for s in enc.ids[i]]
        return {**_packed(seqs, device), "num_choices": enc.extra["num_choices"]}

    def evaluate(self, model, enc: Encoded, device: torch.device) -> dict[str, Any]:
        outs = _predict(model, enc, lambda idx: self._inputs(enc, idx, device), self.s["batch_size"], device)
        pred = torch.cat([o.logits.float().cpu() for _, o in outs]).argmax(-1).tolist()
        return score_groups(pred, enc.targets, enc.groups, lambda p, g: {"accuracy": metrics.accuracy(p, g)})


# ---------------------------------------------------------------------------------------------- token classification
class TokenClassification:
    """NER (WikiANN): a tag per word, predicted at the word's first piece; entity-level F1."""

    model_class = MmBertForTokenClassification

    def __init__(self, settings: Settings):
        self.s = settings
        self.names = [str(x) for x in settings["labels"]]

    def config(self) -> dict[str, Any]:
        return {"id2label": dict(enumerate(self.names))}

    def encode(self, rows: list[Row], tokenizer, group: str) -> Encoded:
        cols = self.s["columns"]
        prefix = " " if self.s.get("prefix_space", True) else ""
        sentences, tags = [], []
        for r in rows:
            words, t = _column(r, cols["tokens"]), _column(r, cols["tags"])
            if not isinstance(words, list) or not isinstance(t, list) or len(words) != len(t) or not words:
                raise BenchmarkDataError(
                    f"{r[0]}: {cols['tokens']!r} and {cols['tags']!r} must be non-empty lists of one length"
                )
            sentences.append([str(w) for w in words])
            where = f"{r[0]}: column {cols['tags']!r}"
            tags.append([_label_id(x, self.names, f"{where}[{j}]") for j, x in enumerate(t)])
        # One tokenizer call for every word of the split: each word alone, with or without a leading space.
        flat = [prefix + w for words in sentences for w in words]
        pieces = tokenizer(flat, add_special_tokens=False)["input_ids"] if flat else []
        budget = self.s["max_length"] - 2
        ids, labels, firsts, k = [], [], [], 0
        for t in tags:
            seq, lab, first, full = [tokenizer.cls_token_id], [IGNORE_INDEX], [], False
            for tag in t:
                p = pieces[k]
                k += 1
                full = full or len(seq) - 1 + len(p) > budget  # the words from here on are cut
                if full or not p:  # cut by max_length, or no piece at all: predicted O
                    first.append(-1)
                    continue
                first.append(len(seq))
                seq += p
                lab += [tag] + [IGNORE_INDEX] * (len(p) - 1)
            ids.append(seq + [tokenizer.sep_token_id])
            labels.append(lab + [IGNORE_INDEX])
            firsts.append(first)
        return Encoded(ids, labels, [group] * len(rows), {"firsts": firsts, "tags": tags})

    def batch(self, enc: Encoded, idx: list[int], device: torch.device) -> dict[str, Any]:
        labels = torch.tensor([x for i in idx for x in enc.targets[i]], device=device)
        return {**_packed([enc.ids[i] for i in idx], device), "labels": labels}

    def evaluate(self, model, enc: Encoded, device: torch.device) -> dict[str, Any]:
        outs = _predict(
            model, enc, lambda idx: _packed([enc.ids[i] for i in idx], device), self.s["batch_size"], device
        )
        pred_tags: list[list[str]] = []
        for idx, out in outs:
            best = out.logits.argmax(-1).cpu()
            start = 0
            for i in idx:
                token_pred = best[start : start + len(enc.ids[i])].tolist()
                start += len(enc.ids[i])
                pred_tags.append(
                    [self.names[token_pred[f]] if f >= 0 else "O" for f in enc.extra["firsts"][i]]
                )
        gold = [[self.names[t] for t in tags] for tags in enc.extra["tags"]]
        return score_groups(pred_tags, gold, enc.groups, metrics.entity_scores)


# ---------------------------------------------------------------------------------------------- extractive QA
class QuestionAnswering:
    """SQuAD-format extractive QA: question + context windows (stride), start/end head, EM and F1."""

    model_class = MmBertForQuestionAnswering

    def __init__(self, settings: Settings):
        self.s = settings

    def config(self) -> dict[str, Any]:
        return {"num_labels": 2, "id2label": {0: "start", 1: "end"}}

    def encode(self, rows: list[Row], tokenizer, group: str) -> Encoded:
        cols = self.s["columns"]
        questions = [_text(r, cols["question"]).lstrip() for r in rows]
        contexts = [_text(r, cols["context"]) for r in rows]
        answers = [self._answers(r, cols["answers"], c) for r, c in zip(rows, contexts, strict=True)]
        self._check_question_lengths(rows, questions, tokenizer)
        try:
            enc = tokenizer(
                questions,
                contexts,
                truncation="only_second",
                max_length=self.s["max_length"],
                stride=self.s["doc_stride"],
                return_overflowing_tokens=True,
                return_offsets_mapping=True,
            )
        except Exception as e:  # tokenizers' error for a question longer than max_length
            raise BenchmarkDataError(f"{rows[0][0]}...: cannot fit question and context windows: {e}") from e
        ids, targets, feature_example, offsets = [], [], [], []
        for f, seq in enumerate(enc["input_ids"]):
            ex = enc["overflow_to_sample_mapping"][f]
            seq_ids = enc.sequence_ids(f)
            offs = [o if s == 1 else None for o, s in zip(enc["offset_mapping"][f], seq_ids, strict=True)]
            ids.append(seq)
            offsets.append(offs)
            feature_example.append(ex)
            targets.append(_span(offs, answers[ex]))
        lang_from = self.s.get("language_from")
        groups = [str(_column(r, cols["id"])).split("-", 1)[0] if lang_from == "id" else group for r in rows]
        extra = {"feature_example": feature_example, "offsets": offsets, "contexts": contexts,
                 "answers": [a["text"] for a in answers], "example_groups": groups}  # fmt: skip
        return Encoded(ids, targets, [groups[e] for e in feature_example], extra)

    def _check_question_lengths(self, rows: list[Row], questions: list[str], tokenizer) -> None:
        """Each window holds the whole question; the context's share must exceed the stride (tokenizers
        aborts the process otherwise, with a panic that is not an Exception)."""
        room = self.s["max_length"] - tokenizer.num_special_tokens_to_add(pair=True) - self.s["doc_stride"]
        lengths = [len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"]]
        for row, n in zip(rows, lengths, strict=True):
            if n >= room:
                raise BenchmarkDataError(
                    f"{row[0]}: the question is {n} tokens; with max_length={self.s['max_length']} and "
                    f"doc_stride={self.s['doc_stride']} a question must be under {room} tokens "
                    "(raise max_length or lower doc_stride)"
                )

    @staticmethod
    def _answers(row: Row, name: str, context: str) -> dict[str, list]:
        a = _column(row, name)
        if (
            not isinstance(a, dict)
            or not isinstance(a.get("text"), list)
            or not isinstance(a.get("answer_start"), list)
        ):
            raise BenchmarkDataError(
                f"{row[0]}: column {name!r} must be {{'text': [...], 'answer_start': [...]}}"
            )
        if len(a["text"]) != len(a["answer_start"]):
            raise BenchmarkDataError(
                f"{row[0]}: column {name!r}: as many answer_start as text entries needed"
            )
        for text, start in zip(a["text"], a["answer_start"], strict=True):
            if not isinstance(start, int) or not 0 <= start <= len(context) - len(text):
                raise BenchmarkDataError(
                    f"{row[0]}: answer {text!r} starts at {start!r}, outside the context"
                )
        return a

    def batch(self, enc: Encoded, idx: list[int], device: torch.device) -> dict[str, Any]:
        starts = torch.tensor([enc.targets[i][0] for i in idx], device=device)
        ends = torch.tensor([enc.targets[i][1] for i in idx], device=device)
        return {
            **_packed([enc.ids[i] for i in idx], device),
            "start_positions": starts,
            "end_positions": ends,
        }

    def evaluate(self, model, enc: Encoded, device: torch.device) -> dict[str, Any]:
        outs = _predict(
            model, enc, lambda idx: _packed([enc.ids[i] for i in idx], device), self.s["batch_size"], device
        )
        x = enc.extra
        best: dict[int, tuple[float, str]] = {}
        for idx, out in outs:
            start = 0
            s_all, e_all = out.start_logits.float().cpu(), out.end_logits.float().cpu()
            for i in idx:
                n = len(enc.ids[i])
                span = _best_span(s_all[start : start + n], e_all[start : start + n], x["offsets"][i],
                                  self.s["n_best"], self.s["max_answer_length"])  # fmt: skip
                start += n
                ex = x["feature_example"][i]
                if span is not None and (ex not in best or span[0] > best[ex][0]):
                    a, b = span[1]
                    best[ex] = (span[0], x["contexts"][ex][a:b].strip())
        predictions = [best.get(e, (0.0, ""))[1] for e in range(len(x["contexts"]))]
        mlqa = self.s.get("answer_normalization", "squad") == "mlqa"
        gold = [(a if a else [""], _mlqa_language(g) if mlqa else None)
                for a, g in zip(x["answers"], x["example_groups"], strict=True)]  # fmt: skip
        return score_groups(
            predictions,
            gold,
            x["example_groups"],
            lambda p, g: metrics.squad_scores(p, [a for a, _ in g], [lang for _, lang in g]),
        )


def _mlqa_language(group: str) -> str | None:
    """The context language of an MLQA config (`mlqa.zh.en` -> zh), whose answers MLQA's script
    normalizes; None (SQuAD's normalization) for any other config, such as SQuAD's own dev set."""
    parts = group.split(".")
    if len(parts) != 3 or parts[0] != "mlqa":
        return None
    if parts[1] not in metrics.MLQA_LANGUAGES:
        raise BenchmarkDataError(
            f"config {group}: MLQA's normalization knows {', '.join(metrics.MLQA_LANGUAGES)}, not {parts[1]!r}"
        )
    return parts[1]


def _span(offsets: list, answers: dict[str, list]) -> tuple[int, int]:
    """Token positions of the first answer inside this window, or (0, 0) (the first token) when it is not."""
    ctx = [i for i, o in enumerate(offsets) if o is not None]
    if not answers["text"] or not ctx:
        return 0, 0
    a_start = answers["answer_start"][0]
    a_end = a_start + len(answers["text"][0])
    first, last = ctx[0], ctx[-1]
    if offsets[first][0] > a_start or offsets[last][1] < a_end:
        return 0, 0
    s = first
    while s <= last and offsets[s][0] <= a_start:
        s += 1
    e = last
    while e >= first and offsets[e][1] >= a_end:
        e -= 1
    return s - 1, e + 1


def _best_span(start: torch.Tensor, end: torch.Tensor, offsets: list, n_best: int, max_len: int):
    """(score, (char start, char end)) of the best valid span in one window, or None."""
    k = min(n_best, start.numel())
    best = None
    for s in torch.topk(start, k).indices.tolist():
        for e in torch.topk(end, k).indices.tolist():
            if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_len:
                continue
            score = float(start[s] + end[e])
            if best is None or score > best[0]:
                best = (score, (offsets[s][0], offsets[e][1]))
    return best


KINDS = {
    "classification": Classification,
    "regression": Classification,
    "multiple_choice": MultipleChoice,
    "token": TokenClassification,
    "qa": QuestionAnswering,
}
