"""Playing and watching dreams: ``elworld play``, ``elworld rollout``, ``elworld demo``.

- ``window``: ``PlaySession``, the interactive pygame loop (HUD, help, F-key
  controls, recording), optionally beside the real game (``compare_doom``).
- ``rollout``: headless dreams and real | dream | difference comparisons.
- ``video``: ``write_video`` / ``VideoRecorder`` (MP4 via imageio-ffmpeg, GIF via Pillow).
- ``policies``: who holds the keys in a rollout (random, sticky, a keys file).

pygame is imported only when a window opens.
"""

from __future__ import annotations

from elworld.play.policies import KeySequencePolicy, load_key_sequence, make_policy
from elworld.play.rollout import compare_frames, compare_video, dream_frames, rollout_video
from elworld.play.video import VideoRecorder, write_video
from elworld.play.window import CONTROLS, PlayConfig, PlaySession

__all__ = [
    "CONTROLS",
    "KeySequencePolicy",
    "PlayConfig",
    "PlaySession",
    "VideoRecorder",
    "compare_frames",
    "compare_video",
    "dream_frames",
    "load_key_sequence",
    "make_policy",
    "rollout_video",
    "write_video",
]
