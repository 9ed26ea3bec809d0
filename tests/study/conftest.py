import sys
from pathlib import Path

# The harness fixtures live with the train tests; share them instead of copying.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))

from harness_fixtures import harness  # noqa: E402, F401  (fixture)
