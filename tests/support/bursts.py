"""Speech-like test audio: bursts of noise at random levels separated by pauses."""

from __future__ import annotations

import numpy as np


def burst_envelope(rng: np.random.Generator, frames: int, start: int, length: tuple[int, int],
                   level: tuple[float, float], gap: tuple[int, int]) -> np.ndarray:
    """Per video frame the burst level (0 in pauses): bursts of `length` frames at a `level`, then a
    `gap`, from `start` until 10 frames before the end (integer ranges exclude their upper end).  # (frames,)"""
    envelope = np.zeros(frames)
    t = start
    while t < frames - 10:
        n = int(rng.integers(*length))
        envelope[t:t + n] = rng.uniform(*level)
        t += n + int(rng.integers(*gap))
    return envelope
