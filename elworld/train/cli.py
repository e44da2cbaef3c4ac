"""``elworld train vision|memory``: train the two models from recordings."""

from __future__ import annotations

import argparse
import logging
import platform
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from elworld import checkpoint
from elworld.checkpoint.lineage import start_record
from elworld.cli_args import command_line
from elworld.data import (
    FrameDataset,
    TransitionDataset,
    build_token_cache,
    find_episodes,
    prepare_frames,
    recording_provenance,
    shard_episodes,
    split_episodes,
)
from elworld.model.common import PRECISIONS, check_models_fit
from elworld.train.distributed import DistInfo, barrier, cleanup_distributed, setup_distributed
from elworld.train.loop import TrainConfig, train

logger = logging.getLogger(__name__)


def _add_common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data and output")
    group.add_argument(
        "--data", type=Path, required=True, help="folder of .npz recordings (searched recursively)"
    )
    group.add_argument(
        "--out",
        type=Path,
        default=Path("checkpoints"),
        help="checkpoint root (default: %(default)s)",
    )
    group.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where resized frames / tokens are cached (default: DATA/.elworld-cache)",
    )
    group.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of episodes held out for validation (default: %(default)s)",
    )
    group = parser.add_argument_group("optimisation")
    group.add_argument(
        "--epochs", type=int, default=None, help="epochs to train (default: per model)"
    )
    group.add_argument(
        "--steps-per-epoch",
        type=int,
        default=None,
        help="cap on optimizer steps per epoch, so validation and checkpoints come regularly on big data",
    )
    group.add_argument(
        "--batch-size", type=int, default=None, help="batch size per process (default: per model)"
    )
    group.add_argument(
        "--lr", type=float, default=None, help="peak learning rate (default: per model)"
    )
    group.add_argument(
        "--weight-decay",
        type=float,
        default=0.01,
        help="AdamW weight decay on matrices (default: %(default)s)",
    )
    group.add_argument(
        "--warmup-steps", type=int, default=100, help="linear warm-up steps (default: %(default)s)"
    )
    group.add_argument(
        "--val-batches",
        type=int,
        default=None,
        help="cap on validation batches per epoch (default: the whole split)",
    )
    group.add_argument(
        "--time-limit",
        type=float,
        default=None,
        metavar="MIN",
        help="stop after the epoch in which MIN minutes have passed",
    )
    group = parser.add_argument_group("run")
    group.add_argument(
        "--device", default="auto", help="auto | cpu | cuda[:N] (default: %(default)s)"
    )
    group.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the training step: fuses dtype casts and elementwise work (measured "
        "1.7x for the memory model on a 2-core CPU) after a one-off compile of ~2 minutes",
    )
    group.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="bf16: autocast matmuls to bfloat16 on CPU and CUDA (2-3x the float32 matmul "
        "rate on CPUs with AVX-512 BF16/AMX, ~100x slower where bf16 is emulated, as on "
        "AVX2-only CPUs); fp32: full precision; auto: bf16 where the device runs it natively, "
        "else fp32 (default: per model, auto for memory, fp32 for vision)",
    )
    group.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for initialisation, data order and the split (default: %(default)s)",
    )
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest epoch checkpoint under --out (model, optimizer, scheduler, epoch, RNG)",
    )
    group.add_argument(
        "--resume-from",
        type=Path,
        default=None,
        metavar="DIR",
        help="continue from this checkpoint folder, e.g. the bundled checkpoints/memory/best_model "
        "(model, optimizer, scheduler, epoch, RNG), writing new epochs to --out; --epochs is the "
        "total, so pass more than the folder's epoch; OUT's best_model is chosen among the new "
        "epochs only (their validation data may differ from the folder's run)",
    )
    group.add_argument(
        "--keep-last",
        type=int,
        default=3,
        help="epoch checkpoints to keep; 0 keeps all (default: %(default)s)",
    )
    group.add_argument(
        "--num-workers",
        type=int,
        default=0,
        help="DataLoader worker processes (default: %(default)s)",
    )


def register(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Add ``elworld train vision|memory|idm|end``; return the model subparsers.

    Trainers above this floor (``train control`` steps the dream, ``world/``)
    are added to the returned subparsers by the dispatcher, ``elworld.cli``.
    """
    parser = subparsers.add_parser(
        "train",
        help="train the vision or memory model",
        description="Train a model from .npz recordings. Checkpoints go to OUT/<kind>/<kind>_model_checkpoint_N/ "
        "each epoch, and OUT/<kind>/best_model/ whenever the validation loss improves. Runs alone or under "
        "`torchrun --nproc_per_node N` (DDP: gloo on CPU, NCCL on CUDA).",
    )
    models = parser.add_subparsers(dest="model", metavar="MODEL", required=True)

    vision = models.add_parser(
        "vision",
        help="train the VQ-VAE that turns frames into tokens",
        description="Train the VQ-VAE vision model on recorded frames (resized to the model's image size).",
    )
    _add_common(vision)
    group = vision.add_argument_group(
        "architecture (ignored with --resume: the checkpoint's config is used)"
    )
    group.add_argument(
        "--width",
        type=int,
        default=16,
        help="conv channels at 1/2 resolution, doubling per further downsample (default: %(default)s)",
    )
    group.add_argument(
        "--res-blocks",
        type=int,
        default=2,
        help="residual blocks on each side (default: %(default)s)",
    )
    group.add_argument(
        "--code-dim", type=int, default=64, help="codebook vector size (default: %(default)s)"
    )
    group.add_argument(
        "--codebook-size", type=int, default=512, help="number of codes (default: %(default)s)"
    )
    group.add_argument(
        "--downsamples",
        type=int,
        default=3,
        help="stride-2 stages; the grid is image / 2**N (default: %(default)s)",
    )
    group.add_argument(
        "--image-size", default="192x256", help="HxW the model sees (default: %(default)s)"
    )
    vision.set_defaults(func=run_train_vision)

    memory = models.add_parser(
        "memory",
        help="train the transformer that predicts the next frame's tokens",
        description="Train the memory model on tokens of recorded frames. The frames are encoded once by the "
        "--vision checkpoint into a token cache, rebuilt automatically when that checkpoint changes.",
    )
    _add_common(memory)
    memory.add_argument(
        "--vision",
        type=Path,
        required=True,
        help="vision checkpoint folder, e.g. checkpoints/vision/best_model",
    )
    group = memory.add_argument_group(
        "architecture (ignored with --resume: the checkpoint's config is used)"
    )
    group.add_argument(
        "--context-frames",
        type=int,
        default=2,
        help="frames the model sees, the current one included (default: %(default)s)",
    )
    group.add_argument(
        "--n-layer", type=int, default=4, help="transformer blocks (default: %(default)s)"
    )
    group.add_argument(
        "--n-head", type=int, default=4, help="attention heads (default: %(default)s)"
    )
    group.add_argument(
        "--n-embd", type=int, default=128, help="embedding width (default: %(default)s)"
    )
    group.add_argument("--dropout", type=float, default=0.0, help="dropout (default: %(default)s)")
    group.add_argument("--no-reward-head", action="store_true", help="do not train a reward head")
    group.add_argument(
        "--no-end-head", action="store_true", help="do not train an episode-end head"
    )
    group.add_argument(
        "--end-pos-weight",
        type=float,
        default=5.0,
        help="weight of episode ends in the end-head loss; ends are rare, one per episode (default: %(default)s)",
    )
    group.add_argument(
        "--attention",
        choices=("full", "axial"),
        default="full",
        help="full: every cell attends to every cell; axial: along rows, then columns "
        "(~14x fewer attention FLOPs) (default: %(default)s)",
    )
    group.add_argument(
        "--adaln",
        action="store_true",
        help="condition every block's LayerNorms on the action (AdaLN), not only the input",
    )
    group.add_argument(
        "--action-dropout",
        type=float,
        default=0.0,
        help="share of training rows whose action is hidden, so sampling can use "
        "classifier-free guidance (--guidance in play/eval) (default: %(default)s)",
    )
    group.add_argument(
        "--context-noise",
        type=float,
        default=0.0,
        help="corrupt up to this share of context tokens in training, against drift in long "
        "dreams (default: %(default)s)",
    )
    group.add_argument(
        "--no-copy-gate",
        action="store_true",
        help="no per-cell bonus for keeping the current token",
    )
    group = memory.add_argument_group(
        "guidance distillation",
        "fine-tune a guided memory model so that one conditional pass per dream step gives what "
        "its classifier-free guided pair gave (half the work per step)",
    )
    group.add_argument(
        "--distill-from",
        type=Path,
        default=None,
        help="memory checkpoint folder to start from and to match (its architecture replaces the "
        "architecture flags); the token loss becomes the KL divergence from its guided "
        "distribution (docs/ARCHITECTURE.md, 'Guidance distillation')",
    )
    group.add_argument(
        "--distill-guidance",
        type=float,
        default=None,
        help="the guidance scale to distil (default: the --distill-from checkpoint's "
        "recommended scale)",
    )
    group.add_argument(
        "--distill-argmax-weight",
        type=float,
        default=0.0,
        metavar="W",
        help="add W times the cross-entropy to the teacher's most likely token per cell to the "
        "KL loss (mode-seeking: argmax dreams follow the teacher's; default 0, KL only)",
    )
    group.add_argument(
        "--distill-full-mask",
        action="store_true",
        help="mask every cell of every training row: the only input a one-pass dream "
        "(sampling_steps=1, the default) gives the model",
    )
    memory.set_defaults(func=run_train_memory)
    from elworld.train.idm import register_train as register_idm  # elworld train idm

    register_idm(models)
    from elworld.train.end import register_train as register_end  # elworld train end

    register_end(models)
    return models


def _parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--image-size must look like 192x256 (HxW), got {text!r}") from None
    return height, width


def _train_config(
    args: argparse.Namespace, defaults: dict[str, Any], info: dict[str, Any]
) -> TrainConfig:
    def pick(name: str) -> Any:
        value = getattr(args, name)
        return defaults[name] if value is None else value

    return TrainConfig(
        out=args.out,
        epochs=pick("epochs"),
        batch_size=pick("batch_size"),
        lr=pick("lr"),
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        steps_per_epoch=args.steps_per_epoch,
        val_batches=args.val_batches,
        seed=args.seed,
        num_workers=args.num_workers,
        keep_last=args.keep_last or None,
        resume=args.resume,
        resume_from=args.resume_from,
        precision=pick("precision"),
        time_limit_min=args.time_limit,
        compile=args.compile,
        info=info,
    )


def _split(
    args: argparse.Namespace, dist_info: DistInfo
) -> tuple[list[Path], list[Path], list[Path], list[Path]]:
    """All episodes, the training split, and this rank's share of train and validation."""
    episodes = find_episodes(args.data)
    if len(episodes) < 2:
        raise ValueError(
            f"--data {args.data}: found {len(episodes)} episode(s); training needs at least 2 (one is held out for validation)"
        )
    train_eps, val_eps = split_episodes(episodes, args.val_fraction, args.seed)
    train_share = shard_episodes(train_eps, dist_info.rank, dist_info.world_size)
    if not train_share:
        raise ValueError(
            f"{len(train_eps)} training episodes cannot be shared among {dist_info.world_size} processes"
        )
    val_share = (
        shard_episodes(val_eps, dist_info.rank, dist_info.world_size)
        if len(val_eps) >= dist_info.world_size
        else val_eps
    )
    return episodes, train_eps, train_share, val_share


def _run_info(
    args: argparse.Namespace, train_eps: list[Path], val_eps_count: int
) -> dict[str, Any]:
    return {
        "command": command_line(),
        "data": str(args.data),
        "recordings": recording_provenance(train_eps),
        "train_episodes": len(train_eps),
        "val_episodes": val_eps_count,
        "hardware": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        + (
            torch.cuda.get_device_name(0)
            if torch.cuda.is_available()
            else f"CPU x{torch.get_num_threads()} threads"
        ),
    }


def _config_for(
    kind: str, args: argparse.Namespace, config_cls: type, fresh: dict[str, Any]
) -> Any:
    """The model config: --resume-from's, the newest epoch checkpoint's with --resume, else from flags."""
    if getattr(args, "resume_from", None) is not None:
        return checkpoint.load_config(args.resume_from, config_cls)
    found = checkpoint.list_epoch_checkpoints(args.out, kind) if args.resume else []
    if found:
        return checkpoint.load_config(found[-1][1], config_cls)
    names = {f.name for f in fields(config_cls)}
    return config_cls(**{k: v for k, v in fresh.items() if k in names})


def _cache_dir(args: argparse.Namespace) -> Path:
    return args.cache_dir if args.cache_dir is not None else args.data / ".elworld-cache"


def run_train_vision(args: argparse.Namespace) -> int:
    """``elworld train vision``."""
    from elworld.model.vision import VisionConfig, VisionModel

    dist_info = setup_distributed(args.device)
    try:
        height, width = _parse_size(args.image_size)
        config = _config_for(
            "vision",
            args,
            VisionConfig,
            dict(
                image_height=height,
                image_width=width,
                width=args.width,
                res_blocks=args.res_blocks,
                code_dim=args.code_dim,
                codebook_size=args.codebook_size,
                downsamples=args.downsamples,
            ),
        )
        _, train_eps, train_share, val_share = _split(args, dist_info)
        cache = _cache_dir(args) / "frames"
        size = dict(height=config.image_height, width=config.image_width)
        train_set = FrameDataset(prepare_frames(train_share, cache, **size))
        val_set = FrameDataset(prepare_frames(val_share, cache, **size))
        torch.manual_seed(args.seed)
        model = VisionModel(config)
        info = _run_info(args, train_eps, len(val_share))
        cfg = _train_config(
            args, {"epochs": 20, "batch_size": 16, "lr": 1e-3, "precision": "fp32"}, info
        )
        summary = train(model, config, train_set, val_set, cfg, dist_info)
        if dist_info.is_main:
            logger.info(
                "best vision model: %s (val_loss %.4f)",
                summary["best_model"],
                summary["best_val_loss"],
            )
    finally:
        cleanup_distributed(dist_info)
    return 0


def _start_distillation(
    args: argparse.Namespace, model: torch.nn.Module, device: torch.device
) -> dict[str, Any]:
    """Load ``--distill-from`` as the frozen teacher (and, fresh, as the student's weights).

    Returns what the checkpoint's ``training_info.json`` records: the world now
    recommends guidance 1 (the single pass), and where that came from.
    """
    from elworld.model.memory import MemoryModel

    teacher = MemoryModel.from_checkpoint(args.distill_from, device=device)
    guidance = args.distill_guidance
    if guidance is None:
        guidance = checkpoint.recommended_guidance(args.distill_from)
    if not args.resume:  # --resume-from's weights replace these when the loop starts
        model.load_state_dict(teacher.state_dict(), strict=True)
    model.distill_guidance(
        teacher,
        guidance,
        argmax_weight=args.distill_argmax_weight,
        full_mask=args.distill_full_mask,
    )
    logger.info("distilling guidance %.2f of %s into one conditional pass", guidance,
                args.distill_from)  # fmt: skip
    distilled: dict[str, Any] = {"teacher": str(args.distill_from), "guidance": guidance}
    if args.distill_argmax_weight:
        distilled["argmax_weight"] = args.distill_argmax_weight
    if args.distill_full_mask:
        distilled["full_mask"] = True
    return {"sampling": {"guidance": 1.0, "distilled": distilled}}


def _inherited_sampling(args: argparse.Namespace) -> dict[str, Any]:
    """A resumed run keeps the ``"sampling"`` recommendation (e.g. guidance 2) of the
    checkpoint it continues: a refit of a guided world is still sampled as one."""
    if args.resume_from is not None:
        source = Path(args.resume_from)
    elif args.resume:
        found = checkpoint.list_epoch_checkpoints(args.out, "memory")
        source = found[-1][1] if found else None
    else:
        source = None
    sampling = checkpoint.sampling_defaults(source) if source is not None else {}
    if not sampling:
        return {}
    inherited = dict(sampling)
    inherited.setdefault("inherited_from", str(source))
    return {"sampling": inherited}


def run_train_memory(args: argparse.Namespace) -> int:
    """``elworld train memory``."""
    from elworld.model.memory import MemoryConfig, MemoryModel
    from elworld.model.vision import VisionModel

    dist_info = setup_distributed(args.device)
    try:
        vision = VisionModel.from_checkpoint(args.vision, device=dist_info.device)
        vision_config = vision.config
        if args.distill_from is not None and not args.resume:  # the student starts as the teacher
            config = checkpoint.load_config(args.distill_from, MemoryConfig)
        else:
            config = None
        config = config or _config_for(
            "memory",
            args,
            MemoryConfig,
            dict(
                vocab_size=vision_config.codebook_size,
                grid_height=vision_config.grid_height,
                grid_width=vision_config.grid_width,
                context_frames=args.context_frames,
                n_layer=args.n_layer,
                n_head=args.n_head,
                n_embd=args.n_embd,
                dropout=args.dropout,
                reward_head=not args.no_reward_head,
                end_head=not args.no_end_head,
                end_pos_weight=args.end_pos_weight,
                copy_gate=not args.no_copy_gate,
                attention=args.attention,
                adaln=args.adaln,
                action_dropout=args.action_dropout,
                context_noise=args.context_noise,
            ),
        )
        check_models_fit(vision_config, config, args.vision, args.out)
        episodes, train_eps, train_share, val_share = _split(args, dist_info)
        fingerprint = checkpoint.checkpoint_fingerprint(args.vision)
        cache = _cache_dir(args) / "tokens"
        # Rank 0 encodes every episode once; the others then find the cache ready.
        if dist_info.is_main:
            build_token_cache(episodes, vision, fingerprint, cache, device=dist_info.device)
        barrier(dist_info)
        token_files = dict(
            zip(
                episodes,
                build_token_cache(episodes, vision, fingerprint, cache, device=dist_info.device),
            )
        )
        del vision
        train_set = TransitionDataset(
            train_share, [token_files[p] for p in train_share], config.context_frames
        )
        val_set = TransitionDataset(
            val_share, [token_files[p] for p in val_share], config.context_frames
        )
        torch.manual_seed(args.seed)
        model = MemoryModel(config)
        info = {
            **_run_info(args, train_eps, len(val_share)),
            "vision_checkpoint": str(args.vision),
            "vision_fingerprint": fingerprint,
        }
        if args.distill_from is not None:  # the weights come from --resume-from when given
            start = (args.resume_from, "--resume-from") if args.resume_from else None
            info["started_from"] = start_record(*(start or (args.distill_from, "--distill-from")))
            info.update(_start_distillation(args, model, dist_info.device))
        else:
            if args.resume_from is not None:
                info["started_from"] = start_record(args.resume_from, "--resume-from")
            info.update(_inherited_sampling(args))
        cfg = _train_config(
            args, {"epochs": 20, "batch_size": 8, "lr": 3e-4, "precision": "auto"}, info
        )
        summary = train(model, config, train_set, val_set, cfg, dist_info)
        if dist_info.is_main:
            logger.info(
                "best memory model: %s (val_loss %.4f)",
                summary["best_model"],
                summary["best_val_loss"],
            )
    finally:
        cleanup_distributed(dist_info)
    return 0
