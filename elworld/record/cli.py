"""``elworld collect doom`` (scripted episodes) and ``elworld record doom`` (human play)."""

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
