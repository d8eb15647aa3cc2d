"""The tensor contract of the three avatar networks: names, shapes, dtypes. No torch.

One `AvatarSpec` fixes every dimension except the batch. The torch networks (`models/`) are built
from it, export writes it into each ONNX file's metadata and each `config.pbtxt` as parameters, and
the engines and the gateway read it back from there, so training, export and serving agree by
construction.

Networks and their tensors (B = batch of sessions, the only dynamic axis):
  guest_encoder     face_crop      (B, 3, S, S)   float32  RGB in 0..1, S = crop_size
                    face_geometry  (B, 15)        float32  the partner's motion parameters
                 -> guest_feature  (B, D)         float32  D = guest_feature_dim
  motion_generator  audio_mel      (B, M, 80)     float32  log-mel, M = 4 * audio_frames
                    guest_features (B, P, G, D)   float32  last G = 64 guest features of P partners
                    guest_visible  (B, P, G)      float32  1 where a face was seen, else 0
                    motion_history (B, H, 15)     float32  the last H = 6 host motion frames
                    noise          (B, K+Q, 15)   float32  standard normal, the sampler's start (K
                                                           frames made, Q = plan_frames sampled with them)
                    lambda_video   (B, 1)         float32  video guidance scale (0 = audio only)
                 -> motion         (B, K, 15)     float32  the next K host motion frames
  renderer          motion         (B, K, 15)     float32
                 -> frames         (B, K, 3, F, F) float32 RGB in 0..1, F = frame_size
  avatar_step       (Triton ensemble motion_generator -> renderer): the generator's inputs
                 -> motion, frames

The audio window of a step that makes frames n .. n+K-1 covers video frames
[n - audio_past_frames, n + K - 1 + lookahead_frames]: the mel frames 4*(n - past) ..
4*(n + K + lookahead) - 1.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from f2f.motion import MOTION_DIM
from f2f.timebase import (
    GUEST_CONTEXT_FRAMES,
    HOST_MOTION_HISTORY_FRAMES,
    MAX_AUDIO_LOOKAHEAD_FRAMES,
    MEL_BINS,
    MEL_FRAMES_PER_VIDEO_FRAME,
)

GUEST_ENCODER = "guest_encoder"
MOTION_GENERATOR = "motion_generator"
RENDERER = "renderer"
AVATAR_STEP = "avatar_step"  # the ensemble: one request per tick returns motion and frames
NETWORKS: tuple[str, ...] = (GUEST_ENCODER, MOTION_GENERATOR, RENDERER)

SPEC_METADATA_KEY = "f2f_avatar_spec"  # ONNX metadata_props / config.pbtxt parameter key


@dataclass(frozen=True)
class AvatarSpec:
    crop_size: int = 112  # partner face crop, pixels (square)
    guest_feature_dim: int = 128
    partners: int = 1  # P: guest axis through one shared encoder and a sum
    guest_context_frames: int = GUEST_CONTEXT_FRAMES
    motion_history_frames: int = HOST_MOTION_HISTORY_FRAMES
    audio_past_frames: int = 8  # video frames of audio before the first generated frame
    lookahead_frames: int = MAX_AUDIO_LOOKAHEAD_FRAMES
    frames_per_step: int = 1  # K
    # Q: frames after the K that each step samples jointly with them and then drops (a plan, redrawn
    # every step). A reaction starting 0.2 s from now and none at all differ by a whole nod over the
    # K + Q frames, by a sliver in the next frame alone. They see the step's audio window only.
    plan_frames: int = 0
    frame_size: int = 256  # rendered host frame, pixels (square)
    motion_dim: int = MOTION_DIM
    mel_bins: int = MEL_BINS

    def __post_init__(self) -> None:
        if not 0 <= self.lookahead_frames <= MAX_AUDIO_LOOKAHEAD_FRAMES:
            raise ValueError(f"lookahead_frames must be 0..{MAX_AUDIO_LOOKAHEAD_FRAMES}, got {self.lookahead_frames}")
        for name in ("crop_size", "guest_feature_dim", "partners", "guest_context_frames",
                     "motion_history_frames", "frames_per_step", "frame_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.audio_past_frames < 0:
            raise ValueError(f"audio_past_frames must be >= 0, got {self.audio_past_frames}")
        if self.plan_frames < 0:
            raise ValueError(f"plan_frames must be >= 0, got {self.plan_frames}")

    @property
    def noise_frames(self) -> int:
        """Frames one step samples: the K it makes and the Q of its plan."""
        return self.frames_per_step + self.plan_frames

    @property
    def audio_frames(self) -> int:
        """Video frames of audio one step sees: past + the K generated + look-ahead."""
        return self.audio_past_frames + self.frames_per_step + self.lookahead_frames

    @property
    def mel_frames(self) -> int:
        return MEL_FRAMES_PER_VIDEO_FRAME * self.audio_frames

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "AvatarSpec":
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown avatar spec fields: {sorted(unknown)}")
        return cls(**data)

    # Per-network tensor signatures: name -> shape without the batch axis. All float32.
    def inputs(self, network: str) -> dict[str, tuple[int, ...]]:
        if network == GUEST_ENCODER:
            return {"face_crop": (3, self.crop_size, self.crop_size), "face_geometry": (self.motion_dim,)}
        if network in (MOTION_GENERATOR, AVATAR_STEP):
            return {
                "audio_mel": (self.mel_frames, self.mel_bins),
                "guest_features": (self.partners, self.guest_context_frames, self.guest_feature_dim),
                "guest_visible": (self.partners, self.guest_context_frames),
                "motion_history": (self.motion_history_frames, self.motion_dim),
                "noise": (self.noise_frames, self.motion_dim),
                "lambda_video": (1,),
            }
        if network == RENDERER:
            return {"motion": (self.frames_per_step, self.motion_dim)}
        raise KeyError(network)

    def outputs(self, network: str) -> dict[str, tuple[int, ...]]:
        frames = (self.frames_per_step, 3, self.frame_size, self.frame_size)
        if network == GUEST_ENCODER:
            return {"guest_feature": (self.guest_feature_dim,)}
        if network == MOTION_GENERATOR:
            return {"motion": (self.frames_per_step, self.motion_dim)}
        if network == RENDERER:
            return {"frames": frames}
        if network == AVATAR_STEP:
            return {"motion": (self.frames_per_step, self.motion_dim), "frames": frames}
        raise KeyError(network)
