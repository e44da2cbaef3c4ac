"""ViZDoom, the reference game: scenarios, the 22-key -> Button table, a Gymnasium env.

Our actions are the original 22-key layout (``elworld.keys``). Each scenario
maps a few of those keys to ViZDoom ``Button``s; the keys a scenario has no
button for are never pressed by the recorders and are recorded as 0, so the
``act`` column of an unmapped key is always 0 in that scenario's episodes.

The rule (one key per button, so a recorded key always means one thing):

=========  ===================================================================
key        button (when the scenario has it)
=========  ===================================================================
up         MOVE_FORWARD
down       MOVE_BACKWARD
left       TURN_LEFT, or MOVE_LEFT when the scenario cannot turn
right      TURN_RIGHT, or MOVE_RIGHT when the scenario cannot turn
a / d      MOVE_LEFT / MOVE_RIGHT (strafe) when left/right already turn
z          ATTACK
x          USE
1 / 3      SELECT_WEAPON1 / SELECT_WEAPON3
=========  ===================================================================

``ctrl`` (Doom's classic fire key) is deliberately not a second ATTACK key:
two keys driving one button would give the world model two different actions
with the same effect. Resulting tables for the shipped scenarios::

    take_cover          left=MOVE_LEFT right=MOVE_RIGHT
    basic               left=MOVE_LEFT right=MOVE_RIGHT z=ATTACK
    defend_the_center   left=TURN_LEFT right=TURN_RIGHT z=ATTACK
    health_gathering    up=MOVE_FORWARD left=TURN_LEFT right=TURN_RIGHT
    deadly_corridor     up down left right (turn) a d (strafe) z
    freedoom1           up down left right a d z x 1 3

(``describe_key_tables()`` prints them all.) Timing: ViZDoom runs at 35 tics
per second and one recorded step is ``frame_skip`` tics, so ``frame_skip=2``
is 17.5 steps per game second, close to the original 20 fps recordings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from elworld.keys import KEY_INDEX, KEY_NAMES, NUM_KEYS, check_action

FRAME_SHAPE = (192, 256, 3)  # ViZDoom's RES_256X192, natively the model's frame size
DOOM_TICS_PER_SECOND = 35

# Binary buttons of each supported scenario, as its shipped .cfg lists them
# (delta buttons dropped). We set them explicitly, so the .cfg only supplies the
# map, rewards and timeouts.
SCENARIO_BUTTONS: dict[str, tuple[str, ...]] = {
    "basic": ("MOVE_LEFT", "MOVE_RIGHT", "ATTACK"),
    "simpler_basic": ("MOVE_LEFT", "MOVE_RIGHT", "ATTACK"),
    "rocket_basic": ("MOVE_LEFT", "MOVE_RIGHT", "ATTACK"),
    "take_cover": ("MOVE_LEFT", "MOVE_RIGHT"),
    "defend_the_center": ("TURN_LEFT", "TURN_RIGHT", "ATTACK"),
    "defend_the_line": ("TURN_LEFT", "TURN_RIGHT", "ATTACK"),
    "predict_position": ("TURN_LEFT", "TURN_RIGHT", "ATTACK"),
    "health_gathering": ("TURN_LEFT", "TURN_RIGHT", "MOVE_FORWARD"),
    "health_gathering_supreme": ("TURN_LEFT", "TURN_RIGHT", "MOVE_FORWARD"),
    "my_way_home": ("TURN_LEFT", "TURN_RIGHT", "MOVE_FORWARD", "MOVE_LEFT", "MOVE_RIGHT"),
    "deadly_corridor": (
        "MOVE_LEFT", "MOVE_RIGHT", "ATTACK", "MOVE_FORWARD", "MOVE_BACKWARD", "TURN_LEFT",
        "TURN_RIGHT",
    ),
    "deathmatch": (
        "ATTACK", "MOVE_RIGHT", "MOVE_LEFT", "MOVE_BACKWARD", "MOVE_FORWARD", "TURN_RIGHT",
        "TURN_LEFT", "SELECT_WEAPON1", "SELECT_WEAPON3",
    ),
    "freedoom1": (
        "ATTACK", "USE", "MOVE_RIGHT", "MOVE_LEFT", "MOVE_BACKWARD", "MOVE_FORWARD",
        "TURN_RIGHT", "TURN_LEFT", "SELECT_WEAPON1", "SELECT_WEAPON3",
    ),
    "freedoom2": (
        "ATTACK", "USE", "MOVE_RIGHT", "MOVE_LEFT", "MOVE_BACKWARD", "MOVE_FORWARD",
        "TURN_RIGHT", "TURN_LEFT", "SELECT_WEAPON1", "SELECT_WEAPON3",
    ),
}  # fmt: skip
SCENARIOS: tuple[str, ...] = tuple(sorted(SCENARIO_BUTTONS))

# Key -> buttons it may drive, most preferred first; processed in this order and
# each button goes to the first key that claims it.
KEY_BUTTON_PREFERENCES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("up", ("MOVE_FORWARD",)),
    ("down", ("MOVE_BACKWARD",)),
    ("left", ("TURN_LEFT", "MOVE_LEFT")),
    ("right", ("TURN_RIGHT", "MOVE_RIGHT")),
    ("a", ("MOVE_LEFT",)),
    ("d", ("MOVE_RIGHT",)),
    ("z", ("ATTACK",)),
    ("x", ("USE",)),
    ("1", ("SELECT_WEAPON1",)),
    ("3", ("SELECT_WEAPON3",)),
)

_DOOM_EXTRA_HINT = "pip install 'elworld[doom]'"


def import_vizdoom() -> Any:
    """Import ``vizdoom``, or raise ``ImportError`` naming the extra to install."""
    try:
        import vizdoom
    except ImportError as error:
        raise ImportError(
            f"recording Doom needs ViZDoom, which is not installed: {_DOOM_EXTRA_HINT}"
        ) from error
    return vizdoom


def check_scenario(scenario: str) -> str:
    """Return ``scenario`` if supported, else raise ``ValueError`` listing the known ones."""
    if scenario not in SCENARIO_BUTTONS:
        raise ValueError(f"unknown Doom scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    return scenario


@dataclass(frozen=True)
class DoomKeyMapping:
    """Which of the 22 keys drive which ViZDoom buttons in one scenario.

    ``keys[i]`` (an index into ``KEY_NAMES``) drives ``buttons[i]``; the game is
    created with exactly ``buttons`` as its available buttons, in this order.
    """

    scenario: str
    keys: tuple[int, ...]
    buttons: tuple[str, ...]

    @classmethod
    def for_scenario(cls, scenario: str) -> DoomKeyMapping:
        """The mapping for ``scenario`` by the module's rule (``ValueError`` if unknown)."""
        available = SCENARIO_BUTTONS[check_scenario(scenario)]
        claimed: set[str] = set()
        pairs: list[tuple[int, str]] = []
        for key, choices in KEY_BUTTON_PREFERENCES:
            button = next((b for b in choices if b in available and b not in claimed), None)
            if button is not None:
                claimed.add(button)
                pairs.append((KEY_INDEX[key], button))
        pairs.sort()  # key order, so tables read like the layout
        return cls(scenario, tuple(k for k, _ in pairs), tuple(b for _, b in pairs))

    @property
    def key_mask(self) -> np.ndarray:
        """``(22,)`` uint8, 1 for the keys this scenario uses."""
        mask = np.zeros(NUM_KEYS, dtype=np.uint8)
        mask[list(self.keys)] = 1
        return mask

    def table(self) -> dict[str, str]:
        """``{key name: button name}``, e.g. ``{"left": "MOVE_LEFT", ...}``."""
        return {KEY_NAMES[k]: b for k, b in zip(self.keys, self.buttons)}

    def mask(self, action: np.ndarray) -> np.ndarray:
        """``action`` (22,) with the keys this scenario does not use set to 0."""
        return check_action(action) * self.key_mask

    def to_buttons(self, action: np.ndarray) -> list[int]:
        """The ViZDoom button states (0/1, in ``buttons`` order) for a 22-key action."""
        action = check_action(action)
        return [int(action[k]) for k in self.keys]


def describe_key_tables() -> str:
    """One line per scenario: ``name  key=BUTTON ...`` (for ``--help``)."""
    width = max(len(s) for s in SCENARIOS)
    lines = []
    for scenario in SCENARIOS:
        table = DoomKeyMapping.for_scenario(scenario).table()
        lines.append(f"  {scenario:<{width}}  " + " ".join(f"{k}={b}" for k, b in table.items()))
    return "\n".join(lines)


def make_doom_game(scenario: str, *, seed: int | None = None, visible: bool = False) -> Any:
    """Create and ``init()`` a ``vizdoom.DoomGame`` for ``scenario``.

    Renders RGB24 at 256x192 (the model's frame size, no resize needed), in
    synchronous PLAYER mode, without sound, with the scenario's mapped buttons
    (``DoomKeyMapping.for_scenario(scenario).buttons``) as available buttons.
    The ViZDoom window is hidden unless ``visible``. ``seed`` seeds the game's
    RNG (a fixed seed and fixed actions replay the same frames).

    Raises ``ValueError`` for an unknown scenario and ``ImportError`` naming
    the ``doom`` extra when ViZDoom is missing.
    """
    mapping = DoomKeyMapping.for_scenario(scenario)
    vzd = import_vizdoom()
    game = vzd.DoomGame()
    game.load_config(os.path.join(vzd.scenarios_path, f"{scenario}.cfg"))
    game.set_screen_resolution(vzd.ScreenResolution.RES_256X192)
    game.set_screen_format(vzd.ScreenFormat.RGB24)
    game.set_window_visible(visible)
    game.set_sound_enabled(False)
    game.set_audio_buffer_enabled(False)
    game.set_automap_buffer_enabled(False)
    game.set_depth_buffer_enabled(False)
    game.set_labels_buffer_enabled(False)
    game.set_mode(vzd.Mode.PLAYER)
    game.set_available_buttons([getattr(vzd.Button, b) for b in mapping.buttons])
    if seed is not None:
        game.set_seed(_check_seed(seed))
    game.init()
    return game


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    return int(seed)


class DoomEnv(gym.Env):
    """A ViZDoom scenario as a Gymnasium env with 22-key actions.

    - Action space: ``MultiBinary(22)``, the ``elworld.keys`` layout; only the
      scenario's mapped keys (``mapping.keys``) have an effect.
    - Observation space: ``Box(0, 255, (192, 256, 3), uint8)`` RGB frames.
    - Step: the buttons are held for ``frame_skip`` tics (35 tics = 1 s);
      the reward is the scenario's, summed over those tics.
    - Episode end: ``terminated`` when the player dies, ``truncated`` on the
      scenario's timeout (recorded as ``truncated``, not ``done``: a timeout
      is not a death). ViZDoom has no frame after the end, so the last step
      returns a copy of the previous frame.
    - ``reset(seed=s)`` reseeds the game: the same seed and actions give the
      same frames. ``render()`` (``render_mode="rgb_array"``) returns the frame.

    Arguments: ``scenario`` (see ``SCENARIOS``), ``frame_skip`` (tics per step),
    ``visible`` (show ViZDoom's own window), ``render_mode``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": DOOM_TICS_PER_SECOND / 2}

    def __init__(
        self,
        scenario: str = "take_cover",
        *,
        frame_skip: int = 2,
        visible: bool = False,
        render_mode: str | None = None,
    ) -> None:
        if isinstance(frame_skip, bool) or not isinstance(frame_skip, int) or frame_skip < 1:
            raise ValueError(f"frame_skip must be an int >= 1 (tics per step), got {frame_skip!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.scenario = scenario
        self.mapping = DoomKeyMapping.for_scenario(scenario)
        self.frame_skip = frame_skip
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": DOOM_TICS_PER_SECOND / frame_skip}
        self.observation_space = gym.spaces.Box(0, 255, FRAME_SHAPE, dtype=np.uint8)
        self.action_space = gym.spaces.MultiBinary(NUM_KEYS)
        self.game = make_doom_game(scenario, visible=visible)
        self._frame = np.zeros(FRAME_SHAPE, dtype=np.uint8)

    def _read_frame(self) -> np.ndarray:
        state = self.game.get_state()
        if state is None:  # the episode is over: no new frame
            return self._frame.copy()
        # ViZDoom hands out a fresh (192, 256, 3) array per state, so no copy is needed.
        self._frame = np.asarray(state.screen_buffer, dtype=np.uint8)
        return self._frame

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new episode (reseeding the game when ``seed`` is given)."""
        super().reset(seed=seed)
        if seed is not None:
            self.game.set_seed(_check_seed(seed))
        self.game.new_episode()
        return self._read_frame(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Hold the mapped buttons of the 22-key ``action`` for ``frame_skip`` tics."""
        reward = self.game.make_action(self.mapping.to_buttons(action), self.frame_skip)
        finished = self.game.is_episode_finished()
        terminated = finished and self.game.is_player_dead()
        return self._read_frame(), float(reward), terminated, finished and not terminated, {}

    def render(self) -> np.ndarray | None:
        """The current frame for ``render_mode="rgb_array"``, else ``None``."""
        return self._frame.copy() if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        """Shut the game down."""
        self.game.close()
