"""The guest encoder's input: a square face crop around a face box, the same in training and serving.

The window is the face box (from the face-mesh landmarks) enlarged 1.3x, shifted 20% of its height
down (the chin and mouth matter more than the forehead) and made square, as the curation recipe
crops faces. Parts of the window outside the image are black.
"""

from __future__ import annotations

import cv2
import numpy as np

CROP_ENLARGE = 1.3
CROP_SHIFT_DOWN = 0.2


def crop_window(box: tuple[float, float, float, float]) -> tuple[float, float, float]:
    """Face box (x, y, w, h) -> square window (centre x, centre y, side), in pixels."""
    x, y, w, h = box
    side = max(w, h) * CROP_ENLARGE
    return x + w / 2.0, y + h / 2.0 + CROP_SHIFT_DOWN * h, side


def crop_face(image_rgb: np.ndarray, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB image + face box -> (3, size, size) float32 RGB in 0..1."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got {image_rgb.shape}")
    cx, cy, side = crop_window(box)
    if side <= 1:
        raise ValueError(f"face box too small to crop: {box}")
    scale = size / side
    # Affine map from the image to the crop: translate the window's corner to the origin, scale.
    matrix = np.array([[scale, 0.0, (side / 2.0 - cx) * scale],
                       [0.0, scale, (side / 2.0 - cy) * scale]], dtype=np.float64)
    crop = cv2.warpAffine(image_rgb, matrix, (size, size), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return np.ascontiguousarray(crop.transpose(2, 0, 1), dtype=np.float32) / 255.0


def black_crop(size: int) -> np.ndarray:
    """The crop of a frame with no face (the paper's blackout frames)."""
    return np.zeros((3, size, size), dtype=np.float32)
