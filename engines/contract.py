"""The inference contract the gateway talks to, whatever runs the networks. No torch.

An engine does three things for a batch of sessions: encode partner faces into guest features,
step the avatar (motion generator -> renderer: the next K motion frames and their rendered
frames), and report its health. Backends: `engines.embedded` (onnxruntime in process) and
`engines.triton` (Triton over gRPC). `engines.batcher.MicroBatcher` sits in front of either so
concurrent sessions share one batched call.

Errors are typed: `RetryableEngineError` (a timeout, a busy or restarting server: the caller may
try the next tick) and `FatalEngineError` (wrong shapes, a missing model: retrying cannot help).
`EngineUnavailable` is the retryable error a backend raises while it is known to be down;
`BackendDownEndSession` is what the `end_session` policy turns it into.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from f2f.avatar_spec import AvatarSpec


class EngineError(RuntimeError):
    """Base of every engine failure. `retryable` tells the caller whether a later call may work."""

    retryable: bool = False


class RetryableEngineError(EngineError):
    retryable = True


class FatalEngineError(EngineError):
    retryable = False


class EngineUnavailable(RetryableEngineError):
    """The backend is down or unreachable right now."""


class BackendDownEndSession(FatalEngineError):
    """The remote backend is down and the configured policy (`end_session`) ends the sessions that
    need it: fatal for those sessions, while new sessions work again once the backend is back."""


@dataclass(frozen=True)
class PartnerFace:
    """One partner frame's face, ready for the guest encoder."""

    crop: np.ndarray  # (3, S, S) float32 RGB in 0..1
    geometry: np.ndarray  # (15,) float32 motion parameters of the partner


@dataclass(frozen=True)
class StepRequest:
    """What one session needs for its next K host frames (shapes from `AvatarSpec.inputs`)."""

    audio_mel: np.ndarray  # (M, 80) float32
    guest_features: np.ndarray  # (P, G, D) float32
    guest_visible: np.ndarray  # (P, G) float32, 1 = face seen
    motion_history: np.ndarray  # (H, 15) float32
    noise: np.ndarray  # (K+Q, 15) float32: the made and the plan frames (spec.noise_frames)
    lambda_video: float


@dataclass(frozen=True)
class StepResult:
    motion: np.ndarray  # (K, 15) float32
    frames: np.ndarray  # (K, F, F, 3) uint8 RGB, ready for a video encoder
    # Seconds each network took for the batch this result came from ({"motion_generator": ..,
    # "renderer": ..}), where the backend can tell (embedded); empty otherwise (Triton's ensemble).
    network_seconds: dict[str, float] = field(default_factory=dict)


class HealthState(enum.Enum):
    READY = "ready"
    STARTING = "starting"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class EngineHealth:
    state: HealthState
    backend: str
    detail: str = ""
    checked_at: float = 0.0  # time.monotonic() of the check

    @property
    def ready(self) -> bool:
        return self.state is HealthState.READY


@dataclass(frozen=True)
class EngineTimeouts:
    """Explicit deadlines (seconds) and retry counts of one backend."""

    encode_s: float = 0.5
    step_s: float = 1.0
    health_s: float = 0.5
    retries: int = 1  # extra attempts of a retryable failure within the same call
    retry_backoff_s: float = 0.02


@dataclass
class EngineStats:
    calls: int = 0
    items: int = 0
    failures: int = 0
    batch_sizes: dict[int, int] = field(default_factory=dict)

    def record(self, batch: int) -> None:
        self.calls += 1
        self.items += batch
        self.batch_sizes[batch] = self.batch_sizes.get(batch, 0) + 1


class AvatarEngine(Protocol):
    """What the gateway needs from an inference backend."""

    name: str
    spec: AvatarSpec

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def encode_partner(self, faces: Sequence[PartnerFace]) -> np.ndarray:
        """-> (len(faces), D) float32 guest features."""
        ...

    async def step(self, requests: Sequence[StepRequest]) -> list[StepResult]:
        """One batched motion generator -> renderer call; results in request order."""
        ...

    async def health(self) -> EngineHealth: ...


def frames_to_uint8(frames: np.ndarray) -> np.ndarray:
    """(B, K, 3, F, F) float 0..1 -> (B, K, F, F, 3) uint8."""
    out = np.clip(frames, 0.0, 1.0) * 255.0 + 0.5
    return out.astype(np.uint8).transpose(0, 1, 3, 4, 2)


def stack_step_inputs(requests: Sequence[StepRequest]) -> dict[str, np.ndarray]:
    """Batch the requests into the motion generator's named inputs."""
    if not requests:
        raise FatalEngineError("step() needs at least one request")
    return {
        "audio_mel": np.stack([r.audio_mel for r in requests]).astype(np.float32, copy=False),
        "guest_features": np.stack([r.guest_features for r in requests]).astype(np.float32, copy=False),
        "guest_visible": np.stack([r.guest_visible for r in requests]).astype(np.float32, copy=False),
        "motion_history": np.stack([r.motion_history for r in requests]).astype(np.float32, copy=False),
        "noise": np.stack([r.noise for r in requests]).astype(np.float32, copy=False),
        "lambda_video": np.array([[r.lambda_video] for r in requests], dtype=np.float32),
    }


def stack_partner_inputs(faces: Sequence[PartnerFace]) -> dict[str, np.ndarray]:
    if not faces:
        raise FatalEngineError("encode_partner() needs at least one face")
    return {
        "face_crop": np.stack([f.crop for f in faces]).astype(np.float32, copy=False),
        "face_geometry": np.stack([f.geometry for f in faces]).astype(np.float32, copy=False),
    }


def check_inputs(spec: AvatarSpec, network: str, inputs: dict[str, np.ndarray]) -> None:
    """Raise FatalEngineError when a batch does not match the spec (before it reaches a backend)."""
    expected = spec.inputs(network)
    if set(inputs) != set(expected):
        raise FatalEngineError(f"{network}: inputs {sorted(inputs)} != expected {sorted(expected)}")
    for name, shape in expected.items():
        got = inputs[name].shape[1:]
        if tuple(got) != tuple(shape):
            raise FatalEngineError(f"{network}.{name}: shape {tuple(got)} != expected {shape} (after the batch axis)")
        if not np.all(np.isfinite(inputs[name])):
            raise FatalEngineError(f"{network}.{name}: contains NaN or inf")
