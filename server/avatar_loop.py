"""The per-session 25 fps clock: each tick makes the next K host frames and sends them out.

This is the hot path. For frames [n, n+K):
1. wait until their audio (plus the look-ahead L and the last mel window's 7.5 ms) should have
   arrived: session time (n+K+L)/25 + 7.5 ms + `margin_s` (the "lead"); if input audio is live but
   not there yet, wait for it to arrive, at most `grace_s` more. The margin is 0 by default: the
   20 ms packet holding the last sample needed arrives up to 20 ms after that sample's time, and
   waiting for its arrival (rather than a fixed margin) starts the step the moment it is there;
2. if the wait overran by `max_late_s` or more, skip the frames whose time has passed (their audio
   still goes out; the frames are counted as skipped): latency never accumulates. A smaller delay
   is caught up by making the next frames back to back;
3. finalise the host audio timeline and take the mel window of frames [n - past, n + K + L);
4. advance the guest context one slot per frame (newest partner feature, or invisible);
5. one engine step (through the micro-batcher): motion generator -> renderer, fresh noise, λ_video;
6. hand each frame, its 40 ms of host audio and its motion message to the output tracks and the
   data channel at the same moment (so the receiver's lip sync lines them up).
Output therefore runs (K + L) frames + 7.5 ms + margin (+ the wait for the packet) + compute behind
the input audio. The clock's zero is put one lead before the connection came up, so frame 0 is due
at once: the first frames have no host audio (there was none before the connection) and the first
frame leaves without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from engines.contract import AvatarEngine, FatalEngineError, RetryableEngineError, StepRequest
from f2f.avatar_spec import MOTION_GENERATOR, RENDERER, AvatarSpec
from f2f.motion import neutral_vector
from f2f.timebase import AUDIO_SAMPLE_RATE, SAMPLES_PER_FRAME
from server.data_channel import MotionChannel
from server.frames import FRAME_SECONDS, HostFrame, SessionClock
from server.host_audio import HostAudioTimeline
from server.metrics import GatewayMetrics
from server.output_tracks import HostAudioTrack, HostVideoTrack
from server.partner_input import GuestContext

log = logging.getLogger(__name__)

MAX_SKIPPED_AUDIO_FRAMES = 25  # host audio of skipped frames sent out, at most (1 s)
NETWORK_STAGES = {MOTION_GENERATOR: "motion", RENDERER: "render"}  # engine network -> metrics stage


@dataclass
class Controls:
    """What a client may change while the session runs (PATCH /v1/sessions/{id})."""

    lambda_video: float
    output_size: int


@dataclass
class LoopTiming:
    margin_s: float = 0.0  # fixed wait past the audio's due time (F2F_AUDIO_MARGIN_MS)
    # Wait for live input audio that is not there yet: a 20 ms packet ends up to 20 ms after the sample
    # needed, plus network jitter. Tolerance is margin + grace (as 30 + 20 ms before), paid only when late.
    grace_s: float = 0.050
    step_timeout_s: float = 0.5
    # Later than this: skip frames; earlier: catch up back to back. 100 ms past the audio's due time
    # skips where 80 ms past the old 30 ms margin did, so a busy machine skips no more than before.
    max_late_s: float = 0.100


@dataclass
class LoopStats:
    frames_made: int = 0
    frames_skipped: int = 0
    skipped_late: int = 0
    skipped_engine: int = 0
    steps: int = 0
    first_frame_at: float | None = None
    last_step_s: float = 0.0
    step_s_total: float = 0.0
    late_s_max: float = 0.0
    engine_errors: int = 0
    sent_times: deque = field(default_factory=lambda: deque(maxlen=100))  # monotonic times of frames sent

    def fps(self, now: float, window_s: float = 2.0) -> float:
        recent = [t for t in self.sent_times if now - t <= window_s]
        if len(recent) < 2:
            return 0.0
        span = max(now - recent[0], FRAME_SECONDS * (len(recent) - 1))
        return round((len(recent) - 1) / span, 2) if span > 0 else 0.0


class AvatarLoop:
    def __init__(self, *, engine: AvatarEngine, spec: AvatarSpec, clock: SessionClock, audio: HostAudioTimeline,
                 guests: GuestContext, video: HostVideoTrack | None, audio_out: HostAudioTrack | None,
                 motion: MotionChannel, controls: Controls, metrics: GatewayMetrics,
                 timing: LoopTiming = LoopTiming(), seed: int | None = None,
                 on_error: Callable[[str, bool], None] | None = None):
        self.engine = engine
        self.spec = spec
        self.clock = clock
        self.audio = audio
        self.guests = guests
        self.video = video
        self.audio_out = audio_out
        self.motion = motion
        self.controls = controls
        self.metrics = metrics
        self.timing = timing
        self.rng = np.random.default_rng(seed)
        self.on_error = on_error or (lambda message, fatal: None)
        self.stats = LoopStats()
        self.next_frame = 0
        self.stopped = False
        history = np.tile(neutral_vector(), (spec.motion_history_frames, 1))
        self._history = history.astype(np.float32)  # (H, 15) the last host motion frames
        self._last_motion = neutral_vector()

    def stop(self) -> None:
        """No step starts after this (the session also cancels the task; this makes it certain)."""
        self.stopped = True

    # -- schedule --------------------------------------------------------------------------------

    def lead_s(self) -> float:
        """How far output frame n runs behind session time n / 25 (before compute)."""
        needed = self.audio.needed_for(self.spec.frames_per_step + self.spec.lookahead_frames)
        return needed / AUDIO_SAMPLE_RATE + self.timing.margin_s

    def due_at(self, n: int) -> float:
        """Monotonic time at which frames [n, n+K) can be made."""
        needed = self.audio.needed_for(n + self.spec.frames_per_step + self.spec.lookahead_frames)
        return self.clock.at(needed / AUDIO_SAMPLE_RATE + self.timing.margin_s)

    async def _wait_for_input_audio(self, needed: int) -> None:
        audio = self.audio
        deadline = time.monotonic() + self.timing.grace_s
        while audio.input_live and (audio.write_position or 0) < needed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            audio.arrived.clear()
            try:
                await asyncio.wait_for(audio.arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return

    # -- the loop ----------------------------------------------------------------------------------

    async def run(self) -> None:
        spec = self.spec
        K, L, past = spec.frames_per_step, spec.lookahead_frames, spec.audio_past_frames
        self.clock.start(backdate_s=self.lead_s())
        while not self.stopped:
            n = self.next_frame
            due = self.due_at(n)
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            needed = self.audio.needed_for(n + K + L)
            await self._wait_for_input_audio(needed)
            late = time.monotonic() - due
            self.stats.late_s_max = max(self.stats.late_s_max, late)
            self.metrics.observe("late", max(0.0, late))
            if late >= self.timing.max_late_s:
                skip = math.ceil(int(late / FRAME_SECONDS) / K) * K
                self._skip(n, skip, "late")
                continue

            started = time.perf_counter()
            self.audio.finalize_to(needed)
            mel = self.audio.mel_window(n - past, n + K + L)  # (4 * (past + K + L), 80)
            self.metrics.observe("audio_features", time.perf_counter() - started)
            for _ in range(K - 1):
                self.guests.tick(time.monotonic())
            features, visible, partner_pts, partner_visible = self.guests.tick(time.monotonic())
            lambda_video = float(self.controls.lambda_video)
            request = StepRequest(
                audio_mel=mel,
                guest_features=features,  # (P, G, D)
                guest_visible=visible,  # (P, G)
                motion_history=self._history.copy(),  # (H, 15)
                noise=self.rng.standard_normal((spec.noise_frames, spec.motion_dim)).astype(np.float32),  # (K+Q, 15)
                lambda_video=lambda_video,
            )
            started = time.perf_counter()
            try:
                (result,) = await asyncio.wait_for(self.engine.step([request]), self.timing.step_timeout_s)
            except (asyncio.TimeoutError, RetryableEngineError) as error:
                self.stats.engine_errors += 1
                self.metrics.engine_errors.labels(kind=type(error).__name__).inc()
                if isinstance(error, asyncio.TimeoutError):  # its str() is empty: say what ran out
                    reason = f"no result within {self.timing.step_timeout_s:.2f} s"
                else:
                    reason = str(error) or type(error).__name__
                self.on_error(f"engine step failed, frames skipped: {reason}", False)
                self._skip(n, K, "engine")
                continue
            except FatalEngineError as error:
                self.stats.engine_errors += 1
                self.metrics.engine_errors.labels(kind=type(error).__name__).inc()
                self.on_error(f"engine failed: {error}", True)
                return
            if self.stopped:
                return
            step_s = time.perf_counter() - started
            self.metrics.observe("step", step_s)
            for network, stage in NETWORK_STAGES.items():  # the step's own split, where the engine reports it
                if network in result.network_seconds:
                    self.metrics.observe(stage, result.network_seconds[network])
            self.stats.steps += 1
            self.stats.last_step_s = step_s
            self.stats.step_s_total += step_s

            for i in range(K):
                if i:  # later frames of a multi-frame step go out on their own ticks
                    wait = due + i * FRAME_SECONDS - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                self._emit(HostFrame(
                    index=n + i,
                    motion=np.asarray(result.motion[i], dtype=np.float32),
                    audio=self.audio.output_audio(n + i),
                    rgb=self._sized(result.frames[i]),
                    lambda_video=lambda_video,
                    host_audio_pts=self.audio.source_pts_at((n + i) * SAMPLES_PER_FRAME),
                    partner_pts=partner_pts,
                    partner_visible=partner_visible,
                ))
            self._history = np.concatenate([self._history, np.asarray(result.motion, dtype=np.float32)])[-len(self._history):]
            self.next_frame = n + K

    def _sized(self, rgb: np.ndarray) -> np.ndarray:
        size = self.controls.output_size
        if rgb.shape[0] == size and rgb.shape[1] == size:
            return rgb
        return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA if size < rgb.shape[0] else cv2.INTER_LINEAR)

    def _emit(self, frame: HostFrame) -> None:
        if self.video is not None:
            self.video.put(frame.index, frame.rgb)
        if self.audio_out is not None:
            self.audio_out.put(frame.audio)
        self.motion.send(frame)
        self.stats.frames_made += 1
        if self.stats.first_frame_at is None:
            self.stats.first_frame_at = time.monotonic()
        if self.video is None:  # no video sender to count sends: count what was made
            self.stats.sent_times.append(time.monotonic())

    def _skip(self, n: int, count: int, reason: str) -> None:
        """Frames [n, n+count) are not made; their host audio still goes out, in order."""
        self.audio.finalize_to(self.audio.needed_for(n + count))
        if self.audio_out is not None:  # after a long stall only the last second is worth sending
            first = max(0, count - MAX_SKIPPED_AUDIO_FRAMES)
            self.audio_out.skip(first * SAMPLES_PER_FRAME)  # the rest keeps its place on the video's clock
            for i in range(first, count):
                self.audio_out.put(self.audio.output_audio(n + i))
        for _ in range(min(count, self.spec.guest_context_frames)):
            self.guests.tick(time.monotonic())
        self.stats.frames_skipped += count
        if reason == "late":
            self.stats.skipped_late += count
        else:
            self.stats.skipped_engine += count
        self.metrics.frames_skipped.labels(reason=reason).inc(count)
        self.next_frame = n + count
