"""The Python client (`f2f client`, as a process) against a real gateway process (`python -m server serve`,
the embedded engine), over loopback WebRTC.

- synthetic media for 10 s: >= 240 frames come back, a motion message for each, a playable MP4 with
  video and audio;
- a synthetic partner clip (cut from a synthetic episode) + espeak-ng speech as host audio: the
  host's jawOpen on the data channel follows the loudness of the host audio at each message's
  `host_audio_pts`. This runs on the shipped default avatar (trained; the tiny test avatar has
  random weights), through its own gateway.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.processes import ServiceProcess
from tests.support.gateway import REPO_ROOT, gateway_subprocess

pytestmark = pytest.mark.timeout(300)

SECONDS = 10.0
MIN_FRAMES = 240
MIN_JAW_LOUDNESS_R = 0.3


def start_gateway(model_repository: Path, log_dir: Path) -> ServiceProcess:
    return gateway_subprocess(model_repository, log_path=log_dir / "gateway.log").start()


@pytest.fixture(scope="module")
def gateway_process(tiny_model_repository, tmp_path_factory):
    server = start_gateway(tiny_model_repository, tmp_path_factory.mktemp("gateway"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def default_avatar_gateway(default_model_repository, tmp_path_factory):
    server = start_gateway(default_model_repository, tmp_path_factory.mktemp("gateway_default"))
    try:
        yield server
    finally:
        server.stop()


def run_client(url: str, out: Path, *args: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "clients.python", "--url", url, "--seconds", str(SECONDS), "--loopback",
               "--record", str(out / "host.mp4"), "--motion", str(out / "motion.jsonl"),
               "--summary", str(out / "summary.json"), *args]
    done = subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                          capture_output=True, text=True, timeout=SECONDS + 120)
    assert done.returncode == 0, f"client failed ({done.returncode}):\n{done.stderr[-4000:]}"
    return json.loads((out / "summary.json").read_text())


def ffprobe_streams(path: Path) -> list[dict]:
    done = subprocess.run(["ffprobe", "-v", "error", "-show_entries",
                           "stream=codec_type,codec_name,width,height,nb_frames,duration", "-of", "json", str(path)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)["streams"]


def read_motion(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_python_client_streams_records_and_receives_motion(gateway_process, tmp_path, report):
    summary = run_client(gateway_process.url, tmp_path, "--synthetic")
    frames, server = summary["video_frames"], summary["server"]
    report(f"python client e2e: {frames} frames back in {SECONDS:.0f} s ({summary['fps']:.2f} fps at the client, "
           f"server {server['fps']} fps), first frame {summary['first_frame_ms']:.0f} ms after connecting "
           f"(server: {server['first_frame_ms']} ms), connect {summary['connect_ms']:.0f} ms, "
           f"{server['frames_skipped']} skipped, step {server['step_ms_mean']} ms mean")
    assert frames >= MIN_FRAMES, {k: v for k, v in summary.items() if k != "server"} | {
        k: server[k] for k in ("frames_made", "frames_skipped_late", "frames_skipped_engine", "frames_dropped_backlog",
                               "late_ms_max", "step_ms_mean", "first_frame_ms")}
    assert server["partner_frames_received"] > 0 and server["host_audio_samples_received"] > 0, server
    assert server["faces_seen"] > 0, server

    # A motion message for each frame: the server sent one per frame made, the client got them all.
    messages = read_motion(tmp_path / "motion.jsonl")
    assert len(messages) == summary["motion_messages"]
    assert server["motion_messages_sent"] == server["frames_made"] and server["motion_messages_dropped"] == 0, server
    assert len(messages) >= frames - 2, (len(messages), frames)
    indices = [m["frame"] for m in messages]
    assert indices == sorted(set(indices))
    for message in messages[:3] + messages[-3:]:
        assert {"frame", "pts", "pose", "blendshapes", "source", "lambda_video", "received_s"} <= set(message)
        assert set(message["pose"]) == {"yaw", "pitch", "roll", "tx", "ty", "scale"}
        assert "jawOpen" in message["blendshapes"] and "mouthSmileLeft" in message["blendshapes"]
        assert {"host_audio_pts", "partner_pts"} <= set(message["source"])
        assert message["pts"] == pytest.approx(message["frame"] / 25)

    # The recording plays: both streams there, and ffmpeg decodes it without an error.
    mp4 = tmp_path / "host.mp4"
    streams = {s["codec_type"]: s for s in ffprobe_streams(mp4)}
    assert streams["video"]["codec_name"] == "h264" and streams["audio"]["codec_name"] == "aac", streams
    assert int(streams["video"]["nb_frames"]) >= frames - 5
    assert float(streams["audio"]["duration"]) >= SECONDS - 1.0, streams["audio"]
    decoded = subprocess.run(["ffmpeg", "-v", "error", "-i", str(mp4), "-f", "null", "-"], capture_output=True,
                             text=True)
    assert decoded.returncode == 0 and not decoded.stderr.strip(), decoded.stderr


def loudness_envelope(wav: Path, pts: np.ndarray) -> np.ndarray:
    """Log energy of the host audio over [pts, pts + 40 ms) (pts in seconds of the looping wav)."""
    from clients.python.media import read_audio_file

    audio = read_audio_file(wav).astype(np.float32) / 32768.0
    rate = 48000
    out = []
    for t in pts:
        start = int(round(t * rate)) % len(audio)
        span = np.take(audio, np.arange(start, start + rate // 25), mode="wrap")
        out.append(np.log(np.mean(span ** 2) + 1e-8))
    return np.array(out)


def test_host_jaw_follows_the_host_audio(default_avatar_gateway, fake_media, tmp_path, report):
    summary = run_client(default_avatar_gateway.url, tmp_path, "--partner", str(fake_media.camera_y4m),
                         "--host-audio", str(fake_media.microphone_wav))
    messages = [m for m in read_motion(tmp_path / "motion.jsonl") if m["source"]["host_audio_pts"] is not None]
    assert len(messages) >= 150, len(messages)
    assert summary["server"]["faces_seen"] > 0, "the partner clip's guest face was not found"
    pts = np.array([m["source"]["host_audio_pts"] for m in messages])
    jaw = np.array([m["blendshapes"]["jawOpen"] for m in messages])
    loud = loudness_envelope(fake_media.microphone_wav, pts)
    r = float(np.corrcoef(jaw, loud)[0, 1]) if jaw.std() > 0 else 0.0
    # The same measure shifted by a frame either way, to see whether the peak sits at lag 0.
    lags = {lag: float(np.corrcoef(jaw[max(0, lag):len(jaw) + min(0, lag)],
                                   loud[max(0, -lag):len(loud) - max(0, lag)])[0, 1]) for lag in (-2, -1, 1, 2)}
    server = summary["server"]
    report(f"jawOpen vs host loudness (default avatar): r={r:.3f} over {len(messages)} frames; at other lags "
           f"{', '.join(f'{k:+d}: {v:.3f}' for k, v in lags.items())}; server {server['frames_sent']} frames sent, "
           f"{server['frames_skipped']} skipped, step {server['step_ms_mean']} ms mean")
    assert r >= MIN_JAW_LOUDNESS_R, (r, lags)
