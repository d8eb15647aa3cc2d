"""What happens when the remote backend goes away: a setting, not an accident.

`FailoverEngine` puts a primary backend (Triton) in front of an optional fallback (embedded). A
health loop probes the primary every `health_interval_s`; a failed call marks it down at once.
Policy `failover`: while the primary is down, calls go to the fallback and sessions carry on.
Policy `end_session`: calls raise `BackendDownEndSession` (fatal for the session), and the gateway
ends the affected sessions with that reason. Either way, new calls return to the primary as soon as it is healthy again.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from typing import Sequence

import numpy as np

from engines.contract import (
    AvatarEngine,
    BackendDownEndSession,
    EngineHealth,
    FatalEngineError,
    HealthState,
    PartnerFace,
    RetryableEngineError,
    StepRequest,
    StepResult,
)

log = logging.getLogger(__name__)


class BackendDownPolicy(enum.Enum):
    FAILOVER = "failover"
    END_SESSION = "end_session"


class FailoverEngine:
    def __init__(self, primary: AvatarEngine, fallback: AvatarEngine | None, policy: BackendDownPolicy,
                 health_interval_s: float = 0.25):
        if policy is BackendDownPolicy.FAILOVER and fallback is None:
            raise ValueError("the failover policy needs a fallback engine")
        self.primary = primary
        self.fallback = fallback
        self.policy = policy
        self.name = f"{primary.name}+{fallback.name}" if fallback else primary.name
        self._health_interval_s = health_interval_s
        self._primary_up = False
        self._down_reason = "not started"
        self._down_since: float | None = None
        self._monitor: asyncio.Task | None = None
        self.switches = 0  # how many times calls moved between backends

    @property
    def spec(self):
        return self.primary.spec if self._primary_up or self.fallback is None else self.fallback.spec

    @property
    def active_backend(self) -> str | None:
        if self._primary_up:
            return self.primary.name
        if self.policy is BackendDownPolicy.FAILOVER:
            return self.fallback.name
        return None

    async def start(self) -> None:
        if self.fallback is not None:
            await self.fallback.start()  # started eagerly, so a failover costs nothing
        try:
            await self.primary.start()
            self._mark_up()
        except Exception as error:  # noqa: BLE001 - a primary that cannot start is "down", by policy
            if self.policy is BackendDownPolicy.END_SESSION or isinstance(error, FatalEngineError):
                raise
            self._mark_down(f"could not start: {error}")
        if self.fallback is not None and self._primary_up and self.fallback.spec != self.primary.spec:
            raise FatalEngineError("primary and fallback engines serve different avatar specs")
        self._monitor = asyncio.create_task(self._watch(), name="f2f-engine-health")

    async def close(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            try:
                await self._monitor
            except asyncio.CancelledError:
                pass
        await self.primary.close()
        if self.fallback is not None:
            await self.fallback.close()

    def _mark_down(self, reason: str) -> None:
        if self._primary_up or self._down_since is None:
            log.warning("%s backend is down (%s); policy %s", self.primary.name, reason, self.policy.value)
            self.switches += 1
            self._down_since = time.monotonic()
        self._primary_up = False
        self._down_reason = reason

    def _mark_up(self) -> None:
        if not self._primary_up:
            if self._down_since is not None:
                log.info("%s backend is back", self.primary.name)
                self.switches += 1
            self._primary_up = True
            self._down_since = None
            self._down_reason = ""

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._health_interval_s)
            try:
                health = await self.primary.health()
            except Exception as error:  # noqa: BLE001 - a failing probe means "down"
                health = EngineHealth(HealthState.UNHEALTHY, self.primary.name, str(error), time.monotonic())
            if health.ready:
                if not self._primary_up:
                    try:
                        await self.primary.start()  # reconnect, re-read its spec
                        self._mark_up()
                    except Exception as error:  # noqa: BLE001
                        self._mark_down(f"restart failed: {error}")
            else:
                self._mark_down(health.detail or health.state.value)

    def _target(self) -> AvatarEngine:
        if self._primary_up:
            return self.primary
        if self.policy is BackendDownPolicy.FAILOVER:
            return self.fallback
        raise BackendDownEndSession(f"{self.primary.name} backend is down ({self._down_reason}); "
                                    "policy end_session ends this session")

    async def _route(self, method: str, items):
        target = self._target()
        try:
            return await getattr(target, method)(items)
        except RetryableEngineError as error:
            if target is not self.primary:
                raise
            self._mark_down(str(error))
            if self.policy is BackendDownPolicy.FAILOVER:
                return await getattr(self.fallback, method)(items)
            raise BackendDownEndSession(f"{self.primary.name} backend failed ({error}); "
                                        "policy end_session ends this session") from error

    async def encode_partner(self, faces: Sequence[PartnerFace]) -> np.ndarray:
        return await self._route("encode_partner", faces)

    async def step(self, requests: Sequence[StepRequest]) -> list[StepResult]:
        return await self._route("step", requests)

    async def health(self) -> EngineHealth:
        now = time.monotonic()
        if self._primary_up:
            return EngineHealth(HealthState.READY, self.name, f"{self.primary.name} up", now)
        if self.policy is BackendDownPolicy.FAILOVER:
            fallback = await self.fallback.health()
            detail = f"{self.primary.name} down ({self._down_reason}); serving from {self.fallback.name}"
            return EngineHealth(fallback.state, self.name, detail, now)
        return EngineHealth(HealthState.UNHEALTHY, self.name, f"{self.primary.name} down ({self._down_reason})", now)
