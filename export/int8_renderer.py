"""An 8-bit renderer for CPU serving: onnxruntime static quantization, checked against the float one.

On this project's CPU path the renderer is most of a frame's compute (f2f bench engines). Its
convolutions run on onnxruntime's int8 kernels (VNNI where the CPU has it) with weights quantized per
output channel and activations per tensor, ranges calibrated on motions drawn around the avatar's own
motion statistics (the renderer's `motion_mean` / `motion_std`, clipped to the fields' ranges).

The float export stays the reference: a second draw of motions is rendered by both, and the int8 graph
is kept only if its frames are close (PSNR against the float frames) and the face mesh finds and
measures the same face in them (detection rate, jawOpen: what lip-sync is judged by); otherwise the
export keeps the float graph and says why. The figures go to the export report. GPU serving
(TensorRT, Triton on GPU) keeps the float graph.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from f2f.motion import FIELD_INDEX, clip_expressions


@dataclass(frozen=True)
class Int8RendererOptions:
    calibration_motions: int = 128
    calibration_spread: float = 1.5  # calibration motions: mean + spread * std * N(0, 1), wider than the check
    check_motions: int = 48
    check_spread: float = 1.0
    seed: int = 0
    min_psnr_db: float = 35.0  # median PSNR of int8 frames against the float frames
    max_jaw_difference: float = 0.05  # mean |jawOpen| the face mesh measures, int8 vs float frames
    max_face_found_drop: float = 0.021  # the face mesh may miss one check frame more in int8 (1 of 48)


class Int8RendererError(ValueError):
    """The int8 graph failed a check (its figures attached); the float graph is left as it was."""

    def __init__(self, message: str, figures: dict):
        super().__init__(message)
        self.figures = figures


def draw_motions(mean: np.ndarray, std: np.ndarray, count: int, spread: float, seed: int) -> np.ndarray:
    """(count, 1, 15) float32 motions around the avatar's statistics, expressions in their ranges."""
    rng = np.random.default_rng(seed)
    motion = mean + spread * std * rng.standard_normal((count, mean.shape[0]))
    return clip_expressions(motion.astype(np.float32))[:, None, :]


def quantize_renderer(float_path: Path, out_path: Path, motion_mean: np.ndarray, motion_std: np.ndarray,
                      options: Int8RendererOptions = Int8RendererOptions()) -> dict:
    """Writes the int8 renderer to `out_path` (atomically) if it passes the checks; returns the figures."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static

    calibration = draw_motions(motion_mean, motion_std, options.calibration_motions, options.calibration_spread,
                               options.seed)

    class Motions(CalibrationDataReader):
        def __init__(self):
            self._items = iter([{"motion": m[None]} for m in calibration])  # (1, 1, 15) each

        def get_next(self):
            return next(self._items, None)

    with tempfile.TemporaryDirectory(prefix="f2f-int8-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        candidate = Path(scratch) / "int8.onnx"
        # Shape inference by onnx only: the symbolic pass cannot follow the dynamic batch through Resize.
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(candidate), Motions(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        check = draw_motions(motion_mean, motion_std, options.check_motions, options.check_spread, options.seed + 1)
        figures = compare_renderers(float_path, candidate, check)
        if figures["psnr_db_median"] < options.min_psnr_db:
            raise Int8RendererError(f"int8 renderer frames are too far from the float ones: median PSNR "
                                    f"{figures['psnr_db_median']:.1f} dB < {options.min_psnr_db} dB", figures)
        if figures["face_found_int8"] < figures["face_found_float"] - options.max_face_found_drop or \
                figures["jaw_open_abs_difference"] > options.max_jaw_difference:
            raise Int8RendererError(f"the face mesh reads int8 frames differently: found {figures['face_found_int8']} "
                                    f"vs {figures['face_found_float']}, jawOpen differs by "
                                    f"{figures['jaw_open_abs_difference']:.3f} (limit {options.max_jaw_difference})", figures)
        partial = out_path.with_name(out_path.name + ".partial")
        partial.write_bytes(candidate.read_bytes())
        os.replace(partial, out_path)
    figures["onnx_bytes"] = out_path.stat().st_size
    return figures


def compare_renderers(float_path: Path, int8_path: Path, motions: np.ndarray) -> dict:
    """Both renderers on the same motions (N, 1, 15): PSNR, face-mesh detection and jawOpen, time per frame."""
    import time

    import onnxruntime as ort

    from f2f.features.face_geometry import FaceGeometryFeaturizer

    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = 1
    sessions = {name: ort.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"])
                for name, path in (("float", float_path), ("int8", int8_path))}
    psnr, jaw_difference, found = [], [], {"float": 0, "int8": 0}
    seconds: dict[str, list[float]] = {"float": [], "int8": []}
    jaw = FIELD_INDEX["jawOpen"]
    with FaceGeometryFeaturizer(max_faces=1, static_images=True) as mesh:
        for motion in motions:
            frames, measured = {}, {}
            for name, session in sessions.items():
                started = time.perf_counter()
                (frame,) = session.run(None, {"motion": motion[None]})  # (1, 1, 3, F, F) in 0..1
                seconds[name].append(time.perf_counter() - started)
                frames[name] = frame[0, 0]
                rgb = np.ascontiguousarray((np.clip(frame[0, 0], 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0))
                faces = mesh.measure_rgb(rgb)
                found[name] += bool(faces)
                measured[name] = faces[0].motion[jaw] if faces else None
            error = float(np.mean((frames["float"] - frames["int8"]) ** 2))
            psnr.append(10.0 * np.log10(1.0 / max(error, 1e-12)))
            if measured["float"] is not None and measured["int8"] is not None:
                jaw_difference.append(abs(measured["float"] - measured["int8"]))
    count = len(motions)
    return {
        "check_motions": count,
        "psnr_db_median": round(float(np.median(psnr)), 2),
        "psnr_db_p5": round(float(np.percentile(psnr, 5)), 2),
        "face_found_float": round(found["float"] / count, 4),
        "face_found_int8": round(found["int8"] / count, 4),
        "jaw_open_abs_difference": round(float(np.mean(jaw_difference)), 4) if jaw_difference else 0.0,
        "ms_per_frame_float": round(1000.0 * float(np.median(seconds["float"][2:])), 3),
        "ms_per_frame_int8": round(1000.0 * float(np.median(seconds["int8"][2:])), 3),
    }
