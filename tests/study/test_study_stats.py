"""The seed statistics: mean, sample std and Student-t interval against textbook values."""

import math

import numpy as np
import pytest
import scipy.stats

from samkit.study.stats import fmt, share_recovered, summarize


def test_t_interval_of_known_values():
    s = summarize([1.0, 2.0, 3.0])
    # t(0.975, df=2) = 4.302653 (any t table); std = 1; half width = 4.302653 / sqrt(3)
    assert (s.n, s.mean, s.std) == (3, 2.0, 1.0)
    assert s.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert (s.ci_low, s.ci_high) == pytest.approx((2 - 2.484138, 2 + 2.484138), rel=1e-6)


def test_interval_for_two_values_and_other_levels():
    s = summarize([0.0, 2.0])
    # df=1: t(0.975) = 12.706205; std = sqrt(2); half = 12.706205 * sqrt(2) / sqrt(2)
    assert s.half_width == pytest.approx(12.706205, rel=1e-6)
    s90 = summarize([1.0, 2.0, 3.0, 4.0], level=0.90)
    # df=3: t(0.95) = 2.353363; std = sqrt(5/3)
    assert s90.half_width == pytest.approx(2.353363 * math.sqrt(5 / 3) / 2, rel=1e-6)


def test_one_value_has_no_spread_and_nans_are_dropped():
    one = summarize([0.5])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.std) and math.isnan(one.ci_low)
    assert summarize([1.0, float("nan"), 3.0]).n == 2
    assert summarize([]).n == 0 and fmt(summarize([])) == "–"
    assert fmt(summarize([1.0, 2.0, 3.0]), 2) == "2.00 ± 1.00 [-0.48, 4.48]"
    assert fmt(one, 3) == "0.500"


def test_paired_gap_interval_equals_scipys_paired_t_test():
    from scipy import stats

    from samkit.study.stats import paired_gap

    a = {0: 0.81, 1: 0.79, 2: 0.84, 3: 0.80, 7: 0.5}  # seed 7 has no partner: left out
    b = {0: 0.72, 1: 0.75, 2: 0.74, 3: 0.73, 5: 0.9}
    gap = paired_gap(a, b)
    seeds = [0, 1, 2, 3]
    ref = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
    low, high = ref.confidence_interval(0.95)
    assert gap.n == 4 and gap.mean == pytest.approx(0.075, abs=1e-12)
    assert (gap.ci_low, gap.ci_high) == pytest.approx((low, high), rel=1e-10)


def test_intervals_are_clipped_to_the_metrics_range():
    from samkit.study.stats import BOUNDS, gap_bounds, paired_gap

    s = summarize([0.97, 1.0], bounds=BOUNDS["test_acc"])  # t(0.975, 1) = 12.7: would pass 1
    assert s.ci_high == 1.0 and s.ci_low == pytest.approx(0.985 - 12.706205 * 0.015, rel=1e-6)
    assert summarize([0.01, 0.2], bounds=BOUNDS["test_loss"]).ci_low == 0.0
    g = paired_gap({0: 1.0, 1: 0.0}, {0: 0.0, 1: 0.5}, bounds=gap_bounds("test_acc"))
    assert (g.ci_low, g.ci_high) == (-1.0, 1.0) and gap_bounds("lambda_max")[0] == -math.inf
    assert summarize([0.5, 0.7]).ci_high > 1  # unbounded by default


def test_share_of_the_reference_gain_against_a_hand_computation():
    base = {0: 0.80, 1: 0.82, 2: 0.81, 3: 0.79}
    ref = {0: 0.88, 1: 0.89, 2: 0.90, 3: 0.86}
    cheap = {0: 0.87, 1: 0.87, 2: 0.89, 3: 0.85, 4: 0.99}  # seed 4 has no pair: left out
    share, keeps = share_recovered(cheap, ref, base, 0.9)
    gains = [cheap[s] - base[s] for s in range(4)]
    ref_gains = [ref[s] - base[s] for s in range(4)]
    assert share == pytest.approx(np.mean(gains) / np.mean(ref_gains), rel=1e-12)
    d = np.array(gains) - 0.9 * np.array(ref_gains)
    low, high = scipy.stats.t.interval(0.95, 3, loc=d.mean(), scale=scipy.stats.sem(d))
    assert keeps.n == 4 and keeps.mean == pytest.approx(d.mean(), abs=1e-12)
    assert (keeps.ci_low, keeps.ci_high) == pytest.approx((low, high), abs=1e-12)
