"""A phase's data mixture: its schema (`SourceSpec`, `PhaseMixture`) and its resolution into token shares.

mmBERT's mixture has two axes. Sources (FineWeb2, DCLM, StarCoder, ...) get fixed shares of a phase's
tokens; inside a multilingual source, a language's share is

    p(lang | source) ∝ (n_tokens(source, lang) * multiplier(lang)) ** tau

over the phase's languages, except languages with a fixed share, which get exactly that fraction and
leave the rest to the temperature rule. `phase_mixture` turns a phase's mixture plus the available
token counts into these target *token* shares (`mmbert.data.sampler.DataSampler` draws by them, and
`mmbert plan` prints them).

The data layer owns this schema, as the recipe's phases declare it (`mmbert.recipe.Phase` has these
fields and satisfies `PhaseMixture`), so `mmbert.data` never imports the recipe. A source without its
own `languages` or `tau` takes the phase's (`source_languages`, `source_tau`): the one rule behind
both answers to "which languages does a phase train on", the training's (`phase_mixture`, resolved
strictly against the prepared data) and the evaluation's (`trained_languages`, resolved against the
languages evaluated, passing over the items they lack).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from mmbert.errors import RecipeError
from mmbert.languages import counts_code, iso3, resolve_languages

Counts = Mapping[str, Mapping[str, float]]  # source -> language key -> tokens (may be estimates)


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise RecipeError(key, message)


@dataclass
class SourceSpec:
    """One data source of a phase: its part of the phase's tokens and, if multilingual, its language rule.

    `share` is a fraction of the phase's tokens (the shares of a phase must sum to one); `weight` is a
    relative amount (normalized over the phase's sources). `languages` and `tau` default to the phase's.
    Within the source, `p(lang) ∝ (n_tokens(lang) * multipliers.get(lang, 1)) ** tau`, except for the
    languages in `fixed_shares`, which get exactly that fraction of the source's tokens. Multiplier and
    fixed-share keys are language keys (`eng_Latn`) or ISO 639-3 codes (`eng`).
    """

    name: str
    share: float | None = None
    weight: float | None = None
    languages: str | list[str] | None = None
    tau: float | None = None
    multipliers: dict[str, float] = field(default_factory=dict)
    fixed_shares: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(bool(self.name), "name", "must be a non-empty source name")
        _check(
            (self.share is None) != (self.weight is None), "share", "give exactly one of `share` and `weight`"
        )
        if self.share is not None:
            _check(0 < self.share <= 1, "share", f"must be in (0, 1], got {self.share}")
        if self.weight is not None:
            _check(self.weight > 0, "weight", f"must be > 0, got {self.weight}")
        if self.tau is not None:
            _check(0 <= self.tau <= 1, "tau", f"must be in [0, 1], got {self.tau}")
        if isinstance(self.languages, list):
            _check(len(self.languages) > 0, "languages", "must not be an empty list")
        for lang, mult in self.multipliers.items():
            _check(mult > 0 and math.isfinite(mult), f"multipliers.{lang}", f"must be > 0, got {mult}")
        for lang, share in self.fixed_shares.items():
            _check(0 < share <= 1, f"fixed_shares.{lang}", f"must be in (0, 1], got {share}")
        total = sum(self.fixed_shares.values())
        _check(total <= 1 + 1e-9, "fixed_shares", f"sum to {total:.6g} > 1")


class PhaseMixture(Protocol):
    """What the data layer reads of a recipe phase (`mmbert.recipe.Phase`): its mixture."""

    name: str
    languages: str | list[str]  # a set name, "all", or a list of keys / ISO 639-3 codes
    tau: float
    sources: list[SourceSpec]


def source_shares(phase: PhaseMixture) -> dict[str, float]:
    """Each source's fraction of the phase's tokens (weights normalized)."""
    amounts = {s.name: (s.share if s.share is not None else s.weight) for s in phase.sources}
    total = sum(amounts.values())  # type: ignore[arg-type]
    return {k: v / total for k, v in amounts.items()}  # type: ignore[operator]


def source_tau(phase: PhaseMixture, source: SourceSpec) -> float:
    """The source's `tau`, else the phase's."""
    return phase.tau if source.tau is None else source.tau


def source_languages(phase: PhaseMixture, source: SourceSpec | None) -> str | list[str]:
    """The source's language set, else the phase's (a phase without sources: the phase's)."""
    return phase.languages if source is None or source.languages is None else source.languages


def trained_languages(phase: PhaseMixture, available: Iterable[str]) -> set[str]:
    """The languages of `available` that `phase` trains on: each source's (`source_languages`).

    Evaluation asks this of the languages it evaluates, not of the prepared data: an item of a set
    that `available` lacks (`code`, a language without held-out text) is passed over, where
    `phase_mixture` refuses it.
    """
    keys = sorted(available)
    out: set[str] = set()
    for source in phase.sources or [None]:
        spec = source_languages(phase, source)
        for item in spec.split(",") if isinstance(spec, str) else spec:
            try:
                out.update(resolve_languages(item.strip(), keys))
            except ValueError:
                continue
    return out


@dataclass
class SourceMixture:
    """One source of a resolved phase: its share of the phase and its languages' shares inside it."""

    name: str
    share: float
    tau: float
    languages: list[str]
    probs: list[float]  # share of this source's tokens per language, sums to 1
    available: list[float]  # tokens of data per language (what n ** tau used)


@dataclass
class Mixture:
    """A phase's resolved target: token shares per (source, language)."""

    phase_name: str
    sources: list[SourceMixture]

    def token_shares(self) -> dict[tuple[str, str], float]:
        return {
            (s.name, lang): s.share * p
            for s in self.sources
            for lang, p in zip(s.languages, s.probs, strict=True)
        }

    def language_shares(self) -> dict[str, float]:
        """Share of the phase's tokens per language, summed over sources."""
        out: dict[str, float] = {}
        for (_, lang), p in self.token_shares().items():
            out[lang] = out.get(lang, 0.0) + p
        return out

    def source_shares(self) -> dict[str, float]:
        return {s.name: s.share for s in self.sources}

    @property
    def languages(self) -> list[str]:
        return sorted({lang for s in self.sources for lang in s.languages})


def _matches(rule_key: str, lang: str) -> bool:
    """A multiplier/fixed-share key names a language by its key (`eng_Latn`) or ISO 639-3 code (`eng`)."""
    return rule_key == lang or rule_key in (iso3(lang), counts_code(lang))


def temperature_probs(
    available: Mapping[str, float],
    tau: float,
    multipliers: Mapping[str, float] | None = None,
    fixed_shares: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """`p(lang) ∝ (n * multiplier) ** tau`, with fixed-share languages pinned (keys already matched)."""
    multipliers = multipliers or {}
    fixed = {k: v for k, v in (fixed_shares or {}).items() if k in available}
    free = [k for k in available if k not in fixed]
    left = 1.0 - sum(fixed.values())
    if free and left <= 1e-12:
        raise ValueError(
            f"fixed shares sum to {1 - left:.6g} and leave nothing for {len(free)} other languages"
        )
    if not free and abs(left) > 1e-6:
        raise ValueError(f"fixed shares cover every language but sum to {1 - left:.6g}, not 1")
    # In log space: n ** tau spans many orders of magnitude across 1833 languages.
    logs = np.array([tau * math.log(available[k] * multipliers.get(k, 1.0)) for k in free])
    weights = np.exp(logs - logs.max()) if free else np.array([])
    probs = dict(fixed)
    for k, w in zip(free, weights / weights.sum() if free else [], strict=True):
        probs[k] = float(w) * left
    return {k: probs[k] for k in available}


def _expand_rule(rule: Mapping[str, float], langs: list[str], key: str) -> dict[str, float]:
    """Map rule keys (language keys or ISO codes) onto the source's language keys."""
    out: dict[str, float] = {}
    for rule_key, value in rule.items():
        hits = [lang for lang in langs if _matches(rule_key, lang)]
        if not hits:
            raise RecipeError(f"{key}.{rule_key}", "matches none of the source's languages in this phase")
        if len(hits) > 1 and key.endswith("fixed_shares"):
            # A fixed share for an ISO code with several keys (scripts) is split evenly among them.
            value = value / len(hits)
        for lang in hits:
            out[lang] = value
    return out


def phase_mixture(phase: PhaseMixture, counts: Counts, index: int | None = None) -> Mixture:
    """Resolve `phase`'s sources and language rules against the available token `counts`.

    Errors (RecipeError, key `phases[i].sources[j]...`) name the phase and the source: a source absent
    from the data, a source with no data for its languages, a language set that matches nothing.
    """
    prefix = f"phases[{index}]" if index is not None else f"phase {phase.name!r}"
    all_langs = sorted({lang for per in counts.values() for lang, n in per.items() if n > 0})
    try:
        phase_langs = resolve_languages(phase.languages, all_langs)
    except ValueError as err:
        raise RecipeError(f"{prefix}.languages", f"phase {phase.name!r}: {err}") from None
    if not phase_langs:
        raise RecipeError(
            f"{prefix}.languages",
            f"phase {phase.name!r}: {phase.languages!r} matches none of the data's languages",
        )
    specs = phase.sources
    if not specs:
        if len(counts) != 1:
            raise RecipeError(
                f"{prefix}.sources",
                f"phase {phase.name!r}: the data has sources {', '.join(sorted(counts))}; list them with shares",
            )
        specs = [SourceSpec(name=next(iter(counts)), share=1.0)]
    shares = source_shares(phase) if phase.sources else {specs[0].name: 1.0}
    out = []
    for j, spec in enumerate(specs):
        key = f"{prefix}.sources[{j}]"
        who = f"phase {phase.name!r}, source {spec.name!r}"
        if spec.name not in counts:
            raise RecipeError(f"{key}.name", f"{who}: not in the data (sources: {', '.join(sorted(counts))})")
        present = sorted(lang for lang, n in counts[spec.name].items() if n > 0)
        lang_key = f"{key}.languages" if spec.languages is not None else key
        if spec.languages is None:
            # The phase's languages (already resolved against all the data), where this source has data.
            langs = [lang for lang in phase_langs if lang in set(present)]
        else:
            try:
                langs = resolve_languages(spec.languages, present)
            except ValueError as err:
                raise RecipeError(lang_key, f"{who}: {err}") from None
        if not langs:
            shown = ", ".join(present[:10]) + (", ..." if len(present) > 10 else "")
            raise RecipeError(
                lang_key,
                f"{who}: no data for languages {source_languages(phase, spec)!r} (the source has: {shown})",
            )
        multipliers = _expand_rule(spec.multipliers, langs, f"{key}.multipliers")
        fixed = _expand_rule(spec.fixed_shares, langs, f"{key}.fixed_shares")
        available = {lang: counts[spec.name][lang] for lang in langs}
        tau = source_tau(phase, spec)
        try:
            probs = temperature_probs(available, tau, multipliers, fixed)
        except ValueError as err:
            raise RecipeError(f"{key}.fixed_shares", f"{who}: {err}") from None
        out.append(
            SourceMixture(
                spec.name,
                shares[spec.name],
                tau,
                langs,
                [probs[k] for k in langs],
                [available[k] for k in langs],
            )
        )
    return Mixture(phase.name, out)


def recipe_mixtures(phases: list[PhaseMixture], counts: Counts) -> list[Mixture]:
    """Every phase's mixture: validates a whole run's data needs before it starts."""
    return [phase_mixture(phase, counts, i) for i, phase in enumerate(phases)]
