"""``elworld record screen``: a real window under Xvfb, real X key events, the real recorder.

The end-to-end test starts its own Xvfb, a small pygame window (its own
process) that fills one cell per ElWorld key while that key is held, and
``elworld record screen --window TITLE`` as a subprocess; it sends key presses
with ``xdotool`` (XTEST) and checks the recorded frames, the alignment of
``act`` and the file against the project's episode reader. It skips only
when Xvfb or xdotool (``apt-get install xvfb xdotool``) or the ``screen``
extra are missing. The other tests cover bad input, signals and the loop's
bookkeeping (the last with an in-process frame source, no display needed).

Alignment checked (see ``elworld.record.screen``): ``act[t]`` holds every key
held from the grab of ``obs[t]`` to the grab of ``obs[t+1]``. A key pressed
between two grabs is therefore in ``act`` one frame before the window can show
it; the window shows it 1 frame later (2 when its redraw straddles a grab), and
shows a release 0-1 frames after ``act``'s last 1. Tolerance: one frame at
each transition beyond that, for a busy machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import elworld
from elworld.cli import main
from elworld.data.episodes import inspect_episode, iter_frames, read_labels
from elworld.keys import KEY_INDEX, KEY_NAMES, NUM_KEYS
from elworld.record.screen import record_screen
from elworld.record.screen_capture import CaptureTarget, ScreenError, find_target, parse_region
from elworld.record.screen_keys import Keyboard, KeyMap, event_key_name
from elworld.record.writer import write_streamed_episode

TITLE = "ElWorld screen test"
CELL, COLUMNS, ROWS = 40, 8, 3
FPS = 20
HOLD = 0.4  # seconds each key combination is held
# ElWorld key -> X keysym for xdotool.
KEYSYMS = {"z": "z", "x": "x", "left": "Left", "up": "Up", "ctrl": "Control_L", "1": "1",
           "enter": "Return", "f8": "F8"}  # fmt: skip
SEQUENCE = [(), ("z",), ("z", "left"), ("left",), (), ("up", "ctrl"), ("1",), (),
            ("enter", "x"), ("f8",), (), ("z",), ()]  # fmt: skip


def colour(i: int) -> tuple[int, int, int]:
    """Key ``i``'s colour in the test window (never black, all distinct)."""
    return (60 + (37 * i) % 190, 60 + (91 * i) % 190, 60 + (151 * i) % 190)


WINDOW_SCRIPT = f"""
import os, sys
os.environ["PYGAME_HIDE_SUPPORT_PROMPT"] = "1"
import pygame
from elworld.keys import NUM_KEYS, action_from_pressed
CELL, COLUMNS, ROWS = {CELL}, {COLUMNS}, {ROWS}
COLOURS = {[colour(i) for i in range(NUM_KEYS)]}
pygame.display.init()
screen = pygame.display.set_mode((CELL * COLUMNS, CELL * ROWS))
pygame.display.set_caption({TITLE!r})
clock = pygame.time.Clock()
ready = False
while True:
    for event in pygame.event.get():
        if event.type == pygame.QUIT:
            sys.exit(0)
    held = action_from_pressed(pygame.key.get_pressed())
    screen.fill((0, 0, 0))
    for i in range(NUM_KEYS):
        if held[i]:
            x, y = (i % COLUMNS) * CELL, (i // COLUMNS) * CELL
            if i % 2:  # odd keys: a disc, even keys: a square
                pygame.draw.circle(screen, COLOURS[i], (x + CELL // 2, y + CELL // 2), CELL // 3)
            else:
                pygame.draw.rect(screen, COLOURS[i], (x + 6, y + 6, CELL - 12, CELL - 12))
    pygame.display.flip()
    if not ready:
        print("ready", pygame.display.get_wm_info()["window"], flush=True)
        ready = True
    clock.tick(100)
"""


def subprocess_env(display: str) -> dict[str, str]:
    """The environment for child processes: this checkout's elworld, the test display."""
    root = str(Path(elworld.__file__).resolve().parents[1])
    env = dict(os.environ, DISPLAY=display, PYTHONPATH=os.pathsep.join(
        [root, *filter(None, [os.environ.get("PYTHONPATH")])]))  # fmt: skip
    env.pop("SDL_VIDEODRIVER", None)
    return env


@pytest.fixture(scope="module")
def xdisplay() -> Iterator[str]:
    """A private Xvfb display (``:N``); skips when Xvfb, xdotool or the screen extra are missing."""
    missing = [tool for tool in ("Xvfb", "xdotool") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install -y xvfb xdotool)")
    absent = [m for m in ("mss", "pynput", "Xlib") if importlib.util.find_spec(m) is None]
    if absent:  # find_spec: pynput cannot even be imported before a display exists
        pytest.skip(f"the screen extra is not installed ({', '.join(absent)}): "
                    "pip install -e '.[screen]'")  # fmt: skip
    read, write = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "1024x768x24", "-nolisten", "tcp",
         "-noreset"],
        pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    if not number:
        server.kill()
        pytest.fail("Xvfb did not report a display number")
    display = f":{number}"
    saved = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display  # for the in-process calls (find_target, main)
    try:
        yield display
    finally:
        if saved is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = saved
        server.terminate()
        server.wait(timeout=10)


def xdotool(display: str, *args: str) -> None:
    subprocess.run(["xdotool", *args], check=True, env=dict(os.environ, DISPLAY=display))


def start_recorder(display: str, out: Path, *args: str) -> subprocess.Popen:
    """``elworld record screen`` in a subprocess; returns once it is grabbing frames."""
    process = subprocess.Popen(
        [sys.executable, "-m", "elworld", "record", "screen", "--out", str(out), "--no-progress",
         "--fps", str(FPS), *args],
        env=subprocess_env(display), cwd=out.parent, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not list(out.glob(".tmp-*.frames.raw")):
        if process.poll() is not None:
            pytest.fail(f"the recorder exited early:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the recorder did not start grabbing within 60 s")
        time.sleep(0.05)
    return process


def runs(column: np.ndarray) -> list[tuple[int, int]]:
    """``(first, last)`` frame of each run of 1s in a 0/1 column."""
    padded = np.concatenate([[0], column.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2])]


def shown_keys(obs: np.ndarray) -> np.ndarray:
    """``(N, 22)`` bool: the keys the window drew in each frame (the pixel at each cell's centre).

    Fails when a centre is neither black nor its key's colour: not the test window's drawing.
    """
    shown = np.zeros((len(obs), NUM_KEYS), dtype=bool)
    for i in range(NUM_KEYS):
        y, x = (i // COLUMNS) * CELL + CELL // 2, (i % COLUMNS) * CELL + CELL // 2
        pixels = obs[:, y, x].astype(int)  # (N, 3)
        lit = np.all(pixels == colour(i), axis=1)
        dark = np.all(pixels == 0, axis=1)
        assert np.all(lit | dark), f"cell of {KEY_NAMES[i]!r} shows {pixels[~(lit | dark)][:3]}"
        shown[:, i] = lit
    return shown


def test_records_a_real_window_and_real_keys(xdisplay: str, tmp_path: Path) -> None:
    window = subprocess.Popen(
        [sys.executable, "-c", WINDOW_SCRIPT], env=subprocess_env(xdisplay),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    out = tmp_path / "rec"
    try:
        line = window.stdout.readline().split()
        assert line[:1] == ["ready"], f"the test window did not start: {line}"
        wid = line[1]
        xdotool(xdisplay, "mousemove", "--sync", str(CELL * COLUMNS // 2), str(CELL * ROWS // 2))
        xdotool(xdisplay, "windowfocus", "--sync", wid)
        recorder = start_recorder(xdisplay, out, "--window", TITLE)
        held: set[str] = set()
        for step in SEQUENCE:
            for key in held - set(step):
                xdotool(xdisplay, "keyup", KEYSYMS[key])
            for key in set(step) - held:
                xdotool(xdisplay, "keydown", KEYSYMS[key])
            held = set(step)
            time.sleep(HOLD)
        xdotool(xdisplay, "key", "F10")  # the stop key: saves the episode in flight
        log, _ = recorder.communicate(timeout=60)
    finally:
        window.terminate()
        window.wait(timeout=10)
    assert recorder.returncode == 0, log
    files = sorted(out.glob("*.npz"))
    assert [f.name for f in files] == ["screen_0001.npz"], log
    assert not list(out.glob(".tmp-*")), "temporary files left behind"
    sidecar = json.loads(files[0].with_suffix(".json").read_text())
    assert sidecar["ended"] == "stopped"
    assert sidecar["capture"]["title"] == TITLE
    assert sidecar["source"] == "screen" and sidecar["fps"] == FPS
    assert sidecar["dropped_frames"] <= 3, sidecar
    assert 0.8 * FPS < sidecar["achieved_fps"] < 1.1 * FPS, sidecar

    # The project's reader takes the file as it is, at the window's size.
    info = inspect_episode(files[0])
    assert (info.height, info.width) == (CELL * ROWS, CELL * COLUMNS)
    labels = read_labels(files[0])
    assert not labels["done"].any() and not labels["rew"].any()
    obs = np.concatenate(list(iter_frames(files[0], height=info.height, width=info.width)))
    act = labels["act"]
    assert len(obs) == len(act) == sidecar["frames"] >= len(SEQUENCE) * HOLD * FPS * 0.8

    shown = shown_keys(obs)
    hold_frames = HOLD * FPS
    for key in sorted({k for step in SEQUENCE for k in step}):
        i = KEY_INDEX[key]
        # Each maximal hold of the key in SEQUENCE, as (first step, last step).
        sent = runs(np.array([key in step for step in SEQUENCE]))
        act_runs, shown_runs = runs(act[:, i]), runs(shown[:, i])
        assert len(act_runs) == len(shown_runs) == len(sent), (key, act_runs, shown_runs, sent)
        for (a, b), (a2, b2), (s, e) in zip(act_runs, shown_runs, sent):
            assert abs((b - a) - (e - s + 1) * hold_frames) <= 2, (key, (a, b), (s, e))
            assert 1 <= a2 - a <= 3, f"{key}: act rises at {a}, the window shows it at {a2}"
            assert 0 <= b2 - b <= 2, f"{key}: act falls after {b}, the window after {b2}"
    other = [i for i in range(NUM_KEYS) if KEY_NAMES[i] not in KEYSYMS]
    assert not act[:, other].any() and not shown[:, other].any()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_episode_in_flight(xdisplay: str, tmp_path: Path, signum: int) -> None:
    out = tmp_path / "rec"
    out.mkdir()
    (out / "screen_0004.npz").write_bytes(b"")  # numbering resumes after existing files
    recorder = start_recorder(xdisplay, out, "--region", "10,20,64,48")
    time.sleep(0.5)
    recorder.send_signal(signum)
    log, _ = recorder.communicate(timeout=60)
    assert recorder.returncode == 0, log
    path = out / "screen_0005.npz"
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["ended"] == "interrupted"
    assert sidecar["capture"] == {"kind": "region", "region": [10, 20, 64, 48]}
    info = inspect_episode(path)
    assert info.num_frames >= 5 and (info.height, info.width) == (48, 64)
    assert not list(out.glob(".tmp-*"))


def test_kill_9_loses_only_the_episode_in_flight(xdisplay: str, tmp_path: Path) -> None:
    out = tmp_path / "rec"
    out.mkdir()
    recorder = start_recorder(xdisplay, out, "--region", "0,0,32,32", "--episode-seconds", "0.3")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
        (out / "screen_0002.json").exists() and list(out.glob(".tmp-*.frames.raw"))
    ):
        time.sleep(0.01)
    recorder.kill()
    recorder.wait(timeout=10)
    done = sorted(p.name for p in out.glob("screen_*.npz"))
    assert len(done) >= 2 and all(inspect_episode(out / name).num_frames == 6 for name in done)
    assert list(out.glob(".tmp-*.frames.raw")), "expected the killed episode's temporary file"
    recorder = start_recorder(xdisplay, out, "--region", "0,0,32,32", "--duration", "0.3")
    recorder.communicate(timeout=60)
    assert recorder.returncode == 0
    assert not list(out.glob(".tmp-*")), "the stale temporary file was not removed"
    assert len(list(out.glob("screen_*.npz"))) == len(done) + 1


def test_bad_targets_name_what_to_fix(xdisplay: str, tmp_path: Path, caplog) -> None:
    with pytest.raises(
        ValueError, match="no visible window's title contains 'Elsword'.*list-windows"
    ):
        find_target(window="Elsword")
    with pytest.raises(ValueError, match="not inside the screen 0,0,1024,768"):
        find_target(region=(1000, 700, 100, 100))
    with pytest.raises(ValueError, match="no visible window has id 12345"):
        find_target(window_id=12345)
    assert find_target(region=(0, 0, 1024, 768)).monitor["width"] == 1024
    caplog.set_level("ERROR")
    code = main(["record", "screen", "--region=-5,0,10,10", "--out", str(tmp_path / "r")])
    assert code == 2
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        "region -5,0,10,10 (X,Y,W,H) is not inside the screen 0,0,1024,768: move the window "
        "fully onto the screen or pick a region inside it"
    ]
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").iterdir())


def test_no_display_and_missing_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("XDG_SESSION_TYPE", "tty")
    with pytest.raises(ScreenError, match="no X display.*Xvfb"):
        find_target(region=(0, 0, 10, 10))
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    with pytest.raises(ScreenError, match="Wayland"):
        find_target(region=(0, 0, 10, 10))
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setitem(sys.modules, "mss", None)  # import mss fails
    with pytest.raises(ImportError, match=r"elworld\[screen\]"):
        find_target(region=(0, 0, 10, 10))


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match="X,Y,W,H"):
        parse_region("1,2,3")
    with pytest.raises(ValueError, match="W and H > 0"):
        parse_region("1,2,0,4")
    with pytest.raises(ValueError, match="exactly one"):
        find_target(window="a", region=(0, 0, 1, 1))
    with pytest.raises(ValueError, match="'jump' is not an ElWorld key"):
        KeyMap({"jump": "space"})
    with pytest.raises(ValueError, match="mapped to both 'z' and 'x'"):
        KeyMap({"x": "q", "z": "q"})
    with pytest.raises(ValueError, match="--stop-key 'z' is also the game key 'z'"):
        Keyboard(KeyMap(), {"stop": "z"})


def test_keymap_file_and_event_names(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"z": "J", "up": ["w", "up"], "esc": []}))
    keymap = KeyMap.from_json(path)
    assert keymap.physical["z"] == ("j",) and keymap.index["w"] == KEY_INDEX["up"]
    assert "esc" not in keymap.index and keymap.index["x"] == KEY_INDEX["x"]
    assert keymap.physical["w"] == (), "w went to up; the skill key w has none left"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        KeyMap.from_json(path)

    class Event:  # the attributes pynput's key events carry
        def __init__(self, name=None, vk=None, char=None):
            self.name, self.vk, self.char = name, vk, char

    assert event_key_name(Event(name="ctrl_l")) == "ctrl_l"
    assert event_key_name(Event(vk=0x5A, char="\x1a")) == "z"  # Ctrl+Z on Windows
    assert event_key_name(Event(vk=0x31, char="!")) == "1"
    assert event_key_name(Event(char="Q")) == "q"


def test_keyboard_keeps_a_tap_shorter_than_a_frame() -> None:
    keyboard = Keyboard(KeyMap(), {"stop": "f10", "pause": "f9", "split": "f11"})
    keyboard.press("z")
    keyboard.release("z")
    keyboard.press("left")
    first, second = keyboard.sample(), keyboard.sample()
    assert set(np.flatnonzero(first)) == {KEY_INDEX["z"], KEY_INDEX["left"]}
    assert set(np.flatnonzero(second)) == {KEY_INDEX["left"]}
    keyboard.press("f10")
    keyboard.press("f10")  # auto-repeat: still one command
    assert keyboard.take_commands() == ["stop"] and keyboard.take_commands() == []
    assert not keyboard.sample()[KEY_INDEX["f8"]]


class ScriptedScreen:
    """A frame source for the loop's bookkeeping: frame k is filled with k; keys at set grabs."""

    def __init__(self, keyboard: Keyboard, events: dict[int, list[tuple[str, str]]],
                 slow: dict[int, float] | None = None) -> None:  # fmt: skip
        self.keyboard, self.events, self.slow, self.count = keyboard, events, slow or {}, 0

    def grab(self, target: CaptureTarget) -> np.ndarray:
        for action, key in self.events.get(self.count, []):
            getattr(self.keyboard, action)(key)
        time.sleep(self.slow.get(self.count, 0.0))
        frame = np.full((target.height, target.width, 3), self.count % 256, dtype=np.uint8)
        self.count += 1
        return frame

    def close(self) -> None:
        pass


def test_loop_alignment_stop_and_drops(tmp_path: Path) -> None:
    keyboard = Keyboard(KeyMap(), {"stop": "f10", "pause": "f9", "split": "f11"})
    # z goes down during grab 3 and up during grab 6; grab 5 takes 3.4 periods; F10 at grab 9.
    events = {3: [("press", "z")], 6: [("release", "z")], 9: [("press", "f10")]}
    screen = ScriptedScreen(keyboard, events, slow={5: 3.4 / FPS})
    target = CaptureTarget(0, 0, 8, 4, kind="region")
    paths = record_screen(target, tmp_path, fps=FPS, keyboard=keyboard, grabber=screen,
                          progress=False)  # fmt: skip
    assert [p.name for p in paths] == ["screen_0001.npz"]
    sidecar = json.loads(paths[0].with_suffix(".json").read_text())
    assert sidecar["ended"] == "stopped" and sidecar["dropped_frames"] == 2
    obs = np.concatenate(list(iter_frames(paths[0], height=4, width=8)))
    assert obs[:, 0, 0, 0].tolist() == list(range(10)), "a frame was repeated or lost"
    act = read_labels(paths[0])["act"]
    assert np.flatnonzero(act[:, KEY_INDEX["z"]]).tolist() == [3, 4, 5]
    assert act.sum() == 3


class ScriptedKeyboard(Keyboard):
    """A keyboard whose keys go up and down at set ticks (the loop samples it once a tick)."""

    def __init__(self, events: dict[int, list[tuple[str, str]]]) -> None:
        super().__init__(KeyMap(), {"stop": "f10", "pause": "f9", "split": "f11"})
        self.events, self.ticks = events, 0

    def sample(self) -> np.ndarray:
        for action, key in self.events.get(self.ticks, []):
            getattr(self, action)(key)
        self.ticks += 1
        return super().sample()


def test_split_by_time_and_by_key_and_pause(tmp_path: Path) -> None:
    keyboard = ScriptedKeyboard({5: [("press", "f11")], 6: [("release", "f11")],
                                 7: [("press", "f9")], 8: [("release", "f9")],
                                 9: [("press", "f9")], 14: [("press", "f10")]})  # fmt: skip
    target = CaptureTarget(0, 0, 4, 4, kind="region")
    paths = record_screen(target, tmp_path, fps=FPS, keyboard=keyboard,
                          grabber=ScriptedScreen(keyboard, {}), episode_seconds=3 / FPS,
                          progress=False)  # fmt: skip
    ended = [json.loads(p.with_suffix(".json").read_text())["ended"] for p in paths]
    firsts = [int(next(iter_frames(p, height=4, width=4))[0, 0, 0, 0]) for p in paths]
    # ticks 0-2 (3 s worth), 3-4 (F11), 5-6 (F9 pauses), 7-8 paused, 9-11, 12-13 (F10)
    assert ended == ["split", "split", "paused", "split", "stopped"], ended
    assert [inspect_episode(p).num_frames for p in paths] == [3, 2, 2, 3, 2]
    assert firsts == [0, 3, 5, 7, 10], "frames were grabbed while paused"


def test_streamed_episode_matches_the_frames(tmp_path: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    raw = tmp_path / "frames.raw"
    raw.write_bytes(frames.tobytes())
    act = np.zeros((5, NUM_KEYS), np.uint8)
    act[2, 3] = 1
    path = write_streamed_episode(tmp_path / "e.npz", raw, (6, 7), act, meta={"ended": "split"})
    with np.load(path) as data:
        assert np.array_equal(data["obs"], frames) and np.array_equal(data["act"], act)
    assert json.loads(path.with_suffix(".json").read_text())["frames"] == 5
    with pytest.raises(ValueError, match="need"):
        write_streamed_episode(tmp_path / "f.npz", raw, (6, 8), act)


def test_a_slow_episode_build_drops_no_frame_of_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import elworld.record.screen as screen_module

    write = screen_module.write_streamed_episode

    def slow_write(*args, **kwargs):
        time.sleep(5 / FPS)  # a big episode's .npz takes a while to build
        return write(*args, **kwargs)

    monkeypatch.setattr(screen_module, "write_streamed_episode", slow_write)
    keyboard = ScriptedKeyboard({7: [("press", "f10")]})
    target = CaptureTarget(0, 0, 4, 4, kind="region")
    paths = record_screen(target, tmp_path, fps=FPS, keyboard=keyboard,
                          grabber=ScriptedScreen(keyboard, {}), episode_seconds=4 / FPS,
                          progress=False)  # fmt: skip
    sidecars = [json.loads(p.with_suffix(".json").read_text()) for p in paths]
    assert [s["frames"] for s in sidecars] == [4, 3]
    assert [s["dropped_frames"] for s in sidecars] == [0, 0], "the build gap was counted as drops"


def test_screen_recordings_give_the_world_its_rate(tmp_path: Path) -> None:
    from elworld.data import recording_provenance

    keyboard = ScriptedKeyboard({3: [("press", "f10")]})
    target = CaptureTarget(0, 0, 4, 4, kind="region")
    paths = record_screen(target, tmp_path, fps=25, keyboard=keyboard,
                          grabber=ScriptedScreen(keyboard, {}), progress=False)  # fmt: skip
    info = recording_provenance(paths)
    assert info["source"] == "screen" and info["steps_per_second"] == 25.0
    assert info["keys"]["ctrl"] == ["ctrl", "ctrl_l", "ctrl_r"]
