"""A fake AvatarEngine for unit tests of one gateway stage (never for integration or e2e tests).

Deterministic and transparent, so a test can check what the gateway fed it:
- `encode_partner`: the guest feature is the crop's mean colour and the geometry, tiled to D;
- `step`: jawOpen of frame n+i follows the loudness of that frame's own mel rows (mean log-mel of
  rows 4*(past+i) .. 4*(past+i)+4 of the window, mapped linearly from silence to 1), everything else
  is neutral; the rendered frame is grey with a white mouth bar as tall as jawOpen, and its top-left
  pixel row encodes λ_video and whether any guest frame was visible.
It records every request, can sleep before answering (`step_delay_s`), and can raise on chosen calls.
"""

from __future__ import annotations

import asyncio
from typing import Sequence

import numpy as np

from engines.contract import (
    EngineHealth,
    FatalEngineError,
    HealthState,
    PartnerFace,
    RetryableEngineError,
    StepRequest,
    StepResult,
)
from f2f.avatar_spec import AvatarSpec
from f2f.features.mel import LOG_MEL_FLOOR
from f2f.motion import FIELD_INDEX, neutral_vector
from f2f.timebase import MEL_FRAMES_PER_VIDEO_FRAME

LOUD_LOG_MEL = 0.0  # mean log-mel treated as jawOpen = 1


def jaw_from_mel(rows: np.ndarray) -> float:
    """Mean log-mel of a frame's 4 rows -> 0 (silence) .. 1 (loud)."""
    return float(np.clip((rows.mean() - LOG_MEL_FLOOR) / (LOUD_LOG_MEL - LOG_MEL_FLOOR), 0.0, 1.0))


class FakeEngine:
    name = "fake"

    def __init__(self, spec: AvatarSpec | None = None, *, step_delay_s: float = 0.0,
                 fail_steps: Sequence[int] = (), fatal_steps: Sequence[int] = ()):
        self.spec = spec or AvatarSpec(crop_size=32, guest_feature_dim=16, frame_size=64)
        self.step_delay_s = step_delay_s
        self.fail_steps = set(fail_steps)
        self.fatal_steps = set(fatal_steps)
        self.started = False
        self.closed = False
        self.step_calls = 0
        self.encode_calls = 0
        self.requests: list[StepRequest] = []
        self.faces: list[PartnerFace] = []

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def health(self) -> EngineHealth:
        return EngineHealth(HealthState.READY if self.started and not self.closed else HealthState.STARTING,
                            backend=self.name)

    async def encode_partner(self, faces: Sequence[PartnerFace]) -> np.ndarray:
        self.encode_calls += 1
        self.faces.extend(faces)
        d = self.spec.guest_feature_dim
        rows = []
        for face in faces:
            base = np.concatenate([face.crop.reshape(3, -1).mean(axis=1), face.geometry]).astype(np.float32)
            rows.append(np.resize(base, d))
        return np.stack(rows)

    async def step(self, requests: Sequence[StepRequest]) -> list[StepResult]:
        call = self.step_calls
        self.step_calls += 1
        if self.step_delay_s:
            await asyncio.sleep(self.step_delay_s)
        if call in self.fatal_steps:
            raise FatalEngineError(f"fake fatal error on step {call}")
        if call in self.fail_steps:
            raise RetryableEngineError(f"fake retryable error on step {call}")
        spec = self.spec
        results = []
        for request in requests:
            self.requests.append(request)
            assert request.audio_mel.shape == (spec.mel_frames, spec.mel_bins), request.audio_mel.shape
            assert request.guest_features.shape == (spec.partners, spec.guest_context_frames, spec.guest_feature_dim)
            assert request.motion_history.shape == (spec.motion_history_frames, spec.motion_dim)
            assert request.noise.shape == (spec.noise_frames, spec.motion_dim)
            motion = np.tile(neutral_vector(), (spec.frames_per_step, 1))
            frames = np.full((spec.frames_per_step, spec.frame_size, spec.frame_size, 3), 96, dtype=np.uint8)
            for i in range(spec.frames_per_step):
                first = (spec.audio_past_frames + i) * MEL_FRAMES_PER_VIDEO_FRAME
                jaw = jaw_from_mel(request.audio_mel[first:first + MEL_FRAMES_PER_VIDEO_FRAME])
                motion[i, FIELD_INDEX["jawOpen"]] = jaw
                bar = int(round(jaw * spec.frame_size / 2))
                frames[i, spec.frame_size // 2:spec.frame_size // 2 + bar, spec.frame_size // 4:3 * spec.frame_size // 4] = 255
                frames[i, 0, :] = (min(255, int(request.lambda_video * 25)),
                                   255 if request.guest_visible.any() else 0, 0)
            results.append(StepResult(motion=motion.astype(np.float32), frames=frames))
        return results
