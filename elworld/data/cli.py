"""``elworld data``: inspect a folder of episode recordings.

``elworld data info DIR [--json]`` summarises the episodes (frames, resolutions,
lengths, returns, how often each key is held, the train/val split);
``elworld data split DIR`` lists which episodes go to train and which to val;
``elworld data start-frames DIR --out FILE`` writes a bank of real frames the
dream env starts from.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from elworld.data.episodes import (
    find_episodes,
    inspect_episode,
    iter_frames,
    read_labels,
    split_episodes,
)
from elworld.keys import KEY_NAMES, NUM_KEYS


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": float(min(values)), "mean": float(np.mean(values)), "max": float(max(values))}


def _how_it_ended(labels: dict[str, np.ndarray]) -> str:
    """``"by itself"`` (done), ``"truncated"`` (a time limit, cap or stop) or ``"unknown"``."""
    if "done" in labels and labels["done"][-1]:
        return "by itself"
    if "truncated" in labels and labels["truncated"][-1]:
        return "truncated"
    return "unknown"


def summarize(directory: str | Path, val_fraction: float = 0.1, seed: int = 0) -> dict[str, Any]:
    """The statistics ``elworld data info`` shows, as a JSON-ready dict."""
    paths = find_episodes(directory)
    infos = [inspect_episode(path) for path in paths]
    key_counts = np.zeros(NUM_KEYS, dtype=np.int64)
    returns = []
    ended = Counter()  # episodes by how they ended (done / truncated / neither known)
    for path in paths:
        labels = read_labels(path)
        ended[_how_it_ended(labels)] += 1
        key_counts += labels["act"].sum(axis=0, dtype=np.int64)
        if "rew" in labels:
            returns.append(float(labels["rew"].sum(dtype=np.float64)))
    total = sum(info.num_frames for info in infos)
    resolutions = Counter(f"{info.height}x{info.width}" for info in infos)
    train, val = split_episodes(paths, val_fraction=val_fraction, seed=seed)
    frames_by_path = {info.path: info.num_frames for info in infos}
    return {
        "directory": str(directory),
        "episodes": len(paths),
        "frames": total,
        "resolutions": dict(resolutions),
        "episode_length": _stats([info.num_frames for info in infos]),
        "episodes_with_reward": len(returns),
        "episodes_with_done": sum(info.has_done for info in infos),
        "episodes_ended": dict(ended),
        "returns": _stats(returns) if returns else None,
        "key_share": {name: float(key_counts[i] / total) for i, name in enumerate(KEY_NAMES)},
        "split": {
            "val_fraction": val_fraction,
            "seed": seed,
            "train": len(train),
            "val": len(val),
            "train_frames": sum(frames_by_path[p] for p in train),
            "val_frames": sum(frames_by_path[p] for p in val),
        },
    }


def _format_info(summary: dict[str, Any]) -> str:
    length = summary["episode_length"]
    lines = [
        f"directory      {summary['directory']}",
        f"episodes       {summary['episodes']}",
        f"frames         {summary['frames']}",
        "resolutions    "
        + ", ".join(f"{res} ({count} episodes)" for res, count in summary["resolutions"].items()),
        f"length         min {length['min']:.0f}  mean {length['mean']:.1f}  max {length['max']:.0f} frames",
    ]
    returns = summary["returns"]
    if returns is None:
        lines.append("returns        (no rew arrays)")
    else:
        lines.append(
            f"returns        min {returns['min']:.3f}  mean {returns['mean']:.3f}  max {returns['max']:.3f}"
            f"  ({summary['episodes_with_reward']} episodes with rew)"
        )
    lines.append(f"with done      {summary['episodes_with_done']} episodes")
    ended = summary.get("episodes_ended", {})
    lines.append(
        "ended          "
        + ", ".join(f"{ended[k]} {k}" for k in ("by itself", "truncated", "unknown") if k in ended)
    )
    split = summary["split"]
    lines.append(
        f"split          train {split['train']} episodes ({split['train_frames']} frames), "
        f"val {split['val']} episodes ({split['val_frames']} frames)"
    )
    lines.append("")
    lines.append("key     held (share of frames)")
    for name, share in summary["key_share"].items():
        bar = "#" * round(share * 40)
        lines.append(f"{name:<7} {share:6.1%}  {bar}")
    return "\n".join(lines)


def _run_info(args: argparse.Namespace) -> int:
    summary = summarize(args.directory, val_fraction=args.val_fraction, seed=args.seed)
    print(json.dumps(summary, indent=2) if args.json else _format_info(summary))
    return 0


def _run_split(args: argparse.Namespace) -> int:
    paths = find_episodes(args.directory)
    train, val = split_episodes(paths, val_fraction=args.val_fraction, seed=args.seed)
    if args.json:
        print(
            json.dumps({"train": [str(p) for p in train], "val": [str(p) for p in val]}, indent=2)
        )
    else:
        for split, split_paths in (("train", train), ("val", val)):
            for path in split_paths:
                print(f"{split}\t{path}")
    return 0


def sample_start_frames(
    paths: list[Path], count: int, seed: int = 0, clip: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` clips of ``clip`` consecutive real frames drawn from ``paths`` (seeded).

    Returns frames ``(count * clip, 192, 256, 3)`` uint8 and ``first``
    ``(count * clip,)`` bool, True on each clip's first frame. Clips are spread
    over episodes and over time within them, so a dream can start anywhere the
    recordings went; a clip gives a start its real recent frames (motion).
    """
    rng = np.random.default_rng(seed)
    lengths = [inspect_episode(path).num_frames for path in paths]
    episode_of = rng.choice(len(paths), size=count, replace=count > len(paths))
    frames = []
    for episode in sorted(set(episode_of.tolist())):
        length = lengths[episode]
        ends = sorted(
            rng.integers(min(clip - 1, length - 1), length, size=int(np.sum(episode_of == episode)))
        )
        wanted = [max(0, end - clip + 1 + i) for end in ends for i in range(clip)]
        found: dict[int, np.ndarray] = {}  # streamed: only the wanted frames are kept
        start = 0
        for chunk in iter_frames(paths[episode]):
            found.update((t, chunk[t - start]) for t in wanted if start <= t < start + len(chunk))
            start += len(chunk)
        frames.extend(found[t] for t in wanted)
    first = np.zeros(len(frames), dtype=bool)
    first[::clip] = True
    return np.stack(frames), first


def _run_start_frames(args: argparse.Namespace) -> int:
    from elworld.atomic import atomic_write

    if args.count < 1:
        raise ValueError(f"--count must be at least 1, got {args.count}")
    paths = find_episodes(args.directory)
    train, _ = split_episodes(paths, val_fraction=args.val_fraction, seed=args.seed)
    if args.clip < 1:
        raise ValueError(f"--clip must be at least 1, got {args.clip}")
    frames, first = sample_start_frames(train, args.count, seed=args.seed, clip=args.clip)
    atomic_write(args.out, lambda fp: np.savez_compressed(fp, obs=frames, first=first))
    print(
        f"wrote {args.count} start clips of {args.clip} frames from {len(train)} training "
        f"episodes to {args.out}"
    )
    return 0


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "directory", metavar="DIR", help="folder of episode .npz files (searched recursively)"
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of episodes held out for validation (default: 0.1)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the train/val split (default: 0)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``data`` command (``info`` and ``split``) to the ``elworld`` CLI."""
    parser = subparsers.add_parser(
        "data",
        help="inspect episode recordings",
        description="Inspect a folder of episode recordings.",
    )
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION")
    info = actions.add_parser(
        "info",
        help="summarise episodes: frames, resolutions, lengths, returns, key presses, split",
        description="Summarise the episodes in DIR.",
    )
    _add_common(info)
    info.set_defaults(func=_run_info)
    split = actions.add_parser(
        "split",
        help="list which episodes go to train and which to val",
        description="Print the deterministic train/val split of the episodes in DIR.",
    )
    _add_common(split)
    split.set_defaults(func=_run_split)
    start = actions.add_parser(
        "start-frames",
        help="write a bank of real start frames for the dream env",
        description="Draw real frames from the training split of DIR (seeded, spread over episodes and "
        "time) and write them as an .npz with 'obs' (N, 192, 256, 3) uint8: the dream env's "
        "start_observations, e.g. checkpoints/start_frames.npz.",
    )
    _add_common(start)
    start.add_argument("--out", type=Path, required=True, help="output .npz file")
    start.add_argument("--count", type=int, default=64, help="clips in the bank (default: 64)")
    start.add_argument(
        "--clip",
        type=int,
        default=2,
        help="consecutive frames per clip: the memory model's context frames, so a dream "
        "starts with real motion (default: %(default)s)",
    )
    start.set_defaults(func=_run_start_frames)

    def _help(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=_help)
