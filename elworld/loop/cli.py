"""``elworld loop``: rounds of real play, world refit and dream-only agent training."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from elworld.loop.rounds import LoopConfig

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``elworld loop`` to the ``elworld`` CLI."""
    parser = subparsers.add_parser(
        "loop",
        help="World Models' iterative loop: play the agent for real, refit the world, retrain "
        "the agent in the dream",
        description="Each round plays the current agent in the real game with some exploration "
        "and records the episodes (.npz) under OUT/data/round_NN; refits the memory model "
        "(resuming its checkpoint) and the episode-end model on the world's recordings plus all "
        "loop episodes; adds clips of the new episodes to the start bank; retrains the agent in "
        "the dream only, from the previous agent; and plays it on the validation seeds. Each "
        "round leaves a world and agent in OUT/round_NN and a row in OUT/rounds.md (real steps "
        "recorded, CPU minutes, dream return, real return). --resume continues mid-round.",
    )
    group = parser.add_argument_group("the world and its data")
    group.add_argument("--out", type=Path, required=True, help="the loop's folder")
    group.add_argument(
        "--world", type=Path, default=Path("checkpoints"),
        help="the starting world's checkpoint root (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--agent", type=Path, default=None,
        help="the starting agent (default: WORLD/control/best_model)",
    )  # fmt: skip
    group.add_argument(
        "--data", type=Path, default=None,
        help="recordings the starting world was trained on: every refit mixes them with the "
        "loop's own episodes (required unless --resume)",
    )  # fmt: skip
    group.add_argument(
        "--base-episodes", type=int, default=None, metavar="N",
        help="use only the first N of --data's episodes (sorted by name; default: all)",
    )  # fmt: skip
    group.add_argument(
        "--cache-dir", type=Path, default=None,
        help="token cache root shared by every refit (default: DATA/.elworld-cache)",
    )  # fmt: skip
    group = parser.add_argument_group("real play")
    group.add_argument(
        "--real", default="doom:take_cover",
        help="the real game, doom:SCENARIO (default: %(default)s)",
    )  # fmt: skip
    group.add_argument("--rounds", type=int, default=3, help="rounds (default: %(default)s)")
    group.add_argument(
        "--episodes", type=int, default=20,
        help="real episodes recorded per round (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--explore", type=float, default=0.1,
        help="chance per step of a random choice held 1-10 steps while recording "
        "(default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--record-seed", type=int, default=400_000,
        help="round r's episode i plays seed RECORD_SEED + (r-1) * EPISODES + i (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--eval-episodes", type=int, default=20,
        help="validation episodes played by each round's agent (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--eval-seed", type=int, default=600_000,
        help="validation seeds EVAL_SEED + i, the same every round (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--max-steps", type=int, default=None,
        help="real-episode cap in steps (default: 2100 tics / the frame skip)",
    )  # fmt: skip
    group = parser.add_argument_group("refits")
    group.add_argument(
        "--memory-epochs", type=int, default=2,
        help="memory refit epochs per round (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--memory-steps", type=int, default=100,
        help="optimizer steps per memory epoch (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--memory-batch-size", type=int, default=16, help="memory batch size (default: %(default)s)"
    )
    group.add_argument(
        "--memory-val-batches", type=int, default=10,
        help="memory validation batches per epoch (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--end-epochs", type=int, default=5,
        help="episode-end refit epochs per round (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--bank-clips", type=int, default=32,
        help="clips of each round's real episodes added to the start bank (default: %(default)s)",
    )  # fmt: skip
    group = parser.add_argument_group("the agent (CMA-ES in the dream)")
    group.add_argument(
        "--generations", type=int, default=6, help="generations per round (default: %(default)s)"
    )
    group.add_argument(
        "--population", type=int, default=16, help="CMA-ES population (default: %(default)s)"
    )
    group.add_argument(
        "--rollouts", type=int, default=2,
        help="dreams per candidate per generation (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--sigma", type=float, default=0.2,
        help="CMA-ES step size around the previous agent (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--dream-max-steps", type=int, default=None,
        help="dream length cap in training (default: 2100 tics / the frame skip)",
    )  # fmt: skip
    group.add_argument(
        "--temperature", type=float, default=1.0,
        help="dream sampling temperature for training (default: %(default)s)",
    )  # fmt: skip
    group = parser.add_argument_group("run")
    group.add_argument("--seed", type=int, default=0, help="seed of the refits (default: 0)")
    group.add_argument(
        "--time-limit", type=float, default=None, metavar="MIN",
        help="stop after the phase in which MIN minutes pass (the trainers stop after their "
        "epoch or generation); --resume continues",
    )  # fmt: skip
    group.add_argument(
        "--resume", action="store_true",
        help="continue the loop in OUT at its first unfinished phase (its saved settings are "
        "used, except --rounds and --time-limit)",
    )  # fmt: skip
    group = parser.add_argument_group("publishing a round")
    group.add_argument(
        "--publish", type=int, default=None, metavar="N",
        help="instead of running rounds: copy round N's memory, end model, start bank and agent "
        "from OUT into --to, atomically, with the loop's command, the lineage and every "
        "recording set written into each training_info.json and model card",
    )  # fmt: skip
    group.add_argument(
        "--to", type=Path, default=None, metavar="ROOT",
        help="checkpoint root that --publish writes into (default: the loop's --world)",
    )  # fmt: skip
    parser.set_defaults(func=run_loop_command)


def run_loop_command(args: argparse.Namespace) -> int:
    """``elworld loop``."""
    import json

    from elworld.loop.rounds import STATE_FILE, TABLE_FILE, LoopConfig, run_loop

    if args.publish is not None:
        from elworld.loop.publish import publish_round

        to = args.to
        if to is None:
            if not (args.out / STATE_FILE).is_file():
                raise FileNotFoundError(f"--out {args.out}: no loop state {args.out / STATE_FILE}")
            to = Path(json.loads((args.out / STATE_FILE).read_text())["config"]["world"])
        written = publish_round(args.out, args.publish, to)
        logger.info("published round %d of %s into %s: %s", args.publish, args.out, to,
                    ", ".join(str(p) for p in written))  # fmt: skip
        return 0
    if args.resume:  # the loop's own settings, so a resumed round plays like its start
        saved = json.loads((args.out / STATE_FILE).read_text())["config"]
        paths = ("out", "world", "data", "agent", "cache_dir")
        fields = {k: Path(v) if k in paths and v is not None else v for k, v in saved.items()}
        cfg = LoopConfig(**{**fields, "rounds": args.rounds, "time_limit_min": args.time_limit,
                            "resume": True})  # fmt: skip
    else:
        cfg = loop_config(args)
    state = run_loop(cfg)
    print((args.out / TABLE_FILE).read_text(), end="")
    logger.info("%d round(s) evaluated; state in %s", len(state["rows"]) - 1, args.out / STATE_FILE)
    return 0


def loop_config(args: argparse.Namespace) -> LoopConfig:
    """The settings a fresh ``elworld loop`` command asks for."""
    from elworld.loop.rounds import LoopConfig

    source, _, scenario = args.real.partition(":")
    if source != "doom" or not scenario:
        raise ValueError(f"--real must be doom:SCENARIO, got {args.real!r}")
    if args.data is None:
        raise ValueError("--data is required (the recordings the starting world was trained on)")
    return LoopConfig(
        out=args.out, world=args.world, data=args.data, agent=args.agent,
        cache_dir=args.cache_dir, base_episodes=args.base_episodes, scenario=scenario,
        rounds=args.rounds, episodes=args.episodes, explore=args.explore,
        record_seed=args.record_seed, eval_episodes=args.eval_episodes,
        eval_seed=args.eval_seed, max_steps=args.max_steps, memory_epochs=args.memory_epochs,
        memory_steps=args.memory_steps, memory_batch_size=args.memory_batch_size,
        memory_val_batches=args.memory_val_batches, end_epochs=args.end_epochs,
        bank_clips=args.bank_clips, generations=args.generations, population=args.population,
        rollouts=args.rollouts, sigma=args.sigma, dream_max_steps=args.dream_max_steps,
        temperature=args.temperature, seed=args.seed, time_limit_min=args.time_limit,
    )  # fmt: skip
