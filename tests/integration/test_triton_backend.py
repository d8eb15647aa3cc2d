"""engines.triton against a real Triton server (pytriton's bundled binary) serving the tiny model
repository: same outputs as the embedded backend, typed errors, and a crash that is noticed fast."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from engines.contract import (
    EngineTimeouts,
    EngineUnavailable,
    FatalEngineError,
    HealthState,
    PartnerFace,
    RetryableEngineError,
    StepRequest,
    stack_step_inputs,
)
from engines.embedded import EmbeddedConfig, EmbeddedEngine
from engines.repository import read_config, spec_of
from engines.triton import TritonEngine, TritonModels
from f2f.avatar_spec import AVATAR_STEP, AvatarSpec

PARITY_TOLERANCE = 1e-5


def partner_faces(spec: AvatarSpec, n: int, seed: int) -> list[PartnerFace]:
    rng = np.random.default_rng(seed)
    return [PartnerFace(crop=rng.random((3, spec.crop_size, spec.crop_size), dtype=np.float32),
                        geometry=rng.standard_normal(spec.motion_dim).astype(np.float32)) for _ in range(n)]


def step_requests(spec: AvatarSpec, n: int, seed: int) -> list[StepRequest]:
    rng = np.random.default_rng(seed)

    def normal(shape):
        return rng.standard_normal(shape).astype(np.float32)

    shapes = spec.inputs(AVATAR_STEP)
    return [StepRequest(audio_mel=normal(shapes["audio_mel"]), guest_features=normal(shapes["guest_features"]),
                        guest_visible=(rng.random(shapes["guest_visible"]) > 0.3).astype(np.float32),
                        motion_history=normal(shapes["motion_history"]), noise=normal(shapes["noise"]),
                        lambda_video=float(rng.uniform(0.0, 2.0))) for _ in range(n)]


def triton_engine(server, **kwargs) -> TritonEngine:
    return TritonEngine(server.grpc_url, access_token=server.access_token, **kwargs)


def test_server_mirrors_the_model_repository(triton_server, tiny_model_repository, report):
    """Every model is served under its repository name with the repository's tensors, batch limit,
    batching settings and avatar spec: what the production server would announce."""
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        for path in sorted(tiny_model_repository.glob("*/config.pbtxt")):
            written = read_config(path.parent)
            served = client.get_model_config(written.name, client_timeout=5).config
            assert client.is_model_ready(written.name)
            assert [(t.name, list(t.dims), t.data_type) for t in served.input] == \
                   [(t.name, list(t.dims), t.data_type) for t in written.input]
            assert [(t.name, list(t.dims), t.data_type) for t in served.output] == \
                   [(t.name, list(t.dims), t.data_type) for t in written.output]
            assert served.max_batch_size == written.max_batch_size
            if written.HasField("dynamic_batching"):
                assert list(served.dynamic_batching.preferred_batch_size) == \
                       list(written.dynamic_batching.preferred_batch_size)
                assert served.dynamic_batching.max_queue_delay_microseconds == \
                       written.dynamic_batching.max_queue_delay_microseconds
            assert spec_of(served) == spec_of(written)
    finally:
        client.close()
    report(f"pytriton server start (tiny repository, 4 models): "
           f"{', '.join(f'{s:.1f} s' for s in triton_server.start_seconds)}")


@pytest.mark.parametrize("batch", [1, 8])
def test_triton_matches_embedded(triton_server, tiny_model_repository, batch):
    async def run():
        triton = triton_engine(triton_server)
        embedded = EmbeddedEngine(tiny_model_repository, EmbeddedConfig(intra_op_threads=1))
        await triton.start()
        await embedded.start()
        try:
            assert triton.spec == embedded.spec
            faces = partner_faces(triton.spec, batch, seed=batch)
            requests = step_requests(triton.spec, batch, seed=100 + batch)
            features = await triton.encode_partner(faces), await embedded.encode_partner(faces)
            inputs = stack_step_inputs(requests)
            raw = await triton.step_raw(inputs), await embedded.step_raw(inputs)
            results = await triton.step(requests), await embedded.step(requests)
            return features, raw, results
        finally:
            await triton.close()
            await embedded.close()

    (f_triton, f_embedded), ((m_triton, fr_triton), (m_embedded, fr_embedded)), (r_triton, r_embedded) = \
        asyncio.run(run())
    assert f_triton.shape == f_embedded.shape == (batch, f_triton.shape[1])
    assert np.abs(f_triton - f_embedded).max() <= PARITY_TOLERANCE
    assert m_triton.shape == m_embedded.shape and fr_triton.shape == fr_embedded.shape
    assert np.abs(m_triton - m_embedded).max() <= PARITY_TOLERANCE
    assert np.abs(fr_triton - fr_embedded).max() <= PARITY_TOLERANCE
    assert len(r_triton) == len(r_embedded) == batch
    for a, b in zip(r_triton, r_embedded):
        assert a.frames.dtype == np.uint8 and a.frames.shape == b.frames.shape
        assert np.abs(a.motion - b.motion).max() <= PARITY_TOLERANCE
        # uint8 rounding of values within 1e-5 of each other can differ by one level at most.
        assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 1


def test_shared_memory_gives_the_same_outputs(triton_server):
    async def run():
        plain = triton_engine(triton_server)
        shared = triton_engine(triton_server, use_shared_memory=True)
        await plain.start()
        await shared.start()
        try:
            faces = partner_faces(plain.spec, 8, seed=1)
            inputs = stack_step_inputs(step_requests(plain.spec, 8, seed=2))
            # Twice through shared memory: the second call reuses the registered regions.
            outs = [await plain.encode_partner(faces), await shared.encode_partner(faces),
                    *(await plain.step_raw(inputs)), *(await shared.step_raw(inputs)),
                    *(await shared.step_raw(inputs))]
            return outs
        finally:
            await plain.close()
            await shared.close()

    f_plain, f_shared, m_plain, fr_plain, m_shared, fr_shared, m_again, fr_again = asyncio.run(run())
    np.testing.assert_array_equal(f_plain, f_shared)
    np.testing.assert_array_equal(m_plain, m_shared)
    np.testing.assert_array_equal(fr_plain, fr_shared)
    np.testing.assert_array_equal(fr_shared, fr_again)
    np.testing.assert_array_equal(m_shared, m_again)


def test_batches_beyond_max_batch_size_are_split(triton_server, tiny_model_repository):
    limit = read_config(tiny_model_repository / "guest_encoder").max_batch_size

    async def run():
        engine = triton_engine(triton_server)
        await engine.start()
        try:
            faces = partner_faces(engine.spec, limit + 3, seed=3)
            return await engine.encode_partner(faces), await engine.encode_partner(faces[-3:])
        finally:
            await engine.close()

    everything, tail = asyncio.run(run())
    assert everything.shape[0] == limit + 3
    assert np.abs(everything[-3:] - tail).max() <= PARITY_TOLERANCE


def test_errors_are_typed(triton_server):
    async def run():
        engine = triton_engine(triton_server)
        await engine.start()
        try:
            spec = engine.spec
            bad = step_requests(spec, 1, seed=4)[0]
            bad = StepRequest(bad.audio_mel[:-1], bad.guest_features, bad.guest_visible, bad.motion_history,
                              bad.noise, bad.lambda_video)
            with pytest.raises(FatalEngineError):
                await engine.step([bad])
            # Checked by the server, not by check_inputs: the wrong number of inputs.
            inputs = stack_step_inputs(step_requests(spec, 1, seed=5))
            with pytest.raises(FatalEngineError):
                await engine._infer(engine.models.guest_encoder, inputs, 1.0)
        finally:
            await engine.close()

        missing = triton_engine(triton_server, models=TritonModels(avatar_step="no_such_model"))
        with pytest.raises(FatalEngineError):
            await missing.start()
        await missing.close()

        # Nothing listens on this port: unavailable (retryable), and health says so.
        from tests.support.triton_process import free_port

        nowhere = TritonEngine(f"127.0.0.1:{free_port()}", timeouts=EngineTimeouts(health_s=0.5))
        started = time.monotonic()
        with pytest.raises(EngineUnavailable):
            await nowhere.start()
        health = await nowhere.health()
        await nowhere.close()
        return health, time.monotonic() - started

    health, seconds = asyncio.run(run())
    assert health.state is HealthState.UNHEALTHY
    assert seconds < 3.0


def test_server_crash_mid_stream_is_noticed_within_a_second(triton_server, report):
    """A loop of step calls runs while the server's process group is SIGKILLed: health turns
    UNHEALTHY within 1 s and step raises a retryable error (through gRPC messages and through shared
    memory alike); after a restart the same engines work again."""

    async def run():
        timeouts = EngineTimeouts(step_s=1.0, health_s=0.5)
        engine = triton_engine(triton_server, timeouts=timeouts)
        shared = triton_engine(triton_server, timeouts=timeouts, use_shared_memory=True)
        await engine.start()
        await shared.start()
        requests = step_requests(engine.spec, 2, seed=6)
        errors: list[Exception] = []
        ok_before = 0
        stop = asyncio.Event()

        async def stream():
            nonlocal ok_before
            while not stop.is_set():
                try:
                    await engine.step(requests)
                    if not errors:
                        ok_before += 1
                except RetryableEngineError as error:
                    errors.append(error)
                    stop.set()
                await asyncio.sleep(0.01)

        async def until(condition, timeout_s: float, what: str) -> float:
            deadline = time.monotonic() + timeout_s
            while not await condition():
                assert time.monotonic() < deadline, f"{what} within {timeout_s} s"
                await asyncio.sleep(0.01)
            return time.monotonic()

        async def flowing() -> bool:
            assert not errors, errors
            return ok_before >= 5

        async def unhealthy() -> bool:
            return (await engine.health()).state is HealthState.UNHEALTHY

        async def ready() -> bool:
            return (await engine.health()).ready

        task = asyncio.create_task(stream())
        try:
            await until(flowing, 10.0, "5 steps before the crash")
            assert await ready()
            await shared.step(requests)  # its regions are registered now
            # Probe health while the kill happens (the kill itself also waits and cleans up).
            kill = asyncio.create_task(asyncio.to_thread(triton_server.kill))
            unhealthy_at = await until(unhealthy, 5.0, "UNHEALTHY after the crash")
            await kill
            unhealthy_after = unhealthy_at - triton_server.killed_at
            health = await engine.health()
            await asyncio.wait_for(task, 5.0)
            with pytest.raises(RetryableEngineError):
                await engine.step(requests)
            with pytest.raises(RetryableEngineError):
                await shared.step(requests)

            await asyncio.to_thread(triton_server.start)
            restarted = time.monotonic()
            await until(ready, 10.0, "READY after the restart")
            seen_again_s = time.monotonic() - restarted
            await engine.start()  # what the failover monitor does after an outage
            await shared.start()
            results = await engine.step(requests), await shared.step(requests)
            return health, errors, unhealthy_after, seen_again_s, results
        finally:
            stop.set()
            task.cancel()
            await engine.close()
            await shared.close()

    health, errors, unhealthy_after, seen_again_s, (plain, via_shm) = asyncio.run(run())
    assert errors and errors[0].retryable
    assert unhealthy_after <= 1.0, health
    assert len(plain) == len(via_shm) == 2
    for a, b in zip(plain, via_shm):
        np.testing.assert_array_equal(a.frames, b.frames)
    report(f"triton crash (SIGKILL of the server's process group): health UNHEALTHY "
           f"{max(unhealthy_after, 0) * 1000:.0f} ms after the signal; the streaming step raised "
           f"{type(errors[0]).__name__}; restarted server seen ready {seen_again_s:.2f} s after it was up")
