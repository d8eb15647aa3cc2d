"""Early frame delivery in the real gateway and the Python client (f2f/rtc_early_delivery.py):
both ends install it per connection by default, frames really go out at their marker packet, and
`early_delivery=False` (F2F_EARLY_DELIVERY=0, `--no-early-delivery`) leaves aiortc's buffers alone.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiortc.jitterbuffer import JitterBuffer

from clients.python import AvatarClient, ClientOptions
from clients.python.media import SyntheticFaceTrack, SyntheticSpeechTrack
from f2f.rtc_early_delivery import ArrivalPacketBuffer, MarkerFrameBuffer, early_delivery_counts
from tests.support.gateway import gateway_in_loop

pytestmark = pytest.mark.timeout(180)


def buffers(pc) -> set[type]:
    return {type(receiver._RTCRtpReceiver__jitter_buffer) for receiver in pc.getReceivers()}


async def session_with_frames(model_repository, early: bool) -> tuple[set, set, dict, dict]:
    """-> (gateway buffer types, client buffer types, gateway receive counts, client receive counts)."""
    async with gateway_in_loop(model_repository, early_delivery=early) as served:
        frames: list = []
        client = AvatarClient(served.url, partner=SyntheticFaceTrack(size=(320, 240)),
                              host_audio=SyntheticSpeechTrack(use_espeak=False),
                              options=ClientOptions(loopback=True, early_delivery=early),
                              on_video=lambda frame, at: frames.append(at))
        try:
            session_id = await client.start()
            deadline = time.monotonic() + 60  # bounds a failing run only
            while len(frames) < 10:
                assert time.monotonic() < deadline, "no video came back"
                await asyncio.sleep(0.05)
            session = served.gateway.sessions[session_id]
            return buffers(session.pc), buffers(client.pc), early_delivery_counts(session.pc), client.receive_counts()
        finally:
            await client.close()


def test_gateway_and_client_hand_frames_over_at_the_marker(tiny_model_repository):
    gateway, client, gateway_counts, client_counts = asyncio.run(session_with_frames(tiny_model_repository, True))
    assert gateway == client == {MarkerFrameBuffer, ArrivalPacketBuffer}
    # Every frame but the first of each stream went out at its marker packet.
    assert gateway_counts["frames_at_marker"] > 0 and gateway_counts["frames_at_next"] <= 1, gateway_counts
    assert client_counts["frames_at_marker"] >= 9 and client_counts["frames_at_next"] <= 1, client_counts


def test_early_delivery_can_be_turned_off(tiny_model_repository):
    gateway, client, _, _ = asyncio.run(session_with_frames(tiny_model_repository, False))
    assert gateway == client == {JitterBuffer}
