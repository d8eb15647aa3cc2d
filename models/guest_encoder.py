"""Guest encoder: one partner face crop (+ its face-geometry vector) -> one feature per frame.

Stands in for the paper's frozen I3D video encoder at a cost that allows running it on every
incoming partner frame. A small strided CNN summarises appearance (gaze, mouth, expression as
seen), a linear branch carries the measured geometry (pose and blendshapes), and both are fused.

The geometry branch reads rotation and expressions only (`geometry_used`): the face's position and
size (tx, ty, scale) depend on the partner's camera framing, which differs between a curated crop
(training) and a webcam frame (serving), and none of the reaction cues needs them. The feature ends
with that normalised geometry itself: with it passed only through randomly initialised layers, the
video branch learned nothing from a guest's smile or tilt in stage 2 (the signal it needs was buried).

Training splits the forward in two (`appearance` then `from_appearance`): the CNN is pretrained on
an auxiliary target and then frozen, as the paper's I3D is, so its per-frame features are computed
once and cached, and stage 2 trains the fusion with the video branch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from f2f.avatar_spec import AvatarSpec
from f2f.motion import FIELD_INDEX, MOTION_DIM

PLACEMENT_FIELDS = ("tx", "ty", "scale")  # depend on the camera's framing, not on the guest
# The guest feature ends with the normalised geometry of these fields (rotation + expressions).
GEOMETRY_FIELDS = tuple(i for i in range(MOTION_DIM) if i not in [FIELD_INDEX[name] for name in PLACEMENT_FIELDS])


@dataclass(frozen=True)
class GuestEncoderConfig:
    channels: tuple[int, ...] = (16, 32, 64, 96)  # one stride-2 conv stage each
    hidden: int = 128


class GuestEncoder(nn.Module):
    def __init__(self, spec: AvatarSpec, config: GuestEncoderConfig = GuestEncoderConfig()):
        super().__init__()
        self.spec = spec
        self.config = config
        stages: list[nn.Module] = []
        in_channels = 3
        for out_channels in config.channels:
            stages += [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1), nn.GELU()]
            in_channels = out_channels
        self.cnn = nn.Sequential(*stages)
        used = list(GEOMETRY_FIELDS)
        if spec.guest_feature_dim <= len(used):
            raise ValueError(f"guest_feature_dim must exceed {len(used)} (the geometry it carries)")
        self.geometry = nn.Linear(spec.motion_dim, config.hidden)
        self.fuse = nn.Sequential(
            nn.Linear(in_channels + config.hidden, config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, spec.guest_feature_dim - len(used)),
            nn.LayerNorm(spec.guest_feature_dim - len(used)),
        )
        # Geometry normalisation (set from training data; identity until then).
        self.register_buffer("geometry_mean", torch.zeros(spec.motion_dim))
        self.register_buffer("geometry_std", torch.ones(spec.motion_dim))
        mask = torch.zeros(spec.motion_dim)
        mask[used] = 1.0
        self.register_buffer("geometry_used", mask)
        self.used_fields = used
        self.appearance_dim = in_channels

    def appearance(self, face_crop: torch.Tensor) -> torch.Tensor:
        """face_crop (B, 3, S, S) in 0..1 -> pooled CNN features (B, C)."""
        return self.cnn(face_crop * 2.0 - 1.0).mean(dim=(2, 3))

    def from_appearance(self, appearance: torch.Tensor, face_geometry: torch.Tensor) -> torch.Tensor:
        """appearance (..., C), face_geometry (..., 15) -> guest_feature (..., D): the fused features
        (D - 12) followed by the normalised geometry itself (rotation + expressions, 12), so the video
        branch reads a smile or a tilt directly instead of through random layers first."""
        normalised = (face_geometry - self.geometry_mean) / self.geometry_std * self.geometry_used
        fused = self.fuse(torch.cat([appearance, self.geometry(normalised)], dim=-1))
        return torch.cat([fused, normalised[..., self.used_fields]], dim=-1)

    def forward(self, face_crop: torch.Tensor, face_geometry: torch.Tensor) -> torch.Tensor:
        # face_crop (B, 3, S, S) in 0..1, face_geometry (B, 15) -> guest_feature (B, D)
        return self.from_appearance(self.appearance(face_crop), face_geometry)
