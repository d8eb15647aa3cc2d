"""The backend-down policy with a real Triton: kill the server mid-stream, the session policy holds,
and calls return to Triton once it is back."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from engines.contract import BackendDownEndSession, EngineTimeouts
from engines.embedded import EmbeddedEngine
from engines.failover import BackendDownPolicy, FailoverEngine
from engines.triton import TritonEngine
from tests.integration.test_triton_backend import step_requests

TIMEOUTS = EngineTimeouts(encode_s=2.0, step_s=2.0, health_s=0.5, retries=0)


@pytest.mark.parametrize("policy", list(BackendDownPolicy))
def test_policy_holds_when_triton_dies_and_recovers(policy, triton_server, tiny_model_repository, report):
    async def scenario():
        primary = TritonEngine(triton_server.grpc_url, access_token=triton_server.access_token, timeouts=TIMEOUTS)
        fallback = EmbeddedEngine(tiny_model_repository) if policy is BackendDownPolicy.FAILOVER else None
        engine = FailoverEngine(primary, fallback, policy, health_interval_s=0.2)
        await engine.start()
        requests = step_requests(engine.spec, 1, seed=5)
        try:
            assert engine.active_backend == "triton"
            expected = (await engine.step(requests))[0].motion
            await asyncio.to_thread(triton_server.kill)
            killed = time.monotonic()
            outcomes = []
            while time.monotonic() - killed < 1.5:  # a 25 fps stream of steps while the server is gone
                try:
                    outcomes.append((await engine.step(requests))[0].motion)
                except BackendDownEndSession as error:
                    outcomes.append(error)
                await asyncio.sleep(0.04)
            if policy is BackendDownPolicy.FAILOVER:
                # Every tick got a frame: from the embedded engine, the same networks.
                assert all(isinstance(o, np.ndarray) for o in outcomes), outcomes[:3]
                np.testing.assert_allclose(outcomes[-1], expected, atol=1e-5)
                assert engine.active_backend == "embedded" and (await engine.health()).ready
            else:
                assert outcomes and all(isinstance(o, BackendDownEndSession) for o in outcomes[-10:])
                assert "end_session" in str(outcomes[-1])
                assert not (await engine.health()).ready
            await asyncio.to_thread(triton_server.start)
            back = time.monotonic()
            while engine.active_backend != "triton" and time.monotonic() - back < 10:
                await asyncio.sleep(0.05)
            assert engine.active_backend == "triton", "calls did not return to Triton after its restart"
            np.testing.assert_allclose((await engine.step(requests))[0].motion, expected, atol=1e-5)
            report(f"triton down, policy {policy.value}: {len(outcomes)} ticks in 1.5 s handled "
                   f"({'all served by embedded' if fallback else 'all ended with BackendDownEndSession'}); "
                   f"back on triton {time.monotonic() - back:.2f} s after its restart")
        finally:
            await engine.close()

    asyncio.run(scenario())
