"""Packaging: the version, the package list, and a wheel that dreams after a regular install.

The slow test is the issue's check end to end: ``python -m build`` makes the sdist
and (from it) the wheel; the wheel goes into a fresh virtualenv that borrows
this interpreter's installed packages (torch, numpy, gymnasium) instead of
downloading them; and a short dream runs from a folder outside the checkout on
the demo world the wheel carries.
"""

from __future__ import annotations

import json
import logging
import os
import site
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import elworld
from elworld.cli import main
from elworld.world import loading

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DEMO_PACKAGE = "elworld_gym.demo_world"
logger = logging.getLogger(__name__)


def test_version_flag_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"elworld {elworld.__version__}"
    # pyproject.toml has no second copy: setuptools reads elworld.__version__.
    assert "version" not in PYPROJECT["project"]
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"] == "elworld.__version__"


def test_pyproject_lists_every_package_and_maps_the_demo_world() -> None:
    from setuptools import find_packages

    config = PYPROJECT["tool"]["setuptools"]
    found = find_packages(
        str(REPO), include=["elworld", "elworld.*", "elworld_gym", "elworld_gym.*"]
    )
    listed = set(config["packages"])
    missing = set(found) - listed
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    assert listed == set(found) | {DEMO_PACKAGE}
    assert config["package-dir"] == {DEMO_PACKAGE: "checkpoints"}
    # Every glob matches a file of the bundled world, and none picks training-only state.
    root = REPO / "checkpoints"
    for pattern in config["package-data"][DEMO_PACKAGE]:
        matches = sorted(root.glob(pattern))
        assert matches, f"package-data glob {pattern!r} matches nothing under {root}"
        assert not [m for m in matches if m.suffix == ".pth" or "_model_checkpoint_" in str(m)]


def test_bundled_root_is_the_package_data_when_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(loading.CHECKPOINTS_ENV_VAR, raising=False)
    packaged = tmp_path / "site-packages" / "elworld_gym" / "demo_world"
    monkeypatch.setattr(loading, "PACKAGED_CHECKPOINTS", packaged)
    # A checkout (or an editable install) has no elworld_gym/demo_world: the repo's checkpoints/.
    assert loading.bundled_checkpoints_root() == loading.CHECKOUT_CHECKPOINTS
    assert loading.CHECKOUT_CHECKPOINTS == REPO / "checkpoints"
    packaged.mkdir(parents=True)
    assert loading.bundled_checkpoints_root() == packaged
    assert loading.default_checkpoints_root() == packaged
    monkeypatch.setenv(loading.CHECKPOINTS_ENV_VAR, str(tmp_path / "mine"))
    assert loading.default_checkpoints_root() == tmp_path / "mine"


# Run by the fresh virtualenv's python from a folder outside the checkout.
DREAM_SCRIPT = textwrap.dedent(
    """
    import importlib.metadata, json, os, sys
    from pathlib import Path

    import gymnasium as gym
    import numpy as np

    import elworld, elworld_gym
    from elworld.checkpoint import CheckpointError
    from elworld.frames import FRAME_HEIGHT, FRAME_WIDTH
    from elworld.world.loading import bundled_checkpoints_root

    env = gym.make("elworld_gym:ElWorldDream-v0")
    end_model = env.unwrapped.world.end_model is not None
    obs, info = env.reset(seed=0)
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert obs.shape == (FRAME_HEIGHT, FRAME_WIDTH, 3) and obs.dtype == np.uint8, obs.shape
    env.close()

    errors = {}
    for name, root in (("missing", sys.argv[1]), ("broken", sys.argv[2])):
        os.environ["ELWORLD_CHECKPOINTS"] = root
        try:
            gym.make("elworld_gym:ElWorldDream-v0")
        except CheckpointError as error:
            errors[name] = str(error)
    print(json.dumps({
        "elworld_gym": elworld_gym.__file__,
        "bundled_root": str(bundled_checkpoints_root()),
        "version": elworld.__version__,
        "metadata_version": importlib.metadata.version("elworld"),
        "obs_shape": list(obs.shape),
        "end_model": end_model,
        "errors": errors,
    }))
    """
)


def _fresh_venv(path: Path) -> Path:
    """A virtualenv at ``path`` that sees this interpreter's site-packages; returns its python.

    ``--system-site-packages`` would expose the base interpreter's packages, not
    this virtualenv's (where torch is), so a ``.pth`` file appends this
    interpreter's site-packages instead: plain path lines, so their own ``.pth``
    files (an editable install of this checkout) are not run there.
    """
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    own = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    borrowed = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(own) / "_elworld_test_borrowed.pth").write_text("\n".join(borrowed) + "\n")
    return python


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ELWORLD_CHECKPOINTS")}
    env.setdefault("SDL_VIDEODRIVER", "dummy")
    return env


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="the check uses a POSIX virtualenv layout")
def test_wheel_installs_and_dreams_outside_the_checkout(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(REPO)],
        capture_output=True,
        text=True,
        env=_clean_env(),
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = dist.glob("elworld-*.whl")
    (sdist,) = dist.glob("elworld-*.tar.gz")
    logger.info(
        "wheel %s: %.2f MB; sdist %.2f MB",
        wheel.name,
        wheel.stat().st_size / 1e6,
        sdist.stat().st_size / 1e6,
    )

    names = set(zipfile.ZipFile(wheel).namelist())
    demo = "elworld_gym/demo_world/"
    # Every kind the checkout bundles, not just the two the dream cannot start without: a
    # wheel without end/ would silently dream with the memory model's end head instead.
    kinds = sorted(p.parent.name for p in (REPO / "checkpoints").glob("*/best_model"))
    assert {"vision", "memory", "end", "control"} <= set(kinds), kinds
    for kind in kinds:
        for file in ("model.safetensors", "config.json", "training_info.json", "README.md"):
            assert f"{demo}{kind}/best_model/{file}" in names, f"{kind}/best_model/{file}"
    assert f"{demo}start_frames.npz" in names
    assert not [n for n in names if n.endswith(".pth") or "_model_checkpoint_" in n]
    sources = {
        p.relative_to(REPO).as_posix()
        for d in ("elworld", "elworld_gym")
        for p in (REPO / d).rglob("*.py")
    }
    assert not sources - names, f"modules missing from the wheel: {sorted(sources - names)}"

    python = _fresh_venv(tmp_path / "venv")
    install = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--force-reinstall",
            "--disable-pip-version-check",
            "--quiet",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        env=_clean_env(),
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "broken").mkdir(parents=True)  # a root without vision/ and memory/
    missing = elsewhere / "no-such-root"
    run = subprocess.run(
        [str(python), "-c", DREAM_SCRIPT, str(missing), str(elsewhere / "broken")],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    site_packages = Path(result["elworld_gym"]).resolve().parents[1]
    assert site_packages.is_relative_to((tmp_path / "venv").resolve()), result
    assert Path(result["bundled_root"]) == site_packages / "elworld_gym" / "demo_world"
    assert result["version"] == result["metadata_version"] == elworld.__version__
    assert result["end_model"], "the installed dream did not load the bundled episode-end model"
    assert result["errors"]["missing"].startswith(
        f"checkpoints root {missing} (from $ELWORLD_CHECKPOINTS) does not exist"
    )
    assert result["errors"]["broken"].startswith(
        f"no vision checkpoint at {elsewhere / 'broken' / 'vision' / 'best_model'}"
    )

    cli = str(python.parent / "elworld")
    version = subprocess.run(
        [cli, "--version"], cwd=elsewhere, capture_output=True, text=True, env=_clean_env()
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"elworld {elworld.__version__}"
    # The CLI on the bundled world: demo (its rollout video) and play (no display: dummy driver).
    for args in (
        ["demo", "--headless", "--steps", "3", "--out", "dream.mp4"],
        ["play", "--seed", "0", "--max-frames", "3", "--fps", "1000"],
    ):
        command = subprocess.run(
            [cli, *args],
            cwd=elsewhere,
            capture_output=True,
            text=True,
            env=_clean_env(),
            timeout=300,
        )
        assert command.returncode == 0, f"elworld {' '.join(args)}: {command.stderr[-3000:]}"
    assert (elsewhere / "dream.mp4").stat().st_size > 0


def _imported_distributions() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Third-party distributions the sources import: (at module level, anywhere), by file."""
    import ast
    import importlib.metadata

    dists = importlib.metadata.packages_distributions()
    own = {"elworld", "elworld_gym", "conftest"}
    top_level: dict[str, set[str]] = {}
    anywhere: dict[str, set[str]] = {}
    for source in sorted(p for d in ("elworld", "elworld_gym") for p in (REPO / d).rglob("*.py")):
        tree = ast.parse(source.read_text())
        module_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                if root in sys.stdlib_module_names or root in own:
                    continue
                for dist in dists.get(root, [root]):
                    key = dist.lower().replace("_", "-")
                    anywhere.setdefault(key, set()).add(source.name)
                    if id(node) in module_level:
                        top_level.setdefault(key, set()).add(source.name)
    return top_level, anywhere


def _requirement_names(requirements: list[str]) -> set[str]:
    import re

    return {
        re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements
    }


def test_pyproject_declares_every_imported_dependency() -> None:
    """The wheel test installs with --no-deps, so this is where a missing dependency shows."""
    required = _requirement_names(PYPROJECT["project"]["dependencies"])
    optional = set().union(
        *(_requirement_names(r) for r in PYPROJECT["project"]["optional-dependencies"].values())
    )
    top_level, anywhere = _imported_distributions()
    assert {"torch", "numpy", "gymnasium", "tqdm", "safetensors"} <= set(top_level)
    missing = {d: sorted(f) for d, f in top_level.items() if d not in required}
    assert not missing, f"imported when elworld is imported, not in dependencies: {missing}"
    undeclared = {d: sorted(f) for d, f in anywhere.items() if d not in required | optional}
    assert not undeclared, f"imported but in no dependency list of pyproject.toml: {undeclared}"
