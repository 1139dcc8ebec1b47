"""``python -m kanitts.bench``: the same as ``kanitts bench``."""

import sys

from kanitts.bench.cli import main

sys.exit(main())
