"""The CI variant of the soak: `f2f bench soak --sessions 2 --minutes 1` (the 10-minute run's figures are
in benchmarks/results/soak.json and docs/reliability.md). The bounds are the issue's targets for
crashes and memory, and a generous liveness bound for the timing figures (2 shared cores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.gateway import REPO_ROOT

pytestmark = pytest.mark.timeout(400)


def test_soak_two_sessions_for_a_minute(tiny_model_repository, tmp_path, report):
    out = tmp_path / "soak.json"
    command = [sys.executable, "-m", "f2f.cli", "bench", "soak", "--sessions", "2", "--minutes", "1",
               "--json", str(out), "--model-repository", str(tiny_model_repository), "--logs", str(tmp_path)]
    done = subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                          capture_output=True, text=True, timeout=360)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out.read_text())
    assert out.with_suffix(".png").is_file()
    report(f"soak 2 sessions x 1 min: crashes {result['crashes']}, RSS {result['rss_mb']['after_warmup']} -> "
           f"{result['rss_mb']['end']} MB ({result['rss_growth_pct']}% after warm-up), fds {result['fds']}, "
           f"threads {result['threads']}, asyncio tasks {result['asyncio_tasks']}, A/V drift "
           f"{result['av_drift_ms']} ms (offset {result['av_offset_ms']['median']} ms), fps received "
           f"{[s['fps_received'] for s in result['sessions']]}, skipped "
           f"{[s['drops']['frames_skipped_by_server'] for s in result['sessions']]}")
    assert result["crashes"] == 0, [s["crashes"] for s in result["sessions"]]
    assert result["gateway_log"]["tracebacks"] == 0, result["gateway_log"]["tail"]
    assert result["rss_growth_pct"] < 10.0, result["rss_mb"]
    for key in ("fds", "threads", "asyncio_tasks"):  # flat while the same sessions run
        assert result[key]["max"] <= result[key]["after_warmup"] + 8, (key, result[key])
    for session in result["sessions"]:
        assert session["fps_received"] >= 10, session  # liveness, generously bounded
        assert session["client_received"]["host_audio_frames"] >= 0.5 * 50 * 60, session
        assert session["server"]["motion_messages_sent"] == session["server"]["frames_made"]
    assert result["av_drift_ms"] is not None and result["av_drift_ms"] <= 120, result["av_drift_ms"]
