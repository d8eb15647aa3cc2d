"""Engines: the embedded backend on a real (tiny) model repository, micro-batching, errors, policy."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from engines import EngineSettings, open_engine
from engines.batcher import MicroBatcher
from engines.contract import (
    BackendDownEndSession,
    EngineHealth,
    EngineUnavailable,
    FatalEngineError,
    HealthState,
    PartnerFace,
    RetryableEngineError,
    StepRequest,
    StepResult,
)
from engines.embedded import EmbeddedConfig, EmbeddedEngine
from engines.failover import BackendDownPolicy, FailoverEngine
from f2f.avatar_spec import MOTION_GENERATOR, AvatarSpec


def make_request(spec: AvatarSpec, seed: int, lambda_video: float = 1.0) -> StepRequest:
    rng = np.random.default_rng(seed)
    shapes = spec.inputs(MOTION_GENERATOR)
    return StepRequest(
        audio_mel=rng.normal(size=shapes["audio_mel"]).astype(np.float32),
        guest_features=rng.normal(size=shapes["guest_features"]).astype(np.float32),
        guest_visible=(rng.random(shapes["guest_visible"]) > 0.3).astype(np.float32),
        motion_history=rng.normal(size=shapes["motion_history"]).astype(np.float32),
        noise=rng.normal(size=shapes["noise"]).astype(np.float32),
        lambda_video=lambda_video,
    )


def test_embedded_engine_steps_and_encodes(tiny_model_repository):
    async def scenario():
        engine = EmbeddedEngine(tiny_model_repository)
        assert (await engine.health()).state is HealthState.STARTING
        await engine.start()
        try:
            assert (await engine.health()).ready
            spec = engine.spec
            results = await engine.step([make_request(spec, i) for i in range(3)])
            assert len(results) == 3
            assert results[0].motion.shape == (spec.frames_per_step, 15)
            assert results[0].frames.shape == (spec.frames_per_step, spec.frame_size, spec.frame_size, 3)
            assert results[0].frames.dtype == np.uint8
            # One batched call gives what three single calls give.
            single = await engine.step([make_request(spec, 1)])
            np.testing.assert_allclose(single[0].motion, results[1].motion, atol=1e-5)
            # lambda_video changes the output (the tiny model's video branch is randomised).
            other = await engine.step([make_request(spec, 1, lambda_video=0.0)])
            assert not np.allclose(other[0].motion, single[0].motion, atol=1e-4)
            faces = [PartnerFace(np.full((3, spec.crop_size, spec.crop_size), 0.5, np.float32), np.zeros(15, np.float32))]
            features = await engine.encode_partner(faces * 2)
            assert features.shape == (2, spec.guest_feature_dim)
            with pytest.raises(FatalEngineError, match="audio_mel: shape"):
                bad = make_request(spec, 0)
                await engine.step([StepRequest(**{**bad.__dict__, "audio_mel": bad.audio_mel[:3]})])
            with pytest.raises(FatalEngineError, match="NaN"):
                bad = make_request(spec, 0)
                await engine.step([StepRequest(**{**bad.__dict__, "noise": bad.noise * np.nan})])
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_missing_repository_and_bad_device_are_clear(tmp_path, tiny_model_repository):
    with pytest.raises(FileNotFoundError, match="f2f export"):
        EmbeddedEngine(tmp_path)
    with pytest.raises(ValueError, match="device"):
        EmbeddedEngine(tiny_model_repository, EmbeddedConfig(device="tpu"))


class ScriptedEngine:
    """A fake backend for one-stage tests of the batcher and the policy."""

    def __init__(self, spec: AvatarSpec, name: str = "fake", delay_s: float = 0.0):
        self.spec = spec
        self.name = name
        self.delay_s = delay_s
        self.calls: list[int] = []
        self.fail_with: Exception | None = None
        self.healthy = True

    async def start(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    async def close(self) -> None:
        pass

    async def step(self, requests):
        self.calls.append(len(requests))
        await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            raise self.fail_with
        return [StepResult(motion=r.noise + len(self.name), frames=np.zeros((1, 2, 2, 3), np.uint8)) for r in requests]

    async def encode_partner(self, faces):
        self.calls.append(len(faces))
        if self.fail_with is not None:
            raise self.fail_with
        return np.stack([f.geometry for f in faces])

    async def health(self) -> EngineHealth:
        state = HealthState.READY if self.healthy else HealthState.UNHEALTHY
        return EngineHealth(state, self.name, "", time.monotonic())


def test_micro_batcher_turns_concurrent_sessions_into_one_call():
    async def scenario():
        spec = AvatarSpec(crop_size=8, guest_feature_dim=4, frame_size=64)
        fake = ScriptedEngine(spec, delay_s=0.01)
        batcher = MicroBatcher(fake, window_s=0.05)
        batcher.expected_callers = 6
        await batcher.start()
        try:
            requests = [make_request(spec, i) for i in range(6)]
            results = await asyncio.gather(*(batcher.step([r]) for r in requests))
            assert fake.calls == [6]  # six sessions, one engine call
            for request, (result,) in zip(requests, results):  # each got its own row back
                np.testing.assert_array_equal(result.motion, request.noise + 4)
            # A lone caller does not wait for the window when it is the only expected caller.
            batcher.expected_callers = 1
            started = time.perf_counter()
            await batcher.step([requests[0]])
            assert fake.calls[-1] == 1 and time.perf_counter() - started < 0.05 + 0.04
            # An engine error reaches every caller of the batch, and the batcher keeps working.
            fake.fail_with = RetryableEngineError("busy")
            batcher.expected_callers = 2
            outcomes = await asyncio.gather(*(batcher.step([r]) for r in requests[:2]), return_exceptions=True)
            assert all(isinstance(o, RetryableEngineError) for o in outcomes)
            fake.fail_with = None
            assert len(await batcher.step([requests[0]])) == 1
            faces = [PartnerFace(np.zeros((3, 8, 8), np.float32), np.full(15, i, np.float32)) for i in range(3)]
            encoded = await asyncio.gather(*(batcher.encode_partner([f]) for f in faces))
            assert [float(e[0, 0]) for e in encoded] == [0.0, 1.0, 2.0]
        finally:
            await batcher.close()

    asyncio.run(scenario())


def test_embedded_timeout_is_retryable(tiny_model_repository):
    async def scenario():
        from engines.contract import EngineTimeouts

        engine = EmbeddedEngine(tiny_model_repository, EmbeddedConfig(timeouts=EngineTimeouts(step_s=1e-6)))
        await engine.start()
        try:
            with pytest.raises(RetryableEngineError, match="longer than"):
                await engine.step([make_request(engine.spec, 0) for _ in range(16)])
        finally:
            await engine.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("policy", list(BackendDownPolicy))
def test_backend_down_policy(policy):
    async def scenario():
        spec = AvatarSpec(crop_size=8, guest_feature_dim=4, frame_size=64)
        primary, fallback = ScriptedEngine(spec, "triton"), ScriptedEngine(spec, "embedded")
        engine = FailoverEngine(primary, fallback if policy is BackendDownPolicy.FAILOVER else None, policy,
                                health_interval_s=0.05)
        await engine.start()
        try:
            request = make_request(spec, 0)
            (result,) = await engine.step([request])
            np.testing.assert_array_equal(result.motion, request.noise + len("triton"))
            # The server goes away: the next call fails, and the policy decides.
            primary.fail_with = EngineUnavailable("connection refused")
            primary.healthy = False
            if policy is BackendDownPolicy.FAILOVER:
                (result,) = await engine.step([request])
                np.testing.assert_array_equal(result.motion, request.noise + len("embedded"))
                assert engine.active_backend == "embedded" and (await engine.health()).ready
            else:
                with pytest.raises(BackendDownEndSession, match="end_session"):
                    await engine.step([request])
                assert not (await engine.health()).ready
            # It comes back: within a few health intervals, calls return to it.
            primary.fail_with = None
            primary.healthy = True
            for _ in range(40):
                await asyncio.sleep(0.05)
                if engine.active_backend == "triton":
                    break
            (result,) = await engine.step([request])
            np.testing.assert_array_equal(result.motion, request.noise + len("triton"))
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_open_engine_settings(tiny_model_repository):
    engine = open_engine(EngineSettings(model_repository=tiny_model_repository))
    assert isinstance(engine, MicroBatcher) and engine.name == "embedded"
    with pytest.raises(ValueError, match="backend"):
        open_engine(EngineSettings(backend="carrier-pigeon", model_repository=tiny_model_repository))
    with pytest.raises(ValueError, match="model repository"):
        open_engine(EngineSettings())
