"""Screen recording cost: an 800x600 window at 20 FPS, as ``elworld record screen`` records it.

Starts its own Xvfb (unless ``--display`` names one) and an animated 800x600
pygame window in its own process, then:

1. per-frame cost of each stage, in a tight loop: grab + BGRA->RGB (mss),
   write the raw frame to disk, and the optional ``--size 192x256`` resize;
2. a real ``record_screen`` session of ``--seconds`` at ``--fps`` (the global
   keyboard listener included): achieved fps, dropped and late frames, lag,
   and the recorder process's CPU time as a share of one core, with and
   without the ``.npz`` build at the end (counted separately);

and prints the CPU it ran on. Needs Xvfb and the screen extra. One run on a
shared machine: the share of a core is the figure to read.

    python benchmarks/screen_capture.py --seconds 10
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from elworld.record.screen import record_screen, resize_frame
from elworld.record.screen_capture import Grabber, find_target

logger = logging.getLogger("screen_capture")

TITLE = "ElWorld capture benchmark"
WINDOW = """
import os, sys
os.environ["PYGAME_HIDE_SUPPORT_PROMPT"] = "1"
import pygame
pygame.display.init()
screen = pygame.display.set_mode((800, 600))
pygame.display.set_caption(sys.argv[1])
clock, t = pygame.time.Clock(), 0
while True:
    pygame.event.pump()
    t += 1
    screen.fill(((t * 3) % 256, 40, 90))
    for i in range(12):  # moving blocks: every frame differs
        pygame.draw.rect(screen, (255, (i * 20) % 256, 0), ((t * (i + 1)) % 800, i * 50, 60, 40))
    pygame.display.flip()
    clock.tick(60)
"""


def cpu_kind() -> str:
    """The CPU model, its vector extensions and what torch dispatches to."""
    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    if shutil.which("lscpu"):
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name":
                model = value.strip()
            elif key.strip() == "Flags":
                flags = set(value.split())
    vector = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile")
              if f in flags]  # fmt: skip
    return (f"{model}; {os.cpu_count()} logical CPUs; flags: {' '.join(vector) or 'n/a'}; "
            f"torch CPU capability: {torch.backends.cpu.get_cpu_capability()}")  # fmt: skip


@contextmanager
def virtual_display(display: str | None) -> Iterator[str]:
    """Use ``display``, or start a private Xvfb and yield its name."""
    if display:
        os.environ["DISPLAY"] = display
        yield display
        return
    if shutil.which("Xvfb") is None:
        raise SystemExit("Xvfb is not installed (apt-get install xvfb), and no --display given")
    read, write = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "1024x768x24", "-nolisten", "tcp", "-noreset"],
        pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(write)
    with os.fdopen(read) as pipe:
        name = ":" + pipe.readline().strip()
    os.environ["DISPLAY"] = name
    try:
        yield name
    finally:
        server.terminate()
        server.wait(timeout=10)


def stage_costs(target, folder: Path, frames: int) -> dict[str, float]:
    """Milliseconds per frame of grab+convert, raw write and the 192x256 resize."""
    grabber = Grabber()
    grabbed = []
    start = time.perf_counter()
    for _ in range(frames):
        grabbed.append(grabber.grab(target))
    grab_ms = (time.perf_counter() - start) / frames * 1000
    grabber.close()
    start = time.perf_counter()
    with open(folder / "raw", "wb") as raw:
        for frame in grabbed:
            raw.write(memoryview(frame).cast("B"))
    write_ms = (time.perf_counter() - start) / frames * 1000
    (folder / "raw").unlink()
    start = time.perf_counter()
    for frame in grabbed:
        resize_frame(frame, (192, 256))
    resize_ms = (time.perf_counter() - start) / frames * 1000
    return {"grab_ms": grab_ms, "write_ms": write_ms, "resize_ms": resize_ms}


def session(target, folder: Path, fps: float, seconds: float, size) -> dict[str, float]:
    """One real ``record_screen`` session; its timing and CPU figures."""
    wall, cpu = time.perf_counter(), time.process_time()
    paths = record_screen(target, folder, fps=fps, duration=seconds, size=size, progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    info = json.loads(paths[0].with_suffix(".json").read_text())
    build = wall - info["duration_s"]  # the .npz build after the last frame
    return {**{k: info[k] for k in ("frames", "achieved_fps", "dropped_frames", "late_frames")},
            "lag_p95_ms": info["jitter_ms"]["lag_p95"], "lag_max_ms": info["jitter_ms"]["lag_max"],
            "cpu_share": cpu / wall, "build_s": build, "mb": paths[0].stat().st_size / 2**20}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="session length (default: 10)")
    parser.add_argument("--fps", type=float, default=20.0, help="target rate (default: 20)")
    parser.add_argument("--frames", type=int, default=100, help="frames per stage timing (100)")
    parser.add_argument("--display", help="an existing X display (default: a private Xvfb)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(f"CPU: {cpu_kind()}")
    with virtual_display(args.display) as display, tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, DISPLAY=display)
        window = subprocess.Popen([sys.executable, "-c", WINDOW, TITLE], env=env)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    target = find_target(window=TITLE)
                    break
                except ValueError:
                    if time.monotonic() > deadline or window.poll() is not None:
                        raise
                    time.sleep(0.2)
            print(f"display {display}, window {target.width}x{target.height} "
                  f"({target.describe()['region']})")  # fmt: skip
            costs = stage_costs(target, Path(tmp), args.frames)
            budget = 1000 / args.fps
            print(f"per frame: grab+RGB {costs['grab_ms']:.2f} ms, write raw "
                  f"{costs['write_ms']:.2f} ms, resize to 192x256 {costs['resize_ms']:.2f} ms "
                  f"(budget {budget:.0f} ms at {args.fps:g} fps)")  # fmt: skip
            for size in (None, (192, 256)):
                folder = Path(tmp) / f"session-{size}"
                r = session(target, folder, args.fps, args.seconds, size)
                label = "800x600 as is" if size is None else "--size 192x256"
                print(f"session {label}: {r['frames']} frames, {r['achieved_fps']:.2f} fps "
                      f"achieved, {r['dropped_frames']} dropped, {r['late_frames']} late, lag p95 "
                      f"{r['lag_p95_ms']:.2f} ms max {r['lag_max_ms']:.2f} ms; recorder CPU "
                      f"{100 * r['cpu_share']:.1f}% of one core (incl. the .npz build, "
                      f"{r['build_s']:.2f} s for {r['mb']:.0f} MB)")  # fmt: skip
                shutil.rmtree(folder)
        finally:
            window.kill()  # SDL turns SIGTERM into a quit event this loop does not read
            window.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
