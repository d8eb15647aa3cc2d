"""Reactivity: did the host respond to each guest cue within the rule's lag window?

Responses are detected in a host motion track (generated, or the ground truth's own) by one detector
per rule, each a score over time whose local peaks above a threshold are response onsets:
  nod_after_pause  pitch rises and comes back: p[t+7] - (p[t] + p[t+14]) / 2            >= 4 deg
  smile_back       mean smile of the next 0.25-0.4 s minus the last 0.2 s                >= 0.12
  mirror_tilt      roll change over 0.45 s (signed)                                       >= 2 deg
  look_at_speaker  yaw change over 0.3 s (signed)                                         >= 5 deg
Only onsets while the host listens count (the rules apply only then; the ground truth's speaking
flags), away from the clip's edges.

Scoring, per rule and over all rules (micro):
- scored cues: cues of the clip's guest that the host reacted to in the ground truth, that the guest
  video shows (guest visible in >= half the frames of [cue - 0.5 s, cue + 0.3 s]), and whose
  ground-truth response the same detector finds (a response that changes nothing visible, e.g. a
  look at the guest he already looks at, cannot be scored);
- a detection matching a scored cue's window [cue + lag_min - 0.12 s, cue + lag_max + 0.2 s] (with
  the ground truth response's sign for tilt and look) is a true positive (one per cue); one matching
  only another cue's window (another guest's, an unobservable one) is ignored; any other is a false
  positive. recall = TP / scored cues, precision = TP / (TP + FP).
Time-lagged cross-correlation: per rule, the cue impulses against the response score (rectified,
listening frames only) at lags -1 s .. +2 s; the video model's peak should sit inside the lag window.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from f2f.motion import FIELD_INDEX
from pipeline.evaluate.ground_truth import ClipTruth, Cue

FPS = 25.0
RULE_NAMES = ("nod_after_pause", "smile_back", "mirror_tilt", "look_at_speaker")
THRESHOLDS = {"nod_after_pause": 4.0, "smile_back": 0.12, "mirror_tilt": 2.0, "look_at_speaker": 5.0}
SIGNED = {"mirror_tilt", "look_at_speaker"}
TOLERANCE_BEFORE_S = 0.12
TOLERANCE_AFTER_S = 0.2
EDGE_START_S = 1.0  # cues earlier in a clip have too little guest context
OBSERVE_WINDOW_S = (-0.5, 0.3)
TLCC_LAGS = np.arange(-25, 51)


def _shift(x: np.ndarray, k: int) -> np.ndarray:
    """x[t + k] with edge values held."""
    idx = np.clip(np.arange(len(x)) + k, 0, len(x) - 1)
    return x[idx]


def response_scores(motion: np.ndarray) -> dict[str, np.ndarray]:
    """(N, 15) motion -> per rule a score per frame (response starting at that frame)."""
    pitch = motion[:, FIELD_INDEX["pitch"]]
    smile = 0.5 * (motion[:, FIELD_INDEX["mouthSmileLeft"]] + motion[:, FIELD_INDEX["mouthSmileRight"]])
    roll = motion[:, FIELD_INDEX["roll"]]
    yaw = motion[:, FIELD_INDEX["yaw"]]
    ahead = np.mean([_shift(smile, k) for k in range(6, 11)], axis=0)
    before = np.mean([_shift(smile, -k) for k in range(0, 5)], axis=0)
    return {
        "nod_after_pause": _shift(pitch, 7) - 0.5 * (pitch + _shift(pitch, 14)),
        "smile_back": ahead - before,
        "mirror_tilt": _shift(roll, 11) - roll,
        "look_at_speaker": _shift(yaw, 7) - yaw,
    }


@dataclass
class Detection:
    rule: str
    frame: int
    sign: int
    strength: float


def detect(motion: np.ndarray, listening: np.ndarray, first: int = 0, last: int | None = None) -> list[Detection]:
    """Response onsets in frames [first, last) while `listening` (N,) holds."""
    last = len(motion) if last is None else last
    out = []
    for rule, score in response_scores(motion).items():
        magnitude = np.abs(score) if rule in SIGNED else score
        threshold = THRESHOLDS[rule]
        for t in range(max(first, 0), min(last, len(motion))):
            if magnitude[t] < threshold or not listening[t]:
                continue
            lo, hi = max(0, t - 6), min(len(motion), t + 7)
            if magnitude[t] < magnitude[lo:hi].max() or np.argmax(magnitude[lo:hi]) + lo != t:
                continue  # one onset per peak
            out.append(Detection(rule, t, int(np.sign(score[t])), float(magnitude[t])))
    return out


def listening_mask(speaking: np.ndarray) -> np.ndarray:
    """Frames t whose response (onset t .. t + 0.6 s) and 0.2 s before fall in no host speech."""
    busy = speaking.astype(float)
    out = np.ones(len(speaking), bool)
    for k in range(-5, 16):
        out &= _shift(busy, k) < 0.5
    return out


def window_frames(cue: Cue, lag_min: float, lag_max: float) -> tuple[float, float]:
    return ((cue.time_s + lag_min - TOLERANCE_BEFORE_S) * FPS, (cue.time_s + lag_max + TOLERANCE_AFTER_S) * FPS)


@dataclass
class ScoredCue:
    cue: Cue
    sign: int  # the ground truth response's sign (tilt, look), else 0
    clip: int


@dataclass
class ClipCues:
    """The cues of one clip sorted into scored and don't-care, and the frames detections may fall in."""

    scored: list[ScoredCue]
    dont_care: list[Cue]
    listening: np.ndarray  # (N,) bool
    first: int
    last: int
    ground_truth_found: dict[str, list[int]] = field(default_factory=dict)  # rule -> [found, reacted]


def clip_cues(truth: ClipTruth, guest_visible: np.ndarray, clip_index: int) -> ClipCues:
    n = len(truth.host_motion)
    listening = listening_mask(truth.host_speaking)
    first = int(EDGE_START_S * FPS)
    gt = detect(truth.host_motion, listening)
    scored, dont_care = [], list(truth.other_cues)
    found = {rule: [0, 0] for rule in RULE_NAMES}
    for cue in truth.cues:
        rule = truth.rules[cue.rule]
        lo, hi = window_frames(cue, rule.lag_min_s, rule.lag_max_s)
        a = int((cue.time_s + OBSERVE_WINDOW_S[0]) * FPS)
        b = int((cue.time_s + OBSERVE_WINDOW_S[1]) * FPS)
        seen = guest_visible[max(a, 0):max(min(b, n), 0)]
        inside = cue.time_s * FPS >= first and hi < n
        if cue.reaction_s is None or not inside or len(seen) == 0 or seen.mean() < 0.5:
            dont_care.append(cue)
            continue
        match = [d for d in gt if d.rule == cue.rule and lo <= d.frame <= hi]
        found[cue.rule][1] += 1
        if not match:
            dont_care.append(cue)
            continue
        found[cue.rule][0] += 1
        scored.append(ScoredCue(cue, match[0].sign if cue.rule in SIGNED else 0, clip_index))
    return ClipCues(scored, dont_care, listening, first, n, found)


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    cues: int = 0

    def add(self, other: "Counts") -> None:
        self.tp, self.fp, self.cues = self.tp + other.tp, self.fp + other.fp, self.cues + other.cues

    def figures(self) -> dict:
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        recall = self.tp / self.cues if self.cues else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
                "true_positives": self.tp, "false_positives": self.fp, "cues": self.cues}


def score_clip(motion: np.ndarray, cues: ClipCues, rules: dict) -> dict[str, Counts]:
    """Counts per rule for one generated track of one clip."""
    counts = {rule: Counts() for rule in RULE_NAMES}
    detections = detect(motion, cues.listening, cues.first, cues.last)
    used: set[int] = set()
    for s in cues.scored:
        counts[s.cue.rule].cues += 1
    for d in sorted(detections, key=lambda d: d.frame):
        hit = None
        for i, s in enumerate(cues.scored):
            if i in used or s.cue.rule != d.rule:
                continue
            lo, hi = window_frames(s.cue, rules[s.cue.rule].lag_min_s, rules[s.cue.rule].lag_max_s)
            if lo <= d.frame <= hi and (s.sign == 0 or s.sign == d.sign):
                hit = i
                break
        if hit is not None:
            used.add(hit)
            counts[d.rule].tp += 1
            continue
        ignored = any(c.rule == d.rule and window_frames(c, rules[c.rule].lag_min_s, rules[c.rule].lag_max_s)[0]
                      <= d.frame <= window_frames(c, rules[c.rule].lag_min_s, rules[c.rule].lag_max_s)[1]
                      for c in cues.dont_care + [s.cue for s in cues.scored])
        if not ignored:
            counts[d.rule].fp += 1
    return counts


def summarise(per_rule: dict[str, Counts]) -> dict:
    total = Counts()
    for c in per_rule.values():
        total.add(c)
    return {**total.figures(), "per_rule": {rule: c.figures() for rule, c in per_rule.items()}}


def tlcc(motions: list[np.ndarray], cues: list[ClipCues], truths: list[ClipTruth]) -> dict[str, dict]:
    """Per rule: Pearson correlation of cue impulses (observable cues the host reacted to) with the
    rectified response score at each lag of TLCC_LAGS (frames; positive = response after the cue)."""
    out = {}
    for rule in RULE_NAMES:
        impulses, responses = [], []
        for motion, clip, truth in zip(motions, cues, truths):
            n = len(motion)
            impulse = np.zeros(n)
            for s in clip.scored:
                if s.cue.rule == rule:
                    impulse[min(int(round(s.cue.time_s * FPS)), n - 1)] = 1.0
            score = response_scores(motion)[rule]
            response = (np.abs(score) if rule in SIGNED else np.maximum(score, 0.0)) * clip.listening
            impulses.append(impulse)
            responses.append(response)
        curve = []
        for lag in TLCC_LAGS:
            a, b = [], []
            for impulse, response in zip(impulses, responses):
                n = len(impulse)
                if lag >= 0:
                    a.append(impulse[: n - lag]), b.append(response[lag:])
                else:
                    a.append(impulse[-lag:]), b.append(response[: n + lag])
            a, b = np.concatenate(a), np.concatenate(b)
            corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
            curve.append(corr)
        curve = np.nan_to_num(np.asarray(curve))
        peak = int(np.argmax(curve))
        out[rule] = {"lags_frames": TLCC_LAGS.tolist(), "corr": np.round(curve, 4).tolist(),
                     "peak_corr": round(float(curve[peak]), 4), "peak_lag_s": round(float(TLCC_LAGS[peak] / FPS), 3)}
    return out
