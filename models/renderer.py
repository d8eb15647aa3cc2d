"""Renderer: host motion parameters -> host frame (person-specific, trained on the host's footage).

A decoder from the 15 motion parameters to an RGB frame: an MLP lifts the parameters to an 8x8
feature map, then nearest-neighbour upsampling + 3x3 convolutions double it up to the frame size
(256 on CPU, 512 on GPU). Coordinates are appended at each stage so position-dependent detail
(where the eyes and mouth are for a given pose) is easy to express. With `subpixel_output` the last
doubling is a sub-pixel convolution instead of a full-resolution stage (the default avatar's choice:
half the per-frame cost).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from f2f.avatar_spec import AvatarSpec

BASE_SIZE = 8


@dataclass(frozen=True)
class RendererConfig:  # defaults: the default avatar's sizes
    hidden: int = 128
    # Channels of the 8x8 map and of each doubling stage, largest first; the last entry is reused
    # for any further stage so one config serves 256 and 512 outputs.
    channels: tuple[int, ...] = (64, 64, 48, 32, 16, 8)
    # The last doubling as a sub-pixel convolution: the half-size map's to-RGB conv emits 4 RGB
    # values per pixel, pixel-shuffled into the full frame. The full-resolution stage (two 3x3
    # convs over 256x256 on few channels, memory-bound) was the largest share of the cost.
    subpixel_output: bool = False


def _coordinates(size: int, device: torch.device) -> torch.Tensor:
    """(1, 2, size, size) x and y in -1..1."""
    axis = torch.linspace(-1.0, 1.0, size, device=device)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xs, ys])[None]


def _conv_with_coordinates(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """conv(cat([x, coordinates])) computed as conv over x plus the coordinates' own term.

    The same weights and the same result, but the coordinates' term depends on nothing but the weights:
    it is a constant the exported graph folds away, and the remaining conv has a channel count
    (64, 48, 32...) that onnxruntime's blocked-layout kernels take; with the 2 extra channels it fell
    back to a slower kernel (renderer 5.85 -> 4.95 ms, onnxruntime, 1 thread).  x (N, C, S, S) -> (N, C', S, S)"""
    channels = x.shape[1]
    coords = _coordinates(x.shape[-1], x.device)  # (1, 2, S, S)
    position = F.conv2d(coords, conv.weight[:, channels:], None, conv.stride, conv.padding)  # (1, C', S, S)
    return F.conv2d(x, conv.weight[:, :channels], conv.bias, conv.stride, conv.padding) + position


class Renderer(nn.Module):
    def __init__(self, spec: AvatarSpec, config: RendererConfig = RendererConfig()):
        super().__init__()
        doublings = int(round(math.log2(spec.frame_size / BASE_SIZE)))
        if BASE_SIZE * 2**doublings != spec.frame_size:
            raise ValueError(f"frame_size must be {BASE_SIZE} times a power of two, got {spec.frame_size}")
        self.shuffle = 2 if config.subpixel_output else 1
        stages = doublings - (1 if config.subpixel_output else 0)  # conv stages (each doubles the map)
        self.spec = spec
        self.config = config
        widths = [config.channels[min(i, len(config.channels) - 1)] for i in range(stages + 1)]
        self.lift = nn.Sequential(
            nn.Linear(spec.motion_dim, config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, widths[0] * BASE_SIZE * BASE_SIZE),
        )
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[i] + 2, widths[i + 1], 3, padding=1), nn.GELU(),
                          nn.Conv2d(widths[i + 1], widths[i + 1], 3, padding=1), nn.GELU())
            for i in range(stages)
        )
        self.to_rgb = nn.Conv2d(widths[-1], 3 * self.shuffle**2, 3, padding=1)
        self.base_width = widths[0]
        self.register_buffer("motion_mean", torch.zeros(spec.motion_dim))
        self.register_buffer("motion_std", torch.ones(spec.motion_dim))

    def forward(self, motion: torch.Tensor) -> torch.Tensor:
        # motion (B, K, 15) -> frames (B, K, 3, F, F) in 0..1
        batch, frames_per_step, dim = motion.shape
        flat = ((motion - self.motion_mean) / self.motion_std).reshape(batch * frames_per_step, dim)
        x = self.lift(flat).reshape(batch * frames_per_step, self.base_width, BASE_SIZE, BASE_SIZE)
        for stage in self.stages:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = stage[1:](_conv_with_coordinates(stage[0], x))
        rgb = self.to_rgb(x)  # (B*K, 3 s^2, F/s, F/s), s = 2 with the sub-pixel output, else 1
        if self.shuffle > 1:
            rgb = F.pixel_shuffle(rgb, self.shuffle)
        rgb = torch.sigmoid(rgb)  # (B*K, 3, F, F)
        size = self.spec.frame_size
        return rgb.reshape(batch, frames_per_step, 3, size, size)
