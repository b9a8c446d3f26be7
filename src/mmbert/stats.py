"""Intervals for small experiments: across seeds, by bootstrap over documents, and what it would take.

A measured difference on this CPU has two kinds of noise: the training run (another seed gives
another model) and the held-out text (other documents give another score for the same model).

- `seed_interval`: the mean over seeds with Student's t interval (n - 1 degrees of freedom; with 3
  seeds the 95% half-width is 4.30 standard errors). Paired designs pass the per-seed differences.
- `bootstrap_weights` + `percentile_interval`: resample the held-out documents with replacement,
  within each stratum (a language), so that each language keeps its own documents and the set of
  languages stays the one evaluated; every model is scored under the same resamples (a paired
  bootstrap), and the interval is the percentile interval of the statistic over resamples.
- `seeds_needed` and `scale_needed`: when an interval covers zero, how many seeds, or how much more
  training (`--scale`), would make it exclude zero if the measured effect held. The seed count is
  the usual power computation (the standard deviation across seeds taken as measured); the scale
  assumes the effect stays as measured and the seed-to-seed standard error shrinks as
  1 / sqrt(tokens), so it is an estimate under that stated assumption, not a measurement.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

LEVEL = 0.95


def _t_two_sided(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with integer `df` (the closed forms in theta = atan(t / sqrt(df)))."""
    theta = math.atan(t / math.sqrt(df))
    c, s = math.cos(theta), math.sin(theta)
    if df % 2 == 1:
        total, term = 0.0, c
        for k in range(1, (df - 1) // 2):  # cos + (2/3) cos^3 + (2*4)/(3*5) cos^5 + ...
            total += term
            term *= c * c * (2 * k) / (2 * k + 1)
        if df > 1:
            total += term
        return 2 / math.pi * (theta + s * total)
    total, term = 0.0, 1.0
    for k in range(1, df // 2 + 1):  # 1 + (1/2) cos^2 + (1*3)/(2*4) cos^4 + ...
        total += term
        term *= c * c * (2 * k - 1) / (2 * k)
    return s * total


def t_quantile(df: int, level: float = LEVEL) -> float:
    """The two-sided critical value of Student's t: P(|T| < q) = level (12.71, 4.30, 3.18 for df 1-3).

    Exact (bisection on the closed-form distribution) up to 200 degrees of freedom; beyond, the
    Cornish-Fisher expansion around the normal quantile (error below 1e-6 there).
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if df > 200:
        z = NormalDist().inv_cdf((1 + level) / 2)
        return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
    lo, hi = 0.0, 1.0
    while _t_two_sided(hi, df) < level:
        hi *= 2
    for _ in range(100):  # bisection to float precision
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_two_sided(mid, df) < level else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class Interval:
    """A point estimate and its interval (`low`, `high`); `None` bounds when it cannot be computed."""

    mean: float
    low: float | None
    high: float | None

    def excludes(self, value: float = 0.0) -> bool:
        return self.low is not None and self.high is not None and not (self.low <= value <= self.high)

    def to_list(self) -> list[float | None]:
        return [self.mean, self.low, self.high]


@dataclass(frozen=True)
class SeedStats:
    """Mean over seeds, sample standard deviation, standard error and the t interval."""

    values: tuple[float, ...]
    mean: float
    sd: float | None
    se: float | None
    interval: Interval

    def to_dict(self) -> dict[str, object]:
        return {
            "values": list(self.values),
            "mean": self.mean,
            "sd": self.sd,
            "se": self.se,
            "ci": [self.interval.low, self.interval.high],
        }


def seed_interval(values: Sequence[float], level: float = LEVEL) -> SeedStats:
    """Mean and t interval of per-seed values (at least one; the interval needs two)."""
    x = np.asarray([float(v) for v in values], dtype=np.float64)
    if x.size == 0:
        raise ValueError("no values")
    mean = float(x.mean())
    if x.size < 2:
        return SeedStats(tuple(x.tolist()), mean, None, None, Interval(mean, None, None))
    sd = float(x.std(ddof=1))
    se = sd / math.sqrt(x.size)
    half = t_quantile(x.size - 1, level) * se
    return SeedStats(tuple(x.tolist()), mean, sd, se, Interval(mean, mean - half, mean + half))


def bootstrap_weights(strata: Sequence[int] | np.ndarray, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n) resampling counts: within each stratum, as many documents drawn with replacement as it has.

    Row b applied to per-document sums gives the statistic on bootstrap sample b; the same matrix for
    every model makes the bootstrap paired.
    """
    strata = np.asarray(strata)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_boot, strata.size), dtype=np.float32)
    for value in np.unique(strata):
        members = np.flatnonzero(strata == value)
        draws = rng.integers(0, members.size, size=(n_boot, members.size))
        for j in range(members.size):  # counts of each member in each resample
            weights[:, members[j]] = (draws == j).sum(axis=1)
    return weights


def percentile_interval(samples: np.ndarray, point: float, level: float = LEVEL) -> Interval:
    """The percentile interval of bootstrap `samples` (NaNs dropped) around the full-sample `point`."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return Interval(point, None, None)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(s, [tail, 100 - tail])
    return Interval(point, float(low), float(high))


def seeds_needed(effect: float, sd: float | None, level: float = LEVEL, limit: int = 10_000) -> int | None:
    """The fewest seeds n whose t interval (half-width t_{n-1} sd / sqrt(n)) excludes zero for `effect`.

    None when there is no effect or no spread to go by, or beyond `limit`.
    """
    if sd is None or sd <= 0 or effect == 0 or not math.isfinite(effect):
        return None
    z = NormalDist().inv_cdf((1 + level) / 2)
    first = max(2, math.floor((z * sd / abs(effect)) ** 2))  # t > z: no fewer than the normal answer
    for n in range(first, limit + 1):
        if t_quantile(n - 1, level) * sd / math.sqrt(n) < abs(effect):
            return n
    return None


def scale_needed(
    effect: float, se: float | None, df: int, scale: float, level: float = LEVEL
) -> float | None:
    """The token scale at which the t interval of `effect` would exclude zero, with the same seeds.

    Assumes the effect stays as measured and the standard error shrinks as 1 / sqrt(tokens):
    scale x (t se / |effect|)^2. None without an effect or a standard error.
    """
    if se is None or se <= 0 or effect == 0 or not math.isfinite(effect) or df < 1:
        return None
    return scale * (t_quantile(df, level) * se / abs(effect)) ** 2


# ---------------------------------------------------------------------------------------------- text
def interval_text(ci: Sequence[float | None] | None, show: Callable[[float], str]) -> str | None:
    """`[low, high]`, each end written by `show`; None without an interval (or with an open end)."""
    if not ci or ci[0] is None or ci[1] is None:
        return None
    return f"[{show(ci[0])}, {show(ci[1])}]"


def with_interval(
    value: float | None, ci: Sequence[float | None] | None, show: Callable[[float], str]
) -> str:
    """`value [low, high]` (the reports' one way to write an estimate); the value alone without an
    interval, `-` without a value."""
    if value is None:
        return "-"
    interval = interval_text(ci, show)
    return show(value) if interval is None else f"{show(value)} {interval}"
