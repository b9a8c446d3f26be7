"""stats: Student's t quantiles, seed intervals, the stratified bootstrap, seeds and scale needed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmbert.stats import (
    bootstrap_weights,
    percentile_interval,
    scale_needed,
    seed_interval,
    seeds_needed,
    t_quantile,
)

# Two-sided 95% critical values of Student's t (printed tables), and the normal limit.
T_TABLE = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 9: 2.262, 30: 2.042, 100: 1.984, 1000: 1.962}


@pytest.mark.parametrize("df", sorted(T_TABLE))
def test_t_quantile_matches_the_tables(df):
    assert t_quantile(df) == pytest.approx(T_TABLE[df], abs=6e-4)


def test_t_quantile_other_levels_and_the_normal_limit():
    assert t_quantile(1, 0.90) == pytest.approx(6.314, abs=1e-3)
    assert t_quantile(5, 0.99) == pytest.approx(4.032, abs=1e-3)
    assert t_quantile(10**6) == pytest.approx(1.95996, abs=1e-4)
    # continuous across the switch from the exact form to the expansion
    assert t_quantile(200) == pytest.approx(t_quantile(201), abs=1e-4)
    with pytest.raises(ValueError):
        t_quantile(0)


def test_seed_interval_is_mean_plus_minus_t_standard_errors():
    s = seed_interval([1.0, 2.0, 3.0])
    assert s.mean == 2.0 and s.sd == pytest.approx(1.0) and s.se == pytest.approx(1 / math.sqrt(3))
    assert s.interval.low == pytest.approx(2 - 4.303 / math.sqrt(3), abs=1e-3)
    assert s.interval.excludes(-1) and not s.interval.excludes(0)
    one = seed_interval([5.0])
    assert one.interval.low is None and not one.interval.excludes(0)


def test_bootstrap_resamples_within_each_stratum():
    strata = np.array([0, 0, 0, 1, 1, 2])
    w = bootstrap_weights(strata, 500, seed=1)
    assert w.shape == (500, 6)
    for value, size in ((0, 3), (1, 2), (2, 1)):
        assert (w[:, strata == value].sum(axis=1) == size).all()
    # each document is drawn once per resample on average
    assert w.mean(axis=0) == pytest.approx(np.ones(6), abs=0.15)
    assert (bootstrap_weights(strata, 500, seed=1) == w).all()  # seeded
    assert not (bootstrap_weights(strata, 500, seed=2) == w).all()


def test_bootstrap_interval_of_a_mean_has_the_normal_width():
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    w = bootstrap_weights(np.zeros(400, dtype=int), 2000, seed=0)
    ci = percentile_interval(w @ x / 400, float(x.mean()))
    expected = 2 * 1.96 * x.std(ddof=1) / math.sqrt(400)
    assert ci.high - ci.low == pytest.approx(expected, rel=0.1)
    assert ci.low < x.mean() < ci.high


def test_seeds_needed_is_the_first_n_whose_interval_excludes_zero():
    n = seeds_needed(0.5, 1.0)
    assert t_quantile(n - 1) / math.sqrt(n) < 0.5 <= t_quantile(n - 2) / math.sqrt(n - 1)
    assert seeds_needed(0.0, 1.0) is None and seeds_needed(0.5, None) is None


def test_scale_needed_assumes_the_error_falls_as_one_over_root_tokens():
    # effect 0.1, standard error 0.1 with 3 seeds: t_2 = 4.303 standard errors needed
    k = scale_needed(0.1, 0.1, 2, scale=0.5)
    assert k == pytest.approx(0.5 * 4.303**2, rel=1e-3)
    # at that scale the half-width t * se / sqrt(k / 0.5) equals the effect
    assert t_quantile(2) * 0.1 / math.sqrt(k / 0.5) == pytest.approx(0.1)
    assert scale_needed(0.1, None, 2, 1.0) is None
