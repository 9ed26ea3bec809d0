"""``samkit optimizers``: every optimizer name with its options and cost."""

from __future__ import annotations

import argparse
from typing import Any


def add_parsers(sub: Any) -> None:
    """Register ``optimizers``."""
    p = sub.add_parser(
        "optimizers",
        help="list the optimizer names with their options and cost",
        description="Every name --optimizer and --methods accept: plain optimizers and SAM-family "
        "rules, with forward-backward passes per step and the rule's options.",
    )
    p.set_defaults(func=_optimizers)


def _optimizers(args: argparse.Namespace) -> int:
    from samkit.optim import registry

    print(optimizer_table(registry))
    return 0


def optimizer_table(registry: Any) -> str:
    """Every optimizer name with its passes per step, options (defaults) and source."""
    lines = ["name           passes  options (default)                       what it is"]
    for name in registry.names():
        e = registry.entry(name)
        options = {k: v for k, v in e.options.items() if k not in ("adaptive",)}
        shown = ", ".join(f"{k}={v}" for k, v in options.items()) or "-"
        lines.append(f"{name:<14} {e.passes_per_step():>6}  {shown:<39} {e.summary}")
    lines.append(
        "\nSet an option with --optimizer-option KEY=VALUE (eta, sigma, lmbda: --eta, --sigma, "
        "--lmbda), or in a study method: --methods gsam:alpha=0.2. Every rule also takes "
        "adaptive=true (ASAM's metric |w| + eta). multistep_sam takes steps + 1 passes."
    )
    return "\n".join(lines)
