"""The benchmarks' metrics, written out: GLUE's, SQuAD's exact match and F1, entity-level F1.

Scores are fractions in [0, 1] (Pearson and Matthews in [-1, 1]); reports print them x 100 as the
paper's tables do.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence


# ---------------------------------------------------------------------------------------------- GLUE
def accuracy(pred: Sequence[int], gold: Sequence[int]) -> float:
    return sum(p == g for p, g in zip(pred, gold, strict=True)) / len(gold)


def binary_f1(pred: Sequence[int], gold: Sequence[int], positive: int = 1) -> float:
    """F1 of the positive class (MRPC, QQP)."""
    tp = sum(p == positive and g == positive for p, g in zip(pred, gold, strict=True))
    fp = sum(p == positive and g != positive for p, g in zip(pred, gold, strict=True))
    fn = sum(p != positive and g == positive for p, g in zip(pred, gold, strict=True))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def matthews(pred: Sequence[int], gold: Sequence[int]) -> float:
    """Matthews correlation (CoLA), multi-class form (Gorodkin's R_K); 0 when undefined, as sklearn."""
    labels = sorted(set(gold) | set(pred))
    n = len(gold)
    correct = sum(p == g for p, g in zip(pred, gold, strict=True))
    t = Counter(gold)
    p = Counter(pred)
    cov_ytyp = correct * n - sum(t[k] * p[k] for k in labels)
    cov_ypyp = n * n - sum(p[k] ** 2 for k in labels)
    cov_ytyt = n * n - sum(t[k] ** 2 for k in labels)
    denom = math.sqrt(cov_ytyt * cov_ypyp)
    return cov_ytyp / denom if denom else 0.0


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else 0.0


def _ranks(x: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their mean rank."""
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    return pearson(_ranks(x), _ranks(y))


def classification_scores(pred: Sequence[int], gold: Sequence[int], num_labels: int) -> dict[str, float]:
    out = {"accuracy": accuracy(pred, gold), "matthews": matthews(pred, gold)}
    if num_labels == 2:
        out["f1"] = binary_f1(pred, gold)
    return out


def regression_scores(pred: Sequence[float], gold: Sequence[float]) -> dict[str, float]:
    mse = sum((p - g) ** 2 for p, g in zip(pred, gold, strict=True)) / len(gold)
    return {"pearson": pearson(pred, gold), "spearman": spearman(pred, gold), "mse": mse}


# ---------------------------------------------------------------------------------------------- SQuAD
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)
# MLQA's official script (facebookresearch/MLQA mlqa_evaluation_v1.py), which XTREME scores MLQA with:
# Unicode punctuation, each language's articles, Chinese split into characters. Keyed by the context's
# language (MLQA's configs are mlqa.CONTEXT.QUESTION).
_MLQA_ARTICLES = {
    "en": re.compile(r"\b(a|an|the)\b"),
    "es": re.compile(r"\b(un|una|unos|unas|el|la|los|las)\b"),
    "vi": re.compile(r"\b(của|là|cái|chiếc|những)\b"),
    "de": re.compile(r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b"),
    "ar": re.compile(r"\sال^|ال"),
    "hi": None,
    "zh": None,
}
MLQA_LANGUAGES = tuple(_MLQA_ARTICLES)
_CJK = re.compile(r"[\u4e00-\u9fa5]")


def normalize_answer(text: str, mlqa_language: str | None = None) -> str:
    """SQuAD v1.1's normalization: lower case, no punctuation, no English articles, single spaces; with
    `mlqa_language`, MLQA's: no Unicode punctuation, that language's articles, Chinese by character."""
    if mlqa_language is None:
        text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
        return " ".join(_ARTICLES.sub(" ", text).split())
    if mlqa_language not in _MLQA_ARTICLES:
        raise ValueError(f"MLQA's normalization knows {', '.join(MLQA_LANGUAGES)}, not {mlqa_language!r}")
    text = "".join(ch for ch in text.lower() if not _is_punctuation(ch))
    articles = _MLQA_ARTICLES[mlqa_language]
    if articles is not None:
        text = articles.sub(" ", text)
    if mlqa_language == "zh":
        return " ".join(_CJK.sub(lambda m: f" {m.group(0)} ", text).split())
    return " ".join(text.split())


def _is_punctuation(ch: str) -> bool:
    return ch in _PUNCT or unicodedata.category(ch).startswith("P")


def exact_match(prediction: str, truth: str, mlqa_language: str | None = None) -> float:
    return float(normalize_answer(prediction, mlqa_language) == normalize_answer(truth, mlqa_language))


def token_f1(prediction: str, truth: str, mlqa_language: str | None = None) -> float:
    pred = normalize_answer(prediction, mlqa_language).split()
    gold = normalize_answer(truth, mlqa_language).split()
    common = Counter(pred) & Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(
    predictions: Sequence[str],
    answers: Sequence[Sequence[str]],
    mlqa_languages: Sequence[str | None] | None = None,
) -> dict[str, float]:
    """Exact match and F1, each the best over an example's gold answers, averaged over examples; with
    `mlqa_languages` (one per example), each example normalized as MLQA's script does for it."""
    langs = mlqa_languages or [None] * len(predictions)
    rows = list(zip(predictions, answers, langs, strict=True))
    em = [max(exact_match(p, a, lang) for a in gold) for p, gold, lang in rows]
    f1 = [max(token_f1(p, a, lang) for a in gold) for p, gold, lang in rows]
    return {"exact_match": sum(em) / len(em), "f1": sum(f1) / len(f1)}


# ---------------------------------------------------------------------------------------------- entities
def entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """(type, first, last) spans of a BIO sequence, read as seqeval reads IOB2 by default: an entity
    starts at B-X, or at I-X that does not continue an X entity, and ends before the next tag that
    does not continue it."""
    spans = set()
    kind, start = None, 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, label = tag.partition("-")
        continues = prefix == "I" and label == kind
        if kind is not None and not continues:
            spans.add((kind, start, i - 1))
            kind = None
        if prefix == "B" or (prefix == "I" and not continues):
            kind, start = label, i
    return spans


def entity_scores(pred: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro precision, recall and F1 over entities (exact type and span), as seqeval's default."""
    tp = n_pred = n_gold = 0
    for p, g in zip(pred, gold, strict=True):
        ps, gs = entities(p), entities(g)
        tp += len(ps & gs)
        n_pred += len(ps)
        n_gold += len(gs)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}
