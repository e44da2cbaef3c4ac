"""The ``README.md`` model card written into every checkpoint folder."""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any

from torch import nn


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _flat_metrics(metrics: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if not isinstance(metrics, dict):
        return [(prefix or "value", metrics)]
    rows = []
    for key, value in metrics.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        rows.extend(_flat_metrics(value, name) if isinstance(value, dict) else [(name, value)])
    return rows


def _format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h {seconds // 60 % 60:02d}m {seconds % 60:02d}s"


def _default_readme(kind: str, info: dict[str, Any], config: Any, model: nn.Module) -> str:
    """A human-readable summary of a checkpoint built from its training info."""
    epoch = info.get("epoch")
    title = f"# {kind.capitalize()} model checkpoint" + (
        f": epoch {epoch}" if epoch is not None else ""
    )
    lines = [title, ""]
    metrics = _flat_metrics(info["metrics"]) if info.get("metrics") is not None else []
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {name} | {_format_value(value)} |" for name, value in metrics]
        lines.append("")
    command = info.get("command")
    if isinstance(command, (list, tuple)):
        command = shlex.join(str(part) for part in command)
    elapsed = next((info[k] for k in ("elapsed_s", "elapsed", "elapsed_time") if k in info), None)
    facts = [
        ("Kind", kind),
        ("Epoch", epoch),
        ("Learning rate", info.get("lr")),
        ("Elapsed", _format_seconds(elapsed) if isinstance(elapsed, (int, float)) else elapsed),
        ("Data", info.get("data")),
        ("Date", info.get("date") or info.get("saved_at")),
        ("Command", f"`{command}`" if command else None),
    ]
    lines += [f"- {name}: {_format_value(value)}" for name, value in facts if value is not None]
    lines += ["", "## Model configuration", "", "| field | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in dataclasses.asdict(config).items()]
    cls = type(model)
    lines += ["", "## Loading", "", "```python"]
    if hasattr(cls, "from_checkpoint"):
        lines += [
            f"from {cls.__module__} import {cls.__qualname__}",
            "",
            f'model = {cls.__qualname__}.from_checkpoint("path/to/this/folder")',
        ]
    else:
        lines += [
            "from elworld.checkpoint import load_model",
            "",
            f'model = load_model("path/to/this/folder", {cls.__qualname__})',
        ]
    lines += ["```", ""]
    return "\n".join(lines)
