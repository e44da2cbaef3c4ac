"""``elworld eval``: its parser, the world-rate check and the command."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from elworld.atomic import atomic_write
from elworld.cli_args import add_dream_pass_arguments
from elworld.data import find_episodes, recording_provenance
from elworld.eval.evaluate import EvalConfig, check_baseline, evaluate, paired_gain_difference
from elworld.eval.plot import plot_psnr
from elworld.eval.report import markdown_report
from elworld.model.common import check_models_fit
from elworld.model.end import EndModel, check_end_model_fits
from elworld.model.idm import (
    InverseDynamicsModel,
)

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``elworld eval``."""
    parser = subparsers.add_parser(
        "eval",
        help="measure a world model on held-out episodes",
        description="Evaluate vision (and memory) checkpoints on recorded episodes the models never saw: "
        "reconstruction PSNR/SSIM, next-token accuracy, open-loop dream PSNR against the copy-last-frame "
        "baseline, controllability (delta-PSNR, and with --idm an inverse-dynamics key F1 that blur cannot "
        "fool) and the reward/end heads. Writes eval.json, eval.md and psnr_vs_horizon.png to --out.",
    )
    parser.add_argument("--vision", type=Path, required=True, help="vision checkpoint folder")
    parser.add_argument(
        "--memory",
        type=Path,
        default=None,
        help="memory checkpoint folder (omit to evaluate vision only)",
    )
    parser.add_argument("--data", type=Path, required=True, help="folder of held-out .npz episodes")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("outputs/eval"),
        help="report folder (default: %(default)s)",
    )
    parser.add_argument(
        "--horizons",
        default="1,4,16,32",
        help="open-loop horizons, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--start-stride",
        type=int,
        default=8,
        help="frames between rollout start points (default: %(default)s)",
    )
    parser.add_argument(
        "--max-episodes", type=int, default=None, help="evaluate at most this many episodes"
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="sampling temperature; 0 = argmax (default: %(default)s)",
    )
    parser.add_argument(
        "--sampling-steps",
        type=int,
        default=1,
        help="memory forward passes per frame (default: %(default)s)",
    )
    add_dream_pass_arguments(parser)
    parser.add_argument(
        "--batch-size", type=int, default=16, help="frames per batch (default: %(default)s)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for random actions and sampling (default: %(default)s)",
    )
    parser.add_argument(
        "--idm",
        type=Path,
        default=None,
        help="inverse-dynamics checkpoint folder (`elworld train idm`, trained on real TRAINING episodes): "
        "adds its key macro-F1 on real, reconstructed, dream and shuffled-key dream transitions "
        "(needs --memory; the recordings' frame skip must match the IDM's)",
    )
    parser.add_argument(
        "--idm-horizon",
        type=int,
        default=16,
        help="dream steps per start scored by the IDM (default: %(default)s)",
    )
    parser.add_argument(
        "--idm-temperature",
        type=float,
        default=1.0,
        help="sampling temperature of the dreams the IDM scores; the dream env's default, "
        "since the action effect lives in the sampled dream (default: %(default)s)",
    )
    parser.add_argument(
        "--end",
        type=Path,
        default=None,
        help="episode-end checkpoint folder (`elworld train end`): adds its NLL, hazard at real ends "
        "and calibration (ends expected vs real) on the episodes",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="eval.json of another world evaluated on the same --data (e.g. the guided pair before "
        "distillation): adds this world's dream - copy-last PSNR minus the baseline's per horizon, "
        "paired by episode, with its standard error",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default: %(default)s)")
    parser.set_defaults(func=run_eval)


def read_baseline(path: Path) -> dict[str, Any]:
    """Read ``--baseline``: an ``elworld eval`` eval.json with memory rollouts, or one clear error."""
    try:
        baseline = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(
            f"--baseline {path}: expected an eval.json of `elworld eval`: {error}"
        ) from None
    try:
        check_baseline(baseline)
    except ValueError as error:
        raise ValueError(f"--baseline {path}: {error}") from None
    return baseline


def check_world_rate(
    world: dict[str, Any], data: dict[str, Any], memory_path: Path | None, data_path: Path
) -> None:
    """Raise ``ValueError`` when held-out recordings were made at another frame skip than the world.

    A world steps at its training data's frame skip; scoring it on episodes
    recorded at another rate would compare different motions per step.
    Unrecorded frame skips (older checkpoints, recordings without sidecars) pass.
    """
    ours, theirs = world.get("frame_skip"), data.get("frame_skip")
    if ours is not None and theirs is not None and ours != theirs:
        raise ValueError(
            f"--data {data_path} was recorded at frame skip {theirs}, but the memory model "
            f"{memory_path} was trained on frame skip {ours}: record held-out episodes at the "
            f"world's frame skip (elworld collect doom --frame-skip {ours})"
        )


def run_eval(args: argparse.Namespace) -> int:
    """``elworld eval``."""
    from elworld.checkpoint import recording_info
    from elworld.model.memory import MemoryModel
    from elworld.model.vision import VisionModel
    from elworld.train.distributed import resolve_device
    from elworld.world.settings import resolve_guidance

    try:
        horizons = tuple(sorted(int(h) for h in args.horizons.split(",")))
    except ValueError:
        raise ValueError(
            f"--horizons must be comma-separated integers, got {args.horizons!r}"
        ) from None
    if not horizons or horizons[0] < 1:
        raise ValueError(f"--horizons must be positive, got {args.horizons!r}")
    if args.baseline is not None and args.memory is None:
        raise ValueError("--baseline needs --memory: it compares dream rollouts")
    baseline = read_baseline(args.baseline) if args.baseline is not None else None
    device = resolve_device(args.device)
    vision = VisionModel.from_checkpoint(args.vision, device=device)
    memory = None
    if args.memory is not None:
        memory = MemoryModel.from_checkpoint(args.memory, device=device)
        check_models_fit(vision.config, memory.config, args.vision, args.memory)
    idm = None
    if args.idm is not None:
        if memory is None:
            raise ValueError("--idm needs --memory: the IDM scores dream transitions")
        idm = InverseDynamicsModel.from_checkpoint(args.idm, device=device)
    end_model = None
    if args.end is not None:
        end_model = EndModel.from_checkpoint(args.end, device=device)
        if memory is not None:
            check_end_model_fits(end_model.config, memory.config, str(args.memory))
    config = EvalConfig(
        horizons=horizons, start_stride=args.start_stride, max_episodes=args.max_episodes, batch_size=args.batch_size,
        temperature=args.temperature, sampling_steps=args.sampling_steps, seed=args.seed,
        idm_horizon=args.idm_horizon, idm_temperature=args.idm_temperature,
        guidance=resolve_guidance(args.guidance, args.memory),
        precision=args.precision,
    )  # fmt: skip
    episodes = find_episodes(args.data)
    world = recording_info(args.memory) if args.memory is not None else {}
    check_world_rate(world, recording_provenance(episodes), args.memory, args.data)
    results = evaluate(vision, memory, episodes, config, device, idm=idm, end_model=end_model)
    results["world_recordings"] = world
    if baseline is not None:
        results["memory"]["against_baseline"] = {
            "baseline": str(args.baseline),
            "baseline_memory": baseline.get("checkpoints", {}).get("memory"),
            "horizons": paired_gain_difference(results, baseline),
        }
    results["checkpoints"] = {
        "vision": str(args.vision),
        "memory": str(args.memory) if args.memory else None,
        "idm": str(args.idm) if args.idm else None,
        "end": str(args.end) if args.end else None,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, default=str) + "\n"
    atomic_write(args.out / "eval.json", lambda handle: handle.write(text.encode()))
    atomic_write(
        args.out / "eval.md", lambda handle: handle.write(markdown_report(results).encode())
    )
    if memory is not None:
        plot_psnr(results, args.out / "psnr_vs_horizon.png")
    logger.info("wrote %s", args.out / "eval.json")
    print(markdown_report(results))
    return 0
