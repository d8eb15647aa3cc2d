"""Curation measured against the synthetic world's ground truth (the episode JSON beside the video).

Definitions (written in the report too):
- segment precision / recall: frame-level overlap between the two-person segments found and the
  ground-truth ones (frames with exactly two visible faces, joined and filtered exactly as stage 1
  joins and filters its own).
- der: diarization error rate by the standard definition, (missed + false alarm + speaker
  confusion) / total reference speech, on a 10 ms grid, overlap-aware, with the optimal one-to-one
  mapping of hypothesis to reference speakers (Hungarian), no forgiveness collar. Reference speech
  is the ground truth's speech and backchannel segments (laughter is not speech). The hypothesis is
  the pipeline's final speaker timeline: diarized clusters, with those the host voice model
  recognised joined as one host speaker.
- host_speaker_f1: each diarized segment is host speech in the ground truth when at least half of
  it overlaps the host's reference speech; F1 of the classifier's host / not-host decisions over the
  segments long enough to identify a voice (>= 1 s; the labelled-clip F1 the paper reports).
  host_speaker_f1_all_segments counts every segment including sub-second slivers and
  backchannels; host_speaker_time_f1 weighs every segment by its duration.
- identity_accuracy: on every exported clip frame, each ground-truth visible face of the host or a
  guest that a curated box covers (IoU >= 0.3) counts as correct when the box's role matches.
- crop_containment: share of the ground-truth face boxes of a clip's host and guest (frames where
  that face is visible) lying inside the role's canonical crop window (>= 95% of the box area).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from pipeline.curate.tracking import runs

GRID_S = 0.01
SPEECH_KINDS = ("speech", "backchannel")


def activity_matrix(segments: list[tuple[str, float, float]], duration: float,
                    speakers: list[str]) -> np.ndarray:
    """(frames, speakers) bool on the 10 ms grid."""
    index = {s: i for i, s in enumerate(speakers)}
    matrix = np.zeros((int(np.ceil(duration / GRID_S)) + 1, len(speakers)), bool)
    for speaker, start, end in segments:
        matrix[int(round(start / GRID_S)):int(round(end / GRID_S)), index[speaker]] = True
    return matrix


def diarization_error_rate(reference: list[tuple[str, float, float]],
                           hypothesis: list[tuple[str, float, float]], duration: float) -> dict:
    """Standard DER with optimal speaker mapping; returns the rate and its three components (seconds)."""
    ref_speakers = sorted({s for s, _, _ in reference})
    hyp_speakers = sorted({s for s, _, _ in hypothesis})
    ref = activity_matrix(reference, duration, ref_speakers)
    hyp = activity_matrix(hypothesis, duration, hyp_speakers)
    overlap = ref.T.astype(np.float64) @ hyp.astype(np.float64)  # (R, H) co-active frames
    rows, cols = linear_sum_assignment(-overlap) if overlap.size else ([], [])
    correct = np.zeros(len(ref), np.int64)
    for r, h in zip(rows, cols):
        correct += ref[:, r] & hyp[:, h]
    n_ref, n_hyp = ref.sum(1), hyp.sum(1)
    missed = np.maximum(n_ref - n_hyp, 0).sum() * GRID_S
    false_alarm = np.maximum(n_hyp - n_ref, 0).sum() * GRID_S
    confusion = (np.minimum(n_ref, n_hyp) - correct).sum() * GRID_S
    total = n_ref.sum() * GRID_S
    return {"der": float((missed + false_alarm + confusion) / total) if total else 0.0,
            "missed_s": float(missed), "false_alarm_s": float(false_alarm),
            "confusion_s": float(confusion), "reference_speech_s": float(total)}


def reference_speech(ground_truth: dict) -> list[tuple[str, float, float]]:
    return [(s["person"], s["start"], s["end"]) for s in ground_truth["speaker_segments"] if s["kind"] in SPEECH_KINDS]


def host_speech_fraction(ground_truth: dict, start: float, end: float) -> float:
    """Share of [start, end] covered by the host's reference speech."""
    host = ground_truth["host_id"]
    covered = 0.0
    spans = sorted((s["start"], s["end"]) for s in ground_truth["speaker_segments"]
                   if s["person"] == host and s["kind"] in SPEECH_KINDS)
    cursor = start
    for a, b in spans:
        a, b = max(a, cursor), min(b, end)
        if b > a:
            covered += b - a
            cursor = b
    return covered / max(end - start, 1e-9)


def ground_truth_people_per_frame(ground_truth: dict) -> np.ndarray:
    """(frames,) number of visible faces per source frame."""
    return np.array([sum(1 for face in faces if face["visible"]) for faces in ground_truth["frames"]["faces"]])


def precision_recall(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    tp = float(np.sum(predicted & truth))
    precision = tp / max(float(predicted.sum()), 1.0) if predicted.any() else 0.0
    recall = tp / max(float(truth.sum()), 1.0) if truth.any() else 1.0
    return precision, recall


def f1_score(predicted, truth, weights=None) -> dict:
    """F1 of boolean decisions; with weights (e.g. seconds) a weighted F1."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    w = np.ones(len(predicted)) if weights is None else np.asarray(weights, np.float64)
    tp = float(np.sum(w * (predicted & truth)))
    fp = float(np.sum(w * (predicted & ~truth)))
    fn = float(np.sum(w * (~predicted & truth)))
    if weights is None:
        tp, fp, fn = int(tp), int(fp), int(fn)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall, "tp": tp, "fp": fp, "fn": fn}


def segment_mask(segments: list[tuple[int, int]], frame_count: int) -> np.ndarray:
    mask = np.zeros(frame_count, bool)
    for a, b in segments:
        mask[a:b] = True
    return mask


def ground_truth_segments(ground_truth: dict, fps: float, gap_tolerance_s: float, min_frames: int) -> list[tuple[int, int]]:
    people = ground_truth_people_per_frame(ground_truth)
    return runs(people == 2, max_gap=int(round(gap_tolerance_s * fps)), min_length=min_frames)


def xywh_to_xyxy(box: list[float]) -> np.ndarray:
    x, y, w, h = box
    return np.array([x, y, x + w, y + h], np.float64)


def containment(box: np.ndarray, window: list[float]) -> float:
    """Share of a [x0, y0, x1, y1] box's area inside the square window [x0, y0, side]."""
    wx0, wy0, side = window
    x0, y0 = max(box[0], wx0), max(box[1], wy0)
    x1, y1 = min(box[2], wx0 + side), min(box[3], wy0 + side)
    area = max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)
    return max(0.0, x1 - x0) * max(0.0, y1 - y0) / area
