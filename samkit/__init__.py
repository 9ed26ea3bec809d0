"""samkit: sharpness-aware minimization for PyTorch."""

__version__ = "0.1.0"
