"""Inverse-dynamics model (IDM): which keys were held, read back from frames.

An evaluation instrument for controllability (as MineWorld does it): trained on
REAL transitions only, it names the keys of step ``t`` (``act[t]``, held while
``obs[t] -> obs[t+1]``) from the frames around it. ``elworld eval --idm`` then
scores dream transitions driven by known keys with it. Blur cannot fool it: a
dream that ignores its keys scores like the shuffled-key floor, however sharp
or smooth its frames are.

Why a window and not a frame pair: in Doom a strafe builds up speed over a few
steps and keeps coasting after the key is released, so a key shows as a change
of velocity. One pair cannot tell "left" from "still sliding after left";
frames ``t-1 .. t+2`` (three differences) can.

Input: each frame is turned grey and average-pooled to ``bands`` horizontal
bands x ``cols`` columns; the model runs 1-D convolutions along x over the
stacked bands of the window's frames and their differences, pools globally and
has one logit per scored key (multi-label BCE). Training mirrors half of each
batch left/right and swaps the left/right (and a/d) labels.

Labels are the EFFECTIVE keys (``effective_keys``): opposing keys held together
(left+right, up+down, a+d) cancel and count as neither. In ViZDoom each pair
drives opposite moves or turns that add up to nothing, so such a step looks
exactly like holding no key and "both held" is unlearnable from frames (on
take_cover recordings a quarter of the steps hold left and right together,
which capped the raw-label macro-F1 near 0.8). Training labels and every score
use effective keys; the memory model still receives the raw recorded keys.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from elworld.cli import add_small_model_arguments, command_line
from elworld.data import find_episodes, iter_frames, read_labels, read_sidecar, split_episodes
from elworld.frames import FRAME_HEIGHT, FRAME_WIDTH, resize_frames
from elworld.keys import KEY_INDEX, KEY_NAMES
from elworld.model.common import LossOutput

logger = logging.getLogger(__name__)

# Keys that swap places when the picture is mirrored left/right.
MIRROR_PAIRS: tuple[tuple[str, str], ...] = (("left", "right"), ("a", "d"))
# Keys that cancel when held together. In ViZDoom (elworld.record.doom's key table)
# up/down are MOVE_FORWARD/MOVE_BACKWARD, left/right TURN_LEFT/TURN_RIGHT (or
# MOVE_LEFT/MOVE_RIGHT where the scenario cannot turn) and a/d MOVE_LEFT/MOVE_RIGHT:
# each pair adds opposite amounts to one move or turn, so both held = neither held.
OPPOSING_KEYS: tuple[tuple[str, str], ...] = (("left", "right"), ("up", "down"), ("a", "d"))
LABELS = "effective keys; opposing keys held together (left+right) cancel and count as neither"
_GREY = (0.299, 0.587, 0.114)


@dataclass
class IDMConfig:
    """The IDM's shape and what it was trained on (saved as ``config.json``)."""

    keys: tuple[str, ...] = ("left", "right")  # keys it scores: those pressed in its training data
    image_height: int = FRAME_HEIGHT  # frames are resized to this size before pooling
    image_width: int = FRAME_WIDTH
    bands: int = 24  # horizontal bands of grey per frame
    cols: int = 256  # columns per band
    before: int = 1  # frames before step t in a window
    after: int = 2  # frames after step t (>= 1: obs[t+1] shows step t)
    width: int = 64  # conv channels
    n_layer: int = 3  # conv layers along x (all but the first halve the length)
    dropout: float = 0.1
    frame_skip: int | None = None  # from the training recordings' JSON sidecars
    scenario: str | None = None
    # Facts about the game, not take_cover: mirror augmentation (the game looks the same
    # mirrored left/right, MIRROR_PAIRS swapping) and OPPOSING_KEYS held together acting as
    # neither (ViZDoom). ``idm_config_for`` decides them from the recordings.
    mirror: bool = True
    cancel_opposing: bool = True

    def __post_init__(self) -> None:
        self.keys = tuple(self.keys)
        unknown = [k for k in self.keys if k not in KEY_INDEX]
        if not self.keys or unknown or len(set(self.keys)) != len(self.keys):
            raise ValueError(
                f"keys must be distinct names from {', '.join(KEY_NAMES)}, got {list(self.keys)}"
            )
        for name in ("image_height", "image_width", "bands", "cols", "after", "width", "n_layer"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.before < 0:
            raise ValueError(f"before must be >= 0, got {self.before}")
        if self.bands > self.image_height or self.cols > self.image_width:
            raise ValueError(
                f"bands x cols ({self.bands}x{self.cols}) must fit the image "
                f"({self.image_height}x{self.image_width})"
            )

    @property
    def window(self) -> int:
        """Frames per window: ``t - before .. t + after``."""
        return self.before + 1 + self.after


# --------------------------------------------------------------------------- inputs


def opposing_pairs(config: IDMConfig | None) -> tuple[tuple[str, str], ...]:
    """The key pairs that cancel for an IDM of ``config`` (all of ``OPPOSING_KEYS``, or none)."""
    return OPPOSING_KEYS if config is None or config.cancel_opposing else ()


def labels_text(config: IDMConfig | None) -> str:
    """What an IDM's labels are, for its reports."""
    return LABELS if opposing_pairs(config) else "keys as recorded (opposing keys do not cancel)"


def effective_keys(
    actions: np.ndarray, opposing: tuple[tuple[str, str], ...] = OPPOSING_KEYS
) -> np.ndarray:
    """The keys that act: ``(..., 22)`` multi-hot -> ``(..., 22)`` uint8, opposing pairs held together zeroed.

    Holding both keys of an ``OPPOSING_KEYS`` pair has the effect of holding
    neither, so both are cleared; every other key is kept as recorded.
    """
    act = np.array(actions, dtype=np.uint8, copy=True)
    if act.ndim < 1 or act.shape[-1] != len(KEY_NAMES):
        raise ValueError(f"actions must be (..., {len(KEY_NAMES)}), got {act.shape}")
    for a, b in opposing:
        ia, ib = KEY_INDEX[a], KEY_INDEX[b]
        both = (act[..., ia] > 0) & (act[..., ib] > 0)
        act[..., ia][both] = 0
        act[..., ib][both] = 0
    return act


def frames_to_bands(frames: np.ndarray, bands: int, cols: int) -> torch.Tensor:
    """uint8 RGB frames ``(N, H, W, 3)`` -> grey ``(N, bands, cols)`` float in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float()  # (N, H, W, 3)
    grey = x @ torch.tensor(_GREY) / 255.0  # (N, H, W)
    return F.adaptive_avg_pool2d(grey[:, None], (bands, cols))[:, 0]  # (N, bands, cols)


def idm_windows(bands: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """Every window of ``(N, B, C)`` bands: ``(N - before - after, before + 1 + after, B, C)``.

    Row ``i`` holds frames ``i .. i + before + after``: the window of key step ``t = i + before``.
    """
    size = before + 1 + after
    if len(bands) < size:
        return bands.new_zeros((0, size, *bands.shape[1:]))
    return bands.unfold(0, size, 1).permute(0, 3, 1, 2)  # (N - size + 1, size, B, C)


def window_labels(act: np.ndarray, config: IDMConfig) -> np.ndarray:
    """The scored effective keys of every windowed step: ``(N - before - after, K)`` bool from ``act (N, 22)``."""
    steps = effective_keys(act[config.before : len(act) - config.after], opposing_pairs(config))
    return steps[:, [KEY_INDEX[k] for k in config.keys]].astype(bool)


def macro_f1(
    pred: np.ndarray, true: np.ndarray, keys: tuple[str, ...] | list[str]
) -> dict[str, Any]:
    """Per-key binary F1 of ``(N, K)`` bool predictions, and their mean over ``keys``.

    A key with neither a true nor a predicted press has no F1 (NaN) and is left
    out of the mean. Returns ``{"macro_f1", "per_key", "support", "windows"}``
    (support: true presses per key).
    """
    pred, true = np.asarray(pred, bool), np.asarray(true, bool)
    if pred.shape != true.shape or pred.ndim != 2 or pred.shape[1] != len(keys):
        raise ValueError(
            f"pred and true must both be (N, {len(keys)}) for keys {list(keys)}, "
            f"got {pred.shape} and {true.shape}"
        )
    per_key = {}
    for i, key in enumerate(keys):
        tp = int(np.sum(pred[:, i] & true[:, i]))
        wrong = int(np.sum(pred[:, i] != true[:, i]))  # false positives + false negatives
        per_key[key] = 2 * tp / (2 * tp + wrong) if tp + wrong else math.nan
    defined = [v for v in per_key.values() if not math.isnan(v)]
    return {
        "macro_f1": float(np.mean(defined)) if defined else math.nan,
        "per_key": per_key,
        "support": {key: int(true[:, i].sum()) for i, key in enumerate(keys)},
        "windows": len(pred),
    }


# --------------------------------------------------------------------------- model


class InverseDynamicsModel(nn.Module):
    """Frames ``t - before .. t + after`` -> one logit per scored key of step ``t``."""

    kind = "idm"
    config_class = IDMConfig

    def __init__(self, config: IDMConfig) -> None:
        super().__init__()
        self.config = config
        channels = (2 * config.window - 1) * config.bands  # frames and their differences
        self.norm = nn.BatchNorm1d(channels)  # differences are tiny next to frames: rescale both
        layers: list[nn.Module] = []
        for i in range(config.n_layer):
            stride = 1 if i == 0 else 2
            layers += [nn.Conv1d(channels, config.width, 5, stride, padding=2), nn.GELU()]
            channels = config.width
        self.convs = nn.Sequential(*layers)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(2 * config.width, len(config.keys))

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """``windows (B, window, bands, cols)`` grey in [0, 1] -> logits ``(B, K)``."""
        b, w, nb, nc = windows.shape
        diffs = windows[:, 1:] - windows[:, :-1]  # (B, w - 1, bands, cols)
        x = torch.cat([windows, diffs], dim=1).reshape(b, (2 * w - 1) * nb, nc)
        x = self.convs(self.norm(x))  # (B, width, cols / 2**(n_layer - 1))
        x = torch.cat([x.mean(-1), x.amax(-1)], dim=1)  # (B, 2 * width)
        return self.head(self.drop(x))

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> LossOutput:
        """``{"windows": float (B, window, bands, cols), "keys": float (B, K)}`` -> BCE."""
        logits = self(batch["windows"])
        loss = F.binary_cross_entropy_with_logits(logits, batch["keys"])
        accuracy = ((logits > 0) == (batch["keys"] > 0.5)).float().mean()
        return LossOutput(loss=loss, metrics={"loss": loss.item(), "key_acc": accuracy.item()})

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu"
    ) -> InverseDynamicsModel:
        """Load a saved IDM (eval mode) from a checkpoint folder."""
        from elworld.checkpoint import load_model

        return load_model(path, cls, device=device)


@torch.inference_mode()
def _predict_windows(model: InverseDynamicsModel, windows: torch.Tensor, batch: int) -> np.ndarray:
    device = next(model.parameters()).device
    out = [
        model(windows[i : i + batch].to(device, torch.float32)).cpu() > 0
        for i in range(0, len(windows), batch)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, len(model.config.keys)), bool)


def predict_keys(
    model: InverseDynamicsModel, frames: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """The keys of every windowed step of uint8 frames ``(N, H, W, 3)``: ``(N - before - after, K)`` bool.

    Row ``i`` is key step ``t = i + before``; columns follow ``model.config.keys``.
    Frames of another size are resized to the model's image size first.
    """
    cfg = model.config
    was_training = model.training
    model.eval()
    if len(frames) and frames.shape[1:3] != (cfg.image_height, cfg.image_width):
        frames = resize_frames(frames, height=cfg.image_height, width=cfg.image_width)
    bands = (
        frames_to_bands(frames, cfg.bands, cfg.cols)
        if len(frames)
        else torch.zeros(0, cfg.bands, cfg.cols)
    )
    pred = _predict_windows(model, idm_windows(bands, cfg.before, cfg.after), batch_size)
    model.train(was_training)
    return pred


# --------------------------------------------------------------------------- data


def sidecar_value(episodes: list[Path], field: str) -> Any:
    """The one value of sidecar ``field`` across ``episodes`` (None if no sidecar has it).

    Raises ``ValueError`` naming two episodes when they disagree.
    """
    seen: dict[Any, Path] = {}
    for path in episodes:
        value = read_sidecar(path, strict=True).get(field)
        if value is not None:
            seen.setdefault(value, path)
    if len(seen) > 1:
        (a, pa), (b, pb) = list(seen.items())[:2]
        raise ValueError(f"episodes disagree on {field}: {pa} has {a!r}, {pb} has {b!r}")
    return next(iter(seen), None)


def check_frame_skip(config: IDMConfig, episodes: list[Path]) -> None:
    """Raise ``ValueError`` when an episode was recorded with another frame skip than the IDM's."""
    if config.frame_skip is None:
        logger.warning("the IDM does not know its training frame skip; cannot check it matches")
        return
    unknown = 0
    for path in episodes:
        skip = read_sidecar(path, strict=True).get("frame_skip")
        unknown += skip is None
        if skip is not None and skip != config.frame_skip:
            raise ValueError(
                f"frame skips must match: the IDM was trained on frame skip {config.frame_skip}, "
                f"but {path} was recorded with frame skip {skip}"
            )
    if unknown:
        logger.warning(
            "%d episode(s) have no sidecar frame skip: assuming %d", unknown, config.frame_skip
        )


def idm_config_for(episodes: list[Path], **fields: Any) -> IDMConfig:
    """An ``IDMConfig`` for training on ``episodes``: the keys they press (effectively), their frame skip and scenario.

    ``cancel_opposing`` defaults to on for ViZDoom recordings (and recordings
    that do not name their source), off for other games; ``mirror`` to on when
    the keys pressed hold a whole ``MIRROR_PAIRS`` pair (left and right, or a and d).
    """
    if fields.get("cancel_opposing") is None:
        try:
            source = sidecar_value(episodes, "source")
        except ValueError:  # sources differ: keep ViZDoom's rule
            source = None
        fields["cancel_opposing"] = source in (None, "vizdoom")
    opposing = OPPOSING_KEYS if fields["cancel_opposing"] else ()
    pressed = np.zeros(len(KEY_NAMES), bool)
    for path in episodes:
        pressed |= effective_keys(read_labels(path)["act"], opposing).any(axis=0)
    if not pressed.any():
        raise ValueError("the training episodes never press a key: an IDM has nothing to learn")
    keys = tuple(name for name, held in zip(KEY_NAMES, pressed) if held)
    if fields.get("mirror") is None:
        fields["mirror"] = any(a in keys and b in keys for a, b in MIRROR_PAIRS)
    return IDMConfig(
        keys=keys,
        frame_skip=sidecar_value(episodes, "frame_skip"),
        scenario=sidecar_value(episodes, "scenario"),
        **fields,
    )


@dataclass
class _Windows:
    """Episodes' bands back to back, with the frames that have a full window."""

    bands: np.ndarray  # (F, bands, cols) float16
    labels: np.ndarray  # (F, K) float32: the scored effective keys held at each step
    steps: np.ndarray  # (S,) int64: indices t with frames t - before .. t + after in one episode

    def batch(self, steps: np.ndarray, config: IDMConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows ``(B, window, bands, cols)`` and key labels ``(B, K)`` of ``steps``."""
        index = steps[:, None] + np.arange(-config.before, config.after + 1)  # (B, window)
        return torch.from_numpy(self.bands[index]).float(), torch.from_numpy(self.labels[steps])


def _load_windows(episodes: list[Path], config: IDMConfig, desc: str) -> _Windows:
    columns = [KEY_INDEX[k] for k in config.keys]
    bands, labels, steps, offset = [], [], [], 0
    for path in tqdm(episodes, desc=desc, unit="episode", leave=False):
        chunks = iter_frames(path, height=config.image_height, width=config.image_width)
        episode = torch.cat([frames_to_bands(c, config.bands, config.cols) for c in chunks])
        n = len(episode)
        bands.append(episode.half().numpy())
        act = read_labels(path)["act"]
        labels.append(effective_keys(act, opposing_pairs(config))[:, columns].astype(np.float32))
        steps.append(offset + np.arange(config.before, n - config.after))
        offset += n
    return _Windows(np.concatenate(bands), np.concatenate(labels), np.concatenate(steps))


def _mirror_columns(keys: tuple[str, ...]) -> np.ndarray | None:
    """Label permutation for a left/right mirrored window (None: a mirror pair is half scored)."""
    index = {k: i for i, k in enumerate(keys)}
    order = list(range(len(keys)))
    for a, b in MIRROR_PAIRS:
        if (a in index) != (b in index):
            return None
        if a in index:
            order[index[a]], order[index[b]] = index[b], index[a]
    return np.array(order)


def _validate(model: InverseDynamicsModel, data: _Windows, batch: int) -> dict[str, Any]:
    model.eval()
    preds = []
    for i in range(0, len(data.steps), batch):
        windows, _ = data.batch(data.steps[i : i + batch], model.config)
        preds.append(_predict_windows(model, windows, batch))
    return macro_f1(np.concatenate(preds), data.labels[data.steps] > 0.5, model.config.keys)


def train_idm(
    train_episodes: list[Path],
    val_episodes: list[Path],
    config: IDMConfig,
    *,
    epochs: int = 30,
    time_limit_min: float | None = None,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 0.01,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[InverseDynamicsModel, dict[str, Any]]:
    """Train an IDM on real episodes; return the best one on ``val_episodes`` and its training info.

    Stops after ``epochs``, or after the epoch in which ``time_limit_min`` minutes
    have passed. The info holds the validation macro-F1 and per-key F1.
    """
    if not train_episodes or not val_episodes:
        raise ValueError(
            f"an IDM needs training and validation episodes, got {len(train_episodes)} and {len(val_episodes)}"
        )
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    device = torch.device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_data = _load_windows(train_episodes, config, "loading training episodes")
    val_data = _load_windows(val_episodes, config, "loading validation episodes")
    if not len(train_data.steps) or not len(val_data.steps):
        raise ValueError(f"episodes are too short for a {config.window}-frame window")
    mirror = _mirror_columns(config.keys) if config.mirror else None
    if mirror is None and config.mirror:
        logger.warning("keys %s hold half of a mirror pair: no mirror augmentation", config.keys)
    model = InverseDynamicsModel(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    logger.info(
        "IDM: %d parameters, keys %s, %d training / %d validation windows",
        sum(p.numel() for p in model.parameters()), ", ".join(config.keys),
        len(train_data.steps), len(val_data.steps),
    )  # fmt: skip
    start = time.monotonic()
    best: dict[str, Any] = {"macro_f1": -math.inf}
    best_state, best_epoch, epoch = None, 0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        order = rng.permutation(train_data.steps)
        bar = tqdm(
            range(0, len(order), batch_size), desc=f"idm epoch {epoch}/{epochs}", leave=False
        )
        for i in bar:
            windows, keys = train_data.batch(order[i : i + batch_size], config)
            if mirror is not None:
                flip = torch.from_numpy(rng.random(len(keys)) < 0.5)
                windows[flip] = windows[flip].flip(-1)
                keys[flip] = keys[flip][:, torch.from_numpy(mirror)]
            out = model.compute_loss({"windows": windows.to(device), "keys": keys.to(device)})
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{out.metrics['loss']:.3f}")
        scores = _validate(model, val_data, 4 * batch_size)
        per_key = ", ".join(f"{k} {v:.3f}" for k, v in scores["per_key"].items())
        logger.info(
            "idm epoch %d: validation macro-F1 %.3f (%s)", epoch, scores["macro_f1"], per_key
        )
        if scores["macro_f1"] > best["macro_f1"] or best_state is None:
            best, best_epoch = scores, epoch
            best_state = copy.deepcopy(model.state_dict())
        if time_limit_min is not None and time.monotonic() - start >= 60 * time_limit_min:
            logger.info("time limit of %.1f min reached after epoch %d", time_limit_min, epoch)
            break
    model.load_state_dict(best_state)
    info = {
        "val_macro_f1": best["macro_f1"],
        "val_f1": best["per_key"],
        "val_support": best["support"],
        "val_windows": best["windows"],
        "epoch": best_epoch,
        "epochs_run": epoch,
        "elapsed_s": time.monotonic() - start,
        "train_episodes": len(train_episodes),
        "val_episodes": len(val_episodes),
        "frame_skip": config.frame_skip,
        "scenario": config.scenario,
        "labels": labels_text(config),
    }
    return model.eval(), info


# --------------------------------------------------------------------------- checkpoints


def save_idm(model: InverseDynamicsModel, path: str | Path, info: dict[str, Any]) -> Path:
    """Write the IDM to checkpoint folder ``path`` atomically (safetensors + config.json + training_info.json)."""
    from elworld.checkpoint import save_checkpoint

    cfg = model.config
    f1 = ", ".join(f"{k} {v:.3f}" for k, v in info.get("val_f1", {}).items())
    readme = "\n".join([
        "# Inverse-dynamics model (evaluation instrument)", "",
        "Names the keys held at step t from real frames t-before .. t+after; `elworld eval --idm` "
        "scores dream transitions with it. Trained on real training episodes only.", "",
        f"- Keys scored: {', '.join(cfg.keys)}",
        f"- Labels: {info.get('labels', 'raw recorded keys')}",
        f"- Frame skip: {cfg.frame_skip}; scenario: {cfg.scenario}",
        f"- Validation macro-F1: {info.get('val_macro_f1', math.nan):.3f} ({f1})",
        f"- Data: {info.get('data')}", f"- Command: `{info.get('command')}`", "",
        "```python", "from elworld.idm import InverseDynamicsModel", "",
        'idm = InverseDynamicsModel.from_checkpoint("path/to/this/folder")', "```", "",
    ])  # fmt: skip
    return save_checkpoint(path, model=model, config=cfg, training_info=info, readme=readme)


# --------------------------------------------------------------------------- CLI


def register_train(models: argparse._SubParsersAction) -> None:
    """Add ``elworld train idm`` to the ``elworld train`` model subparsers."""
    parser = models.add_parser(
        "idm",
        help="train the inverse-dynamics model that `elworld eval --idm` scores dreams with",
        description="Train an inverse-dynamics model (IDM): from real frames t-1..t+2 it names the keys held "
        "at step t. It is an evaluation instrument for controllability, not part of the world model: "
        "`elworld eval --idm` scores dream transitions driven by known keys with it. Train it on REAL "
        "training episodes, never on the held-out ones it will evaluate. Writes OUT/idm/best_model/ "
        "(the epoch with the best validation macro-F1 on held-out training episodes).",
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="folder of real training .npz episodes"
    )
    add_small_model_arguments(parser, epochs=30)
    parser.add_argument(
        "--max-episodes", type=int, default=None, metavar="N",
        help="use only the first N episodes (sorted by name); ~50 are enough, ~200 are better",
    )  # fmt: skip
    parser.add_argument(
        "--val-fraction", type=float, default=0.1,
        help="share of the episodes held out for validation (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--batch-size", type=int, default=64, help="windows per step (default: %(default)s)"
    )
    parser.add_argument(
        "--lr", type=float, default=2e-3, help="AdamW learning rate (default: %(default)s)"
    )
    parser.add_argument(
        "--width", type=int, default=64, help="conv channels (default: %(default)s)"
    )
    parser.add_argument(
        "--mirror", action=argparse.BooleanOptionalAction, default=None,
        help="mirror half of each batch left/right, swapping left/right and a/d labels (for "
        "games that look the same mirrored; default: on when the keys pressed include left and "
        "right, or a and d)",
    )  # fmt: skip
    parser.add_argument(
        "--cancel-opposing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="label opposing keys held together (left+right, up+down, a+d) as neither, as they "
        "act in ViZDoom (default: on for ViZDoom recordings, off for other games)",
    )
    parser.set_defaults(func=run_train_idm)


def run_train_idm(args: argparse.Namespace) -> int:
    """``elworld train idm``."""
    from elworld.checkpoint import best_model_dir
    from elworld.train.distributed import resolve_device

    if args.max_episodes is not None and args.max_episodes < 2:
        raise ValueError(
            f"--max-episodes must be >= 2 (one is held out for validation), got {args.max_episodes}"
        )
    episodes = find_episodes(args.data)[: args.max_episodes]
    if len(episodes) < 2:
        raise ValueError(
            f"--data {args.data}: found {len(episodes)} episode(s); an IDM needs at least 2"
        )
    train_eps, val_eps = split_episodes(episodes, args.val_fraction, args.seed)
    config = idm_config_for(
        train_eps, width=args.width, mirror=args.mirror, cancel_opposing=args.cancel_opposing
    )
    model, info = train_idm(
        train_eps, val_eps, config, epochs=args.epochs, time_limit_min=args.time_limit,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=resolve_device(args.device),
    )  # fmt: skip
    info |= {
        "command": command_line(),
        "data": str(args.data),
        "config": asdict(config),
    }
    path = save_idm(model, best_model_dir(args.out, "idm"), info)
    per_key = ", ".join(f"{k} {v:.3f}" for k, v in info["val_f1"].items())
    logger.info(
        "IDM saved to %s: validation macro-F1 %.3f (%s)", path, info["val_macro_f1"], per_key
    )
    return 0
