"""A bare aiortc echo server: the floor WebRTC itself imposes on this machine.

It speaks the gateway's signalling subset (POST /v1/sessions with an SDP offer -> 201 with the
answer; GET and DELETE /v1/sessions/{id}; GET /readyz), so the same Python client drives both. The
partner video comes back unchanged: the received track is the sender's source, so each frame is
received, decoded, encoded again and sent, with its pts kept (the client matches echoed frames to
the frames it sent by pts). Audio is read and discarded; no avatar, no face mesh, no model.

    python -m benchmarks.echo_server --port 8090 [--no-early-delivery]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
from contextlib import asynccontextmanager

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from pydantic import BaseModel

from f2f.rtc_early_delivery import deliver_frames_early, early_delivery_counts

log = logging.getLogger(__name__)


class Offer(BaseModel):
    sdp: str
    type: str = "offer"


class EchoVideoTrack(MediaStreamTrack):
    """The received partner video as a sending track: frames pass through untouched."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack):
        super().__init__()
        self.source = source
        self.frames = 0

    async def recv(self):
        frame = await self.source.recv()
        self.frames += 1
        return frame


class EchoSession:
    def __init__(self, early_delivery: bool):
        self.id = secrets.token_urlsafe(9)
        self.pc = RTCPeerConnection()
        self.early_delivery = early_delivery
        self.video: EchoVideoTrack | None = None
        self._drains: list[asyncio.Task] = []
        self.pc.on("track", self._on_track)

    def _on_track(self, track) -> None:
        if track.kind == "video" and self.video is None:
            self.video = EchoVideoTrack(track)
            self.pc.addTrack(self.video)
        else:
            self._drains.append(asyncio.ensure_future(_drain(track)))

    async def accept(self, offer_sdp: str) -> str:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        if self.early_delivery:
            deliver_frames_early(self.pc)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    def stats(self) -> dict:
        return {"session_id": self.id, "state": self.pc.connectionState, "early_delivery": self.early_delivery,
                "frames_echoed": self.video.frames if self.video else 0, "receive": early_delivery_counts(self.pc)}

    async def close(self) -> None:
        for task in self._drains:
            task.cancel()
        await self.pc.close()


async def _drain(track) -> None:
    try:
        while True:
            await track.recv()
    except MediaStreamError:
        pass


def create_echo_app(early_delivery: bool = True):
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import Response

    sessions: dict[str, EchoSession] = {}

    @asynccontextmanager
    async def lifespan(app):
        yield
        await asyncio.gather(*(s.close() for s in sessions.values()), return_exceptions=True)

    app = FastAPI(title="f2f echo floor", lifespan=lifespan)

    @app.get("/readyz")
    async def readyz():
        return {"ready": True, "sessions": len(sessions)}

    @app.post("/v1/sessions", status_code=201)
    async def create(offer: Offer):
        session = EchoSession(early_delivery)
        try:
            answer = await session.accept(offer.sdp)
        except Exception as error:
            await session.close()
            raise HTTPException(400, f"unusable offer: {error}") from None
        sessions[session.id] = session
        return {"session_id": session.id, "sdp": answer, "type": "answer"}

    @app.get("/v1/sessions/{session_id}")
    async def get(session_id: str):
        if session_id not in sessions:
            raise HTTPException(404, "no such session")
        return sessions[session_id].stats()

    @app.delete("/v1/sessions/{session_id}", status_code=204)
    async def delete(session_id: str):
        session = sessions.pop(session_id, None)
        if session is None:
            raise HTTPException(404, "no such session")
        await session.close()
        return Response(status_code=204)

    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from server.rtc import allow_loopback_candidates

    parser = argparse.ArgumentParser(prog="python -m benchmarks.echo_server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--no-early-delivery", action="store_true", help="keep aiortc's receive hold")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    allow_loopback_candidates()  # a client on this machine, no network: offer 127.0.0.1
    uvicorn.run(create_echo_app(early_delivery=not args.no_early_delivery), host=args.host, port=args.port,
                log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
