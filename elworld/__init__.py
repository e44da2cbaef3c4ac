"""ElWorld: world models from recorded gameplay.

The package mirrors the pipeline: ``data`` (recordings) -> ``model.vision``
(VQ-VAE tokenizer) -> ``model.memory`` (next-frame transformer) ->
``elworld_gym`` (the dream environment) -> play, rollout and agents.
"""

__version__ = "0.1.0"
