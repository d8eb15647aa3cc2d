"""The `triton` backend: the avatar networks on a Triton Inference Server, over KServe v2 gRPC. No torch.

Production serves TensorRT plans from the NGC image (`Dockerfile`); tests serve the same model
repository through pytriton's bundled server (`tests/support/pytriton_server.py`). Both answer the
same protocol, so this module cannot tell them apart.

- `start()` reads the AvatarSpec from the `avatar_step` ensemble's config (`f2f_avatar_spec`
  parameter), checks the served inputs/outputs against it and learns `max_batch_size`. It may be
  called again (the failover monitor does, after an outage) to re-read the spec and re-register
  shared memory, which a restarted server has forgotten.
- `encode_partner` is one `guest_encoder` request; `step` is one `avatar_step` request per tick
  (the ensemble runs motion_generator -> renderer on the server and returns motion and frames).
  Batches larger than the server's `max_batch_size` are split into concurrent requests.
- Deadlines: `EngineTimeouts.encode_s` / `step_s` bound a whole call, retries included; each
  attempt gets the time that is left as its gRPC deadline. A retryable failure (server unreachable,
  deadline exceeded, queue full) is retried `retries` times after `retry_backoff_s` while time is
  left, then raised as `EngineUnavailable` (unreachable) or `RetryableEngineError`. Wrong shapes,
  unknown models, and server-side model errors raise `FatalEngineError` at once.
- `health()` is a live probe, no background task: server readiness and both models' readiness in
  one round of concurrent gRPC calls bounded by `health_s`. A dead server refuses the connection at
  once, so `health()` reports UNHEALTHY within milliseconds of the crash (well within 1 s); a hung
  one, within `health_s`. The gRPC channel's reconnect backoff is capped at `reconnect_backoff_s`
  so a restarted server is seen again within about that long.
- Optional system shared memory (`use_shared_memory=True`, same host only): inputs and outputs go
  through POSIX shared-memory regions registered with the server instead of the gRPC message. A
  small pool of region pairs serves concurrent calls; regions grow to fit the largest batch seen.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from engines.contract import (
    EngineHealth,
    EngineStats,
    EngineTimeouts,
    EngineUnavailable,
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
from engines.repository import spec_of
from f2f.avatar_spec import AVATAR_STEP, GUEST_ENCODER, AvatarSpec

log = logging.getLogger(__name__)

# gRPC status codes (as tritonclient reports them) and what they mean for the caller.
_UNAVAILABLE = {"StatusCode.UNAVAILABLE"}  # refused, reset, server gone, model unloading
_RETRYABLE = {"StatusCode.DEADLINE_EXCEEDED", "StatusCode.RESOURCE_EXHAUSTED", "StatusCode.CANCELLED",
              "StatusCode.ABORTED"}
# Everything else (INVALID_ARGUMENT, NOT_FOUND, UNIMPLEMENTED, INTERNAL, UNKNOWN, ...) is fatal:
# the same request cannot succeed by trying again.

# Triton's gRPC header for restricted protocols (`--grpc-restricted-protocol
# shared-memory,...:triton-access-token=TOKEN`; pytriton restricts shared memory that way).
_ACCESS_HEADER = "triton-grpc-protocol-triton-access-token"
_MAX_MESSAGE = 2**31 - 1


@dataclass(frozen=True)
class TritonModels:
    """Model names on the server (the repository's directory names)."""

    guest_encoder: str = GUEST_ENCODER
    avatar_step: str = AVATAR_STEP


@dataclass
class _Signature:
    """One served model: its tensors (name -> dims without batch) and batch limit."""

    inputs: dict[str, tuple[int, ...]]
    outputs: dict[str, tuple[int, ...]]
    max_batch_size: int


def map_error(error: BaseException, what: str) -> Exception:
    """A tritonclient / gRPC failure -> the contract's typed error."""
    if isinstance(error, InferenceServerException):
        status = error.status() or ""
        text = f"{what}: {status or 'error'} {error.message()}"
        if status in _UNAVAILABLE and "restricted" not in error.message():  # a missing token stays missing
            return EngineUnavailable(text)
        if status in _RETRYABLE:
            return RetryableEngineError(text)
        return FatalEngineError(text)
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return RetryableEngineError(f"{what}: timed out")
    if isinstance(error, (ConnectionError, OSError)):
        return EngineUnavailable(f"{what}: {error}")
    return FatalEngineError(f"{what}: {type(error).__name__}: {error}")


def _signature(config: mc.ModelConfig) -> _Signature:
    for t in itertools.chain(config.input, config.output):
        if t.data_type != mc.TYPE_FP32:
            raise FatalEngineError(f"{config.name}.{t.name}: served as {mc.DataType.Name(t.data_type)}, expected TYPE_FP32")
    return _Signature(
        inputs={t.name: tuple(t.dims) for t in config.input},
        outputs={t.name: tuple(t.dims) for t in config.output},
        max_batch_size=config.max_batch_size,
    )


def _check_signature(name: str, served: _Signature, spec: AvatarSpec, network: str) -> None:
    if served.inputs != spec.inputs(network) or served.outputs != spec.outputs(network):
        raise FatalEngineError(
            f"{name} on the server does not match its avatar spec: inputs {served.inputs} outputs {served.outputs}, "
            f"expected inputs {spec.inputs(network)} outputs {spec.outputs(network)}")
    if served.max_batch_size < 1:
        raise FatalEngineError(f"{name}: max_batch_size {served.max_batch_size}; the avatar networks need a batch axis")


def _shared_memory():
    """tritonclient's system shared-memory helpers, imported on first use (it warns about
    pkg_resources at import, which says nothing about us)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import tritonclient.utils.shared_memory as shm
    return shm


class _ShmRegion:
    """One POSIX shared-memory region registered with the server; grows by re-creating itself."""

    _ids = itertools.count()

    def __init__(self, prefix: str, role: str):
        self.name = f"{prefix}_{role}_{next(self._ids)}"
        self.key = f"/{self.name}"
        self.handle = None
        self.byte_size = 0
        self.registered = False

    async def ensure(self, client: grpcaio.InferenceServerClient, byte_size: int, headers, timeout_s: float) -> None:
        shm = _shared_memory()

        if self.handle is not None and self.byte_size >= byte_size and self.registered:
            return
        await self.release(client, headers, timeout_s)
        self.byte_size = max(byte_size, 1 << 16)
        self.handle = shm.create_shared_memory_region(self.name, self.key, self.byte_size)
        await client.register_system_shared_memory(self.name, self.key, self.byte_size, headers=headers,
                                                   client_timeout=timeout_s)
        self.registered = True

    async def release(self, client: grpcaio.InferenceServerClient | None, headers, timeout_s: float) -> None:
        if self.registered and client is not None:
            try:
                await client.unregister_system_shared_memory(self.name, headers=headers, client_timeout=timeout_s)
            except Exception:  # noqa: BLE001 - a dead or restarted server has forgotten it anyway
                pass
        self.registered = False
        self.destroy_local()

    def destroy_local(self) -> None:
        """Unmap and unlink on this side only."""
        if self.handle is not None:
            handle, self.handle, self.byte_size = self.handle, None, 0
            try:
                _shared_memory().destroy_shared_memory_region(handle)
            except Exception as error:  # noqa: BLE001 - already unlinked elsewhere; nothing left to free
                log.warning("shared memory region %s: %s", self.name, error)


class TritonEngine:
    name = "triton"

    def __init__(self, url: str, *, models: TritonModels = TritonModels(),
                 timeouts: EngineTimeouts = EngineTimeouts(), use_shared_memory: bool = False,
                 access_token: str | None = None, reconnect_backoff_s: float = 0.5):
        self.url = url
        self.models = models
        self.timeouts = timeouts
        self.use_shared_memory = use_shared_memory
        self.stats = EngineStats()
        self._spec: AvatarSpec | None = None
        self._signatures: dict[str, _Signature] = {}
        self._client: grpcaio.InferenceServerClient | None = None
        self._reconnect_ms = max(int(reconnect_backoff_s * 1000), 50)
        token = access_token or os.environ.get("F2F_TRITON_ACCESS_TOKEN")
        self._headers = {_ACCESS_HEADER: token} if token else None
        self._shm_prefix = f"f2f_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._shm_free: list[tuple[_ShmRegion, _ShmRegion]] = []
        self._shm_all: list[tuple[_ShmRegion, _ShmRegion]] = []
        self._shm_stale: list[str] = []  # region names a failed call may have left registered

    @property
    def spec(self) -> AvatarSpec:
        if self._spec is None:
            raise FatalEngineError("triton engine is not started: its avatar spec comes from the server")
        return self._spec

    # --- lifecycle -------------------------------------------------------------------------------

    def _new_client(self) -> grpcaio.InferenceServerClient:
        # Keep the tritonclient defaults (message size, keepalive) and cap the reconnect backoff: gRPC's
        # default grows to 120 s, which would hide a restarted server for minutes.
        options = [
            ("grpc.max_send_message_length", _MAX_MESSAGE),
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ("grpc.keepalive_time_ms", 2**31 - 1),
            ("grpc.keepalive_timeout_ms", 20000),
            ("grpc.initial_reconnect_backoff_ms", self._reconnect_ms),
            ("grpc.min_reconnect_backoff_ms", self._reconnect_ms),
            ("grpc.max_reconnect_backoff_ms", self._reconnect_ms),
        ]
        return grpcaio.InferenceServerClient(self.url, channel_args=options)

    async def start(self) -> None:
        """Connect (or reconnect) and read the avatar spec and signatures from the server."""
        if self._client is None:
            self._client = self._new_client()
        timeout_s = max(self.timeouts.health_s, 1.0)
        try:
            step_config, encoder_config = await asyncio.gather(
                self._client.get_model_config(self.models.avatar_step, client_timeout=timeout_s),
                self._client.get_model_config(self.models.guest_encoder, client_timeout=timeout_s))
        except Exception as error:  # noqa: BLE001 - mapped to the contract's errors
            raise map_error(error, f"reading model configs from {self.url}") from error
        try:
            spec = spec_of(step_config.config)
            encoder_spec = spec_of(encoder_config.config)
        except ValueError as error:
            raise FatalEngineError(f"{self.url}: {error}") from error
        if encoder_spec != spec:
            raise FatalEngineError(f"{self.models.guest_encoder} was exported for another avatar spec than "
                                   f"{self.models.avatar_step}")
        signatures = {self.models.avatar_step: _signature(step_config.config),
                      self.models.guest_encoder: _signature(encoder_config.config)}
        _check_signature(self.models.avatar_step, signatures[self.models.avatar_step], spec, AVATAR_STEP)
        _check_signature(self.models.guest_encoder, signatures[self.models.guest_encoder], spec, GUEST_ENCODER)
        self._spec, self._signatures = spec, signatures
        if self.use_shared_memory:
            await self._drop_shared_memory()  # a restarted server has forgotten our regions

    async def close(self) -> None:
        await self._drop_shared_memory()
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def _drop_shared_memory(self) -> None:
        for pair in self._shm_all:
            for region in pair:
                await region.release(self._client, self._headers, self.timeouts.health_s)
        self._shm_all.clear()
        self._shm_free.clear()
        stale, self._shm_stale = self._shm_stale, []
        for name in stale:
            if self._client is None:
                break
            try:
                await self._client.unregister_system_shared_memory(name, headers=self._headers,
                                                                   client_timeout=self.timeouts.health_s)
            except Exception:  # noqa: BLE001 - gone with a restarted server, or never registered
                pass

    # --- calls -----------------------------------------------------------------------------------

    async def _infer_once(self, model: str, inputs: dict[str, np.ndarray], timeout_s: float) -> dict[str, np.ndarray]:
        outputs = list(self._signatures[model].outputs)
        if self.use_shared_memory:
            return await self._infer_shm(model, inputs, outputs, timeout_s)
        request = []
        for name, value in inputs.items():
            tensor = grpcclient.InferInput(name, list(value.shape), "FP32")
            tensor.set_data_from_numpy(np.ascontiguousarray(value, dtype=np.float32))
            request.append(tensor)
        result = await self._client.infer(model, request, outputs=[grpcclient.InferRequestedOutput(n) for n in outputs],
                                          client_timeout=timeout_s)
        return {name: result.as_numpy(name) for name in outputs}

    async def _infer_shm(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str],
                         timeout_s: float) -> dict[str, np.ndarray]:
        shm = _shared_memory()

        batch = next(iter(inputs.values())).shape[0]
        out_shapes = {n: (batch, *self._signatures[model].outputs[n]) for n in outputs}
        in_bytes = sum(v.size * 4 for v in inputs.values())
        out_bytes = sum(int(np.prod(s)) * 4 for s in out_shapes.values())
        pair = self._shm_free.pop() if self._shm_free else None
        if pair is None:
            pair = (_ShmRegion(self._shm_prefix, "in"), _ShmRegion(self._shm_prefix, "out"))
            self._shm_all.append(pair)
        region_in, region_out = pair
        try:
            await region_in.ensure(self._client, in_bytes, self._headers, timeout_s)
            await region_out.ensure(self._client, out_bytes, self._headers, timeout_s)
            request, offset = [], 0
            for name, value in inputs.items():
                value = np.ascontiguousarray(value, dtype=np.float32)
                shm.set_shared_memory_region(region_in.handle, [value], offset)
                tensor = grpcclient.InferInput(name, list(value.shape), "FP32")
                tensor.set_shared_memory(region_in.name, value.nbytes, offset)
                request.append(tensor)
                offset += value.nbytes
            wanted, offsets, offset = [], {}, 0
            for name in outputs:
                nbytes = int(np.prod(out_shapes[name])) * 4
                requested = grpcclient.InferRequestedOutput(name)
                requested.set_shared_memory(region_out.name, nbytes, offset)
                wanted.append(requested)
                offsets[name] = offset
                offset += nbytes
            await self._client.infer(model, request, outputs=wanted, client_timeout=timeout_s)
            # Copy out: the region is reused by the next call.
            result = {name: shm.get_contents_as_numpy(region_out.handle, np.float32, out_shapes[name], offsets[name]).copy()
                      for name in outputs}
        except BaseException:
            # Never reuse a pair after a failure: the server may or may not still hold its registration.
            # Unmap it here; its names are unregistered (best effort) at the next start() or close().
            if pair in self._shm_all:
                self._shm_all.remove(pair)
            for region in pair:
                region.destroy_local()
                if region.registered:
                    self._shm_stale.append(region.name)
            raise
        if pair in self._shm_all:  # else start() dropped the pool meanwhile
            self._shm_free.append(pair)
        else:
            for region in pair:
                region.destroy_local()
        return result

    async def _infer(self, model: str, inputs: dict[str, np.ndarray], deadline_s: float) -> dict[str, np.ndarray]:
        """One logical call: split to max_batch_size, bounded by one deadline, retried while time is left."""
        if self._client is None or not self._signatures:
            raise FatalEngineError("triton engine is not started")
        batch = next(iter(inputs.values())).shape[0]
        limit = self._signatures[model].max_batch_size
        started = time.monotonic()
        deadline = started + deadline_s
        attempt = 0
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise asyncio.TimeoutError()
                chunks = [{k: v[i:i + limit] for k, v in inputs.items()} for i in range(0, batch, limit)]
                parts = await asyncio.gather(*(self._infer_once(model, c, left) for c in chunks))
                return {name: np.concatenate([p[name] for p in parts]) if len(parts) > 1 else parts[0][name]
                        for name in parts[0]}
            except Exception as error:  # noqa: BLE001 - mapped to the contract's errors
                mapped = map_error(error, f"{model} at {self.url}")
                self.stats.failures += 1
                attempt += 1
                backoff = self.timeouts.retry_backoff_s
                if (not mapped.retryable or attempt > self.timeouts.retries
                        or time.monotonic() + backoff >= deadline):
                    raise mapped from error
                await asyncio.sleep(backoff)

    async def encode_partner(self, faces: Sequence[PartnerFace]) -> np.ndarray:
        inputs = stack_partner_inputs(faces)
        check_inputs(self.spec, GUEST_ENCODER, inputs)
        outputs = await self._infer(self.models.guest_encoder, inputs, self.timeouts.encode_s)
        self.stats.record(len(faces))
        return outputs["guest_feature"]  # (B, D) float32

    async def step_raw(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Batched arrays in, (motion (B, K, 15), frames (B, K, 3, F, F) float) out: the networks' own
        outputs, for parity tests and benchmarks (same as `EmbeddedEngine.step_raw`)."""
        check_inputs(self.spec, AVATAR_STEP, inputs)
        outputs = await self._infer(self.models.avatar_step, inputs, self.timeouts.step_s)
        return outputs["motion"], outputs["frames"]

    async def step(self, requests: Sequence[StepRequest]) -> list[StepResult]:
        motion, frames = await self.step_raw(stack_step_inputs(requests))
        frames = frames_to_uint8(frames)
        self.stats.record(len(requests))
        return [StepResult(motion=motion[i], frames=frames[i]) for i in range(len(requests))]

    # --- health ----------------------------------------------------------------------------------

    async def health(self) -> EngineHealth:
        now = time.monotonic()
        if self._client is None:
            return EngineHealth(HealthState.STARTING, self.name, f"not connected to {self.url}", now)
        timeout_s = self.timeouts.health_s
        try:
            async with asyncio.timeout(timeout_s):
                server, *models = await asyncio.gather(
                    self._client.is_server_ready(client_timeout=timeout_s),
                    *(self._client.is_model_ready(m, client_timeout=timeout_s)
                      for m in (self.models.avatar_step, self.models.guest_encoder)))
        except Exception as error:  # noqa: BLE001 - any failed probe means "not healthy"
            return EngineHealth(HealthState.UNHEALTHY, self.name, str(map_error(error, f"health of {self.url}")),
                                time.monotonic())
        now = time.monotonic()
        if not server:
            return EngineHealth(HealthState.UNHEALTHY, self.name, f"{self.url}: server not ready", now)
        if not all(models):
            return EngineHealth(HealthState.UNHEALTHY, self.name, f"{self.url}: models not ready", now)
        if self._spec is None:  # up, but never started (or its start failed): read the spec now
            try:
                await self.start()
            except Exception as error:  # noqa: BLE001
                return EngineHealth(HealthState.UNHEALTHY, self.name, f"{self.url}: {error}", time.monotonic())
        return EngineHealth(HealthState.READY, self.name, f"{self.url}: {self.models.avatar_step}, "
                            f"{self.models.guest_encoder} ready", now)
