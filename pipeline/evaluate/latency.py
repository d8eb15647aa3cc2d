"""Per-frame compute of an avatar's exported networks: onnxruntime on this CPU, batch 1."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np


def measure_latency(checkpoint: Path, calls: int = 200, threads: int = 1, repository: Path | None = None) -> dict:
    """Export `checkpoint` (ONNX, parity-checked) and time each network at batch 1 with the session
    options of engines.embedded (intra-op `threads`, the gateway uses 1; inter-op 1).
    Median and p90 milliseconds of `calls` calls after 20 warm-up calls; the motion generator runs
    with lambda_video = 1 (guidance costs the same at any lambda: both branches always run)."""
    import onnxruntime as ort

    from engines.repository import model_file
    from export.exporter import ExportOptions, export_checkpoint
    from export.onnx_export import example_inputs
    from f2f.avatar_spec import NETWORKS
    from models.avatar import load_config

    with tempfile.TemporaryDirectory(prefix="f2f-latency-") as tmp:
        repo = Path(repository or tmp)
        report = export_checkpoint(checkpoint, repo, ExportOptions(quiet=True))
        if not report["passed"]:
            raise RuntimeError(f"export failed: {report}")
        spec = load_config(checkpoint).spec
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        out: dict = {"calls": calls, "intra_op_threads": threads, "onnxruntime": ort.__version__,
                     "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                     "frame_size": spec.frame_size, "frames_per_step": spec.frames_per_step,
                     "median_ms": {}, "p90_ms": {}}
        for network in NETWORKS:
            session = ort.InferenceSession(str(model_file(repo, network)), options, providers=["CPUExecutionProvider"])
            feed = {k: v.numpy() for k, v in example_inputs(spec, network, batch=1).items()}
            if "lambda_video" in feed:
                feed["lambda_video"][:] = 1.0
            for _ in range(20):
                session.run(None, feed)
            times = []
            for _ in range(calls):
                started = time.perf_counter()
                session.run(None, feed)
                times.append(time.perf_counter() - started)
            # Per frame: a step makes K frames; the guest encoder runs once per partner frame.
            per = 1 if network == "guest_encoder" else spec.frames_per_step
            out["median_ms"][network] = round(float(np.median(times)) * 1e3 / per, 3)
            out["p90_ms"][network] = round(float(np.percentile(times, 90)) * 1e3 / per, 3)
        out["median_ms"]["sum"] = round(sum(out["median_ms"][n] for n in NETWORKS), 3)
        out["parity_max_abs_diff"] = max(row["max_abs_diff"] for row in report["parity"])
    return out
