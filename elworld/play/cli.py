"""``elworld play``, ``elworld rollout`` and ``elworld demo``.

- ``play``: the dream in a pygame window, driven live by the 22-key layout;
  ``--compare doom:SCENARIO`` shows the real game beside it.
- ``rollout``: headless; a policy (or a recorded episode with ``--compare``)
  drives the dream and the frames go to an ``.mp4`` / ``.gif``.
- ``demo``: ``play`` where a display exists, else a rollout video to
  ``outputs/dream.mp4``; prints the video's path.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from elworld.checkpoint import CheckpointError
from elworld.cli_args import add_dream_pass_arguments, positive_float
from elworld.play.dream import make_dream_env
from elworld.play.policies import DEFAULT_POLICY_KEYS, POLICY_NAMES

logger = logging.getLogger(__name__)

DEFAULT_VIDEO = Path("outputs") / "dream.mp4"
DEFAULT_ROLLOUT_STEPS = 200  # 10 s at 20 fps
# What a user mistake raises on the way: bad arguments, missing or unfit checkpoints and
# files, no ViZDoom, no window.
USER_ERRORS = (ValueError, FileNotFoundError, CheckpointError, ImportError, RuntimeError)


def has_display() -> bool:
    """Whether a window can be shown: Linux needs ``$DISPLAY``/``$WAYLAND_DISPLAY``.

    macOS and Windows are assumed to have one; ``SDL_VIDEODRIVER=dummy`` or
    ``offscreen`` means no.
    """
    if os.environ.get("SDL_VIDEODRIVER", "").lower() in ("dummy", "offscreen"):
        return False
    if sys.platform in ("darwin", "win32", "cygwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _fail(error: BaseException) -> int:
    print(f"error: {error}", file=sys.stderr)
    return 1


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _add_dream_args(parser: argparse.ArgumentParser, seed: int | None) -> None:
    parser.add_argument(
        "--checkpoints",
        metavar="ROOT",
        help="checkpoints root holding vision/best_model and memory/best_model "
        "(default: $ELWORLD_CHECKPOINTS, else the bundled demo world)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="sampling temperature, 0 = argmax (default: 1.0)",
    )
    parser.add_argument(
        "--top-k", type=_positive_int, default=None, help="sample among the k likeliest tokens"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=seed,
        help=f"seed of the start frame and the sampling (default: {seed})",
    )
    parser.add_argument("--device", help="torch device (default: CUDA when available, else CPU)")
    _add_speed_args(parser)


def _add_speed_args(parser: argparse.ArgumentParser) -> None:
    """``--guidance`` and ``--precision``: how much work each dream step does."""
    add_dream_pass_arguments(parser)


def play(
    checkpoints: str | None = None,
    *,
    scale: int | None = None,
    fps: float | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
    device: str | None = None,
    compare: str | None = None,
    record_dir: str | os.PathLike[str] = "outputs",
    max_frames: int | None = None,
    screenshot: str | os.PathLike[str] | None = None,
    guidance: float | None = None,
    precision: str = "auto",
) -> dict[str, float]:
    """Play the dream in a window until quit (or ``max_frames``); return ``PlaySession.stats()``.

    ``scale`` defaults to 3 (2 with ``compare``, whose window is twice as
    wide). ``fps`` defaults to the world's rate (``metadata["render_fps"]``: the
    recordings' steps per second), and ``compare`` runs the real game at the
    world's frame skip. ``screenshot`` saves the window as a PNG when the session ends.
    ``guidance`` and ``precision`` choose each step's work (``make_dream_env``).
    """
    from elworld.play.window import PlayConfig, PlaySession

    if not has_display() and not os.environ.get("SDL_VIDEODRIVER"):
        raise RuntimeError(
            "no display ($DISPLAY and $WAYLAND_DISPLAY are unset), so no window can open; "
            "`elworld rollout` or `elworld demo` write a video instead "
            "(SDL_VIDEODRIVER=dummy runs play without a visible window)"
        )
    if scale is None:
        scale = 2 if compare else 3
    real_env = None
    if compare is not None:
        from elworld.play.compare_doom import make_real_env, parse_compare_spec

        parse_compare_spec(compare)  # fail before loading the models
    env = make_dream_env(
        checkpoints, temperature=temperature, top_k=top_k, device=device, guidance=guidance,
        precision=precision,
    )  # fmt: skip
    world_guidance = float(env.unwrapped.world.guidance)
    fps = fps or float(env.metadata["render_fps"])
    config = PlayConfig(scale=scale, fps=fps, seed=seed, record_dir=Path(record_dir))
    try:
        if compare is not None:
            real_env = make_real_env(compare, frame_skip=env.unwrapped.world.frame_skip)
        session = PlaySession(env, config, real_env=real_env)
        try:
            session.run(max_frames=max_frames)
            if screenshot is not None:
                session.screenshot(screenshot)
            stats = session.stats()
        finally:
            session.close()
    finally:
        env.close()
        if real_env is not None:
            real_env.close()
    logger.info(
        "played %d frames in %.1f s: %.1f FPS (target %g); dream step p50 %.1f ms, p95 %.1f ms",
        stats["frames"], stats["seconds"], stats["fps"], fps, stats["step_ms_p50"],
        stats["step_ms_p95"],
    )  # fmt: skip
    if stats["fps"] < 0.95 * fps and world_guidance > 1:
        logger.warning(
            "the dream fell behind %g FPS at guidance %g (two memory passes per step): "
            "--guidance 1 runs one pass per step, about twice as fast", fps, world_guidance,
        )  # fmt: skip
    return stats


def rollout(
    out: str | os.PathLike[str] = DEFAULT_VIDEO,
    checkpoints: str | None = None,
    *,
    steps: int | None = None,
    policy: str = "sticky",
    keys_file: str | os.PathLike[str] | None = None,
    policy_keys: tuple[str, ...] | None = None,
    compare: str | os.PathLike[str] | None = None,
    seed: int | None = 0,
    fps: float | None = None,
    scale: int = 2,
    temperature: float = 1.0,
    top_k: int | None = None,
    device: str | None = None,
    guidance: float | None = None,
    precision: str = "auto",
) -> Path:
    """Write a headless dream to ``out`` (``.mp4``/``.gif``) and return its path.

    Without ``compare``: ``policy`` drives ``steps`` (default 200) steps, giving
    ``steps + 1`` frames. With ``compare`` (an episode ``.npz``): its actions
    drive the dream from its first frame and the video shows real | dream |
    difference, ``min(steps, N - 1) + 1`` frames (default: the whole episode).
    ``fps`` defaults to the world's rate (``metadata["render_fps"]``).
    ``policy_keys`` (random / sticky) default to the keys the world's recordings
    pressed (``world_policy_keys``).
    """
    from elworld.play.policies import make_policy
    from elworld.play.rollout import compare_video, rollout_video
    from elworld.play.video import check_video_path

    out = check_video_path(out)
    if compare is not None:
        from elworld.data.episodes import inspect_episode

        limit = inspect_episode(compare).num_frames
        env = make_dream_env(
            checkpoints, temperature=temperature, top_k=top_k, device=device,
            max_episode_steps=limit, guidance=guidance, precision=precision,
        )  # fmt: skip
        fps = fps or float(env.metadata["render_fps"])
        try:
            return compare_video(env, compare, out, steps=steps, seed=seed, fps=fps, scale=scale)
        finally:
            env.close()
    steps = DEFAULT_ROLLOUT_STEPS if steps is None else steps
    env = make_dream_env(
        checkpoints, temperature=temperature, top_k=top_k, device=device,
        max_episode_steps=steps, guidance=guidance, precision=precision,
    )  # fmt: skip
    if policy_keys is None and policy != "keys":
        policy_keys = world_policy_keys(env.unwrapped.world.recordings)
    agent = make_policy(
        policy, seed=seed, keys_file=keys_file, keys=policy_keys or DEFAULT_POLICY_KEYS
    )
    fps = fps or float(env.metadata["render_fps"])
    try:
        return rollout_video(env, out, policy=agent, steps=steps, seed=seed, fps=fps, scale=scale)
    finally:
        env.close()


def world_policy_keys(recordings: dict) -> tuple[str, ...]:
    """The keys a world's recordings pressed (``recordings["keys"]``, in key order).

    A world that does not record them gets ``DEFAULT_POLICY_KEYS`` with a warning.
    """
    from elworld.keys import KEY_INDEX

    keys = recordings.get("keys")
    names = [k for k in keys if k in KEY_INDEX] if isinstance(keys, dict | list) else []
    if not names:
        logger.warning(
            "the world does not record which keys its recordings pressed; random/sticky "
            "press %s (pass --policy-keys to choose)",
            ",".join(DEFAULT_POLICY_KEYS),
        )
        return DEFAULT_POLICY_KEYS
    return tuple(sorted(names, key=KEY_INDEX.__getitem__))


def _parse_policy(values: list[str]) -> tuple[str, str | None]:
    name, *rest = values
    if name not in POLICY_NAMES:
        raise ValueError(f"--policy must be one of {', '.join(POLICY_NAMES)}, got {name!r}")
    if name == "keys" and len(rest) != 1:
        raise ValueError("--policy keys takes one FILE: --policy keys moves.txt")
    if name != "keys" and rest:
        raise ValueError(f"--policy {name} takes no file (got {' '.join(rest)})")
    return name, rest[0] if rest else None


def _run_play(args: argparse.Namespace) -> int:
    try:
        play(
            args.checkpoints, scale=args.scale, fps=args.fps, temperature=args.temperature,
            top_k=args.top_k, seed=args.seed, device=args.device, compare=args.compare,
            record_dir=args.record_dir, max_frames=args.max_frames, screenshot=args.screenshot,
            guidance=args.guidance, precision=args.precision,
        )  # fmt: skip
    except USER_ERRORS as error:
        return _fail(error)
    return 0


def _run_rollout(args: argparse.Namespace) -> int:
    try:
        policy, keys_file = _parse_policy(args.policy)
        rollout(
            args.out, args.checkpoints, steps=args.steps, policy=policy, keys_file=keys_file,
            policy_keys=tuple(args.policy_keys.split(",")) if args.policy_keys else None,
            compare=args.compare, seed=args.seed,
            fps=args.fps, scale=args.scale, temperature=args.temperature, top_k=args.top_k,
            device=args.device, guidance=args.guidance, precision=args.precision,
        )  # fmt: skip
    except USER_ERRORS as error:
        return _fail(error)
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    try:
        if not args.headless and has_display():
            play(
                args.checkpoints, seed=args.seed, device=args.device, guidance=args.guidance,
                precision=args.precision,
            )  # fmt: skip
            return 0
        logger.info("no display: writing a rollout video instead of opening a window")
        path = rollout(
            args.out, args.checkpoints, steps=args.steps, seed=args.seed, device=args.device,
            guidance=args.guidance, precision=args.precision,
        )  # fmt: skip
    except USER_ERRORS as error:
        return _fail(error)
    print(path)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``play``, ``rollout`` and ``demo`` commands to the ``elworld`` CLI."""
    from elworld.play.window import controls_text

    play_parser = subparsers.add_parser(
        "play",
        help="play the dream live in a window with the 22-key layout",
        description="Play the dream in a pygame window, driven live by the 22-key layout.",
        epilog="controls (F8 is one of the 22 game keys, so temperature is on F7/F9):\n"
        + controls_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_dream_args(play_parser, seed=None)
    play_parser.add_argument(
        "--scale",
        type=_positive_int,
        default=None,
        help="window pixels per frame pixel (default: 3, or 2 with --compare)",
    )
    play_parser.add_argument(
        "--fps",
        type=positive_float,
        default=None,
        help="frames (dream steps) per second (default: the world's recorded rate, e.g. 8.75 "
        "at ViZDoom frame skip 4; 20 when the world does not record it)",
    )
    play_parser.add_argument(
        "--compare",
        metavar="doom:SCENARIO",
        help="run the real game beside the dream from the same keys, e.g. doom:take_cover "
        "(needs the doom extra); F4 re-syncs the dream to the real frame",
    )
    play_parser.add_argument(
        "--record-dir",
        default="outputs",
        help="where F11 videos and F12 screenshots go (default: outputs)",
    )
    play_parser.add_argument(
        "--max-frames", type=_positive_int, help="quit after this many frames (benchmarks)"
    )
    play_parser.add_argument(
        "--screenshot", metavar="PNG", help="save the window to this PNG file when quitting"
    )
    play_parser.set_defaults(func=_run_play)

    rollout_parser = subparsers.add_parser(
        "rollout",
        help="write a dream (or a real-vs-dream comparison) to a video, headless",
        description="Run the dream without a window and write the frames to an .mp4 or .gif.",
        epilog="keys FILE: an .npz with act (N, 22); a .json list of key-name lists per "
        'step ([["right"], ["right", "z"], []]); or text, one step per line, key names '
        "separated by spaces/commas/+, '-' for no key. It repeats when shorter than --steps.",
    )
    _add_dream_args(rollout_parser, seed=0)
    rollout_parser.add_argument(
        "--steps",
        type=_positive_int,
        help=f"dream steps; the video has steps + 1 frames (default: {DEFAULT_ROLLOUT_STEPS}, "
        "or the whole episode with --compare)",
    )
    rollout_parser.add_argument(
        "--policy",
        nargs="+",
        default=["sticky"],
        metavar=("NAME", "FILE"),
        help="who holds the keys: random, sticky (hold a random combination 4-20 steps) or "
        "'keys FILE' (default: sticky)",
    )
    rollout_parser.add_argument(
        "--policy-keys",
        default=None,
        help="comma-separated keys random/sticky press (default: the keys the world's "
        f"recordings pressed, else {','.join(DEFAULT_POLICY_KEYS)})",
    )
    rollout_parser.add_argument(
        "--out",
        default=str(DEFAULT_VIDEO),
        help="video file, .mp4 or .gif by suffix (default: %(default)s)",
    )
    rollout_parser.add_argument(
        "--fps",
        type=positive_float,
        default=None,
        help="video frame rate (default: the world's recorded rate, else 20)",
    )
    rollout_parser.add_argument(
        "--scale", type=_positive_int, default=2, help="video pixels per frame pixel (default: 2)"
    )
    rollout_parser.add_argument(
        "--compare",
        metavar="EPISODE.npz",
        help="replay this recorded episode's actions from its first frame and write "
        "real | dream | |difference| panes",
    )
    rollout_parser.set_defaults(func=_run_rollout)

    demo_parser = subparsers.add_parser(
        "demo",
        help="the dream from the bundled checkpoint: a window, or a video without a display",
        description="Play the dream in a window where a display exists; otherwise write a "
        f"rollout video (default {DEFAULT_VIDEO}) and print its path.",
    )
    demo_parser.add_argument(
        "--checkpoints",
        metavar="ROOT",
        help="checkpoints root (default: $ELWORLD_CHECKPOINTS, else the bundled demo world)",
    )
    demo_parser.add_argument(
        "--out", default=str(DEFAULT_VIDEO), help="video file without a display (%(default)s)"
    )
    demo_parser.add_argument(
        "--steps",
        type=_positive_int,
        default=DEFAULT_ROLLOUT_STEPS,
        help="dream steps in the video (default: %(default)s)",
    )
    demo_parser.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    demo_parser.add_argument("--device", help="torch device (default: CUDA when available)")
    _add_speed_args(demo_parser)
    demo_parser.add_argument(
        "--headless", action="store_true", help="write the video even if a display exists"
    )
    demo_parser.set_defaults(func=_run_demo)
