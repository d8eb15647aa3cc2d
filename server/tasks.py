"""Background tasks that log their exceptions and are cancelled and awaited when their owner closes.

Every long-running coroutine of a session is started through a `TaskGroup` owned by that session:
an exception that escapes a task is logged (with the session id) and reported to an optional
callback instead of vanishing in a "Task exception was never retrieved" warning, and `close()`
cancels every task and waits until each has really finished (so a closed session holds nothing).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Coroutine

log = logging.getLogger(__name__)


class TaskGroup:
    """Named background tasks of one owner. Not asyncio.TaskGroup: one failing task must not cancel the rest."""

    def __init__(self, owner: str, on_error: Callable[[str, BaseException], None] | None = None):
        self.owner = owner
        self._on_error = on_error
        self._tasks: set[asyncio.Task] = set()
        self._closed = False

    def spawn(self, name: str, coro: Coroutine) -> asyncio.Task:
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self.owner}: cannot start {name!r}, tasks already closed")
        task = asyncio.get_running_loop().create_task(self._guard(name, coro), name=f"{self.owner}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _guard(self, name: str, coro: Awaitable) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # logged and reported, never silently lost
            log.exception("%s: task %s failed", self.owner, name)
            if self._on_error is not None:
                try:
                    self._on_error(name, exc)
                except Exception:
                    log.exception("%s: error callback failed", self.owner)

    @property
    def tasks(self) -> frozenset[asyncio.Task]:
        return frozenset(self._tasks)

    async def close(self, timeout: float = 3.0) -> None:
        """Cancel every task except the caller's own, and wait for them (at most `timeout` seconds).

        The cancel is repeated until each task has finished: on Python < 3.12 `asyncio.wait_for` can
        swallow a cancellation that lands as its inner call completes, and a task must not outlive
        its owner because of that race.
        """
        self._closed = True
        current = asyncio.current_task()
        pending = {t for t in self._tasks if t is not current and not t.done()}
        deadline = asyncio.get_running_loop().time() + timeout
        while pending:
            for task in pending:
                task.cancel()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            _, pending = await asyncio.wait(pending, timeout=min(0.1, remaining))
        for task in pending:
            log.error("%s: task %s did not stop within %.1f s", self.owner, task.get_name(), timeout)


def spawn_logged(coro: Coroutine, name: str) -> asyncio.Task:
    """A one-off task whose exception is logged (for work that belongs to no session)."""

    async def guard() -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("task %s failed", name)

    task = asyncio.get_running_loop().create_task(guard(), name=name)
    _ORPHANS.add(task)
    task.add_done_callback(_ORPHANS.discard)
    return task


_ORPHANS: set[asyncio.Task] = set()  # strong references, so one-off tasks are not garbage-collected
