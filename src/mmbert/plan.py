"""`mmbert plan`: each phase's source x language budget, before a single step is trained.

For every phase of a recipe (or of one decay variant) it shows each source's share and each
(source, language) cell's sampling probability, the tokens the phase will take from it, and how many
epochs over the cell's data that is (per phase and cumulative over the run), flagging cells repeated
past `--max-epochs`. This is the reasoning behind mmBERT's annealed schedule (tau 0.7 -> 0.5 -> 0.3
with growing language sets): low-resource languages join late so they are not repeated to death.

Token counts come from prepared data (`--data DIR`, the manifests' per-language counts) or from
mmBERT's released per-language token counts (`--released-counts`). The released counts record what
mmBERT *sampled*, not the data it had, so the data is estimated by inverting the temperature rule:
a language first sampled in a phase with temperature tau had n ∝ count ** (1 / tau); the phases'
scales are joined on the languages they share (English and code excluded: they are separate
sources). The estimate has no absolute scale, so epochs are not shown in that mode. Sources with an
explicit language list (DCLM: [eng], StarCoder: [code]) get those languages; the multilingual
sources (FineWeb2, MegaWika) get all the others, plus any language their own multipliers or fixed
shares name. With a three-phase recipe the plan is then compared
with the released counts: per-phase totals, English and code shares, and, for the languages already
present in an earlier phase (so the comparison is not circular), the log-log fit between the planned
and the released per-language shares (slope 1 and correlation 1 would be a perfect prediction).

Each compared figure is labelled `fitted` or `predicted`. Fitted: set from the same released column it
is compared with, so it matches by construction: the language count of a phase whose languages are a
named mmBERT set (the set is that column's rows), and whatever the recipe lists in the phase's
`fitted_to_released` (e.g. source weights copied from the released counts fix the English and code
shares). Predicted: computed from other inputs (the paper's source table and budgets, the earlier
phases' counts and the temperature rule); only these are evidence that the recipe reproduces mmBERT.
The per-language fit is always a prediction: the availability of a language seen in an earlier phase
is estimated from that earlier phase's column.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmbert.data.mixture import Counts, Mixture, recipe_mixtures
from mmbert.data.sampler import store_counts
from mmbert.data.shards import TokenStore
from mmbert.languages import LANGUAGE_SETS, counts_code, released_counts, resolve_languages
from mmbert.recipe import Phase, Recipe, RecipeError, load_recipe
from mmbert.schedule import Schedule

# Temperatures of mmBERT's phases, for inverting the released counts into available data.
RELEASED_TAUS = (("pretrain", 0.7), ("ext", 0.5), ("decay-all", 0.3))
# Which released column a phase of a three-phase recipe is compared with (by decay variant name).
RELEASED_DECAY_COLUMN = {"eng": "decay-eng", "cont": "decay-mid", "all": "decay-all", None: "decay-all"}
_SEPARATE = ("eng", "code")  # languages mmBERT drew from their own sources, not by temperature


def released_availability() -> dict[str, float]:
    """Relative data available per language (ISO 639-3 / `code`), estimated from the released counts."""
    counts = released_counts()
    log_n: dict[str, float] = {}
    for column, tau in RELEASED_TAUS:
        new = {lang: math.log(c) / tau for lang, c in counts[column].items() if c > 0}
        shared = [lang for lang in new if lang in log_n and lang not in _SEPARATE]
        # Each column is n ** tau up to a constant: align its scale with the languages seen before.
        offset = float(np.mean([log_n[lang] - new[lang] for lang in shared])) if shared else 0.0
        for lang, value in new.items():
            log_n.setdefault(lang, value + offset)
    low = min(log_n.values())
    # Relative sizes (the smallest language = 1), floats: they span ~25 orders of magnitude.
    return {lang: math.exp(v - low) for lang, v in log_n.items()}


def released_data_counts(recipe: Recipe, variants: list[str | None]) -> dict[str, dict[str, float]]:
    """Synthetic per-source counts over the released languages for the sources of `recipe`."""
    available = released_availability()
    keys = sorted(available)
    explicit: dict[str, list[str]] = {}
    multilingual: set[str] = set()
    for variant in variants:
        for phase in recipe.phases_for_variant(variant):
            for src in phase.sources:
                if src.languages is None:
                    multilingual.add(src.name)
                else:
                    explicit.setdefault(src.name, [])
                    explicit[src.name] += resolve_languages(src.languages, keys)
    claimed = {lang for langs in explicit.values() for lang in langs}
    counts = {name: {lang: available[lang] for lang in set(langs)} for name, langs in explicit.items()}
    for name in multilingual - set(explicit):
        # A multilingual source has the languages no single-language source claims (FineWeb2 has no
        # English), plus those its own rules name (MegaWika's fixed English share).
        named = {
            lang
            for variant in variants
            for phase in recipe.phases_for_variant(variant)
            for src in phase.sources
            if src.name == name
            for rule in (*src.multipliers, *src.fixed_shares)
            for lang in keys
            if rule in (lang, counts_code(lang))
        }
        counts[name] = {lang: available[lang] for lang in keys if lang not in claimed or lang in named}
    return counts


def released_basis(phase: Phase, column: str) -> dict[str, str]:
    """Per figure compared with released `column`: `fitted` (set from that column, so equal by
    construction) or `predicted`."""
    basis = {
        figure: "fitted" if figure in phase.fitted_to_released else "predicted"
        for figure in ("tokens", "english_share", "code_share")
    }
    # A named set is the rows of one released column (mmbert-110: `ext`, also used by two decay variants).
    named_column = LANGUAGE_SETS.get(phase.languages) if isinstance(phase.languages, str) else None
    basis["languages"] = "fitted" if named_column == column else "predicted"
    basis["fit"] = "predicted"  # earlier-phase languages only, their availability from earlier columns
    return basis


def compare_with_released(mixture: Mixture, column: str, earlier: set[str], phase: Phase) -> dict[str, Any]:
    """How a planned phase (on released-count data) matches a released column, each figure labelled
    fitted or predicted (`released_basis`)."""
    released = {k: v for k, v in released_counts()[column].items() if v > 0}
    total = sum(released.values())
    planned: dict[str, float] = {}
    for key, share in mixture.language_shares().items():
        lang = counts_code(key)
        planned[lang] = planned.get(lang, 0.0) + share
    fit_langs = sorted(
        lang
        for lang in planned
        if lang in released and lang in earlier and lang not in _SEPARATE and planned[lang] > 0
    )
    fit: dict[str, Any] = {"languages": len(fit_langs)}
    if len(fit_langs) >= 3:
        # Shares renormalized over the fitted languages so that the other rows do not shift the line.
        p = np.array([planned[lang] for lang in fit_langs])
        r = np.array([released[lang] for lang in fit_langs], dtype=np.float64)
        x, y = np.log(p / p.sum()), np.log(r / r.sum())
        slope, intercept = np.polyfit(x, y, 1)
        fit.update(
            slope=float(slope),
            correlation=float(np.corrcoef(x, y)[0, 1]),
            median_abs_log_ratio=float(np.median(np.abs(y - x))),
        )
    return {
        "column": column,
        "released_tokens": total,
        "released_languages": len(released),
        "released_english_share": released.get("eng", 0) / total,
        "released_code_share": released.get("code", 0) / total,
        "fit": fit,
        "basis": released_basis(phase, column),
    }


def plan_recipe(
    recipe: Recipe,
    counts: Counts,
    variant: str | None = None,
    max_epochs: float = 10.0,
    released: bool = False,
) -> dict[str, Any]:
    """The plan as plain data: per phase, per source and per (source, language) cell."""
    if not (math.isfinite(max_epochs) and max_epochs > 0):
        raise ValueError(f"--max-epochs must be a finite number > 0, got {max_epochs}")
    phases = recipe.phases_for_variant(variant)
    mixtures = recipe_mixtures(phases, counts)
    schedule = Schedule(recipe.with_variant(variant))
    seen_tokens: dict[tuple[str, str], float] = {}
    earlier: set[str] = set()
    out_phases = []
    for index, (phase, mix) in enumerate(zip(phases, mixtures, strict=True)):
        cells = []
        for src in mix.sources:
            for lang, p, avail in zip(src.languages, src.probs, src.available, strict=True):
                tokens = phase.tokens * src.share * p
                seen_tokens[(src.name, lang)] = seen_tokens.get((src.name, lang), 0.0) + tokens
                epochs = None if released else tokens / avail
                cumulative = None if released else seen_tokens[(src.name, lang)] / avail
                cells.append(
                    {
                        "source": src.name,
                        "language": lang,
                        "probability": p,
                        "share": src.share * p,
                        "tokens": tokens,
                        "available": None if released else avail,
                        "epochs": epochs,
                        "cumulative_epochs": cumulative,
                        "repeated": cumulative is not None and cumulative > max_epochs,
                    }
                )
        lang_shares = mix.language_shares()
        english = sum(s for k, s in lang_shares.items() if counts_code(k) == "eng")
        entry: dict[str, Any] = {
            "index": index,
            "name": phase.name,
            "tokens": phase.tokens,
            "tau": phase.tau,
            "mask_rate": phase.mask_rate,
            "seq_len": phase.seq_len,
            **_steps(schedule, index),
            "languages": len(mix.languages),
            "english_share": english,
            "code_share": lang_shares.get("code", 0.0),
            "sources": [
                {"name": s.name, "share": s.share, "tau": s.tau, "languages": len(s.languages)}
                for s in mix.sources
            ],
            "cells": sorted(cells, key=lambda c: -c["tokens"]),
        }
        if released and len(phases) == 3:
            column = RELEASED_TAUS[index][0] if index < 2 else RELEASED_DECAY_COLUMN.get(variant, "decay-all")
            entry["released"] = compare_with_released(mix, column, earlier, phase)
        earlier |= {counts_code(k) for k in mix.languages}
        out_phases.append(entry)
    return {
        "recipe": recipe.name,
        "variant": variant,
        "counts": "released" if released else "data",
        "max_epochs": max_epochs,
        "total_tokens": sum(p.tokens for p in phases),
        "batch_warmup": {
            "mode": recipe.train.batch_warmup_mode,
            "start_tokens": recipe.train.batch_warmup_start_tokens,
            "tokens": recipe.train.batch_warmup_tokens if recipe.train.batch_warmup_start_tokens else 0,
        },
        "phases": out_phases,
    }


def _steps(schedule: Schedule, index: int) -> dict[str, Any]:
    """A phase's optimizer steps and what each takes: its full batch (tokens, rows) and LR range."""
    full = schedule.full_batch_tokens(index)
    return {
        "batch_tokens": full,
        "batch_rows": full // schedule.phases[index].seq_len,
        "steps": schedule.steps_in_phase(index),
        "in_batch_warmup": schedule.in_batch_warmup(schedule.starts[index]),
        "lr_peak": schedule.phases[index].lr,
        "lr_end": schedule.lr(schedule.phase_end(index), index),
    }


def _num(x: float) -> str:
    """Tokens with a unit: 1.2B, 340.5M, 12.0K."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.1f}{unit}"
    return f"{x:.0f}"


def format_plan(plan: Mapping[str, Any], top: int = 15) -> str:
    """The plan as text tables: a header per phase, its sources, its largest and its flagged cells."""
    lines = [
        f"plan for recipe {plan['recipe']!r}"
        + (f", variant {plan['variant']!r}" if plan["variant"] else "")
        + f" ({'released counts' if plan['counts'] == 'released' else 'prepared data'}), "
        f"{_num(plan['total_tokens'])} tokens"
    ]
    warm = plan["batch_warmup"]
    if warm["tokens"]:
        lines.append(
            f"batch-size warmup ({warm['mode']}): from {_num(warm['start_tokens'])} tokens over the first "
            f"{_num(warm['tokens'])}"
        )
    for ph in plan["phases"]:
        lines += [
            "",
            f"phase {ph['index']} {ph['name']}: {_num(ph['tokens'])} tokens, {ph['languages']} languages, "
            f"tau {ph['tau']}, mask {ph['mask_rate']}, seq_len {ph['seq_len']}, "
            f"English {100 * ph['english_share']:.1f}%, code {100 * ph['code_share']:.1f}%",
            f"  {ph['steps']:,} steps of {ph['batch_rows']:,} x {ph['seq_len']} tokens ({_num(ph['batch_tokens'])}"
            f"{', fewer in the batch-size warmup' if ph['in_batch_warmup'] else ''}), "
            f"LR peak {ph['lr_peak']:.2e}, at the end {ph['lr_end']:.2e}",
            f"  {'source':<16} {'share':>7} {'tau':>5} {'langs':>6} {'tokens':>9}",
        ]
        for s in ph["sources"]:
            lines.append(
                f"  {s['name']:<16} {100 * s['share']:>6.2f}% {s['tau']:>5.2f} {s['languages']:>6} "
                f"{_num(s['share'] * ph['tokens']):>9}"
            )
        cells = ph["cells"]
        flagged = [c for c in cells if c["repeated"]]
        shown = cells if top <= 0 else cells[:top] + [c for c in flagged if c not in cells[:top]]
        lines.append(
            f"  {'source':<16} {'language':<14} {'p(lang|src)':>11} {'share':>8} {'tokens':>9} {'epochs':>8} {'total':>8}"
        )
        for c in shown:
            epochs = "-" if c["epochs"] is None else f"{c['epochs']:.2f}"
            total = "-" if c["cumulative_epochs"] is None else f"{c['cumulative_epochs']:.2f}"
            flag = "  REPEATED" if c["repeated"] else ""
            lines.append(
                f"  {c['source']:<16} {c['language']:<14} {c['probability']:>11.4%} {100 * c['share']:>7.3f}% "
                f"{_num(c['tokens']):>9} {epochs:>8} {total:>8}{flag}"
            )
        if len(shown) < len(cells):
            lines.append(f"  ... {len(cells) - len(shown)} more cells (--top 0 shows all)")
        if flagged:
            lines.append(
                f"  {len(flagged)} cells repeated more than {plan['max_epochs']:g} epochs over the run so far"
            )
        if "released" in ph:
            lines += _format_released(ph)
    if any("released" in ph for ph in plan["phases"]):
        lines += [
            "",
            "fitted: set from the released column it is compared with, so equal by construction (the "
            "phase's language set is that column's rows, or the recipe lists it in fitted_to_released); "
            "predicted: from the recipe's other inputs and earlier phases only",
        ]
    return "\n".join(lines)


def _format_released(ph: Mapping[str, Any]) -> list[str]:
    """The comparison of one phase with its released column, one figure per line with its basis."""
    r = ph["released"]
    basis = r["basis"]
    rows = [
        ("tokens", f"{_num(ph['tokens'])} planned / {_num(r['released_tokens'])} released "
                   f"({100 * (ph['tokens'] / r['released_tokens'] - 1):+.1f}%)"),
        ("languages", f"{ph['languages']} / {r['released_languages']}"),
        ("english_share", f"{100 * ph['english_share']:.1f}% / {100 * r['released_english_share']:.1f}%"),
        ("code_share", f"{100 * ph['code_share']:.1f}% / {100 * r['released_code_share']:.1f}%"),
    ]  # fmt: skip
    lines = [f"  vs released {r['column']} (planned / released):"]
    lines += [f"    {name:<14} {text:<44} {basis[name]}" for name, text in rows]
    fit = r["fit"]
    if "slope" in fit:
        lines.append(
            f"    per-language shares of the {fit['languages']} languages seen in an earlier phase, "
            f"log(released) vs log(planned): slope {fit['slope']:.3f}, correlation {fit['correlation']:.4f}, "
            f"median |log ratio| {fit['median_abs_log_ratio']:.3f}  {basis['fit']}"
        )
    return lines


def data_counts(dirs: Sequence[str | Path]) -> Counts:
    """Per source and language token counts of prepared data directories, summed over them."""
    counts: Counts = {}
    for d in dirs:
        for src, per in store_counts(TokenStore(d)).items():
            merged = counts.setdefault(src, {})  # type: ignore[union-attr]
            for lang, n in per.items():
                merged[lang] = merged.get(lang, 0) + n  # type: ignore[index]
    return counts


def plan_file(
    recipe_path: str | Path,
    overrides: Sequence[str] = (),
    *,
    data: Sequence[str | Path] | None = None,
    released: bool = False,
    variant: str | None = None,
    max_epochs: float = 10.0,
) -> dict[str, Any]:
    """`plan_recipe` for a recipe file (with dotted overrides), on prepared data (`data`, default the
    recipe's `data`) or on mmBERT's released counts (`released`)."""
    recipe = load_recipe(recipe_path, tuple(overrides))
    if variant is not None and variant not in recipe.variant_names():
        raise RecipeError(
            "variant", f"{variant!r} is not one of {recipe.variant_names() or 'none'}", str(recipe_path)
        )
    if released:
        counts: Counts = released_data_counts(recipe, [variant])
    else:
        dirs = data or recipe.data
        if not dirs:
            raise RecipeError("data", "no data: pass --data DIR or --released-counts", str(recipe_path))
        counts = data_counts(dirs)
    return plan_recipe(recipe, counts, variant, max_epochs, released=released)
