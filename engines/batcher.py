"""Cross-session micro-batching: concurrent requests within a short window become one engine call.

Each session asks for one step per tick. The batcher collects requests until either every
expected caller has asked (`expected_callers`, kept by the gateway as its session count), the
batch is full, or `window_s` has passed since the first request; then it makes one batched call
and hands each caller its own result. So N sessions ticking together cost one call, and a lone
session pays no window at all.

One bad batch stays with its own callers (the "engine raises or stalls" faults, docs/reliability.md):
- a call that raises a retryable error gives it to every caller of that batch (they skip a tick);
- a call that raises anything else while serving several callers is tried again caller by caller,
  so one session's bad request cannot end the sessions batched with it; an untyped exception is
  handed out as a `RetryableEngineError` (the caller skips frames; typed fatal errors stay fatal);
- calls run one at a time (so batches stay whole), but one that is still running after `stall_s`
  no longer holds the queue: the next batch starts beside it (at most `max_in_flight` at once), and
  a call is abandoned (cancelled, its callers get a `RetryableEngineError`) after `call_timeout_s`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, Sequence, TypeVar

import numpy as np

from engines.contract import (
    AvatarEngine,
    EngineError,
    EngineHealth,
    PartnerFace,
    RetryableEngineError,
    StepRequest,
    StepResult,
)

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

STALL_S = 0.1  # a call running longer than this (2.5 frames) no longer holds up the next batch
CALL_TIMEOUT_S = 5.0  # a safety net: the backends' own deadlines (1-2 s) normally fire first
MAX_IN_FLIGHT = 4


@dataclass
class _Pending(Generic[Item]):
    items: Sequence[Item]
    future: asyncio.Future


def as_engine_error(error: BaseException) -> EngineError:
    """Typed engine errors as they are; a timeout or anything untyped becomes retryable."""
    if isinstance(error, EngineError):
        return error
    if isinstance(error, asyncio.TimeoutError):
        return RetryableEngineError("engine call timed out")
    wrapped = RetryableEngineError(f"engine call failed: {type(error).__name__}: {error}")
    wrapped.__cause__ = error
    return wrapped


class _BatchQueue(Generic[Item, Result]):
    """One queue + collector task for one kind of call (encode or step)."""

    def __init__(self, name: str, call: Callable[[list[Item]], Awaitable[Sequence[Result]]],
                 window_s: float, max_batch: int, expected: Callable[[], int], *,
                 stall_s: float = STALL_S, call_timeout_s: float = CALL_TIMEOUT_S, max_in_flight: int = MAX_IN_FLIGHT):
        self.name = name
        self._call = call
        self._window_s = window_s
        self._max_batch = max_batch
        self._expected = expected
        self._stall_s = stall_s
        self._call_timeout_s = call_timeout_s
        self._max_in_flight = max(1, max_in_flight)
        self._queue: asyncio.Queue[_Pending[Item]] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._in_flight: set[asyncio.Task] = set()
        self.batches: deque[int] = deque(maxlen=1000)  # sizes of recent batches, for stats and tests
        self.stalled = 0  # calls that ran past stall_s (the next batch started beside them)
        self.abandoned = 0  # calls cancelled after call_timeout_s
        self.isolated = 0  # failed shared batches tried again caller by caller

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"f2f-batcher-{self.name}")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._in_flight) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.cancel()

    async def submit(self, items: Sequence[Item]) -> list[Result]:
        if self._task is None:
            raise RuntimeError(f"batcher {self.name} is not started")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(items, future))
        return await future

    async def _collect(self) -> list[_Pending[Item]]:
        first = await self._queue.get()
        batch = [first]
        size = len(first.items)
        deadline = asyncio.get_running_loop().time() + self._window_s
        while size < self._max_batch and len(batch) < max(1, self._expected()):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                pending = await asyncio.wait_for(self._queue.get(), remaining)
            except asyncio.TimeoutError:
                break
            batch.append(pending)
            size += len(pending.items)
        # Anything that arrived meanwhile rides along too, up to the batch limit.
        while size < self._max_batch and not self._queue.empty():
            pending = self._queue.get_nowait()
            batch.append(pending)
            size += len(pending.items)
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            live = [p for p in batch if not p.future.done()]  # callers that gave up are skipped
            if not live:
                continue
            task = asyncio.create_task(self._dispatch(live), name=f"f2f-batcher-{self.name}-call")
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            # One call at a time keeps batches whole; a stalled one does not hold the next batch.
            await asyncio.wait({task}, timeout=self._stall_s)
            if not task.done():
                self.stalled += 1
                log.info("%s batch of %d still running after %.2f s; the next batch starts beside it",
                            self.name, sum(len(p.items) for p in live), self._stall_s)
            while len(self._in_flight) >= self._max_in_flight:
                await asyncio.wait(set(self._in_flight), return_when=asyncio.FIRST_COMPLETED)

    async def _dispatch(self, live: list[_Pending[Item]]) -> None:
        items = [item for p in live for item in p.items]
        self.batches.append(len(items))
        try:
            results = list(await self._timed_call(items))
        except asyncio.CancelledError:
            for p in live:
                if not p.future.done():
                    p.future.cancel()
            raise
        except Exception as error:  # noqa: BLE001 - every failure goes to the callers, typed
            if len(live) > 1 and not isinstance(error, RetryableEngineError):
                self.isolated += 1
                log.warning("%s batch of %d callers failed (%s: %s); trying each caller alone",
                            self.name, len(live), type(error).__name__, error)
                await self._one_by_one(live)
                return
            _fail(live, as_engine_error(error))
            return
        _deliver(live, results)

    async def _timed_call(self, items: list[Item]) -> Sequence[Result]:
        try:
            return await asyncio.wait_for(self._call(items), self._call_timeout_s)
        except asyncio.TimeoutError:
            self.abandoned += 1
            raise RetryableEngineError(f"{self.name} call abandoned after {self._call_timeout_s:.1f} s") from None

    async def _one_by_one(self, live: list[_Pending[Item]]) -> None:
        for p in live:
            if p.future.done():
                continue
            try:
                results = list(await self._timed_call(list(p.items)))
            except asyncio.CancelledError:
                _fail(live, None)
                raise
            except Exception as error:  # noqa: BLE001
                _fail([p], as_engine_error(error))
                continue
            _deliver([p], results)


def _deliver(live: list[_Pending], results: list) -> None:
    start = 0
    for p in live:
        stop = start + len(p.items)
        if not p.future.done():
            p.future.set_result(results[start:stop])
        start = stop


def _fail(live: list[_Pending], error: BaseException | None) -> None:
    """Hand `error` to every caller still waiting (None: cancel them)."""
    for p in live:
        if not p.future.done():
            if error is None:
                p.future.cancel()
            else:
                p.future.set_exception(error)


class MicroBatcher:
    """An AvatarEngine in front of another one, batching concurrent calls."""

    def __init__(self, engine: AvatarEngine, window_s: float = 0.003, max_batch: int = 64, *,
                 stall_s: float = STALL_S, call_timeout_s: float = CALL_TIMEOUT_S, max_in_flight: int = MAX_IN_FLIGHT):
        self.engine = engine
        self.name = engine.name
        self.expected_callers = 1
        limits = {"stall_s": stall_s, "call_timeout_s": call_timeout_s, "max_in_flight": max_in_flight}
        self._steps: _BatchQueue[StepRequest, StepResult] = _BatchQueue(
            "step", engine.step, window_s, max_batch, lambda: self.expected_callers, **limits)
        self._encodes: _BatchQueue[PartnerFace, Any] = _BatchQueue(
            "encode", self._encode_rows, window_s, max_batch, lambda: self.expected_callers, **limits)

    @property
    def spec(self):
        return self.engine.spec

    @property
    def step_batches(self) -> list[int]:
        return list(self._steps.batches)

    @property
    def fault_counts(self) -> dict[str, int]:
        """Calls that stalled, were abandoned, or were retried caller by caller (steps and encodes)."""
        queues = (self._steps, self._encodes)
        return {name: sum(getattr(q, name) for q in queues) for name in ("stalled", "abandoned", "isolated")}

    async def _encode_rows(self, faces: list[PartnerFace]) -> list[np.ndarray]:
        return list(await self.engine.encode_partner(faces))

    async def start(self) -> None:
        await self.engine.start()
        self._steps.start()
        self._encodes.start()

    async def close(self) -> None:
        await self._steps.stop()
        await self._encodes.stop()
        await self.engine.close()

    async def encode_partner(self, faces: Sequence[PartnerFace]) -> np.ndarray:
        return np.stack(await self._encodes.submit(faces))

    async def step(self, requests: Sequence[StepRequest]) -> list[StepResult]:
        return await self._steps.submit(requests)

    async def health(self) -> EngineHealth:
        return await self.engine.health()
