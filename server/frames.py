"""The typed things that flow through a session, each with its timestamps, and the session clock.

Times: `*_at` fields are `time.monotonic()` seconds on the gateway; `*_pts` fields are media
presentation times in seconds. Input pts count from the first frame the gateway received on that
track (aiortc rebases each incoming RTP stream to 0); output pts count from the session clock's zero.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from f2f.timebase import AUDIO_SAMPLE_RATE, SAMPLES_PER_FRAME, VIDEO_FPS

FRAME_SECONDS = 1.0 / VIDEO_FPS


class SessionClock:
    """The one 25 fps clock of a session. Zero is when media starts (the connection is up)."""

    def __init__(self, now: Callable[[], float] = time.monotonic):
        self._now = now
        self.t0: float | None = None

    def start(self, backdate_s: float = 0.0) -> None:
        """Start now; `backdate_s` puts zero that far in the past (the first frames are due at once)."""
        if self.t0 is None:
            self.t0 = self._now() - backdate_s

    @property
    def started(self) -> bool:
        return self.t0 is not None

    def now(self) -> float:
        return self._now()

    def elapsed(self) -> float:
        """Seconds since zero (0 before the clock starts)."""
        return 0.0 if self.t0 is None else self._now() - self.t0

    def samples(self) -> int:
        """16 kHz samples since zero: where audio arriving now belongs on the session timeline."""
        return int(self.elapsed() * AUDIO_SAMPLE_RATE)

    def at(self, seconds: float) -> float:
        """Monotonic time of session time `seconds`."""
        assert self.t0 is not None, "clock not started"
        return self.t0 + seconds


@dataclass(frozen=True)
class PartnerFrame:
    """One partner video frame as aiortc delivered it (still YUV; converted on the face worker)."""

    frame: object  # av.VideoFrame
    pts: float  # seconds since the first partner frame received
    received_at: float


@dataclass(frozen=True)
class GuestObservation:
    """What the face worker made of one partner frame."""

    feature: np.ndarray  # (D,) float32 guest feature; zeros when no face
    visible: bool  # a face was found
    partner_pts: float
    observed_at: float  # when the feature became available
    geometry: np.ndarray | None = None  # (15,) the partner's motion parameters, when a face was found


@dataclass
class HostFrame:
    """One output instant of the host: video frame n, its motion, and the 40 ms of host audio it carries."""

    index: int  # n: frame n covers session time [n/25, (n+1)/25)
    motion: np.ndarray  # (15,) f2f.motion.MOTION_FIELDS
    audio: np.ndarray  # (640,) float32 16 kHz: session samples [640n, 640n + 640)
    rgb: np.ndarray | None  # (F, F, 3) uint8, None when the frame was skipped
    lambda_video: float
    host_audio_pts: float | None  # input host-audio time of session sample 640n (None: no input audio there)
    partner_pts: float | None  # pts of the newest partner frame in the guest context (None: none yet)
    partner_visible: bool  # that partner frame showed a face
    made_at: float = field(default_factory=time.monotonic)

    @property
    def pts(self) -> float:
        return self.index * FRAME_SECONDS


def frame_first_sample(index: int) -> int:
    return index * SAMPLES_PER_FRAME
