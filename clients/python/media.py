"""What the Python client sends: files, or synthetic media, as aiortc tracks paced in real time.

- `FileVideoTrack` / `FileAudioTrack`: decode a video file (mp4, y4m, ...) / an audio file (wav, ...)
  with PyAV, looping when it ends; pts are re-stamped so they keep increasing across loops.
- `SyntheticFaceTrack`: a face drawn with OpenCV (ellipse head, eyes, brows, nose, mouth) that moves,
  talks and blinks; mediapipe's face mesh finds it, so the gateway sees a partner face.
- `SyntheticSpeechTrack`: a short tone, then espeak-ng sentences with pauses, looping (an
  amplitude-modulated tone when espeak-ng is missing): a voice with a clear loudness envelope.
Every track records when it handed each frame to the sender (`send_log`: (pts seconds, monotonic
time)), so a benchmark can turn the gateway's `source.host_audio_pts` / `source.partner_pts` back
into send times.

Audio leaves as 48 kHz mono s16 in 20 ms frames with pts counting samples from 0, so the gateway's
`host_audio_pts` (seconds since the first sample it received) equals this track's pts.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import shutil
import struct
import subprocess
import time
from collections import deque
from pathlib import Path

import av
import cv2
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_RATE = 48_000
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
AUDIO_FRAME_SAMPLES = 960  # 20 ms
SYNTHETIC_FPS = 25


class PacedTrack(MediaStreamTrack):
    """Returns each frame when its time has come (from the first recv), and logs the hand-over."""

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self.send_log: deque[tuple[float, float]] = deque(maxlen=100_000)

    async def _pace(self, t: float) -> None:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now - t
        wait = self._start + t - now
        if wait > 0:
            await asyncio.sleep(wait)
        self.send_log.append((t, time.monotonic()))


class FileVideoTrack(PacedTrack):
    kind = "video"

    def __init__(self, path: str | Path, loop: bool = True):
        super().__init__()
        self.path = Path(path)
        self.loop = loop
        self._container = av.open(str(self.path))
        if not self._container.streams.video:
            raise ValueError(f"{path}: no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        rate = self._stream.average_rate or self._stream.base_rate or 25
        self._frame_s = 1.0 / float(rate)
        self._frames = self._container.decode(self._stream)
        self._offset = 0.0
        self._first: float | None = None
        self._last_t = -self._frame_s

    def _next(self):
        for _ in range(2):
            try:
                frame = next(self._frames)
            except (StopIteration, av.EOFError):
                if not self.loop:
                    return None
                self._container.seek(0)
                self._frames = self._container.decode(self._stream)
                self._offset = self._last_t + self._frame_s
                self._first = None
                continue
            t_file = float(frame.pts * frame.time_base) if frame.pts is not None else self._last_t + self._frame_s
            if self._first is None:
                self._first = t_file
            t = self._offset + t_file - self._first
            self._last_t = t
            return frame, t
        return None

    async def recv(self):
        item = await asyncio.get_running_loop().run_in_executor(None, self._next)
        if item is None:
            self.stop()
            raise MediaStreamError
        frame, t = item
        await self._pace(t)
        frame.pts = int(round(t * VIDEO_CLOCK_RATE))
        frame.time_base = VIDEO_TIME_BASE
        return frame

    def stop(self) -> None:
        super().stop()


class _AudioFrames(PacedTrack):
    """Mono 48 kHz s16 samples -> 20 ms frames with pts counting samples."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._samples_sent = 0

    def _chunk(self) -> np.ndarray | None:  # (960,) int16, or None at the end
        raise NotImplementedError

    async def recv(self):
        pcm = self._chunk()
        if pcm is None:
            self.stop()
            raise MediaStreamError
        t = self._samples_sent / AUDIO_RATE
        await self._pace(t)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._samples_sent
        frame.time_base = AUDIO_TIME_BASE
        self._samples_sent += pcm.shape[0]
        return frame


def read_audio_file(path: str | Path) -> np.ndarray:
    """Any audio file -> 48 kHz mono int16 (PyAV decode + resample)."""
    container = av.open(str(path))
    try:
        if not container.streams.audio:
            raise ValueError(f"{path}: no audio stream")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
        parts = []
        for frame in container.decode(container.streams.audio[0]):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            parts.append(out.to_ndarray().reshape(-1))
    finally:
        container.close()
    return np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, np.int16)


class SamplesAudioTrack(_AudioFrames):
    """Plays a fixed 48 kHz mono int16 buffer, looping (or silence after it, when loop is False)."""

    def __init__(self, samples: np.ndarray, loop: bool = True):
        super().__init__()
        if samples.dtype != np.int16:
            samples = (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)
        pad = (-len(samples)) % AUDIO_FRAME_SAMPLES
        self.samples = np.concatenate([samples, np.zeros(pad, np.int16)]) if len(samples) else np.zeros(
            AUDIO_FRAME_SAMPLES, np.int16)
        self.loop = loop
        self._pos = 0

    def _chunk(self) -> np.ndarray:
        if self._pos >= len(self.samples):
            if not self.loop:
                return np.zeros(AUDIO_FRAME_SAMPLES, np.int16)
            self._pos = 0
        chunk = self.samples[self._pos:self._pos + AUDIO_FRAME_SAMPLES]
        self._pos += AUDIO_FRAME_SAMPLES
        return chunk


class FileAudioTrack(SamplesAudioTrack):
    def __init__(self, path: str | Path, loop: bool = True):
        self.path = Path(path)
        super().__init__(read_audio_file(path), loop=loop)


# -- synthetic media --------------------------------------------------------------------------------

SENTENCES = (
    "Hello, and welcome back to the show.",
    "Tonight we are talking about avatars that listen while you speak.",
    "That is a really interesting point, tell me more.",
    "I see. And what happened next?",
)


def espeak_samples(text: str, voice: str = "en-us") -> np.ndarray | None:
    """espeak-ng speech at 48 kHz mono int16 (through pipes, nothing on disk), None without espeak-ng."""
    if shutil.which("espeak-ng") is None:
        return None
    done = subprocess.run(["espeak-ng", "--stdin", "--stdout", "-v", voice], input=text.encode(),
                          capture_output=True, timeout=30)
    data = done.stdout
    if done.returncode != 0 or data[:4] != b"RIFF":
        return None
    rate = struct.unpack("<I", data[24:28])[0]
    start = data.find(b"data") + 8
    pcm = np.frombuffer(data[start:start + (len(data) - start) // 2 * 2], dtype="<i2").astype(np.float32)
    # resample to 48 kHz (linear interpolation is plenty for a test voice)
    n_out = int(len(pcm) * AUDIO_RATE / rate)
    resampled = np.interp(np.arange(n_out) * rate / AUDIO_RATE, np.arange(len(pcm)), pcm)
    return resampled.astype(np.int16)


def synthetic_voice(seed: int = 0, use_espeak: bool = True) -> np.ndarray:
    """A 0.25 s 880 Hz tone, then sentences separated by pauses (48 kHz mono int16)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.25 * AUDIO_RATE)) / AUDIO_RATE
    parts = [(0.3 * np.sin(2 * np.pi * 880 * t) * 32767).astype(np.int16),
             np.zeros(int(0.5 * AUDIO_RATE), np.int16)]
    for sentence in SENTENCES:
        speech = espeak_samples(sentence) if use_espeak else None
        if speech is None:  # syllable-like tone bursts instead
            n = int(2.0 * AUDIO_RATE)
            tt = np.arange(n) / AUDIO_RATE
            envelope = np.clip(np.sin(2 * np.pi * 3.0 * tt), 0, None)
            speech = (0.3 * envelope * np.sin(2 * np.pi * 220 * tt) * 32767).astype(np.int16)
        parts += [speech, np.zeros(int(rng.uniform(0.6, 1.2) * AUDIO_RATE), np.int16)]
    return np.concatenate(parts)


class SyntheticSpeechTrack(SamplesAudioTrack):
    def __init__(self, seed: int = 0, use_espeak: bool = True):
        super().__init__(synthetic_voice(seed, use_espeak), loop=True)


def draw_face(t: float, size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """(H, W, 3) uint8 BGR: a drawn face at time t (seconds): sways, nods, talks, blinks."""
    width, height = size
    image = np.full((height, width, 3), (70, 90, 60), np.uint8)
    cv2.rectangle(image, (0, int(height * 0.8)), (width, height), (50, 60, 80), -1)  # a desk
    face_h = 0.55 * height
    face_w = 0.72 * face_h
    cx = width / 2 + 0.06 * width * math.sin(2 * math.pi * 0.23 * t)
    cy = height * 0.48 + 0.03 * height * math.sin(2 * math.pi * 0.41 * t)
    roll = 6.0 * math.sin(2 * math.pi * 0.17 * t)
    mouth_open = max(0.0, math.sin(2 * math.pi * 2.1 * t)) * (0.5 + 0.5 * math.sin(2 * math.pi * 0.3 * t))
    blink = (t % 3.7) < 0.12

    def at(dx: float, dy: float) -> tuple[int, int]:  # face coordinates (fractions of face height) -> pixels
        a = math.radians(roll)
        x, y = dx * face_h, dy * face_h
        return int(cx + x * math.cos(a) - y * math.sin(a)), int(cy + x * math.sin(a) + y * math.cos(a))

    axes = lambda w, h: (max(1, int(w * face_h)), max(1, int(h * face_h)))  # noqa: E731
    cv2.ellipse(image, at(0, -0.42), axes(0.40, 0.22), roll, 180, 360, (30, 35, 45), -1)  # hair
    cv2.ellipse(image, at(0, 0), (int(face_w / 2), int(face_h / 2)), roll, 0, 360, (150, 180, 220), -1)  # skin
    cv2.ellipse(image, at(0, 0), (int(face_w / 2), int(face_h / 2)), roll, 0, 360, (110, 140, 180), 2)
    for side in (-1, 1):
        eye = at(side * 0.16, -0.08)
        if blink:
            cv2.line(image, at(side * 0.22, -0.08), at(side * 0.10, -0.08), (40, 40, 40), 3)
        else:
            cv2.ellipse(image, eye, axes(0.07, 0.035), roll, 0, 360, (245, 245, 245), -1)
            cv2.circle(image, eye, max(2, int(0.03 * face_h)), (50, 40, 30), -1)
        cv2.line(image, at(side * 0.24, -0.17 - 0.01 * mouth_open), at(side * 0.08, -0.19), (40, 45, 60), 5)  # brow
    cv2.line(image, at(0, -0.04), at(0.02, 0.12), (110, 140, 180), 3)  # nose
    cv2.line(image, at(0.02, 0.12), at(-0.04, 0.13), (110, 140, 180), 3)
    cv2.ellipse(image, at(0, 0.26), axes(0.13, 0.015 + 0.08 * mouth_open), roll, 0, 360, (60, 50, 140), -1)  # mouth
    if mouth_open > 0.2:
        cv2.ellipse(image, at(0, 0.26), axes(0.10, 0.06 * mouth_open), roll, 0, 360, (30, 20, 50), -1)
    return image


class SyntheticFaceTrack(PacedTrack):
    kind = "video"

    def __init__(self, size: tuple[int, int] = (640, 480), fps: int = SYNTHETIC_FPS):
        super().__init__()
        self.size = size
        self.fps = fps
        self._index = 0

    async def recv(self):
        t = self._index / self.fps
        self._index += 1
        await self._pace(t)
        frame = av.VideoFrame.from_ndarray(draw_face(t, self.size), format="bgr24")
        frame.pts = int(round(t * VIDEO_CLOCK_RATE))
        frame.time_base = VIDEO_TIME_BASE
        return frame
