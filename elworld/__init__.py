"""ElWorld: world models from recorded gameplay.

The package mirrors the pipeline: ``data`` (recordings) -> ``model.vision``
(VQ-VAE tokenizer) -> ``model.memory`` (next-frame transformer) ->
``elworld_gym`` (the dream environment) -> play, rollout and agents.
"""

# The one source of the version: pyproject.toml reads it, `elworld --version` prints it and
# every checkpoint records it in training_info.json ("elworld_version").
__version__ = "0.1.0"
