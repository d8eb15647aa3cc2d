"""The Triton model repository: one model per network, plus the `avatar_step` ensemble.

    MODEL_REPO/
      guest_encoder/config.pbtxt      1/model.onnx  (or model.plan with TensorRT)
      motion_generator/config.pbtxt   1/model.onnx
      renderer/config.pbtxt           1/model.onnx
      avatar_step/config.pbtxt        1/            ensemble motion_generator -> renderer

`config.pbtxt` is the contract between export and serving: it is built as a
`model_config_pb2.ModelConfig` message and printed with protobuf's text format, so whatever Triton
(or a test) parses is exactly what was built. Each carries the AvatarSpec as a parameter.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from engines.repository import CONFIG_FILE, MODEL_FILES
from f2f.avatar_spec import AVATAR_STEP, GUEST_ENCODER, MOTION_GENERATOR, RENDERER, SPEC_METADATA_KEY, AvatarSpec


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 64
    # Per network: how long Triton may hold a request to form a bigger batch. The guest encoder
    # runs on every partner frame and tolerates more; the per-tick step must stay snappy.
    max_queue_delay_us: dict[str, int] = field(default_factory=lambda: {
        GUEST_ENCODER: 2000, MOTION_GENERATOR: 1000, RENDERER: 1000})
    instance_count: int = 1
    instance_kind: str = "KIND_GPU"  # KIND_GPU in production, KIND_CPU for a CPU-only Triton

    def preferred_sizes(self) -> list[int]:
        sizes = [s for s in (4, 8, 16, 32, 64) if s <= self.max_batch_size]
        return sizes or [self.max_batch_size]


def _tensors(kind, shapes: dict[str, tuple[int, ...]]) -> list:
    return [kind(name=name, data_type=mc.TYPE_FP32, dims=list(shape)) for name, shape in shapes.items()]


def network_config(spec: AvatarSpec, network: str, platform: str, batching: BatchingConfig, version: int) -> mc.ModelConfig:
    config = mc.ModelConfig(
        name=network,
        platform=platform,
        max_batch_size=batching.max_batch_size,
        input=_tensors(mc.ModelInput, spec.inputs(network)),
        output=_tensors(mc.ModelOutput, spec.outputs(network)),
        dynamic_batching=mc.ModelDynamicBatching(
            preferred_batch_size=batching.preferred_sizes(),
            max_queue_delay_microseconds=batching.max_queue_delay_us[network],
        ),
        instance_group=[mc.ModelInstanceGroup(
            count=batching.instance_count, kind=mc.ModelInstanceGroup.Kind.Value(batching.instance_kind))],
        version_policy=mc.ModelVersionPolicy(specific=mc.ModelVersionPolicy.Specific(versions=[version])),
        default_model_filename=MODEL_FILES[platform],
    )
    config.parameters[SPEC_METADATA_KEY].string_value = spec.to_json()
    return config


def ensemble_config(spec: AvatarSpec, batching: BatchingConfig, version: int) -> mc.ModelConfig:
    """One request per tick: motion_generator's inputs -> motion and the rendered frames."""
    generate = mc.ModelEnsembling.Step(model_name=MOTION_GENERATOR, model_version=version)
    for name in spec.inputs(MOTION_GENERATOR):
        generate.input_map[name] = name
    generate.output_map["motion"] = "motion"
    render = mc.ModelEnsembling.Step(model_name=RENDERER, model_version=version)
    render.input_map["motion"] = "motion"
    render.output_map["frames"] = "frames"
    config = mc.ModelConfig(
        name=AVATAR_STEP,
        platform="ensemble",
        max_batch_size=batching.max_batch_size,
        input=_tensors(mc.ModelInput, spec.inputs(AVATAR_STEP)),
        output=_tensors(mc.ModelOutput, spec.outputs(AVATAR_STEP)),
        ensemble_scheduling=mc.ModelEnsembling(step=[generate, render]),
    )
    config.parameters[SPEC_METADATA_KEY].string_value = spec.to_json()
    return config


def version_dir(repository: Path, network: str, version: int) -> Path:
    return Path(repository) / network / str(version)


def write_config(model_dir: Path, config: mc.ModelConfig) -> Path:
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / CONFIG_FILE
    tmp = path.with_name(CONFIG_FILE + ".partial")
    tmp.write_text(text_format.MessageToString(config))
    os.replace(tmp, path)
    return path


def write_ensemble(repository: Path, spec: AvatarSpec, batching: BatchingConfig, version: int) -> Path:
    model_dir = Path(repository) / AVATAR_STEP
    (model_dir / str(version)).mkdir(parents=True, exist_ok=True)  # Triton wants the version dir
    return write_config(model_dir, ensemble_config(spec, batching, version))

