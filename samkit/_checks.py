"""The one set of argument checks samkit uses for numbers, counts, flags, seeds and choices (every
layer may import it): a bad value raises :class:`SamkitError` naming the setting, the rule and the
value."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from samkit.errors import SamkitError


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """A finite real number in ``[low, high]`` (``(low`` with ``low_open``, ``high)`` with ``high_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SamkitError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        if low == 0 and not low_open:
            raise SamkitError(f"{name} must be a non-negative number, got {value!r}")
        raise SamkitError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (value > high or (high_open and value == high)):
        raise SamkitError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")


def check_positive_int(
    name: str, value: Any, *, minimum: int = 1, hint: str | None = None, allow_none: bool = False
) -> None:
    """An ``int`` (not a bool) of at least ``minimum`` (``None`` too with ``allow_none``); ``hint``
    says in the error what the count counts (``"examples"``)."""
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        if hint:
            what += f" ({hint})"
        if allow_none:
            what += " or None"
        raise SamkitError(f"{name} must be {what}, got {value!r}")


def check_flag(name: str, value: Any, *, allow_none: bool = False) -> None:
    """``True`` or ``False`` (``None`` too with ``allow_none``): not a truthy string or number, which
    ``bool()`` would read as ``True``."""
    if not isinstance(value, bool) and not (allow_none and value is None):
        raise SamkitError(f"{name} must be True or False{' or None' if allow_none else ''}, got {value!r}")


def check_seed(name: str, value: Any) -> None:
    """A random seed: an ``int`` in ``[0, 2**63)`` (what every generator samkit seeds accepts)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise SamkitError(f"{name} must be an integer in [0, 2**63), got {value!r}")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """One of ``choices``."""
    if value not in choices:
        raise SamkitError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")
