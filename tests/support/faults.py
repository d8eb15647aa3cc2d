"""Fault injection and resource accounting for the reliability tests.

- `RawClient`: a bare aiortc client of the gateway (no library between the test and the wire), so a
  test can pick codecs (PCMU: 8 kHz host audio), send scripted tracks and break the link.
- `LossyLink`: drops datagrams of a peer connection's ICE transports by a cyclic loss pattern, in
  both directions, the way aiortc's own tests make a lossy transport (`DummyConnection.loss_pattern`
  in aiortc's tests/utils.py), here on a real ICE connection over loopback.
- `FaultyEngine`: an engine in front of another one that raises or stalls on the batches a test
  chooses (by a marker λ_video value carried by one session's requests).
- `ResourceSnapshot`: asyncio tasks, threads, file descriptors and RSS of this process.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from engines.contract import EngineHealth, StepRequest, StepResult


# -- a bare client -------------------------------------------------------------------------------

@dataclass
class RawClient:
    url: str
    video: object | None = None  # a MediaStreamTrack to send as the partner camera, or None (recvonly)
    audio: object | None = None  # a MediaStreamTrack to send as the host voice, or None (recvonly)
    audio_codec: str | None = None  # e.g. "audio/PCMU": offer only this audio codec
    token: str | None = None
    body: dict = field(default_factory=dict)  # extra fields of the offer request
    session_id: str | None = None
    pc: RTCPeerConnection | None = None
    motion: list[dict] = field(default_factory=list)
    video_frames: int = 0
    audio_frames: int = 0
    video_sizes: set = field(default_factory=set)
    audio_levels: list[tuple[float, float]] = field(default_factory=list)  # (arrival, RMS of the frame 0..1)
    connection_states: list[str] = field(default_factory=list)
    _readers: list[asyncio.Task] = field(default_factory=list)

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def start(self, timeout_s: float = 20.0) -> str:
        from server.rtc import allow_loopback_candidates

        allow_loopback_candidates()
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        connected = asyncio.Event()

        @pc.on("connectionstatechange")
        def _state():
            self.connection_states.append(pc.connectionState)
            if pc.connectionState in ("connected", "failed", "closed"):
                connected.set()

        pc.on("track", lambda track: self._readers.append(asyncio.ensure_future(self._read(track))))
        pc.addTransceiver(self.video if self.video is not None else "video",
                          direction="sendrecv" if self.video is not None else "recvonly")
        audio = pc.addTransceiver(self.audio if self.audio is not None else "audio",
                                  direction="sendrecv" if self.audio is not None else "recvonly")
        if self.audio_codec:
            audio.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("audio").codecs
                                       if c.mimeType == self.audio_codec])
        channel = pc.createDataChannel("motion")
        channel.on("message", lambda text: self.motion.append(json.loads(text)))
        await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=30) as http:
            response = await http.post("/v1/sessions", json={"sdp": pc.localDescription.sdp, **self.body})
        assert response.status_code == 201, response.text
        answer = response.json()
        self.session_id = answer["session_id"]
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        await asyncio.wait_for(connected.wait(), timeout_s)
        assert pc.connectionState == "connected", pc.connectionState
        return self.session_id

    async def _read(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if track.kind == "video":
                self.video_frames += 1
                self.video_sizes.add((frame.width, frame.height))
            else:
                self.audio_frames += 1
                pcm = frame.to_ndarray().astype(np.float32) / 32768.0
                self.audio_levels.append((time.monotonic(), float(np.sqrt(np.mean(pcm ** 2)))))

    async def stats(self) -> dict:
        async with httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=10) as http:
            response = await http.get(f"/v1/sessions/{self.session_id}")
        assert response.status_code == 200, response.text
        return response.json()

    async def close(self, delete: bool = True) -> None:
        if delete and self.session_id:
            async with httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=10) as http:
                await http.delete(f"/v1/sessions/{self.session_id}")
        if self.pc is not None:
            await self.pc.close()
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        for track in (self.video, self.audio):
            if track is not None:
                track.stop()


# -- a lossy link ---------------------------------------------------------------------------------

def burst_pattern(period: int, burst: int) -> list[bool]:
    """`burst` consecutive datagrams lost out of every `period` (True = lost)."""
    return [True] * burst + [False] * (period - burst)


class LossyLink:
    """Drops the datagrams of one peer connection that a cyclic pattern marks, both ways.

    Installed on a connected peer connection (the DTLS handshake is not disturbed); `outage()`
    drops everything for a while, as a network that goes away and comes back.
    """

    def __init__(self, pattern: Sequence[bool]):
        self.pattern = list(pattern)
        self._cursor = {"send": 0, "recv": 0}
        self.dropped = {"send": 0, "recv": 0}
        self.passed = {"send": 0, "recv": 0}
        self._outage_until = 0.0

    def _lost(self, way: str) -> bool:
        if time.monotonic() < self._outage_until:
            lost = True
        else:
            lost = self.pattern[self._cursor[way]]
            self._cursor[way] = (self._cursor[way] + 1) % len(self.pattern)
        (self.dropped if lost else self.passed)[way] += 1
        return lost

    def outage(self, seconds: float) -> None:
        self._outage_until = time.monotonic() + seconds

    def install(self, pc: RTCPeerConnection) -> None:
        transports = {t.receiver.transport.transport for t in pc.getTransceivers()}
        if pc.sctp is not None:
            transports.add(pc.sctp.transport.transport)
        for ice in transports:
            send, recv = ice._send, ice._recv

            async def lossy_send(data, send=send):
                if not self._lost("send"):
                    await send(data)

            async def lossy_recv(recv=recv):
                while True:
                    data = await recv()
                    if not self._lost("recv"):
                        return data

            ice._send, ice._recv = lossy_send, lossy_recv


# -- a faulty engine ----------------------------------------------------------------------------------

@dataclass
class Fault:
    """Raise `error` on, or stall `stall_s` seconds on, the next `count` step batches that `matches`."""

    matches: Callable[[Sequence[StepRequest]], bool]
    count: int = 1
    error: BaseException | None = None
    stall_s: float = 0.0
    hits: int = 0


class FaultyEngine:
    """An AvatarEngine in front of `engine` that injects `faults` into step batches."""

    def __init__(self, engine):
        self.engine = engine
        self.name = f"faulty-{engine.name}"
        self.faults: list[Fault] = []
        self.batches: list[tuple[float, ...]] = []  # λ_video of each request, per step call

    @property
    def spec(self):
        return self.engine.spec

    async def start(self) -> None:
        await self.engine.start()

    async def close(self) -> None:
        await self.engine.close()

    async def health(self) -> EngineHealth:
        return await self.engine.health()

    async def encode_partner(self, faces):
        return await self.engine.encode_partner(faces)

    async def step(self, requests: Sequence[StepRequest]) -> list[StepResult]:
        self.batches.append(tuple(round(r.lambda_video, 4) for r in requests))
        for fault in self.faults:
            if fault.hits < fault.count and fault.matches(requests):
                fault.hits += 1
                if fault.stall_s:
                    await asyncio.sleep(fault.stall_s)
                if fault.error is not None:
                    raise fault.error
        return await self.engine.step(requests)


def has_lambda(value: float) -> Callable[[Sequence[StepRequest]], bool]:
    return lambda requests: any(abs(r.lambda_video - value) < 1e-6 for r in requests)


# -- resources ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResourceSnapshot:
    tasks: int  # asyncio tasks of the running loop (call from inside it)
    # Threads other than the loop's default executor's workers (`asyncio_N`): that pool is bounded and
    # reuses its idle workers, but how many it has started depends on how calls happened to overlap
    # (7 -> 10 threads over 200 clean cycles in one CI run), which is not something a session left behind.
    threads: int
    fds: int
    rss_mb: float

    @classmethod
    def take(cls) -> "ResourceSnapshot":
        trim_heap()
        threads = sum(1 for t in threading.enumerate() if not t.name.startswith("asyncio_"))
        return cls(tasks=len(asyncio.all_tasks()), threads=threads,
                   fds=len(os.listdir("/proc/self/fd")), rss_mb=rss_mb())

    def __str__(self) -> str:
        return f"{self.tasks} tasks, {self.threads} threads, {self.fds} fds, {self.rss_mb:.0f} MB RSS"


def trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc keeps them), so RSS shows what is still in use."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_mb(pid: int | str = "self") -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")
