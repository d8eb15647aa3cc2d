"""Motion parameters: head pose + ARKit-named expression coefficients.

One vector layout serves the host output, the guest geometry and the synthetic ground truth.
Conventions (image space, as a camera sees the face):
- yaw: degrees, positive when the face turns towards the image's right (the subject's left).
- pitch: degrees, positive when the face tilts down (chin towards chest).
- roll: degrees, positive when the head tilts clockwise in the image.
- tx, ty: head centre (mid-point between the eyes) in the image, as a fraction of the image size,
  measured from the image centre (so -0.5..0.5).
- scale: face height (brow line to chin at jawOpen 0) as a fraction of the image height.
- expressions follow ARKit names and ranges (0..1); "Left"/"Right" are the subject's own sides.
  eyeLookX/eyeLookY are signed gaze (-1..1): +X the subject looks towards the image's right,
  +Y looks up.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

POSE_FIELDS: tuple[str, ...] = ("yaw", "pitch", "roll", "tx", "ty", "scale")
EXPRESSION_FIELDS: tuple[str, ...] = (
    "jawOpen",
    "mouthSmileLeft",
    "mouthSmileRight",
    "mouthPucker",
    "eyeBlinkLeft",
    "eyeBlinkRight",
    "browInnerUp",
    "eyeLookX",
    "eyeLookY",
)
MOTION_FIELDS: tuple[str, ...] = POSE_FIELDS + EXPRESSION_FIELDS
MOTION_DIM = len(MOTION_FIELDS)
FIELD_INDEX: dict[str, int] = {name: i for i, name in enumerate(MOTION_FIELDS)}

# Signed fields live in -1..1, the rest of the expressions in 0..1.
SIGNED_EXPRESSIONS = frozenset({"eyeLookX", "eyeLookY"})


@dataclass
class MotionParams:
    """One face's motion at one instant. `values` follows MOTION_FIELDS.  # (MOTION_DIM,)"""

    values: np.ndarray = field(default_factory=lambda: neutral_vector())

    def __getitem__(self, name: str) -> float:
        return float(self.values[FIELD_INDEX[name]])

    def __setitem__(self, name: str, value: float) -> None:
        self.values[FIELD_INDEX[name]] = value

    def to_dict(self, decimals: int = 4) -> dict[str, float]:
        return {name: round(float(v), decimals) for name, v in zip(MOTION_FIELDS, self.values)}

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> "MotionParams":
        params = cls()
        for name, value in data.items():
            params[name] = value
        return params


def neutral_vector() -> np.ndarray:
    """A frontal, centred, neutral face filling a fifth of the image height."""
    values = np.zeros(MOTION_DIM, dtype=np.float32)
    values[FIELD_INDEX["scale"]] = 0.2
    return values


def clip_expressions(values: np.ndarray) -> np.ndarray:
    """Clip expression coefficients of a (..., MOTION_DIM) array into their ranges, in place."""
    for name in EXPRESSION_FIELDS:
        low = -1.0 if name in SIGNED_EXPRESSIONS else 0.0
        i = FIELD_INDEX[name]
        np.clip(values[..., i], low, 1.0, out=values[..., i])
    return values
