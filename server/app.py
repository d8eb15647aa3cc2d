"""The gateway's HTTP face (FastAPI): signalling, session control, health, metrics, the demo page.

Every route is documented in docs/api.md; FastAPI serves the OpenAPI schema at /openapi.json and the
interactive docs at /docs. Errors are JSON `{"error": "..."}` with the matching status, including
unexpected ones (500, without internals). Who may call and how much: `server.security` (the request
guard and CORS wrap the app; the bearer token is checked by each `/v1` route's `owner_of`).
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
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from engines.contract import AvatarEngine
from server.config import VIDEO_CODECS, ServerConfig
from server.gateway import Gateway, UnavailableError
from server.rtc import OfferError
from server.security import (UNAUTHORIZED, RequestGuard, bearer_token, client_address, disable_vendor_telemetry,
                             install_cors, retry_after_header)
from server.session import SessionOptions
from server.speech import SpeechError, synthesize

log = logging.getLogger(__name__)

BODY_SLACK_BYTES = 16 * 1024  # JSON around the SDP

# Error answers, as the OpenAPI schema documents them (every /v1 route may give these).
ERROR = {"content": {"application/json": {"schema": {
    "type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}}}}
COMMON_ERRORS = {
    400: {**ERROR, "description": "a request body that cannot be read (not UTF-8)"},
    401: {**ERROR, "description": "missing or invalid bearer token"},
    413: {**ERROR, "description": "request body too large"},
    415: {**ERROR, "description": "request body is not JSON"},
    422: {**ERROR, "description": "invalid request body or parameters"},
    429: {**ERROR, "description": "too many requests from this address (Retry-After)"},
}
NOT_FOUND = {404: {**ERROR, "description": "no open session with this id for this token"}}


# -- request and response bodies -----------------------------------------------------------------

class OfferRequest(BaseModel):
    model_config = ConfigDict(strict=True)  # no "256" for 256, no true for 1.0: a client bug shows as a 422

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
    model_config = ConfigDict(strict=True)

    lambda_video: float = Field(ge=0.0, le=10.0)

    @field_validator("lambda_video")
    @classmethod
    def _finite(cls, value):
        if not math.isfinite(value):
            raise ValueError("must be finite")
        return value


class SayRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    text: str = Field(min_length=1)


# -- the app ---------------------------------------------------------------------------------------

def create_app(config: ServerConfig | None = None, engine: AvatarEngine | None = None) -> FastAPI:
    """The gateway as an ASGI app. `engine`: an unstarted engine to use instead of the configured one."""
    config = config or ServerConfig.from_env()
    disable_vendor_telemetry()  # before the engine imports onnxruntime
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
    # Added first = inside: CORS is outermost, so browsers can read the guard's 413/415/429 answers too.
    app.add_middleware(RequestGuard, max_body_bytes=config.max_sdp_bytes + BODY_SLACK_BYTES,
                       requests=gateway.request_limiter)
    install_cors(app, config.cors_origins)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's HTTPException and the router's 404/405
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = jsonable_encoder(exc.errors(), custom_encoder={Exception: str})
        for error in errors:
            error.pop("input", None)  # never echo (possibly large) request content back
        return JSONResponse({"error": "invalid request", "detail": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception):
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal error"}, status_code=500)

    # Declares the scheme in the OpenAPI schema (the "Authorize" button of /docs); it does not refuse
    # anything itself (auto_error=False): owner_of decides, the same way with auth on or off.
    bearer_scheme = HTTPBearer(auto_error=False, description="an API token (F2F_API_TOKENS), when configured")

    def owner_of(request: Request, _: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)) -> int | None:
        """The bearer token's owner index (None when auth is off); 401 when it is missing or wrong."""
        owner = gateway.token_owner(bearer_token(request.headers.get("authorization")))
        if owner == UNAUTHORIZED:
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

    @app.get("/readyz", tags=["health"], responses={503: {"description": "the engine is not ready (same body)"}})
    async def readyz():
        """The engine is ready to serve sessions (503 otherwise)."""
        health = await gateway.health()
        body = {"ready": health.ready, "engine": {"backend": health.backend, "state": health.state.value,
                                                   "detail": health.detail},
                "sessions": len(gateway.sessions), "max_sessions": config.max_sessions}
        return JSONResponse(body, status_code=200 if health.ready else 503)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    async def metrics():
        """Prometheus text format."""
        await gateway.health()  # refreshes f2f_engine_ready
        return Response(gateway.metrics.render(), media_type=gateway.metrics.content_type)

    # -- sessions ---------------------------------------------------------------------------------

    @app.get("/v1/ice-servers", tags=["sessions"], responses=COMMON_ERRORS)
    async def ice_servers(owner=Depends(owner_of)):
        """The STUN/TURN servers a client should give its own peer connection."""
        return {"iceServers": [s.to_json() for s in config.ice_servers]}

    @app.post("/v1/sessions", status_code=201, response_model=AnswerResponse, tags=["sessions"],
              responses={**COMMON_ERRORS, 400: {**ERROR, "description": "malformed or unusable SDP"},
                         429: {**ERROR, "description": "too many requests or session creations (Retry-After)"},
                         503: {**ERROR, "description": "session cap reached or engine not ready (Retry-After)"}})
    async def create_session(request: Request, body: OfferRequest, owner=Depends(owner_of)):
        """SDP offer in, SDP answer out. The session runs until DELETE or the client goes away."""
        wait = gateway.session_limiter.acquire(client_address(request.scope) if owner is None else f"token:{owner}")
        if wait > 0:
            raise HTTPException(429, "too many sessions created; try again later",
                                headers={"Retry-After": retry_after_header(wait)})
        if len(body.sdp.encode()) > config.max_sdp_bytes:
            raise HTTPException(400, f"SDP larger than {config.max_sdp_bytes} bytes")
        spec = gateway.engine.spec if gateway.started else None
        options = SessionOptions(
            lambda_video=config.default_lambda_video if body.lambda_video is None else body.lambda_video,
            output_size=body.output_size or (spec.frame_size if spec else 256),
            video_codec=body.video_codec or config.video_codec)
        try:
            session, answer = await gateway.create_session(body.sdp, options, owner)
        except UnavailableError as error:
            raise HTTPException(503, str(error), headers={"Retry-After": str(config.retry_after_s)}) from None
        except OfferError as error:
            raise HTTPException(400, str(error)) from None
        return AnswerResponse(session_id=session.id, sdp=answer)

    @app.get("/v1/sessions/{session_id}", tags=["sessions"], responses={**NOT_FOUND, **COMMON_ERRORS})
    async def get_session(session_id: str, owner=Depends(owner_of)):
        """Live statistics of one session."""
        return session_of(session_id, owner).stats()

    @app.patch("/v1/sessions/{session_id}", tags=["sessions"], responses={**NOT_FOUND, **COMMON_ERRORS})
    async def patch_session(session_id: str, body: PatchRequest, owner=Depends(owner_of)):
        """Change λ_video while the session runs."""
        session = session_of(session_id, owner)
        session.set_lambda_video(body.lambda_video)
        return {"session_id": session.id, "lambda_video": session.controls.lambda_video}

    @app.delete("/v1/sessions/{session_id}", status_code=204, tags=["sessions"],
                responses={**NOT_FOUND, **COMMON_ERRORS})
    async def delete_session(session_id: str, owner=Depends(owner_of)):
        """End the session and free everything it holds."""
        await session_of(session_id, owner).close("client_closed")
        return Response(status_code=204)

    @app.post("/v1/sessions/{session_id}/say", status_code=202, tags=["sessions"],
              responses={**COMMON_ERRORS, **NOT_FOUND, 413: {**ERROR, "description": "body or text too large"},
                         503: {**ERROR, "description": "espeak-ng is not installed"}})
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
        if gateway.request_limiter.acquire(client_address(websocket.scope)) > 0:
            await websocket.close(code=4429, reason="too many requests")
            return
        token = bearer_token(websocket.headers.get("authorization")) or websocket.query_params.get("token")
        owner = gateway.token_owner(token)
        if owner == UNAUTHORIZED:
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


__all__ = ["VIDEO_CODECS", "create_app"]
