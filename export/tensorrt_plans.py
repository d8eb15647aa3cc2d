"""ONNX -> TensorRT plan, with an optimisation profile over the batch range (and fp16 on request).

Needs the TensorRT Python package (inside the NGC Triton image, or a machine with TensorRT).
Plans are specific to the GPU and TensorRT version that build them, so production builds them at
container start on the serving GPU (see docker/). Without TensorRT this stops with a clear message.
"""

from __future__ import annotations

import os
from pathlib import Path

from f2f.avatar_spec import AvatarSpec


class TensorRTUnavailable(RuntimeError):
    pass


def tensorrt_missing_reason() -> str | None:
    """None when TensorRT can be imported, else why not (used by tests to skip with a reason)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as error:
        return (f"TensorRT is not installed ({error}); build plans inside the NGC Triton image "
                "(docker/entrypoint.sh runs trtexec there) or install TensorRT with a CUDA GPU")
    return None


def build_plan(onnx_path: Path, plan_path: Path, spec: AvatarSpec, network: str, max_batch: int,
               fp16: bool, opt_batch: int = 8, workspace_bytes: int = 1 << 30) -> Path:
    reason = tensorrt_missing_reason()
    if reason:
        raise TensorRTUnavailable(reason)
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network_def = builder.create_network(0)  # explicit batch is the only mode in TensorRT >= 10
    parser = trt.OnnxParser(network_def, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, shape in spec.inputs(network).items():
        profile.set_shape(name, (1, *shape), (min(opt_batch, max_batch), *shape), (max_batch, *shape))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network_def, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build a plan for {network}")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = plan_path.with_name(plan_path.name + ".partial")
    tmp.write_bytes(bytes(serialized))
    os.replace(tmp, plan_path)
    return plan_path
