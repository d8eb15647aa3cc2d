"""Smoke test of `f2f bench engines` (tiny avatar, short): the JSON has every figure and the plot is
written. No thresholds: timings on shared machines belong in the benchmark, not in assertions."""

from __future__ import annotations

import json

from f2f.cli import main
from models.avatar import random_avatar, save_avatar, tiny_config


def test_bench_engines_writes_json_and_plot(tmp_path, report):
    save_avatar(random_avatar(tiny_config(), seed=0), tmp_path / "ckpt")
    out = tmp_path / "engines.json"
    assert main(["bench", "engines", "--json", str(out), "--checkpoint", str(tmp_path / "ckpt"),
                 "--batches", "1,4", "--seconds", "0.2"]) == 0
    result = json.loads(out.read_text())
    for backend in ("embedded", "triton"):
        for kind in ("step", "encode"):
            rows = result[backend][kind]
            assert [r["batch"] for r in rows] == [1, 4]
            assert all(r["median_ms"] > 0 and r["p95_ms"] >= r["median_ms"] and r["items_per_s"] > 0 for r in rows)
    assert set(result["triton_overhead_ratio"]) == {"batch_1", "batch_16"}
    assert result["triton_overhead_ratio"]["batch_1"] > 0
    assert "available" in result["gpu"]
    assert out.with_suffix(".png").stat().st_size > 10_000
    report(f"bench engines smoke (tiny): triton/embedded step at batch 1 = {result['triton_overhead_ratio']['batch_1']}")
