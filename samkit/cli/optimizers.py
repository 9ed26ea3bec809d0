"""``samkit optimizers``: every optimizer name with its options and cost, then the other names a
run takes (cadences, scopes, base optimizers, executions), all from the registry."""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(sub: Any) -> None:
    """Register ``optimizers``."""
    p = sub.add_parser(
        "optimizers",
        help="list the optimizer names with their options and cost (and cadences, scopes, ...)",
        description="Every name --optimizer and --methods accept: plain optimizers and SAM-family "
        "rules, with forward-backward passes per step and the rule's options; then the names "
        "--cadence, --scope, --base and --execution accept.",
    )
    p.set_defaults(func=_optimizers)


def _optimizers(args: argparse.Namespace) -> int:
    from samkit.optim import registry

    print(optimizer_table(registry))
    return 0


def optimizer_table(registry: Any) -> str:
    """Every optimizer name with its passes per step, options (defaults) and source; then the
    other kinds of :data:`~samkit.optim.registry.KINDS`, each name with its options and summary."""
    from samkit.registry import REQUIRED

    lines = ["name           passes  options (default)                       what it is"]
    for name in registry.names():
        e = registry.entry(name)
        options = {k: v for k, v in e.options.items() if k not in ("adaptive",)}
        shown = ", ".join(f"{k}={v}" for k, v in options.items()) or "-"
        lines.append(f"{name:<14} {e.passes_per_step():>6}  {shown:<39} {e.summary}")
    flags = ", ".join(registry.RUN_SETTING_OPTIONS)
    flag_names = ", ".join(f"--{k}" for k in registry.RUN_SETTING_OPTIONS)
    lines.append(
        f"\nSet an option with --optimizer-option KEY=VALUE ({flags}: {flag_names}), or in a study "
        "method: --methods gsam:alpha=0.2. Every rule also takes adaptive=true (ASAM's metric "
        "|w| + eta). multistep_sam takes steps + 1 passes."
    )
    for kind, names in registry.KINDS.items():
        if kind == "optimizer":
            continue
        lines.append(f"\n--{kind.split()[0]}:")
        for name in names.names():
            lines.append(f"  {name:<11} {names.summary(name).replace('``', '')}")
            options = names.options(name)
            if name in names.presets():
                lines.append(f"  {'':<11} = {names.presets()[name]}")
            elif options:
                shown = ", ".join(k if v is REQUIRED else f"{k}={v}" for k, v in options.items())
                lines.append(f"  {'':<11} options: {shown}")
    return "\n".join(lines)
