"""The ``samkit`` command line: ``train | compare | sweep | reproduce | report | optimizers |
dln | sharpness | landscape``, one module per command group (argparse only).

Entry points: the ``samkit`` script and ``python -m samkit`` call :func:`main`. Library modules
never import this package: it sits on top (``cli -> study -> train -> optim, measure``).
"""

from samkit.cli.app import build_parser, main
from samkit.cli.flags import config_from_args, given_settings

__all__ = ["build_parser", "config_from_args", "given_settings", "main"]
