"""The seed statistics: mean, sample std and Student-t interval against textbook values."""

import math

import pytest

from samkit.study.stats import fmt, summarize


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
