"""The sections of a suite's report that say how its knobs were chosen, from the run files.

"How rho was chosen" (:func:`tuning_markdown`): per tuned study, each candidate rho's mean test
accuracy on the tuning seeds and the choice (:func:`samkit.study.tuning.choose`). "How the picks
were chosen" (:func:`picks_markdown`): per :class:`~samkit.study.suite_spec.Pick`, each candidate's share
of the reference's gain on the pick's studies, its worst, and each family's pick
(:func:`samkit.study.tuning.choose_picks`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from samkit.errors import SamkitError
from samkit.study.tuning import SUFFIX, method_label, study_choice, worst


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
        seeds = ", ".join(str(s) for s in spec.get("seeds", ()))
        seeds = f"verdict seeds {seeds}" if spec.get("judged", True) else f"seeds {seeds}, which only choose"
        if source == spec["id"]:
            tune_seeds = ", ".join(str(s) for s in spec.get("tune_seeds", ()))
            where = (f"tuned in [`{source}{SUFFIX}`]({source}{SUFFIX}/report.md) on seeds "
                     f"{tune_seeds}")  # fmt: skip
        else:
            where = f"rho as chosen for [`{source}`]({source}/report.md)"
        lines += [
            f"- **`{spec['id']}`** ({seeds}): {where}. "
            + "; ".join(_choice_text(label, c) for label, c in chosen.items())
            + "."
        ]
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


def picks_markdown(record: dict[str, Any], outcomes: dict[str, dict[str, Any]]) -> list[str]:
    """The section "How the picks were chosen": per pick of the suite's ``record``, a table of
    each candidate's share of the reference's gain per study and its worst, the family's pick in
    bold (``outcomes``: :func:`samkit.study.tuning.pick_outcomes`)."""
    lines: list[str] = []
    for pick in record.get("picks", []):
        table, chosen, best = (outcomes[pick["id"]][k] for k in ("shares", "chosen", "best"))
        if chosen is None:
            lines += [f"- **`{pick['id']}`**: its studies have not finished (run the suite again).", ""]
            continue
        ids = list(pick["studies"])
        ref, base = pick["reference"], pick["baseline"]
        lines += [
            f"### `{pick['id']}`: one method per family, chosen on " + ", ".join(f"`{i}`" for i in ids),
            "",
            f"Share of `{ref}`'s gain = mean(method − `{base}`) / mean(`{ref}` − `{base}`) in test "
            f"accuracy, paired by seed, on those studies' seeds (which judge nothing). A study "
            f"where `{ref}` gains less than {100 * pick['min_gain']:.1f} points has no gain to "
            "keep (–) and counts for no worst case. Bold: the family's pick (highest worst "
            "share; ties: the earlier candidate).",
            "",
            "| candidate | family | " + " | ".join(f"`{i}`" for i in ids) + " | worst |",
            "|---|---|" + "---|" * (len(ids) + 1),
        ]
        for family, label, spec in pick["candidates"]:
            shares = table[label]
            _, low = worst(shares)
            cells = ["–" if math.isnan(shares.get(i, math.nan)) else f"{shares[i]:.0%}" for i in ids]
            name = f"**`{label}`**" if chosen.get(family) == label else f"`{label}`"
            lines.append(f"| {name} (`{spec}`) | {family} | " + " | ".join(cells)
                         + f" | {'–' if math.isnan(low) else f'{low:.0%}'} |")  # fmt: skip
        if best:
            families = ", ".join(pick["best_of"])
            lines += ["", f"`{pick['best_name']}` is the best of the picks of {families} (highest "
                      f"worst share): **`{best}`**."]  # fmt: skip
        lines.append("")
    if not lines:
        return []
    return ["## How the picks were chosen", "", *lines]
