"""``python3 -m pnfsmon``: the same as the ``pnfsmon`` command."""

import sys

from pnfsmon.cli import main

sys.exit(main())
