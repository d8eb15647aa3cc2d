"""WebRTC plumbing of the gateway: ICE configuration, offer validation, codec preference, liveness.

- `rtc_configuration`: the STUN/TURN servers from `ServerConfig` (an empty list: host candidates only).
- `allow_loopback_candidates`: aioice leaves 127.0.0.1 out of the host candidates; a gateway serving a
  client on the same machine (tests, a demo without a network) offers it with `ice_loopback`.
- `validate_offer`: refuse what cannot be a usable offer before a peer connection is built.
- `codec_preferences`: the preferred video codec first, the others after it (never refuse a client
  that lacks the preferred one).
- `LivenessProbe`: when the client last sent anything at all (RTP, RTCP, SCTP, DTLS) over any of the
  session's ICE transports. A client that vanishes without a BYE sends nothing more, long before
  ICE consent (30 s in aioice) would notice. It wraps `RTCIceTransport._recv`, the one place every
  datagram passes; if a future aiortc moves it, the probe reports "unknown" and the session falls
  back to its media tracks' activity.
"""

from __future__ import annotations

import logging
import time

from aiortc import RTCConfiguration, RTCIceServer, RTCRtpSender
from aiortc.sdp import SessionDescription

from f2f.rtc_loopback import allow_loopback_candidates  # noqa: F401  (re-exported)
from server.config import IceServer

log = logging.getLogger(__name__)

MEDIA_KINDS = ("audio", "video", "application")


class OfferError(ValueError):
    """The offer cannot be used (HTTP 400)."""


def rtc_configuration(ice_servers: tuple[IceServer, ...]) -> RTCConfiguration:
    return RTCConfiguration(iceServers=[
        RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential) for s in ice_servers])


def validate_offer(sdp: str, max_bytes: int) -> SessionDescription:
    """-> the parsed offer, or OfferError saying what is wrong."""
    if len(sdp.encode("utf-8", errors="replace")) > max_bytes:
        raise OfferError(f"SDP larger than {max_bytes} bytes")
    text = sdp.strip()
    if not text.startswith("v=0"):
        raise OfferError("not an SDP offer: it must start with 'v=0'")
    try:
        parsed = SessionDescription.parse(text + "\r\n")
    except Exception as error:  # aiortc's parser raises whatever the bad line provokes
        raise OfferError(f"malformed SDP: {type(error).__name__}: {error}") from None
    if not parsed.media:
        raise OfferError("the offer has no media sections (m= lines)")
    for media in parsed.media:
        if media.kind not in MEDIA_KINDS:
            raise OfferError(f"unsupported media kind {media.kind!r}")
        if not media.ice.usernameFragment or not media.ice.password:
            raise OfferError("ICE username fragment or password is missing")
        if media.dtls is None or not media.dtls.fingerprints:
            raise OfferError("DTLS fingerprint is missing")
    return parsed


def codec_preferences(kind: str, preferred: str | None) -> list:
    """Every codec aiortc offers for `kind`, with `preferred` (e.g. "H264") first."""
    codecs = RTCRtpSender.getCapabilities(kind).codecs
    if not preferred:
        return codecs
    wanted = f"{kind}/{preferred}".lower()
    return sorted(codecs, key=lambda c: c.mimeType.lower() != wanted)  # stable: keeps aiortc's order otherwise


class LivenessProbe:
    """The time of the last datagram received from the peer, over all ICE transports of a connection."""

    def __init__(self) -> None:
        self.last_packet_at: float | None = None
        self.installed = 0

    def touch(self) -> None:
        self.last_packet_at = time.monotonic()

    def install(self, pc) -> None:
        transports = set()
        for transceiver in pc.getTransceivers():
            transports.add(transceiver.receiver.transport.transport)
        if pc.sctp is not None:
            transports.add(pc.sctp.transport.transport)
        for ice in transports:
            if getattr(ice, "_f2f_liveness", None) is self:
                continue
            recv = getattr(ice, "_recv", None)
            if recv is None:
                log.warning("aiortc has no RTCIceTransport._recv: liveness falls back to media activity")
                continue

            async def counted(recv=recv):
                data = await recv()
                self.last_packet_at = time.monotonic()
                return data

            ice._recv = counted
            ice._f2f_liveness = self
            self.installed += 1
