"""Rectified flow matching for the motion generator: the training loss and a sampler.

In the generator's normalised motion space (see `MotionGenerator.normalise`):
  x_t = (1 - t) * noise + t * data,   t ~ U(0, 1)
  loss = || v(x_t, t | cond) - (data - noise) ||^2
Sampling integrates dx/dt = v from the noise at t = 0 to t = 1 with Euler steps; that is exactly
what `MotionGenerator.forward` unrolls (`sampling_steps` steps), so `sample` here is the same
computation for the audio-only path, written against `condition` / `velocity` for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.motion_generator import MotionGenerator


@dataclass
class MotionBatch:
    """One batch of training windows (B = batch, K = frames per step)."""

    audio_mel: torch.Tensor  # (B, M, 80) log-mel window, exactly as serving assembles it
    motion_history: torch.Tensor  # (B, H, 15) previous motion (raw units, possibly augmented)
    target: torch.Tensor  # (B, K, 15) ground-truth motion of the K frames (raw units)
    guest_features: torch.Tensor  # (B, P, G, D)
    guest_visible: torch.Tensor  # (B, P, G)
    video_on: torch.Tensor  # (B,) 1 applies the guest branch, 0 = audio-only path


def flow_matching_loss(
    generator: MotionGenerator,
    batch: MotionBatch,
    generator_rng: torch.Generator | None = None,
    field_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared velocity error of one batch; `field_weights` (15,) weighs the motion fields."""
    data = generator.normalise(batch.target)  # (B, K, 15)
    noise = torch.randn(data.shape, generator=generator_rng, dtype=data.dtype)
    t = torch.rand(data.shape[0], generator=generator_rng, dtype=data.dtype)  # (B,)
    x_t = (1.0 - t[:, None, None]) * noise + t[:, None, None] * data
    cond = generator.condition(batch.audio_mel, batch.guest_features, batch.guest_visible, batch.motion_history)
    velocity = generator.velocity(x_t, t, cond, batch.video_on)
    error = (velocity - (data - noise)).pow(2)  # (B, K, 15)
    if field_weights is not None:
        error = error * field_weights
    return error.mean()


@torch.no_grad()
def sample_audio_only(
    generator: MotionGenerator,
    audio_mel: torch.Tensor,
    motion_history: torch.Tensor,
    noise: torch.Tensor,
    guest_features: torch.Tensor,
    guest_visible: torch.Tensor,
) -> torch.Tensor:
    """Euler integration of the audio-only flow (lambda_video = 0) -> motion (B, K, 15) raw units.

    Equals `generator(..., lambda_video=0)` (the exported graph), without the doubled batch."""
    cond = generator.condition(audio_mel, guest_features, guest_visible, motion_history)
    video_off = noise.new_zeros(noise.shape[0])
    x = noise
    steps = generator.config.sampling_steps
    for i in range(steps):
        t = noise.new_full((noise.shape[0],), i / steps)
        x = x + generator.velocity(x, t, cond, video_off) / steps
    return generator.denormalise(x)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
