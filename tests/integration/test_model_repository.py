"""config.pbtxt is the contract between export and serving: every config's tensors must be the ONNX
model's real inputs/outputs (names, shapes, types), and the ensemble must wire existing models."""

from __future__ import annotations

import onnx
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from engines.repository import model_file, read_config, spec_of
from f2f.avatar_spec import AVATAR_STEP, MOTION_GENERATOR, NETWORKS, SPEC_METADATA_KEY, AvatarSpec

ONNX_TO_TRITON = {onnx.TensorProto.FLOAT: mc.TYPE_FP32, onnx.TensorProto.FLOAT16: mc.TYPE_FP16,
                  onnx.TensorProto.INT64: mc.TYPE_INT64, onnx.TensorProto.INT32: mc.TYPE_INT32,
                  onnx.TensorProto.BOOL: mc.TYPE_BOOL, onnx.TensorProto.UINT8: mc.TYPE_UINT8}


def onnx_signature(model: onnx.ModelProto, tensors) -> dict[str, tuple[int, list]]:
    """name -> (Triton data type, dims as written: ints, or the symbolic name of a dynamic axis)."""
    initializers = {i.name for i in model.graph.initializer}
    out = {}
    for t in tensors:
        if t.name in initializers:
            continue
        tensor_type = t.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim]
        out[t.name] = (ONNX_TO_TRITON.get(tensor_type.elem_type, -tensor_type.elem_type), dims)
    return out


def config_signature(tensors) -> dict[str, tuple[int, list]]:
    return {t.name: (t.data_type, list(t.dims)) for t in tensors}


@pytest.mark.parametrize("network", NETWORKS)
def test_config_matches_the_onnx_model(tiny_model_repository, network):
    config = read_config(tiny_model_repository / network)
    assert config.name == network
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size >= 1
    assert config.HasField("dynamic_batching")
    assert all(1 <= b <= config.max_batch_size for b in config.dynamic_batching.preferred_batch_size)

    model = onnx.load(str(model_file(tiny_model_repository, network)), load_external_data=False)
    for onnx_tensors, config_tensors in ((model.graph.input, config.input), (model.graph.output, config.output)):
        real = onnx_signature(model, onnx_tensors)
        written = config_signature(config_tensors)
        assert list(real) == list(written), f"{network}: ONNX tensors {list(real)} != config.pbtxt {list(written)}"
        for name, (dtype, dims) in real.items():
            written_dtype, written_dims = written[name]
            assert dtype == written_dtype, f"{network}.{name}: ONNX {dtype} != config {written_dtype}"
            # The ONNX batch axis is dynamic; config.pbtxt leaves it out (max_batch_size > 0).
            assert isinstance(dims[0], str), f"{network}.{name}: batch axis is fixed at {dims[0]}"
            assert dims[1:] == written_dims, f"{network}.{name}: ONNX {dims} != config [batch] + {written_dims}"

    # The spec in the config, in the ONNX metadata and the tensor shapes all agree.
    spec = spec_of(config)
    metadata = {p.key: p.value for p in model.metadata_props}
    assert AvatarSpec.from_json(metadata[SPEC_METADATA_KEY]) == spec
    assert {n: tuple(d) for n, (_, d) in config_signature(config.input).items()} == spec.inputs(network)
    assert {n: tuple(d) for n, (_, d) in config_signature(config.output).items()} == spec.outputs(network)


def test_ensemble_wires_generator_into_renderer(tiny_model_repository):
    ensemble = read_config(tiny_model_repository / AVATAR_STEP)
    assert ensemble.platform == "ensemble"
    assert (tiny_model_repository / AVATAR_STEP / "1").is_dir()
    generator = read_config(tiny_model_repository / MOTION_GENERATOR)
    assert config_signature(ensemble.input) == config_signature(generator.input)
    spec = spec_of(ensemble)
    assert {n: tuple(d) for n, (_, d) in config_signature(ensemble.output).items()} == spec.outputs(AVATAR_STEP)
    assert ensemble.max_batch_size <= min(read_config(tiny_model_repository / n).max_batch_size for n in NETWORKS)

    available = set(config_signature(ensemble.input))
    steps = list(ensemble.ensemble_scheduling.step)
    assert [s.model_name for s in steps] == [MOTION_GENERATOR, "renderer"]
    for step in steps:
        member = read_config(tiny_model_repository / step.model_name)
        assert spec_of(member) == spec
        assert set(step.input_map) == set(config_signature(member.input)), step.model_name
        assert set(step.input_map.values()) <= available, f"{step.model_name} reads a tensor nothing produced"
        assert set(step.output_map) <= set(config_signature(member.output)), step.model_name
        available |= set(step.output_map.values())
    assert set(config_signature(ensemble.output)) <= available
