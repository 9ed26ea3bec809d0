"""samkit inside the trainers people use: PyTorch Lightning and the Hugging Face ``Trainer``.

Each adapter is an optional extra and is imported on its own (nothing else in samkit imports them):

* :mod:`samkit.integrations.lightning` — ``pip install 'samkit[lightning]'``
* :mod:`samkit.integrations.transformers` — ``pip install 'samkit[transformers]'``

The adapters hold no math of their own: every update is the optimizer's (``step(closure)`` or
``train_step``). See ``docs/integrations.md``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise an ``ImportError`` that names the samkit extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"samkit.integrations.{extra} needs the {module!r} package, which is not installed: "
            f"pip install 'samkit[{extra}]'"
        ) from err
