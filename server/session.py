"""One client session: its peer connection, its inputs, its clock, its outputs, and how it ends.

Life of a session:
  accept(offer)  -> the answer; output tracks are attached to the offer's audio/video sections,
                    partner video / host audio readers start when aiortc announces the tracks
  "connected"    -> the 25 fps clock starts (AvatarLoop) and stats are published every second
  close(reason)  -> every task cancelled and awaited, output tracks stopped, the face mesh closed,
                    the peer connection closed; idempotent, called by DELETE, by the connection
                    failing or closing, by the watchdog (no connection within `connect_timeout_s`,
                    no packet from the client for `media_timeout_s`), by a fatal engine error, or by
                    the gateway shutting down. Everything is released within 5 s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable

import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription

from engines.contract import AvatarEngine
from f2f.avatar_spec import AvatarSpec
from f2f.rtc_early_delivery import deliver_frames_early
from server.avatar_loop import AvatarLoop, Controls, LoopTiming
from server.config import ServerConfig
from server.data_channel import MotionChannel
from server.frames import SessionClock
from server.host_audio import HostAudioInput, HostAudioTimeline
from server.metrics import GatewayMetrics
from server.output_tracks import HostAudioTrack, HostVideoTrack
from server.partner_input import GuestContext, PartnerInput
from server.rtc import LivenessProbe, OfferError, codec_preferences, rtc_configuration, validate_offer
from server.tasks import TaskGroup, spawn_logged

log = logging.getLogger(__name__)

WATCHDOG_PERIOD_S = 0.25
CLOSE_STEP_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class SessionOptions:
    lambda_video: float
    output_size: int
    video_codec: str


class EventBus:
    """Stats and errors of one session for its WebSocket subscribers. Slow subscribers lose messages."""

    def __init__(self, backlog: int = 64):
        self._subscribers: set[asyncio.Queue] = set()
        self._backlog = backlog
        self.closed = False

    def publish(self, message: dict) -> None:
        for queue in list(self._subscribers):
            if queue.full():
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    pass
            queue.put_nowait(message)

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(self._backlog)
        if self.closed:
            queue.put_nowait(None)
        else:
            self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._subscribers.discard(queue)

    def close(self) -> None:
        self.closed = True
        for queue in list(self._subscribers):
            self.publish_to(queue, None)
        self._subscribers.clear()

    @staticmethod
    def publish_to(queue: asyncio.Queue, message) -> None:
        if queue.full():
            queue.get_nowait()
        queue.put_nowait(message)


class Session:
    def __init__(self, session_id: str, owner: int | None, options: SessionOptions, *, config: ServerConfig,
                 engine: AvatarEngine, spec: AvatarSpec, metrics: GatewayMetrics, executor: Executor | None,
                 on_closed: Callable[["Session"], None], on_media_started: Callable[["Session"], None]):
        self.id = session_id
        self.owner = owner
        self.config = config
        self.engine = engine
        self.spec = spec
        self.metrics = metrics
        self.executor = executor
        self._on_closed = on_closed
        self._on_media_started = on_media_started
        self.options = options
        self.controls = Controls(lambda_video=options.lambda_video, output_size=options.output_size)
        self.clock = SessionClock()
        self.tasks = TaskGroup(f"session {session_id}", on_error=self._task_failed)
        self.events = EventBus()
        self.audio = HostAudioTimeline(self.clock, metrics=metrics)
        self.guests = GuestContext(spec, stale_s=config.partner_stale_s)
        self.motion = MotionChannel(metrics)
        self.liveness = LivenessProbe()
        self.pc: RTCPeerConnection | None = None
        self.video_out: HostVideoTrack | None = None
        self.audio_out: HostAudioTrack | None = None
        self.partner: PartnerInput | None = None
        self.host_audio: HostAudioInput | None = None
        self.loop: AvatarLoop | None = None
        self._sent_times: deque = deque(maxlen=100)
        self.state = "new"  # new -> connected -> closing -> closed
        self.close_reason: str | None = None
        self.created_at = time.monotonic()
        self.connected_at: float | None = None
        self.closed_at: float | None = None
        self._closing = False
        self._closed = asyncio.Event()
        self._last_error_event = 0.0

    # -- negotiation ---------------------------------------------------------------------------

    async def accept(self, offer_sdp: str) -> str:
        """Offer in -> answer out. Raises OfferError for an offer that cannot be used."""
        parsed = validate_offer(offer_sdp, self.config.max_sdp_bytes)
        _check_common_codecs(parsed)
        kinds = [m.kind for m in parsed.media]
        pc = RTCPeerConnection(rtc_configuration(self.config.ice_servers))
        self.pc = pc
        pc.on("track", self._on_track)
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        if "application" in kinds:
            self.motion.expect()
        if "video" in kinds:
            self.video_out = HostVideoTrack(self.metrics, on_sent=self._on_frame_sent)
            transceiver = pc.addTransceiver(self.video_out, direction="sendrecv")
            transceiver.setCodecPreferences(codec_preferences("video", self.options.video_codec))
        if "audio" in kinds:
            self.audio_out = HostAudioTrack()
            pc.addTransceiver(self.audio_out, direction="sendrecv")
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except OfferError:
            raise
        except Exception as error:  # aiortc's own validation (codecs, directions, ICE parameters)
            raise OfferError(f"unusable offer: {type(error).__name__}: {error}") from None
        self.liveness.install(pc)
        if self.config.early_delivery:  # before any media arrives
            deliver_frames_early(pc)
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        self._drop_unsent_outputs()
        self.tasks.spawn("watchdog", self._watchdog())
        return pc.localDescription.sdp

    def _drop_unsent_outputs(self) -> None:
        """An output the client did not ask to receive (its m-line is sendonly) is stopped, not fed."""
        for transceiver in self.pc.getTransceivers():
            track = transceiver.sender.track
            if track is not None and transceiver.currentDirection not in ("sendonly", "sendrecv"):
                track.stop()
                if track is self.video_out:
                    self.video_out = None
                elif track is self.audio_out:
                    self.audio_out = None

    def _on_track(self, track) -> None:
        if track.kind == "video" and self.partner is None:
            self.partner = PartnerInput(track, self.engine, self.guests, self.metrics, executor=self.executor,
                                        face_max_fps=self.config.face_max_fps)
            self.tasks.spawn("partner-reader", self.partner.run_reader())
            self.tasks.spawn("face-worker", self.partner.run_face_worker())
        elif track.kind == "audio" and self.host_audio is None:
            self.host_audio = HostAudioInput(track, self.audio, self.metrics)
            self.tasks.spawn("host-audio-reader", self.host_audio.run())
        else:  # a second track of a kind: read and discard, so aiortc's queue does not grow
            self.tasks.spawn(f"drain-{track.kind}", _drain(track))

    def _on_datachannel(self, channel) -> None:
        self.motion.attach(channel)

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState if self.pc else "closed"
        self.events.publish({"type": "connection", "state": state})
        if state == "connected" and self.state == "new":
            self._start_media()
        elif state in ("failed", "closed") and not self._closing:
            spawn_logged(self.close(f"connection_{state}"), f"close {self.id}")

    def _start_media(self) -> None:
        self.state = "connected"
        self.connected_at = time.monotonic()
        self.liveness.touch()
        self.loop = AvatarLoop(
            engine=self.engine, spec=self.spec, clock=self.clock, audio=self.audio, guests=self.guests,
            video=self.video_out, audio_out=self.audio_out, motion=self.motion, controls=self.controls,
            metrics=self.metrics, on_error=self._engine_error,
            timing=LoopTiming(margin_s=self.config.audio_margin_ms / 1000.0,
                              step_timeout_s=self.config.step_timeout_s))
        self.tasks.spawn("avatar-loop", self.loop.run())
        self.tasks.spawn("stats", self._publish_stats())
        self._on_media_started(self)

    # -- while it runs --------------------------------------------------------------------------

    def _on_frame_sent(self, index: int) -> None:
        self._sent_times.append(time.monotonic())

    def fps(self) -> float:
        times = self._sent_times if self.video_out is not None else (self.loop.stats.sent_times if self.loop else ())
        now = time.monotonic()
        recent = [t for t in times if now - t <= 2.0]
        if len(recent) < 2:
            return 0.0
        return round((len(recent) - 1) / max(now - recent[0], 1e-6), 2)

    def send_gap_ms_p95(self) -> float | None:
        """95th percentile of the gaps between the last 100 frames handed to the video sender: the
        gateway's own share of the frame-gap jitter a client sees (no network, no client decode)."""
        times = np.asarray(self._sent_times if self.video_out is not None else ())
        if times.size < 3:
            return None
        return round(float(np.percentile(np.diff(times), 95)) * 1000.0, 1)

    def set_lambda_video(self, value: float) -> None:
        self.controls.lambda_video = float(value)
        self.events.publish({"type": "lambda_video", "lambda_video": self.controls.lambda_video})

    async def say(self, samples) -> tuple[float, float]:
        return self.audio.inject(samples)

    async def _watchdog(self) -> None:
        config = self.config
        while True:
            await asyncio.sleep(WATCHDOG_PERIOD_S)
            now = time.monotonic()
            if self.state == "new" and now - self.created_at > config.connect_timeout_s:
                await self.close("connect_timeout")
                return
            if self.state == "connected":
                last = max(t for t in (self.liveness.last_packet_at, self.connected_at) if t is not None)
                if now - last > config.media_timeout_s:
                    await self.close("media_timeout")
                    return

    async def _publish_stats(self) -> None:
        while True:
            await asyncio.sleep(self.config.stats_interval_s)
            stats = self.stats()
            self.metrics.session_fps.labels(session=self.id).set(stats["fps"])
            self.events.publish({"type": "stats", **stats})

    def _engine_error(self, message: str, fatal: bool) -> None:
        now = time.monotonic()
        if fatal or now - self._last_error_event >= 1.0:  # at most one retryable error event a second
            self._last_error_event = now
            self.events.publish({"type": "error", "error": message, "fatal": fatal})
        if fatal:
            spawn_logged(self.close("engine_error"), f"close {self.id}")

    def _task_failed(self, name: str, error: BaseException) -> None:
        self.events.publish({"type": "error", "error": f"{name} failed: {type(error).__name__}: {error}",
                             "fatal": name == "avatar-loop"})
        if name == "avatar-loop" and not self._closing:
            spawn_logged(self.close("internal_error"), f"close {self.id}")

    def stats(self) -> dict:
        now = time.monotonic()
        loop = self.loop.stats if self.loop else None
        partner = self.partner
        audio = self.audio.stats
        frames_made = loop.frames_made if loop else 0
        return {
            "session_id": self.id,
            "state": self.state,
            "connection_state": self.pc.connectionState if self.pc else "new",
            "close_reason": self.close_reason,
            "uptime_s": round(now - self.created_at, 3),
            "has_partner_video": partner is not None,
            "has_host_audio": self.host_audio is not None,
            "partner_frames_received": partner.frames_received if partner else 0,
            "partner_frames_processed": partner.frames_processed if partner else 0,
            "partner_frames_dropped": partner.frames_dropped if partner else 0,
            "faces_seen": self.guests.faces_seen,
            "host_audio_samples_received": audio.samples_received,
            "host_audio_underrun_samples": audio.underrun_samples,
            "host_audio_dropped_samples": audio.dropped_samples,
            "say_samples_injected": audio.injected_samples,
            "say_pending_s": round(self.audio.say_pending_s, 3),
            "frames_made": frames_made,
            "frames_sent": self.video_out.frames_sent if self.video_out else frames_made,
            "frames_skipped": (loop.frames_skipped if loop else 0) + (self.video_out.frames_dropped if self.video_out else 0),
            "frames_skipped_late": loop.skipped_late if loop else 0,
            "frames_skipped_engine": loop.skipped_engine if loop else 0,
            "frames_dropped_backlog": self.video_out.frames_dropped if self.video_out else 0,
            "fps": self.fps(),
            "send_gap_ms_p95": self.send_gap_ms_p95(),
            "first_frame_ms": (round((loop.first_frame_at - self.connected_at) * 1000, 1)
                               if loop and loop.first_frame_at and self.connected_at else None),
            "step_ms_last": round(loop.last_step_s * 1000, 2) if loop else None,
            "step_ms_mean": round(loop.step_s_total / loop.steps * 1000, 2) if loop and loop.steps else None,
            "late_ms_max": round(loop.late_s_max * 1000, 1) if loop else None,
            "engine_errors": loop.engine_errors if loop else 0,
            "motion_messages_sent": self.motion.sent,
            "motion_messages_dropped": self.motion.dropped,
            "lambda_video": self.controls.lambda_video,
            "output_size": self.controls.output_size,
            "video_codec": self.options.video_codec,
        }

    # -- the end --------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def close(self, reason: str) -> None:
        """Release everything the session holds (idempotent; concurrent callers wait for the first)."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self.state = "closing"
        self.close_reason = reason
        started = time.monotonic()
        try:
            if self.loop is not None:
                self.loop.stop()
            await self.tasks.close(timeout=CLOSE_STEP_TIMEOUT_S)
            for track in (self.video_out, self.audio_out):
                if track is not None:
                    track.stop()
            if self.pc is not None:
                try:
                    await asyncio.wait_for(self.pc.close(), CLOSE_STEP_TIMEOUT_S)
                except Exception:
                    log.exception("session %s: closing the peer connection failed", self.id)
        finally:
            self.state = "closed"
            self.closed_at = time.monotonic()
            self.events.publish({"type": "closed", "reason": reason})
            self.events.close()
            self.metrics.forget_session(self.id)
            self._closed.set()
            log.info("session %s closed (%s) in %.2f s", self.id, reason, self.closed_at - started)
            self._on_closed(self)


def _check_common_codecs(parsed) -> None:
    """An audio or video section must offer at least one codec the gateway speaks (else 400, saying which)."""
    from aiortc import RTCRtpReceiver

    for media in parsed.media:
        if media.kind not in ("audio", "video"):
            continue
        offered = {c.mimeType.lower() for c in media.rtp.codecs}
        supported = {c.mimeType.lower() for c in RTCRtpReceiver.getCapabilities(media.kind).codecs}
        if not offered & (supported - {f"{media.kind}/rtx"}):
            names = sorted(c.split("/", 1)[1] for c in offered) or ["none"]
            known = sorted(c.split("/", 1)[1] for c in supported if not c.endswith("/rtx"))
            raise OfferError(f"no codec in common in the {media.kind} section: the offer has "
                             f"{', '.join(names)}; the gateway speaks {', '.join(known)}")


async def _drain(track) -> None:
    from aiortc.mediastreams import MediaStreamError

    try:
        while True:
            await track.recv()
    except MediaStreamError:
        pass


__all__ = ["EventBus", "OfferError", "Session", "SessionOptions"]
