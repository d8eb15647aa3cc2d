"""Guest encoder: one partner face crop (+ its face-geometry vector) -> one feature per frame.

Stands in for the paper's frozen I3D video encoder at a cost that allows running it on every
incoming partner frame. A small strided CNN summarises appearance (gaze, mouth, expression as
seen), a linear branch carries the measured geometry (pose and blendshapes), and both are fused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from f2f.avatar_spec import AvatarSpec


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
        self.geometry = nn.Linear(spec.motion_dim, config.hidden)
        self.fuse = nn.Sequential(
            nn.Linear(in_channels + config.hidden, config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, spec.guest_feature_dim),
            nn.LayerNorm(spec.guest_feature_dim),
        )
        # Geometry normalisation (set from training data; identity until then).
        self.register_buffer("geometry_mean", torch.zeros(spec.motion_dim))
        self.register_buffer("geometry_std", torch.ones(spec.motion_dim))

    def forward(self, face_crop: torch.Tensor, face_geometry: torch.Tensor) -> torch.Tensor:
        # face_crop (B, 3, S, S) in 0..1, face_geometry (B, 15) -> guest_feature (B, D)
        appearance = self.cnn(face_crop * 2.0 - 1.0).mean(dim=(2, 3))  # (B, C)
        geometry = self.geometry((face_geometry - self.geometry_mean) / self.geometry_std)  # (B, hidden)
        return self.fuse(torch.cat([appearance, geometry], dim=-1))
