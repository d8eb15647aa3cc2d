"""Early frame delivery (f2f/rtc_early_delivery.py): a complete frame is handed over at its marker
packet, before the next frame arrives; loss keeps aiortc's behaviour; audio goes out on arrival.

The buffers are fed RTP packets directly (no timing involved), then a real pair of aiortc peer
connections in one process shows the same end to end: a sender that stops after two frames still
gets both to the receiving application.
"""

from __future__ import annotations

import asyncio
import fractions

import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtp import RtpPacket
from av import VideoFrame

from f2f.rtc_early_delivery import (
    ArrivalPacketBuffer,
    MarkerFrameBuffer,
    deliver_frames_early,
    early_delivery_counts,
)

TICKS = 3600  # 90 kHz RTP ticks per 25 fps frame


def packet(seq: int, timestamp: int, marker: bool = False, data: bytes | None = None) -> RtpPacket:
    p = RtpPacket(payload_type=96, sequence_number=seq % 65536, timestamp=timestamp % 2**32, marker=int(marker))
    p._data = data if data is not None else f"{seq}|".encode()  # aiortc sets _data to the depayloaded bytes
    return p


def frame_packets(first_seq: int, index: int, count: int) -> list[RtpPacket]:
    """The `count` packets of video frame `index` (marker on the last)."""
    return [packet(first_seq + i, 1000 + index * TICKS, marker=i == count - 1) for i in range(count)]


def feed(buffer: JitterBuffer, packets: list[RtpPacket]) -> list:
    """-> the frames handed over, one entry per packet added (None where nothing was)."""
    return [buffer.add(p)[1] for p in packets]


def test_aiortc_holds_a_complete_frame_until_the_next_frame_arrives():
    # The behaviour this module fixes, pinned so a future aiortc that fixes it shows up here.
    stock = JitterBuffer(capacity=128, is_video=True)
    assert feed(stock, frame_packets(10, 0, 3)) == [None, None, None]
    out = feed(stock, frame_packets(13, 1, 2))
    assert out[0] is not None and out[0].data == b"10|11|12|"  # frame 0 only when frame 1 begins


def test_a_complete_frame_is_delivered_before_the_next_one_arrives():
    buffer = MarkerFrameBuffer(capacity=128)
    # Frame 0: where it begins is unknown (start of stream), so aiortc's rule applies to it.
    assert feed(buffer, frame_packets(10, 0, 3)) == [None, None, None]
    out = feed(buffer, frame_packets(13, 1, 2))
    assert out[0].data == b"10|11|12|"
    # Frame 1 began right after frame 0: it is complete at its marker packet, nothing of frame 2 needed.
    assert out[1] is not None and out[1].data == b"13|14|" and out[1].timestamp == 1000 + TICKS
    # From here on every frame goes out at its own marker packet.
    seq = 15
    for index in range(2, 40):
        count = 1 + index % 3
        out = feed(buffer, frame_packets(seq, index, count))
        assert out[:-1] == [None] * (count - 1)
        assert out[-1].data == b"".join(f"{seq + i}|".encode() for i in range(count))
        assert out[-1].timestamp == 1000 + index * TICKS
        seq += count
    assert buffer.frames_at_next == 1 and buffer.frames_at_marker == 39


def test_sequence_numbers_wrap():
    buffer = MarkerFrameBuffer(capacity=128)
    seq = 65530
    handed = []
    for index in range(8):
        handed += [f for f in feed(buffer, frame_packets(seq, index, 2)) if f is not None]
        seq += 2
    assert [f.timestamp for f in handed] == [1000 + i * TICKS for i in range(8)]
    assert buffer.frames_at_marker == 7


def test_a_lost_packet_stops_the_frame_until_its_retransmission():
    buffer = MarkerFrameBuffer(capacity=128)
    feed(buffer, frame_packets(0, 0, 2))
    feed(buffer, frame_packets(2, 1, 2))  # frame 0 (aiortc's rule), frame 1 (marker)
    p3, p4, p5 = frame_packets(4, 2, 3)
    # The marker packet arrives, the middle one is lost: the frame is not complete.
    assert feed(buffer, [p3, p5]) == [None, None]
    # The next frame is complete, but frames go out in order: it waits behind the gap (as in aiortc).
    assert feed(buffer, frame_packets(7, 3, 2)) == [None, None]
    # The NACKed packet comes back: frame 2 goes out whole.
    (out,) = feed(buffer, [p4])
    assert out.data == b"4|5|6|" and out.timestamp == 1000 + 2 * TICKS
    # Frame 3 was already complete; it goes out with the next packet, as aiortc does.
    (out,) = feed(buffer, [frame_packets(9, 4, 2)[0]])
    assert out.data == b"7|8|"


def test_reordered_packets_within_a_frame():
    buffer = MarkerFrameBuffer(capacity=128)
    feed(buffer, frame_packets(0, 0, 2) + frame_packets(2, 1, 2))
    a, b, c = frame_packets(4, 2, 3)
    assert feed(buffer, [c, a]) == [None, None]
    (out,) = feed(buffer, [b])
    assert out.data == b"4|5|6|"


def test_overflow_still_asks_for_a_keyframe():
    buffer = MarkerFrameBuffer(capacity=16)
    feed(buffer, frame_packets(0, 0, 1) + frame_packets(1, 1, 1))
    # Packet 2 is lost for good; frames keep coming until the buffer overflows.
    seq, index, pli = 3, 3, False
    while not pli and seq < 200:
        for p in frame_packets(seq, index, 1):
            flag, _ = buffer.add(p)
            pli = pli or flag
        seq, index = seq + 1, index + 1
    assert pli, "aiortc's PLI on overflow must survive"
    # After the overflow the frames behind the gap go out in order, one per arriving packet (as in
    # aiortc); once that backlog has drained, each new frame goes out at its marker again.
    at_marker = buffer.frames_at_marker
    handed = []
    for i in range(40):
        out = feed(buffer, frame_packets(seq + 2 * i, index + i, 2))
        handed += [f.timestamp for f in out if f is not None]
    steps = np.diff(handed)
    assert (steps == TICKS).all() and handed[-1] == 1000 + (index + 39) * TICKS
    assert buffer.frames_at_marker > at_marker


def test_audio_packets_are_handed_over_on_arrival():
    stock = JitterBuffer(capacity=16, prefetch=4)
    assert [stock.add(packet(s, s * 960))[1] for s in range(4)] == [None] * 4  # aiortc: 4 packets held

    audio = ArrivalPacketBuffer()
    out = [audio.add(packet(s, s * 960))[1] for s in range(4)]
    assert [f.timestamp for f in out] == [0, 960, 1920, 2880]
    # A lost packet (4): the next one still goes out at once; the late one is dropped.
    assert audio.add(packet(5, 5 * 960))[1].timestamp == 5 * 960
    assert audio.add(packet(4, 4 * 960))[1] is None and audio.packets_late == 1
    assert audio.add(packet(5, 5 * 960))[1] is None  # a duplicate
    assert audio.add(packet(6, 6 * 960))[1].timestamp == 6 * 960
    # Wrapping sequence numbers, and a restarted stream (far behind) is accepted.
    wrap = ArrivalPacketBuffer()
    assert all(wrap.add(packet(s, s))[1] is not None for s in (65534, 65535, 65536, 65537))
    assert wrap.add(packet(30000, 1))[1] is not None


@pytest.mark.asyncio
async def test_install_is_per_connection_and_idempotent():
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        assert deliver_frames_early(pc) == 2
        assert deliver_frames_early(pc) == 0
        kinds = sorted(type(r._RTCRtpReceiver__jitter_buffer).__name__ for r in pc.getReceivers())
        assert kinds == ["ArrivalPacketBuffer", "MarkerFrameBuffer"]
        other = RTCPeerConnection()  # nothing process-wide: another connection keeps aiortc's buffers
        other.addTransceiver("video", direction="recvonly")
        assert type(other.getReceivers()[0]._RTCRtpReceiver__jitter_buffer) is JitterBuffer
        await other.close()
    finally:
        await pc.close()


class TwoFramesThenSilence(MediaStreamTrack):
    """Sends two frames, then nothing (as if the next frame never came)."""

    kind = "video"

    def __init__(self):
        super().__init__()
        self.sent = 0
        self._forever = asyncio.Event()

    async def recv(self):
        if self.sent >= 2:
            await self._forever.wait()
        rng = np.random.default_rng(self.sent)
        frame = VideoFrame.from_ndarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8), format="rgb24")
        frame.pts, frame.time_base = self.sent * TICKS, fractions.Fraction(1, 90000)
        self.sent += 1
        return frame


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_real_peer_connections_deliver_the_last_frame_without_a_next_one():
    from server.rtc import allow_loopback_candidates

    allow_loopback_candidates()
    sender, receiver = RTCPeerConnection(), RTCPeerConnection()
    got: asyncio.Queue = asyncio.Queue()

    async def read(track):
        while True:
            frame = await track.recv()
            await got.put(frame.pts)

    tasks = []
    receiver.on("track", lambda track: tasks.append(asyncio.ensure_future(read(track))))
    try:
        sender.addTransceiver(TwoFramesThenSilence(), direction="sendonly")
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        assert deliver_frames_early(receiver) == 1
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(RTCSessionDescription(receiver.localDescription.sdp, "answer"))
        # Both frames reach the application; with aiortc's own buffer the second waits for a third forever.
        # (The timeouts only bound a failing run; nothing here depends on speed.)
        first = await asyncio.wait_for(got.get(), 30)
        second = await asyncio.wait_for(got.get(), 30)
        assert (first, second) == (0, TICKS)
        assert early_delivery_counts(receiver)["frames_at_marker"] == 1
    finally:
        for task in tasks:
            task.cancel()
        await sender.close()
        await receiver.close()
