"""Reading raw episodes: probe, decode frames, extract audio, encode clips. ffmpeg/ffprobe do the work.

Corrupt or truncated inputs raise MediaError with a reason, which the pipeline records in its report
and moves on.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

AUDIO_RATE = 16000


class MediaError(RuntimeError):
    """An input that cannot be read (missing streams, corrupt, truncated)."""


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    width: int
    height: int
    fps: Fraction
    frame_count: int
    duration_s: float
    has_audio: bool

    @property
    def fps_float(self) -> float:
        return float(self.fps)


def probe(path: Path) -> VideoInfo:
    """Stream facts of a video file; raises MediaError when there is no decodable video stream."""
    command = ["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", "-show_format", str(path)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise MediaError(f"ffprobe failed: {result.stderr.strip()[:300] or 'unreadable file'}")
    data = json.loads(result.stdout or "{}")
    streams = data.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    if video is None:
        raise MediaError("no video stream")
    try:
        fps = Fraction(video.get("avg_frame_rate") or video["r_frame_rate"])
        width, height = int(video["width"]), int(video["height"])
    except (KeyError, ValueError, ZeroDivisionError) as error:
        raise MediaError(f"video stream without size or frame rate: {error}") from None
    if fps <= 0 or width <= 0 or height <= 0:
        raise MediaError(f"invalid video stream: {width}x{height} at {fps} fps")
    duration = float(video.get("duration") or data.get("format", {}).get("duration") or 0.0)
    frames = int(video.get("nb_frames") or round(duration * float(fps)))
    if frames <= 0:
        raise MediaError("video stream has no frames")
    has_audio = any(s.get("codec_type") == "audio" for s in streams)
    return VideoInfo(path, width, height, fps, frames, duration, has_audio)


def read_frames(path: Path, width: int, height: int, fps: float | None = None,
                start_s: float = 0.0, duration_s: float | None = None) -> Iterator[np.ndarray]:
    """Decoded BGR frames (height, width, 3) uint8, at the source rate or resampled to `fps`.

    Raises MediaError when ffmpeg reports a decode error (a truncated or corrupt file), after the
    frames it could decode.
    """
    command = _ffmpeg_reading(path, start_s, duration_s)
    filters = [f"fps={fps}"] if fps else []
    filters.append(f"scale={width}:{height}")
    command += ["-an", "-vf", ",".join(filters), "-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:1"]
    frame_bytes = width * height * 3
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while True:
            data = process.stdout.read(frame_bytes)
            if len(data) < frame_bytes:
                break
            yield np.frombuffer(data, np.uint8).reshape(height, width, 3)
    finally:
        process.stdout.close()
        errors = process.stderr.read().decode(errors="replace")
        process.stderr.close()
        code = process.wait()
    if code != 0 or _is_decode_error(errors):
        raise MediaError(f"decode error: {errors.strip()[:300] or f'ffmpeg exit {code}'}")


def _ffmpeg_reading(path: Path, start_s: float, duration_s: float | None) -> list[str]:
    """ffmpeg arguments that read `path` from start_s (accurate seek) for duration_s seconds."""
    command = ["ffmpeg", "-v", "error", "-nostdin"]
    if start_s > 0:
        command += ["-ss", f"{start_s:.6f}"]
    command += ["-i", str(path)]
    if duration_s is not None:
        command += ["-t", f"{duration_s:.6f}"]
    return command


def _is_decode_error(stderr: str) -> bool:
    markers = ("Invalid data", "corrupt", "error while decoding", "Truncat", "moov atom not found", "partial file")
    return any(marker.lower() in stderr.lower() for marker in markers)


def read_audio(path: Path, start_s: float = 0.0, duration_s: float | None = None,
               rate: int = AUDIO_RATE) -> np.ndarray:
    """Mono float32 audio at `rate` (the 16 kHz mono WAV of the paper, in memory).  # (samples,)"""
    command = _ffmpeg_reading(path, start_s, duration_s)
    command += ["-vn", "-ac", "1", "-ar", str(rate), "-f", "f32le", "pipe:1"]
    result = subprocess.run(command, capture_output=True)
    if result.returncode != 0 or _is_decode_error(result.stderr.decode(errors="replace")):
        raise MediaError(f"audio decode error: {result.stderr.decode(errors='replace').strip()[:300]}")
    return np.frombuffer(result.stdout, np.float32).copy()


def encode_clip(path: Path, frames: np.ndarray, audio: np.ndarray, fps: float = 25.0,
                crf: int = 18, audio_rate: int = AUDIO_RATE) -> None:
    """(N, S, S, 3) uint8 BGR frames + mono float32 audio -> H.264 (CRF) + AAC mono mp4 at `path`.

    Writes to `path` directly; callers write to a temporary name and rename (atomic export).
    """
    count, height, width = frames.shape[:3]
    audio_path = path.with_suffix(".f32")
    audio.astype(np.float32).tofile(audio_path)
    command = ["ffmpeg", "-v", "error", "-nostdin", "-y",
               "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{width}x{height}", "-r", f"{fps}", "-i", "pipe:0",
               "-f", "f32le", "-ar", str(audio_rate), "-ac", "1", "-i", str(audio_path),
               "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf),
               "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-ar", str(audio_rate), "-ac", "1",
               "-t", f"{count / fps:.6f}", "-f", "mp4", str(path)]
    try:
        result = subprocess.run(command, input=np.ascontiguousarray(frames).tobytes(), capture_output=True)
    finally:
        audio_path.unlink(missing_ok=True)
    if result.returncode != 0:
        raise MediaError(f"encode failed: {result.stderr.decode(errors='replace').strip()[:300]}")


def count_frames(path: Path) -> int:
    """Frames actually decodable in a file (ffprobe counts by decoding)."""
    command = ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
               "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise MediaError(f"cannot count frames: {result.stderr.strip()[:200]}")
    return int(result.stdout.strip().split(",")[0])
