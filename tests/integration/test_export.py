"""`f2f export`: ONNX parity report, repository layout, loud failures, TensorRT skip reason."""

from __future__ import annotations

import json

import pytest
import torch

from engines.repository import latest_version, model_file, read_config, spec_of
from export.exporter import REPORT_FILE, ExportOptions, export_avatar
from export.onnx_export import PARITY_BATCHES, PARITY_TOLERANCE, ExportError
from export.tensorrt_plans import tensorrt_missing_reason
from f2f.avatar_spec import AVATAR_STEP, NETWORKS
from f2f.cli import main
from models.avatar import random_avatar, save_avatar, tiny_config


def test_parity_report_passes_for_every_network_and_batch(tiny_model_repository, report):
    data = json.loads((tiny_model_repository / REPORT_FILE).read_text())
    assert data["passed"] is True
    rows = {(r["network"], r["batch"]): r["max_abs_diff"] for r in data["parity"]}
    assert set(rows) == {(n, b) for n in NETWORKS for b in PARITY_BATCHES}
    assert all(0.0 <= d <= PARITY_TOLERANCE for d in rows.values()), rows
    for network in NETWORKS:
        worst = max(rows[(network, b)] for b in PARITY_BATCHES)
        report(f"export parity {network}: max_abs_diff {worst:.2e} over batches {PARITY_BATCHES}")


def test_repository_layout(tiny_model_repository):
    for network in NETWORKS:
        assert model_file(tiny_model_repository, network).name == "model.onnx"
    ensemble = read_config(tiny_model_repository / AVATAR_STEP)
    assert ensemble.platform == "ensemble"
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["motion_generator", "renderer"]
    assert latest_version(tiny_model_repository / AVATAR_STEP) == 1
    assert spec_of(ensemble) == tiny_config().spec


def test_a_parity_mismatch_fails_loudly_and_says_where(tmp_path, monkeypatch):
    avatar = random_avatar(tiny_config(), seed=0)
    import export.exporter as exporter

    real_check = exporter.check_parity

    def perturbed(module, spec, network, path, *args, **kwargs):
        if network == "renderer":  # the ONNX file was written; now the torch side drifts
            with torch.no_grad():
                module.to_rgb.bias += 0.5
        return real_check(module, spec, network, path, *args, **kwargs)

    monkeypatch.setattr(exporter, "check_parity", perturbed)
    with pytest.raises(ExportError, match="renderer: ONNX differs from torch"):
        export_avatar(avatar, tmp_path, ExportOptions(quiet=True))
    data = json.loads((tmp_path / REPORT_FILE).read_text())
    assert data["passed"] is False
    assert max(r["max_abs_diff"] for r in data["parity"] if r["network"] == "renderer") > PARITY_TOLERANCE


def test_cli_export_and_errors(tmp_path, capsys):
    save_avatar(random_avatar(tiny_config(), seed=2), tmp_path / "ckpt")
    assert main(["export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "repo"), "--quiet",
                 "--instance-kind", "cpu", "--max-batch", "16"]) == 0
    out = capsys.readouterr().out
    assert "motion_generator batch 16" in out
    config = read_config(tmp_path / "repo" / "renderer")
    assert config.max_batch_size == 16 and list(config.dynamic_batching.preferred_batch_size) == [4, 8, 16]
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "r2")]) == 1
    assert "config.json is missing" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "r3"), "--fp16"]) == 2


def test_tensorrt_plans(tmp_path):
    reason = tensorrt_missing_reason()
    if reason:
        pytest.skip(reason)
    avatar = random_avatar(tiny_config(), seed=0)
    data = export_avatar(avatar, tmp_path, ExportOptions(tensorrt=True, fp16=True, quiet=True))
    assert all("plan" in entry for entry in data["networks"].values())
    assert read_config(tmp_path / "renderer").platform == "tensorrt_plan"


def test_tensorrt_absent_gives_a_clear_error(tmp_path, capsys):
    if tensorrt_missing_reason() is None:
        pytest.skip("TensorRT is installed here")
    save_avatar(random_avatar(tiny_config(), seed=2), tmp_path / "ckpt")
    assert main(["export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "repo"), "--tensorrt", "--quiet"]) == 1
    assert "TensorRT is not installed" in capsys.readouterr().err


def test_int8_renderer_is_kept_only_when_it_matches_the_float_one(tmp_path):
    import numpy as np
    import onnx
    import onnxruntime as ort

    from export.int8_renderer import Int8RendererError, Int8RendererOptions, quantize_renderer
    from export.onnx_export import export_onnx

    avatar = random_avatar(tiny_config(), seed=3)
    report = export_avatar(avatar, tmp_path / "repo", ExportOptions(quiet=True, int8_renderer=True))
    figures = report["networks"]["renderer"]["int8"]
    assert report["int8_renderer"] is True and figures["kept"] is True
    assert figures["psnr_db_median"] >= Int8RendererOptions().min_psnr_db
    path = model_file(tmp_path / "repo", "renderer")
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in onnx.load(path).graph.node}
    motion = np.zeros((2, 1, 15), np.float32) + avatar.renderer.motion_mean.numpy()
    (frames,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"motion": motion})
    with torch.no_grad():
        expected = avatar.renderer(torch.from_numpy(motion)).numpy()
    assert frames.shape == expected.shape and float(np.abs(frames - expected).mean()) < 0.02

    # A check that fails says why and leaves the float graph where it was.
    float_path = export_onnx(avatar.renderer, avatar.spec, "renderer", tmp_path / "float" / "model.onnx")
    before = float_path.read_bytes()
    with pytest.raises(Int8RendererError, match="PSNR"):
        quantize_renderer(float_path, float_path, avatar.renderer.motion_mean.numpy(),
                          avatar.renderer.motion_std.numpy(), Int8RendererOptions(min_psnr_db=200.0))
    assert float_path.read_bytes() == before
    with pytest.raises(ValueError, match="TensorRT"):
        export_avatar(avatar, tmp_path / "trt", ExportOptions(quiet=True, int8_renderer=True, tensorrt=True))


def test_an_int8_renderer_that_fails_its_check_leaves_the_float_graph_in_the_export(tmp_path, monkeypatch):
    import onnx

    import export.exporter as exporter
    from export.int8_renderer import Int8RendererError

    def failing(*args, **kwargs):
        raise Int8RendererError("median PSNR 20.0 dB < 35.0 dB", {"psnr_db_median": 20.0})

    monkeypatch.setattr(exporter, "quantize_renderer", failing)
    report = export_avatar(random_avatar(tiny_config(), seed=4), tmp_path, ExportOptions(quiet=True, int8_renderer=True))
    assert report["passed"] is True
    assert report["networks"]["renderer"]["int8"] == {"kept": False, "reason": "median PSNR 20.0 dB < 35.0 dB",
                                                      "psnr_db_median": 20.0}
    assert "QuantizeLinear" not in {node.op_type for node in onnx.load(model_file(tmp_path, "renderer")).graph.node}
