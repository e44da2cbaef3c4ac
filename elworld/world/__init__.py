"""The dream core: ``DreamWorld`` (vision + memory models stepping N dreams), its loading.

The fifth floor of the import plan (``docs/ARCHITECTURE.md``): it builds on
``model/`` and ``checkpoint/``, and everything that dreams (``elworld_gym``,
``eval``, ``control``, ``play``) builds on it.

- ``dream``: ``DreamWorld`` and ``DreamStep``, the one way anything steps a dream.
- ``loading``: where a world's checkpoints and start frames are found.
"""
