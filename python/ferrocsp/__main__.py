"""``python -m ferrocsp``: see ``ferrocsp._cli``."""

import sys

from ._cli import main

if __name__ == "__main__":  # importing this module (documentation tools do) runs nothing
    sys.exit(main())
