"""Compare a report regenerated here with the one committed from the reference machine.

The run files are data: a regenerated ``results.csv`` copies their numbers and must be equal to
the byte. What a report *computes* from them goes through the C library and scipy
(``scipy.stats.t.ppf`` for the intervals: ``log``, ``exp``, ``pow``), whose last bits are the
platform's: glibc on x86-64 and on ARM, or macOS's libm, need not agree in the last place, and
scipy's t quantile moves in the 11th digit between scipy versions. So computed numbers are
compared to 1e-9 relative (a wrong statistic is off by far more: a changed seed, a lost run or
another interval level moves the third digit), and a number printed with ``d >= 1`` decimals may
differ by one unit of its last printed digit (a value within rounding of a half-way point).
Every other character (counts, verdicts, labels) must be equal.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

_NUMBER = re.compile(r"[-+−]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
REL = 1e-9  # libm and scipy versions move the ~11th digit (see the docstring)


def _float(text: str) -> float | None:
    try:
        return float(text.replace("−", "-"))
    except ValueError:
        return None


def assert_csv_agrees(got: Path, want: Path, rel: float = REL) -> None:
    """Same header and rows; text cells equal, numeric cells within ``rel`` (NaN equals NaN)."""
    a, b = (list(csv.reader(open(p, newline=""))) for p in (got, want))
    assert len(a) == len(b) and a[0] == b[0], f"{got}: other rows or columns than {want}"
    for i, (row_a, row_b) in enumerate(zip(a, b)):
        assert len(row_a) == len(row_b), f"{got} row {i}"
        for col, x, y in zip(a[0], row_a, row_b):
            fx, fy = _float(x), _float(y)
            if fx is None or fy is None or x == y:
                assert x == y, f"{got} row {i} {col}: {x!r} != {y!r}"
            elif not (math.isnan(fx) and math.isnan(fy)):
                assert math.isclose(fx, fy, rel_tol=rel, abs_tol=rel), (
                    f"{got} row {i} {col}: {x} != {y} beyond {rel:g} relative"
                )


def _decimals(token: str) -> int:
    mantissa = token.lower().split("e")[0]
    return len(mantissa.split(".")[1]) if "." in mantissa else 0


def line_agrees(got: str, want: str) -> bool:
    """The same line up to the last printed digit of each number (see the module docstring)."""
    parts_a, parts_b = _NUMBER.split(got), _NUMBER.split(want)
    nums_a, nums_b = _NUMBER.findall(got), _NUMBER.findall(want)
    if parts_a != parts_b or len(nums_a) != len(nums_b):
        return False
    for x, y in zip(nums_a, nums_b):
        if x == y:
            continue
        if "e" in x.lower() or "e" in y.lower() or _decimals(x) != _decimals(y) or not _decimals(x):
            return False  # counts (no decimals) and exponents must be equal
        unit = 10.0 ** -_decimals(x)
        if abs(_float(x) - _float(y)) > unit * (1 + 1e-9):
            return False
    return True


def assert_text_contains(block: str, text: str) -> None:
    """``block`` (several lines) is in ``text``, line after line, up to rounding of the last digit."""
    lines, target = text.splitlines(), block.strip("\n").splitlines()
    for start in range(len(lines) - len(target) + 1):
        if all(line_agrees(want, lines[start + k]) for k, want in enumerate(target)):
            return
    raise AssertionError(f"not in the committed text (up to the last printed digit):\n{block}")
