"""The gateway's HTTP face (FastAPI): signalling, session control, health, metrics, the demo page.

Every route is documented in docs/api.md; FastAPI serves the OpenAPI schema at /openapi.json and the
interactive docs at /docs. Errors are JSON `{"error": "..."}` with the matching status.
"""

from __future__ import annotations

import logging
import math
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

from fastapi import Depends, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, field_validator

from engines.contract import AvatarEngine
from server.config import VIDEO_CODECS, ServerConfig
from server.gateway import CapacityError, Gateway
from server.rtc import OfferError
from server.session import SessionOptions
from server.speech import SpeechError, synthesize

log = logging.getLogger(__name__)

BODY_SLACK_BYTES = 16 * 1024  # JSON around the SDP


# -- request and response bodies -----------------------------------------------------------------

class OfferRequest(BaseModel):
    sdp: str = Field(description="The client's SDP offer (create the 'motion' data channel before the offer)")
    type: Literal["offer"] = "offer"
    lambda_video: float | None = Field(None, ge=0.0, le=10.0,
                                       description="Video guidance scale λ_video (0 = audio-only avatar)")
    output_size: int | None = Field(None, ge=64, le=1024, description="Output frame side in pixels (even)")
    video_codec: Literal["VP8", "H264"] | None = Field(None, description="Preferred host video codec")

    @field_validator("lambda_video")
    @classmethod
    def _finite(cls, value):
        if value is not None and not math.isfinite(value):
            raise ValueError("must be finite")
        return value

    @field_validator("output_size")
    @classmethod
    def _even(cls, value):
        if value is not None and value % 2:
            raise ValueError("must be even")
        return value


class AnswerResponse(BaseModel):
    session_id: str
    sdp: str
    type: Literal["answer"] = "answer"


class PatchRequest(BaseModel):
    lambda_video: float = Field(ge=0.0, le=10.0)

    @field_validator("lambda_video")
    @classmethod
    def _finite(cls, value):
        if not math.isfinite(value):
            raise ValueError("must be finite")
        return value


class SayRequest(BaseModel):
    text: str = Field(min_length=1)


# -- the app ---------------------------------------------------------------------------------------

def create_app(config: ServerConfig | None = None, engine: AvatarEngine | None = None) -> FastAPI:
    """The gateway as an ASGI app. `engine`: an unstarted engine to use instead of the configured one."""
    config = config or ServerConfig.from_env()
    gateway = Gateway(config, engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(title="f2f gateway", version="1", lifespan=lifespan,
                  description="Real-time interactive avatar: WebRTC sessions, see docs/api.md")
    app.state.gateway = gateway
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])
    max_body = config.max_sdp_bytes + BODY_SLACK_BYTES

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body):
            return JSONResponse({"error": f"request body larger than {max_body} bytes"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = jsonable_encoder(exc.errors(), custom_encoder={Exception: str})
        for error in errors:
            error.pop("input", None)  # never echo (possibly large) request content back
        return JSONResponse({"error": "invalid request", "detail": errors}, status_code=422)

    def owner_of(request: Request) -> int | None:
        """The bearer token's owner index (None when auth is off); 401 when it is missing or wrong."""
        owner = gateway.token_owner(_bearer(request.headers.get("authorization")))
        if owner == -1:
            raise HTTPException(401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
        return owner

    def session_of(session_id: str, owner: int | None):
        session = gateway.session(session_id, owner)
        if session is None:
            raise HTTPException(404, f"no open session {session_id!r}")
        return session

    # -- health, metrics -------------------------------------------------------------------------

    @app.get("/healthz", tags=["health"])
    async def healthz():
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz():
        """The engine is ready to serve sessions (503 otherwise)."""
        health = await gateway.health()
        body = {"ready": health.ready, "engine": {"backend": health.backend, "state": health.state.value,
                                                   "detail": health.detail},
                "sessions": len(gateway.sessions), "max_sessions": config.max_sessions}
        return JSONResponse(body, status_code=200 if health.ready else 503)

    @app.get("/metrics", tags=["health"])
    async def metrics():
        """Prometheus text format."""
        await gateway.health()  # refreshes f2f_engine_ready
        return Response(gateway.metrics.render(), media_type=gateway.metrics.content_type)

    # -- sessions ---------------------------------------------------------------------------------

    @app.get("/v1/ice-servers", tags=["sessions"])
    async def ice_servers(owner=Depends(owner_of)):
        """The STUN/TURN servers a client should give its own peer connection."""
        return {"iceServers": [s.to_json() for s in config.ice_servers]}

    @app.post("/v1/sessions", status_code=201, response_model=AnswerResponse, tags=["sessions"],
              responses={400: {"description": "malformed or unusable SDP"}, 401: {"description": "bad token"},
                         503: {"description": "session cap reached (Retry-After)"}})
    async def create_session(body: OfferRequest, owner=Depends(owner_of)):
        """SDP offer in, SDP answer out. The session runs until DELETE or the client goes away."""
        if len(body.sdp.encode()) > config.max_sdp_bytes:
            raise HTTPException(400, f"SDP larger than {config.max_sdp_bytes} bytes")
        spec = gateway.engine.spec if gateway.started else None
        options = SessionOptions(
            lambda_video=config.default_lambda_video if body.lambda_video is None else body.lambda_video,
            output_size=body.output_size or (spec.frame_size if spec else 256),
            video_codec=body.video_codec or config.video_codec)
        try:
            session, answer = await gateway.create_session(body.sdp, options, owner)
        except CapacityError as error:
            raise HTTPException(503, str(error), headers={"Retry-After": str(config.retry_after_s)}) from None
        except OfferError as error:
            raise HTTPException(400, str(error)) from None
        return AnswerResponse(session_id=session.id, sdp=answer)

    @app.get("/v1/sessions/{session_id}", tags=["sessions"])
    async def get_session(session_id: str, owner=Depends(owner_of)):
        """Live statistics of one session."""
        return session_of(session_id, owner).stats()

    @app.patch("/v1/sessions/{session_id}", tags=["sessions"])
    async def patch_session(session_id: str, body: PatchRequest, owner=Depends(owner_of)):
        """Change λ_video while the session runs."""
        session = session_of(session_id, owner)
        session.set_lambda_video(body.lambda_video)
        return {"session_id": session.id, "lambda_video": session.controls.lambda_video}

    @app.delete("/v1/sessions/{session_id}", status_code=204, tags=["sessions"])
    async def delete_session(session_id: str, owner=Depends(owner_of)):
        """End the session and free everything it holds."""
        await session_of(session_id, owner).close("client_closed")
        return Response(status_code=204)

    @app.post("/v1/sessions/{session_id}/say", status_code=202, tags=["sessions"])
    async def say(session_id: str, body: SayRequest, owner=Depends(owner_of)):
        """Text -> speech (espeak-ng), mixed into the host audio from the next free instant."""
        if len(body.text) > config.max_say_chars:
            raise HTTPException(413, f"text longer than {config.max_say_chars} characters")
        session = session_of(session_id, owner)
        try:
            samples = await synthesize(body.text, config.espeak_voice, config.espeak_words_per_minute)
        except SpeechError as error:
            raise HTTPException(503, str(error)) from None
        session = session_of(session_id, owner)  # it may have closed while espeak-ng ran
        start_s, duration_s = await session.say(samples)
        return {"session_id": session.id, "start_s": round(start_s, 3), "duration_s": round(duration_s, 3)}

    @app.websocket("/v1/sessions/{session_id}/events")
    async def events(websocket: WebSocket, session_id: str):
        """Stats once a second, errors, connection changes and the close, as JSON messages.
        Browsers cannot set headers on a WebSocket: the token may come as ?token=."""
        token = _bearer(websocket.headers.get("authorization")) or websocket.query_params.get("token")
        owner = gateway.token_owner(token)
        if owner == -1:
            await websocket.close(code=4401, reason="missing or invalid bearer token")
            return
        session = gateway.session(session_id, owner)
        if session is None:
            await websocket.close(code=4404, reason="no open session")
            return
        await websocket.accept()
        queue = session.events.subscribe()
        try:
            await websocket.send_json({"type": "stats", **session.stats()})
            while True:
                message = await queue.get()
                if message is None:
                    break
                await websocket.send_json(message)
            await websocket.close()
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client left
        finally:
            session.events.unsubscribe(queue)

    # -- the demo page ------------------------------------------------------------------------------

    web_root: Path | None = config.web_root

    @app.get("/", include_in_schema=False)
    async def index():
        page = web_root / "index.html" if web_root else None
        if page is None or not page.is_file():
            return HTMLResponse("<!doctype html><title>f2f</title><p>f2f gateway: the demo page is not "
                                "installed. API docs at <a href='/docs'>/docs</a>.</p>")
        return FileResponse(page, headers={"Cache-Control": "no-cache"})

    if web_root is not None:
        app.mount("/web", StaticFiles(directory=str(web_root), check_dir=False), name="web")

    return app


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


__all__ = ["VIDEO_CODECS", "create_app"]
