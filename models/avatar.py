"""An avatar = the three networks + one AvatarSpec, saved as config.json + model.safetensors.

A checkpoint directory:
  config.json        {"format": 1, "name", "spec": AvatarSpec, "guest_encoder": {...},
                      "motion_generator": {...}, "renderer": {...}, "notes"}
  model.safetensors  every parameter and buffer, keys prefixed by the network's name
Both are written atomically (temporary file + rename), so an interrupted save leaves the old one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from f2f.avatar_spec import GUEST_ENCODER, MOTION_GENERATOR, RENDERER, AvatarSpec
from models.guest_encoder import GuestEncoder, GuestEncoderConfig
from models.motion_generator import MotionGenerator, MotionGeneratorConfig
from models.renderer import Renderer, RendererConfig

CHECKPOINT_FORMAT = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class AvatarConfig:
    name: str = "avatar"
    spec: AvatarSpec = AvatarSpec()
    guest_encoder: GuestEncoderConfig = GuestEncoderConfig()
    motion_generator: MotionGeneratorConfig = MotionGeneratorConfig()
    renderer: RendererConfig = RendererConfig()
    notes: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "AvatarConfig":
        if data.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"unsupported checkpoint format {data.get('format')!r} (expected {CHECKPOINT_FORMAT})")

        def build(kind, values):
            # JSON turns tuples into lists; the configs are frozen dataclasses of tuples.
            return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

        return cls(
            name=data["name"],
            spec=build(AvatarSpec, data["spec"]),
            guest_encoder=build(GuestEncoderConfig, data["guest_encoder"]),
            motion_generator=build(MotionGeneratorConfig, data["motion_generator"]),
            renderer=build(RendererConfig, data["renderer"]),
            notes=data.get("notes", {}),
        )


def tiny_config(name: str = "tiny", **spec_overrides) -> AvatarConfig:
    """Small instances of the real architectures, for fast tests and for export/serving until a
    trained avatar exists (diffusers' get_dummy_components idea)."""
    spec = AvatarSpec(crop_size=48, guest_feature_dim=16, frame_size=64, **spec_overrides)
    return AvatarConfig(
        name=name,
        spec=spec,
        guest_encoder=GuestEncoderConfig(channels=(8, 8, 16), hidden=16),
        motion_generator=MotionGeneratorConfig(width=32, layers=2, heads=2, guest_kernels=8, sampling_steps=2,
                                               guest_activity_frames=4, history_increments=True, guest_roll_head=True,
                                               guest_nod_look_head=True),
        renderer=RendererConfig(hidden=32, channels=(16, 8, 8, 4), subpixel_output=True),
        notes={"trained": False, "purpose": "tiny random-initialised networks for tests"},
    )


class Avatar(nn.Module):
    def __init__(self, config: AvatarConfig):
        super().__init__()
        self.config = config
        self.guest_encoder = GuestEncoder(config.spec, config.guest_encoder)
        self.motion_generator = MotionGenerator(config.spec, config.motion_generator)
        self.renderer = Renderer(config.spec, config.renderer)

    @property
    def spec(self) -> AvatarSpec:
        return self.config.spec

    def network(self, name: str) -> nn.Module:
        if name not in (GUEST_ENCODER, MOTION_GENERATOR, RENDERER):
            raise KeyError(f"unknown network {name!r}")
        return getattr(self, name)


def random_avatar(config: AvatarConfig, seed: int = 0, video_branch: bool = True) -> Avatar:
    """A randomly initialised avatar, deterministic in `seed`.

    The guest projector is zero-initialised (training's stage 2 starts from the audio-only model);
    with `video_branch` it is randomised too, so an untrained export exercises the video path and
    lambda_video changes its output (export parity and backend tests need that)."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        avatar = Avatar(config)
        if video_branch:
            nn.init.normal_(avatar.motion_generator.guest_projector.to_modulation.weight, std=0.05)
            nn.init.normal_(avatar.motion_generator.guest_projector.to_modulation.bias, std=0.05)
            for head in avatar.motion_generator.guest_projector.heads:
                nn.init.normal_(head.net[-1].weight, std=0.05)
        return avatar.eval()
    finally:
        torch.random.set_rng_state(generator_state)


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".partial")
    write(tmp)
    os.replace(tmp, path)


def save_avatar(avatar: Avatar, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in avatar.state_dict().items()}
    _atomic_write(directory / WEIGHTS_FILE, lambda p: save_file(tensors, str(p)))
    text = json.dumps(avatar.config.to_dict(), indent=2, sort_keys=True) + "\n"
    _atomic_write(directory / CONFIG_FILE, lambda p: p.write_text(text))
    return directory


def load_config(directory: str | Path) -> AvatarConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no avatar checkpoint at {directory}: {CONFIG_FILE} is missing")
    return AvatarConfig.from_dict(json.loads(path.read_text()))


def load_avatar(directory: str | Path) -> Avatar:
    directory = Path(directory)
    avatar = Avatar(load_config(directory))
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"no avatar weights at {weights}")
    avatar.load_state_dict(load_file(str(weights)), strict=True)
    return avatar.eval()
