"""Train a PPO agent inside the dream with Stable-Baselines3.

The agent never sees the real game: every frame it acts on is imagined by the
memory model. Observations are the dream's token grids (fast: nothing is
decoded), embedded per cell by a small features extractor; actions are the 22
keys as ``MultiBinary``, which SB3's PPO supports directly::

    pip install 'elworld[rl]'
    python examples/ppo_in_dream.py --checkpoints checkpoints --total-timesteps 4096
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, fields

import gymnasium as gym
import numpy as np
import torch
from torch import nn

import elworld_gym  # noqa: F401  (registers ElWorldDream-v0)

try:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
except ImportError as error:  # an optional extra
    raise ImportError(
        "examples/ppo_in_dream.py needs Stable-Baselines3: pip install 'elworld[rl]'"
    ) from error


@dataclass
class Args:
    """Command-line arguments; each field's help text is in ``HELP``."""

    checkpoints: str | None = None
    total_timesteps: int = 4096
    num_envs: int = 4
    n_steps: int = 128
    batch_size: int = 64
    learning_rate: float = 3e-4
    max_episode_steps: int = 200
    temperature: float = 1.0
    eval_episodes: int = 4
    seed: int = 0
    device: str = "cpu"


HELP = {
    "checkpoints": "checkpoints root (default: $ELWORLD_CHECKPOINTS, else the bundled demo)",
    "total_timesteps": "env steps to train for",
    "num_envs": "dream envs PPO collects from",
    "n_steps": "steps per env per PPO rollout",
    "batch_size": "PPO minibatch size",
    "learning_rate": "Adam learning rate",
    "max_episode_steps": "truncate dream episodes after this many steps",
    "temperature": "sampling temperature of the dream (0 = argmax)",
    "eval_episodes": "episodes for the before/after evaluation",
    "seed": "seed of the envs and of PPO",
    "device": "torch device for the dream and the policy",
}


def parse_args(argv: list[str] | None = None) -> Args:
    """Parse ``argv`` into ``Args`` (one flag per field)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for field in fields(Args):
        kind = {"int": int, "float": float}.get(str(field.type), str)
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, type=kind, default=field.default, help=HELP[field.name])
    return Args(**vars(parser.parse_args(argv)))


class TokenGridExtractor(BaseFeaturesExtractor):
    """Token grid ``(B, gh, gw)`` -> features: an embedding per cell, then an MLP."""

    def __init__(self, observation_space: gym.spaces.Box, embed_dim: int = 8, features: int = 128):
        super().__init__(observation_space, features_dim=features)
        vocab = int(observation_space.high.max()) + 1
        cells = int(np.prod(observation_space.shape))
        self.embed = nn.Embedding(vocab, embed_dim)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(cells * embed_dim, features), nn.ReLU())

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.net(self.embed(observations.long()))  # (B, gh, gw, E) -> (B, features)


def main(argv: list[str] | None = None) -> int:
    """Train PPO in the dream and print returns before and after."""
    args = parse_args(argv)
    env_kwargs = {
        "checkpoints": args.checkpoints,
        "obs_type": "tokens",
        "temperature": args.temperature,
        "device": args.device,
    }
    envs = make_vec_env(  # SB3's own vector env over single dream envs
        lambda: gym.make("ElWorldDream-v0", max_episode_steps=args.max_episode_steps, **env_kwargs),
        n_envs=args.num_envs,
        seed=args.seed,
    )
    model = PPO(
        "MlpPolicy",
        envs,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        policy_kwargs={"features_extractor_class": TokenGridExtractor},
        seed=args.seed,
        device=args.device,
        verbose=0,
    )
    before, _ = evaluate_policy(model, envs, n_eval_episodes=args.eval_episodes)
    print(f"mean return before training: {before:.3f}")
    start = time.perf_counter()
    model.learn(total_timesteps=args.total_timesteps)
    elapsed = time.perf_counter() - start
    after, after_std = evaluate_policy(model, envs, n_eval_episodes=args.eval_episodes)
    print(f"mean return after {model.num_timesteps} steps: {after:.3f} +/- {after_std:.3f}")
    print(f"training FPS: {model.num_timesteps / elapsed:.1f} steps/s")
    envs.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
