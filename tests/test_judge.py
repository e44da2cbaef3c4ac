"""The dream as a judge of policies: fixed policies and the dream-vs-real table's arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from elworld.control.evaluate import build_report, markdown_report, spearman, stats
from elworld.keys import KEY_INDEX
from elworld.policy import fixed_policy

LEFT, RIGHT = KEY_INDEX["left"], KEY_INDEX["right"]


def _held(policy, steps: int) -> list[int]:
    """The single key index held at each step (-1 for none)."""
    out = []
    for _ in range(steps):
        action = policy(None)
        assert action.sum() <= 1
        out.append(int(action.argmax()) if action.any() else -1)
    return out


def test_fixed_policies_press_the_worlds_keys_on_their_schedule() -> None:
    assert _held(fixed_policy("left", [LEFT, RIGHT]), 5) == [LEFT] * 5
    assert _held(fixed_policy("right", [LEFT, RIGHT]), 5) == [RIGHT] * 5
    alternate = fixed_policy("alternate", [LEFT, RIGHT])
    assert _held(alternate, 20) == [LEFT] * 8 + [RIGHT] * 8 + [LEFT] * 4
    alternate.reset(3)
    assert _held(alternate, 2) == [LEFT, LEFT]  # reset restarts the cycle
    z, x = KEY_INDEX["z"], KEY_INDEX["x"]  # a world recorded with other keys
    assert _held(fixed_policy("alternate", [z, x], period=2), 4) == [z, z, x, x]
    with pytest.raises(ValueError, match="two keys"):
        fixed_policy("left", [LEFT])
    with pytest.raises(ValueError, match="unknown fixed policy"):
        fixed_policy("up", [LEFT, RIGHT])


def test_spearman_on_known_ranks() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # one swapped neighbour pair of four: 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # ties share their mean rank: ranks (1.5, 1.5, 3) vs (1, 2, 3)
    assert spearman([5, 5, 9], [1, 2, 3]) == pytest.approx(
        np.corrcoef([1.5, 1.5, 3], [1, 2, 3])[0, 1]
    )
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="one length"):
        spearman([1, 2], [1, 2, 3])


def _entry(lengths: list[int]) -> dict:
    return stats([float(n) for n in lengths], lengths, max_steps=500)


def test_judge_table_from_known_lengths() -> None:
    real = {"none": _entry([40, 50]), "left": _entry([45, 47]), "random": _entry([80, 100])}
    dream = {"none": _entry([44, 46]), "left": _entry([60, 60]), "random": _entry([85, 95])}
    report = build_report(real, dream, {})
    assert report["length_ratio"] == pytest.approx({"none": 1.0, "left": 60 / 46, "random": 1.0})
    assert report["lengths_within_25pct"] == {"none": True, "left": False, "random": True}
    # one policy 60/46 too long, two right: exp(mean |log ratio|) = (60/46) ** (1/3)
    assert report["length_factor_off"] == pytest.approx((60 / 46) ** (1 / 3))
    # real order random > left > none; dream random > left > none: the same ranks
    assert report["ranking"]["spearman"] == pytest.approx(1.0)
    assert report["ranking"]["spearman_met"] is True
    assert report["judge_met"] is False  # "left" is 30% too long in the dream
    dream["left"] = _entry([50, 52])  # 51 / 46: within 25%; now none (45) < left (51) < random
    report = build_report(real, dream, {})
    assert report["judge_met"] is True
    dream["none"] = _entry([200, 200])  # the dream ranks "none" first: rho = -0.5
    report = build_report(real, dream, {})
    assert report["ranking"]["spearman"] == pytest.approx(-0.5)
    # two policies too long (45 real / 200 dream, 46 / 51), one right (90 / 90)
    assert report["length_factor_off"] == pytest.approx(
        math.exp((math.log(200 / 45) + math.log(51 / 46)) / 3)
    )
    assert not report["ranking"]["spearman_met"] and not report["judge_met"]


def test_judge_verdict_in_the_markdown() -> None:
    real = {"none": _entry([40]), "random": _entry([80])}
    dream = {"none": _entry([41]), "random": _entry([79])}
    facts = dict(real_env="doom:take_cover", agent="a", episodes=1, seed=0, frame_skip=4,
                 dream_episodes=1, max_steps=500, world={"end": True})  # fmt: skip
    text = markdown_report(build_report(real, dream, facts))
    assert "Spearman 1.00" in text
    assert "2 of 2 policies' dream lengths within 25%" in text and "met." in text
    # "random" is too short (79 for 80): it counts as much as too long
    assert f"off by a factor of {(80 / 79) ** 0.5 * (41 / 40) ** 0.5:.2f}" in text
