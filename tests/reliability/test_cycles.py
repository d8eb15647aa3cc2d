"""200 sessions created and deleted leave nothing behind: no session, task, thread, descriptor or memory."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from tests.support.faults import RawClient, ResourceSnapshot
from tests.support.gateway import gateway_in_loop
from tests.support.scripted_media import AudioPhase, ScriptedAudioTrack, ScriptedVideoTrack, VideoPhase

pytestmark = pytest.mark.timeout(300)

CYCLES = 200
CONNECTED_EVERY = 40  # every 40th cycle also connects and streams (5 of the 200)


async def offer_sdp() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    pc.createDataChannel("motion")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def test_200_create_delete_cycles_leave_no_residue(tiny_model_repository, report):
    async def main():
        async with gateway_in_loop(tiny_model_repository, rate_limit_per_s=0, session_rate_per_min=0,
                                   max_sessions=2) as gw:
            sdp = await offer_sdp()
            async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
                async def cycle(index: int) -> None:
                    if index % CONNECTED_EVERY == 0:
                        client = RawClient(gw.url, video=ScriptedVideoTrack([VideoPhase(30, (160, 120), 25)]),
                                           audio=ScriptedAudioTrack([AudioPhase(30)]))
                        await client.start()
                        while client.video_frames < 5:
                            await asyncio.sleep(0.05)
                        await client.close()
                        return
                    created = await http.post("/v1/sessions", json={"sdp": sdp})
                    assert created.status_code == 201, created.text
                    deleted = await http.delete(f"/v1/sessions/{created.json()['session_id']}")
                    assert deleted.status_code == 204, deleted.text

                # Warm-up: what exists once per process (thread pools, the face mesh runtime, this test's
                # keep-alive HTTP connection: 2 descriptors) is made now.
                for index in (0, 1):
                    await cycle(index)
                await asyncio.sleep(0.5)
                before = ResourceSnapshot.take()
                started = time.monotonic()
                for index in range(CYCLES):
                    await cycle(index)
                seconds = time.monotonic() - started
                await asyncio.sleep(1.0)
                after = ResourceSnapshot.take()
                metrics = (await http.get("/metrics")).text
            report(f"{CYCLES} create/delete cycles ({CYCLES // CONNECTED_EVERY} with media) in {seconds:.1f} s: "
                   f"before {before}; after {after}")
            assert not gw.gateway.sessions and gw.gateway._pending == 0
            assert after.tasks <= before.tasks, (before, after)
            assert after.fds <= before.fds, (before, after)
            assert after.threads <= before.threads + 2, (before, after)
            assert after.rss_mb - before.rss_mb < 60, (before, after)
            assert "f2f_sessions_active 0.0" in metrics
            assert f"f2f_sessions_started_total {CYCLES + 2}.0" in metrics
            assert f'f2f_sessions_ended_total{{reason="client_closed"}} {CYCLES + 2}.0' in metrics
            assert "f2f_session_fps{" not in metrics  # no per-session series left behind

    asyncio.run(main())
