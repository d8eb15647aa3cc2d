"""Face detection on whole frames: mediapipe 0.10.21 full-range detector over square tiles.

mediapipe's detectors see a 192x192 (full range) or 128x128 (short range) copy of their input, so
on a 1280x720 frame a 64-px face shrinks to ~10 px and is missed. Running the full-range model on
overlapping square tiles as tall as the frame keeps such a face at ~17 px of model input, where it
is found, at about twice the cost of one full-frame pass. Boxes from overlapping tiles are merged by
non-maximum suppression.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class FaceBox:
    x: float  # pixels, top-left
    y: float
    width: float
    height: float
    score: float

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.width / 2, self.y + self.height / 2


def tile_origins(width: int, height: int) -> list[tuple[int, int, int]]:
    """(x, y, size) of square tiles as tall as the frame's short side, overlapping by at least half."""
    size = min(width, height)
    span = max(width, height) - size
    steps = int(np.ceil(span / (size * 0.5))) if span > 0 else 0
    offsets = np.linspace(0, span, steps + 1).round().astype(int) if steps else np.array([0])
    if width >= height:
        return [(int(x), 0, size) for x in offsets]
    return [(0, int(y), size) for y in offsets]


def iou(a: FaceBox, b: FaceBox) -> float:
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.width, b.x + b.width), min(a.y + a.height, b.y + b.height)
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0


def non_max_suppression(boxes: list[FaceBox], threshold: float = 0.3) -> list[FaceBox]:
    kept: list[FaceBox] = []
    for box in sorted(boxes, key=lambda b: -b.score):
        if all(iou(box, other) < threshold for other in kept):
            kept.append(box)
    return kept


class FaceDetector:
    """Finds faces in BGR frames of any size. One instance per thread of work."""

    def __init__(self, min_confidence: float = 0.5):
        import mediapipe as mp  # heavy: imported when a detector is made

        self._model = mp.solutions.face_detection.FaceDetection(model_selection=1,
                                                                 min_detection_confidence=min_confidence)
        self._lock = threading.Lock()

    def __call__(self, image_bgr: np.ndarray) -> list[FaceBox]:
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 BGR image, got {image_bgr.shape} {image_bgr.dtype}")
        height, width = image_bgr.shape[:2]
        boxes: list[FaceBox] = []
        # One colour conversion per frame, then row copies per tile: numpy's channel-reversed copy of
        # each tile took ~5 ms of a 720p frame's ~30 ms detection.
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        for x0, y0, size in tile_origins(width, height):
            tile = np.ascontiguousarray(rgb[y0:y0 + size, x0:x0 + size])
            with self._lock:
                result = self._model.process(tile)
            for detection in result.detections or []:
                b = detection.location_data.relative_bounding_box
                boxes.append(FaceBox(x0 + b.xmin * size, y0 + b.ymin * size, b.width * size, b.height * size,
                                     float(detection.score[0])))
        return non_max_suppression(boxes)

    def close(self) -> None:
        self._model.close()

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
