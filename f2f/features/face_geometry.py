"""Face geometry: mediapipe 0.10.21 face mesh -> head pose + ARKit-named coefficients.

Used by curation (guest and host tracks), by training targets and by the gateway (partner frames),
so all of them measure motion the same way (no train/serve skew). numpy + mediapipe, no torch.

How each field is measured from the 478 mesh landmarks (pixels; z in the same pixel units as x):
- rotation: head axes from rigid landmarks (eye corners and cheeks give the left-right axis;
  forehead -> nose base gives the down axis), decomposed as R = Ryaw @ Rpitch @ Rroll
  (`f2f.motion` conventions), then calibrated (offset and gain).
- tx, ty: mid-point of the four eye corners, relative to the image centre, per image size.
- scale: face height, from the outer eye-corner distance (rigid), per image height.
- expressions: ratios of landmark distances in the head frame (rotation removed, divided by the
  outer eye-corner span), mapped linearly between calibrated values at 0 and at 1 (`_CALIBRATION`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from f2f.motion import FIELD_INDEX, MOTION_DIM, clip_expressions

NUM_LANDMARKS = 478

# Landmark indices of the mediapipe face mesh (refined, with irises). "Right"/"left" are the
# subject's own sides: the subject's right eye appears on the image's left.
RIGHT_EYE_OUTER, RIGHT_EYE_INNER, LEFT_EYE_INNER, LEFT_EYE_OUTER = 33, 133, 362, 263
RIGHT_EYE_UPPER, RIGHT_EYE_LOWER, LEFT_EYE_UPPER, LEFT_EYE_LOWER = 159, 145, 386, 374
RIGHT_CHEEK, LEFT_CHEEK = 234, 454
FOREHEAD = (151, 9)
NOSE_BASE = (2, 94)
UPPER_LIP_INNER, LOWER_LIP_INNER, UPPER_LIP_TOP = 13, 14, 0
MOUTH_RIGHT, MOUTH_LEFT = 61, 291
MOUTH_RIGHT_INNER, MOUTH_LEFT_INNER = 78, 308
RIGHT_BROW_INNER, LEFT_BROW_INNER = (65, 55), (295, 285)
RIGHT_IRIS_CENTER, LEFT_IRIS_CENTER = 468, 473
FOREHEAD_TOP, CHIN = 10, 152

# Calibration of the measurement, as (raw value at 0, raw value at 1) of each linear map. The raw
# values are ratios in the head frame in outer-eye-corner spans (angles in degrees). They were
# fitted by least squares on 400 renders of random synthetic identities, poses and expressions
# (scripts/calibrate_face_geometry.py), and are checked on other renders by
# tests/unit/test_face_geometry.py. They are plausible human ratios: a face is ~1.97 eye spans
# tall, a fully open jaw parts the inner lips by ~0.43 spans, an open eye is ~0.41 times as tall as
# wide. The mesh leans the forehead->nose axis forward, hence the pitch offset.
_CALIBRATION: dict[str, tuple[float, float]] = {
    "yaw": (1.506, 2.563),
    "pitch": (-4.480, -3.608),
    "roll": (0.350, 1.355),
    "scale": (0.0, 0.508),  # eye span / image height at face height = image height
    "jawOpen": (0.0144, 0.4485),
    "mouthSmile": (-0.082, 0.027),
    "mouthPucker": (0.511, 0.372),
    "eyeBlink": (0.408, 0.232),
    "browInnerUp": (0.141, 0.181),
    "eyeLookX": (-0.009, 0.277),
    "eyeLookY": (-0.003, 0.047),
}

@dataclass(frozen=True)
class FaceGeometry:
    """One face measured in one image."""

    landmarks: np.ndarray  # (478, 3) pixels; z in x's pixel units, towards the camera negative
    box: tuple[float, float, float, float]  # x, y, w, h in pixels, from the landmarks
    motion: np.ndarray  # (MOTION_DIM,) following f2f.motion.MOTION_FIELDS


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) + 1e-9)


def head_rotation(points: np.ndarray) -> np.ndarray:
    """Head axes (columns: right-to-left, down, backwards) in camera coordinates.  # (3, 3)"""
    across = (
        _unit(points[LEFT_EYE_OUTER] - points[RIGHT_EYE_OUTER])
        + _unit(points[LEFT_EYE_INNER] - points[RIGHT_EYE_INNER])
        + _unit(points[LEFT_CHEEK] - points[RIGHT_CHEEK])
    )
    ex = _unit(across)
    down = points[list(NOSE_BASE)].mean(axis=0) - points[list(FOREHEAD)].mean(axis=0)
    ey = _unit(down - (down @ ex) * ex)
    ez = np.cross(ex, ey)
    return np.stack([ex, ey, ez], axis=1)


def rotation_to_angles(rot: np.ndarray) -> tuple[float, float, float]:
    """Inverse of R = Ryaw @ Rpitch @ Rroll -> (yaw, pitch, roll) in degrees."""
    pitch = -np.arcsin(np.clip(rot[1, 2], -1.0, 1.0))
    roll = np.arctan2(rot[1, 0], rot[1, 1])
    yaw = np.arctan2(-rot[0, 2], rot[2, 2])
    return float(np.degrees(yaw)), float(np.degrees(pitch)), float(np.degrees(roll))


def _linear(raw: float, field: str) -> float:
    at_zero, at_one = _CALIBRATION[field]
    return (raw - at_zero) / (at_one - at_zero)


def raw_measures(points: np.ndarray) -> dict[str, float]:
    """Uncalibrated geometry of one face: angles, and ratios in eye spans in the head frame."""
    if points.shape != (NUM_LANDMARKS, 3):
        raise ValueError(f"expected ({NUM_LANDMARKS}, 3) landmarks (refined mesh), got {points.shape}")
    rot = head_rotation(points)
    yaw, pitch, roll = rotation_to_angles(rot)
    eye_corners = points[[RIGHT_EYE_OUTER, RIGHT_EYE_INNER, LEFT_EYE_INNER, LEFT_EYE_OUTER]]
    eye_mid = eye_corners.mean(axis=0)
    eye_span = float(np.linalg.norm(points[LEFT_EYE_OUTER] - points[RIGHT_EYE_OUTER]))
    local = (points - eye_mid) @ rot / max(eye_span, 1e-6)  # (478, 3) rotation and size removed

    raw = {"yaw": yaw, "pitch": pitch, "roll": roll, "eye_x": float(eye_mid[0]), "eye_y": float(eye_mid[1]),
           "eye_span": eye_span}
    raw["jawOpen"] = float(np.linalg.norm(local[LOWER_LIP_INNER] - local[UPPER_LIP_INNER]))
    lip_top = local[UPPER_LIP_TOP, 1]
    raw["mouthSmileLeft"] = float(lip_top - local[MOUTH_LEFT, 1])
    raw["mouthSmileRight"] = float(lip_top - local[MOUTH_RIGHT, 1])
    raw["mouthPucker"] = float(np.linalg.norm(local[MOUTH_LEFT_INNER, :2] - local[MOUTH_RIGHT_INNER, :2]))
    for side, (upper, lower, inner, outer) in {
        "Right": (RIGHT_EYE_UPPER, RIGHT_EYE_LOWER, RIGHT_EYE_INNER, RIGHT_EYE_OUTER),
        "Left": (LEFT_EYE_UPPER, LEFT_EYE_LOWER, LEFT_EYE_INNER, LEFT_EYE_OUTER),
    }.items():
        aperture = np.linalg.norm(local[upper, :2] - local[lower, :2])
        width = np.linalg.norm(local[inner, :2] - local[outer, :2])
        raw[f"eyeBlink{side}"] = float(aperture / max(width, 1e-6))
    # Inner brows above the upper lids (the lids hold still when the brows rise).
    lids_y = 0.5 * (local[RIGHT_EYE_UPPER, 1] + local[LEFT_EYE_UPPER, 1])
    brows_y = 0.5 * (local[list(RIGHT_BROW_INNER), 1].mean() + local[list(LEFT_BROW_INNER), 1].mean())
    raw["browInnerUp"] = float(lids_y - brows_y)
    look_x, look_y = [], []
    for iris, inner, outer, upper, lower in (
        (RIGHT_IRIS_CENTER, RIGHT_EYE_INNER, RIGHT_EYE_OUTER, RIGHT_EYE_UPPER, RIGHT_EYE_LOWER),
        (LEFT_IRIS_CENTER, LEFT_EYE_INNER, LEFT_EYE_OUTER, LEFT_EYE_UPPER, LEFT_EYE_LOWER),
    ):
        half_width = max(0.5 * abs(local[inner, 0] - local[outer, 0]), 1e-6)
        look_x.append((local[iris, 0] - 0.5 * (local[inner, 0] + local[outer, 0])) / half_width)
        look_y.append(-(local[iris, 1] - 0.5 * (local[upper, 1] + local[lower, 1])) / half_width)
    raw["eyeLookX"] = float(np.mean(look_x))
    raw["eyeLookY"] = float(np.mean(look_y))
    return raw


def motion_from_landmarks(points: np.ndarray, image_width: int, image_height: int) -> np.ndarray:
    """(478, 3) pixel landmarks -> calibrated motion vector (MOTION_DIM,)."""
    raw = raw_measures(points)
    out = np.zeros(MOTION_DIM, dtype=np.float32)
    for angle in ("yaw", "pitch", "roll"):
        out[FIELD_INDEX[angle]] = _linear(raw[angle], angle)
    out[FIELD_INDEX["tx"]] = raw["eye_x"] / image_width - 0.5
    out[FIELD_INDEX["ty"]] = raw["eye_y"] / image_height - 0.5
    out[FIELD_INDEX["scale"]] = _linear(raw["eye_span"] / image_height, "scale")
    for name in ("jawOpen", "mouthPucker", "browInnerUp", "eyeLookX", "eyeLookY"):
        out[FIELD_INDEX[name]] = _linear(raw[name], name)
    for side in ("Left", "Right"):
        out[FIELD_INDEX[f"mouthSmile{side}"]] = _linear(raw[f"mouthSmile{side}"], "mouthSmile")
        out[FIELD_INDEX[f"eyeBlink{side}"]] = _linear(raw[f"eyeBlink{side}"], "eyeBlink")
    return clip_expressions(out)


def _check_image(image: np.ndarray, order: str) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 {order} image, got {image.shape} {image.dtype}")


class FaceGeometryFeaturizer:
    """Runs the mediapipe face mesh on BGR images and measures every face found.

    `static_images=True` detects afresh on every image (independent frames, tests, curation of
    sampled frames); False tracks across consecutive frames of one stream (cheaper per frame).
    One instance per stream: mediapipe graphs are not safe to share between threads.
    """

    def __init__(self, max_faces: int = 1, static_images: bool = True, min_confidence: float = 0.5):
        import mediapipe as mp  # imported here: heavy, and only needed once a featurizer exists

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=static_images,
            max_num_faces=max_faces,
            refine_landmarks=True,
            min_detection_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
        )
        self._lock = threading.Lock()

    def __call__(self, image_bgr: np.ndarray) -> list[FaceGeometry]:
        _check_image(image_bgr, "BGR")
        return self.measure_rgb(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))

    def measure_rgb(self, rgb: np.ndarray) -> list[FaceGeometry]:
        """The same on an RGB image (what mediapipe takes: no conversion; the gateway's decoders give RGB)."""
        _check_image(rgb, "RGB")
        rgb = np.ascontiguousarray(rgb)
        height, width = rgb.shape[:2]
        with self._lock:
            result = self._mesh.process(rgb)
        faces = []
        for face in result.multi_face_landmarks or []:
            raw = np.array([(p.x, p.y, p.z) for p in face.landmark], dtype=np.float64)  # (478, 3)
            points = raw * np.array([width, height, width])
            x0, y0 = points[:, 0].min(), points[:, 1].min()
            x1, y1 = points[:, 0].max(), points[:, 1].max()
            faces.append(FaceGeometry(
                landmarks=points.astype(np.float32),
                box=(float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
                motion=motion_from_landmarks(points, width, height),
            ))
        return faces

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> "FaceGeometryFeaturizer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
