"""An aiortc client of the f2f gateway: send partner video + host audio, receive the host back.

    async with AvatarClient("http://127.0.0.1:8080", partner=SyntheticFaceTrack(),
                            host_audio=SyntheticSpeechTrack(), on_motion=print) as client:
        await asyncio.sleep(10)
        print(client.stats)

Negotiation follows docs/api.md: the client adds its tracks (or receive-only transceivers), creates
the "motion" data channel, POSTs its offer to /v1/sessions and applies the answer. Received video,
audio and motion messages go to the callbacks with their arrival time (time.monotonic()).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import httpx
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from f2f.rtc_early_delivery import deliver_frames_early, early_delivery_counts
from f2f.rtc_loopback import allow_loopback_candidates  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

MOTION_LABEL = "motion"


class GatewayError(RuntimeError):
    def __init__(self, status: int, message: str, retry_after: str | None = None):
        super().__init__(f"gateway answered {status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after


@dataclass
class ClientOptions:
    token: str | None = None
    lambda_video: float | None = None
    output_size: int | None = None
    video_codec: str | None = None  # "VP8" or "H264"
    ice_servers: list[dict] = field(default_factory=list)  # RTCIceServer dictionaries
    loopback: bool = False  # offer 127.0.0.1 host candidates (a gateway on this machine)
    receive_video: bool = True
    receive_audio: bool = True
    connect_timeout_s: float = 20.0
    # Hand received video frames over at their marker packet and audio packets on arrival, instead of
    # aiortc's one-frame / four-packet hold (f2f/rtc_early_delivery.py).
    early_delivery: bool = True


@dataclass
class ClientStats:
    started_at: float = field(default_factory=time.monotonic)
    connected_at: float | None = None
    first_video_at: float | None = None
    video_frames: int = 0
    audio_frames: int = 0
    audio_samples: int = 0
    motion_messages: int = 0
    video_arrivals: list[float] = field(default_factory=list)

    @property
    def first_frame_ms(self) -> float | None:
        if self.first_video_at is None or self.connected_at is None:
            return None
        return (self.first_video_at - self.connected_at) * 1000

    def fps(self) -> float:
        arrivals = self.video_arrivals
        if len(arrivals) < 2:
            return 0.0
        return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])


class AvatarClient:
    def __init__(self, url: str, *, partner: MediaStreamTrack | None = None,
                 host_audio: MediaStreamTrack | None = None, options: ClientOptions | None = None,
                 on_video: Callable | None = None, on_audio: Callable | None = None,
                 on_motion: Callable | None = None):
        self.url = url.rstrip("/")
        self.partner = partner
        self.host_audio = host_audio
        self.options = options or ClientOptions()
        self.on_video = on_video
        self.on_audio = on_audio
        self.on_motion = on_motion
        self.session_id: str | None = None
        self.pc: RTCPeerConnection | None = None
        self.channel = None
        self.stats = ClientStats()
        self._tasks: set[asyncio.Task] = set()
        self._connected = asyncio.Event()
        self._failed: str | None = None
        self._closed = False
        headers = {"Authorization": f"Bearer {self.options.token}"} if self.options.token else {}
        self.http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30.0)

    # -- connect ---------------------------------------------------------------------------------

    async def start(self) -> str:
        """Negotiate the session and wait until media flows; -> the session id."""
        options = self.options
        if options.loopback:
            allow_loopback_candidates()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[
            RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in options.ice_servers]))
        self.pc = pc
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)
        if self.partner is not None:
            pc.addTransceiver(self.partner, direction="sendrecv" if options.receive_video else "sendonly")
        elif options.receive_video:
            pc.addTransceiver("video", direction="recvonly")
        if self.host_audio is not None:
            pc.addTransceiver(self.host_audio, direction="sendrecv" if options.receive_audio else "sendonly")
        elif options.receive_audio:
            pc.addTransceiver("audio", direction="recvonly")
        if options.early_delivery:  # the receivers exist now, and no media flows yet
            deliver_frames_early(pc)
        self.channel = pc.createDataChannel(MOTION_LABEL)
        self.channel.on("message", self._on_message)
        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "type": "offer"}
        for name in ("lambda_video", "output_size", "video_codec"):
            value = getattr(options, name)
            if value is not None:
                body[name] = value
        answer = await self._request("POST", "/v1/sessions", json=body, expect=201)
        self.session_id = answer["session_id"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        try:
            await asyncio.wait_for(self._connected.wait(), options.connect_timeout_s)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no connection within {options.connect_timeout_s} s "
                               f"(state {pc.connectionState})") from None
        if self._failed:
            raise ConnectionError(self._failed)
        return self.session_id

    def _on_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected" and self.stats.connected_at is None:
            self.stats.connected_at = time.monotonic()
            self._connected.set()
        elif state in ("failed", "closed"):
            self._failed = f"connection {state}"
            self._connected.set()

    def _on_track(self, track) -> None:
        task = asyncio.create_task(self._read(track), name=f"f2f-client-{track.kind}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            if track.kind == "video":
                self.stats.video_frames += 1
                self.stats.video_arrivals.append(now)
                if self.stats.first_video_at is None:
                    self.stats.first_video_at = now
                if self.on_video is not None:
                    self.on_video(frame, now)
            else:
                self.stats.audio_frames += 1
                self.stats.audio_samples += frame.samples
                if self.on_audio is not None:
                    self.on_audio(frame, now)

    def _on_message(self, text) -> None:
        now = time.monotonic()
        try:
            message = json.loads(text)
        except (TypeError, ValueError):
            log.warning("non-JSON message on the motion channel")
            return
        self.stats.motion_messages += 1
        if self.on_motion is not None:
            self.on_motion(message, now)

    # -- control ---------------------------------------------------------------------------------------

    async def _request(self, method: str, path: str, expect: int, **kwargs):
        response = await self.http.request(method, path, **kwargs)
        if response.status_code != expect:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise GatewayError(response.status_code, str(message), response.headers.get("retry-after"))
        return response.json() if response.content else None

    def receive_counts(self) -> dict[str, int]:
        """How this client's receivers handed frames over (frames at their marker packet, ...)."""
        return early_delivery_counts(self.pc) if self.pc is not None else {}

    async def server_stats(self) -> dict:
        return await self._request("GET", f"/v1/sessions/{self.session_id}", expect=200)

    async def set_lambda_video(self, value: float) -> dict:
        return await self._request("PATCH", f"/v1/sessions/{self.session_id}", json={"lambda_video": value},
                                   expect=200)

    async def say(self, text: str) -> dict:
        return await self._request("POST", f"/v1/sessions/{self.session_id}/say", json={"text": text}, expect=202)

    async def close(self, delete: bool = True) -> None:
        """DELETE the session (unless `delete` is False), close the peer connection, stop the readers.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if delete and self.session_id is not None:
                try:
                    await self._request("DELETE", f"/v1/sessions/{self.session_id}", expect=204)
                except (GatewayError, httpx.HTTPError) as error:
                    log.info("DELETE of session %s: %s", self.session_id, error)
            if self.pc is not None:
                await self.pc.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for track in (self.partner, self.host_audio):
                if track is not None:
                    track.stop()
        finally:
            await self.http.aclose()

    async def __aenter__(self) -> "AvatarClient":
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
