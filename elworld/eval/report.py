"""The markdown report of ``elworld eval`` (``eval.md``)."""

from __future__ import annotations

import math
from typing import Any

from elworld.eval.idm_scores import IDM_SCORES
from elworld.keys import KEY_NAMES
from elworld.model.idm import (
    LABELS,
)


def _head_lines(name: str, head: dict[str, Any]) -> list[str]:
    """Report rows for the end or reward head: only figures a constant prediction would not reach.

    The reward head's error is shown against the best constant's (the mean
    reward); its precision / recall only when the recorded steps are not all
    on one side of the threshold (in take_cover every step pays ~4, so "always
    a reward" would score 1.00 / 1.00 there).
    """
    lines = []
    one_sided = False
    if "constant_mse" in head:
        lines.append(
            f"| {name.replace('_', ' ')} MSE (best constant) | {head['mse']:.4g} ({head['constant_mse']:.4g}) |"
        )
        one_sided = head["actual"] in (0, head["steps"])
    if not one_sided:
        lines.append(
            f"| {name.replace('_', ' ')} precision / recall | {_fmt(head['precision'])} / {_fmt(head['recall'])} ({head['predicted']} predicted, {head['actual']} actual) |"
        )
    return lines


def _fmt(value: float) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.2f}"
    )


def markdown_report(results: dict[str, Any]) -> str:
    """The results as markdown tables (what model cards quote)."""
    v = results["vision"]
    lines = [
        f"Evaluated on {results['episodes']} episodes ({v['frames']} frames).",
        "",
        "Memory passes: temperature {temperature} for PSNR (0 = argmax), guidance {guidance}, "
        "precision {precision}.".format(
            **{"guidance": 1.0, "precision": "fp32", **results["config"]}
        ),
        "",
        "| vision | value |",
        "|---|---|",
        f"| reconstruction PSNR (dB) | {_fmt(v['recon_psnr'])} |",
        f"| reconstruction SSIM | {v['recon_ssim']:.3f} |",
        f"| codes used (share of codebook) | {v['codes_used_share']:.3f} |",
        f"| code perplexity | {v['code_perplexity']:.1f} |",
    ]
    m = results.get("memory")
    if m:
        lines += [
            "",
            "| memory | value |",
            "|---|---|",
            f"| teacher-forced next-token accuracy | {m['next_token_acc']:.3f} |",
            f"| teacher-forced 1-step PSNR (dB) | {_fmt(m['teacher_forced_psnr'])} |",
            f"| controllability delta-PSNR at h={m['controllability']['horizon']} (dB) | {_fmt(m['controllability']['delta_psnr'])} |",
        ]
        for name in ("end_head", "reward_head"):
            if name in m:
                lines += _head_lines(name, m[name])
        lines += [
            "",
            "| horizon | dream PSNR | copy-last PSNR | dream - copy-last (+/- s.e. over episodes) | reconstruction ceiling | starts |",
            "|---|---|---|---|---|---|",
        ]
        for h, row in m["rollout_psnr"].items():
            gain = (
                f"{_fmt(row['dream'] - row['copy_last'])} +/- {_fmt(row.get('gain_se', math.nan))}"
            )
            lines.append(
                f"| {h} | {_fmt(row['dream'])} | {_fmt(row['copy_last'])} | {gain} | {_fmt(row['reconstruction'])} | {row['starts']} |"
            )
        if "against_baseline" in m:
            lines += ["", *_baseline_lines(m["against_baseline"])]
        if "idm" in m:
            lines += ["", *_idm_lines(m["idm"])]
    if e := results.get("end_model"):
        lines += [
            "",
            "| episode-end model | value |",
            "|---|---|",
            f"| NLL per step (best constant hazard) | {e['nll']:.4f} ({e['constant_nll']:.4f}) |",
            f"| mean hazard at real ends / elsewhere | {e['hazard_at_ends']:.3f} / {e['hazard_elsewhere']:.4f} |",
            f"| ends expected (summed hazard) / real | {e['expected_ends']:.1f} / {e['ends']:.0f} |",
        ]
    return "\n".join(lines) + "\n"


def _baseline_lines(against: dict[str, Any]) -> list[str]:
    """This world's dream - copy-last minus the baseline world's, paired by episode."""
    lines = [
        f"Against the baseline {against['baseline']} (memory {against['baseline_memory']}): "
        "dream - copy-last PSNR, this world minus the baseline, per episode then averaged.",
        "",
        "| horizon | difference (dB) | s.e. over episodes | episodes |",
        "|---|---|---|---|",
    ]
    for h, row in against["horizons"].items():
        lines.append(f"| {h} | {row['difference']:+.2f} | {_fmt(row['se'])} | {row['episodes']} |")
    return lines


def _idm_lines(idm: dict[str, Any]) -> list[str]:
    """The IDM controllability table and which keys it scored."""
    keys = idm["scored_keys"]
    lines = [
        f"| IDM controllability | macro-F1 | {' | '.join(f'F1 {k}' for k in keys)} | windows |",
        "|---|---|" + "---|" * len(keys) + "---|",
    ]
    for name, label in IDM_SCORES.items():
        row = idm[name]
        per_key = " | ".join(_fmt(row["per_key"][k]) for k in keys)
        lines.append(f"| {label} | {_fmt(row['macro_f1'])} | {per_key} | {row['windows']} |")
    left_out = [
        f"{', '.join(idm['left_out_keys'][field])} ({why})"
        for field, why in (
            ("never_pressed", "never pressed in the evaluated episodes"),
            ("not_scored_by_idm", "not scored by the IDM"),
        )
        if idm["left_out_keys"][field]
    ]
    others = len(KEY_NAMES) - len(keys) - sum(len(v) for v in idm["left_out_keys"].values())
    left_out.append(f"{others} other keys (never pressed, not scored)")
    lines += [
        "",
        f"IDM scored keys: {', '.join(keys)}; left out: {'; '.join(left_out)}. "
        f"Dreams: {idm['horizon']} steps at temperature {idm['temperature']} from real context "
        f"(frame skip {idm['frame_skip']}).",
        "",
        f"IDM labels: {idm.get('labels', LABELS)}.",
    ]
    return lines
