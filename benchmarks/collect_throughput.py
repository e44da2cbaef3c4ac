"""Collection throughput: take_cover frames per second with 1 and with N workers.

Runs ``collect_doom`` twice into temporary folders (files included: rendering,
policy and writing) and prints frames/s for each and their ratio. One run on
a shared machine: read the ratio, not the absolute numbers.

    python benchmarks/collect_throughput.py --episodes 6 --max-steps 200 --workers 2
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from elworld.record import collect_doom
from elworld.record.doom import SCENARIOS


def measure(args: argparse.Namespace, workers: int, folder: Path) -> tuple[int, float]:
    """Collect once; return (frames written, seconds)."""
    start = time.perf_counter()
    paths = collect_doom(
        args.scenario, args.episodes, folder, policy=args.policy, seed=args.seed,
        workers=workers, max_steps=args.max_steps, compress=args.compress, progress=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    frames = sum(len(np.load(p)["act"]) for p in paths)
    return frames, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenario", default="take_cover", choices=SCENARIOS, help="ViZDoom scenario"
    )
    parser.add_argument("--episodes", type=int, default=6, help="episodes per run (default: 6)")
    parser.add_argument(
        "--max-steps", type=int, default=200, help="steps cap per episode (default: 200)"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="workers of the parallel run (default: 2)"
    )
    parser.add_argument(
        "--policy", default="sticky", choices=("random", "sticky"), help="scripted policy"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    parser.add_argument("--compress", action="store_true", help="write compressed .npz")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    rates = {}
    with tempfile.TemporaryDirectory(prefix="elworld-bench-") as tmp:
        for workers in (1, args.workers):
            frames, seconds = measure(args, workers, Path(tmp) / f"workers{workers}")
            rates[workers] = frames / seconds
            print(
                f"workers={workers}: {frames} frames in {seconds:.2f} s = {rates[workers]:.0f} frames/s"
            )
    print(
        f"speed-up with {args.workers} workers: {rates[args.workers] / rates[1]:.2f}x (one run; includes process start-up)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
