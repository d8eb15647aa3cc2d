"""Frame-to-frame face tracking with persistent IDs (stage 1), and the per-frame detection table.

A track continues while each new frame has a box overlapping its last box (IoU); it survives up
to `max_missed` frames without one (detector dropouts) and ends otherwise, so a camera cut starts
new tracks. IDs are never reused within an episode.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two [x0, y0, x1, y1] boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class DetectionTable:
    """Every face detection of an episode: row i is (frame, x0, y0, x1, y1, score, track)."""

    frame: np.ndarray   # (M,) int
    boxes: np.ndarray   # (M, 4) float32 x0, y0, x1, y1 in source pixels
    score: np.ndarray   # (M,) float32
    track: np.ndarray   # (M,) int, persistent track id
    frame_count: int

    def rows_of_frame(self) -> list[np.ndarray]:
        """Row indices per frame.  # frame_count lists"""
        order = np.argsort(self.frame, kind="stable")
        starts = np.searchsorted(self.frame[order], np.arange(self.frame_count + 1))
        return [order[starts[f]:starts[f + 1]] for f in range(self.frame_count)]

    def to_npz(self) -> dict[str, np.ndarray]:
        return {"frame": self.frame, "boxes": self.boxes, "score": self.score, "track": self.track,
                "frame_count": np.array(self.frame_count)}

    @classmethod
    def from_npz(cls, data) -> "DetectionTable":
        return cls(data["frame"], data["boxes"], data["score"], data["track"], int(data["frame_count"]))


@dataclass
class _Track:
    track_id: int
    last_box: np.ndarray
    last_frame: int


@dataclass
class IouTracker:
    """Greedy IoU association of each frame's boxes to live tracks."""

    min_iou: float = 0.3
    max_missed: int = 12  # frames a track may go undetected (~0.5 s at 25 fps)
    _live: list[_Track] = field(default_factory=list)
    _next_id: int = 0

    def update(self, frame_index: int, boxes: np.ndarray) -> np.ndarray:
        """(n, 4) boxes of one frame -> (n,) track ids."""
        self._live = [t for t in self._live if frame_index - t.last_frame <= self.max_missed + 1]
        ids = np.full(len(boxes), -1, dtype=np.int64)
        pairs = sorted(((box_iou(t.last_box, box), ti, bi) for ti, t in enumerate(self._live)
                        for bi, box in enumerate(boxes)), reverse=True)
        used_tracks: set[int] = set()
        for overlap, ti, bi in pairs:
            if overlap < self.min_iou:
                break
            if ti in used_tracks or ids[bi] >= 0:
                continue
            used_tracks.add(ti)
            ids[bi] = self._live[ti].track_id
            self._live[ti].last_box, self._live[ti].last_frame = boxes[bi], frame_index
        for bi in np.flatnonzero(ids < 0):
            ids[bi] = self._next_id
            self._live.append(_Track(self._next_id, boxes[bi], frame_index))
            self._next_id += 1
        return ids


def track_presence(table: DetectionTable, max_gap: int) -> np.ndarray:
    """(frame_count,) number of tracks present per frame, gaps of ≤ max_gap frames filled."""
    count = np.zeros(table.frame_count, np.int32)
    for track_id in np.unique(table.track):
        frames = np.sort(table.frame[table.track == track_id])
        present = np.zeros(table.frame_count, bool)
        present[frames] = True
        for a, b in zip(frames[:-1], frames[1:]):
            if 1 < b - a <= max_gap + 1:
                present[a:b] = True
        count += present
    return count


def runs(mask: np.ndarray, max_gap: int = 0, min_length: int = 1) -> list[tuple[int, int]]:
    """[start, end) runs of True, joining runs separated by ≤ max_gap False frames."""
    spans: list[list[int]] = []
    start = None
    for i, value in enumerate(np.append(mask, False)):
        if value and start is None:
            start = i
        elif not value and start is not None:
            if spans and start - spans[-1][1] <= max_gap:
                spans[-1][1] = i
            else:
                spans.append([start, i])
            start = None
    return [(a, b) for a, b in spans if b - a >= min_length]
