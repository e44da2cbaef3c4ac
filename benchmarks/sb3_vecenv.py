"""SB3 vector envs over the dream: ``DreamVecEnv`` (batched) vs ``DummyVecEnv``.

Both step the same N dreams of the same world with the same random actions:
``elworld_gym.sb3.DreamVecEnv`` steps all N envs together (memory passes over
``step_chunk`` envs, 2 on a CPU), SB3's ``DummyVecEnv`` over N single
``DreamEnv``s runs N passes of one env. Each is
timed ``--repeats`` times (best kept) after ``--warmup`` steps, in one run, and
the ratio printed. On a shared machine read the ratio, not the absolute numbers.

    python benchmarks/sb3_vecenv.py                          # bundled checkpoints, N = 16
    python benchmarks/sb3_vecenv.py --num-envs 4 --steps 20 --obs-type rgb
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

try:
    from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv
except ImportError as error:  # an optional extra
    raise ImportError(
        "benchmarks/sb3_vecenv.py needs Stable-Baselines3: pip install 'elworld[rl]'"
    ) from error

from elworld_gym.sb3 import DreamVecEnv

from common import synchronize

ENV_ID = "elworld_gym:ElWorldDream-v0"


def steps_per_second(
    envs: VecEnv, warmup: np.ndarray, timed: np.ndarray, repeats: int, device: torch.device
) -> float:
    """Best env steps/s over ``repeats`` runs of the ``timed`` actions ``(steps, N, 22)``."""
    envs.seed(0)
    envs.reset()
    for action in warmup:
        envs.step(action)
    best = 0.0
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for action in timed:
            envs.step(action)
        synchronize(device)
        best = max(best, timed.shape[0] * timed.shape[1] / (time.perf_counter() - start))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoints", default=None, help="checkpoints root (default: the bundled demo world)"
    )
    parser.add_argument("--num-envs", type=int, default=16, help="N dreams (default: 16)")
    parser.add_argument(
        "--steps", type=int, default=50, help="timed vector steps per repeat (default: 50)"
    )
    parser.add_argument("--warmup", type=int, default=5, help="untimed first steps (default: 5)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs, best kept (default: 3)")
    parser.add_argument(
        "--obs-type", default="tokens", choices=("tokens", "rgb"), help="observations"
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "bf16", "fp32"),
        help="memory-model precision (auto: bf16 where native, else fp32)",
    )
    parser.add_argument("--device", default=None, help="torch device (default: CUDA, else CPU)")
    args = parser.parse_args(argv)

    kwargs = {
        "checkpoints": args.checkpoints,
        "obs_type": args.obs_type,
        "precision": args.precision,
        "device": args.device,
    }
    n = args.num_envs
    batched = DreamVecEnv(n, **kwargs)
    single = DummyVecEnv([lambda: gym.make(ENV_ID, **kwargs)] * n)
    device = batched.env.world.device
    rng = np.random.default_rng(0)
    actions = (rng.random((args.warmup + args.steps, n, 22)) < 0.1).astype(np.uint8)
    warmup, timed = actions[: args.warmup], actions[args.warmup :]
    print(
        f"N = {n} dreams, {args.obs_type} observations, {args.precision}, device {device}, "
        f"torch threads {torch.get_num_threads()}, {args.steps} steps x {args.repeats} repeats"
    )
    rates = {}
    for name, envs in (("DummyVecEnv(N x DreamEnv)", single), ("DreamVecEnv", batched)):
        rates[name] = steps_per_second(envs, warmup, timed, args.repeats, device)
        print(f"{name:>26}: {rates[name]:8.1f} env steps/s")
        envs.close()
    ratio = rates["DreamVecEnv"] / rates["DummyVecEnv(N x DreamEnv)"]
    print(f"{'DreamVecEnv / DummyVecEnv':>26}: {ratio:8.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
