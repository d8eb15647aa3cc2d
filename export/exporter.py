"""`f2f export CHECKPOINT --out MODEL_REPO`: every network to ONNX, parity-checked, optionally to
TensorRT, and the Triton configs; `OUT/export_report.json` records each step's figures.

The report is written even when a check fails (then the command exits non-zero), so a failed
export says exactly which network and batch size disagreed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from engines.repository import MODEL_FILES, ONNX_PLATFORM, TENSORRT_PLATFORM
from export.model_repository import BatchingConfig, network_config, version_dir, write_config, write_ensemble
from export.onnx_export import PARITY_TOLERANCE, ExportError, check_parity, export_onnx
from export.tensorrt_plans import build_plan
from export.int8_renderer import Int8RendererError, quantize_renderer
from f2f.avatar_spec import NETWORKS, RENDERER
from models.avatar import Avatar, load_avatar

REPORT_FILE = "export_report.json"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportOptions:
    tensorrt: bool = False
    fp16: bool = False
    version: int = 1
    batching: BatchingConfig = BatchingConfig()
    quiet: bool = False
    # CPU serving: the renderer's convolutions in int8 (export/int8_renderer.py), kept only if its frames
    # match the float renderer's. Not with TensorRT: GPU plans are built from the float graph.
    int8_renderer: bool = False


def export_avatar(avatar: Avatar, out: Path, options: ExportOptions = ExportOptions(), source: str = "") -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = avatar.spec
    platform = TENSORRT_PLATFORM if options.tensorrt else ONNX_PLATFORM
    if options.int8_renderer and options.tensorrt:
        raise ValueError("the int8 renderer is for onnxruntime on CPU; TensorRT plans are built from the float graph")
    report: dict = {
        "avatar": avatar.config.name, "source": source, "spec": json.loads(spec.to_json()),
        "platform": platform, "fp16": options.fp16, "int8_renderer": options.int8_renderer, "version": options.version,
        "tolerance": PARITY_TOLERANCE, "parity": [], "networks": {}, "passed": False,
    }
    started = time.perf_counter()
    try:
        for network in tqdm(NETWORKS, desc="export", unit="net", disable=options.quiet):
            module = avatar.network(network)
            onnx_dir = version_dir(out, network, options.version)
            onnx_path = export_onnx(module, spec, network, onnx_dir / MODEL_FILES[ONNX_PLATFORM])
            parity = check_parity(module, spec, network, onnx_path)
            report["parity"] += [{"network": p.network, "batch": p.batch, "max_abs_diff": p.max_abs_diff} for p in parity]
            entry = {"onnx": str(onnx_path.relative_to(out)), "onnx_bytes": onnx_path.stat().st_size,
                     "parameters": sum(p.numel() for p in module.parameters())}
            report["networks"][network] = entry
            failed = [p for p in parity if not p.passed]
            if failed:
                worst = max(failed, key=lambda p: p.max_abs_diff)
                raise ExportError(f"{network}: ONNX differs from torch by {worst.max_abs_diff:.3g} at batch "
                                  f"{worst.batch} (tolerance {PARITY_TOLERANCE:g})")
            if options.int8_renderer and network == RENDERER:
                entry["int8"] = _int8_renderer(avatar, onnx_path)
                entry["onnx_bytes"] = onnx_path.stat().st_size
            if options.tensorrt:
                plan = build_plan(onnx_path, onnx_dir / MODEL_FILES[TENSORRT_PLATFORM], spec, network,
                                  options.batching.max_batch_size, options.fp16)
                entry["plan"] = str(plan.relative_to(out))
            write_config(out / network, network_config(spec, network, platform, options.batching, options.version))
        write_ensemble(out, spec, options.batching, options.version)
        report["passed"] = True
    finally:
        report["seconds"] = round(time.perf_counter() - started, 2)
        path = out / REPORT_FILE
        tmp = path.with_name(REPORT_FILE + ".partial")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, path)
    return report


def _int8_renderer(avatar: Avatar, onnx_path: Path) -> dict:
    """The renderer's graph replaced by its int8 version where that passes its checks; else it stays
    float (a serving export must not fail because one avatar quantizes badly) and the report says why."""
    stats = avatar.renderer.motion_mean.numpy(), avatar.renderer.motion_std.numpy()
    try:
        return {"kept": True, **quantize_renderer(onnx_path, onnx_path, *stats)}
    except Int8RendererError as error:
        log.warning("the renderer stays float: %s", error)
        return {"kept": False, "reason": str(error), **error.figures}


def export_checkpoint(checkpoint: Path, out: Path, options: ExportOptions = ExportOptions()) -> dict:
    return export_avatar(load_avatar(checkpoint), out, options, source=str(checkpoint))
