"""Early frame delivery for aiortc receivers: hand each frame to the application once it is complete.

aiortc 1.16's `RTCRtpReceiver` (aiortc/rtcrtpreceiver.py) puts every RTP packet into a
`JitterBuffer` (aiortc/jitterbuffer.py), which declares a frame complete only when a packet with the
*next* RTP timestamp arrives. So every received video frame waits one frame interval (40 ms at
25 fps) before it is decoded, and audio (created with prefetch=4) waits four packets (80 ms).

Two buffers replace aiortc's, per receiver:
- `MarkerFrameBuffer` (video): a frame is also complete when its marker-bit packet (the last packet
  of a frame, RFC 3550 / RFC 7741) has arrived and every sequence number from the frame's first
  packet up to it is present. The "first packet" is only known after a frame has been handed over
  (the next packet starts the next frame), so the very first frame, and the first frame after a
  reset, wait for aiortc's own rule. On loss nothing changes: the gap stops the frame, aiortc's
  NACK generator asks for the packet, the frame goes out when the retransmission fills the gap, and
  buffer overflow still raises aiortc's PLI flag (this class only adds a completion rule). As in
  aiortc, one frame goes out per arriving packet, so frames that completed behind a gap follow the
  retransmitted one packet by packet.
- `ArrivalPacketBuffer` (audio): every audio RTP packet carries whole codec frames (Opus, G.711,
  G.722), so each one is handed over as it arrives, in order; a packet older than one already
  handed over (late after reordering) is dropped, as audio is never retransmitted. aiortc's own
  audio buffer would hold 4 packets, and after one lost packet it holds 15 (300 ms) for good.

`deliver_frames_early(pc)` swaps these in for the receivers of one peer connection. It is explicit
(called once per connection, after its transceivers exist and before media flows), idempotent, and
touches nothing process-wide. It reaches aiortc's private `RTCRtpReceiver.__jitter_buffer`: if a
future aiortc renames it, the swap logs a warning and the connection keeps aiortc's behaviour.
The gateway (server/session.py, `F2F_EARLY_DELIVERY`) and the Python client (`ClientOptions`)
both call it; `f2f bench latency` measures the gain.
"""

from __future__ import annotations

import logging
from typing import Optional

from aiortc.jitterbuffer import MAX_MISORDER, JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

log = logging.getLogger(__name__)

_RECEIVER_BUFFER = "_RTCRtpReceiver__jitter_buffer"  # the name-mangled attribute in aiortc 1.16


class MarkerFrameBuffer(JitterBuffer):
    """aiortc's video jitter buffer, plus: a frame is complete at its marker packet."""

    def __init__(self, capacity: int = 512) -> None:
        super().__init__(capacity=capacity, prefetch=0, is_video=True)
        self._frame_start: Optional[int] = None  # sequence number known to begin a frame
        self.frames_at_marker = 0  # handed over at their marker packet
        self.frames_at_next = 0  # handed over by aiortc's rule (a packet of the next frame)

    def _remove_frame(self, sequence_number: int) -> Optional[JitterFrame]:
        frame = self._complete_at_marker()
        if frame is not None:
            self.frames_at_marker += 1
        else:
            frame = super()._remove_frame(sequence_number)
            if frame is None:
                return None
            self.frames_at_next += 1
        # Both rules removed exactly one frame's packets: the origin is now the next frame's first packet.
        self._frame_start = self._origin
        return frame

    def _complete_at_marker(self) -> Optional[JitterFrame]:
        if self._origin is None or self._origin != self._frame_start:
            return None  # where this frame begins is not known (start of stream, after a reset)
        packets: list[RtpPacket] = []
        for count in range(self._capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None:
                return None  # a gap: wait for the packet (NACKed) like aiortc does
            if packets and packet.timestamp != packets[0].timestamp:
                return None  # the frame ended without a marker: aiortc's rule hands it over
            packets.append(packet)
            if packet.marker:
                self.remove(len(packets))
                return JitterFrame(data=b"".join(p._data for p in packets), timestamp=packets[0].timestamp)
        return None

    def remove(self, count: int) -> None:
        super().remove(count)
        self._frame_start = None  # set again by _remove_frame when this removal handed a frame over

    def smart_remove(self, count: int) -> bool:
        self._frame_start = None  # overflow: packets dropped, frame boundaries unknown again
        return super().smart_remove(count)


class ArrivalPacketBuffer(JitterBuffer):
    """Audio: each RTP packet is handed over on arrival, in sequence order; late packets are dropped."""

    def __init__(self, capacity: int = 16) -> None:
        super().__init__(capacity=capacity, prefetch=0, is_video=False)
        self.packets_late = 0

    def add(self, packet: RtpPacket) -> tuple[bool, Optional[JitterFrame]]:
        if self._origin is not None:
            behind = uint16_add(self._origin, -packet.sequence_number)  # > 0: older than the next expected
            if 0 < behind <= MAX_MISORDER:
                self.packets_late += 1
                return False, None
        # The expected packet, a newer one (the gap is lost audio), or a restarted stream: hand it over.
        self._origin = uint16_add(packet.sequence_number, 1)
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)


EARLY_BUFFERS = (MarkerFrameBuffer, ArrivalPacketBuffer)


def deliver_frames_early(pc) -> int:
    """Give every receiver of `pc` that has not received a packet yet an early-delivery buffer.

    Call after the transceivers exist (addTransceiver / setRemoteDescription) and before media
    flows. -> how many receivers were changed (0 when called again: idempotent)."""
    changed = 0
    for receiver in pc.getReceivers():
        current = getattr(receiver, _RECEIVER_BUFFER, None)
        if not isinstance(current, JitterBuffer):
            log.warning("aiortc's RTCRtpReceiver has no %s: frames are handed over by aiortc's own rule",
                        _RECEIVER_BUFFER)
            continue
        if isinstance(current, EARLY_BUFFERS):
            continue
        if current._origin is not None:
            log.warning("receiver already receiving: early delivery not installed on it")
            continue
        replacement = MarkerFrameBuffer(current.capacity) if current._is_video else ArrivalPacketBuffer(current.capacity)
        setattr(receiver, _RECEIVER_BUFFER, replacement)
        changed += 1
    return changed


def early_delivery_counts(pc) -> dict[str, int]:
    """How the receivers of `pc` handed frames over (for stats and benchmarks)."""
    counts = {"frames_at_marker": 0, "frames_at_next": 0, "audio_packets_late": 0}
    for receiver in pc.getReceivers():
        buffer = getattr(receiver, _RECEIVER_BUFFER, None)
        if isinstance(buffer, MarkerFrameBuffer):
            counts["frames_at_marker"] += buffer.frames_at_marker
            counts["frames_at_next"] += buffer.frames_at_next
        elif isinstance(buffer, ArrivalPacketBuffer):
            counts["audio_packets_late"] += buffer.packets_late
    return counts
