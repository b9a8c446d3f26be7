"""`mmbert evaluate`: per-language masked-LM accuracy and cross-lingual retrieval on the held-out UDHR.

    mmbert evaluate MODEL [--recipe RECIPE] [--languages SPEC] [--out DIR] [--json]

Two measurements on the bundled corpus's held-out articles (`mmbert.data.corpus.HELDOUT_ARTICLES`,
never trained on), for every language in it:

- Masked-LM: each held-out article (`<bos> text <eos>`, truncated to `--max-length`) is masked at a
  fixed 15% with BERT's 80/10/10 rule (`mmbert.data.masking`) from a generator seeded by the seed and
  the declaration's key, so every model sees the same masks whatever the language subset. Accuracy is
  top-1 over the masked positions, loss their mean cross-entropy; a language pools its declarations.
- Retrieval (bitext mining, as in MTEB's bitext tasks): the articles are parallel, so each
  declaration's held-out units are matched against English's by cosine similarity of mean-pooled
  embeddings; accuracy@1 from the language to English and back. A unit is a paragraph when the
  article has as many paragraphs as the English one (almost always), else the whole article, so
  there are about 9 candidates (chance about 11%).

Languages are grouped by the phase that introduced them: with `--recipe`, the first phase (or decay
variant) whose language set holds them; without, mmBERT's released sets (pre-training = mmbert-60,
mid-training = mmbert-110, decay-only = mmbert-1833). A group's scores are the mean over its languages.
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
from mmbert.data.masking import mask_tokens
from mmbert.data.packing import PackedBatch
from mmbert.inference import DEFAULT_BATCH_TOKENS, embed_ids, fit_length, length_batches, load, tokenize
from mmbert.io import atomic_write_text
from mmbert.languages import in_language_set, resolve_languages
from mmbert.model import MmBertForMaskedLM
from mmbert.seeds import derive_seed
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
def _resolve(spec: str | list[str], available: list[str]) -> set[str]:
    """The available keys a language spec selects; items the corpus does not have are ignored."""
    items = spec.split(",") if isinstance(spec, str) else spec
    out: set[str] = set()
    for item in items:
        try:
            out.update(resolve_languages(item.strip(), available))
        except ValueError:
            continue  # e.g. `code`, or a language the bundled corpus lacks
    return out


def recipe_groups(recipe: Any, langs: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """language -> name of the recipe phase that introduced it (else `unseen`), and the group order.

    A phase's languages are its own plus its sources'; the last phase counts every decay variant, so a
    language that only the all-language variant adds is introduced by that phase.
    """
    available = sorted(langs)
    groups: dict[str, str] = {}
    order = []
    for phase in recipe.phases:
        versions = [phase] + [phase.with_variant(v) for v in phase.variants]
        seen: set[str] = set()
        for version in versions:
            seen |= _resolve(version.languages, available)
            for source in version.sources:
                if source.languages is not None:
                    seen |= _resolve(source.languages, available)
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
    out = {}
    for name in recipe.variant_names():
        seen: set[str] = set()
        for phase in recipe.phases_for_variant(name):
            seen |= _resolve(phase.languages, available)
            for source in phase.sources:
                if source.languages is not None:
                    seen |= _resolve(source.languages, available)
        out[name] = seen
    return out


# ---------------------------------------------------------------------------------------------- eval set
@dataclass
class EvalSet:
    """The held-out text of the selected declarations, tokenized once (reusable across models)."""

    declarations: list[str]  # keys, sorted
    lang_of: dict[str, str]  # declaration key -> language
    mlm: list[tuple[str, list[int]]]  # (declaration key, ids of one held-out article)
    # retrieval: for each declaration, (row indices into `units` of its units, of the matching English units)
    pairs: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)
    units: list[list[int]] = field(default_factory=list)  # token ids of every retrieval unit
    max_length: int = 512
    tokenizer_size: int = 0
    articles: list[int] = field(default_factory=lambda: sorted(HELDOUT_ARTICLES))

    @property
    def languages(self) -> list[str]:
        return sorted(set(self.lang_of.values()))


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

    mlm_texts = [(d.key, a.text) for d in decls for a in d.articles if a.number in articles]
    mlm_ids = tokenize(tokenizer, [t for _, t in mlm_texts], max_length)

    unit_index: dict[tuple[str, tuple[int, int]], int] = {}
    unit_texts: list[str] = []

    def add(owner: str, uid: tuple[int, int], text: str) -> int:
        if (owner, uid) not in unit_index:
            unit_index[owner, uid] = len(unit_texts)
            unit_texts.append(text)
        return unit_index[owner, uid]

    pairs = {}
    for d in decls:
        if d.lang == ENGLISH:
            continue
        rows, en_rows = [], []
        for uid, text, en_text in _units(d, english, articles):
            rows.append(add(d.key, uid, text))
            en_rows.append(add(ENGLISH, uid, en_text))
        if len(rows) > 1:
            pairs[d.key] = (rows, en_rows)
    return EvalSet(
        declarations=sorted(lang_of),
        lang_of=lang_of,
        mlm=[(k, ids) for (k, _), ids in zip(mlm_texts, mlm_ids, strict=True)],
        pairs=pairs,
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
) -> dict[str, dict[str, float]]:
    """Per declaration: summed loss, correct predictions and number of masked tokens."""
    model.eval()
    device = next(model.parameters()).device
    sums = {k: {"loss": 0.0, "correct": 0, "masked": 0} for k in eval_set.declarations}
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
        loss_per = torch.zeros(len(batch), dtype=torch.float64, device=device).index_add_(
            0, seq, loss.double()
        )
        corr_per = torch.zeros(len(batch), dtype=torch.long, device=device).index_add_(0, seq, correct.long())
        n_per = torch.bincount(seq, minlength=len(batch))
        for j, i in enumerate(batch):
            s = sums[eval_set.mlm[i][0]]
            s["loss"] += float(loss_per[j])
            s["correct"] += int(corr_per[j])
            s["masked"] += int(n_per[j])
    return sums


def retrieval_scores(
    model: MmBertForMaskedLM,
    eval_set: EvalSet,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    progress: bool = False,
) -> dict[str, dict[str, float]]:
    """Per declaration: accuracy@1 to English and from English, and the number of candidates."""
    vectors = embed_ids(model, eval_set.units, batch_tokens=batch_tokens, progress=progress)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    out = {}
    for key, (rows, en_rows) in eval_set.pairs.items():
        sim = vectors[rows] @ vectors[en_rows].T  # (n, n): language unit i vs English unit j
        truth = np.arange(len(rows))
        out[key] = {
            "x2en": float(np.mean(sim.argmax(1) == truth)),
            "en2x": float(np.mean(sim.argmax(0) == truth)),
            "candidates": len(rows),
        }
    return out


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else None


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
) -> dict[str, Any]:
    """MLM and retrieval scores per language and per group (the `eval.json` structure minus `model`)."""
    if eval_set.tokenizer_size != len(tokenizer):
        raise ValueError("the eval set was tokenized with a different tokenizer")
    t0 = time.perf_counter()
    specials = sorted({int(i) for i in tokenizer.all_special_ids} | {tokenizer.mask_token_id})
    masked = masked_inputs(
        eval_set, model.config.vocab_size, specials, tokenizer.mask_token_id, seed, mask_rate
    )
    mlm = mlm_scores(model, eval_set, masked, batch_tokens, progress)
    ret = retrieval_scores(model, eval_set, batch_tokens, progress)

    per_lang: dict[str, dict[str, Any]] = {}
    for lang in eval_set.languages:
        keys = [k for k in eval_set.declarations if eval_set.lang_of[k] == lang]
        n = sum(mlm[k]["masked"] for k in keys)
        r = [ret[k] for k in keys if k in ret]
        per_lang[lang] = {
            "group": groups.get(lang, UNSEEN),
            "declarations": len(keys),
            "masked_tokens": n,
            "mlm_accuracy": sum(mlm[k]["correct"] for k in keys) / n if n else None,
            "mlm_loss": sum(mlm[k]["loss"] for k in keys) / n if n else None,
            "retrieval_x2en": _mean(x["x2en"] for x in r),
            "retrieval_en2x": _mean(x["en2x"] for x in r),
            "retrieval_candidates": _mean(x["candidates"] for x in r),
        }
    summary = {}
    for group in [*group_order, "all"]:
        langs = [lang for lang, s in per_lang.items() if group == "all" or s["group"] == group]
        if not langs:
            continue
        rows = [per_lang[lang] for lang in langs]
        x2en, en2x = _mean(r["retrieval_x2en"] for r in rows), _mean(r["retrieval_en2x"] for r in rows)
        summary[group] = {
            "languages": len(langs),
            "mlm_accuracy": _mean(r["mlm_accuracy"] for r in rows),
            "mlm_loss": _mean(r["mlm_loss"] for r in rows),
            "retrieval_x2en": x2en,
            "retrieval_en2x": en2x,
            "retrieval": _mean([x2en, en2x]) if x2en is not None else None,
            "retrieval_chance": _mean(
                1 / r["retrieval_candidates"] for r in rows if r["retrieval_candidates"]
            ),
        }
    return {
        "settings": {
            "mask_rate": mask_rate,
            "seed": seed,
            "max_length": eval_set.max_length,
            "heldout_articles": eval_set.articles,
            "declarations": len(eval_set.declarations),
            "masked_tokens": sum(s["masked"] for s in mlm.values()),
        },
        "groups": summary,
        "languages": per_lang,
        "seconds": time.perf_counter() - t0,
    }


# ---------------------------------------------------------------------------------------------- output
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def markdown_table(result: Mapping[str, Any], title: str | None = None) -> str:
    """The per-group table of one evaluation (accuracies in %)."""
    lines = [f"### {title}", ""] if title else []
    lines += [
        "| group | languages | MLM acc % | MLM loss | retrieval x→en % | en→x % | chance % |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for group, s in result["groups"].items():
        loss = "-" if s["mlm_loss"] is None else f"{s['mlm_loss']:.3f}"
        lines.append(
            f"| {group} | {s['languages']} | {_pct(s['mlm_accuracy'])} | {loss} | {_pct(s['retrieval_x2en'])} "
            f"| {_pct(s['retrieval_en2x'])} | {_pct(s['retrieval_chance'])} |"
        )
    st = result["settings"]
    lines += [
        "",
        f"Held-out UDHR articles {st['heldout_articles']}, {st['declarations']} declarations, "
        f"{st['masked_tokens']:,} masked tokens at {st['mask_rate']:.0%} (seed {st['seed']}); "
        "retrieval = accuracy@1 over the aligned held-out paragraphs; group scores are means over languages.",
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
