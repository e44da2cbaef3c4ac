"""Random keys in the dream: the smallest ElWorldDream-v0 agent.

Holds each of the 22 keys at random, plays a few episodes, and prints every
episode's return and the env's speed (steps per second)::

    python examples/random_agent.py --checkpoints checkpoints --steps 500
    python examples/random_agent.py --render            # watch it in a window
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, fields

import gymnasium as gym
import numpy as np

import elworld_gym  # noqa: F401  (registers ElWorldDream-v0)


@dataclass
class Args:
    """Command-line arguments; each field's help text is in ``HELP``."""

    checkpoints: str | None = None
    steps: int = 500
    obs_type: str = "rgb"
    key_prob: float = 0.1
    temperature: float = 1.0
    max_episode_steps: int = 200
    seed: int = 0
    device: str | None = None
    render: bool = False


HELP = {
    "checkpoints": "checkpoints root (default: $ELWORLD_CHECKPOINTS, else the bundled demo)",
    "steps": "total env steps to run",
    "obs_type": "observation type: rgb (decoded frames) or tokens (fast, no decoding)",
    "key_prob": "probability that each key is held at a step",
    "temperature": "sampling temperature of the dream (0 = argmax, deterministic)",
    "max_episode_steps": "truncate episodes after this many steps",
    "seed": "seed of the env and of the random keys",
    "device": "torch device, e.g. cpu or cuda (default: cuda when available)",
    "render": "show the dream in a pygame window",
}


def parse_args(argv: list[str] | None = None) -> Args:
    """Parse ``argv`` into ``Args`` (one flag per field)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for field in fields(Args):
        flag = "--" + field.name.replace("_", "-")
        if field.type == "bool":
            parser.add_argument(flag, action="store_true", help=HELP[field.name])
        else:
            kind = {"int": int, "float": float}.get(str(field.type), str)
            parser.add_argument(flag, type=kind, default=field.default, help=HELP[field.name])
    return Args(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    """Run random keys in the dream and print returns and FPS."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    env = gym.make(
        "ElWorldDream-v0",
        checkpoints=args.checkpoints,
        obs_type=args.obs_type,
        temperature=args.temperature,
        device=args.device,
        render_mode="human" if args.render else None,
        max_episode_steps=args.max_episode_steps,
    )
    rng = np.random.default_rng(args.seed)
    obs, _ = env.reset(seed=args.seed)
    episode_return, episode_length, returns = 0.0, 0, []
    start = time.perf_counter()
    for _ in range(args.steps):
        action = (rng.random(env.action_space.n) < args.key_prob).astype(np.uint8)
        obs, reward, terminated, truncated, _ = env.step(action)
        episode_return += reward
        episode_length += 1
        if terminated or truncated:
            print(f"episode {len(returns)}: return={episode_return:.3f} length={episode_length}")
            returns.append(episode_return)
            episode_return, episode_length = 0.0, 0
            obs, _ = env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    if episode_length:
        print(f"unfinished episode: return={episode_return:.3f} length={episode_length}")
    mean = f"{np.mean(returns):.3f}" if returns else "n/a (no episode finished)"
    print(f"mean return over {len(returns)} episodes: {mean}")
    print(f"FPS: {args.steps / elapsed:.1f} steps/s ({args.obs_type} observations)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
