"""``python -m elworld`` runs the command line."""

import sys

from elworld.cli import main

sys.exit(main())
