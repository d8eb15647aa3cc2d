"""The backend-down policy with a real Triton: kill the server mid-stream, the session policy holds,
and calls return to Triton once it is back."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from engines.contract import BackendDownEndSession, EngineTimeouts
from engines.embedded import EmbeddedEngine
from engines.failover import BackendDownPolicy, FailoverEngine
from engines.triton import TritonEngine
from tests.integration.test_triton_backend import step_requests

TIMEOUTS = EngineTimeouts(encode_s=2.0, step_s=2.0, health_s=0.5, retries=0)


@pytest.mark.parametrize("policy", list(BackendDownPolicy))
def test_policy_holds_when_triton_dies_and_recovers(policy, triton_server, tiny_model_repository, report):
    async def scenario():
        primary = TritonEngine(triton_server.grpc_url, access_token=triton_server.access_token, timeouts=TIMEOUTS)
        fallback = EmbeddedEngine(tiny_model_repository) if policy is BackendDownPolicy.FAILOVER else None
        engine = FailoverEngine(primary, fallback, policy, health_interval_s=0.2)
        await engine.start()
        requests = step_requests(engine.spec, 1, seed=5)
        try:
            assert engine.active_backend == "triton"
            expected = (await engine.step(requests))[0].motion
            await asyncio.to_thread(triton_server.kill)
            killed = time.monotonic()
            outcomes = []
            while time.monotonic() - killed < 1.5:  # a 25 fps stream of steps while the server is gone
                try:
                    outcomes.append((await engine.step(requests))[0].motion)
                except BackendDownEndSession as error:
                    outcomes.append(error)
                await asyncio.sleep(0.04)
            if policy is BackendDownPolicy.FAILOVER:
                # Every tick got a frame: from the embedded engine, the same networks.
                assert all(isinstance(o, np.ndarray) for o in outcomes), outcomes[:3]
                np.testing.assert_allclose(outcomes[-1], expected, atol=1e-5)
                assert engine.active_backend == "embedded" and (await engine.health()).ready
            else:
                assert outcomes and all(isinstance(o, BackendDownEndSession) for o in outcomes[-10:])
                assert "end_session" in str(outcomes[-1])
                assert not (await engine.health()).ready
            await asyncio.to_thread(triton_server.start)
            back = time.monotonic()
            while engine.active_backend != "triton" and time.monotonic() - back < 10:
                await asyncio.sleep(0.05)
            assert engine.active_backend == "triton", "calls did not return to Triton after its restart"
            np.testing.assert_allclose((await engine.step(requests))[0].motion, expected, atol=1e-5)
            report(f"triton down, policy {policy.value}: {len(outcomes)} ticks in 1.5 s handled "
                   f"({'all served by embedded' if fallback else 'all ended with BackendDownEndSession'}); "
                   f"back on triton {time.monotonic() - back:.2f} s after its restart")
        finally:
            await engine.close()

    asyncio.run(scenario())


@pytest.mark.timeout(300)
@pytest.mark.parametrize("policy", list(BackendDownPolicy))
def test_a_live_gateway_session_when_triton_dies_and_returns(policy, triton_server, tiny_model_repository, report):
    """The same fault one level up: a real client streaming through a gateway whose backend is this Triton.
    Triton is SIGKILLed mid-session: `failover` keeps the session's frames coming from the embedded
    engine; `end_session` ends it (engine_error) and refuses new sessions (503 + Retry-After) while
    Triton is down. Once Triton is back, new sessions stream again, from Triton."""
    import httpx

    from tests.support.faults import RawClient
    from tests.support.gateway import gateway_in_loop
    from tests.support.scripted_media import AudioPhase, ScriptedAudioTrack, ScriptedVideoTrack, VideoPhase

    def client(url: str) -> RawClient:
        return RawClient(url, video=ScriptedVideoTrack([VideoPhase(120, (320, 240), 25)]),
                         audio=ScriptedAudioTrack([AudioPhase(120)]))

    async def until(predicate, timeout: float, what: str) -> float:
        started = time.monotonic()
        while not predicate():
            assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    async def scenario():
        async with gateway_in_loop(tiny_model_repository, backend="triton", triton_url=triton_server.grpc_url,
                                   on_backend_down=policy.value) as gw:
            failover = gw.gateway.engine.engine  # MicroBatcher -> FailoverEngine
            first = client(gw.url)
            await first.start()
            session = gw.gateway.sessions[first.session_id]
            await until(lambda: session.loop and session.loop.stats.frames_made > 25, 30, "frames from Triton")
            assert failover.active_backend == "triton"
            killed = time.monotonic()
            await asyncio.to_thread(triton_server.kill)
            async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
                if policy is BackendDownPolicy.FAILOVER:
                    made = session.loop.stats.frames_made
                    await asyncio.sleep(2.0)
                    served = session.loop.stats.frames_made - made
                    assert not session.closed and served >= 25, served  # generous: 50 due in 2 s
                    assert failover.active_backend == "embedded"
                    assert (await http.get("/readyz")).status_code == 200
                    outcome = f"the session went on from the embedded engine ({served} frames in 2 s)"
                else:
                    await until(lambda: session.closed, 15, "the session to end")
                    ended = session.closed_at - killed
                    assert session.close_reason == "engine_error"
                    assert (await http.get("/readyz")).status_code == 503
                    pc, sdp = await _offer()
                    refused = await http.post("/v1/sessions", json={"sdp": sdp})
                    await pc.close()
                    assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
                    assert "not ready" in refused.json()["error"]
                    outcome = (f"the session ended (engine_error) {ended:.2f} s after the kill; new offers "
                               f"got 503 + Retry-After")
                await asyncio.to_thread(triton_server.start)
                back = await until(lambda: failover.active_backend == "triton", 30, "calls back on Triton")
                assert (await http.get("/readyz")).status_code == 200
            second = client(gw.url)
            await second.start()
            renewed = gw.gateway.sessions[second.session_id]
            await until(lambda: renewed.loop and renewed.loop.stats.frames_made > 25, 30, "frames after the restart")
            assert failover.active_backend == "triton" and not renewed.closed
            if policy is BackendDownPolicy.FAILOVER:
                assert not session.closed  # the first session lived through it all
            for c in (first, second):
                await c.close()
            report(f"gateway session, Triton SIGKILLed (policy {policy.value}): {outcome}; calls back on Triton "
                   f"{back:.1f} s after its restart ({time.monotonic() - killed:.1f} s after the kill); a new "
                   f"session streamed again")

    asyncio.run(scenario())


async def _offer():
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.createDataChannel("motion")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp
