"""The one place samkit's version is written: ``pyproject.toml`` reads it (``[tool.setuptools.dynamic]``),
``samkit.__version__`` re-exports it, and ``CHANGELOG.md`` has a section for it (a test checks)."""

__version__ = "0.1.0"
