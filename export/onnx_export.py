"""torch network -> ONNX with a dynamic batch axis, then a parity check against torch.

torch.export-based exporter (`dynamo=True`, needs onnxscript) with a symbolic batch dimension. The
networks avoid batch-size arithmetic torch.export cannot keep symbolic (e.g. `chunk` over a
doubled batch). The weights are small, so each file is self-contained (no .onnx.data).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from f2f.avatar_spec import SPEC_METADATA_KEY, AvatarSpec

OPSET = 18
MAX_BATCH_DIM = 4096  # the symbolic batch's upper bound; Triton's max_batch_size is far below
PARITY_BATCHES = (1, 4, 16)
PARITY_TOLERANCE = 1e-4  # max abs difference, fp32


class ExportError(RuntimeError):
    pass


@dataclass(frozen=True)
class ParityResult:
    network: str
    batch: int
    max_abs_diff: float

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= PARITY_TOLERANCE


def example_inputs(spec: AvatarSpec, network: str, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Plausible inputs of one network: crops in 0..1, a visibility mask of 0/1, lambda in 0..3."""
    generator = torch.Generator().manual_seed(seed * 1000 + batch)
    inputs = {}
    for name, shape in spec.inputs(network).items():
        full = (batch, *shape)
        if name == "face_crop":
            value = torch.rand(full, generator=generator)
        elif name == "guest_visible":
            value = (torch.rand(full, generator=generator) > 0.2).float()
        elif name == "lambda_video":
            value = 3.0 * torch.rand(full, generator=generator)
        else:
            value = torch.randn(full, generator=generator)
        inputs[name] = value
    return inputs


def export_onnx(module: nn.Module, spec: AvatarSpec, network: str, path: Path) -> Path:
    """Write `network` to `path` (atomically) with every input and output batch-dynamic."""
    inputs = example_inputs(spec, network, batch=3)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH_DIM)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with torch.no_grad():
        torch.onnx.export(
            module.eval(), (), str(tmp), kwargs=inputs, input_names=list(inputs),
            output_names=list(spec.outputs(network)), dynamic_shapes={name: {0: batch} for name in inputs},
            opset_version=OPSET, dynamo=True, external_data=False, verbose=False,
        )
    _stamp_metadata(tmp, spec, network)
    os.replace(tmp, path)
    return path


def _stamp_metadata(path: Path, spec: AvatarSpec, network: str) -> None:
    import onnx

    model = onnx.load(str(path))
    for key, value in ((SPEC_METADATA_KEY, spec.to_json()), ("f2f_network", network)):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def check_parity(module: nn.Module, spec: AvatarSpec, network: str, path: Path,
                 batches: tuple[int, ...] = PARITY_BATCHES) -> list[ParityResult]:
    """Run torch and onnxruntime (CPU) on the same inputs; the largest abs difference per batch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    results = []
    for batch in batches:
        inputs = example_inputs(spec, network, batch, seed=1)
        with torch.no_grad():
            expected = module.eval()(**inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = session.run(None, {k: v.numpy() for k, v in inputs.items()})
        diff = max(float(np.max(np.abs(e.numpy() - g))) for e, g in zip(expected, got))
        results.append(ParityResult(network, batch, diff))
    return results
