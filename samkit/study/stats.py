"""Statistics over seeds: mean, sample std, a Student-t interval (clipped to the metric's range),
and the paired gap between two methods run on the same seeds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _stats

# The range each reported metric can take: intervals are clipped to it (an accuracy interval
# from 2 seeds would otherwise run past 1). Metrics not listed are unbounded.
BOUNDS: dict[str, tuple[float, float]] = {
    "test_acc": (0.0, 1.0),
    "train_acc": (0.0, 1.0),
    "best_test_acc": (0.0, 1.0),
    "memorised": (0.0, 1.0),
    "test_loss": (0.0, math.inf),
    "train_loss": (0.0, math.inf),
    "sharpness": (0.0, math.inf),
    "train_time": (0.0, math.inf),
}


def gap_bounds(key: str) -> tuple[float, float]:
    """The range of a difference of two values of metric ``key`` (e.g. [-1, 1] for accuracies)."""
    lo, hi = BOUNDS.get(key, (-math.inf, math.inf))
    return lo - hi, hi - lo


@dataclass(frozen=True)
class Summary:
    r"""Mean, sample std (ddof=1) and the ``level`` t-interval of the mean.

    .. math:: \bar x \pm t_{1-\alpha/2,\,n-1}\, s/\sqrt{n}

    clipped to ``bounds`` (the range the metric can take). With one value the std and interval
    are NaN (no spread can be estimated from one seed).
    """

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    level: float = 0.95

    @property
    def half_width(self) -> float:
        """Half the width of the interval (after clipping)."""
        return (self.ci_high - self.ci_low) / 2


def summarize(
    values: Sequence[float],
    level: float = 0.95,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> Summary:
    """Summary of ``values`` (NaNs dropped: a run without a measurement does not count).

    ``bounds``: the interval is clipped to this range (e.g. ``(0, 1)`` for an accuracy), so it
    never claims values the metric cannot take; the mean and std are unchanged.

    Example:
        >>> s = summarize([0.90, 0.92, 0.91]); round(s.mean, 3), round(s.half_width, 4)
        (0.91, 0.0248)
    """
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    n = int(x.size)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, level)
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan, level)
    std = float(x.std(ddof=1))
    half = float(_stats.t.ppf(0.5 + level / 2, df=n - 1)) * std / math.sqrt(n)
    lo, hi = bounds
    return Summary(n, mean, std, max(lo, mean - half), min(hi, mean + half), level)


def paired_gap(
    values: Mapping[int, float],
    baseline: Mapping[int, float],
    level: float = 0.95,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> Summary:
    r"""The mean of ``values[s] - baseline[s]`` over the seeds ``s`` both have, with its t-interval.

    Pairing by seed removes what two methods share on a seed (initialisation, data order, which
    labels are noisy), so the interval is that of the paired t-test:
    :math:`\bar d \pm t_{1-\alpha/2,\,n-1}\, s_d/\sqrt{n}` with :math:`d_s = a_s - b_s`.

    Example:
        >>> g = paired_gap({0: 0.9, 1: 0.8, 2: 0.85}, {0: 0.8, 1: 0.75, 2: 0.8})
        >>> round(g.mean, 3), g.n
        (0.067, 3)
    """
    seeds = sorted(
        s for s in values.keys() & baseline.keys()
        if not _missing(values[s]) and not _missing(baseline[s])
    )  # fmt: skip
    return summarize([values[s] - baseline[s] for s in seeds], level, bounds)


def _missing(v: float | None) -> bool:
    return v is None or math.isnan(v)


def fmt(s: Summary, digits: int = 4, *, interval: bool = True, sign: bool = False) -> str:
    """``mean ± std [low, high]`` (or just the mean for one value); ``sign`` writes ``+`` too."""
    if s.n == 0:
        return "–"
    f = f"{{:+.{digits}f}}" if sign else f"{{:.{digits}f}}"
    if s.n == 1:
        return f.format(s.mean)
    text = f"{f.format(s.mean)} ± {s.std:.{digits}f}"
    if interval:
        text += f" [{f.format(s.ci_low)}, {f.format(s.ci_high)}]"
    return text


def share_recovered(
    values: Mapping[int, float],
    reference: Mapping[int, float],
    baseline: Mapping[int, float],
    share: float,
    level: float = 0.95,
) -> tuple[float, Summary]:
    r"""How much of ``reference``'s gain over ``baseline`` a method keeps, paired by seed.

    Returns the point estimate :math:`\bar\Delta_m / \bar\Delta_r` (the mean gains over the seeds
    all three have) and the paired t-interval of :math:`d_s = \Delta_{m,s} - \text{share}\cdot
    \Delta_{r,s}`: the method keeps at least ``share`` of the reference's gain where :math:`d > 0`.
    """
    seeds = sorted(set(values) & set(reference) & set(baseline))
    gains = {s: values[s] - baseline[s] for s in seeds}
    ref_gains = {s: reference[s] - baseline[s] for s in seeds}
    mean_ref = sum(ref_gains.values()) / len(seeds) if seeds else math.nan
    mean = sum(gains.values()) / len(seeds) if seeds else math.nan
    ratio = mean / mean_ref if seeds and mean_ref != 0 else math.nan
    scaled = {s: share * g for s, g in ref_gains.items()}
    return ratio, paired_gap(gains, scaled, level)
