"""CI smoke tests of `f2f bench latency` and `f2f bench sessions` (tiny avatar, a few seconds each):
the real gateway and echo server processes, the Python client over loopback, every figure in the
JSON and the plots written. No thresholds: timings on shared machines belong in the benchmark.

Plus the analysis on a hand-made record, where every latency is known exactly.
"""

from __future__ import annotations

import json

import pytest

from benchmarks.latency import (
    SegmentRecord,
    audio_to_photon_s,
    av_offset_s,
    echo_round_trip_s,
    parse_stage_totals,
    partner_to_photon_s,
)
from f2f.cli import main

pytestmark = pytest.mark.timeout(300)


def test_bench_latency_writes_every_figure(tiny_model_repository, tmp_path, report):
    out = tmp_path / "latency.json"
    assert main(["bench", "latency", "--seconds", "4", "--rounds", "1", "--variants", "avatar,echo",
                 "--warmup-session", "0", "--model-repository", str(tiny_model_repository),
                 "--json", str(out), "--logs", str(tmp_path / "logs")]) == 0
    result = json.loads(out.read_text())
    ours, floor = result["avatar"], result["echo"]
    for name in ("audio_to_photon_ms", "partner_to_photon_ms", "av_offset_ms", "frame_gap_ms", "first_frame_ms"):
        assert ours[name]["n"] > 0 and {"p50", "p95", "p99"} <= set(ours[name]), (name, ours[name])
    assert ours["fps"] > 0 and floor["fps"] > 0
    assert {"receive", "decode", "face", "guest_encoder", "motion", "render", "send", "encode"} <= set(
        ours["server_stages_ms"]), ours["server_stages_ms"]
    assert floor["round_trip_ms"]["n"] > 0
    assert ours["client_receive"]["frames_at_marker"] > 0 and floor["client_receive"]["frames_at_marker"] > 0
    assert set(result["ratio_to_floor"]) >= {"audio_to_photon_ms", "partner_to_photon_ms"}
    assert {"fps", "audio_to_photon_ms_p50", "audio_to_photon_ms_p95"} <= set(result["targets"])
    assert "available" in result["gpu"]
    assert out.with_suffix(".png").stat().st_size > 10_000
    report(f"bench latency smoke (tiny avatar, 4 s): audio->photon p50 {ours['audio_to_photon_ms']['p50']} ms, "
           f"echo floor p50 {floor['round_trip_ms']['p50']} ms, fps {ours['fps']}")


def test_bench_sessions_writes_the_count_and_cpu(tiny_model_repository, tmp_path):
    out = tmp_path / "sessions.json"
    assert main(["bench", "sessions", "--seconds", "3", "--settle", "1", "--max-sessions", "1",
                 "--model-repository", str(tiny_model_repository), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = result["counts"]
    assert row["sessions"] == 1 and row["fps_min"] > 0 and row["gateway_cpu_cores"] > 0
    assert row["cpu_per_session_percent"] > 0 and row["frame_gap_ms_p95_max"] > 0
    assert result["sessions_held"] in (0, 1)
    assert "available" in result["gpu"]
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_latencies_of_a_known_record():
    """Frames 0..9 leave 100 ms after their audio packet; video pts start at frame 2 (the first two
    frames never arrived), which the frame-index offset must find from the motion messages."""
    record = SegmentRecord(variant="avatar", target="avatar", early_delivery=True, seconds=1.0,
                           started_at=0.0, connected_at=0.0)
    record.audio_sent = [(k * 0.02, 10.0 + k * 0.02) for k in range(50)]
    record.partner_sent = [(k * 0.04, 10.0 + k * 0.04) for k in range(25)]
    for n in range(2, 10):
        arrival = 10.0 + n * 0.04 + 0.1
        record.video.append(((n - 2) * 3600, arrival))
        # host audio at frame n's first sample, 5 ms into its packet; conditioned on partner frame n - 1
        record.motion.append(({"frame": n, "source": {"host_audio_pts": n * 0.04 + 0.005,
                                                      "partner_pts": (n - 1) * 0.04}}, arrival - 0.002))
        record.audio.append((2 * n * 960, arrival + 0.003))  # the returned audio 3 ms after its frame
    a2p = audio_to_photon_s(record, warmup_s=0)
    assert len(a2p) == 8 and all(v == pytest.approx(0.1) for v in a2p)
    p2p = partner_to_photon_s(record, warmup_s=0)
    # partner frame k is first used by frame k + 1, which arrives 0.14 s after k was sent; frame 0 by
    # frame 2, the first to arrive
    assert p2p[0] == pytest.approx(0.18) and len(p2p) == 9 and all(v == pytest.approx(0.14) for v in p2p[1:])
    assert all(v == pytest.approx(0.003) for v in av_offset_s(record, warmup_s=0))
    echo = SegmentRecord(variant="echo", target="echo", early_delivery=True, seconds=1.0, connected_at=0.0)
    echo.partner_sent = record.partner_sent
    echo.video = [(k * 3600, 10.0 + k * 0.04 + 0.025) for k in range(25)]
    assert all(v == pytest.approx(0.025) for v in echo_round_trip_s(echo, warmup_s=0))


def test_stage_totals_from_prometheus_text():
    text = ('# HELP f2f_stage_seconds x\nf2f_stage_seconds_bucket{le="0.001",stage="render"} 1.0\n'
            'f2f_stage_seconds_count{stage="render"} 4.0\nf2f_stage_seconds_sum{stage="render"} 0.05\n'
            'f2f_stage_seconds_count{stage="face"} 2.0\nf2f_stage_seconds_sum{stage="face"} 0.02\n')
    assert parse_stage_totals(text) == {"render": (0.05, 4.0), "face": (0.02, 2.0)}
