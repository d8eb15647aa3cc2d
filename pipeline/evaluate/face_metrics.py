"""Measurements on frames: the face mesh (found, motion, mouth landmarks), dlib identity, PSNR, SSIM."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from f2f.features.face_geometry import LEFT_EYE_OUTER, RIGHT_EYE_OUTER, head_rotation
from f2f.motion import MOTION_DIM

# The mediapipe face mesh's lip contour landmarks (outer and inner lips).
LIP_LANDMARKS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409,
                 78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415)


@dataclass
class MeshMeasurements:
    found: np.ndarray  # (N,) bool
    motion: np.ndarray  # (N, 15) NaN where no face
    lips: np.ndarray  # (N, 40, 3) lip landmarks in the head frame, in eye spans (NaN where no face)
    boxes: np.ndarray  # (N, 4) x, y, w, h of the landmarks (NaN where no face)


def head_frame_points(points: np.ndarray, indices) -> np.ndarray:
    """Landmarks (478, 3) -> the chosen points with rotation, position and size removed."""
    rot = head_rotation(points)
    centre = points[[RIGHT_EYE_OUTER, LEFT_EYE_OUTER]].mean(axis=0)
    span = max(float(np.linalg.norm(points[LEFT_EYE_OUTER] - points[RIGHT_EYE_OUTER])), 1e-6)
    return (points[list(indices)] - centre) @ rot / span


def measure_mesh(frames_rgb: np.ndarray) -> MeshMeasurements:
    """Face mesh (static images, one face) on (N, H, W, 3) uint8 RGB frames."""
    from f2f.features.face_geometry import FaceGeometryFeaturizer

    n = len(frames_rgb)
    out = MeshMeasurements(np.zeros(n, bool), np.full((n, MOTION_DIM), np.nan, np.float32),
                           np.full((n, len(LIP_LANDMARKS), 3), np.nan, np.float32), np.full((n, 4), np.nan))
    with FaceGeometryFeaturizer(max_faces=1, static_images=True) as featurizer:
        for i in range(n):
            faces = featurizer.measure_rgb(frames_rgb[i])
            if faces:
                face = faces[0]
                out.found[i] = True
                out.motion[i] = face.motion
                out.lips[i] = head_frame_points(face.landmarks.astype(np.float64), LIP_LANDMARKS)
                out.boxes[i] = face.box
    return out


def mouth_landmark_distance(a: MeshMeasurements, b: MeshMeasurements) -> float | None:
    """Mean distance between corresponding lip landmarks (head frame, eye spans) where both found."""
    both = a.found & b.found
    if not both.any():
        return None
    return float(np.linalg.norm(a.lips[both] - b.lips[both], axis=-1).mean())


class IdentityEncoder:
    """dlib's face-recognition ResNet (face_recognition_models): 128-d descriptors, same person < 0.6.

    Faces are located by the face mesh's box (dlib's HOG detector misses drawn faces), aligned by
    dlib's 5-point shape predictor."""

    def __init__(self):
        import dlib
        import face_recognition_models as models

        self._shape = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
        self._net = dlib.face_recognition_model_v1(models.face_recognition_model_location())
        self._dlib = dlib

    def __call__(self, image_rgb: np.ndarray, box) -> np.ndarray:
        x, y, w, h = (float(v) for v in box)
        rect = self._dlib.rectangle(int(x), int(y), int(x + w), int(y + h))
        image = np.ascontiguousarray(image_rgb)
        shape = self._shape(image, rect)
        return np.asarray(self._net.compute_face_descriptor(image, shape), np.float32)

    def encode(self, frames_rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(N, H, W, 3), (N, 4) boxes (NaN: skipped) -> (M, 128) descriptors of the frames with a box."""
        out = [self(frame, box) for frame, box in zip(frames_rgb, boxes) if np.all(np.isfinite(box))]
        return np.stack(out) if out else np.zeros((0, 128), np.float32)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean PSNR (dB) over frames of two (N, H, W, 3) uint8 arrays."""
    mse = np.concatenate([  # in chunks of frames: a whole clip in float64 is gigabytes, and slow to touch
        np.mean((a[i:i + 32].astype(np.float64) - b[i:i + 32].astype(np.float64)) ** 2, axis=(1, 2, 3))
        for i in range(0, len(a), 32)]) if len(a) else np.zeros(0)
    return float(np.mean(10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM over frames (Wang et al. 2004: luminance, 11x11 Gaussian window, sigma 1.5)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for x, y in zip(a, b):
        x = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float64)
        y = cv2.cvtColor(y, cv2.COLOR_RGB2GRAY).astype(np.float64)

        def blur(z):
            return cv2.GaussianBlur(z, (11, 11), 1.5)

        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        values.append(np.mean(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))))
    return float(np.mean(values)) if values else float("nan")
