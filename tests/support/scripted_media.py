"""Scripted client media for the reliability tests: a camera and a microphone that change mid-call.

`ScriptedVideoTrack` plays a list of `VideoPhase`s (size, frame rate, and what the camera shows:
the drawn face of `clients.python.media.draw_face`, an empty room, black, a frozen picture, or a
stalled camera that sends nothing), paced in real time with pts on one 90 kHz clock from 0, so the
gateway's `partner_pts` tells which phase a motion message was conditioned on (`phase_at`).
`ScriptedAudioTrack` plays `AudioPhase`s (speech-like noise, silence, a clipping square wave, a
tone) at any sample rate and channel count, in 20 ms frames.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from dataclasses import dataclass

import av
import cv2
import numpy as np

from clients.python.media import PacedTrack, draw_face

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
VIDEO_CONTENTS = ("face", "noface", "black", "frozen", "stalled")
AUDIO_CONTENTS = ("speech", "silence", "clipping", "tone")


@dataclass(frozen=True)
class VideoPhase:
    seconds: float
    size: tuple[int, int] = (320, 240)
    fps: float = 25.0
    content: str = "face"

    def __post_init__(self) -> None:
        assert self.content in VIDEO_CONTENTS, self.content


@dataclass(frozen=True)
class AudioPhase:
    seconds: float
    content: str = "speech"

    def __post_init__(self) -> None:
        assert self.content in AUDIO_CONTENTS, self.content


def _starts(phases) -> list[float]:
    starts, t = [], 0.0
    for phase in phases:
        starts.append(t)
        t += phase.seconds
    return starts


def empty_room(size: tuple[int, int]) -> np.ndarray:
    """A camera picture with no face in it (a wall, a desk, a shelf)."""
    width, height = size
    image = np.full((height, width, 3), (70, 90, 60), np.uint8)
    image[int(height * 0.8):] = (50, 60, 80)
    image[int(height * 0.2):int(height * 0.5), int(width * 0.6):int(width * 0.9)] = (40, 70, 120)
    return image


class ScriptedVideoTrack(PacedTrack):
    """A camera on a wall clock: the phase is chosen by the time since the first frame, and when the
    sender (the client's encoder) falls behind, frames are dropped as a real camera's would be.
    Pictures are drawn on a worker thread, so a 1080p script does not block the event loop."""

    kind = "video"
    DRAW_MAX_WIDTH = 640  # larger frames are drawn at this width and scaled up (cheap, same content)

    def __init__(self, phases: list[VideoPhase]):
        super().__init__()
        self.phases = phases
        self.starts = _starts(phases)
        self._t = 0.0
        self._frozen: np.ndarray | None = None
        self.frames_sent = 0
        self.sizes_sent: set[tuple[int, int]] = set()

    def phase_index(self, t: float) -> int:
        """Index of the phase playing at script time t (phases may be equal: compare times, not values)."""
        for index in range(len(self.phases) - 1, -1, -1):
            if t >= self.starts[index]:
                return index
        return 0

    def phase_at(self, t: float) -> VideoPhase:
        return self.phases[self.phase_index(t)]

    def _picture(self, phase: VideoPhase, t: float) -> np.ndarray:
        if phase.content == "frozen" and self._frozen is not None and self._frozen.shape[:2] == phase.size[::-1]:
            return self._frozen
        width, height = phase.size
        scale = min(1.0, self.DRAW_MAX_WIDTH / width)
        small = (max(2, int(width * scale)), max(2, int(height * scale)))
        if phase.content in ("face", "frozen"):
            image = draw_face(t, small)
        elif phase.content == "black":
            image = np.zeros((small[1], small[0], 3), np.uint8)
        else:
            image = empty_room(small)
        if small != phase.size:
            image = cv2.resize(image, phase.size, interpolation=cv2.INTER_LINEAR)
        self._frozen = image if phase.content == "frozen" else None
        return image

    def _make(self, phase: VideoPhase, t: float):
        frame = av.VideoFrame.from_ndarray(self._picture(phase, t), format="bgr24")
        return frame.reformat(format="yuv420p")  # what the encoder wants, converted off the loop too

    async def recv(self):
        t = self._t
        if self._start is not None:
            t = max(t, time.monotonic() - self._start)  # behind: the frames in between are dropped
        index = self.phase_index(t)
        phase = self.phases[index]
        if phase.content == "stalled":  # the camera sends nothing until its next phase
            if index == len(self.phases) - 1:
                await asyncio.sleep(3600)
            t = self.starts[index] + phase.seconds
            phase = self.phase_at(t)
        await self._pace(t)
        frame = await asyncio.to_thread(self._make, phase, t)
        frame.pts = int(round(t * VIDEO_CLOCK_RATE))
        frame.time_base = VIDEO_TIME_BASE
        self._t = t + 1.0 / phase.fps
        self.frames_sent += 1
        self.sizes_sent.add(phase.size)
        return frame


class ScriptedAudioTrack(PacedTrack):
    """20 ms s16 frames at `rate` Hz with `channels` channels (stereo: the content on the left, the right silent)."""

    kind = "audio"

    def __init__(self, phases: list[AudioPhase], rate: int = 48_000, channels: int = 1, seed: int = 0):
        super().__init__()
        self.phases = phases
        self.starts = _starts(phases)
        self.rate = rate
        self.channels = channels
        self._rng = np.random.default_rng(seed)
        self._sent = 0
        self.frames_sent = 0

    def _content(self, t: np.ndarray, content: str) -> np.ndarray:
        if content == "silence":
            return np.zeros_like(t)
        if content == "clipping":  # a square wave far past full scale: it saturates at +-32767
            return np.sign(np.sin(2 * np.pi * 180 * t)) * 4.0
        if content == "tone":
            return 0.3 * np.sin(2 * np.pi * 220 * t)
        envelope = np.clip(np.sin(2 * np.pi * 2.7 * t), 0, None)  # syllables
        return 0.3 * envelope * self._rng.standard_normal(t.shape[0])

    async def recv(self):
        samples = self.rate // 50
        t0 = self._sent / self.rate
        await self._pace(t0)
        t = t0 + np.arange(samples) / self.rate
        content = self.phases[-1].content
        for phase, start in zip(self.phases, self.starts):
            if t0 < start + phase.seconds:
                content = phase.content
                break
        mono = np.clip(self._content(t, content) * 32767.0, -32767, 32767).astype(np.int16)
        if self.channels == 2:
            pcm = np.stack([mono, np.zeros_like(mono)], axis=1).reshape(1, -1)  # interleaved L R
            layout = "stereo"
        else:
            pcm = mono.reshape(1, -1)
            layout = "mono"
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout=layout)
        frame.sample_rate = self.rate
        frame.pts = self._sent
        frame.time_base = fractions.Fraction(1, self.rate)
        self._sent += samples
        self.frames_sent += 1
        return frame
