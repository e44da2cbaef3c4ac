"""The real game beside the dream: ``elworld play --compare doom:SCENARIO``.

``make_real_env("doom:take_cover")`` builds ``elworld.record.doom.DoomEnv``,
a ViZDoom scenario with the same 22-key actions and 256x192 RGB frames as the
dream, so ``PlaySession(dream, real_env=...)`` can step both from the same keys
and show real | dream (F4 re-syncs the dream to the real frame).
"""

from __future__ import annotations

import logging

import gymnasium as gym

logger = logging.getLogger(__name__)

COMPARE_SOURCES = ("doom",)


def parse_compare_spec(spec: str) -> tuple[str, str]:
    """Split ``"doom:take_cover"`` into ``("doom", "take_cover")``.

    Raises:
        ValueError: not ``SOURCE:NAME`` with a known source.
    """
    source, sep, name = spec.partition(":")
    if not sep or not name or source not in COMPARE_SOURCES:
        raise ValueError(
            f"--compare must be SOURCE:NAME with SOURCE one of {', '.join(COMPARE_SOURCES)} "
            f"(e.g. doom:take_cover), got {spec!r}"
        )
    return source, name


def make_real_env(spec: str, *, frame_skip: int | None = 2) -> gym.Env:
    """The real game named by ``spec`` (``doom:SCENARIO``) as a 22-key Gymnasium env.

    ``frame_skip`` game tics per step (ViZDoom runs 35 tics/s; 2 tics is the
    recorders' default, close to the original 20 fps). ``None`` (a world that
    does not record it) takes that default with a warning: the real game may
    then step at another rate than the dream learnt.

    Raises:
        ValueError: a malformed spec or an unknown scenario.
        ImportError: ViZDoom is not installed (the message names the extra).
    """
    _, scenario = parse_compare_spec(spec)
    from elworld.record.doom import DoomEnv, check_scenario

    if frame_skip is None:
        frame_skip = 2
        logger.warning(
            "the world does not record its frame skip; the real game steps %d tics at a time "
            "(the recorders' default), which may not be the rate the dream learnt",
            frame_skip,
        )

    return DoomEnv(check_scenario(scenario), frame_skip=frame_skip)
