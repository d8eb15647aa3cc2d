"""The gateway's shared state: the engine (behind the micro-batcher), the session registry and cap,
the face-mesh thread pool, the metrics. `server.app` is the HTTP face of this object.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

from engines.contract import AvatarEngine, EngineHealth, HealthState
from server.config import ServerConfig
from server.metrics import GatewayMetrics
from server.rtc import allow_loopback_candidates
from server.session import Session, SessionOptions

log = logging.getLogger(__name__)

FACE_THREADS = 2  # the face mesh of every session shares these (the machine has 2 cores)


class CapacityError(RuntimeError):
    """The session cap is reached (HTTP 503 with Retry-After)."""


class Gateway:
    def __init__(self, config: ServerConfig, engine: AvatarEngine | None = None):
        self.config = config
        self.metrics = GatewayMetrics()
        self._engine = engine
        self.sessions: dict[str, Session] = {}
        self._pending = 0  # offers being negotiated: they count against the cap too
        self.executor: ThreadPoolExecutor | None = None
        self.started = False
        self.start_error: str | None = None
        self._closing: set[asyncio.Task] = set()

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def engine(self) -> AvatarEngine:
        if self._engine is None:
            raise RuntimeError("the gateway has no engine yet")
        return self._engine

    async def start(self) -> None:
        if self.config.ice_loopback:
            allow_loopback_candidates()
        self.executor = ThreadPoolExecutor(max_workers=FACE_THREADS, thread_name_prefix="f2f-face")
        if self._engine is None:
            self._engine = open_configured_engine(self.config)
        try:
            await self._engine.start()
        except Exception as error:
            self.start_error = f"engine failed to start: {type(error).__name__}: {error}"
            log.error("%s", self.start_error)
            raise
        # Import mediapipe and build one face mesh now, so the first session does not wait for it.
        await asyncio.get_running_loop().run_in_executor(self.executor, _warm_up_face_mesh)
        self.started = True
        log.info("gateway ready: %s engine, avatar %s", self._engine.name, self._engine.spec)

    async def stop(self) -> None:
        await asyncio.gather(*(s.close("server_shutdown") for s in list(self.sessions.values())),
                             return_exceptions=True)
        if self._engine is not None and self.started:
            await self._engine.close()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        self.started = False

    async def health(self) -> EngineHealth:
        if self._engine is None or not self.started:
            return EngineHealth(HealthState.STARTING if self.start_error is None else HealthState.UNHEALTHY,
                                backend=self.config.backend, detail=self.start_error or "starting",
                                checked_at=time.monotonic())
        health = await self._engine.health()
        self.metrics.engine_ready.set(1 if health.ready else 0)
        return health

    # -- auth ----------------------------------------------------------------------------------

    def token_owner(self, token: str | None) -> int | None:
        """Index of the configured token that matches (constant-time, all tokens compared), else -1.
        None when auth is off."""
        if not self.config.api_tokens:
            return None
        supplied = (token or "").encode()
        match = -1
        for index, expected in enumerate(self.config.api_tokens):
            if hmac.compare_digest(supplied, expected.encode()):
                match = index
        return match

    # -- sessions ------------------------------------------------------------------------------

    def session(self, session_id: str, owner: int | None) -> Session | None:
        """The open session with this id that `owner` may address, else None."""
        session = self.sessions.get(session_id)
        if session is None or session.closed or session.owner != owner:
            return None
        return session

    async def create_session(self, offer_sdp: str, options: SessionOptions, owner: int | None) -> tuple[Session, str]:
        if len(self.sessions) + self._pending >= self.config.max_sessions:
            self.metrics.sessions_rejected.labels(reason="capacity").inc()
            raise CapacityError(f"{self.config.max_sessions} sessions are open; try again later")
        self._pending += 1
        session_id = secrets.token_urlsafe(12)
        session = Session(session_id, owner, options, config=self.config, engine=self.engine,
                          spec=self.engine.spec, metrics=self.metrics, executor=self.executor,
                          on_closed=self._session_closed, on_media_started=self._media_started)
        try:
            answer = await session.accept(offer_sdp)
        except BaseException as error:
            self._pending -= 1
            self.metrics.sessions_rejected.labels(reason=type(error).__name__).inc()
            await session.close("offer_rejected")
            raise
        self._pending -= 1
        self.sessions[session_id] = session
        self.metrics.sessions_started.inc()
        self.metrics.sessions_active.set(len(self.sessions))
        log.info("session %s accepted (%d open)", session_id, len(self.sessions))
        return session, answer

    def _media_started(self, session: Session) -> None:
        self._update_batching()

    def _session_closed(self, session: Session) -> None:
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
            self.metrics.sessions_ended.labels(reason=session.close_reason or "unknown").inc()
        self.metrics.sessions_active.set(len(self.sessions))
        self._update_batching()

    def _update_batching(self) -> None:
        """The micro-batcher waits for as many callers as there are running sessions (at most its window)."""
        running = sum(1 for s in self.sessions.values() if s.state == "connected")
        if hasattr(self._engine, "expected_callers"):
            self._engine.expected_callers = max(1, running)


def open_configured_engine(config: ServerConfig) -> AvatarEngine:
    from engines import EngineSettings, open_engine

    settings = EngineSettings(backend=config.backend, model_repository=config.model_repository, device=config.device,
                              intra_op_threads=config.intra_op_threads, on_backend_down=config.on_backend_down,
                              batch_window_s=config.batch_window_ms / 1000.0, max_batch=config.max_batch,
                              **({"triton_url": config.triton_url} if config.triton_url else {}))
    return open_engine(settings)


def _warm_up_face_mesh() -> None:
    from f2f.features.face_geometry import FaceGeometryFeaturizer

    FaceGeometryFeaturizer(static_images=False).close()
