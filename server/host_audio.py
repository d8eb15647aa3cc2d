"""Host audio in: any WebRTC audio -> 16 kHz mono on the session timeline -> log-mel, and the same
samples back out, delayed with the video.

The session timeline puts sample s at session time s / 16000 (zero = the session clock's zero).
- Input audio is placed by arrival: the first chunk ends where the clock is when it arrives, every
  later chunk follows the previous one contiguously. So the input's own pacing (its RTP clock)
  decides the spacing, and the clock decides the anchor. After a gap in the input's timestamps
  (packet loss, or a sender that stops sending during silence) the next chunk is anchored afresh.
- Audio that arrives after the avatar loop has already finalised its place (an underrun: loss or a
  late burst) is placed right after the finalised part: the gap was played as silence, and the
  input now runs that much later. Input that runs more than `max_ahead_s` ahead of the clock has its
  oldest samples dropped, so a backlog never builds up: latency never accumulates. On time, a chunk
  ends about where the clock is when it arrives; "ahead" is what late shifts (and a sender clock
  running fast) have added, so `max_ahead_s` is also the most latency underruns can add: 40 ms, one
  frame (it was 120 ms; f2f bench latency on a busy machine showed the shifts reaching it).
- Text-to-speech audio (`inject`) is mixed in from the first not-yet-finalised sample.
- `finalize_to(position)` fixes the timeline up to `position`: zeros where nothing arrived, the
  streaming log-mel (`f2f.features.mel.StreamingLogMel`, the training featurizer) advances over it,
  and it becomes the host audio sent back out (`output_audio`).

`source_pts_at(position)` maps a timeline sample back to the input stream's own time (seconds since
the first input sample, from the received RTP timestamps): what the motion data channel reports as
`host_audio_pts`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from f2f.features.mel import LOG_MEL_FLOOR, StreamingLogMel, to_mono, video_frame_ready_at
from f2f.timebase import AUDIO_SAMPLE_RATE, MEL_BINS, MEL_FRAMES_PER_VIDEO_FRAME, SAMPLES_PER_FRAME
from server.frames import SessionClock
from server.metrics import GatewayMetrics
from server.resample import StreamingResampler

log = logging.getLogger(__name__)

MAX_PTS_JITTER_S = 0.005  # a jump in the input's timestamps beyond this is a gap in the stream


@dataclass
class _Chunk:
    start: int  # timeline position of data[0]
    data: np.ndarray  # float32 16 kHz mono
    source_pts: float | None  # input-stream time of data[0] (None: not from the input track)

    @property
    def end(self) -> int:
        return self.start + self.data.shape[0]


@dataclass(frozen=True)
class _Segment:
    """Finalised input: timeline [start, start + length) came from input time source_pts on."""

    start: int
    length: int
    source_pts: float

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass
class AudioStats:
    samples_received: int = 0  # input samples placed or dropped (16 kHz)
    underrun_samples: int = 0  # finalised as silence while an input track was live and behind
    dropped_samples: int = 0  # input dropped because it ran ahead of the clock
    late_shift_samples: int = 0  # input placed later than its contiguous position (after an underrun)
    injected_samples: int = 0  # text-to-speech samples mixed in


class HostAudioTimeline:
    """The host audio of one session on its 25 fps clock. Single-threaded: call from the event loop."""

    def __init__(self, clock: SessionClock, *, max_ahead_s: float = 0.04, history_s: float = 4.0,
                 metrics: GatewayMetrics | None = None):
        self.clock = clock
        self.max_ahead = int(max_ahead_s * AUDIO_SAMPLE_RATE)
        self._metrics = metrics
        self._mel = StreamingLogMel(history_frames=int(history_s * 100))
        self._history = np.zeros(int(history_s * AUDIO_SAMPLE_RATE), dtype=np.float32)  # ring by position
        self._final = 0  # timeline [0, _final) is fixed
        self._write_pos: int | None = None  # where the next input chunk goes (None: no input yet)
        self._input: deque[_Chunk] = deque()  # placed, not yet finalised
        self._say: deque[_Chunk] = deque()
        self._say_end = 0
        self._segments: deque[_Segment] = deque()  # finalised input, for source_pts_at
        self.input_live = False  # an input track is delivering
        self.stats = AudioStats()
        self.arrived = asyncio.Event()  # set on every input write (the loop's grace wait)

    # -- input -------------------------------------------------------------------------------

    @property
    def final_position(self) -> int:
        return self._final

    @property
    def write_position(self) -> int | None:
        return self._write_pos

    def write(self, samples: np.ndarray, source_pts: float | None, restart: bool = False) -> None:
        """Place 16 kHz mono input samples on the timeline (see the module docstring).

        `restart`: the input stream has a gap before these samples (loss, or a sender that stops
        sending in silence): anchor them at their arrival again, as the very first chunk.
        """
        n = int(samples.shape[0])
        if n == 0:
            return
        self.stats.samples_received += n
        if self._metrics:
            self._metrics.host_audio_samples.inc(n)
        now = self.clock.samples()
        if self._write_pos is None:
            pos = max(self._final, now - n)
        elif restart:  # anchored at arrival again, but never over input still waiting to be played
            pos = max(self._final, now - n, self._write_pos)
        else:
            pos = self._write_pos
        if pos < self._final:
            self.stats.late_shift_samples += self._final - pos
            pos = self._final
        excess = pos + n - (now + self.max_ahead)
        if excess > 0:  # running ahead of the clock: drop the oldest samples of this chunk
            drop = min(n, excess)
            self.stats.dropped_samples += drop
            if self._metrics:
                self._metrics.audio_dropped_samples.inc(drop)
            samples = samples[drop:]
            if source_pts is not None:
                source_pts += drop / AUDIO_SAMPLE_RATE
            n -= drop
            # earlier chunks that are still pending may also be ahead; they stay (they are older)
        if n:
            self._input.append(_Chunk(pos, np.asarray(samples, dtype=np.float32), source_pts))
        self._write_pos = pos + n
        self.input_live = True
        self.arrived.set()

    def inject(self, samples: np.ndarray) -> tuple[float, float]:
        """Mix speech in from the first free sample; -> (start, duration) in session seconds."""
        start = max(self._final, self._say_end, self.clock.samples())
        data = np.asarray(samples, dtype=np.float32)
        self._say.append(_Chunk(start, data, None))
        self._say_end = start + data.shape[0]
        self.stats.injected_samples += data.shape[0]
        return start / AUDIO_SAMPLE_RATE, data.shape[0] / AUDIO_SAMPLE_RATE

    @property
    def say_pending_s(self) -> float:
        return max(0, self._say_end - self._final) / AUDIO_SAMPLE_RATE

    # -- finalising ----------------------------------------------------------------------------

    def needed_for(self, stop_frame: int) -> int:
        """Timeline samples that must be final before the mel of video frames [.., stop_frame) exists."""
        return video_frame_ready_at(stop_frame - 1)

    def finalize_to(self, position: int) -> None:
        """Fix the timeline up to `position` and advance the log-mel over it."""
        start = self._final
        if position <= start:
            return
        block = np.zeros(position - start, dtype=np.float32)
        if self.input_live and (self._write_pos is None or self._write_pos < position):
            behind = position - max(self._write_pos or start, start)
            self.stats.underrun_samples += behind
            if self._metrics:
                self._metrics.audio_underrun_samples.inc(behind)
        self._take(self._input, block, start, position, mix=False, keep_segments=True)
        self._take(self._say, block, start, position, mix=True, keep_segments=False)
        np.clip(block, -1.0, 1.0, out=block)
        self._mel.push(block)
        self._store_history(start, block)
        self._final = position
        oldest = position - self._history.shape[0]
        while self._segments and self._segments[0].end <= oldest:
            self._segments.popleft()

    def _take(self, chunks: deque[_Chunk], block: np.ndarray, start: int, stop: int, *, mix: bool,
              keep_segments: bool) -> None:
        while chunks:
            chunk = chunks[0]
            if chunk.start >= stop:
                break
            lo, hi = max(chunk.start, start), min(chunk.end, stop)
            if hi > lo:
                part = chunk.data[lo - chunk.start:hi - chunk.start]
                if mix:
                    block[lo - start:hi - start] += part
                else:
                    block[lo - start:hi - start] = part
                if keep_segments and chunk.source_pts is not None:
                    pts = chunk.source_pts + (lo - chunk.start) / AUDIO_SAMPLE_RATE
                    self._segments.append(_Segment(lo, hi - lo, pts))
            if chunk.end <= stop:
                chunks.popleft()
            else:
                cut = stop - chunk.start
                chunks[0] = _Chunk(stop, chunk.data[cut:],
                                   None if chunk.source_pts is None else chunk.source_pts + cut / AUDIO_SAMPLE_RATE)
                break

    def _store_history(self, start: int, block: np.ndarray) -> None:
        size = self._history.shape[0]
        if block.shape[0] >= size:
            block, start = block[-size:], start + block.shape[0] - size
        idx = (start + np.arange(block.shape[0])) % size
        self._history[idx] = block

    # -- reading -------------------------------------------------------------------------------

    def mel_window(self, first_frame: int, stop_frame: int) -> np.ndarray:
        """(4 * (stop - first), 80) log-mel of video frames [first, stop); frames before 0 read as silence."""
        rows = (stop_frame - first_frame) * MEL_FRAMES_PER_VIDEO_FRAME
        out = np.full((rows, MEL_BINS), LOG_MEL_FLOOR, dtype=np.float32)
        lo = max(0, first_frame) * MEL_FRAMES_PER_VIDEO_FRAME
        hi = stop_frame * MEL_FRAMES_PER_VIDEO_FRAME
        if hi > lo:
            mel = self._mel.mel_frames(lo, hi)
            if mel is None:
                raise RuntimeError(f"mel frames [{lo}, {hi}) are not final yet (timeline final at {self._final})")
            out[rows - (hi - lo):] = mel
        return out

    def output_audio(self, frame_index: int) -> np.ndarray:
        """(640,) float32: the final host audio of video frame n (what is played with it)."""
        start = frame_index * SAMPLES_PER_FRAME
        stop = start + SAMPLES_PER_FRAME
        if stop > self._final or start < self._final - self._history.shape[0]:
            raise RuntimeError(f"audio of frame {frame_index} is not in the history")
        idx = np.arange(start, stop) % self._history.shape[0]
        return self._history[idx].copy()

    def source_pts_at(self, position: int) -> float | None:
        """Input-stream time of timeline sample `position`, or None where no input audio was placed."""
        for seg in reversed(self._segments):
            if seg.start <= position < seg.end:
                return seg.source_pts + (position - seg.start) / AUDIO_SAMPLE_RATE
            if seg.end <= position:
                return None
        return None


def audio_frame_to_mono(frame) -> np.ndarray:
    """av.AudioFrame (any format, layout) -> (samples,) float32 mono in [-1, 1]."""
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        arr = arr.T  # (channels, samples) -> (samples, channels)
    else:
        arr = arr.reshape(-1, channels)  # interleaved (1, samples * channels)
    if arr.dtype == np.int32:
        arr = arr.astype(np.float32) / 2147483648.0
    elif arr.dtype == np.uint8:
        arr = (arr.astype(np.float32) - 128.0) / 128.0
    return to_mono(arr)


class HostAudioInput:
    """Reads the client's audio track into the timeline: resample (exactly as training) and place."""

    def __init__(self, track, timeline: HostAudioTimeline, metrics: GatewayMetrics):
        self.track = track
        self.timeline = timeline
        self.metrics = metrics
        self.frames_received = 0
        self.ended = False

    async def run(self) -> None:
        from aiortc.mediastreams import MediaStreamError

        resampler: StreamingResampler | None = None
        base_pts = 0.0  # input time of the resampler's first output sample
        expected: float | None = None
        restart = False  # the next samples follow a gap: anchor them at their arrival
        try:
            while True:
                try:
                    frame = await self.track.recv()
                except MediaStreamError:
                    break
                started = time.perf_counter()
                self.frames_received += 1
                pts = float(frame.pts * frame.time_base) if frame.pts is not None else (expected or 0.0)
                mono = audio_frame_to_mono(frame)
                rate = int(frame.sample_rate)
                gap = expected is not None and abs(pts - expected) > MAX_PTS_JITTER_S
                if resampler is None or rate != resampler.sample_rate or gap:
                    if resampler is not None:  # a rate change or a gap in the input: close the old stream
                        tail = resampler.flush()
                        self.timeline.write(tail, base_pts + (resampler.output_samples - len(tail)) / AUDIO_SAMPLE_RATE)
                    resampler = StreamingResampler(rate)
                    base_pts = pts
                    restart = restart or gap
                out = resampler.push(mono)
                if out.shape[0]:
                    first = base_pts + (resampler.output_samples - out.shape[0]) / AUDIO_SAMPLE_RATE
                    self.timeline.write(out, first, restart=restart)
                    restart = False
                expected = pts + frame.samples / rate
                self.metrics.observe("decode", time.perf_counter() - started)
        finally:
            self.ended = True
            self.timeline.input_live = False
