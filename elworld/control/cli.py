"""``elworld train control`` and ``elworld eval control``.

``elworld.train.cli`` calls :func:`register_train`; :func:`register` adds the
``eval-control`` parser, which ``elworld.cli`` runs for ``elworld eval control``
(the ``eval`` parser's own required flags keep argparse from nesting it there).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from elworld.cli_args import add_dream_pass_arguments, command_line

logger = logging.getLogger(__name__)


def _add_world(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the world (resolved like the dream env's)")
    group.add_argument(
        "--checkpoints", type=Path, default=None,
        help="checkpoints root holding vision/best_model, memory/best_model and start_frames.npz "
        "(default: $ELWORLD_CHECKPOINTS, else the bundled demo world)",
    )  # fmt: skip
    group.add_argument(
        "--device", default="auto", help="auto | cpu | cuda[:N] (default: %(default)s)"
    )
    group.add_argument(
        "--temperature", type=float, default=1.0,
        help="dream sampling temperature, as the dream env's default (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--sampling-steps",
        type=int,
        default=1,
        help="memory passes per dream step (default: %(default)s)",
    )
    add_dream_pass_arguments(group)


def register_train(models: argparse._SubParsersAction) -> None:
    """Add ``elworld train control`` to the ``elworld train`` model subparsers."""
    parser = models.add_parser(
        "control",
        help="train an agent inside the dream with CMA-ES (no real-game steps; --real: in the game)",
        description="Train a control agent inside the dream only: CMA-ES searches the few hundred "
        "parameters of a linear policy over pooled vision-codebook features of the token grid, "
        "playing population x rollouts dreams per generation in one batched dream step (cache-sized memory passes) per step, "
        "started from real frames of the world's start bank. Fitness: the dream return weighted by "
        "the world's chance that the episode is still running (its episode-end model, else the memory end head). Every --eval-every generations the "
        "CMA-ES mean plays the held-out start frames; OUT/control/best_model keeps the best held-out "
        "dream return, OUT/control/control_model_checkpoint_G each evaluation (with the CMA-ES state "
        "for --resume).",
    )
    _add_world(parser)
    group = parser.add_argument_group("data and output")
    group.add_argument(
        "--out", type=Path, default=Path("checkpoints"),
        help="checkpoint root; writes OUT/control/ (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--vision", type=Path, default=None,
        help="a vision checkpoint folder instead of ROOT/vision/best_model (the agent is tied to its "
        "content, not its path: a copy of it elsewhere is the same world)",
    )  # fmt: skip
    group.add_argument(
        "--memory", type=Path, default=None,
        help="a memory checkpoint folder instead of ROOT/memory/best_model",
    )  # fmt: skip
    group.add_argument(
        "--start-frames", type=Path, default=None,
        help="start bank .npz (an 'obs' array of real frames; default: ROOT/start_frames.npz)",
    )  # fmt: skip
    group.add_argument(
        "--keys", default=None,
        help="comma-separated keys the agent may press, e.g. left,right (default: the keys the memory "
        "checkpoint's recordings pressed, from its training_info.json)",
    )  # fmt: skip
    group = parser.add_argument_group("CMA-ES")
    group.add_argument(
        "--generations", type=int, default=300, help="generations to run (default: %(default)s)"
    )
    group.add_argument(
        "--population", type=int, default=None,
        help="candidates per generation (default: CMA-ES's 4 + 3 ln(parameters); a resumed run keeps its own)",
    )  # fmt: skip
    group.add_argument(
        "--rollouts", type=int, default=2,
        help="dreams per candidate per generation, from the same start frames for all (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--sigma", type=float, default=0.5, help="initial CMA-ES step size (default: %(default)s)"
    )
    group.add_argument(
        "--max-steps", type=int, default=None,
        help="cap on a dream episode's steps (default: World Models' 2100 tics / the recordings' frame "
        "skip; 1000 when the frame skip is unknown)",
    )  # fmt: skip
    group.add_argument(
        "--survival-floor", type=float, default=0.05,
        help="stop a training dream once the world gives it less than this chance of still "
        "running; saves dream steps (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--eval-every", type=int, default=5,
        help="generations between held-out evaluations and checkpoints (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--heldout-fraction", type=float, default=0.25,
        help="share of the start bank held out for evaluation (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--max-heldout", type=int, default=32,
        help="at most this many held-out start frames, to bound an evaluation's cost (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--eval-rollouts", type=int, default=1,
        help="dreams per held-out start frame (default: %(default)s)",
    )  # fmt: skip
    group = parser.add_argument_group("policy (ignored with --resume: the checkpoint's is used)")
    group.add_argument(
        "--components", type=int, default=2,
        help="numbers per token: principal axes of the vision codebook (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--row-bands",
        type=int,
        default=2,
        help="pooled rows of the token grid (default: %(default)s)",
    )
    group.add_argument(
        "--col-bands",
        type=int,
        default=8,
        help="pooled columns of the token grid (default: %(default)s)",
    )
    group.add_argument(
        "--no-velocity", action="store_true", help="do not add the change since the previous frame"
    )
    group.add_argument(
        "--hidden", type=int, default=0,
        help="0: a linear policy (as World Models); N: one tanh layer of N units (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--hold", type=int, default=1,
        help="steps each decision is held, in the dream and in the real game (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--memory-state", action="store_true",
        help="the policy also reads the world's memory: the episode-end model's GRU state after "
        "the frames and keys so far (World Models' controller read its RNN's state); needs a "
        "world with an episode-end model",
    )  # fmt: skip
    group = parser.add_argument_group(
        "fitness from the real game instead of the dream (the policy-class ceiling)"
    )
    group.add_argument(
        "--real", default=None, metavar="doom:SCENARIO",
        help="play every candidate in real games (e.g. doom:take_cover, at the world's frame skip) "
        "instead of dreams: the same policy, features and CMA-ES; fitness = mean return over "
        "--rollouts real episodes, the best model chosen on --eval-episodes validation episodes "
        "(seeds 600000+); real steps are counted (default: train in the dream)",
    )  # fmt: skip
    group.add_argument(
        "--real-seed", type=int, default=300_000,
        help="with --real: generation g, rollout r plays game seed REAL_SEED + (g-1) x rollouts + r, "
        "the same for every candidate; must stay below the validation seeds 600000 (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--eval-episodes", type=int, default=8,
        help="with --real: validation episodes (seeds 600000, 600001, ...) per evaluation (default: %(default)s)",
    )  # fmt: skip
    group.add_argument(
        "--real-games", type=int, default=16,
        help="with --real: games stepped in lockstep, one vision encode per step for all (default: %(default)s)",
    )  # fmt: skip
    group = parser.add_argument_group("run")
    group.add_argument(
        "--seed", type=int, default=0, help="seed of everything (default: %(default)s)"
    )
    group.add_argument(
        "--resume", action="store_true",
        help="continue from the newest control checkpoint under OUT (policy, CMA-ES state, generation)",
    )  # fmt: skip
    group.add_argument(
        "--init-from", type=Path, default=None, metavar="DIR",
        help="start a new run from this control checkpoint: its policy, features and weights "
        "(the CMA-ES mean), in this world even if it was trained in another (the policy flags "
        "are ignored)",
    )  # fmt: skip
    group.add_argument(
        "--time-limit", type=float, default=None, metavar="MIN",
        help="stop (evaluating and saving) after the generation in which MIN minutes pass",
    )  # fmt: skip
    group.add_argument(
        "--keep-last", type=int, default=3,
        help="generation checkpoints to keep; 0 keeps all (default: %(default)s)",
    )  # fmt: skip
    parser.set_defaults(func=run_train_control)


def run_train_control(args: argparse.Namespace) -> int:
    """``elworld train control``."""
    from elworld.control.train import ControlTrainConfig, train_control

    cfg = ControlTrainConfig(
        out=args.out, checkpoints=args.checkpoints, vision=args.vision, memory=args.memory,
        start_frames=args.start_frames, keys=args.keys,
        generations=args.generations, population=args.population, rollouts=args.rollouts,
        sigma=args.sigma, max_steps=args.max_steps, survival_floor=args.survival_floor,
        eval_every=args.eval_every, heldout_fraction=args.heldout_fraction, max_heldout=args.max_heldout,
        eval_rollouts=args.eval_rollouts, temperature=args.temperature,
        sampling_steps=args.sampling_steps, guidance=args.guidance, precision=args.precision,
        device=args.device, seed=args.seed, resume=args.resume, init_from=args.init_from,
        time_limit_min=args.time_limit,
        keep_last=args.keep_last or None, components=args.components, row_bands=args.row_bands,
        col_bands=args.col_bands, velocity=not args.no_velocity, hidden=args.hidden, hold=args.hold,
        memory_state=args.memory_state,
        real=args.real, real_seed=args.real_seed, eval_episodes=args.eval_episodes,
        real_games=args.real_games, command=command_line(),
    )  # fmt: skip
    summary = train_control(cfg)
    if cfg.real:
        logger.info(
            "best control model: %s (validation return %.1f in the real game) after generation %d, "
            "%d real steps", summary["best_model"], summary["best_heldout_return"],
            summary["generation"], summary["real_steps"],
        )  # fmt: skip
        return 0
    logger.info(
        "best control model: %s (held-out dream return %.1f) after generation %d, %d dream steps",
        summary["best_model"], summary["best_heldout_return"], summary["generation"], summary["dream_steps"],
    )  # fmt: skip
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the parser of ``elworld eval control`` (named ``eval-control``; ``elworld.cli`` routes to it)."""
    parser = subparsers.add_parser(
        "eval-control",
        prog="elworld eval control",
        help="score a control agent in the real game and in the dream (run as `elworld eval control`)",
        description="Play a control agent (`elworld train control`) in the real game next to six fixed "
        "policies (none: no key; left / right: always the world's first / second key; random: uniform "
        "random keys; sticky: random keys held 3-14 steps; alternate: 8 steps of each key in turn), "
        "with the same game seeds for every policy, and the same policies in the dream from the same "
        "first frames. Reports mean +/- std return and episode length, each policy's dream / real "
        "length (right within 25%), and how the dream ranks the policies against the real game "
        "(Kendall tau, Spearman rho; target >= 0.8): the dream as a judge. Writes eval.json and "
        "eval.md to --out.",
    )
    parser.add_argument(
        "--agent", type=Path, default=Path("checkpoints/control/best_model"),
        help="control checkpoint folder, read only when --policies has agent (default: %(default)s)",
    )  # fmt: skip
    _add_world(parser)
    parser.add_argument(
        "--real", default=None, metavar="doom:SCENARIO",
        help="the real game (default: doom:<the scenario of the world's recordings>)",
    )  # fmt: skip
    parser.add_argument(
        "--frame-skip", type=int, default=None,
        help="game tics per step, needed only when the memory checkpoint's training_info.json does "
        "not record its recordings' frame skip (which must match it otherwise)",
    )  # fmt: skip
    parser.add_argument(
        "--episodes", type=int, default=100, help="real episodes per policy (default: %(default)s)"
    )
    parser.add_argument(
        "--dream-episodes", type=int, default=16,
        help="dream episodes per policy, from the first frames of the first real episodes; 0 skips "
        "the dream (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--max-steps", type=int, default=None,
        help="cap on an episode's steps, real and dream (default: World Models' 2100 tics / frame skip)",
    )  # fmt: skip
    parser.add_argument(
        "--policies", default=",".join(("agent", "none", "left", "right", "random", "sticky", "alternate")),
        help="comma-separated policies to play (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--seed", type=int, default=0, help="first game seed (default: %(default)s)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("outputs/eval_control"),
        help="report folder (default: %(default)s)",
    )
    parser.set_defaults(func=run_eval_control, command="eval control")  # as error messages name it


def _scenario(real: str | None, recorded: str | None) -> str:
    if real is None:
        if recorded is None:
            raise ValueError(
                "the world's recordings do not name their scenario: pass --real doom:SCENARIO, "
                "e.g. --real doom:take_cover"
            )
        return recorded
    game, _, scenario = real.partition(":")
    if game != "doom" or not scenario:
        raise ValueError(f"--real must look like doom:SCENARIO (ViZDoom), got {real!r}")
    if recorded is not None and scenario != recorded:
        logger.warning("--real %s: the world was recorded in %s", real, recorded)
    return scenario


def _frame_skip(flag: int | None, recorded: int | None, memory: str) -> int:
    if recorded is not None:
        if flag is not None and flag != recorded:
            raise ValueError(
                f"--frame-skip {flag} does not match the frame skip {recorded} of the recordings the "
                f"world was trained on ({memory}/training_info.json); leave it out"
            )
        return recorded
    if flag is None:
        raise ValueError(
            f"{memory}/training_info.json does not record its recordings' frame skip: pass --frame-skip "
            "(the one the training episodes were recorded with)"
        )
    if flag < 1:
        raise ValueError(f"--frame-skip must be >= 1, got {flag}")
    return flag


def run_eval_control(args: argparse.Namespace) -> int:
    """``elworld eval control``."""
    from elworld.control.agent import Agent
    from elworld.control.evaluate import (
        POLICIES,
        DreamSettings,
        build_report,
        markdown_report,
        play_dream,
        play_real,
        write_report,
    )
    from elworld.control.train import default_max_steps
    from elworld.keys import KEY_NAMES
    from elworld.record.doom import DoomEnv, DoomKeyMapping
    from elworld.train.distributed import resolve_device
    from elworld.world.settings import resolve_guidance

    policies = [name.strip() for name in args.policies.split(",") if name.strip()]
    if not policies or set(policies) - set(POLICIES):
        raise ValueError(f"--policies must be some of {','.join(POLICIES)}, got {args.policies!r}")
    if args.episodes < 1 or args.dream_episodes < 0:
        raise ValueError("--episodes must be >= 1 and --dream-episodes >= 0")
    device = resolve_device(args.device)
    if "agent" in policies:
        agent = Agent.from_checkpoint(args.agent, checkpoints=args.checkpoints, device=device)
        world = agent.world
    else:  # fixed policies only: judge any world, no agent needed
        from elworld.control.world_info import resolve_world

        agent, world = None, resolve_world(args.checkpoints)[1]
    scenario = _scenario(args.real, world.scenario)
    frame_skip = _frame_skip(args.frame_skip, world.frame_skip, world.memory)
    max_steps = args.max_steps or default_max_steps(frame_skip)
    keys = list(DoomKeyMapping.for_scenario(scenario).keys)
    pressed = agent.policy.choice_actions.sum(0).cpu().numpy() if agent else np.zeros(1)
    unmapped = sorted(set(np.flatnonzero(pressed)) - set(keys))
    if unmapped:
        logger.warning(
            "the agent presses keys %s that %s has no button for: they do nothing in the real game",
            [KEY_NAMES[k] for k in unmapped], scenario,
        )  # fmt: skip
    real, first_frames = play_real(
        lambda: DoomEnv(scenario, frame_skip=frame_skip), policies, agent=agent, keys=keys,
        episodes=args.episodes, seed=args.seed, max_steps=max_steps,
    )  # fmt: skip
    dream = None
    if args.dream_episodes:
        settings = DreamSettings(
            episodes=min(args.dream_episodes, args.episodes), temperature=args.temperature,
            sampling_steps=args.sampling_steps, guidance=args.guidance, precision=args.precision,
            device=device,
        )  # fmt: skip
        dream = play_dream(
            agent, policies, first_frames, keys=keys, settings=settings, seed=args.seed,
            max_steps=max_steps, vision=world.vision, memory=world.memory, end=world.end,
        )  # fmt: skip
    guidance = resolve_guidance(args.guidance, world.memory)
    facts = {
        "agent": str(args.agent) if agent else None,
        "agent_choices": list(agent.choices) if agent else None,
        "world": world.to_json(),
        "real_env": f"doom:{scenario}",
        "frame_skip": frame_skip,
        "max_steps": max_steps,
        "episodes": args.episodes,
        "dream_episodes": settings.episodes if dream else 0,
        "seed": args.seed,
        "dream_sampling": {"temperature": args.temperature, "sampling_steps": args.sampling_steps,
                           "guidance": guidance, "precision": args.precision},
        "command": command_line(),
    }  # fmt: skip
    report = build_report(real, dream, facts)
    write_report(report, args.out)
    print(markdown_report(report))
    logger.info("wrote %s and %s", args.out / "eval.json", args.out / "eval.md")
    return 0
