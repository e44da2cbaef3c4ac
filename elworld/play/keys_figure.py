"""``elworld keys-figure``: does the dream obey the keys? Real and dream rows from one start frame.

From the same real start frame (the game reset with one seed), each key
combination (default: holding ``left``, holding ``right``, no key) is held for
``steps`` steps twice: once in the real game and once in the dream started
from that frame. The figure stacks, per combination, a real row and a dream
row with a frame every ``every`` steps, and ``keys_figure`` returns the
numbers behind it: the mean absolute pixel change from the start frame after
``steps`` steps, and the mean absolute difference between the last frames of
two combinations (left vs right), real and dream.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elworld.cli_args import add_dream_pass_arguments
from elworld.keys import action_from_names
from elworld.play.policies import parse_key_names

logger = logging.getLogger(__name__)

DEFAULT_COMBOS = ("left", "right", "-")  # "-" = no key
LABEL_HEIGHT = 14


def parse_combo(text: str) -> tuple[str, ...]:
    """``"left+z"`` -> ``("left", "z")``; ``"-"`` -> ``()`` (no key); ``ValueError`` if unknown."""
    return tuple(parse_key_names(text, "--keys"))


@dataclass
class KeysFigure:
    """Frames ``(steps + 1, H, W, 3)`` per combination, real and dream, and their summary."""

    combos: list[tuple[str, ...]]
    real: list[np.ndarray]
    dream: list[np.ndarray]

    def change_from_start(self) -> dict[str, dict[str, float]]:
        """Mean absolute pixel change (0-255) of the last frame from the start frame."""
        return {
            "+".join(combo) or "none": {
                "real": _mad(real[-1], real[0]),
                "dream": _mad(dream[-1], dream[0]),
            }
            for combo, real, dream in zip(self.combos, self.real, self.dream)
        }

    def last_frame_gap(self, a: int = 0, b: int = 1) -> dict[str, float]:
        """Mean absolute difference between the last frames of combinations ``a`` and ``b``."""
        return {
            "real": _mad(self.real[a][-1], self.real[b][-1]),
            "dream": _mad(self.dream[a][-1], self.dream[b][-1]),
        }


def _mad(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.abs(x.astype(np.int16) - y.astype(np.int16)).mean())


def keys_figure(
    env, real_env, combos: list[tuple[str, ...]], *, steps: int, seed: int
) -> KeysFigure:
    """Hold each combination ``steps`` steps in ``real_env`` and in the dream ``env``.

    Both start from ``real_env.reset(seed=seed)``'s frame; the dream is reset
    with that frame and the same ``seed`` for every combination, so the rows
    differ only by the keys.
    """
    real_rows, dream_rows = [], []
    for combo in combos:
        action = action_from_names(combo)
        start, _ = real_env.reset(seed=seed)
        real = [start]
        for _ in range(steps):
            frame, _, terminated, truncated, _ = real_env.step(action)
            real.append(frame)
            if terminated or truncated:
                break
        obs, _ = env.reset(seed=seed, options={"observation": start})
        dream = [obs]
        for _ in range(len(real) - 1):
            obs, *_ = env.step(action)
            dream.append(obs)
        real_rows.append(np.stack(real))
        dream_rows.append(np.stack(dream))
    return KeysFigure(combos=list(combos), real=real_rows, dream=dream_rows)


def render_figure(figure: KeysFigure, every: int, path: str | os.PathLike[str]) -> Path:
    """Write the real / dream rows (a frame every ``every`` steps) to a PNG with row labels."""
    from PIL import Image, ImageDraw

    rows = []
    for combo, real, dream in zip(figure.combos, figure.real, figure.dream):
        name = "+".join(combo) or "no key"
        for kind, frames in (("real", real), ("dream", dream)):
            picked = frames[::every]
            strip = np.concatenate(list(picked), axis=1)  # (H, n*W, 3)
            label = np.full((LABEL_HEIGHT, strip.shape[1], 3), 255, np.uint8)
            image = Image.fromarray(np.concatenate([label, strip], axis=0))
            text = f"{kind}, holding {name}: steps 0, {every}, ... {len(frames) - 1}"
            ImageDraw.Draw(image).text((4, 1), text, fill=(0, 0, 0))
            rows.append(np.asarray(image))
    width = max(row.shape[1] for row in rows)
    rows = [np.pad(row, ((0, 0), (0, width - row.shape[1]), (0, 0))) for row in rows]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``elworld keys-figure``."""
    parser = subparsers.add_parser(
        "keys-figure",
        help="real vs dream rows holding left / right / no key from one real start frame",
        description="From one real start frame, hold each key combination in the real game "
        "and in the dream, and write real / dream rows to a PNG; logs how far each moved "
        "from the start frame and how far apart left and right ended (mean absolute pixel "
        "difference, 0-255). Needs the doom extra.",
    )
    parser.add_argument(
        "--checkpoints", metavar="ROOT", help="checkpoints root (default: the bundled world)"
    )
    parser.add_argument(
        "--real",
        default=None,
        help="the real game, doom:SCENARIO (default: the world's recorded scenario, else "
        "doom:take_cover)",
    )
    parser.add_argument(
        "--keys",
        nargs="+",
        default=list(DEFAULT_COMBOS),
        help="key combinations, one row pair each: names joined by '+', '-' for no key "
        "(default: left right -)",
    )
    parser.add_argument("--steps", type=int, default=24, help="steps held (default: 24)")
    parser.add_argument("--every", type=int, default=4, help="a frame every N steps (default: 4)")
    parser.add_argument("--seed", type=int, default=0, help="game and dream seed (default: 0)")
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="dream sampling temperature (default: 1)"
    )
    add_dream_pass_arguments(parser, precision=False)
    parser.add_argument("--device", help="torch device (default: CUDA when available)")
    parser.add_argument("--out", default="outputs/keys.png", help="PNG file (%(default)s)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from elworld.play.compare_doom import make_real_env, parse_compare_spec
    from elworld_gym.dream_env import DreamEnv

    if args.steps < 1 or args.every < 1:
        raise ValueError(f"--steps and --every must be >= 1, got {args.steps}, {args.every}")
    combos = [parse_combo(text) for text in args.keys]
    if args.real is not None:
        parse_compare_spec(args.real)  # fail before loading the models
    env = DreamEnv(
        args.checkpoints, temperature=args.temperature, guidance=args.guidance, device=args.device
    )
    frame_skip = env.world.frame_skip
    scenario = env.world.recordings.get("scenario")
    if args.real is None and scenario is None:
        raise ValueError(
            "the world's recordings name no scenario to play for real: pass --real doom:SCENARIO"
        )
    real = args.real or f"doom:{scenario}"
    real_env = make_real_env(real, frame_skip=frame_skip)
    try:
        figure = keys_figure(env, real_env, combos, steps=args.steps, seed=args.seed)
    finally:
        real_env.close()
        env.close()
    path = render_figure(figure, args.every, args.out)
    for name, change in figure.change_from_start().items():
        logger.info(
            "holding %s for %d steps: change from the start frame real %.1f, dream %.1f",
            name, args.steps, change["real"], change["dream"],
        )  # fmt: skip
    if len(combos) >= 2:
        gap = figure.last_frame_gap()
        logger.info(
            "last frames of %s vs %s differ by real %.1f, dream %.1f",
            "+".join(combos[0]) or "no key", "+".join(combos[1]) or "no key",
            gap["real"], gap["dream"],
        )  # fmt: skip
    logger.info("wrote %s (frame skip %s)", path, frame_skip)
    return 0
