"""Rectified flow matching, the motion generator's generative objective.

In the generator's flow space (per field: increments over the last history frame, or standardised
values; see `MotionGenerator.to_flow`):
  x_t = (1 - t) * noise + t * data,   t ~ U(0, 1)
  loss = || v(x_t, t | cond) - (data - noise) ||^2
Sampling integrates dx/dt = v from the noise at t = 0 to t = 1 with Euler steps, with video-only
guidance; `MotionGenerator.forward` unrolls exactly that (the exported graph).
"""

from __future__ import annotations

import torch
from torch import nn


def interpolate(data: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """data, noise (B, K, 15), t (B,) -> x_t (B, K, 15) and the velocity to regress (B, K, 15)."""
    x_t = (1.0 - t[:, None, None]) * noise + t[:, None, None] * data
    return x_t, data - noise


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
