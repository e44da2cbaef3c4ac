"""ElWorld: world models from recorded gameplay.

The package mirrors the pipeline, in floors whose imports only point down
(``docs/ARCHITECTURE.md``, "The house plan"): ``record`` / ``data`` /
``checkpoint`` -> ``model`` (every network) -> ``train`` (their trainers) ->
``world`` (the dream core) -> ``elworld_gym`` (the Gymnasium adapter),
``eval`` and ``control`` side by side -> ``play``.
"""

# The one source of the version: pyproject.toml reads it, `elworld --version` prints it and
# every checkpoint records it in training_info.json ("elworld_version").
__version__ = "0.1.0"
