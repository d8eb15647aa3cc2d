"""The per-session clock against a fake engine: pacing, A/V alignment, skipping instead of queueing.

Real time, real output tracks (read as aiortc's sender would), a fake data channel. The fake
engine's jawOpen follows the loudness of the mel rows the gateway gave it for each frame, so a
high correlation with the input audio at `host_audio_pts` proves the whole alignment chain:
timeline placement -> mel window -> frame index -> source timestamps -> output audio.
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

from f2f.avatar_spec import AvatarSpec
from f2f.features.mel import resample_to_16k
from f2f.timebase import AUDIO_SAMPLE_RATE, SAMPLES_PER_FRAME
from server.avatar_loop import AvatarLoop, Controls, LoopTiming
from server.data_channel import MotionChannel
from server.frames import SessionClock
from server.host_audio import HostAudioTimeline
from server.metrics import GatewayMetrics
from server.output_tracks import TICKS_PER_FRAME, HostAudioTrack, HostVideoTrack
from server.partner_input import GuestContext
from tests.support.fake_engine import FakeEngine

pytestmark = pytest.mark.timeout(60)


class FakeChannel:
    label = "motion"
    readyState = "open"
    bufferedAmount = 0

    def __init__(self):
        self.messages: list[dict] = []

    def send(self, text: str) -> None:
        self.messages.append(json.loads(text))


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise bursts with a syllable-rate envelope (and real silences), 16 kHz."""
    rng = np.random.default_rng(seed)
    n = int(seconds * AUDIO_SAMPLE_RATE)
    t = np.arange(n) / AUDIO_SAMPLE_RATE
    envelope = np.clip(np.sin(2 * np.pi * 2.7 * t) + 0.2 * np.sin(2 * np.pi * 0.7 * t), 0, None)
    return (0.15 * envelope * rng.standard_normal(n)).astype(np.float32)


async def run_loop(engine: FakeEngine, seconds: float, *, audio: np.ndarray | None = None,
                   timing: LoopTiming = LoopTiming(), controls: Controls | None = None):
    metrics = GatewayMetrics()
    clock = SessionClock()
    timeline = HostAudioTimeline(clock, metrics=metrics)
    guests = GuestContext(engine.spec)
    video, audio_out = HostVideoTrack(metrics), HostAudioTrack()
    channel = FakeChannel()
    motion = MotionChannel(metrics)
    motion.attach(channel)
    errors: list[tuple[str, bool]] = []
    loop = AvatarLoop(engine=engine, spec=engine.spec, clock=clock, audio=timeline, guests=guests, video=video,
                      audio_out=audio_out, motion=motion, controls=controls or Controls(1.0, engine.spec.frame_size),
                      metrics=metrics, timing=timing, seed=0, on_error=lambda m, fatal: errors.append((m, fatal)))
    received: dict = {"video": [], "audio": []}

    async def feed():  # 20 ms chunks in real time, as aiortc delivers Opus frames
        chunk = 320
        started = time.monotonic()
        for k in range(0, len(audio), chunk):
            await asyncio.sleep(max(0.0, started + (k + chunk) / AUDIO_SAMPLE_RATE - time.monotonic()))
            timeline.write(audio[k:k + chunk], k / AUDIO_SAMPLE_RATE)

    async def read_video():
        while True:
            frame = await video.recv()
            received["video"].append((frame.pts // TICKS_PER_FRAME, time.monotonic(), frame.to_ndarray(format="rgb24")))

    async def read_audio():
        while True:
            frame = await audio_out.recv()
            assert frame.sample_rate == 48000 and frame.samples == 960  # one Opus packet per frame
            received["audio"].append(frame.to_ndarray()[0].astype(np.float32) / 32767.0)

    tasks = [asyncio.create_task(loop.run()), asyncio.create_task(read_video()), asyncio.create_task(read_audio())]
    if audio is not None:
        tasks.append(asyncio.create_task(feed()))
    await asyncio.sleep(seconds)
    loop.stop()
    while not all(task.done() for task in tasks):  # re-cancel: wait_for may swallow one (Python < 3.12)
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=0.1)
    return loop, channel.messages, received, errors, clock


def test_frames_are_paced_aligned_with_the_audio_and_carry_their_sources(report):
    engine = FakeEngine()
    audio = speechlike(4.0)
    loop, messages, received, errors, clock = asyncio.run(run_loop(engine, 3.0, audio=audio))
    assert not errors
    frames = [index for index, _, _ in received["video"]]
    stats = loop.stats
    assert len(frames) >= 65, len(frames)  # 3 s at 25 fps, minus the start-up delay
    assert frames == sorted(set(frames)) and frames[0] == 0
    # Every frame index is either made (and sent, with its message) or counted as skipped; on a
    # machine shared with other work a few late ticks may be skipped, never many.
    assert stats.frames_made + stats.frames_skipped == loop.next_frame
    assert stats.frames_skipped <= 0.1 * loop.next_frame, stats
    message_frames = [m["frame"] for m in messages]
    assert message_frames == sorted(set(message_frames)) and set(frames) <= set(message_frames)

    # Each frame's jawOpen follows the loudness of the audio at its host_audio_pts.
    jaw, loud = [], []
    for m in messages:
        pts = m["source"]["host_audio_pts"]
        if pts is None:
            continue
        start = int(round(pts * AUDIO_SAMPLE_RATE))
        span = audio[start:start + SAMPLES_PER_FRAME]
        jaw.append(m["blendshapes"]["jawOpen"])
        loud.append(np.log(np.mean(span ** 2) + 1e-6))
    r = float(np.corrcoef(jaw, loud)[0, 1])
    assert len(jaw) >= 50 and r > 0.9, (len(jaw), r)

    # The audio sent with frame n is the input audio at that frame's host_audio_pts (sent as 48 kHz:
    # bring it back to 16 kHz and compare frame by frame).
    sent = resample_to_16k(np.concatenate(received["audio"]).astype(np.float32), 48000)
    by_frame = {m["frame"]: m for m in messages}
    expected, got = [], []
    for n in range(len(sent) // SAMPLES_PER_FRAME - 1):
        pts = by_frame[n]["source"]["host_audio_pts"] if n in by_frame else None
        if pts is None:
            continue
        start = int(round(pts * AUDIO_SAMPLE_RATE))
        expected.append(audio[start:start + SAMPLES_PER_FRAME])
        got.append(sent[n * SAMPLES_PER_FRAME:(n + 1) * SAMPLES_PER_FRAME])
    assert len(got) >= 50
    expected, got = np.concatenate(expected), np.concatenate(got)
    audio_r = float(np.corrcoef(expected, got)[0, 1])
    assert audio_r > 0.98, audio_r  # white-noise test signal: only the band edge at 8 kHz is lost

    # Latency: frame n goes out (K + L) frames + 7.5 ms + margin + compute after its audio.
    lags = [t - clock.at(n / 25) for n, t, _ in received["video"]]
    spec = engine.spec
    floor = (spec.frames_per_step + spec.lookahead_frames) / 25 + 0.0075 + LoopTiming().margin_s
    assert floor <= np.median(lags) <= floor + 0.04, (np.median(lags), floor)
    report(f"avatar loop (fake engine): {len(frames)} frames in 3 s, jawOpen~loudness r={r:.3f}, "
           f"frame out {np.median(lags) * 1000:.0f} ms after its audio (floor {floor * 1000:.0f} ms)")


def test_a_slow_engine_skips_frames_instead_of_queueing():
    engine = FakeEngine(step_delay_s=0.07)  # every step takes almost two frame intervals
    loop, messages, received, errors, clock = asyncio.run(run_loop(engine, 2.0, audio=speechlike(3.0)))
    stats = loop.stats
    assert stats.frames_skipped > 10 and stats.skipped_late == stats.frames_skipped
    # Latency stays bounded: no frame leaves later than max_late + one step after its due time.
    due = [loop.due_at(n) for n, _, _ in received["video"]]
    late = [t - d for (_, t, _), d in zip(received["video"], due)]
    assert max(late) < LoopTiming().max_late_s + 0.07 + 0.03, max(late)
    # Skipped frames still carry their audio: one audio chunk per frame index, made or skipped.
    assert len(received["audio"]) * 960 >= (loop.next_frame - 2) * 640 * 3


def test_engine_errors_skip_frames_and_a_fatal_error_stops_the_loop():
    engine = FakeEngine(fail_steps=range(3, 8), fatal_steps=[20])
    loop, messages, received, errors, clock = asyncio.run(run_loop(engine, 1.5))
    assert loop.stats.skipped_engine == 5
    assert [fatal for _, fatal in errors].count(False) == 5
    assert errors[-1][1] is True  # the fatal one ends the loop
    assert loop.stats.steps == 20 - 5  # nothing after the fatal step
    # No input audio: the host listens, and no frame claims an input time.
    assert all(m["source"]["host_audio_pts"] is None for m in messages)


def test_errors_shown_to_the_client_say_what_went_wrong():
    """A stalled step reports the deadline it missed (a timeout's own text is empty); a retryable
    engine error reports the engine's words."""
    engine = FakeEngine(step_delay_s=0.25)
    loop, messages, received, errors, clock = asyncio.run(run_loop(engine, 0.9, timing=LoopTiming(step_timeout_s=0.1)))
    assert loop.stats.skipped_engine >= 2, loop.stats
    assert errors and all(not fatal for _, fatal in errors), errors
    assert errors[0][0] == "engine step failed, frames skipped: no result within 0.10 s", errors
    engine = FakeEngine(fail_steps=[2])
    loop, messages, received, errors, clock = asyncio.run(run_loop(engine, 0.5))
    assert errors == [("engine step failed, frames skipped: fake retryable error on step 2", False)], errors


def test_lambda_video_reaches_the_engine_live_and_k_frames_per_step():
    spec = AvatarSpec(crop_size=32, guest_feature_dim=16, frame_size=64, frames_per_step=2)
    engine = FakeEngine(spec)

    controls = Controls(1.0, 96)  # also resized from the engine's 64 px to 96 px

    async def main():
        task = asyncio.create_task(run_loop(engine, 1.5, controls=controls))
        await asyncio.sleep(0.8)
        controls.lambda_video = 0.0
        return await task

    loop, messages, received, errors, clock = asyncio.run(main())
    lambdas = [request.lambda_video for request in engine.requests]
    assert lambdas[0] == 1.0 and lambdas[-1] == 0.0 and sorted(lambdas, reverse=True) == lambdas
    assert messages[-1]["lambda_video"] == 0.0
    assert received["video"][0][2].shape == (96, 96, 3)
    indices = [index for index, _, _ in received["video"]]
    assert indices == sorted(set(indices)) and len(indices) >= 25
    times = [t for _, t, _ in received["video"]]
    gaps = np.diff(times)
    assert np.median(gaps) == pytest.approx(0.04, abs=0.01)  # the second frame of a step waits for its tick
