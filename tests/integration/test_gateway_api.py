"""The gateway's API against real aiortc peers over loopback, with the real embedded engine.

Each test serves a gateway (uvicorn in the test's event loop, the EmbeddedEngine on the tiny exported
avatar) and talks to it with the Python client library or raw HTTP, as a client would.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

import httpx
import numpy as np
import pytest
import websockets
from aiortc import RTCPeerConnection

from clients.python import AvatarClient, ClientOptions
from clients.python.media import SyntheticFaceTrack, SyntheticSpeechTrack
from tests.support.gateway import REPO_ROOT, gateway_in_loop

pytestmark = pytest.mark.timeout(180)


def run(coro):
    return asyncio.run(coro)


async def offer_sdp(video: str | None = "recvonly", audio: str | None = "recvonly") -> tuple[RTCPeerConnection, str]:
    """A real aiortc offer (its peer connection must be closed by the caller)."""
    pc = RTCPeerConnection()
    if video:
        pc.addTransceiver("video", direction=video)
    if audio:
        pc.addTransceiver("audio", direction=audio)
    pc.createDataChannel("motion")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


def client(url: str, *, partner=True, audio=True, token=None, **options) -> tuple[AvatarClient, list]:
    messages: list = []
    opts = ClientOptions(token=token, loopback=True, **options)
    c = AvatarClient(url, partner=SyntheticFaceTrack(size=(320, 240)) if partner else None,
                     host_audio=SyntheticSpeechTrack(use_espeak=False) if audio else None, options=opts,
                     on_motion=lambda message, at: messages.append(message))
    return c, messages


async def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def test_health_ready_metrics_and_openapi(tiny_model_repository):
    async def main():
        async with gateway_in_loop(tiny_model_repository) as gw:
            async with httpx.AsyncClient(base_url=gw.url) as http:
                assert (await http.get("/healthz")).json() == {"status": "ok"}
                ready = await http.get("/readyz")
                assert ready.status_code == 200 and ready.json()["ready"] is True, ready.text
                metrics = (await http.get("/metrics")).text
                for name in ("f2f_sessions_active", "f2f_engine_ready 1.0", 'f2f_stage_seconds_bucket{le="0.04",stage="step"}',
                             'f2f_frames_skipped_total{reason="late"}'):
                    assert name in metrics, name
                paths = (await http.get("/openapi.json")).json()["paths"]
                assert {"/v1/sessions", "/v1/sessions/{session_id}", "/v1/sessions/{session_id}/say",
                        "/healthz", "/readyz", "/metrics"} <= set(paths)
                assert (await http.get("/docs")).status_code == 200

    run(main())


def test_offer_without_partner_video(tiny_model_repository, report):
    """The client only sends host audio (its video section is receive-only): the host still comes back."""
    async def main():
        async with gateway_in_loop(tiny_model_repository) as gw:
            c, messages = client(gw.url, partner=False)
            async with c:
                await wait_until(lambda: c.stats.video_frames >= 25 and len(messages) >= 25, 20, "25 frames")
                stats = await c.server_stats()
            assert stats["has_partner_video"] is False and stats["partner_frames_received"] == 0
            assert stats["host_audio_samples_received"] > 0 and stats["frames_sent"] >= 25
            assert all(m["source"]["partner_pts"] is None and not m["source"]["partner_visible"] for m in messages)
            assert any(m["source"]["host_audio_pts"] is not None for m in messages)
            report(f"offer without video: {c.stats.video_frames} frames back, first after "
                   f"{c.stats.first_frame_ms:.0f} ms, server fps {stats['fps']}")

    run(main())


def test_offer_without_audio(tiny_model_repository):
    """No audio section at all: the host listens in silence, video and motion still flow."""
    async def main():
        async with gateway_in_loop(tiny_model_repository) as gw:
            c, messages = client(gw.url, audio=False, receive_audio=False)
            async with c:
                await wait_until(lambda: c.stats.video_frames >= 25 and any(m["source"]["partner_visible"]
                                                                              for m in messages), 30,
                                 "frames and a visible partner")
                stats = await c.server_stats()
            assert c.stats.audio_frames == 0
            assert stats["has_host_audio"] is False and stats["host_audio_samples_received"] == 0
            assert stats["partner_frames_received"] > 0 and stats["faces_seen"] > 0
            assert all(m["source"]["host_audio_pts"] is None for m in messages)
            assert any(m["source"]["partner_pts"] is not None for m in messages)

    run(main())


def test_malformed_sdp_is_a_json_400(tiny_model_repository):
    async def main():
        async with gateway_in_loop(tiny_model_repository) as gw:
            pc, good = await offer_sdp()
            await pc.close()
            cases = {
                "garbage": "this is not sdp",
                "truncated": good[: len(good) // 3],
                "no media": "\r\n".join(line for line in good.splitlines() if not line.startswith(("m=", "a="))),
                "no ice credentials": "\r\n".join(l for l in good.splitlines() if not l.startswith("a=ice-")),
            }
            async with httpx.AsyncClient(base_url=gw.url) as http:
                for name, sdp in cases.items():
                    response = await http.post("/v1/sessions", json={"sdp": sdp, "type": "offer"})
                    assert response.status_code == 400, (name, response.status_code, response.text)
                    assert response.headers["content-type"].startswith("application/json")
                    assert isinstance(response.json()["error"], str) and response.json()["error"], name
                bad_type = await http.post("/v1/sessions", json={"sdp": good, "type": "answer"})
                assert bad_type.status_code == 422 and "error" in bad_type.json()
            assert not gw.gateway.sessions  # nothing left behind

    run(main())


def test_over_the_cap_is_503_with_retry_after(tiny_model_repository):
    async def main():
        async with gateway_in_loop(tiny_model_repository, max_sessions=1, retry_after_s=7) as gw:
            first, _ = client(gw.url)
            async with first:
                pc, sdp = await offer_sdp()
                async with httpx.AsyncClient(base_url=gw.url) as http:
                    response = await http.post("/v1/sessions", json={"sdp": sdp, "type": "offer"})
                    assert response.status_code == 503, response.text
                    assert response.headers["retry-after"] == "7" and "error" in response.json()
                await pc.close()
            # The first client closed (DELETE): there is room again.
            second, _ = client(gw.url)
            async with second:
                await wait_until(lambda: second.stats.video_frames > 0, 20, "frames for the second client")

    run(main())


def test_bearer_token_guards_the_api_and_sessions_belong_to_their_token(tiny_model_repository):
    async def main():
        async with gateway_in_loop(tiny_model_repository, api_tokens=("token-a", "token-b")) as gw:
            pc, sdp = await offer_sdp()
            async with httpx.AsyncClient(base_url=gw.url) as http:
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic token-a"}):
                    response = await http.post("/v1/sessions", json={"sdp": sdp, "type": "offer"}, headers=headers)
                    assert response.status_code == 401, (headers, response.text)
                    assert response.json()["error"] and response.headers["www-authenticate"] == "Bearer"
                assert (await http.get("/v1/sessions/whatever")).status_code == 401
                assert (await http.get("/healthz")).status_code == 200  # probes stay open
            await pc.close()
            c, _ = client(gw.url, token="token-a")
            async with c:
                await wait_until(lambda: c.stats.video_frames > 0, 20, "frames")
                async with httpx.AsyncClient(base_url=gw.url) as http:
                    path = f"/v1/sessions/{c.session_id}"
                    assert (await http.get(path, headers={"Authorization": "Bearer token-a"})).status_code == 200
                    assert (await http.get(path, headers={"Authorization": "Bearer token-b"})).status_code == 404
                    assert (await http.delete(path, headers={"Authorization": "Bearer token-b"})).status_code == 404

    run(main())


def test_say_lambda_and_events(tiny_model_repository):
    """Text to speech feeds the host audio; λ_video changes live; the events socket streams stats and the close;
    `say` on a closed session is 404."""
    async def main():
        async with gateway_in_loop(tiny_model_repository) as gw:
            c, messages = client(gw.url, audio=False)
            async with c:
                await wait_until(lambda: len(messages) >= 10, 20, "motion messages")
                ws_url = gw.url.replace("http", "ws") + f"/v1/sessions/{c.session_id}/events"
                async with websockets.connect(ws_url) as ws:
                    first = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    assert first["type"] == "stats" and first["session_id"] == c.session_id
                    said = await c.say("Hello there, how are you today?")
                    assert said["duration_s"] > 0.5
                    await c.set_lambda_video(0.0)
                    count = len(messages)
                    await wait_until(lambda: len(messages) > count + 5, 10, "more messages")
                    assert messages[-1]["lambda_video"] == 0.0
                    kinds = set()
                    deadline = time.monotonic() + 5
                    while "stats" not in kinds and time.monotonic() < deadline:
                        kinds.add(json.loads(await asyncio.wait_for(ws.recv(), 5))["type"])
                    assert "stats" in kinds
                    stats = await c.server_stats()
                    assert stats["say_samples_injected"] > 8000
                    session_id = c.session_id
                    await c.close()
                    closing = []
                    async for text in ws:
                        closing.append(json.loads(text))
                    assert closing[-1] == {"type": "closed", "reason": "client_closed"}
            async with httpx.AsyncClient(base_url=gw.url) as http:
                response = await http.post(f"/v1/sessions/{session_id}/say", json={"text": "anyone?"})
                assert response.status_code == 404 and "error" in response.json()
                assert (await http.post("/v1/sessions/unknown/say", json={"text": "hi"})).status_code == 404
                assert (await http.get(f"/v1/sessions/{session_id}")).status_code == 404

    run(main())


def test_a_vanishing_client_frees_everything_within_5_s(tiny_model_repository, report, tmp_path):
    """The client process is SIGKILLed mid-session (no DELETE, no RTCP BYE, no DTLS close)."""
    async def main():
        async with gateway_in_loop(tiny_model_repository) as gw:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "clients.python", "--url", gw.url, "--synthetic", "--seconds", "60",
                "--loopback", cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
            try:
                await wait_until(lambda: any(s.state == "connected" and s.loop and s.loop.stats.frames_made > 25
                                             for s in gw.gateway.sessions.values()), 60, "a streaming session")
            finally:
                killed_at = time.monotonic()
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
            (session,) = gw.gateway.sessions.values()
            await wait_until(lambda: session.closed, 10, "the session to close")
            freed_s = session.closed_at - killed_at
            assert freed_s < 5.0, freed_s
            assert session.close_reason == "media_timeout"
            assert not gw.gateway.sessions
            assert all(task.done() for task in session.tasks.tasks) and not session.tasks.tasks
            assert session.partner is not None and session.partner.featurizer_closed
            assert session.video_out is None or session.video_out.readyState == "ended"
            assert session.audio_out is None or session.audio_out.readyState == "ended"
            assert session.pc.connectionState == "closed"
            metrics = gw.gateway.metrics.render().decode()
            assert "f2f_sessions_active 0.0" in metrics
            assert 'f2f_sessions_ended_total{reason="media_timeout"} 1.0' in metrics
            report(f"vanishing client: session freed {freed_s:.2f} s after SIGKILL (media timeout "
                   f"{gw.gateway.config.media_timeout_s} s)")

    run(main())


def test_partner_faces_reach_the_guest_context(tiny_model_repository):
    """The synthetic partner's face is found, encoded and marked visible in the engine's input."""
    async def main():
        async with gateway_in_loop(tiny_model_repository) as gw:
            c, messages = client(gw.url)
            async with c:
                await wait_until(lambda: sum(m["source"]["partner_visible"] for m in messages) >= 10, 30,
                                 "visible partner frames")
                (session,) = gw.gateway.sessions.values()
                features, visible, _, _ = session.guests.tick(time.monotonic())
                assert visible[0].sum() >= 8
                seen = np.flatnonzero(visible[0])
                assert np.abs(features[0, seen[-1]]).sum() > 0  # a real guest feature, not the blank one
                assert np.abs(features[0, np.flatnonzero(visible[0] == 0)]).sum() == 0  # no face: blank
                pts = [m["source"]["partner_pts"] for m in messages if m["source"]["partner_pts"] is not None]
                assert pts == sorted(pts)

    run(main())


def test_codec_and_output_size_options(tiny_model_repository):
    """video_codec=H264 is negotiated first and the frames come back at output_size."""
    async def main():
        async with gateway_in_loop(tiny_model_repository) as gw:
            sizes = []
            c, messages = client(gw.url, video_codec="H264", output_size=96, lambda_video=0.25)
            c.on_video = lambda frame, at: sizes.append((frame.width, frame.height))
            async with c:
                await wait_until(lambda: len(sizes) >= 10, 20, "frames")
                sdp = c.pc.remoteDescription.sdp
                video = sdp[sdp.index("m=video"):]
                first_payload = video.split("\r\n")[0].split()[3]
                assert f"a=rtpmap:{first_payload} H264/90000" in video
                assert set(sizes) == {(96, 96)}
                assert messages[-1]["lambda_video"] == 0.25
                # The events socket refuses a missing session and (with auth off) needs no token.
                bad = gw.url.replace("http", "ws") + "/v1/sessions/nope/events"
                with pytest.raises(websockets.exceptions.InvalidStatus):
                    async with websockets.connect(bad):
                        pass
            async with httpx.AsyncClient(base_url=gw.url) as http:
                pc, sdp = await offer_sdp()
                for body in ({"sdp": sdp, "output_size": 97}, {"sdp": sdp, "lambda_video": -1},
                             {"sdp": sdp, "video_codec": "AV1"}, {"type": "offer"}):
                    response = await http.post("/v1/sessions", json=body)
                    assert response.status_code == 422 and response.json()["error"], body
                await pc.close()

    run(main())


def test_a_client_that_hangs_up_without_delete_is_freed(tiny_model_repository, report):
    """The client closes its peer connection (DTLS close, RTCP BYE) but never calls DELETE."""
    async def main():
        async with gateway_in_loop(tiny_model_repository) as gw:
            c, _ = client(gw.url)
            await c.start()
            await wait_until(lambda: c.stats.video_frames >= 10, 20, "frames")
            (session,) = gw.gateway.sessions.values()
            hung_up = time.monotonic()
            await c.close(delete=False)
            await wait_until(lambda: session.closed, 10, "the session to close")
            assert session.closed_at - hung_up < 5.0
            assert session.close_reason in ("connection_closed", "connection_failed", "media_timeout")
            assert not gw.gateway.sessions and not session.tasks.tasks
            report(f"client hang-up without DELETE: freed after {session.closed_at - hung_up:.2f} s "
                   f"({session.close_reason})")

    run(main())
