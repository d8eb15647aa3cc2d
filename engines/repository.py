"""Conventions of the Triton model repository that export writes and both backends read.

    MODEL_REPO/<network>/config.pbtxt and MODEL_REPO/<network>/<version>/model.onnx (or model.plan)
    MODEL_REPO/avatar_step/config.pbtxt   the ensemble motion_generator -> renderer

Every config carries the AvatarSpec JSON as the parameter `f2f_avatar_spec`.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from f2f.avatar_spec import SPEC_METADATA_KEY, AvatarSpec

ONNX_PLATFORM = "onnxruntime_onnx"
TENSORRT_PLATFORM = "tensorrt_plan"
MODEL_FILES = {ONNX_PLATFORM: "model.onnx", TENSORRT_PLATFORM: "model.plan"}
CONFIG_FILE = "config.pbtxt"


def read_config(model_dir: Path) -> mc.ModelConfig:
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {model_dir}: is this a model repository written by `f2f export`?")
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def spec_of(config: mc.ModelConfig) -> AvatarSpec:
    if SPEC_METADATA_KEY not in config.parameters:
        raise ValueError(f"model {config.name!r} has no {SPEC_METADATA_KEY} parameter")
    return AvatarSpec.from_json(config.parameters[SPEC_METADATA_KEY].string_value)


def latest_version(model_dir: Path) -> int:
    versions = sorted(int(p.name) for p in Path(model_dir).iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        raise FileNotFoundError(f"no numbered version directory in {model_dir}")
    return versions[-1]


def model_file(repository: Path, network: str, version: int | None = None) -> Path:
    """The servable file of `network` (latest version unless given), whatever its platform."""
    model_dir = Path(repository) / network
    config = read_config(model_dir)
    version = latest_version(model_dir) if version is None else version
    name = config.default_model_filename or MODEL_FILES.get(config.platform, "model.onnx")
    path = model_dir / str(version) / name
    if not path.is_file():
        raise FileNotFoundError(f"{network}: {path} is missing")
    return path
