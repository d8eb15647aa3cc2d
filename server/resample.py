"""Streaming resampling to 16 kHz that equals `f2f.features.mel.resample_to_16k` of the whole stream.

Training resamples whole files with `resample_to_16k` (a zero-phase polyphase Kaiser filter, zero
padding at the edges). A live stream arrives in 10-20 ms chunks; resampling each chunk on its own
would zero-pad every chunk edge and click. `StreamingResampler` keeps the last few input samples and
emits exactly the outputs whose filter support has fully arrived, so the concatenation of everything
it returns is `resample_to_16k(whole_stream)` (plus `flush()` for the zero-padded tail). It holds back
about 10 input periods of the slower rate (< 1 ms at 48 kHz). Same numbers as training: no skew.

How: with up/down the reduced ratio 16000/rate, output m = sum_i x[i] h[m*down + half_len - i*up] over the
taps h[0 .. 2*half_len], i.e. it reads input samples i in [(m*down - half_len)/up, (m*down + half_len)/up]. Resampling a window that starts at input sample a (a multiple of
`down`) gives output m' = m - a*up/down with the same arithmetic, so outputs in the window's interior
are exact.
"""

from __future__ import annotations

import math

import numpy as np

from f2f.features.mel import resample_to_16k
from f2f.timebase import AUDIO_SAMPLE_RATE


class StreamingResampler:
    """Mono float32 audio at `sample_rate` in, 16 kHz out, chunk by chunk."""

    def __init__(self, sample_rate: int):
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = int(sample_rate)
        g = math.gcd(AUDIO_SAMPLE_RATE, self.sample_rate)
        self.up, self.down = AUDIO_SAMPLE_RATE // g, self.sample_rate // g
        self.half_len = 10 * max(self.up, self.down)  # as f2f.features.mel._resample_phases
        self._buf = np.zeros(0, dtype=np.float32)  # input samples from absolute index _buf_start on
        self._buf_start = 0
        self._received = 0  # input samples pushed
        self._emitted = 0  # output samples returned

    @property
    def passthrough(self) -> bool:
        return self.sample_rate == AUDIO_SAMPLE_RATE

    @property
    def output_samples(self) -> int:
        return self._emitted

    def _ready_outputs(self) -> int:
        """Outputs whose whole filter support has arrived: m with (m*down + half_len) // up < received."""
        top = self._received * self.up - self.half_len - 1  # m*down <= top
        return top // self.down + 1 if top >= 0 else 0

    def push(self, chunk: np.ndarray) -> np.ndarray:
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim != 1:
            raise ValueError(f"expected mono samples, got shape {chunk.shape}")
        if self.passthrough:
            self._received += chunk.shape[0]
            self._emitted += chunk.shape[0]
            return chunk.copy()
        self._buf = np.concatenate((self._buf, chunk))
        self._received += chunk.shape[0]
        return self._emit(self._ready_outputs())

    def flush(self) -> np.ndarray:
        """End of stream: the outputs that need the zero padding after the last sample."""
        if self.passthrough:
            return np.zeros(0, dtype=np.float32)
        total = -(-self._received * self.up // self.down)  # ceil, as resample_to_16k
        return self._emit(total)

    def _emit(self, upto: int) -> np.ndarray:
        first = self._emitted
        if upto <= first:
            return np.zeros(0, dtype=np.float32)
        # Window start: a multiple of `down`, at or before the oldest input sample output `first` reads.
        lowest = (first * self.down - self.half_len) // self.up  # may be negative (left zero padding)
        a = max(0, lowest) // self.down * self.down
        if a < self._buf_start:
            raise AssertionError("resampler dropped input it still needs")
        window = self._buf[a - self._buf_start:]
        out = resample_to_16k(window, self.sample_rate)
        offset = a // self.down * self.up  # output index of the window's output 0
        result = out[first - offset: upto - offset]
        if result.shape[0] != upto - first:
            raise AssertionError(f"resampler window too short: {result.shape[0]} != {upto - first}")
        self._emitted = upto
        # Keep only the input that future outputs can read.
        keep_from = max(0, (self._emitted * self.down - self.half_len) // self.up)
        keep_from = keep_from // self.down * self.down
        if keep_from > self._buf_start:
            self._buf = self._buf[keep_from - self._buf_start:].copy()
            self._buf_start = keep_from
        return result.astype(np.float32, copy=False)
