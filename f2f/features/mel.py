"""The one log-mel featurizer of f2f, shared bit-for-bit by training and the streaming server.

numpy only: no torch, no librosa, no scipy on this path (librosa is used by the tests only, to check
the filterbank and the spectrogram; `resample_to_16k` is a self-contained numpy polyphase resampler
that reproduces `scipy.signal.resample_poly` with its default Kaiser window).

Features
--------
`log_mel(audio)` maps 16 kHz mono audio to a (T, 80) float32 array, T = len(audio) // 160:

- power spectrum |rfft|^2 (no normalisation, like librosa's default) of a 400-sample periodic Hann
  window (25 ms), zero-padded to n_fft = 512, hop 160 (10 ms);
- an 80-bin Slaney mel filterbank (Slaney mel scale, Slaney area normalisation; identical to
  `librosa.filters.mel(sr=16000, n_fft=512, n_mels=80, fmin=20, fmax=8000)`), 20 Hz .. 8 kHz;
- natural log with an additive floor: `log(mel_power + 1e-6)`. Digital silence gives exactly
  `LOG_MEL_FLOOR = log(1e-6) ~= -13.8155`. Audio is expected in [-1, 1] (int16 PCM is scaled by
  1/32768), so a full-scale sine peaks around +9.

Alignment (the contract every consumer relies on)
-------------------------------------------------
Mel frame m is centred on sample m*160 + 80, i.e. in the middle of its own 10 ms hop
[160m, 160m + 160). Its Hann window spans samples [160m - 120, 160m + 280). Hence:

- T = len(audio) // 160 frames: a frame exists exactly when its whole hop is inside the signal
  (a trailing partial hop produces no frame);
- video frame n (samples [640n, 640n + 640)) owns mel frames [4n, 4n + 4) exactly, centred 5, 15,
  25 and 35 ms into the video frame;
- padding is **zeros** on both edges: the 120 samples before the start of the signal and the (at
  most 120) samples after its end read as silence. Zero padding is what a live stream sees (nothing
  before the first sample; the tail is zero-filled when the stream is flushed), so batch and
  streaming agree exactly.
- A streaming consumer can compute mel frame m once 160m + 280 samples have arrived
  (`mel_frame_ready_at`), i.e. MEL_LOOKAHEAD_SAMPLES = 120 samples (7.5 ms) past the end of its hop;
  video frame n is complete once 640n + 760 samples have arrived (`video_frame_ready_at`).

Streaming
---------
`StreamingLogMel` takes chunks of any length and returns each mel frame as soon as its window is
complete; `flush()` zero-pads the tail. Concatenating everything `push` and `flush` returned equals
`log_mel` of the whole signal (same arithmetic per frame; differences are float64 BLAS rounding,
far below 1e-5). It holds fewer than 440 samples of audio plus a bounded history of mel frames.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from f2f.timebase import (
    AUDIO_SAMPLE_RATE,
    MEL_BINS,
    MEL_FMAX_HZ,
    MEL_FMIN_HZ,
    MEL_FRAMES_PER_VIDEO_FRAME,
    MEL_HOP_LENGTH,
    MEL_N_FFT,
    MEL_WIN_LENGTH,
    SAMPLES_PER_FRAME,
)

__all__ = [
    "LOG_MEL_EPS",
    "LOG_MEL_FLOOR",
    "MEL_FRAME_CENTER_OFFSET",
    "MEL_WINDOW_START_OFFSET",
    "MEL_LOOKAHEAD_SAMPLES",
    "StreamingLogMel",
    "hann_window",
    "hz_to_mel",
    "log_mel",
    "mel_center_frequencies",
    "mel_filterbank",
    "mel_frame_ready_at",
    "mel_to_hz",
    "power_spectrogram",
    "prepare_audio",
    "resample_to_16k",
    "to_mono",
    "video_frame_ready_at",
]

LOG_MEL_EPS = 1e-6
"""Added to the mel power before the natural log."""
LOG_MEL_FLOOR = float(np.float32(math.log(LOG_MEL_EPS)))
"""log_mel of digital silence (float32 value of log(1e-6))."""

MEL_FRAME_CENTER_OFFSET = MEL_HOP_LENGTH // 2
"""Mel frame m is centred on sample m * MEL_HOP_LENGTH + MEL_FRAME_CENTER_OFFSET (= 160m + 80)."""
MEL_WINDOW_START_OFFSET = MEL_FRAME_CENTER_OFFSET - MEL_WIN_LENGTH // 2
"""Mel frame m's window starts at sample 160m + MEL_WINDOW_START_OFFSET (= 160m - 120)."""
MEL_LOOKAHEAD_SAMPLES = MEL_WINDOW_START_OFFSET + MEL_WIN_LENGTH - MEL_HOP_LENGTH
"""Samples needed past the end of a hop (or a video frame) before its last mel frame exists: 120."""

_PAD_LEFT = -MEL_WINDOW_START_OFFSET  # 120 zeros before the signal
_N_FREQS = MEL_N_FFT // 2 + 1  # 257
_BLOCK_FRAMES = 2048  # frames per FFT block: bounds the temporaries, keeps them in cache
_MAX_CHANNELS = 16

assert MEL_WIN_LENGTH <= MEL_N_FFT and _PAD_LEFT >= 0 and MEL_LOOKAHEAD_SAMPLES >= 0


# --------------------------------------------------------------------------------------------
# Mel scale and filterbank (Slaney, as librosa's defaults: htk=False, norm="slaney")
# --------------------------------------------------------------------------------------------

_F_SP = 200.0 / 3.0  # Hz per mel in the linear part
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above (librosa `htk=False`)."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_part = hz >= _MIN_LOG_HZ
    safe = np.where(log_part, hz, _MIN_LOG_HZ)
    return np.where(log_part, _MIN_LOG_MEL + np.log(safe / _MIN_LOG_HZ) / _LOGSTEP, mel)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of `hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * _F_SP
    log_part = mel >= _MIN_LOG_MEL
    return np.where(log_part, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), hz)


@lru_cache(maxsize=1)
def _mel_edges_hz() -> np.ndarray:
    """MEL_BINS + 2 band edges in Hz, equally spaced on the mel scale from fmin to fmax."""
    mels = np.linspace(hz_to_mel(MEL_FMIN_HZ), hz_to_mel(MEL_FMAX_HZ), MEL_BINS + 2)
    edges = mel_to_hz(mels)
    edges.setflags(write=False)
    return edges


def mel_center_frequencies() -> np.ndarray:
    """(80,) centre frequency in Hz of each mel bin (the apex of its triangle). Read-only."""
    return _mel_edges_hz()[1:-1]


@lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """(80, 257) float64 Slaney-normalised triangular filterbank. Built once, cached, read-only.

    Equals `librosa.filters.mel(sr=16000, n_fft=512, n_mels=80, fmin=20, fmax=8000)` (which is
    float32) to float32 precision.
    """
    fft_freqs = np.arange(_N_FREQS, dtype=np.float64) * (AUDIO_SAMPLE_RATE / MEL_N_FFT)
    edges = _mel_edges_hz()
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]  # (82, 257)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # Slaney: each triangle has unit area/Hz
    weights.setflags(write=False)
    return weights


@lru_cache(maxsize=1)
def _filterbank_t() -> np.ndarray:
    fb = np.ascontiguousarray(mel_filterbank().T)  # (257, 80) for frames @ fb
    fb.setflags(write=False)
    return fb


@lru_cache(maxsize=1)
def hann_window() -> np.ndarray:
    """(400,) float64 periodic Hann window (scipy/librosa `get_window('hann', 400)`). Read-only."""
    n = np.arange(MEL_WIN_LENGTH, dtype=np.float64)
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / MEL_WIN_LENGTH)
    w.setflags(write=False)
    return w


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


def _to_float32(audio: np.ndarray, name: str) -> np.ndarray:
    """dtype policy: floating -> float32; int16 PCM -> float32 / 32768; anything else fails."""
    if audio.dtype == np.int16:
        return audio.astype(np.float32) * np.float32(1.0 / 32768.0)
    if np.issubdtype(audio.dtype, np.floating):
        return audio.astype(np.float32, copy=False)
    raise ValueError(
        f"{name}: unsupported dtype {audio.dtype}; pass floating-point samples in [-1, 1] "
        "or int16 PCM"
    )


def _check_finite(x: np.ndarray, name: str) -> None:
    if x.size and not np.isfinite(x).all():
        bad = int(np.count_nonzero(~np.isfinite(x)))
        raise ValueError(f"{name} contains {bad} non-finite sample(s) (NaN or Inf)")


def _validate_mono(audio: np.ndarray, name: str, *, allow_empty: bool) -> np.ndarray:
    """-> 1-D float32 finite samples, or ValueError saying what is wrong."""
    a = np.asarray(audio)
    if a.ndim != 1:
        hint = "; use to_mono() for (samples, channels) arrays" if a.ndim == 2 else ""
        raise ValueError(f"{name} must be 1-D mono samples, got shape {a.shape}{hint}")
    if not allow_empty and a.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 samples)")
    x = _to_float32(a, name)
    _check_finite(x, name)
    return x


def _check_sample_rate(sample_rate: int | float | Fraction) -> int:
    try:
        rate = Fraction(sample_rate)
    except (TypeError, ValueError, OverflowError):
        rate = None
    if rate is None or rate.denominator != 1 or rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
    return int(rate)


def to_mono(audio: np.ndarray) -> np.ndarray:
    """(samples, channels) or (samples,) audio -> (samples,) float32, the mean of the channels.

    int16 PCM is scaled to [-1, 1] first. A 2-D array must be laid out (samples, channels), the
    layout of soundfile / wave readers; an array that looks like (channels, samples) is refused
    rather than silently averaged the wrong way.
    """
    a = np.asarray(audio)
    if a.ndim == 1:
        return _validate_mono(a, "audio", allow_empty=True)
    if a.ndim != 2:
        raise ValueError(f"audio must be (samples,) or (samples, channels), got shape {a.shape}")
    samples, channels = a.shape
    if channels == 0:
        raise ValueError(f"audio has 0 channels (shape {a.shape})")
    if channels > _MAX_CHANNELS:
        if samples <= _MAX_CHANNELS:
            raise ValueError(
                f"audio shape {a.shape} looks like (channels, samples); pass audio.T "
                "so that it is (samples, channels)"
            )
        raise ValueError(
            f"audio has {channels} channels (shape {a.shape}); at most {_MAX_CHANNELS}"
        )
    x = _to_float32(a, "audio")
    _check_finite(x, "audio")
    if channels == 1:
        return np.ascontiguousarray(x[:, 0])
    return x.mean(axis=1, dtype=np.float64).astype(np.float32)


@lru_cache(maxsize=16)
def _resample_phases(up: int, down: int) -> tuple[np.ndarray, int]:
    """Polyphase Kaiser-windowed sinc low-pass, as `scipy.signal.resample_poly` designs it.

    Returns (phases, half_len): phases[p, q] = h[p + (L - 1 - q) * up] (time-reversed taps per
    phase, float32) for the (2 * half_len + 1)-tap filter h with DC gain `up`.
    """
    max_rate = max(up, down)
    cutoff = 1.0 / max_rate  # relative to the Nyquist rate of the upsampled signal
    half_len = 10 * max_rate
    n = np.arange(-half_len, half_len + 1, dtype=np.float64)
    h = cutoff * np.sinc(cutoff * n) * np.kaiser(2 * half_len + 1, 5.0)
    h *= up / h.sum()
    taps = -(-h.shape[0] // up)
    padded = np.zeros(taps * up, dtype=np.float64)
    padded[: h.shape[0]] = h
    phases = padded.reshape(taps, up).T[:, ::-1].astype(np.float32)
    phases = np.ascontiguousarray(phases)
    phases.setflags(write=False)
    return phases, half_len


def _resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """Upsample by `up`, low-pass, downsample by `down`, zero padding outside the signal.

    y[m] = sum_i x[i] * h[m * down + half_len - i * up]; len(y) = ceil(len(x) * up / down).
    """
    phases, half_len = _resample_phases(up, down)
    taps = phases.shape[1]
    n_in = x.shape[0]
    n_out = -(-n_in * up // down)
    y = np.empty(n_out, dtype=np.float32)
    if n_out == 0:
        return y
    pad_left = taps - 1
    last_i0 = ((n_out - 1) * down + half_len) // up
    xp = np.zeros(pad_left + max(n_in, last_i0 + 1), dtype=np.float32)
    xp[pad_left : pad_left + n_in] = x
    windows = sliding_window_view(xp, taps)  # windows[s] = xp[s : s + taps]
    block = max(1, 16384 // max(1, taps // 64))
    for r in range(min(up, n_out)):
        # Outputs m = r + k * up share one phase; their newest input sample is i0 = s0 + k * down.
        t0 = r * down + half_len
        phase, s0 = t0 % up, t0 // up
        count = (n_out - 1 - r) // up + 1
        rows = windows[s0 : s0 + (count - 1) * down + 1 : down]
        out = y[r::up]
        kernel = phases[phase]
        for b in range(0, count, block):
            out[b : b + block] = np.ascontiguousarray(rows[b : b + block]) @ kernel
    return y


def resample_to_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """(samples,) mono audio at `sample_rate` Hz -> float32 at 16 kHz (AUDIO_SAMPLE_RATE).

    Rational polyphase resampling in plain numpy, matching `scipy.signal.resample_poly(x, up, down)`
    (Kaiser beta 5, 10 zero crossings per side, zero padding at the edges); the output has
    ceil(len * 16000 / sample_rate) samples. int16 input is scaled to [-1, 1]. Call `to_mono` first
    for multichannel audio.
    """
    rate = _check_sample_rate(sample_rate)
    x = _validate_mono(audio, "audio", allow_empty=True)
    if rate == AUDIO_SAMPLE_RATE:
        return x.copy()
    g = math.gcd(AUDIO_SAMPLE_RATE, rate)
    return _resample_poly(x, AUDIO_SAMPLE_RATE // g, rate // g)


def prepare_audio(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Any (samples,) / (samples, channels) float or int16 audio -> 16 kHz mono float32."""
    return resample_to_16k(to_mono(audio), sample_rate)


# --------------------------------------------------------------------------------------------
# Spectra
# --------------------------------------------------------------------------------------------


def _frame_windows(padded: np.ndarray, n_frames: int) -> np.ndarray:
    """(n_frames, 400) strided view: row m = padded[160m : 160m + 400] (no copy)."""
    return sliding_window_view(padded, MEL_WIN_LENGTH)[:: MEL_HOP_LENGTH][:n_frames]


def _power_block(frames: np.ndarray) -> np.ndarray:
    spec = np.fft.rfft(frames * hann_window(), n=MEL_N_FFT, axis=-1)
    return spec.real * spec.real + spec.imag * spec.imag


def _log_mel_frames(padded: np.ndarray, n_frames: int, out: np.ndarray) -> None:
    """Write log-mel of the first n_frames windows of `padded` (`_frame_windows`) into `out`."""
    frames = _frame_windows(padded, n_frames)
    fb_t = _filterbank_t()
    for b in range(0, n_frames, _BLOCK_FRAMES):
        mel = _power_block(frames[b : b + _BLOCK_FRAMES]) @ fb_t
        mel += LOG_MEL_EPS
        out[b : b + _BLOCK_FRAMES] = np.log(mel)


def _pad_for_frames(x: np.ndarray, n_frames: int) -> np.ndarray:
    """Zero-pad so that frame m of `x` is padded[160m : 160m + 400]."""
    need = (n_frames - 1) * MEL_HOP_LENGTH + MEL_WIN_LENGTH if n_frames else 0
    padded = np.zeros(max(need, _PAD_LEFT), dtype=np.float32)
    keep = min(x.shape[0], padded.shape[0] - _PAD_LEFT)
    padded[_PAD_LEFT : _PAD_LEFT + keep] = x[:keep]
    return padded


def power_spectrogram(audio: np.ndarray) -> np.ndarray:
    """(T, 257) float64 |rfft|^2 frames with `log_mel`'s framing, T = len(audio) // 160.

    For inspection and tests; `log_mel` does not materialise it.
    """
    x = _validate_mono(audio, "audio", allow_empty=False)
    n_frames = x.shape[0] // MEL_HOP_LENGTH
    if n_frames == 0:
        return np.zeros((0, _N_FREQS), dtype=np.float64)
    return _power_block(_frame_windows(_pad_for_frames(x, n_frames), n_frames))


def log_mel(audio: np.ndarray) -> np.ndarray:
    """(samples,) 16 kHz mono audio -> (len(audio) // 160, 80) float32 log(mel power + 1e-6).

    `audio`: 1-D float (expected in [-1, 1]) or int16 PCM (scaled by 1/32768), finite, non-empty.
    Mel frame m is centred on sample 160m + 80; video frame n owns rows [4n, 4n + 4). The signal
    is zero-padded at both edges (see the module docstring). Raises ValueError on bad input.
    """
    x = _validate_mono(audio, "audio", allow_empty=False)
    n_frames = x.shape[0] // MEL_HOP_LENGTH
    out = np.empty((n_frames, MEL_BINS), dtype=np.float32)
    if n_frames:
        _log_mel_frames(_pad_for_frames(x, n_frames), n_frames, out)
    return out


def mel_frame_ready_at(mel_index: int) -> int:
    """Samples that must have arrived before mel frame `mel_index` can be computed: 160m + 280."""
    return mel_index * MEL_HOP_LENGTH + MEL_HOP_LENGTH + MEL_LOOKAHEAD_SAMPLES


def video_frame_ready_at(video_index: int) -> int:
    """Samples that must have arrived before all 4 mel frames of video frame n exist: 640n + 760."""
    return (video_index + 1) * SAMPLES_PER_FRAME + MEL_LOOKAHEAD_SAMPLES


# --------------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------------


class StreamingLogMel:
    """Incremental `log_mel` over a live 16 kHz mono stream.

    `push(chunk)` accepts any number of samples (empty chunks too) and returns the mel frames that
    became complete, shape (k, 80); `flush()` ends the stream, zero-pads the tail and returns the
    remaining frames. The concatenation of all returned frames equals `log_mel(whole_signal)`.

    Only the samples still needed by future windows are held (< 440). The last `history_frames`
    mel frames are also kept for random access through `mel_frames(start, stop)` and
    `frames_for_video_frame(n)`; the default 400 frames is 4 s.
    """

    def __init__(self, history_frames: int = 400) -> None:
        history_frames = int(history_frames)
        if history_frames < 0:
            raise ValueError(f"history_frames must be >= 0, got {history_frames}")
        self.history_frames = history_frames
        self._ring = np.empty((history_frames, MEL_BINS), dtype=np.float32)
        self.reset()

    def reset(self) -> None:
        """Forget everything and start a new stream at sample 0."""
        self._buf = np.zeros(_PAD_LEFT, dtype=np.float32)  # samples from _buf_start onwards
        self._buf_start = -_PAD_LEFT  # absolute index of _buf[0] (negative = left zero padding)
        self._samples = 0
        self._next = 0  # next mel frame to compute
        self._flushed = False

    # -- state ---------------------------------------------------------------------------------

    @property
    def samples_received(self) -> int:
        """Samples pushed since the start (or the last reset)."""
        return self._samples

    @property
    def mel_frames_ready(self) -> int:
        """Mel frames computed so far (frames [0, mel_frames_ready) have been returned)."""
        return self._next

    @property
    def video_frames_ready(self) -> int:
        """Video frames whose 4 mel frames all exist."""
        return self._next // MEL_FRAMES_PER_VIDEO_FRAME

    @property
    def buffered_samples(self) -> int:
        """Audio samples currently held (including the initial zero padding)."""
        return int(self._buf.shape[0])

    @property
    def flushed(self) -> bool:
        return self._flushed

    # -- input ---------------------------------------------------------------------------------

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """Append 16 kHz mono samples (float or int16, 1-D); return the newly completed frames."""
        if self._flushed:
            raise RuntimeError("StreamingLogMel: stream already flushed; call reset() first")
        x = _validate_mono(chunk, "chunk", allow_empty=True)
        if x.shape[0]:
            self._buf = np.concatenate((self._buf, x))
            self._samples += x.shape[0]
        # Frame m is ready once 160m + 280 samples are in, i.e. 160m <= ready_through.
        ready_through = self._samples - MEL_LOOKAHEAD_SAMPLES - MEL_HOP_LENGTH
        upto = ready_through // MEL_HOP_LENGTH + 1 if ready_through >= 0 else 0
        return self._emit(upto)

    def flush(self) -> np.ndarray:
        """End of stream: zero-pad the tail and return the last frames (up to samples // 160)."""
        if self._flushed:
            return np.empty((0, MEL_BINS), dtype=np.float32)
        self._flushed = True
        total = self._samples // MEL_HOP_LENGTH
        if total > self._next:
            need = (total - 1) * MEL_HOP_LENGTH + MEL_WINDOW_START_OFFSET + MEL_WIN_LENGTH
            missing = need - (self._buf_start + self._buf.shape[0])
            if missing > 0:
                self._buf = np.concatenate((self._buf, np.zeros(missing, dtype=np.float32)))
        return self._emit(total)

    def _emit(self, upto: int) -> np.ndarray:
        count = upto - self._next
        if count <= 0:
            return np.empty((0, MEL_BINS), dtype=np.float32)
        start = self._next * MEL_HOP_LENGTH + MEL_WINDOW_START_OFFSET - self._buf_start
        out = np.empty((count, MEL_BINS), dtype=np.float32)
        _log_mel_frames(self._buf[start:], count, out)
        self._remember(self._next, out)
        self._next = upto
        # Drop the samples no future window reads (copy, so a big chunk is not kept alive).
        first_needed = self._next * MEL_HOP_LENGTH + MEL_WINDOW_START_OFFSET
        drop = first_needed - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:].copy()
            self._buf_start = first_needed
        return out

    # -- history -------------------------------------------------------------------------------

    def _remember(self, first: int, frames: np.ndarray) -> None:
        cap = self.history_frames
        if cap == 0:
            return
        if frames.shape[0] > cap:
            first += frames.shape[0] - cap
            frames = frames[-cap:]
        self._ring[np.arange(first, first + frames.shape[0]) % cap] = frames

    def mel_frames(self, start: int, stop: int) -> np.ndarray | None:
        """Copy of mel frames [start, stop), or None if some of them are not computed yet.

        Raises ValueError for a bad range or for frames older than the kept history.
        """
        if start < 0 or stop < start:
            raise ValueError(f"bad mel frame range [{start}, {stop})")
        if stop > self._next:
            return None
        oldest = max(0, self._next - self.history_frames)
        if start < oldest:
            raise ValueError(
                f"mel frames [{start}, {stop}) are no longer kept: history holds [{oldest}, "
                f"{self._next}) (history_frames={self.history_frames})"
            )
        if stop == start:
            return np.empty((0, MEL_BINS), dtype=np.float32)
        return self._ring[np.arange(start, stop) % self.history_frames]

    def frames_for_video_frame(self, n: int) -> np.ndarray | None:
        """(4, 80) mel frames of video frame n, or None until 640n + 760 samples have arrived."""
        if n < 0:
            raise ValueError(f"video frame index must be >= 0, got {n}")
        m = n * MEL_FRAMES_PER_VIDEO_FRAME
        return self.mel_frames(m, m + MEL_FRAMES_PER_VIDEO_FRAME)
