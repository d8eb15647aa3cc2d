"""Single synthetic faces with known motion: the featurizer's calibration and test material."""

from __future__ import annotations

import numpy as np

from f2f.motion import FIELD_INDEX, neutral_vector

from .cast import sample_identity
from .face_drawing import FacePainter

ACTIVE_EXPRESSIONS = ("jawOpen", "mouthSmileLeft", "mouthPucker", "eyeBlinkLeft", "eyeBlinkRight", "browInnerUp")


def random_motion(rng: np.random.Generator) -> np.ndarray:
    """A random pose and expression mix, as people make them (no pucker while smiling).  # (MOTION_DIM,)"""
    m = neutral_vector()
    m[FIELD_INDEX["yaw"]] = rng.uniform(-30, 30)
    m[FIELD_INDEX["pitch"]] = rng.uniform(-15, 15)
    m[FIELD_INDEX["roll"]] = rng.uniform(-15, 15)
    for name in ACTIVE_EXPRESSIONS:
        m[FIELD_INDEX[name]] = rng.uniform(0, 1) if rng.random() < 0.6 else 0.0
    left = m[FIELD_INDEX["mouthSmileLeft"]]
    m[FIELD_INDEX["mouthSmileRight"]] = np.clip(left + rng.uniform(-0.3, 0.3), 0, 1) if left > 0 else 0.0
    if left > 0:
        m[FIELD_INDEX["mouthPucker"]] = 0.0
    m[FIELD_INDEX["eyeLookX"]] = rng.uniform(-1, 1)
    m[FIELD_INDEX["eyeLookY"]] = rng.uniform(-1, 1)
    return m


def render_face(rng: np.random.Generator, motion: np.ndarray, size: int = 480) -> tuple[np.ndarray, np.ndarray]:
    """A random identity drawn with `motion` in a square image; returns (image, image-space motion)."""
    image = np.full((size, size, 3), (110, 105, 100), np.uint8)
    face_px = rng.uniform(0.31, 0.54) * size
    painter = FacePainter(sample_identity(rng))
    drawn = painter.draw(image, motion, (size / 2, size / 2 + 0.3 * face_px), face_px)
    truth = motion.copy()
    truth[FIELD_INDEX["tx"]] = drawn.eye_center[0] / size - 0.5
    truth[FIELD_INDEX["ty"]] = drawn.eye_center[1] / size - 0.5
    truth[FIELD_INDEX["scale"]] = face_px / size
    return image, truth
