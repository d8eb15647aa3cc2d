"""The figures of `f2f evaluate` (matplotlib, PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from f2f.motion import FIELD_INDEX
from pipeline.evaluate.reactivity import RULE_NAMES, TLCC_LAGS


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cfg_sweep(out: Path, result: dict) -> Path:
    """The paper's Fig. 6 for this model: reactivity and lip-sync against the video guidance scale."""
    plt = _plt()
    rows = result["cfg_sweep"]
    lam = [r["lambda_video"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    a.plot(lam, [r["reaction_f1"] for r in rows], "o-", label="F1")
    a.plot(lam, [r["reaction_precision"] for r in rows], "s--", label="precision")
    a.plot(lam, [r["reaction_recall"] for r in rows], "^--", label="recall")
    for rule in RULE_NAMES:
        a.plot(lam, [r["reaction_f1_per_rule"][rule] for r in rows], ":", alpha=0.7, label=f"F1 {rule}")
    a.set(xlabel="lambda_video", ylabel="reaction score", title="Reactivity to guest cues", ylim=(0, 1.05))
    a.legend(fontsize=7)
    b.plot(lam, [r["lipsync_corr"] for r in rows], "o-", label="jawOpen corr. (rendered, best offset)")
    b.plot(lam, [r["jaw_corr_motion"] for r in rows], "s--", label="jawOpen corr. (motion)")
    b.set(xlabel="lambda_video", ylabel="correlation with ground truth", title="Lip-sync", ylim=(0, 1.05))
    b.legend(fontsize=8)
    fig.tight_layout()
    path = out / "cfg_sweep.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def lipsync_offsets(out: Path, result: dict) -> Path:
    plt = _plt()
    curve = result["lipsync_offset_curve"]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([int(k) for k in curve], list(curve.values()), "o-")
    ax.axvline(0, color="grey", lw=0.5)
    ax.set(xlabel="offset (frames; + = video later than ground truth)", ylabel="jawOpen correlation",
           title=f"Lip-sync: best {result['lipsync_corr']} at {result['lipsync_offset_frames']:+d}")
    fig.tight_layout()
    path = out / "lipsync_offsets.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tlcc(out: Path, correlations: dict, rules: dict) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    lags = TLCC_LAGS / 25.0
    for ax, rule in zip(axes, RULE_NAMES):
        for name, style in (("default", "-"), ("audio_only", "--"), ("ground_truth", ":")):
            ax.plot(lags, correlations[name][rule]["corr"], style, label=name)
        r = rules.get(rule)
        if r is not None:
            ax.axvspan(r.lag_min_s, r.lag_max_s, color="green", alpha=0.1)
        ax.set(title=rule, xlabel="lag (s)")
    axes[0].set_ylabel("cross-correlation cue -> response")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = out / "tlcc.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def frames(out: Path, examples: list) -> Path | None:
    """Rows: real host frame, generated frame (same clip instant), renderer on the real motion."""
    if not examples:
        return None
    import cv2

    grid = np.concatenate([np.concatenate(list(column), axis=0) for column in examples], axis=1)
    path = out / "frames.png"
    cv2.imwrite(str(path), np.ascontiguousarray(grid[..., ::-1]))
    return path


def timeline(out: Path, clips, truths, motions: dict, default: float) -> Path | None:
    """The test clip with the most scored cues: guest cues against the host's reaction fields."""
    plt = _plt()
    if not truths:
        return None
    best = int(np.argmax([sum(c.reaction_s is not None for c in t.cues) for t in truths]))
    truth = truths[best]
    t = np.arange(len(truth.host_motion)) / 25.0
    fields = (("pitch", "pitch (nod)"), ("mouthSmileLeft", "smile"), ("roll", "roll (tilt)"), ("yaw", "yaw (look)"))
    fig, axes = plt.subplots(len(fields), 1, figsize=(12, 8), sharex=True)
    colours = {"nod_after_pause": "C0", "smile_back": "C1", "mirror_tilt": "C2", "look_at_speaker": "C3"}
    for ax, (name, label) in zip(axes, fields):
        i = FIELD_INDEX[name]
        ax.plot(t, motions[default][0][best][:, i], label=f"generated (lambda {default:g})")
        ax.plot(t, motions[0.0][0][best][:, i], "--", label="generated (lambda 0)")
        ax.plot(t, clips[best].host_motion[:, i], ":", label="measured host (curated)")
        for cue in truth.cues:
            ax.axvline(cue.time_s, color=colours[cue.rule], alpha=0.5 if cue.reaction_s is not None else 0.15)
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8, loc="upper right")
    axes[0].set_title(f"{clips[best].clip_id}: guest cues (vertical lines) and the host's response fields")
    axes[-1].set_xlabel("clip time (s)")
    fig.tight_layout()
    path = out / "timeline.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_all(out: Path, result: dict, correlations: dict, examples: list, clips, truths, motions, default) -> list[Path]:
    paths = [cfg_sweep(out, result), lipsync_offsets(out, result), tlcc(out, correlations, truths[0].rules),
             frames(out, examples), timeline(out, clips, truths, motions, default)]
    return [p for p in paths if p is not None]
