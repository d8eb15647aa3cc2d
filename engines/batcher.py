"""Cross-session micro-batching: concurrent requests within a short window become one engine call.

Each session asks for one step per tick. The batcher collects requests until either every
expected caller has asked (`expected_callers`, kept by the gateway as its session count), the
batch is full, or `window_s` has passed since the first request; then it makes one batched call
and hands each caller its own result (or the shared exception). So N sessions ticking together
cost one call, and a lone session pays no window at all.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Generic, Sequence, TypeVar

import numpy as np

from engines.contract import AvatarEngine, EngineHealth, PartnerFace, StepRequest, StepResult

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Pending(Generic[Item]):
    items: Sequence[Item]
    future: asyncio.Future


class _BatchQueue(Generic[Item, Result]):
    """One queue + collector task for one kind of call (encode or step)."""

    def __init__(self, name: str, call: Callable[[list[Item]], Awaitable[Sequence[Result]]],
                 window_s: float, max_batch: int, expected: Callable[[], int]):
        self.name = name
        self._call = call
        self._window_s = window_s
        self._max_batch = max_batch
        self._expected = expected
        self._queue: asyncio.Queue[_Pending[Item]] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self.batches: list[int] = []  # sizes of recent batches (bounded), for stats and tests

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"f2f-batcher-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
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
            items = [item for p in live for item in p.items]
            self.batches = (self.batches + [len(items)])[-1000:]
            try:
                results = list(await self._call(items))
            except asyncio.CancelledError:
                for p in live:
                    if not p.future.done():
                        p.future.cancel()
                raise
            except Exception as error:  # every caller of the batch sees the engine's error
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(error)
                continue
            start = 0
            for p in live:
                stop = start + len(p.items)
                if not p.future.done():
                    p.future.set_result(results[start:stop])
                start = stop


class MicroBatcher:
    """An AvatarEngine in front of another one, batching concurrent calls."""

    def __init__(self, engine: AvatarEngine, window_s: float = 0.003, max_batch: int = 64):
        self.engine = engine
        self.name = engine.name
        self.expected_callers = 1
        self._steps: _BatchQueue[StepRequest, StepResult] = _BatchQueue(
            "step", engine.step, window_s, max_batch, lambda: self.expected_callers)
        self._encodes: _BatchQueue[PartnerFace, Any] = _BatchQueue(
            "encode", self._encode_rows, window_s, max_batch, lambda: self.expected_callers)

    @property
    def spec(self):
        return self.engine.spec

    @property
    def step_batches(self) -> list[int]:
        return self._steps.batches

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
