"""Train SB3 PPO on N batched dreams: one memory-model pass steps all N envs.

``examples/ppo_in_dream.py`` gives PPO SB3's ``DummyVecEnv`` over N single
dream envs (N model passes per step). Here PPO collects from
``elworld_gym.sb3.DreamVecEnv``: the same N dreams as ONE ``DreamVectorEnv``,
stepped together (batched memory passes), with SB3's auto-reset conventions.

Observations: the token grids (``obs_type="tokens"``, ``(24, 32)`` int64 ids
for the bundled world). Nothing is decoded, so stepping stays cheap. A token is
a codebook id, a category: fed to ``MlpPolicy`` as a float, id 17 would sit
"between" 16 and 18, which means nothing. So a small features extractor
embeds each cell (an ``nn.Embedding``) before the MLP. The rgb alternative
(``CnnPolicy`` on 192x256 frames) costs a vision decode per step and a far
larger network. Actions are the 22 keys as ``MultiBinary``, which PPO supports::

    pip install 'elworld[rl]'
    python examples/ppo_dream_vecenv.py --num-envs 16 --total-timesteps 8192
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, fields

import gymnasium as gym
import numpy as np
import torch
from torch import nn

try:
    from stable_baselines3 import PPO
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
    from stable_baselines3.common.vec_env import VecMonitor
except ImportError as error:  # an optional extra
    raise ImportError(
        "examples/ppo_dream_vecenv.py needs Stable-Baselines3: pip install 'elworld[rl]'"
    ) from error

from elworld_gym.sb3 import DreamVecEnv


@dataclass
class Args:
    """Command-line arguments; each field's help text is in ``HELP``."""

    checkpoints: str | None = None
    total_timesteps: int = 8192
    num_envs: int = 16
    n_steps: int = 64
    batch_size: int = 256
    n_epochs: int = 4
    learning_rate: float = 3e-4
    max_episode_steps: int = 200
    temperature: float = 1.0
    eval_episodes: int = 16
    seed: int = 0
    device: str = "cpu"


HELP = {
    "checkpoints": "checkpoints root (default: $ELWORLD_CHECKPOINTS, else the bundled demo)",
    "total_timesteps": "env steps to train for (all envs together)",
    "num_envs": "dreams stepped together by one batched model pass",
    "n_steps": "steps per env per PPO rollout (a rollout is num_envs * n_steps steps)",
    "batch_size": "PPO minibatch size",
    "n_epochs": "PPO epochs over each rollout",
    "learning_rate": "Adam learning rate",
    "max_episode_steps": "truncate dream episodes after this many steps",
    "temperature": "sampling temperature of the dream (0 = argmax)",
    "eval_episodes": "episodes for the before/after evaluation",
    "seed": "seed of the dreams (DreamVecEnv.seed) and of PPO",
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
        # SB3 hands Box observations over as floats: back to ids for the embedding.
        return self.net(self.embed(observations.long()))  # (B, gh, gw, E) -> (B, features)


def main(argv: list[str] | None = None) -> int:
    """Train PPO on the batched dream and print returns before and after."""
    args = parse_args(argv)
    # N dreams stepped together; VecMonitor adds SB3's episode statistics.
    envs = VecMonitor(
        DreamVecEnv(
            args.num_envs,
            checkpoints=args.checkpoints,
            obs_type="tokens",
            max_episode_steps=args.max_episode_steps,
            temperature=args.temperature,
            device=args.device,
        )
    )
    model = PPO(
        "MlpPolicy",
        envs,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        n_epochs=args.n_epochs,
        learning_rate=args.learning_rate,
        policy_kwargs={"features_extractor_class": TokenGridExtractor},
        seed=args.seed,  # also seeds the dreams: PPO calls envs.seed(seed)
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
    print(f"training FPS: {model.num_timesteps / elapsed:.1f} steps/s ({args.num_envs} dreams)")
    envs.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
