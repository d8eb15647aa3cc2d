"""Fake media for tests: a partner clip cut from a synthetic episode and host speech from espeak-ng.

Everything is made with the real tools (`f2f synth`, ffmpeg, espeak-ng) into a folder the caller
owns (a pytest tmp dir). Chromium reads the results as its fake camera (`.y4m`, I420) and fake
microphone (`.wav`, 16-bit PCM); the Python client can read them as files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

DEFAULT_SPEECH = (
    "Hello, and welcome back to the show. Tonight we talk about real time avatars. "
    "Thank you for joining us, it is a pleasure to have you here."
)


@dataclass(frozen=True)
class Episode:
    video: Path          # episode_000.mp4 (H.264 + AAC)
    ground_truth: Path   # episode_000.json


@dataclass(frozen=True)
class FakeMedia:
    episode: Episode
    camera_y4m: Path     # partner video for --use-file-for-fake-video-capture
    microphone_wav: Path  # host speech for --use-file-for-fake-audio-capture
    partner_start_s: float
    partner_seconds: float


def missing_tools() -> list[str]:
    """The command-line tools these helpers need that are not on PATH."""
    return [tool for tool in ("ffmpeg", "espeak-ng") if shutil.which(tool) is None]


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")


def synthetic_episode(out_dir: Path, *, seed: int = 3, minutes: float = 0.5,
                      size: tuple[int, int] = (640, 360)) -> Episode:
    """Run `f2f synth` for one episode into out_dir (about 6-15 s for half a minute at 640x360)."""
    out_dir = Path(out_dir)
    _run([sys.executable, "-m", "f2f.cli", "synth", "--out", str(out_dir), "--episodes", "1",
          "--minutes", str(minutes), "--seed", str(seed), "--size", f"{size[0]}x{size[1]}", "--quiet"],
         "f2f synth")
    video, truth = out_dir / "episode_000.mp4", out_dir / "episode_000.json"
    if not (video.is_file() and truth.is_file()):
        raise RuntimeError(f"f2f synth wrote no episode into {out_dir}")
    return Episode(video, truth)


def partner_segment(ground_truth: Path, *, max_seconds: float = 4.0) -> tuple[float, float]:
    """(start_s, seconds) of the longest shot that films a guest: what a partner's camera would see."""
    truth = json.loads(Path(ground_truth).read_text())
    host = truth.get("host_id", "host")
    fps = float(Fraction(str(truth["video"]["fps"])))
    guests = [s for s in truth.get("shots", []) if s.get("subject") and s["subject"] != host]
    if not guests:
        return 0.0, max_seconds
    shot = max(guests, key=lambda s: s["end_frame"] - s["start_frame"])
    start = shot["start_frame"] / fps
    seconds = min(max_seconds, (shot["end_frame"] - shot["start_frame"]) / fps)
    return start, seconds


def video_to_y4m(src: Path, dst: Path, *, start_s: float = 0.0, seconds: float = 4.0,
                 size: tuple[int, int] = (640, 360), fps: int = 25) -> Path:
    """Cut [start_s, start_s + seconds) of src to raw I420 y4m at size and fps (Chromium's fake camera)."""
    _run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", f"{start_s:.3f}", "-i", str(src),
          "-t", f"{seconds:.3f}", "-an", "-vf", f"scale={size[0]}:{size[1]},fps={fps}",
          "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe", str(dst)], "ffmpeg y4m")
    return Path(dst)


def speech_wav(dst: Path, text: str = DEFAULT_SPEECH, *, sample_rate: int = 48000,
               voice: str = "en-us") -> Path:
    """espeak-ng speech resampled to sample_rate mono 16-bit PCM (Chromium's fake microphone)."""
    dst = Path(dst)
    raw = dst.with_name(dst.stem + ".espeak.wav")
    _run(["espeak-ng", "-v", voice, "-w", str(raw), text], "espeak-ng")
    _run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(raw), "-ar", str(sample_rate),
          "-ac", "1", "-c:a", "pcm_s16le", str(dst)], "ffmpeg wav")
    raw.unlink(missing_ok=True)
    return dst


def make_fake_media(out_dir: Path, *, seed: int = 3, seconds: float = 4.0,
                    size: tuple[int, int] = (640, 360)) -> FakeMedia:
    """A synthetic episode, a partner y4m cut from its longest guest shot, and an espeak-ng wav."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    episode = synthetic_episode(out_dir / "episode", seed=seed, size=size)
    start, length = partner_segment(episode.ground_truth, max_seconds=seconds)
    camera = video_to_y4m(episode.video, out_dir / "partner.y4m", start_s=start, seconds=length, size=size)
    microphone = speech_wav(out_dir / "host_speech.wav")
    return FakeMedia(episode, camera, microphone, start, length)
