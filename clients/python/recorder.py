"""What the Python client records: an MP4 (H.264 + AAC, PyAV) and a JSONL of motion messages.

Timing in the MP4: each track's frames keep their own spacing (received pts, which aiortc counts from
the first frame of that track), and each track starts at the moment its first frame arrived, counted
from the recorder's start. The gateway sends a frame and its audio at the same instant, so this
keeps lips and voice together to within the two tracks' receive jitter. Encoding runs on one writer
thread, so the event loop only hands frames over.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from fractions import Fraction
from pathlib import Path

import av

log = logging.getLogger(__name__)

MS = Fraction(1, 1000)
AUDIO_RATE = 48_000
_STOP = object()


class Mp4Recorder:
    def __init__(self, path: str | Path, *, expect_video: bool = True, expect_audio: bool = True,
                 fps: int = 25, preset: str = "veryfast"):
        self.path = Path(path)
        self.expect_video = expect_video
        self.expect_audio = expect_audio
        self.fps = fps
        self.preset = preset
        self.started_at = time.monotonic()
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="f2f-recorder", daemon=True)
        self._thread.start()
        self._video_origin: tuple[float, float] | None = None  # (arrival offset s, first pts s)
        self._audio_origin: float | None = None
        self.video_frames = 0
        self.audio_frames = 0
        self.error: BaseException | None = None

    # -- event loop side ---------------------------------------------------------------------------

    def video(self, frame: av.VideoFrame, arrived_at: float) -> None:
        t = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
        if self._video_origin is None:
            self._video_origin = (arrived_at - self.started_at, t)
        offset, first = self._video_origin
        self.video_frames += 1
        self._queue.put(("video", frame, offset + t - first))

    def audio(self, frame: av.AudioFrame, arrived_at: float) -> None:
        if self._audio_origin is None:
            self._audio_origin = arrived_at - self.started_at
        self.audio_frames += 1
        self._queue.put(("audio", frame, None))

    def close(self, timeout: float = 30.0) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self.error is not None:
            raise RuntimeError(f"recording {self.path} failed: {self.error}") from self.error

    # -- writer thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        container = None
        video_stream = audio_stream = None
        resampler = None
        waiting: list = []
        last_video_ms = -1
        audio_samples = 0
        try:
            while True:
                item = self._queue.get()
                if item is not _STOP:
                    if container is None:
                        if item[0] == "video" or not self.expect_video:
                            first = item[1] if item[0] == "video" else None
                            container, video_stream, audio_stream = self._open(first)
                            resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE,
                                                          frame_size=1024)
                        else:
                            waiting.append(item)  # audio before the first video frame: hold it
                            continue
                    items = waiting + [item]
                    waiting = []
                else:
                    if container is None and waiting:
                        container, video_stream, audio_stream = self._open(None)
                        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE,
                                                      frame_size=1024)
                    items = waiting
                for kind, frame, t in items:
                    if kind == "video" and video_stream is not None:
                        ms = max(int(round(t * 1000)), last_video_ms + 1)
                        last_video_ms = ms
                        out = frame.reformat(width=video_stream.width, height=video_stream.height, format="yuv420p")
                        out.pts, out.time_base = ms, MS
                        container.mux(video_stream.encode(out))
                    elif kind == "audio" and audio_stream is not None:
                        if audio_samples == 0:
                            audio_samples = int(round((self._audio_origin or 0.0) * AUDIO_RATE))
                        for chunk in resampler.resample(frame):
                            chunk.pts, chunk.time_base = audio_samples, Fraction(1, AUDIO_RATE)
                            audio_samples += chunk.samples
                            container.mux(audio_stream.encode(chunk))
                if item is _STOP:
                    break
            if container is not None:
                if video_stream is not None:
                    container.mux(video_stream.encode(None))
                if audio_stream is not None:
                    container.mux(audio_stream.encode(None))
        except BaseException as error:  # reported by close()
            self.error = error
            log.exception("recorder failed")
        finally:
            if container is not None:
                container.close()

    def _open(self, first_video: av.VideoFrame | None):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        container = av.open(str(self.path), mode="w", format="mp4")
        video_stream = audio_stream = None
        if first_video is not None:
            video_stream = container.add_stream("libx264", rate=self.fps)
            video_stream.width = first_video.width // 2 * 2
            video_stream.height = first_video.height // 2 * 2
            video_stream.pix_fmt = "yuv420p"
            video_stream.codec_context.time_base = MS
            video_stream.options = {"preset": self.preset}
        if self.expect_audio:
            audio_stream = container.add_stream("aac", rate=AUDIO_RATE)
            audio_stream.layout = "stereo"
        return container, video_stream, audio_stream


class MotionLog:
    """One JSON line per motion message: the message as sent, plus `received_s` (client seconds since start)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")
        self.started_at = time.monotonic()
        self.lines = 0

    def write(self, message: dict, arrived_at: float) -> None:
        record = dict(message)
        record["received_s"] = round(arrived_at - self.started_at, 6)
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.lines += 1

    def close(self) -> None:
        self._file.close()
