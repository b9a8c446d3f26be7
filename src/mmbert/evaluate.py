"""`mmbert evaluate`: per-language masked-LM accuracy and cross-lingual retrieval on the held-out UDHR.

    mmbert evaluate MODEL [--recipe RECIPE] [--languages SPEC] [--out DIR] [--json]

Two measurements on the bundled corpus's held-out articles (`mmbert.data.corpus.HELDOUT_ARTICLES`,
never trained on), for every language in it:

- Masked-LM: each held-out article (`<bos> text <eos>`, truncated to `--max-length`) is masked at a
  fixed 15% with BERT's 80/10/10 rule (`mmbert.data.masking`) from a generator seeded by the seed and
  the declaration's key, so every model sees the same masks whatever the language subset. Accuracy is
  top-1 over the masked positions, loss their mean cross-entropy; a language pools its documents
  (one held-out article of one declaration each).
- Retrieval (bitext mining, as in MTEB's bitext tasks): the articles are parallel, so each
  declaration's held-out units are matched against English's by cosine similarity of mean-pooled
  embeddings; accuracy@1 from the language to English and back. A unit is a paragraph when the
  article has as many paragraphs as the English one (almost always), else the whole article, so
  there are about 9 candidates (chance about 11%). A language pools its units.

Languages are grouped by the phase that introduced them: with `--recipe`, the first phase (or decay
variant) whose language set holds them; without, mmBERT's released sets (pre-training = mmbert-60,
mid-training = mmbert-110, decay-only = mmbert-1833). A group's scores are the mean over its languages,
with a 95% interval from a bootstrap over the held-out documents (resampled within each language, so
the languages stay those evaluated; `mmbert.stats`). The result keeps every document's raw counts
(`documents`), from which any other grouping, or a paired comparison of two models, is recomputed.
Any HF-format ModernBERT directory with its tokenizer works, the released mmBERT included.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mmbert.data.corpus import HELDOUT_ARTICLES, Declaration, load_udhr
from mmbert.data.masking import mask_tokens, never_masked
from mmbert.data.mixture import trained_languages
from mmbert.data.packing import PackedBatch
from mmbert.inference import DEFAULT_BATCH_TOKENS, embed_ids, fit_length, length_batches, load, tokenize
from mmbert.io import atomic_write_text
from mmbert.languages import in_language_set, resolve_languages
from mmbert.model import MmBertForMaskedLM
from mmbert.seeds import derive_seed
from mmbert.stats import bootstrap_weights, percentile_interval, with_interval
from mmbert.tokens import IGNORE_INDEX

logger = logging.getLogger(__name__)

ENGLISH = "eng_Latn"
MASK_RATE = 0.15
UNSEEN = "unseen"
# Without a recipe: mmBERT's own phases, by the released language sets.
RELEASED_GROUPS = (
    ("pre-training (mmbert-60)", "mmbert-60"),
    ("mid-training (mmbert-110)", "mmbert-110"),
    ("decay-only (mmbert-1833)", "mmbert-1833"),
)
NOT_IN_MMBERT = "not in mmBERT"


# ---------------------------------------------------------------------------------------------- groups
def _languages_of(phases: Iterable[Any], available: list[str]) -> set[str]:
    """The languages of `available` that any of `phases` trains on (`mmbert.data.mixture.trained_languages`)."""
    return set().union(*(trained_languages(phase, available) for phase in phases))


def recipe_groups(recipe: Any, langs: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """language -> name of the recipe phase that introduced it (else `unseen`), and the group order.

    A phase's languages are those its sources train on, as training resolves them
    (`mmbert.data.mixture.trained_languages`); the last phase counts every decay variant, so a
    language that only the all-language variant adds is introduced by that phase.
    """
    available = sorted(langs)
    groups: dict[str, str] = {}
    order = []
    for phase in recipe.phases:
        seen = _languages_of([phase] + [phase.with_variant(v) for v in phase.variants], available)
        new = [lang for lang in available if lang in seen and lang not in groups]
        for lang in new:
            groups[lang] = phase.name
        order.append(phase.name)
    for lang in available:
        groups.setdefault(lang, UNSEEN)
    if UNSEEN in groups.values():
        order.append(UNSEEN)
    return groups, order


def released_groups(langs: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """language -> the mmBERT phase that introduced it, by the released sets (else `not in mmBERT`)."""
    groups = {}
    for lang in langs:
        groups[lang] = next((g for g, s in RELEASED_GROUPS if in_language_set(lang, s)), NOT_IN_MMBERT)
    return groups, [g for g, _ in RELEASED_GROUPS] + [NOT_IN_MMBERT]


def variant_languages(recipe: Any, langs: Iterable[str]) -> dict[str, set[str]]:
    """Decay variant name -> the languages its run trains on (all phases: shared ones + its decay)."""
    available = sorted(langs)
    return {
        name: _languages_of(recipe.phases_for_variant(name), available) for name in recipe.variant_names()
    }


# ---------------------------------------------------------------------------------------------- eval set
@dataclass
class EvalSet:
    """The held-out text of the selected declarations, tokenized once (reusable across models)."""

    declarations: list[str]  # keys, sorted
    lang_of: dict[str, str]  # declaration key -> language
    mlm: list[tuple[str, list[int]]]  # (declaration key, ids of one held-out article)
    mlm_articles: list[int] = field(default_factory=list)  # the article number of each `mlm` entry
    # retrieval: for each declaration, (row indices into `units` of its units, of the matching English units)
    pairs: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)
    pair_articles: dict[str, list[int]] = field(default_factory=dict)  # the article of each of its units
    units: list[list[int]] = field(default_factory=list)  # token ids of every retrieval unit
    max_length: int = 512
    tokenizer_size: int = 0
    articles: list[int] = field(default_factory=lambda: sorted(HELDOUT_ARTICLES))

    @property
    def languages(self) -> list[str]:
        return sorted(set(self.lang_of.values()))


def heldout_languages() -> list[str]:
    """The languages of the bundled corpus that have held-out articles to evaluate (sorted)."""
    return sorted({d.lang for d in load_udhr() if any(a.number in HELDOUT_ARTICLES for a in d.articles)})


def _units(
    decl: Declaration, english: Declaration, articles: Iterable[int]
) -> list[tuple[tuple[int, int], str, str]]:
    """Aligned (unit id, text, English text) of a declaration's `articles`."""
    out = []
    for number in sorted(articles):
        a, e = decl.article(number), english.article(number)
        if a is None or e is None:
            continue
        paras, en_paras = a.text.split("\n"), e.text.split("\n")
        if len(paras) == len(en_paras) > 1:
            out += [((number, j), p, q) for j, (p, q) in enumerate(zip(paras, en_paras, strict=True))]
        else:
            out.append(((number, -1), a.text, e.text))
    return out


def build_eval_set(
    tokenizer: Any,
    languages: str | Sequence[str] | None = None,
    max_length: int = 512,
    articles: Iterable[int] | None = None,
) -> EvalSet:
    """Tokenize the held-out articles of the languages `languages` selects (a spec as in recipes).

    `articles` restricts the held-out articles used (a faster, noisier evaluation).
    """
    articles = sorted(HELDOUT_ARTICLES if articles is None else set(articles))
    if not articles or not set(articles) <= HELDOUT_ARTICLES:
        raise ValueError(
            f"articles must be a non-empty subset of the held-out articles {sorted(HELDOUT_ARTICLES)}"
        )

    decls = [d for d in load_udhr() if any(a.number in articles for a in d.articles)]
    by_key = {d.key: d for d in decls}
    if ENGLISH not in {d.lang for d in decls}:
        raise RuntimeError(f"the bundled corpus has no {ENGLISH} declaration to align retrieval with")
    if languages is not None:
        keep = set(resolve_languages(languages, sorted({d.lang for d in decls} | set(by_key))))
        decls = [d for d in decls if d.lang in keep or d.key in keep]
    english = next(d for d in load_udhr() if d.lang == ENGLISH)
    lang_of = {d.key: d.lang for d in decls}

    mlm_texts = [(d.key, a.number, a.text) for d in decls for a in d.articles if a.number in articles]
    mlm_ids = tokenize(tokenizer, [t for _, _, t in mlm_texts], max_length)

    unit_index: dict[tuple[str, tuple[int, int]], int] = {}
    unit_texts: list[str] = []

    def add(owner: str, uid: tuple[int, int], text: str) -> int:
        if (owner, uid) not in unit_index:
            unit_index[owner, uid] = len(unit_texts)
            unit_texts.append(text)
        return unit_index[owner, uid]

    pairs, pair_articles = {}, {}
    for d in decls:
        if d.lang == ENGLISH:
            continue
        units = _units(d, english, articles)
        rows = [add(d.key, uid, text) for uid, text, _ in units]
        en_rows = [add(ENGLISH, uid, en_text) for uid, _, en_text in units]
        if len(rows) > 1:
            pairs[d.key] = (rows, en_rows)
            pair_articles[d.key] = [number for (number, _), _, _ in units]
    return EvalSet(
        declarations=sorted(lang_of),
        lang_of=lang_of,
        mlm=[(k, ids) for (k, _, _), ids in zip(mlm_texts, mlm_ids, strict=True)],
        mlm_articles=[number for _, number, _ in mlm_texts],
        pairs=pairs,
        pair_articles=pair_articles,
        units=tokenize(tokenizer, unit_texts, max_length),
        max_length=max_length,
        tokenizer_size=len(tokenizer),
        articles=articles,
    )


# ---------------------------------------------------------------------------------------------- scores
def masked_inputs(
    eval_set: EvalSet, vocab_size: int, special_ids: Sequence[int], mask_id: int, seed: int, rate: float
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed masks: per MLM sequence (input ids, labels), drawn per declaration in a fixed order."""
    gens: dict[str, torch.Generator] = {}
    out = []
    for key, ids in eval_set.mlm:
        gen = gens.setdefault(key, torch.Generator().manual_seed(derive_seed(seed, key)))
        out.append(mask_tokens(torch.tensor(ids), rate, gen, vocab_size, special_ids, mask_id))
    return out


@torch.inference_mode()
def mlm_scores(
    model: MmBertForMaskedLM,
    eval_set: EvalSet,
    masked: list[tuple[torch.Tensor, torch.Tensor]],
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    progress: bool = False,
) -> np.ndarray:
    """Per MLM sequence (in `eval_set.mlm`'s order): summed loss, correct predictions, masked tokens; (n, 3)."""
    model.eval()
    device = next(model.parameters()).device
    out = np.zeros((len(masked), 3), dtype=np.float64)
    batches = length_batches([len(ids) for ids, _ in masked], batch_tokens)
    for batch in tqdm(batches, desc="MLM", unit="batch", disable=not progress, dynamic_ncols=True):
        packed = PackedBatch.from_sequences([masked[i][0].tolist() for i in batch], device)
        labels = torch.cat([masked[i][1] for i in batch]).to(device)  # (N,)
        keep = labels != IGNORE_INDEX
        if not bool(keep.any()):
            continue
        logits = model(**packed.model_inputs(device), prediction_mask=keep).logits
        target = labels[keep]  # (M,)
        loss = F.cross_entropy(logits.float(), target, reduction="none")
        correct = logits.argmax(-1) == target
        lengths = torch.diff(packed.cu_seqlens).long()
        seq = torch.repeat_interleave(torch.arange(len(batch), device=device), lengths)[keep]  # (M,)
        per = torch.zeros(len(batch), 3, dtype=torch.float64, device=device)
        per[:, 0].index_add_(0, seq, loss.double())
        per[:, 1].index_add_(0, seq, correct.double())
        per[:, 2] = torch.bincount(seq, minlength=len(batch)).double()
        out[batch] = per.cpu().numpy()
    return out


def retrieval_scores(
    model: MmBertForMaskedLM,
    eval_set: EvalSet,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    progress: bool = False,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per declaration, per unit: whether it retrieves its English twin (x2en), and is retrieved from it (en2x)."""
    if not eval_set.pairs:
        logger.info("retrieval skipped: no language besides English to pair with its English twin")
        return {}
    vectors = embed_ids(model, eval_set.units, batch_tokens=batch_tokens, progress=progress)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    out = {}
    for key, (rows, en_rows) in eval_set.pairs.items():
        sim = vectors[rows] @ vectors[en_rows].T  # (n, n): language unit i vs English unit j
        truth = np.arange(len(rows))
        out[key] = (sim.argmax(1) == truth, sim.argmax(0) == truth)
    return out


@dataclass
class DocumentScores:
    """The raw counts of every held-out document (one article of one declaration): all summaries sum these.

    A language's MLM loss and accuracy pool its documents' masked tokens; its retrieval accuracy pools
    its documents' units. Reweighting the documents (`weights` in `language_scores`) gives a bootstrap
    sample.
    """

    declarations: list[str]
    langs: list[str]
    articles: list[int]
    loss: np.ndarray  # (n,) summed cross-entropy over the masked tokens
    correct: np.ndarray  # (n,) top-1 hits among them
    masked: np.ndarray  # (n,) masked tokens
    x2en: np.ndarray  # (n,) units that retrieve their English twin
    en2x: np.ndarray  # (n,) units their English twin retrieves
    units: np.ndarray  # (n,) retrieval units (0 for English, the pivot, or without aligned units)
    chance: np.ndarray  # (n,) expected hits at random: the sum over its units of 1 / candidates

    COLUMNS = ("loss", "correct", "masked", "x2en", "en2x", "units", "chance")

    def __len__(self) -> int:
        return len(self.langs)

    def to_dict(self) -> dict[str, list]:
        out: dict[str, list] = {
            "declaration": self.declarations,
            "lang": self.langs,
            "article": self.articles,
        }
        return {**out, **{c: getattr(self, c).tolist() for c in self.COLUMNS}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence]) -> DocumentScores:
        arrays = {c: np.asarray(data[c], dtype=np.float64) for c in cls.COLUMNS}
        return cls(list(data["declaration"]), list(data["lang"]), [int(a) for a in data["article"]], **arrays)


def document_scores(
    eval_set: EvalSet, mlm: np.ndarray, retrieval: Mapping[str, tuple[np.ndarray, np.ndarray]]
) -> DocumentScores:
    """Gather `mlm_scores` and `retrieval_scores` per document."""
    index = {
        (key, a): i for i, ((key, _), a) in enumerate(zip(eval_set.mlm, eval_set.mlm_articles, strict=True))
    }
    n = len(index)
    x2en, en2x, units, chance = (np.zeros(n) for _ in range(4))
    for key, (hits_x2en, hits_en2x) in retrieval.items():
        for article, a, b in zip(eval_set.pair_articles[key], hits_x2en, hits_en2x, strict=True):
            i = index[key, article]
            x2en[i] += a
            en2x[i] += b
            units[i] += 1
            chance[i] += 1 / len(hits_x2en)
    return DocumentScores(
        declarations=[k for k, _ in eval_set.mlm],
        langs=[eval_set.lang_of[k] for k, _ in eval_set.mlm],
        articles=list(eval_set.mlm_articles),
        loss=mlm[:, 0],
        correct=mlm[:, 1],
        masked=mlm[:, 2],
        x2en=x2en,
        en2x=en2x,
        units=units,
        chance=chance,
    )


# ---------------------------------------------------------------------------------------------- summaries
METRICS = ("mlm_loss", "mlm_accuracy", "retrieval_x2en", "retrieval_en2x", "retrieval")
# The metrics whose interval the summaries give (the directions are their means).
INTERVAL_METRICS = ("mlm_loss", "mlm_accuracy", "retrieval")
N_BOOT = 1000


def _nanmean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean over `axis` ignoring NaNs; NaN (silently) where every value is NaN."""
    finite = np.isfinite(x)
    count = finite.sum(axis=axis)
    total = np.where(finite, x, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def language_scores(
    docs: DocumentScores, weights: np.ndarray | None = None
) -> tuple[list[str], dict[str, np.ndarray]]:
    """The languages (sorted) and each metric per language: (L,) arrays, or (B, L) under `weights` (B, n).

    NaN where a language has nothing to score (no masked token; no retrieval unit, e.g. English).
    """
    langs = sorted(set(docs.langs))
    code = np.searchsorted(langs, docs.langs)
    order = np.argsort(code, kind="stable")
    starts = np.searchsorted(code[order], np.arange(len(langs)))
    w = np.ones((1, len(docs))) if weights is None else np.asarray(weights, dtype=np.float64)

    def sums(column: np.ndarray) -> np.ndarray:  # (B, L): per-language weighted sums
        return np.add.reduceat(w[:, order] * column[order], starts, axis=1)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)

    masked, units = sums(docs.masked), sums(docs.units)
    x2en, en2x = ratio(sums(docs.x2en), units), ratio(sums(docs.en2x), units)
    out = {
        "mlm_loss": ratio(sums(docs.loss), masked),
        "mlm_accuracy": ratio(sums(docs.correct), masked),
        "retrieval_x2en": x2en,
        "retrieval_en2x": en2x,
        "retrieval": (x2en + en2x) / 2,
        "retrieval_chance": ratio(sums(docs.chance), units),
    }
    if weights is None:
        out = {k: v[0] for k, v in out.items()}
    return langs, out


def group_scores(
    docs: DocumentScores,
    groups: Mapping[str, str],
    group_order: Sequence[str],
    weights: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """Per group (in `group_order`, then `all`): its number of languages and each metric's mean over them.

    The values are floats, or (B,) arrays under bootstrap `weights` (B, n); groups without a language
    are left out.
    """
    langs, per = language_scores(docs, weights)
    out: dict[str, dict[str, Any]] = {}
    for group in [*group_order, "all"]:
        cols = [i for i, lang in enumerate(langs) if group == "all" or groups.get(lang, UNSEEN) == group]
        if cols:
            out[group] = {"languages": len(cols), **{k: _nanmean(v[..., cols]) for k, v in per.items()}}
    return out


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else None


def _number(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def summarize(
    docs: DocumentScores,
    groups: Mapping[str, str],
    group_order: Sequence[str],
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Group means with 95% bootstrap intervals over the held-out documents (`ci`: metric -> [low, high])."""
    point = group_scores(docs, groups, group_order)
    weights = bootstrap_weights(docs.langs, n_boot, seed)
    boot = group_scores(docs, groups, group_order, weights)
    out = {}
    for group, values in point.items():
        row: dict[str, Any] = {"languages": values["languages"]}
        row.update({k: _number(values[k]) for k in (*METRICS, "retrieval_chance")})
        row["ci"] = {}
        for k in INTERVAL_METRICS:
            interval = percentile_interval(boot[group][k], values[k])
            row["ci"][k] = [interval.low, interval.high]
        out[group] = row
    return out


def evaluate_model(
    model: MmBertForMaskedLM,
    tokenizer: Any,
    eval_set: EvalSet,
    groups: Mapping[str, str],
    group_order: Sequence[str],
    seed: int = 0,
    mask_rate: float = MASK_RATE,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    progress: bool = False,
    n_boot: int = N_BOOT,
) -> dict[str, Any]:
    """MLM and retrieval scores per language and per group, with the per-document counts (`documents`).

    The group means come with 95% intervals from `n_boot` bootstrap resamples of the documents within
    each language (seeded by `seed`).
    """
    if eval_set.tokenizer_size != len(tokenizer):
        raise ValueError("the eval set was tokenized with a different tokenizer")
    t0 = time.perf_counter()
    specials = never_masked(tokenizer)
    masked = masked_inputs(
        eval_set, model.config.vocab_size, specials, tokenizer.mask_token_id, seed, mask_rate
    )
    mlm = mlm_scores(model, eval_set, masked, batch_tokens, progress)
    docs = document_scores(eval_set, mlm, retrieval_scores(model, eval_set, batch_tokens, progress))

    langs, per = language_scores(docs)
    candidates: dict[str, list[int]] = {}
    for key, (rows, _) in eval_set.pairs.items():
        candidates.setdefault(eval_set.lang_of[key], []).append(len(rows))
    per_lang: dict[str, dict[str, Any]] = {}
    for i, lang in enumerate(langs):
        mine = [j for j, x in enumerate(docs.langs) if x == lang]
        per_lang[lang] = {
            "group": groups.get(lang, UNSEEN),
            "declarations": len({docs.declarations[j] for j in mine}),
            "masked_tokens": int(sum(docs.masked[j] for j in mine)),
            **{
                k: _number(per[k][i])
                for k in ("mlm_accuracy", "mlm_loss", "retrieval_x2en", "retrieval_en2x")
            },
            "retrieval_candidates": _mean(candidates.get(lang, [])),
        }
    return {
        "settings": {
            "mask_rate": mask_rate,
            "seed": seed,
            "max_length": eval_set.max_length,
            "heldout_articles": eval_set.articles,
            "declarations": len(eval_set.declarations),
            "documents": len(docs),
            "masked_tokens": int(docs.masked.sum()),
            "bootstrap": {
                "resamples": n_boot,
                "over": "held-out documents within each language",
                "level": 0.95,
            },
        },
        "groups": summarize(docs, groups, group_order, n_boot, seed),
        "languages": per_lang,
        "documents": docs.to_dict(),
        "seconds": time.perf_counter() - t0,
    }


# ---------------------------------------------------------------------------------------------- output
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def markdown_table(result: Mapping[str, Any], title: str | None = None) -> str:
    """The per-group table of one evaluation (accuracies in %, 95% bootstrap intervals in brackets)."""
    lines = [f"### {title}", ""] if title else []
    lines += [
        "| group | languages | MLM acc % | MLM loss | retrieval % | x→en % | en→x % | chance % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    pct = lambda x: f"{100 * x:.1f}"  # noqa: E731
    for group, s in result["groups"].items():
        ci = s.get("ci", {})
        lines.append(
            f"| {group} | {s['languages']} | {with_interval(s['mlm_accuracy'], ci.get('mlm_accuracy'), pct)} "
            f"| {with_interval(s['mlm_loss'], ci.get('mlm_loss'), lambda x: f'{x:.3f}')} "
            f"| {with_interval(s['retrieval'], ci.get('retrieval'), pct)} | {_pct(s['retrieval_x2en'])} "
            f"| {_pct(s['retrieval_en2x'])} | {_pct(s['retrieval_chance'])} |"
        )
    st = result["settings"]
    boot = st.get("bootstrap", {})
    lines += [
        "",
        f"Held-out UDHR articles {st['heldout_articles']}, {st['declarations']} declarations, "
        f"{st['masked_tokens']:,} masked tokens at {st['mask_rate']:.0%} (seed {st['seed']}); "
        "retrieval = accuracy@1 over the aligned held-out paragraphs, mean of both directions; group scores "
        "are means over languages"
        + (
            f"; [95% interval: {boot['resamples']} bootstrap resamples of the {boot['over']}]."
            if boot
            else "."
        ),
    ]
    return "\n".join(lines)


def evaluate_dir(
    model_dir: str | Path,
    recipe: Any | None = None,
    languages: str | Sequence[str] | None = None,
    max_length: int = 512,
    seed: int = 0,
    device: str | None = None,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    articles: Iterable[int] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate one HF-format model directory (with tokenizer files)."""
    model, tokenizer = load(model_dir, device)
    eval_set = build_eval_set(tokenizer, languages, fit_length(model, max_length), articles)
    if recipe is not None:
        groups, order = recipe_groups(recipe, eval_set.languages)
        grouping = f"recipe {recipe.name or '?'}: phase that introduced the language"
    else:
        groups, order = released_groups(eval_set.languages)
        grouping = "mmBERT's released language sets"
    result = evaluate_model(
        model, tokenizer, eval_set, groups, order, seed, batch_tokens=batch_tokens, progress=progress
    )
    return {"model": str(model_dir), "grouping": grouping, **result}


def write_result(result: Mapping[str, Any], out: str | Path, stem: str = "eval") -> tuple[Path, Path]:
    """`DIR/<stem>.json` and `DIR/<stem>.md`, atomically."""
    out = Path(out)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    atomic_write_text(json_path, json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    title = f"{result.get('model', '')} ({result.get('grouping', '')})"
    atomic_write_text(md_path, markdown_table(result, title) + "\n")
    return json_path, md_path
