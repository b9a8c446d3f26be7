"""The benchmarks' metrics, written out: GLUE's, SQuAD's exact match and F1, entity-level F1.

Scores are fractions in [0, 1] (Pearson and Matthews in [-1, 1]); reports print them x 100 as the
paper's tables do.
"""

from __future__ import annotations

import math
import re
import string
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


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's normalization: lower case, no punctuation, no English articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def token_f1(prediction: str, truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = Counter(pred) & Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """Exact match and F1, each the best over an example's gold answers, averaged over examples."""
    em = [max(exact_match(p, a) for a in gold) for p, gold in zip(predictions, answers, strict=True)]
    f1 = [max(token_f1(p, a) for a in gold) for p, gold in zip(predictions, answers, strict=True)]
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
