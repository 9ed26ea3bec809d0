import sys
from pathlib import Path

# The harness fixtures live with the train tests and the small measurement models with the
# measure tests; share them instead of copying.
for folder in ("train", "measure"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / folder))

from harness_fixtures import harness  # noqa: E402, F401  (fixture)
