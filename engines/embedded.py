"""The `embedded` backend: the three ONNX networks in this process, through onnxruntime.

The default backend: no server, no GPU needed. Providers come from configuration (CPU, CUDA or
the TensorRT execution provider). onnxruntime releases the GIL while it runs, so calls go to one
worker thread and the event loop stays free; the MicroBatcher in front makes concurrent sessions
share a call. A call that overruns its deadline raises a retryable timeout (the worker finishes
the batch in the background; its result is dropped).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from engines.contract import (
    EngineHealth,
    EngineStats,
    EngineTimeouts,
    FatalEngineError,
    HealthState,
    PartnerFace,
    RetryableEngineError,
    StepRequest,
    StepResult,
    check_inputs,
    frames_to_uint8,
    stack_partner_inputs,
    stack_step_inputs,
)
from engines.repository import model_file, read_config, spec_of
from f2f.avatar_spec import AVATAR_STEP, GUEST_ENCODER, MOTION_GENERATOR, NETWORKS, RENDERER, AvatarSpec

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


@dataclass(frozen=True)
class EmbeddedConfig:
    device: str = "cpu"  # cpu | cuda | tensorrt
    intra_op_threads: int = 0  # 0 = onnxruntime's default (all cores)
    timeouts: EngineTimeouts = EngineTimeouts()


class EmbeddedEngine:
    name = "embedded"

    def __init__(self, model_repository: Path, config: EmbeddedConfig = EmbeddedConfig()):
        if config.device not in PROVIDERS:
            raise ValueError(f"device must be one of {sorted(PROVIDERS)}, got {config.device!r}")
        self.model_repository = Path(model_repository)
        self.config = config
        self.spec: AvatarSpec = spec_of(read_config(self.model_repository / AVATAR_STEP))
        self.stats = EngineStats()
        self._sessions: dict = {}
        self._executor: ThreadPoolExecutor | None = None
        self._error = ""

    async def start(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="f2f-embedded")
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._load)
        except Exception as error:
            self._error = f"could not load the models: {error}"
            raise FatalEngineError(self._error) from error

    def _load(self) -> None:
        import onnxruntime as ort

        available = set(ort.get_available_providers())
        providers = [p for p in PROVIDERS[self.config.device] if p in available]
        if PROVIDERS[self.config.device][0] not in available:
            raise FatalEngineError(f"{PROVIDERS[self.config.device][0]} is not available in this onnxruntime "
                                   f"(available: {sorted(available)})")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.config.intra_op_threads
        options.inter_op_num_threads = 1
        # Idle pool threads sleep instead of spinning: on a small shared CPU a spinning pool takes the
        # cores the face mesh, the codecs and other sessions need (2 threads, batch 1, 2 busy cores:
        # 55 ms steps spinning, 20 ms not; f2f bench latency).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        for network in NETWORKS:
            path = model_file(self.model_repository, network)
            spec = spec_of(read_config(path.parent.parent))
            if spec != self.spec:
                raise FatalEngineError(f"{network} was exported for another avatar spec than avatar_step")
            self._sessions[network] = ort.InferenceSession(str(path), options, providers=providers)

    async def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._sessions.clear()

    async def _call(self, fn, timeout_s: float):
        if self._executor is None or not self._sessions:
            raise FatalEngineError("embedded engine is not started")
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except asyncio.TimeoutError:
            self.stats.failures += 1
            raise RetryableEngineError(f"embedded engine call took longer than {timeout_s:.2f} s") from None
        except FatalEngineError:
            self.stats.failures += 1
            raise
        except Exception as error:  # onnxruntime raises plain exceptions for bad feeds
            self.stats.failures += 1
            raise FatalEngineError(f"onnxruntime failed: {error}") from error

    def _run(self, network: str, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._sessions[network].run(None, inputs)

    async def encode_partner(self, faces: Sequence[PartnerFace]) -> np.ndarray:
        inputs = stack_partner_inputs(faces)
        check_inputs(self.spec, GUEST_ENCODER, inputs)
        (features,) = await self._call(lambda: self._run(GUEST_ENCODER, inputs), self.config.timeouts.encode_s)
        self.stats.record(len(faces))
        return features  # (B, D)

    def _step_sync(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
        started = time.perf_counter()
        (motion,) = self._run(MOTION_GENERATOR, inputs)  # (B, K, 15)
        generated = time.perf_counter()
        (frames,) = self._run(RENDERER, {"motion": motion})  # (B, K, 3, F, F)
        rendered = time.perf_counter()
        seconds = {MOTION_GENERATOR: generated - started, RENDERER: rendered - generated}
        return motion, frames_to_uint8(frames), seconds

    async def step(self, requests: Sequence[StepRequest]) -> list[StepResult]:
        inputs = stack_step_inputs(requests)
        check_inputs(self.spec, MOTION_GENERATOR, inputs)
        motion, frames, seconds = await self._call(lambda: self._step_sync(inputs), self.config.timeouts.step_s)
        self.stats.record(len(requests))
        return [StepResult(motion=motion[i], frames=frames[i], network_seconds=seconds) for i in range(len(requests))]

    async def step_raw(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Batched arrays in, (motion (B, K, 15), frames (B, K, 3, F, F) float) out: for parity tests
        and benchmarks, which compare the networks' own outputs."""
        check_inputs(self.spec, MOTION_GENERATOR, inputs)

        def run():
            (motion,) = self._run(MOTION_GENERATOR, inputs)
            (frames,) = self._run(RENDERER, {"motion": motion})
            return motion, frames

        return await self._call(run, self.config.timeouts.step_s)

    async def health(self) -> EngineHealth:
        now = time.monotonic()
        if self._error:
            return EngineHealth(HealthState.UNHEALTHY, self.name, self._error, now)
        if self._executor is None or len(self._sessions) != len(NETWORKS):
            return EngineHealth(HealthState.STARTING, self.name, "models not loaded", now)
        return EngineHealth(HealthState.READY, self.name, f"{len(self._sessions)} networks on {self.config.device}", now)
