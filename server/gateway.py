"""The gateway's shared state: the engine (behind the micro-batcher), the session registry and cap,
the face-mesh thread pool, the metrics, who may call (tokens, rate limits). `server.app` is the HTTP
face of this object.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import Gauge, ProcessCollector

from engines.contract import AvatarEngine, EngineHealth, HealthState
from f2f.blas_threads import limit_blas_threads
from server.config import ServerConfig
from server.metrics import GatewayMetrics
from server.rtc import allow_loopback_candidates
from server.security import RateLimiter, TokenAuth
from server.session import Session, SessionOptions

log = logging.getLogger(__name__)

FACE_THREADS = 2  # the face mesh of every session shares these (the machine has 2 cores)


class UnavailableError(RuntimeError):
    """No session can be opened now; a later try may work (HTTP 503 with Retry-After)."""


class CapacityError(UnavailableError):
    """The session cap is reached."""


class EngineNotReadyError(UnavailableError):
    """The engine is not ready (starting, or its backend is down and the policy is end_session)."""


class Gateway:
    def __init__(self, config: ServerConfig, engine: AvatarEngine | None = None):
        self.config = config
        self.metrics = GatewayMetrics()
        _add_runtime_gauges(self.metrics.registry)
        self.auth = TokenAuth(config.api_tokens)
        self.request_limiter = RateLimiter(config.rate_limit_per_s, config.rate_limit_burst)
        self.session_limiter = RateLimiter(config.session_rate_per_min / 60.0, config.session_rate_burst)
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
        limit_blas_threads()  # numpy's spinning OpenBLAS workers cost half a core per session (f2f/blas_threads.py)
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
        freeze_startup_heap()
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
        return self.auth.owner(token)

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
        # A session the engine cannot serve would only fail at its first step: refuse it now, so the
        # client retries (e.g. Triton is down under the end_session policy; it comes back by itself).
        health = await self.health()
        if not health.ready:
            self.metrics.sessions_rejected.labels(reason="engine_not_ready").inc()
            raise EngineNotReadyError(f"the engine is not ready ({health.detail or health.state.value}); "
                                      "try again later")
        if len(self.sessions) + self._pending >= self.config.max_sessions:  # others may have come in meanwhile
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


def _add_runtime_gauges(registry) -> None:
    """What a leak would grow, on /metrics: the process's memory and descriptors (ProcessCollector:
    process_resident_memory_bytes, process_open_fds, ...), its threads and its asyncio tasks."""
    ProcessCollector(registry=registry)
    Gauge("f2f_threads", "Threads of the gateway process", registry=registry).set_function(threading.active_count)
    Gauge("f2f_asyncio_tasks", "asyncio tasks of the gateway's event loop", registry=registry).set_function(
        _asyncio_task_count)


def _asyncio_task_count() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # collected outside the event loop
        return float("nan")


def open_configured_engine(config: ServerConfig) -> AvatarEngine:
    from engines import EngineSettings, open_engine

    settings = EngineSettings(backend=config.backend, model_repository=config.model_repository, device=config.device,
                              intra_op_threads=config.intra_op_threads, on_backend_down=config.on_backend_down,
                              batch_window_s=config.batch_window_ms / 1000.0, max_batch=config.max_batch,
                              **({"triton_url": config.triton_url} if config.triton_url else {}))
    return open_engine(settings)


def freeze_startup_heap() -> None:
    """Move every object alive after start-up (modules, models, the face mesh) out of the cyclic
    garbage collector's reach. A full collection holds the GIL, and so every session's 25 fps loop,
    while it walks the heap: 70 ms over the gateway's own start-up heap, 300 ms over a process that
    also imported torch, more on busy cores, enough to miss a step's deadline. Objects made later
    (sessions, frames) are still collected as usual."""
    gc.collect()
    gc.freeze()
    log.debug("%d start-up objects frozen out of the garbage collector", gc.get_freeze_count())


def _warm_up_face_mesh() -> None:
    from f2f.features.face_geometry import FaceGeometryFeaturizer

    FaceGeometryFeaturizer(static_images=False).close()
