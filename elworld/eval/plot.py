"""The PSNR-against-horizon plot of ``elworld eval`` (``psnr_vs_horizon.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_psnr(results: dict[str, Any], path: Path) -> None:
    """PSNR against horizon: dream, copy-last baseline and reconstruction ceiling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rollout = results["memory"]["rollout_psnr"]
    horizons = [int(h) for h in rollout]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for key, label, style in (
        ("dream", "dream (recorded actions)", "o-"),
        ("copy_last", "copy last frame", "s--"),
        ("reconstruction", "vision reconstruction", ":"),
    ):
        ax.plot(horizons, [rollout[h][key] for h in rollout], style, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(horizons, [str(h) for h in horizons])
    ax.set_xlabel("horizon (steps)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("open-loop dream vs real frames")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
