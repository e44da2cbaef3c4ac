"""``elworld collect doom`` (scripted episodes), ``elworld record doom`` (human play in
ViZDoom) and ``elworld record screen`` (any game's window and the keyboard)."""

from __future__ import annotations

import argparse
import logging
import textwrap
from collections.abc import Callable
from pathlib import Path

from elworld.record.collect import POLICIES, collect_doom
from elworld.record.doom import SCENARIOS, describe_key_tables
from elworld.record.human import record_human_doom
from elworld.record.writer import RecordError

logger = logging.getLogger(__name__)

_FORMAT = """\
output: one OUT/SCENARIO_NNNN.npz per episode (numbered after the files already
there) holding obs (N,192,256,3) uint8 RGB, act (N,22) uint8 (the elworld key
layout; keys the scenario does not use are always 0), rew (N,) float32,
done (N,) uint8 (1 only on the last step of an episode that ended by itself:
death) and truncated (N,) uint8 (1 only on the last step of an episode cut by
the scenario's timeout, --max-steps or a stop: a time limit is not a death),
plus SCENARIO_NNNN.json: scenario, seed, policy, frame_skip, steps_per_second, ended
(terminated/truncated/max_steps/stopped), date, frames, total_reward, the
key->button table, elworld_version. (The format: elworld/record/writer.py.)

timing: ViZDoom runs at 35 tics/s; one step = FRAME_SKIP tics
(2 -> 17.5 steps per game second, close to the original 20 fps).

key -> ViZDoom button, per scenario:
"""


def _epilog() -> str:
    return _FORMAT + describe_key_tables()


def _run(args: argparse.Namespace, action: Callable[[], list[Path]], what: str) -> int:
    """Run ``action``, log where the files went, turn user errors into exit codes."""
    try:
        paths = action()
    except KeyboardInterrupt:
        logger.warning("interrupted; only complete episodes are in %s", args.out)
        return 130
    except (RecordError, ValueError, ImportError) as error:
        logger.error("%s", error)
        return 1 if isinstance(error, RecordError) else 2
    if paths:
        logger.info("%s %d episode(s) in %s (%s .. %s)", what, len(paths), args.out,
                    paths[0].name, paths[-1].name)  # fmt: skip
    else:
        logger.info("no episode recorded")
    return 0


def _collect_doom(args: argparse.Namespace) -> int:
    return _run(args, lambda: collect_doom(
        args.scenario, args.episodes, args.out, policy=args.policy, frame_skip=args.frame_skip,
        seed=args.seed, workers=args.workers, max_steps=args.max_steps, compress=args.compress,
    ), "collected")  # fmt: skip


def _record_doom(args: argparse.Namespace) -> int:
    return _run(args, lambda: record_human_doom(
        args.scenario, args.out, episodes=args.episodes, fps=args.fps, scale=args.scale,
        frame_skip=args.frame_skip, seed=args.seed, max_steps=args.max_steps,
        compress=args.compress,
    ), "recorded")  # fmt: skip


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _common_doom_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario",
        default="take_cover",
        choices=SCENARIOS,
        metavar="NAME",
        help="ViZDoom scenario (default: take_cover); one of: " + ", ".join(SCENARIOS),
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for the episode files (created if missing)"
    )
    parser.add_argument(
        "--frame-skip",
        type=_positive_int,
        default=2,
        help="game tics per recorded step; 35 tics = 1 s (default: 2)",
    )
    parser.add_argument(
        "--max-steps",
        type=_positive_int,
        default=None,
        help="cut episodes after this many steps (done stays 0, truncated is 1 on the last "
        "step); default: play to the end",
    )
    parser.add_argument("--compress", action="store_true",
                        help="write compressed .npz (~9x smaller on take_cover, ~15x slower to write)")  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``collect`` and ``record`` (each with a ``doom`` source) to the CLI."""
    formatter = argparse.RawDescriptionHelpFormatter
    collect = subparsers.add_parser(
        "collect", help="record episodes with a scripted policy (ViZDoom)",
        description="Record gameplay episodes with a scripted policy.",
    )  # fmt: skip
    collect_sources = collect.add_subparsers(dest="source", metavar="SOURCE", required=True)
    doom = collect_sources.add_parser(
        "doom", help="ViZDoom scenarios", formatter_class=formatter, epilog=_epilog(),
        description=textwrap.fill(
            "Collect ViZDoom episodes with a scripted policy that presses the scenario's keys: "
            "'random' draws a new key combination every step, 'sticky' holds one for 4-20 "
            "steps (better coverage of motion). Episode i uses seed SEED+i for the game and the "
            "policy, so runs are reproducible with any number of workers."
        ),
    )  # fmt: skip
    _common_doom_args(doom)
    doom.add_argument(
        "--episodes", type=_positive_int, default=10, help="episodes to record (default: 10)"
    )
    doom.add_argument(
        "--policy", choices=POLICIES, default="sticky", help="scripted policy (default: sticky)"
    )
    doom.add_argument("--seed", type=int, default=0, help="seed of the first episode (default: 0)")
    doom.add_argument("--workers", type=_positive_int, default=1,
                      help="parallel processes, one game each (default: 1)")  # fmt: skip
    doom.set_defaults(func=_collect_doom)

    record = subparsers.add_parser(
        "record", help="record a person playing (ViZDoom, pygame window)",
        description="Record a person playing, in the same episode format as 'collect'.",
    )  # fmt: skip
    record_sources = record.add_subparsers(dest="source", metavar="SOURCE", required=True)
    human = record_sources.add_parser(
        "doom", help="play ViZDoom scenarios", formatter_class=formatter, epilog=_epilog(),
        description=textwrap.fill(
            "Play a ViZDoom scenario in a pygame window with the elworld keys (arrows move or "
            "turn, z fires, x uses, a/d strafe where the scenario can also turn; see the table "
            "below). F10 or closing the window stops and saves the episode in flight as a "
            "cut-short episode; Ctrl+C drops it. Finished episodes are always kept."
        ),
    )  # fmt: skip
    _common_doom_args(human)
    human.add_argument(
        "--episodes", type=_positive_int, default=1, help="episodes to play (default: 1)"
    )
    human.add_argument("--fps", type=float, default=20.0,
                       help="steps per second (default: 20, the original rate; 17.5 with "
                            "--frame-skip 2 plays at Doom's real-time speed)")  # fmt: skip
    human.add_argument("--scale", type=_positive_int, default=3,
                       help="window zoom of the 256x192 frame (default: 3)")  # fmt: skip
    human.add_argument(
        "--seed", type=int, default=None, help="game seed of the first episode (default: random)"
    )
    human.set_defaults(func=_record_doom)
    _register_screen(record_sources)


_SCREEN_EPILOG = """\
output: one OUT/PREFIX_NNNN.npz per episode (numbered after the files already
there): obs (N,H,W,3) uint8 RGB at the window's size (or --size; training
resizes to 192x256 itself), act (N,22) uint8, rew (N,) zeros, done (N,) zeros
(a split, pause or stop is not a game over), plus PREFIX_NNNN.json: ended
(split|paused|stopped|interrupted|duration|window_closed|window_resized),
fps, achieved_fps, dropped_frames, late_frames, jitter_ms, capture (window or
region), size, keys (the key map), controls, act_convention.

alignment: act[t] = every key held at any moment from the grab of obs[t] to
the grab of obs[t+1]: the keys that lead from obs[t] to obs[t+1].

timing: a tick missed entirely is counted as dropped and skipped (never
filled with a repeated frame); a grab more than half a period late is late.

keys (ElWorld name: default physical key): f8, up, down, left, right, z, x,
1, 3, q, w, e, r, t, a, s, d, c, f, enter, ctrl (either), esc. Remap some
with --keymap FILE.json, e.g. {"z": "j", "up": ["w", "up"], "esc": []}.
Keys are read globally (whichever window has the focus).

where: X11 (window by title or id, or region) and Windows (same; untested in
CI) capture and read keys without extra rights; macOS needs --region and the
Screen Recording and Input Monitoring permissions for the terminal; Wayland
gives programs neither other windows nor global keys: use an X11 session.
Needs the screen extra: pip install 'elworld[screen]'.
"""


def _record_screen(args: argparse.Namespace) -> int:
    """``elworld record screen``: resolve the target, record, map errors to exit codes."""
    from elworld.record.screen import record_screen
    from elworld.record.screen_capture import ScreenError, find_target, list_windows, parse_region
    from elworld.record.screen_keys import KeyMap

    try:
        if args.list_windows:
            for wid, title, (left, top, width, height) in sorted(
                list_windows(), key=lambda w: w[1]
            ):
                logger.info("id %d (0x%x)  %dx%d at %d,%d  %s", wid, wid, width, height, left,
                            top, title)  # fmt: skip
            return 0
        if args.out is None:
            raise ValueError("--out DIR is required (the folder for the episode files)")
        region = parse_region(args.region) if args.region is not None else None
        keymap = KeyMap.from_json(args.keymap) if args.keymap is not None else KeyMap()
        target = find_target(window=args.window, window_id=args.window_id, region=region)
        paths = record_screen(
            target, args.out, fps=args.fps, size=args.size, episode_seconds=args.episode_seconds,
            duration=args.duration, prefix=args.prefix, keymap=keymap, stop_key=args.stop_key,
            pause_key=args.pause_key, split_key=args.split_key, progress=not args.no_progress,
        )  # fmt: skip
    except (ScreenError, ValueError, ImportError) as error:
        logger.error("%s", error)
        return 2
    except RecordError as error:
        logger.error("%s", error)
        return 1
    if paths:
        logger.info("recorded %d episode(s) in %s (%s .. %s)", len(paths), args.out,
                    paths[0].name, paths[-1].name)  # fmt: skip
    else:
        logger.info("no episode recorded")
    return 0


def _size(text: str) -> tuple[int, int]:
    """``"HxW"`` -> ``(H, W)``."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 192x256, got {text!r}") from None
    if height < 1 or width < 1:
        raise argparse.ArgumentTypeError(f"expected HxW with H, W >= 1, got {text!r}")
    return height, width


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _register_screen(record_sources: argparse._SubParsersAction) -> None:
    screen = record_sources.add_parser(
        "screen", help="any game: a window or screen region and the keyboard",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_SCREEN_EPILOG,
        description=textwrap.fill(
            "Record a person playing any PC game: grab a window (by title or id) or a screen "
            "region FPS times a second together with the 22 ElWorld keys held, one episode "
            "file per episode. F10 stops (saving the episode in flight), F6 pauses and resumes "
            "(ending the episode), F11 starts a new episode; Ctrl+C and SIGTERM save the "
            "episode in flight too. Frames stream to disk, so sessions of any length fit in RAM."
        ),
    )  # fmt: skip
    what = screen.add_mutually_exclusive_group(required=True)
    what.add_argument("--window", metavar="TITLE",
                      help="the window whose title is TITLE, or the only one containing it")  # fmt: skip
    what.add_argument("--window-id", type=lambda text: int(text, 0), metavar="ID",
                      help="the window with this id (decimal or 0x hex; see --list-windows)")  # fmt: skip
    what.add_argument("--region", metavar="X,Y,W,H",
                      help="a screen rectangle: left, top, width, height in pixels")  # fmt: skip
    what.add_argument("--list-windows", action="store_true",
                      help="list the visible windows (id, size, position, title) and exit")  # fmt: skip
    screen.add_argument(
        "--out", type=Path, help="folder for the episode files (created if missing)"
    )
    screen.add_argument("--prefix", default="screen",
                        help="file name prefix: PREFIX_0001.npz ... (default: %(default)s)")  # fmt: skip
    screen.add_argument("--fps", type=_positive_float, default=20.0,
                        help="frames per second (default: 20, the original rate)")  # fmt: skip
    screen.add_argument("--size", type=_size, metavar="HxW",
                        help="store frames at this size, e.g. 192x256 (default: the window's "
                             "size; ~29 MB/s at 800x600 and 20 fps)")  # fmt: skip
    screen.add_argument("--episode-seconds", type=_positive_float, metavar="S",
                        help="start a new episode every S seconds (default: only on F11)")  # fmt: skip
    screen.add_argument("--duration", type=_positive_float, metavar="S",
                        help="stop after S seconds (default: only on F10 or a signal)")  # fmt: skip
    screen.add_argument("--keymap", type=Path, metavar="FILE.json",
                        help="remap ElWorld keys to other physical keys (see below)")  # fmt: skip
    screen.add_argument("--stop-key", default="f10", help="stop and save (default: f10)")
    screen.add_argument(
        "--pause-key", default="f6", help="pause / resume, as in elworld play (default: f6)"
    )
    screen.add_argument("--split-key", default="f11", help="start a new episode (default: f11)")
    screen.add_argument("--no-progress", action="store_true",
                        help="no live status line (fps, dropped and late frames)")  # fmt: skip
    screen.set_defaults(func=_record_screen)
