"""Faults: clients that vanish, an engine that raises or stalls on one batch.

(Triton killed and restarted under a live gateway session: tests/integration/test_triton_failover.py,
next to the engine-level failover tests and their real Triton server.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import pytest

from engines.batcher import MicroBatcher
from engines.contract import FatalEngineError, RetryableEngineError, StepResult
from f2f.avatar_spec import AvatarSpec
from tests.support.fake_engine import FakeEngine
from tests.support.faults import Fault, FaultyEngine, RawClient, ResourceSnapshot, has_lambda
from tests.support.gateway import REPO_ROOT, gateway_in_loop
from tests.support.scripted_media import AudioPhase, ScriptedAudioTrack, ScriptedVideoTrack, VideoPhase

pytestmark = pytest.mark.timeout(240)


async def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


# -- a client vanishes: everything is released ----------------------------------------------------------

async def _vanishing_clients(gw, count: int) -> list[float]:
    """Start `count` client processes, let them stream, SIGKILL them (no DELETE, no BYE, no DTLS close);
    -> seconds from the kill until each session was freed."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    processes = [await asyncio.create_subprocess_exec(
        sys.executable, "-m", "clients.python", "--url", gw.url, "--synthetic", "--seconds", "120", "--loopback",
        cwd=REPO_ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True) for _ in range(count)]
    try:
        await wait_until(lambda: sum(1 for s in gw.gateway.sessions.values()
                                     if s.loop and s.loop.stats.frames_made > 25) >= count, 90, "streaming sessions")
    finally:
        killed_at = time.monotonic()
        for process in processes:
            os.killpg(process.pid, signal.SIGKILL)
        for process in processes:
            await process.wait()
    sessions = list(gw.gateway.sessions.values())
    await wait_until(lambda: all(s.closed for s in sessions), 15, "the sessions to close")
    for session in sessions:
        assert session.close_reason == "media_timeout", session.close_reason
        assert not session.tasks.tasks
        assert session.partner is not None and session.partner.featurizer_closed
        assert session.pc.connectionState == "closed"
        for track in (session.video_out, session.audio_out):
            assert track is None or track.readyState == "ended"
    assert not gw.gateway.sessions
    return [s.closed_at - killed_at for s in sessions]


async def _settled() -> ResourceSnapshot:
    await asyncio.sleep(1.0)  # closed transports finish their last callbacks
    import gc

    gc.collect()
    return ResourceSnapshot.take()


def test_vanished_clients_release_tasks_threads_fds_and_memory(tiny_model_repository, report):
    """Two clients at a time are SIGKILLed mid-stream. The first round warms up what is created once
    per process (codec thread pools, the face pool); after the second, every count is back."""
    async def main():
        async with gateway_in_loop(tiny_model_repository) as gw:
            await _vanishing_clients(gw, 2)
            before = await _settled()
            freed = await _vanishing_clients(gw, 2)
            after = await _settled()
            report(f"vanished clients: sessions freed {max(freed):.2f} s after SIGKILL; before {before}; "
                   f"after {after}")
            assert max(freed) < 5.0, freed
            assert after.tasks <= before.tasks, (before, after)
            assert after.fds <= before.fds, (before, after)
            assert after.threads <= before.threads + 2, (before, after)  # idle pool threads may be added, not leaked
            assert after.rss_mb - before.rss_mb < 60, (before, after)
            metrics = gw.gateway.metrics.render().decode()
            assert "f2f_sessions_active 0.0" in metrics
            assert 'f2f_sessions_ended_total{reason="media_timeout"} 4.0' in metrics

    asyncio.run(main())


# -- the engine raises or stalls on one batch ------------------------------------------------------------

SPEC = AvatarSpec(crop_size=32, guest_feature_dim=16, frame_size=64)
MARKED = 0.77  # λ_video of the session whose batches the faults hit


def faulty_gateway(window_s: float = 0.003):
    faulty = FaultyEngine(FakeEngine(SPEC))
    return faulty, MicroBatcher(faulty, window_s=window_s)


def client(url: str, lambda_video: float) -> RawClient:
    return RawClient(url, video=ScriptedVideoTrack([VideoPhase(60, (160, 120), 10, "face")]),
                     audio=ScriptedAudioTrack([AudioPhase(60, "speech")]), body={"lambda_video": lambda_video})


async def two_sessions(gw) -> tuple[RawClient, RawClient, object, object]:
    marked, other = client(gw.url, MARKED), client(gw.url, 1.0)
    await marked.start()
    await other.start()
    sessions = {s.controls.lambda_video: s for s in gw.gateway.sessions.values()}
    a, b = sessions[MARKED], sessions[1.0]
    await wait_until(lambda: a.loop and b.loop and a.loop.stats.frames_made > 25 and b.loop.stats.frames_made > 25,
                     20, "both sessions streaming")
    return marked, other, a, b


def test_an_engine_error_on_one_batch_skips_that_step_only(report):
    """A retryable error on the batch that carries session A's request: the sessions of that batch
    skip those K frames and go on; nothing closes."""
    async def main():
        faulty, engine = faulty_gateway()
        async with gateway_in_loop(None, engine=engine) as gw:
            marked, other, a, b = await two_sessions(gw)
            try:
                faulty.faults.append(Fault(has_lambda(MARKED), count=1, error=RetryableEngineError("injected")))
                await wait_until(lambda: faulty.faults[0].hits == 1, 10, "the fault")
                made = a.loop.stats.frames_made, b.loop.stats.frames_made
                await asyncio.sleep(1.0)
                assert a.loop.stats.skipped_engine == SPEC.frames_per_step and a.loop.stats.engine_errors == 1
                assert b.loop.stats.skipped_engine in (0, SPEC.frames_per_step)  # only if it shared the batch
                assert a.loop.stats.frames_made - made[0] >= 10 and b.loop.stats.frames_made - made[1] >= 10
                assert not a.closed and not b.closed
                report(f"engine raises on one batch: session A skipped {a.loop.stats.skipped_engine} frame(s) "
                       f"(engine), B {b.loop.stats.skipped_engine}; both went on")
            finally:
                await marked.close()
                await other.close()

    asyncio.run(main())


def test_one_sessions_failing_request_does_not_hurt_the_sessions_batched_with_it(report):
    """Errors caused by session A's requests (an untyped exception, then a fatal one) reach A only:
    the shared batch is tried again caller by caller, B never skips a frame."""
    async def main():
        faulty, engine = faulty_gateway(window_s=0.045)  # a frame-wide window: A and B share their batches
        async with gateway_in_loop(None, engine=engine) as gw:
            marked, other, a, b = await two_sessions(gw)
            try:
                await wait_until(lambda: any(len(batch) == 2 for batch in faulty.batches[-10:]), 10, "a shared batch")
                faulty.faults.append(Fault(has_lambda(MARKED), count=6, error=ValueError("bad request of A")))
                await wait_until(lambda: faulty.faults[0].hits >= 6, 10, "the untyped faults")
                await asyncio.sleep(0.5)
                assert a.loop.stats.skipped_engine >= 3 and not a.closed  # untyped: A skips, goes on
                assert b.loop.stats.skipped_engine == 0 and engine.fault_counts["isolated"] >= 1
                faulty.faults.append(Fault(has_lambda(MARKED), count=2, error=FatalEngineError("A's input is broken")))
                await wait_until(lambda: a.closed, 10, "A to end on its fatal error")
                assert a.close_reason == "engine_error"
                made = b.loop.stats.frames_made
                await asyncio.sleep(1.0)
                assert b.loop.stats.skipped_engine == 0 and b.loop.stats.frames_made - made >= 15 and not b.closed
                report(f"one session's bad requests: A skipped {a.loop.stats.skipped_engine} frames then ended "
                       f"({a.close_reason}); B skipped 0 and kept {b.stats()['fps']} fps; "
                       f"{engine.fault_counts['isolated']} shared batches retried caller by caller")
            finally:
                await marked.close()
                await other.close()

    asyncio.run(main())


def test_a_stalled_batch_holds_only_its_own_sessions(report):
    """The engine stalls 3 s on a batch holding only session A: A skips about one step timeout of
    frames and recovers; B's batches run beside the stalled call and B skips nothing."""
    async def main():
        faulty, engine = faulty_gateway(window_s=0.00005)  # sessions ticking apart are batched apart
        async with gateway_in_loop(None, engine=engine, step_timeout_s=0.5) as gw:
            marked, other, a, b = await two_sessions(gw)
            try:
                alone = lambda requests: all(abs(r.lambda_video - MARKED) < 1e-6 for r in requests)  # noqa: E731
                faulty.faults.append(Fault(alone, count=1, stall_s=3.0))
                await wait_until(lambda: faulty.faults[0].hits == 1, 10, "the stall")
                stalled_at, made_b = time.monotonic(), b.loop.stats.frames_made
                skipped_b = b.loop.stats.skipped_engine
                await asyncio.sleep(3.0)
                made_during = b.loop.stats.frames_made - made_b
                assert b.loop.stats.skipped_engine == skipped_b == 0, "B waited behind A's stalled batch"
                assert made_during >= 0.5 * 25 * 3.0, made_during  # generous: a busy 2-core machine
                assert a.loop.stats.skipped_engine >= 1 and not a.closed
                made_a = a.loop.stats.frames_made
                await asyncio.sleep(1.0)
                assert a.loop.stats.frames_made - made_a >= 10, "A did not recover after its stalled batch"
                report(f"engine stalls 3 s on A's batch: A skipped {a.loop.stats.frames_skipped} frames "
                       f"({a.loop.stats.skipped_engine} engine, {a.loop.stats.skipped_late} late) and recovered; "
                       f"B made {made_during} frames in those 3 s, skipped {b.loop.stats.frames_skipped}; "
                       f"batcher stalls seen {engine.fault_counts['stalled']}")
                del stalled_at
            finally:
                await marked.close()
                await other.close()

    asyncio.run(main())


# -- the batcher alone (deterministic) ---------------------------------------------------------------------

class _Scripted:
    """A minimal engine: results echo the request noise; `stall`/`raise_for` pick requests by λ."""

    name = "scripted"
    spec = SPEC

    def __init__(self):
        self.stall_for: set[float] = set()
        self.raise_for: dict[float, BaseException] = {}
        self.calls: list[list[float]] = []

    async def start(self):
        pass

    async def close(self):
        pass

    async def step(self, requests):
        lambdas = [r.lambda_video for r in requests]
        self.calls.append(lambdas)
        if self.stall_for & set(lambdas):
            await asyncio.sleep(10)
        for value in lambdas:
            if value in self.raise_for:
                raise self.raise_for[value]
        return [StepResult(motion=r.noise, frames=None) for r in requests]


def _request(value: float):
    import numpy as np

    from engines.contract import StepRequest

    return StepRequest(audio_mel=np.zeros((1, 1), np.float32), guest_features=np.zeros((1, 1, 1), np.float32),
                       guest_visible=np.zeros((1, 1), np.float32), motion_history=np.zeros((1, 15), np.float32),
                       noise=np.full((1, 15), value, np.float32), lambda_video=value)


def test_batcher_isolates_failures_and_abandons_stalled_calls():
    async def main():
        engine = _Scripted()
        batcher = MicroBatcher(engine, window_s=0.05, stall_s=0.05, call_timeout_s=0.5)
        batcher.expected_callers = 3
        await batcher.start()
        try:
            # One caller's request breaks the shared batch: the others still get their results.
            engine.raise_for = {2.0: ValueError("malformed"), 3.0: FatalEngineError("fatal for 3")}
            outcomes = await asyncio.gather(*(batcher.step([_request(v)]) for v in (1.0, 2.0, 3.0)),
                                            return_exceptions=True)
            assert float(outcomes[0][0].motion[0, 0]) == 1.0
            assert isinstance(outcomes[1], RetryableEngineError) and "ValueError" in str(outcomes[1])
            assert isinstance(outcomes[2], FatalEngineError)
            assert engine.calls[0] == [1.0, 2.0, 3.0] and sorted(map(tuple, engine.calls[1:])) == [(1.0,), (2.0,), (3.0,)]
            # A stalled call: its caller gets a retryable error after call_timeout_s, and a caller that
            # comes after it is served meanwhile.
            engine.raise_for = {}
            engine.stall_for = {9.0}
            batcher.expected_callers = 1
            stalled = asyncio.ensure_future(batcher.step([_request(9.0)]))
            await asyncio.sleep(0.1)
            started = time.monotonic()
            (result,) = await batcher.step([_request(4.0)])
            assert float(result.motion[0, 0]) == 4.0 and time.monotonic() - started < 0.3
            with pytest.raises(RetryableEngineError, match="abandoned"):
                await stalled
            assert batcher.fault_counts == {"stalled": 1, "abandoned": 1, "isolated": 1}
        finally:
            await batcher.close()

    asyncio.run(main())


def test_host_audio_timestamps_stay_on_the_video_clock_after_stalls():
    """Audio left out after a long stall, or dropped because the sender stalled, leaves a gap in the
    audio timestamps: what follows keeps its place on the video's clock (A/V drift does not build up)."""
    import numpy as np

    from server.output_tracks import HostAudioTrack

    async def main():
        track = HostAudioTrack()
        track.put(np.zeros(640 * 3, np.float32))  # 120 ms
        track.skip(640 * 50)  # 2 s not sent (a stall longer than the audio a skip re-sends)
        track.put(np.zeros(640 * 3, np.float32))
        for _ in range(80):  # 3.2 s queued while the sender does not read: the oldest go, as a gap
            track.put(np.zeros(640, np.float32))
        frames = []
        while track._queue:
            frames.append(await track.recv())
        track.stop()
        return frames, track.samples_dropped

    frames, dropped = asyncio.run(main())
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    sent_or_skipped = pts[-1] + 960 + 0  # the last frame's end, in 48 kHz samples
    # Everything put (3 + 3 + 80 frames of 40 ms) plus the 2 s skipped, minus what the resampler holds back.
    expected = (3 + 50 + 3 + 80) * 640 * 3
    assert expected - 960 * 2 <= sent_or_skipped <= expected, (sent_or_skipped, expected, dropped)
    assert dropped > 0
