"""``python -m ferrocsp``: see ``ferrocsp._cli``."""

import sys

from ._cli import main

sys.exit(main())
