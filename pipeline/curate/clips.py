"""Stages 5 and 6: clips from the identity-tracked segments, their filtering and canonical crops.

Stage 5 (ClipFilter): a segment longer than `max_clip_s` is cut into equal clips; a clip is kept
when the guest is seen in >= 70% of its first 64 frames and the host in >= 85% of the next 81,
and the host's crop is not more than 10x the guest's in area.
Stage 6 (CanonicalCropper): per role the dominant trajectory (the box with the largest IoU with
the previous pick when several compete), an interquartile-range filter over centres and sizes,
one window enclosing the inliers, width and height x1.3, shifted 20% down, square.
Both tracks are kept over the whole clip with per-frame visibility.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.curate.identity import SegmentIdentities
from pipeline.curate.manifest import GUEST_WINDOW_FRAMES, HOST_WINDOW_FRAMES, MIN_CLIP_FRAMES
from pipeline.curate.tracking import box_iou

CROP_ENLARGE = 1.3
CROP_SHIFT_DOWN = 0.2


@dataclass(frozen=True)
class ClipConfig:
    max_clip_s: float = 20.0
    min_guest_coverage: float = 0.70
    min_host_coverage: float = 0.85
    max_area_ratio: float = 10.0


@dataclass
class ClipCandidate:
    clip_id: str
    start_s: float
    frame_count: int
    host_boxes: list[list[float] | None]
    guest_boxes: list[list[float] | None]
    guest_identity: str
    host_window: list[float] | None = None   # [x0, y0, side]
    guest_window: list[float] | None = None
    guest_coverage: float = 0.0
    host_coverage: float = 0.0
    area_ratio: float = 0.0
    rejected: str | None = None              # the reason, or None when kept


def dominant_trajectory(candidates: list[list[list[float]]]) -> list[list[float] | None]:
    """Per frame candidate boxes -> one box per frame (or None): the one overlapping the last pick
    most; after a gap or a cut (no overlap), the largest."""
    picks: list[list[float] | None] = []
    previous = None
    for boxes in candidates:
        if not boxes:
            picks.append(None)
            continue
        if previous is not None:
            overlaps = [box_iou(np.array(previous), np.array(b)) for b in boxes]
            if max(overlaps) > 0:
                previous = boxes[int(np.argmax(overlaps))]
                picks.append(previous)
                continue
        previous = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        picks.append(previous)
    return picks


def iqr_inliers(boxes: np.ndarray, k: float = 1.5) -> np.ndarray:
    """(n, 4) boxes -> (n,) bool: centre x/y, width and height all inside the IQR fences."""
    features = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                         boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
    q1, q3 = np.percentile(features, 25, axis=0), np.percentile(features, 75, axis=0)
    spread = q3 - q1
    return np.all((features >= q1 - k * spread) & (features <= q3 + k * spread), axis=1)


def canonical_window(boxes: list[list[float] | None]) -> list[float] | None:
    """Square crop window [x0, y0, side] enclosing the inlier boxes, x1.3, shifted 20% down."""
    present = np.array([b for b in boxes if b is not None], np.float64).reshape(-1, 4)
    if len(present) == 0:
        return None
    inliers = present[iqr_inliers(present)] if len(present) >= 4 else present
    x0, y0 = inliers[:, 0].min(), inliers[:, 1].min()
    x1, y1 = inliers[:, 2].max(), inliers[:, 3].max()
    width, height = (x1 - x0) * CROP_ENLARGE, (y1 - y0) * CROP_ENLARGE
    centre_x, centre_y = (x0 + x1) / 2, (y0 + y1) / 2 + CROP_SHIFT_DOWN * (y1 - y0)
    side = max(width, height)
    return [round(centre_x - side / 2, 1), round(centre_y - side / 2, 1), round(side, 1)]


class ClipFilter:
    """Cuts segments into clips and applies the coverage and zoom-mismatch rules (stage 5)."""

    def __init__(self, config: ClipConfig = ClipConfig()):
        self.config = config

    def clips(self, episode: str, segments: list[SegmentIdentities]) -> list[ClipCandidate]:
        out = []
        for s_index, segment in enumerate(segments):
            for c_index, (a, b) in enumerate(self._spans(segment.frame_count)):
                out.append(self._candidate(f"{episode}_s{s_index:03d}_c{c_index}", segment, a, b))
        return out

    def _spans(self, frame_count: int) -> list[tuple[int, int]]:
        if frame_count < MIN_CLIP_FRAMES:
            return []
        pieces = max(1, math.ceil(frame_count / (self.config.max_clip_s * 25)))
        edges = np.linspace(0, frame_count, pieces + 1).round().astype(int)
        return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]

    def _candidate(self, clip_id: str, segment: SegmentIdentities, a: int, b: int) -> ClipCandidate:
        frames = segment.frames[a:b]
        host = dominant_trajectory([[f.box for f in faces if f.role == "host"] for faces in frames])
        guest_faces = [[f for f in faces if f.role.startswith("guest_")] for faces in frames]
        guest = dominant_trajectory([[f.box for f in faces] for faces in guest_faces])
        identities = [next(f.role for f in faces if f.box is box) for faces, box in zip(guest_faces, guest) if box]
        guest_identity = max(set(identities), key=identities.count) if identities else "none"
        clip = ClipCandidate(clip_id, round(segment.start_s + a / 25.0, 4), b - a, host, guest, guest_identity)
        clip.guest_coverage = float(np.mean([g is not None for g in guest[:GUEST_WINDOW_FRAMES]]))
        clip.host_coverage = float(np.mean([h is not None for h in host[GUEST_WINDOW_FRAMES:MIN_CLIP_FRAMES]]))
        clip.host_window = canonical_window(host)
        clip.guest_window = canonical_window(guest)
        if clip.host_window and clip.guest_window:
            clip.area_ratio = float((clip.host_window[2] / clip.guest_window[2]) ** 2)
        clip.rejected = self._verdict(clip)
        return clip

    def _verdict(self, clip: ClipCandidate) -> str | None:
        if clip.guest_coverage < self.config.min_guest_coverage:
            return "guest_coverage"
        if clip.host_coverage < self.config.min_host_coverage:
            return "host_coverage"
        if clip.area_ratio > self.config.max_area_ratio:
            return "host_guest_area_ratio"
        return None
