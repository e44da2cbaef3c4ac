"""The bundled world's provenance agrees: model cards, training_info.json and the README recipe.

A user who runs the README's recipe should get the bundled world (up to noise),
so each ``elworld train`` command there is the one its checkpoint recorded, and
each model card shows what its ``training_info.json`` holds.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUNDLED = sorted((REPO / "checkpoints").glob("*/best_model"))
KINDS = [folder.parent.name for folder in BUNDLED]


def _info(kind: str) -> dict:
    return json.loads(
        (REPO / "checkpoints" / kind / "best_model" / "training_info.json").read_text()
    )


def _options(command: str) -> dict[str, str | bool]:
    """``elworld train KIND --a 1 --b`` (or ``elworld loop --a 1``) -> ``{"--a": "1", "--b": True}``
    (order-free)."""
    words = shlex.split(command)
    assert words[:2] in (["elworld", "train"], ["elworld", "loop"]), command
    first = 3 if words[1] == "train" else 2
    options: dict[str, str | bool] = {}
    for i, word in enumerate(words[first:], start=first):
        if word.startswith("--"):
            following = words[i + 1] if i + 1 < len(words) else "--"
            options[word] = True if following.startswith("--") else following
    return options


def _loop_settings(command: str) -> dict:
    """What an ``elworld loop`` command makes: its parsed settings, less when it stops."""
    from dataclasses import asdict

    from elworld.cli import build_parser
    from elworld.loop.cli import loop_config

    settings = asdict(loop_config(build_parser().parse_args(shlex.split(command)[1:])))
    return {k: v for k, v in settings.items() if k not in ("time_limit_min", "resume")}


def _readme_train_commands() -> dict[str, list[str]]:
    """Every ``elworld train KIND ...`` line of the README's bash blocks, by kind (``elworld loop``
    lines under "loop", ``elworld publish`` lines under "publish"), but for the section on a world of one's own game (its commands are a
    template, not the bundle's recipe)."""
    sections = (REPO / "README.md").read_text().split("\n## ")
    recipe = "\n".join(s for s in sections if not s.startswith("Make a world of your own game"))
    found: dict[str, list[str]] = {}
    for block in re.findall(r"```bash\n(.*?)```", recipe, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+", " ", line.split(" #")[0]).strip()
            if line.startswith("elworld train "):
                found.setdefault(line.split()[2], []).append(line)
            elif line.startswith("elworld loop "):
                found.setdefault("loop", []).append(line)
            elif line.startswith("elworld publish "):
                found.setdefault("publish", []).append(line)
    return found


def test_the_bundle_has_every_kind_the_dream_and_eval_use() -> None:
    assert {"vision", "memory", "end", "idm", "control"} <= set(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_each_card_shows_the_command_and_data_its_training_info_records(kind: str) -> None:
    info = _info(kind)
    card = (REPO / "checkpoints" / kind / "best_model" / "README.md").read_text()
    assert info.get("elworld_version"), f"{kind}: training_info.json records no elworld_version"
    trains = re.findall(r"`(elworld train [^`]+)`", card)
    assert trains, f"{kind}: the model card shows no `elworld train` command"
    made_by = {info["command"], *(step["command"] for step in info.get("lineage", []))}
    assert set(trains) == made_by, f"{kind}: card {trains} != {made_by!r}"
    if "loop" in info:  # published from a loop round: the card shows the loop's command
        assert f"`{info['loop']['command']}`" in card, f"{kind}: card lacks the loop command"
    if info.get("data"):
        data_lines = re.findall(r"^- Data: (\S+)", card, re.M)
        assert data_lines == [info["data"]], f"{kind}: card data {data_lines} != {info['data']!r}"
        assert _options(info["command"]).get("--data") == info["data"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_readme_recipe_runs_the_recorded_command(kind: str) -> None:
    """Every run behind the checkpoint is in the README: same options, only --out may differ.

    The runs are its lineage (oldest first), then its own. A run published from a loop round
    (``elworld loop --publish``) shows as the loop's command and its publish line (the loop's
    earlier rounds come with it); one published by ``elworld publish`` as its own ``elworld
    train`` line and the publish line."""
    info = _info(kind)
    found = _readme_train_commands()
    recipe = [{k: v for k, v in _options(c).items() if k != "--out"} for c in found.get(kind, [])]
    loops = [c for c in found.get("loop", []) if "--publish" not in c and "--resume" not in c]
    loop_runs = [_loop_settings(c) for c in loops]
    loop_outs: set[str] = set()
    steps = [*info.get("lineage", []), {"command": info["command"], "loop": info.get("loop")}]
    for step in steps:
        loop = step.get("loop")
        if loop:
            assert _loop_settings(loop["command"]) in loop_runs, (
                f"README: no `elworld loop` line with the settings of {kind}'s {loop['command']!r}"
            )
            publish = {"--out": loop["out"], "--publish": str(loop["round"]), "--to": "checkpoints"}
            assert publish in [_options(c) for c in found.get("loop", [])], (
                f"README: no `elworld loop --publish` line for {kind}"
            )
            loop_outs.add(loop["out"])
        elif any(Path(step.get("checkpoint", "")).is_relative_to(out) for out in loop_outs):
            continue  # an earlier round of a loop shown above
        else:
            recorded = {k: v for k, v in _options(step["command"]).items() if k != "--out"}
            assert recorded in recipe, (
                f"README: no `elworld train {kind}` line with the options of {step['command']!r}"
            )
    if info.get("published"):
        assert info["published"]["command"] in found.get("publish", []), (
            f"README: no `{info['published']['command']}` line for {kind}"
        )
