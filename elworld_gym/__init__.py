"""Gymnasium environments running inside ElWorld's learned world model.

``import elworld_gym`` registers ``ElWorldDream-v0`` (Gymnasium 1.x does not
load plugin entry points), and ``gym.make("elworld_gym:ElWorldDream-v0")``
imports this module first, so it also works with no prior import::

    import gymnasium as gym

    env = gym.make("elworld_gym:ElWorldDream-v0", checkpoints="checkpoints")
    envs = gym.make_vec("elworld_gym:ElWorldDream-v0", num_envs=8, obs_type="tokens")

The models and env classes are imported only when an env is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import gymnasium as gym

ENV_ID = "ElWorldDream-v0"
# 60 s of play at the recordings' 20 fps.
MAX_EPISODE_STEPS = 1200

if TYPE_CHECKING:
    from elworld.world.dream import DreamWorld
    from elworld_gym.dream_env import DreamEnv
    from elworld_gym.vector_env import DreamVectorEnv

__all__ = [
    "ENV_ID",
    "MAX_EPISODE_STEPS",
    "DreamEnv",
    "DreamVectorEnv",
    "DreamWorld",
    "register_envs",
]


def register_envs() -> None:
    """Register ``ElWorldDream-v0`` with Gymnasium (does nothing if already registered)."""
    if ENV_ID in gym.registry:
        return
    gym.register(
        id=ENV_ID,
        entry_point="elworld_gym.dream_env:DreamEnv",
        vector_entry_point="elworld_gym.vector_env:DreamVectorEnv",
        max_episode_steps=MAX_EPISODE_STEPS,
    )


def __getattr__(name: str) -> object:
    """Import the env classes lazily, so registering stays cheap."""
    if name == "DreamEnv":
        from elworld_gym.dream_env import DreamEnv

        return DreamEnv
    if name == "DreamVectorEnv":
        from elworld_gym.vector_env import DreamVectorEnv

        return DreamVectorEnv
    if name == "DreamWorld":
        from elworld.world.dream import DreamWorld

        return DreamWorld
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register_envs()
