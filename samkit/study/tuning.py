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
on the run it starts from).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from samkit.errors import SamkitError
from samkit.study.folder import STUDY
from samkit.study.results import groups_of, load_study, per_seed

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


def tuned_methods(methods: tuple[str, ...], chosen: dict[str, dict[str, Any]]) -> list[str]:
    """The verdict study's method specs: each tuned method at its chosen rho, labels unchanged."""
    return [
        _with(m, f"rho={chosen[method_label(m)]['rho']:g}") if method_label(m) in chosen else m
        for m in methods
    ]


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


def tuning_markdown(suite: Path, record: dict[str, Any]) -> list[str]:
    """The verdict report's section "How rho was chosen": per tuned study, the seed sets, each
    candidate's mean test accuracy on the tuning seeds, and the chosen value."""
    specs = {s["id"]: s for s in record["studies"]}
    lines: list[str] = []
    for spec in record["studies"]:
        try:
            got = study_choice(suite, spec, specs)
        except SamkitError:  # an interrupted suite: the tuning runs of a method are not all done
            lines.append(f"- **`{spec['id']}`**: its tuning has not finished (run the suite again).")
            continue
        if got is None:
            continue
        chosen, source = got
        labels = {method_label(m) for m in spec.get("methods", ())}
        chosen = {label: c for label, c in chosen.items() if label in labels}  # this study's
        verdict_seeds = ", ".join(str(s) for s in spec.get("seeds", ()))
        if source == spec["id"]:
            tune_seeds = ", ".join(str(s) for s in spec.get("tune_seeds", ()))
            where = (f"tuned in [`{source}{SUFFIX}`]({source}{SUFFIX}/report.md) on seeds "
                     f"{tune_seeds}")  # fmt: skip
        else:
            where = f"rho as chosen for [`{source}`]({source}/report.md)"
        lines += [f"- **`{spec['id']}`** (verdict seeds {verdict_seeds}): {where}. "
                  + "; ".join(_choice_text(label, c) for label, c in chosen.items()) + "."]
    if not lines:
        return []
    return [
        "## How rho was chosen",
        "",
        "Each tuned method's rho is the candidate with the highest mean test accuracy on the "
        "tuning seeds; the verdicts use only the verdict seeds, which are disjoint from them "
        "(mean test accuracy on the tuning seeds per rho; the chosen one in bold).",
        "",
        *lines,
        "",
    ]


def _choice_text(label: str, choice: dict[str, Any]) -> str:
    cells = []
    for rho, mean in choice["means"].items():
        text = f"{rho:g}: {mean:.4f}" if not math.isnan(mean) else f"{rho:g}: –"
        cells.append(f"**{text}**" if rho == choice["rho"] else text)
    edge = ""
    rhos = list(choice["means"])
    if len(rhos) > 1 and choice["rho"] in (min(rhos), max(rhos)):
        edge = " (at the edge of its grid)"
    return f"{label} rho {choice['rho']:g}{edge} [{', '.join(cells)}]"
