"""Stage 1, initial vetting: track faces on every frame, keep the spans where exactly two co-occur.

Output per episode: the detection table (every box, score and persistent track id, reused by the
identity stage) and the two-person segments with the frame-rate metadata.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.curate.manifest import CLIP_FPS, MIN_CLIP_FRAMES
from pipeline.curate.media import VideoInfo, read_frames
from pipeline.curate.tracking import DetectionTable, IouTracker, runs, track_presence

MAX_DETECT_WIDTH = 1280  # larger frames are scaled down for detection; boxes come back in source pixels


@dataclass(frozen=True)
class VettingConfig:
    gap_tolerance_s: float = 0.5  # detector dropouts shorter than this do not break a track or a segment
    min_confidence: float = 0.5


@dataclass
class Segment:
    """A span of an episode with exactly two people, in source frames and seconds."""

    start_frame: int
    end_frame: int  # exclusive
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class VettingResult:
    fps: float
    frame_count: int
    width: int
    height: int
    segments: list[Segment]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "VettingResult":
        return cls(data["fps"], data["frame_count"], data["width"], data["height"],
                   [Segment(**s) for s in data["segments"]])


def min_segment_frames(fps: float) -> int:
    """A segment must hold one whole clip: the guest window + the host window at 25 fps."""
    return math.ceil(MIN_CLIP_FRAMES * fps / CLIP_FPS)


def two_person_segments(people_per_frame: np.ndarray, fps: float, gap_tolerance_s: float) -> list[Segment]:
    """Runs of frames with exactly two people, joined across short gaps, long enough for a clip."""
    gap = int(round(gap_tolerance_s * fps))
    spans = runs(people_per_frame == 2, max_gap=gap, min_length=min_segment_frames(fps))
    return [Segment(a, b, a / fps, b / fps) for a, b in spans]


class InitialVetting:
    """Detects and tracks faces on every frame and finds the two-person segments."""

    def __init__(self, config: VettingConfig = VettingConfig()):
        self.config = config

    def run(self, info: VideoInfo, progress: bool = True, label: str = "") -> tuple[VettingResult, DetectionTable]:
        from f2f.features.face_detection import FaceDetector

        detector = FaceDetector(min_confidence=self.config.min_confidence)
        fps = info.fps_float
        tracker = IouTracker(max_missed=int(round(self.config.gap_tolerance_s * fps)))
        scale = min(1.0, MAX_DETECT_WIDTH / info.width)
        width, height = int(round(info.width * scale / 2) * 2), int(round(info.height * scale / 2) * 2)
        rows: list[tuple[int, float, float, float, float, float, int]] = []
        frame_index = 0
        bar = tqdm(total=info.frame_count, desc=f"{label} vetting", unit="frame", disable=not progress,
                   leave=False)
        for frame in read_frames(info.path, width, height):
            boxes = detector(frame)
            array = np.array([[b.x, b.y, b.x + b.width, b.y + b.height] for b in boxes], np.float32).reshape(-1, 4)
            array /= scale
            ids = tracker.update(frame_index, array)
            rows += [(frame_index, *array[i], boxes[i].score, int(ids[i])) for i in range(len(boxes))]
            frame_index += 1
            bar.update()
        bar.close()
        table = _table(rows, frame_index)
        people = track_presence(table, max_gap=int(round(self.config.gap_tolerance_s * fps)))
        segments = two_person_segments(people, fps, self.config.gap_tolerance_s)
        return VettingResult(fps, frame_index, info.width, info.height, segments), table


def _table(rows, frame_count: int) -> DetectionTable:
    if not rows:
        return DetectionTable(np.zeros(0, np.int64), np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                              np.zeros(0, np.int64), frame_count)
    data = np.array(rows, dtype=np.float64)
    return DetectionTable(data[:, 0].astype(np.int64), data[:, 1:5].astype(np.float32),
                          data[:, 5].astype(np.float32), data[:, 6].astype(np.int64), frame_count)
