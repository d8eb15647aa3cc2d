"""Host video and host audio out: queue + recv() stamping pts from the session clock.

aiortc's sender calls `recv()`, encodes the frame on its thread pool, packetises and sends it, then
calls `recv()` again. The avatar loop `put`s each output instant into both tracks at the same moment,
so the receiver's RTCP-based lip sync lines them up:
- video frame n gets pts n * 3600 (90 kHz): pts come from the clock, so skipped frames leave a gap
  instead of shifting later frames;
- audio is one continuous stream (640 samples at 16 kHz per video frame, silence included, sent as
  48 kHz 20 ms frames), as Opus time stamps count samples.
The video queue holds at most 2 frames: if the encoder falls behind, the oldest waiting frame is
dropped (counted as a "backlog" skip) rather than queued. A stopped track wakes its waiting
`recv()` with MediaStreamError: a dead track is a state, not a busy loop.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from typing import Callable

import cv2
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, AudioResampler, VideoFrame

from f2f.timebase import AUDIO_SAMPLE_RATE, VIDEO_FPS
from server.metrics import GatewayMetrics

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
TICKS_PER_FRAME = VIDEO_CLOCK_RATE // VIDEO_FPS  # 3600
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_SAMPLE_RATE)
OPUS_RATE = 48_000
OPUS_TIME_BASE = fractions.Fraction(1, OPUS_RATE)
OPUS_FRAME_SAMPLES = 960  # 20 ms: one Opus packet
MAX_VIDEO_BACKLOG = 2
MAX_AUDIO_BACKLOG_S = 1.0


class _Wakeable(MediaStreamTrack):
    def __init__(self) -> None:
        super().__init__()
        self._ready = asyncio.Event()

    async def _wait(self, queue: deque):
        while not queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        if self.readyState != "live":
            raise MediaStreamError
        return queue.popleft()

    def stop(self) -> None:
        super().stop()
        self._ready.set()


class HostVideoTrack(_Wakeable):
    kind = "video"

    def __init__(self, metrics: GatewayMetrics, on_sent: Callable[[int], None] | None = None):
        super().__init__()
        self.metrics = metrics
        self._queue: deque[tuple[int, np.ndarray, float]] = deque()
        self._on_sent = on_sent
        self._returned_at: float | None = None
        self.frames_sent = 0
        self.frames_dropped = 0

    def put(self, index: int, rgb: np.ndarray) -> None:
        """Queue frame n (uint8 RGB). Drops the oldest waiting frame when the encoder is behind."""
        if self.readyState != "live":
            return
        while len(self._queue) >= MAX_VIDEO_BACKLOG:
            self._queue.popleft()
            self.frames_dropped += 1
            self.metrics.frames_skipped.labels(reason="backlog").inc()
        self._queue.append((index, rgb, time.perf_counter()))
        self._ready.set()

    async def recv(self) -> VideoFrame:
        now = time.perf_counter()
        if self._returned_at is not None:  # the sender came back: encode + packetise + send took this long
            self.metrics.observe("encode", now - self._returned_at)
            self._returned_at = None
        index, rgb, queued_at = await self._wait(self._queue)
        frame = to_i420_frame(rgb)
        frame.pts = index * TICKS_PER_FRAME
        frame.time_base = VIDEO_TIME_BASE
        self._returned_at = time.perf_counter()
        self.metrics.observe("send", self._returned_at - queued_at)
        self.frames_sent += 1
        self.metrics.frames_sent.inc()
        if self._on_sent is not None:
            self._on_sent(index)
        return frame


def to_i420_frame(rgb: np.ndarray) -> VideoFrame:
    """(H, W, 3) uint8 RGB (H, W even) -> a yuv420p VideoFrame, the encoders' own format.

    Handing aiortc RGB makes its encoder call `frame.reformat()`, which builds a new swscale context
    for every frame while holding the GIL (~1 ms at 256x256, far more on a busy machine);
    OpenCV's conversion is ~0.05 ms and releases the GIL.
    """
    return VideoFrame.from_ndarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), format="yuv420p")


class HostAudioTrack(_Wakeable):
    """16 kHz host audio in, 48 kHz 20 ms frames out.

    aiortc's Opus encoder stamps every packet of one `encode()` call with the same RTP timestamp, so
    a frame must make exactly one 20 ms Opus packet: we upsample to 48 kHz here (libswresample,
    streaming) and hand out 960-sample frames.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._resampler = AudioResampler(format="s16", layout="mono", rate=OPUS_RATE)
        # 960-sample int16 frames at 48 kHz, each with the gap (48 kHz samples left out) before it
        self._queue: deque[tuple[np.ndarray, int]] = deque()
        self._pending = np.zeros(0, dtype=np.int16)
        self._in_samples = 0
        self._samples_sent = 0
        self._gap = 0  # left out since the last queued frame
        self.samples_dropped = 0

    def skip(self, samples: int) -> None:
        """Leave out `samples` (16 kHz) of host audio: the stream's timestamps jump over them, so the
        audio that follows stays on the video's clock (a receiver conceals the gap) instead of
        running that much behind it for the rest of the session."""
        self._gap += samples * OPUS_RATE // AUDIO_SAMPLE_RATE

    def put(self, samples: np.ndarray) -> None:
        """Queue 16 kHz mono float32 samples (the host audio of one output instant)."""
        if self.readyState != "live":
            return
        pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_SAMPLE_RATE
        frame.pts = self._in_samples
        frame.time_base = AUDIO_TIME_BASE
        self._in_samples += pcm.shape[0]
        parts = [self._pending] + [out.to_ndarray().reshape(-1) for out in self._resampler.resample(frame)]
        pending = np.concatenate(parts)
        whole = pending.shape[0] // OPUS_FRAME_SAMPLES * OPUS_FRAME_SAMPLES
        for start in range(0, whole, OPUS_FRAME_SAMPLES):
            self._queue.append((pending[start:start + OPUS_FRAME_SAMPLES], self._gap))
            self._gap = 0
        self._pending = pending[whole:]
        while len(self._queue) > MAX_AUDIO_BACKLOG_S * OPUS_RATE / OPUS_FRAME_SAMPLES:  # the sender stalled
            _, gap = self._queue.popleft()  # dropped: a gap before the next one (timestamps stay on time)
            pcm, next_gap = self._queue[0]
            self._queue[0] = (pcm, next_gap + gap + OPUS_FRAME_SAMPLES)
            self.samples_dropped += OPUS_FRAME_SAMPLES
        self._ready.set()

    async def recv(self) -> AudioFrame:
        pcm, gap = await self._wait(self._queue)
        self._samples_sent += gap
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = OPUS_RATE
        frame.pts = self._samples_sent
        frame.time_base = OPUS_TIME_BASE
        self._samples_sent += pcm.shape[0]
        return frame
