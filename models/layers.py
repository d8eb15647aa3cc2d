"""Small building blocks shared by the networks, written out so they export cleanly to ONNX."""

from __future__ import annotations

import math

import torch
from torch import nn


class Attention(nn.Module):
    """Multi-head attention of queries over a context (self-attention when context is x)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = width // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.to_q = nn.Linear(width, width)
        self.to_kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # x (B, T, W), context (B, S, W), mask (T, S) additive (0 or -inf) or None -> (B, T, W)
        batch, queries, width = x.shape
        q = self.to_q(x).reshape(batch, queries, self.heads, self.head_dim).transpose(1, 2)  # (B, h, T, d)
        k, v = self.to_kv(context).chunk(2, dim=-1)
        k = k.reshape(batch, -1, self.heads, self.head_dim).transpose(1, 2)  # (B, h, S, d)
        v = v.reshape(batch, -1, self.heads, self.head_dim).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) * self.scale  # (B, h, T, S)
        if mask is not None:
            scores = scores + mask
        out = scores.softmax(dim=-1) @ v  # (B, h, T, d)
        return self.out(out.transpose(1, 2).reshape(batch, queries, width))


class FeedForward(nn.Module):
    def __init__(self, width: int, multiplier: int = 4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, multiplier * width), nn.GELU(), nn.Linear(multiplier * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def timestep_embedding(t: torch.Tensor, width: int) -> torch.Tensor:
    """Sinusoidal embedding of flow time t in [0, 1]. t (B,) -> (B, width)."""
    half = width // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = 100.0 * t[:, None] * freqs[None, :]  # (B, half)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)
