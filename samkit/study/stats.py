"""Summary statistics over seeds: mean, sample standard deviation and a Student-t interval."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _stats


@dataclass(frozen=True)
class Summary:
    r"""Mean, sample std (ddof=1) and the ``level`` t-interval of the mean.

    .. math:: \bar x \pm t_{1-\alpha/2,\,n-1}\, s/\sqrt{n}

    With one value the std and interval are NaN (no spread can be estimated from one seed).
    """

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    level: float = 0.95

    @property
    def half_width(self) -> float:
        """Half the width of the interval."""
        return (self.ci_high - self.ci_low) / 2


def summarize(values: Sequence[float], level: float = 0.95) -> Summary:
    """Summary of ``values`` (NaNs dropped: a run without a measurement does not count).

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
    return Summary(n, mean, std, mean - half, mean + half, level)


def fmt(s: Summary, digits: int = 4, *, interval: bool = True) -> str:
    """``mean ± std [low, high]`` (or just the mean for one value)."""
    if s.n == 0:
        return "–"
    if s.n == 1:
        return f"{s.mean:.{digits}f}"
    text = f"{s.mean:.{digits}f} ± {s.std:.{digits}f}"
    if interval:
        text += f" [{s.ci_low:.{digits}f}, {s.ci_high:.{digits}f}]"
    return text
