"""``python -m probgen.cli``: the ``probgen`` command."""

import sys

from probgen.cli import main

sys.exit(main())
