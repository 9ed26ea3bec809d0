"""Choosing rho per method on tuning seeds, so the seeds that decide a verdict never chose it.

Picking each method's rho as "the best mean test accuracy" on the same seeds that then give the
paired gap favours whichever arm has more candidates (the winner's curse: the maximum of several
noisy means is biased upwards). A tuned study of the claims suite therefore runs in two folders:

* ``<study>-tune/``: every candidate ``(method, rho)`` on the **tuning seeds** (a compare study
  whose labels are ``<label>.rho=<rho>``);
* ``<study>/``: each method at its chosen rho on the **verdict seeds**, disjoint from the tuning
  seeds; only these enter a claim's interval.

The choice (:func:`choose`) is the candidate with the highest mean test accuracy over the tuning
seeds (ties: the earlier candidate of the grid); it is read from the tuning folder's run files
each time, so a report states it from data and ``samkit report`` remakes it. A study may instead
take the rho chosen in another study (``tune_from``: SAM fine-tuning uses the rho tuned for SAM
on the run it starts from), and a method may run at the rho chosen for another (``rho_from``).

A suite's :class:`~samkit.study.suite_spec.Pick` is tuning one level up: it chooses a method per family
on whole studies (:func:`choose_picks`: the candidate whose worst share of the reference's gain
over those studies is highest), and later studies run only the picks. It too is read from the
run files each time.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from samkit.errors import SamkitError
from samkit.study.records import STUDY
from samkit.study.results import groups_of, keeps, load_study, per_seed

SUFFIX = "-tune"


def method_label(spec: str) -> str:
    """The label of a method spec: ``"msam:shards=4"`` -> ``msam``; ``label=x`` overrides."""
    name, _, rest = spec.partition(":")
    label = name.strip()
    for item in rest.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip() == "label":
            label = value.strip()
    return label


def _with(spec: str, extra: str) -> str:
    return f"{spec},{extra}" if ":" in spec else f"{spec}:{extra}"


def candidate_label(label: str, rho: float) -> str:
    """The tuning folder's label of ``label`` at ``rho``: ``sam.rho=0.1``."""
    return f"{label}.rho={rho:g}"


def candidates(methods: tuple[str, ...], tune: dict[str, tuple[float, ...]]) -> list[str]:
    """The method specs of the tuning study: each tuned method at each of its rhos."""
    by_label = {method_label(m): m for m in methods}
    unknown = sorted(set(tune) - set(by_label))
    if unknown:
        raise SamkitError(f"tuned label(s) {', '.join(unknown)} are not methods of the study.")
    return [
        _with(by_label[label], f"rho={rho:g},label={candidate_label(label, rho)}")
        for label, rhos in tune.items()
        for rho in rhos
    ]


def choose(tune_folder: Path, tune: dict[str, tuple[float, ...]]) -> dict[str, dict[str, Any]]:
    """``{label: {"rho": chosen, "means": {rho: mean test acc}, "seeds": [...]}}`` read from the
    tuning study's run files (module doc). A label none of whose candidates finished is an error."""
    study, rows = load_study(tune_folder)
    groups = groups_of(study, rows)
    chosen: dict[str, dict[str, Any]] = {}
    for label, rhos in tune.items():
        means: dict[float, float] = {}
        seeds: set[int] = set()
        for rho in rhos:
            values = per_seed(groups.get(candidate_label(label, rho), []), "test_acc")
            seeds |= set(values)
            if values:
                means[rho] = sum(values.values()) / len(values)
        if not means:
            raise SamkitError(f"{tune_folder}: no finished tuning run of {label!r}.")
        best = max(means, key=lambda r: (means[r], -list(rhos).index(r)))
        chosen[label] = {"rho": best, "means": means, "seeds": sorted(seeds)}
    return chosen


def tuned_methods(
    methods: list[str] | tuple[str, ...],
    chosen: dict[str, dict[str, Any]],
    rho_from: dict[str, str] | None = None,
) -> list[str]:
    """The verdict study's method specs: each tuned method at its chosen rho, and each method of
    ``rho_from`` (``{label: tuned label}``) at the rho chosen for that other method; labels
    unchanged."""
    rho_from = rho_from or {}
    out = []
    for m in methods:
        label = method_label(m)
        source = label if label in chosen else rho_from.get(label)
        out.append(_with(m, f"rho={chosen[source]['rho']:g}") if source in chosen else m)
    return out


def spec_tune(spec: dict[str, Any]) -> dict[str, tuple[float, ...]]:
    """A study spec's (or its ``suite.json`` record's) tuning grid as ``{label: rhos}``."""
    return {label: tuple(rhos) for label, rhos in spec.get("tune") or ()}


def study_choice(suite: Path, spec: dict[str, Any], specs: dict[str, dict[str, Any]]
                 ) -> tuple[dict[str, dict[str, Any]], str] | None:  # fmt: skip
    """``(chosen, where)`` for a study of a suite folder: its own tuning folder's choice, or the
    choice of the study it takes rho from (``tune_from``); ``None`` for an untuned study or one
    whose tuning has not run yet."""
    source = spec.get("tune_from") or spec["id"]
    tune = spec_tune(specs[source])
    folder = suite / f"{source}{SUFFIX}"
    if not tune or not (folder / STUDY).is_file():
        return None
    return choose(folder, tune), source


# ---- picks: a method per family, chosen on whole studies ----------------------------------------
def pick_shares(suite: Path, pick: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{candidate label: {study: share of the reference's gain}}`` over the pick's studies that
    have run; NaN where the reference gained less than the pick's ``min_gain`` (nothing to keep)."""
    table: dict[str, dict[str, float]] = {label: {} for _, label, _ in pick["candidates"]}
    for sid in pick["studies"]:
        if not (suite / sid / STUDY).is_file():
            continue
        groups = groups_of(*load_study(suite / sid))
        for _, label, _ in pick["candidates"]:
            o = keeps(groups, label, pick["reference"], pick["baseline"])
            gained = o["reference_gain"].mean >= pick["min_gain"]
            table[label][sid] = o["share"] if gained else math.nan
    return table


def worst(shares: dict[str, float]) -> tuple[str | None, float]:
    """``(study, share)`` of the lowest share that counts (``(None, nan)`` when none does)."""
    counted = {k: v for k, v in shares.items() if not math.isnan(v)}
    if not counted:
        return None, math.nan
    where = min(counted, key=lambda k: counted[k])
    return where, counted[where]


def _best(labels: list[str], table: dict[str, dict[str, float]]) -> str | None:
    """Of ``labels``, the one whose worst share is highest; shares equal to rounding are a tie,
    which the earlier label wins. None when no label has a share."""
    scored = [(label, worst(table[label])[1]) for label in labels]
    scored = [(label, w) for label, w in scored if not math.isnan(w)]
    if not scored:
        return None
    return max(scored, key=lambda lw: (round(lw[1], 9), -labels.index(lw[0])))[0]


def choose_picks(pick: dict[str, Any], table: dict[str, dict[str, float]]) -> dict[str, str]:
    """``{family: label}``: per family, the candidate whose worst share in ``table``
    (:func:`pick_shares`) is highest (ties: the earlier candidate). A family none of whose
    candidates has a share is an error."""
    chosen: dict[str, str] = {}
    for family in dict.fromkeys(c[0] for c in pick["candidates"]):
        best = _best([c[1] for c in pick["candidates"] if c[0] == family], table)
        if best is None:
            raise SamkitError(
                f"pick {pick['id']}: no study of {', '.join(pick['studies'])} gives a share for "
                f"{family!r} (did {pick['reference']} gain anything there?)."
            )
        chosen[family] = best
    return chosen


def best_pick(pick: dict[str, Any], table: dict[str, dict[str, float]],
              chosen: dict[str, str]) -> str | None:  # fmt: skip
    """Of the picks of the pick's ``best_of`` families, the one with the highest worst share."""
    return _best([label for family, label in chosen.items() if family in pick["best_of"]], table)


def pick_outcomes(suite: Path, picks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per pick of a suite folder, from its run files: ``shares`` (:func:`pick_shares`),
    ``chosen`` (:func:`choose_picks`; None while its studies cannot choose yet), ``best``
    (:func:`best_pick`) and ``best_name``, what the pick calls it."""
    out = {}
    for pick in picks:
        shares = pick_shares(suite, pick)
        try:
            chosen = choose_picks(pick, shares)
        except SamkitError:  # an interrupted suite: the pick's studies have not all run
            out[pick["id"]] = {"shares": shares, "chosen": None, "best": None, "best_name": ""}
            continue
        out[pick["id"]] = {"shares": shares, "chosen": chosen,
                           "best": best_pick(pick, shares, chosen),
                           "best_name": pick.get("best_name", "")}  # fmt: skip
    return out
