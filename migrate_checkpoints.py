"""Move checkpoints from the old flat layout into ``checkpoints/{vision,memory,control}/``.

Usage: ``python migrate_checkpoints.py [ROOT] [--dry-run]`` (same as
``elworld migrate-checkpoints``; ROOT defaults to ``checkpoints``).
"""

from __future__ import annotations

import sys

from elworld.checkpoint import migrate_main

if __name__ == "__main__":
    sys.exit(migrate_main())
