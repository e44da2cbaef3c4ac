"""``elworld eval``: how good a world is, measured against held-out real episodes.

A top-floor package (``docs/ARCHITECTURE.md``): it builds on ``world/``,
``train/``, ``model/`` and ``data/``, and nothing below imports it.
"""
