"""The house plan (docs/ARCHITECTURE.md): every import points down the floors.

Read with ``ast`` only (nothing is imported), every import in ``elworld/`` and
``elworld_gym/``, function-level and ``TYPE_CHECKING`` ones included, must go
to a floor no higher than its own; the packages of one floor must not import
each other (``elworld_gym``, ``eval`` and ``control`` stand side by side), and
every module must have a floor, so a new one is placed on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# (floor, group) by module prefix; the longest matching prefix wins.
FLOORS: dict[str, int] = {
    # 1: the ground: no ElWorld imports of their own.
    "elworld": 1,  # the package itself: __version__ only
    "elworld.keys": 1,
    "elworld.frames": 1,
    "elworld.atomic": 1,
    "elworld.cli_args": 1,
    "elworld.policy": 1,  # the one policy interface
    # 2: recordings, datasets, checkpoint files.
    "elworld.record": 2,
    "elworld.data": 2,
    "elworld.checkpoint": 2,
    # 3: every network.
    "elworld.model": 3,
    # 4: every trainer that needs no dream.
    "elworld.train": 4,
    # 5: the dream core.
    "elworld.world": 5,
    # 6: side by side, independent of each other.
    "elworld_gym": 6,
    "elworld.eval": 6,
    "elworld.control": 6,
    # 7: play drives the Gymnasium env as any user does (window, rollout, keys figure).
    "elworld.play": 7,
    "elworld.loop": 7,  # World Models' loop: drives record, train and control
    # 8: the dispatcher, which may import every floor.
    "elworld.cli": 8,
    "elworld.__main__": 8,
}
# Packages that sit on a floor together but must not import each other.
SIDE_BY_SIDE = {"elworld.record", "elworld.data", "elworld.checkpoint"} | {
    "elworld_gym",
    "elworld.eval",
    "elworld.control",
}
TOP_ONLY = ("elworld_gym", "elworld.control", "elworld.play", "elworld.eval", "elworld.loop")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _place(module: str) -> str | None:
    """The FLOORS key that ``module`` falls under (the longest prefix), if any."""
    matches = [key for key in FLOORS if module == key or module.startswith(key + ".")]
    return max(matches, key=len) if matches else None


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """``(line, imported module)`` of every ElWorld import in the file."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing package
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from elworld import checkpoint`` imports the submodule, not the package.
            found += [
                (
                    node.lineno,
                    f"{target}.{alias.name}" if _is_module(target, alias.name) else target,
                )
                for alias in node.names
            ]
    return [
        (line, name) for line, name in found if name.split(".")[0] in ("elworld", "elworld_gym")
    ]


def _is_module(package: str, name: str) -> bool:
    folder = REPO.joinpath(*package.split("."))
    return (folder / name).is_dir() or (folder / f"{name}.py").is_file()


def _modules() -> list[tuple[Path, str]]:
    files = sorted([*REPO.glob("elworld/**/*.py"), *REPO.glob("elworld_gym/**/*.py")])
    return [(path, _module_name(path)) for path in files]


def _violations(modules: list[tuple[Path, str]]) -> list[str]:
    """Every import of ``modules`` (``(file, module name)``) against the plan, one line each."""
    problems = []
    for path, module in modules:
        home = _place(module)
        if home is None:
            problems.append(f"{module}: no floor in tests/test_architecture.py FLOORS")
            continue
        for line, target in _imports(path, module):
            there = _place(target)
            where = f"{module} (line {line}) imports {target}"
            if there is None:
                problems.append(f"{where}, which has no floor")
            elif FLOORS[there] > FLOORS[home]:
                problems.append(f"{where}: floor {FLOORS[home]} -> higher floor {FLOORS[there]}")
            elif there != home and {there, home} <= SIDE_BY_SIDE and FLOORS[there] == FLOORS[home]:
                problems.append(f"{where}: {home} and {there} stand side by side")
            if FLOORS[home] < FLOORS["elworld_gym"] and target.startswith(TOP_ONLY):
                problems.append(f"{where}: below the top floors, {target} is out of reach")
    return problems


def test_imports_only_point_down() -> None:
    problems = _violations(_modules())
    assert not problems, "imports against the house plan:\n" + "\n".join(problems)


def test_every_floor_is_in_use() -> None:
    """FLOORS names only places that exist, so the plan cannot rot into fiction."""
    names = {module for _, module in _modules()}
    unused = [key for key in FLOORS if not any(_place(name) == key for name in names)]
    assert not unused, f"FLOORS names modules that no longer exist: {unused}"


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """A network importing the dream core (floor 3 -> 5) and the Gymnasium adapter is caught."""
    probe = tmp_path / "probe.py"
    probe.write_text("from elworld.world.dream import DreamWorld\nimport elworld_gym\n")
    problems = _violations([(probe, "elworld.model.probe")])
    assert any("floor 3 -> higher floor 5" in p for p in problems), problems
    assert any("out of reach" in p and "elworld_gym" in p for p in problems), problems
    side = tmp_path / "side.py"
    side.write_text("from elworld.control.agent import Agent\n")
    assert any("side by side" in p for p in _violations([(side, "elworld.eval.side")]))
