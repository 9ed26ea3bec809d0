"""The verdict on a claim, computed from the run files of the study that tests it.

The claims themselves are data (:mod:`samkit.study.suite_spec`); :mod:`samkit.study.reproduce` runs
their studies and :mod:`samkit.study.suite_report` writes the verdict table; nothing here runs or
writes anything.

Verdict of a claim (:func:`verdict`), from the 95% paired-t interval of its statistic ``gap``,
oriented so that the claim predicts ``gap > 0``:

* **reproduced**: the whole interval is above 0;
* **not reproduced**: the whole interval is below the claim's ``margin`` (the smallest effect
  that would count) — the effect is absent, too small, or reversed;
* **inconclusive**: otherwise (the interval is too wide to tell), or fewer than 2 paired seeds.

Two kinds of claim share that test. A **gap** claim's statistic is metric(arm) − metric(baseline),
paired by seed. A **keeps** claim — "arm keeps at least ``share`` of the reference's gain over
the baseline" — has the statistic gain(arm) − share × gain(reference) in test accuracy, paired by
seed, with margin 0 (:func:`keeps_verdict`); where the reference gains less than the claim's
``margin`` there is no gain to keep, and the verdict says so (**no reference gain**).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from samkit.errors import SamkitError
from samkit.study import dln
from samkit.study.results import groups_of, keeps, load_study, per_seed
from samkit.study.stats import Summary, gap_bounds, paired_gap, summarize
from samkit.study.suite_spec import GAP, KEEPS

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
NO_GAIN = "no reference gain"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NO_GAIN)


def verdict(gap: Summary, direction: int, margin: float = 0.0) -> str:
    """reproduced / not reproduced / inconclusive from the interval of a paired gap (module doc).

    Example:
        >>> from samkit.study.stats import summarize
        >>> verdict(summarize([0.02, 0.03, 0.025]), +1, 0.005)
        'reproduced'
    """
    if gap.n < 2 or math.isnan(gap.ci_low):
        return INCONCLUSIVE
    low, high = (gap.ci_low, gap.ci_high) if direction > 0 else (-gap.ci_high, -gap.ci_low)
    if low > 0:
        return REPRODUCED
    if high < margin:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def keeps_verdict(keeps: Summary, reference_gain: Summary, min_gain: float) -> str:
    """The verdict of a keeps claim (module doc): :data:`NO_GAIN` when the reference's mean gain
    is below ``min_gain``, else :func:`verdict` of ``keeps`` (gain − share × reference gain).

    Example:
        >>> from samkit.study.stats import summarize
        >>> keeps_verdict(summarize([0.01, 0.02, 0.015]), summarize([0.1, 0.1, 0.12]), 0.005)
        'reproduced'
    """
    if not reference_gain.mean >= min_gain:  # NaN too: no gain measured
        return NO_GAIN
    return verdict(keeps, +1, 0.0)


# ---- values of one side of a claim ---------------------------------------------------------------
def arm_values(folder: Path, kind: str, arm: dict[str, Any], metric: str) -> tuple[str, dict[int, float]]:
    """``(description, {seed: value})`` of ``metric`` for one side of a claim in a study folder."""
    if kind == "dln":
        return dln.arm_values(folder, arm, metric)
    study, rows = load_study(folder)
    groups = groups_of(study, rows)
    if "label" in arm:
        if arm["label"] not in groups:
            raise SamkitError(f"{folder}: no method {arm['label']!r} (has {', '.join(groups)}).")
        return arm["label"], per_seed(groups[arm["label"]], metric)
    wanted = arm.get("cell", {})
    matching = [
        label for label, group in groups.items()
        if group and all(group[0].get(f"cell:{k}") == v for k, v in wanted.items())
    ]  # fmt: skip
    if not matching:
        raise SamkitError(f"{folder}: no grid cell with {wanted}.")
    if len(matching) > 1 and not arm.get("best_of"):
        raise SamkitError(f"{folder}: {len(matching)} cells match {wanted}; name one or best_of.")
    # the cell of the group with the best mean test accuracy (how the papers pick rho)
    best = max(matching, key=lambda lb: _mean(per_seed(groups[lb], "test_acc")))
    return best, per_seed(groups[best], metric)


def _mean(values: dict[int, float]) -> float:
    m = summarize(list(values.values())).mean
    return -math.inf if math.isnan(m) else m


def evaluate(
    folder: Path,
    claim: dict[str, Any],
    kind: str,
    picked: dict[str, dict[str, str]] | None = None,
    groups: dict[str, dict[str, list[dict[str, Any]]]] | None = None,
) -> dict[str, Any] | None:
    """The claim's statistic and verdict, computed from the study folder's files (``kind``: the
    study's). ``picked``: ``{pick id: {family: label}}`` for arms named by a pick; ``groups``: the
    studies' rows by label already read (filled as they are read). A keeps claim whose arm the
    study has not run (yet) gives None."""
    if claim.get("kind", GAP) == KEEPS:
        return _evaluate_keeps(folder, claim, picked or {}, {} if groups is None else groups)
    study = folder / claim["study"]
    arm_desc, arm = arm_values(study, kind, claim["arm"], claim["metric"])
    base_desc, base = arm_values(study, kind, claim["baseline"], claim["metric"])
    gap = paired_gap(arm, base, bounds=gap_bounds(claim["metric"]))  # [-1, 1] for accuracies
    seeds = sorted(arm.keys() & base.keys())
    return {
        "claim": claim,
        "arm": arm_desc,
        "baseline": base_desc,
        "gap": gap,
        "verdict": verdict(gap, claim["direction"], claim["margin"]),
        "per_seed": [(s, arm[s], base[s]) for s in seeds],
    }


def _evaluate_keeps(
    folder: Path,
    claim: dict[str, Any],
    picked: dict[str, dict[str, str]],
    cache: dict[str, dict[str, list[dict[str, Any]]]],
) -> dict[str, Any] | None:
    arm = claim["arm"]
    label = picked.get(arm["pick"], {}).get(arm["family"]) if "pick" in arm else arm["label"]
    if claim["study"] not in cache:
        cache[claim["study"]] = groups_of(*load_study(folder / claim["study"]))
    groups = cache[claim["study"]]
    if label is None or label not in groups:  # the pick has not chosen it, or it has not run
        return None
    ref, base = claim["reference"]["label"], claim["baseline"]["label"]
    o = keeps(groups, label, ref, base, claim["share"])
    return {
        "claim": claim,
        "arm": label,
        "baseline": claim["baseline"]["label"],
        "gap": o["keeps"],
        "verdict": keeps_verdict(o["keeps"], o["reference_gain"], claim["margin"]),
        "keeps": o,
        "reference": keeps(groups, ref, ref, base, claim["share"]),  # its own gain and cost
        "per_seed": [],
    }
