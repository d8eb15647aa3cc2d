"""What the gateway's start-up leaves behind for the sessions that follow it."""

from __future__ import annotations

import asyncio
import gc

import pytest

from server.config import ServerConfig
from server.gateway import Gateway
from tests.support.fake_engine import FakeEngine

pytestmark = pytest.mark.timeout(60)


def _tracked(obj: object) -> bool:
    """Whether the cyclic collector still walks `obj` (frozen objects are in none of its generations)."""
    return any(o is obj for o in gc.get_objects())


def test_start_up_objects_are_frozen_out_of_the_garbage_collectors_full_passes(report):
    """A full collection holds the GIL, and with it every session's 25 fps loop: the start-up heap
    (modules, models, the face mesh) is frozen so those passes do not walk it."""
    made_before = {"loaded": [1, 2, 3]}
    assert _tracked(made_before)
    gateway = Gateway(ServerConfig(), engine=FakeEngine())
    try:
        asyncio.run(gateway.start())
        made_after = {"session": [4, 5, 6]}
        assert not _tracked(made_before), "an object alive at start-up is still walked by every full collection"
        assert _tracked(made_after), "objects made after start-up must still be collected"
        report(f"gateway start-up: {gc.get_freeze_count()} objects frozen out of the garbage collector")
    finally:
        asyncio.run(gateway.stop())
        gc.unfreeze()
