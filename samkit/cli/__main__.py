"""``python -m samkit.cli``: the same as the ``samkit`` command."""

import sys

from samkit.cli.app import main

sys.exit(main())
