"""The `motion` data channel: one JSON message per output frame (format and semantics in docs/api.md).

The client creates the channel (label "motion") before its offer; the gateway only sends on it. A
message is sent when its frame is handed to the video encoder (so it usually arrives before the
frame). A closed or congested channel drops messages (counted) instead of buffering them.
"""

from __future__ import annotations

import json
import logging
from collections import deque

from f2f.motion import EXPRESSION_FIELDS, FIELD_INDEX, POSE_FIELDS
from server.frames import HostFrame
from server.metrics import GatewayMetrics

log = logging.getLogger(__name__)

MOTION_LABEL = "motion"
MAX_BUFFERED_BYTES = 256 * 1024  # ~10 s of messages; beyond that the peer is not reading


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def motion_message(frame: HostFrame) -> dict:
    m = frame.motion
    return {
        "frame": frame.index,
        "pts": _r(frame.pts, 6),
        "pose": {name: _r(m[FIELD_INDEX[name]]) for name in POSE_FIELDS},
        "blendshapes": {name: _r(m[FIELD_INDEX[name]]) for name in EXPRESSION_FIELDS},
        "source": {
            "host_audio_pts": _r(frame.host_audio_pts, 6),
            "partner_pts": _r(frame.partner_pts, 6),
            "partner_visible": frame.partner_visible,
        },
        "lambda_video": _r(frame.lambda_video),
    }


class MotionChannel:
    """Sends motion messages; holds the first ones until the client's channel is open.

    The first frames are made as soon as the connection is up, while the SCTP association and the
    client's channel are still opening: when the offer has a data channel section (`expect()`), up
    to `EARLY_MESSAGES` messages wait and go out, in order, when the channel opens.
    """

    EARLY_MESSAGES = 50

    def __init__(self, metrics: GatewayMetrics):
        self.metrics = metrics
        self.channel = None
        self.sent = 0
        self.dropped = 0
        self._expected = False
        self._early: deque[str] = deque()

    def expect(self) -> None:
        self._expected = True

    def attach(self, channel) -> None:
        if channel.label != MOTION_LABEL:
            log.info("ignoring data channel %r (only %r is used)", channel.label, MOTION_LABEL)
            return
        self.channel = channel
        if channel.readyState == "open":
            self._flush()
        else:
            channel.on("open", self._flush)

    def _flush(self) -> None:
        while self._early:
            self._send(self._early.popleft())

    def send(self, frame: HostFrame) -> None:
        text = json.dumps(motion_message(frame), separators=(",", ":"))
        channel = self.channel
        if channel is None or channel.readyState == "connecting":
            if channel is None and not self._expected:
                return  # the client has no data channel: nobody to tell
            if len(self._early) >= self.EARLY_MESSAGES:
                self._early.popleft()
                self._drop()
            self._early.append(text)
            return
        self._flush()
        self._send(text)

    def _send(self, text: str) -> None:
        channel = self.channel
        if channel is None or channel.readyState != "open" or channel.bufferedAmount > MAX_BUFFERED_BYTES:
            self._drop()
            return
        channel.send(text)
        self.sent += 1
        self.metrics.motion_messages.inc()

    def _drop(self) -> None:
        self.dropped += 1
        self.metrics.motion_messages_dropped.inc()
