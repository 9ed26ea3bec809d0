"""What ``samkit COMMAND --help`` shows besides the options: the command's examples, and a
formatter that wraps the description, keeps the examples' lines and shows each default once."""

from __future__ import annotations

import argparse
from typing import Any

# Every command's examples (tests/cli parse each one with the real parser, so they stay valid).
EXAMPLES: dict[str, tuple[str, ...]] = {
    "train": (
        "samkit train --optimizer sam --rho 0.05 --epochs 10 --out runs/sam",
        "samkit train --resume runs/sam --epochs 20    # continue it, for longer",
        "samkit train --init-from runs/sgd --optimizer sam --epochs 5 --out runs/sgd-then-sam",
    ),
    "compare": (
        "samkit compare    # the MNIST-1D main job: SGD, SAM, mSAM, Friendly-SAM x 3 seeds",
        "samkit compare --methods sgd sam gsam:alpha=0.1 --seeds 0 1 --jobs 2 --out runs/cmp",
    ),
    "sweep": ("samkit sweep --grid rho=0.02,0.05,0.1 --grid shards=1,4 --out runs/sweep",),
    "reproduce": (
        "samkit reproduce --list",
        "samkit reproduce --quick --jobs 2 --out runs/quick",
        "samkit reproduce --claims noise --out runs/noise",
    ),
    "report": ("samkit report runs/cmp",),
    "status": ("samkit status runs/cmp",),
    "optimizers": ("samkit optimizers",),
    "dln": (
        "samkit dln --out runs/dln",
        "samkit dln --rho 0.01 0.1 --steps 2000 --no-plots --out runs/dln-small",
    ),
    "sharpness": ("samkit sharpness --run runs/sam --rho 0.05 --shard-size 32",),
    "landscape": ("samkit landscape --run runs/sam --dim 2 --steps 11",),
}


class Formatter(argparse.HelpFormatter):
    """The description wrapped, the examples' lines kept; an option's default is added as
    ``(default: v)`` only where its help does not say it already and there is one to say."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or not action.option_strings:
            return text
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


def add_examples(sub: Any) -> None:
    """Give every registered command the formatter and its examples."""
    for name, parser in sub.choices.items():
        parser.formatter_class = Formatter
        if name in EXAMPLES:
            parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[name])
