"""f2f.features.mel: filterbank, framing/alignment, streaming == batch, input handling."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from f2f.features import mel as M
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

librosa = pytest.importorskip("librosa")

SR = AUDIO_SAMPLE_RATE


def sine(freq: float, seconds: float = 1.0, sr: int = SR, amp: float = 0.5, phase: float = 0.0):
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def peak_bin(audio: np.ndarray) -> int:
    feats = M.log_mel(audio)
    interior = feats[5:-5]  # away from the zero-padded edges
    return int(np.argmax(interior.mean(axis=0)))


def nearest_bin(freq: float) -> int:
    return int(np.argmin(np.abs(M.mel_center_frequencies() - freq)))


# --- filterbank ----------------------------------------------------------------------------


def test_filterbank_matches_librosa():
    ref = librosa.filters.mel(
        sr=SR, n_fft=MEL_N_FFT, n_mels=MEL_BINS, fmin=MEL_FMIN_HZ, fmax=MEL_FMAX_HZ
    )
    fb = M.mel_filterbank()
    assert fb.shape == ref.shape == (MEL_BINS, MEL_N_FFT // 2 + 1)
    np.testing.assert_allclose(fb, ref, rtol=0, atol=1e-6)
    assert M.mel_filterbank() is fb  # built once
    assert not fb.flags.writeable


def test_center_frequencies_match_librosa():
    ref = librosa.mel_frequencies(n_mels=MEL_BINS + 2, fmin=MEL_FMIN_HZ, fmax=MEL_FMAX_HZ)[1:-1]
    np.testing.assert_allclose(M.mel_center_frequencies(), ref, rtol=1e-9)
    np.testing.assert_allclose(M.mel_to_hz(M.hz_to_mel(ref)), ref, rtol=1e-12)


# --- tones, silence, shapes -------------------------------------------------------------------


def test_1khz_sine_peaks_in_nearest_bin():
    expected = nearest_bin(1000.0)
    lib_centres = librosa.mel_frequencies(n_mels=MEL_BINS + 2, fmin=MEL_FMIN_HZ, fmax=MEL_FMAX_HZ)
    assert expected == int(np.argmin(np.abs(lib_centres[1:-1] - 1000.0)))
    assert peak_bin(sine(1000.0)) == expected


@pytest.mark.parametrize("bin_index", [3, 12, 40, 61, 75])
def test_sine_at_bin_centre_peaks_there(bin_index):
    freq = float(M.mel_center_frequencies()[bin_index])
    assert peak_bin(sine(freq, seconds=0.5)) == bin_index


def test_silence_gives_floor():
    feats = M.log_mel(np.zeros(SR, dtype=np.float32))
    assert feats.dtype == np.float32
    assert np.all(feats == np.float32(M.LOG_MEL_FLOOR))
    assert M.LOG_MEL_FLOOR == pytest.approx(np.log(1e-6), abs=1e-6)


@pytest.mark.parametrize("n", [160, 161, 319, 639, 640, 641, 12345, SR, SR + 159])
def test_shape(n):
    feats = M.log_mel(np.ones(n, dtype=np.float32) * 0.1)
    assert feats.shape == (n // MEL_HOP_LENGTH, MEL_BINS)
    assert feats.dtype == np.float32


def test_four_mel_frames_per_video_frame():
    assert MEL_FRAMES_PER_VIDEO_FRAME == 4
    for video_frames in (1, 2, 25, 81):
        audio = np.zeros(video_frames * SAMPLES_PER_FRAME, dtype=np.float32)
        assert M.log_mel(audio).shape[0] == 4 * video_frames


def test_shorter_than_one_hop_gives_no_frames():
    assert M.log_mel(np.zeros(159, dtype=np.float32)).shape == (0, MEL_BINS)


@pytest.mark.parametrize("pos", [0, 1, 79, 80, 159, 160, 281, 640 * 3 + 320, 4799])
def test_alignment_impulse_touches_exactly_the_windows_containing_it(pos):
    """Mel frame m reads samples (160m - 120, 160m + 280): centred on 160m + 80."""
    audio = np.zeros(4800, dtype=np.float32)
    audio[pos] = 1.0
    feats = M.log_mel(audio)
    touched = set(np.flatnonzero((feats > M.LOG_MEL_FLOOR + 1e-3).any(axis=1)).tolist())
    expected = {m for m in range(feats.shape[0]) if 160 * m - 120 < pos < 160 * m + 280}
    assert touched == expected


def test_video_frame_owns_its_four_mel_frames():
    """A tone inside video frame n's samples dominates mel frames [4n, 4n + 4)."""
    n = 5
    audio = np.zeros(10 * SAMPLES_PER_FRAME, dtype=np.float32)
    seg = slice(n * SAMPLES_PER_FRAME, (n + 1) * SAMPLES_PER_FRAME)
    audio[seg] = sine(1000.0, seconds=SAMPLES_PER_FRAME / SR)
    energy = M.log_mel(audio).max(axis=1)
    strongest = set(np.argsort(energy)[-4:].tolist())
    assert strongest == set(range(4 * n, 4 * n + 4))
    assert M.video_frame_ready_at(n) == (4 * n + 3) * MEL_HOP_LENGTH + 280
    assert M.mel_frame_ready_at(4 * n + 3) == M.video_frame_ready_at(n)


# --- against librosa's STFT ---------------------------------------------------------------------


def _librosa_power(audio: np.ndarray) -> np.ndarray:
    """Same framing via librosa: 176 leading zeros put the 512-sample frame centre at 160m + 80."""
    n_frames = audio.shape[0] // MEL_HOP_LENGTH
    lead = MEL_N_FFT // 2 - M.MEL_FRAME_CENTER_OFFSET  # 176
    padded = np.concatenate(
        [np.zeros(lead, np.float32), audio, np.zeros(MEL_N_FFT, np.float32)]
    )
    spec = librosa.stft(
        padded,
        n_fft=MEL_N_FFT,
        hop_length=MEL_HOP_LENGTH,
        win_length=MEL_WIN_LENGTH,
        window="hann",
        center=False,
    )
    return (np.abs(spec) ** 2)[:, :n_frames].T


def test_power_spectrogram_matches_librosa_stft():
    rng = np.random.default_rng(7)
    audio = (0.3 * rng.standard_normal(SR + 97)).astype(np.float32)
    ours = M.power_spectrogram(audio)
    ref = _librosa_power(audio)
    assert ours.shape == ref.shape == (audio.shape[0] // MEL_HOP_LENGTH, MEL_N_FFT // 2 + 1)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5 * ref.max())


def test_log_mel_matches_librosa_pipeline():
    rng = np.random.default_rng(8)
    audio = (0.3 * rng.standard_normal(SR // 2)).astype(np.float32) + sine(440.0, 0.5)
    fb = librosa.filters.mel(
        sr=SR, n_fft=MEL_N_FFT, n_mels=MEL_BINS, fmin=MEL_FMIN_HZ, fmax=MEL_FMAX_HZ
    )
    ref = np.log(_librosa_power(audio) @ fb.T + 1e-6)
    np.testing.assert_allclose(M.log_mel(audio), ref, rtol=0, atol=1e-3)


# --- streaming ----------------------------------------------------------------------------------


def _random_chunks(rng: np.random.Generator, n: int) -> list[int]:
    sizes = []
    while sum(sizes) < n:
        kind = rng.integers(4)
        if kind == 0:
            sizes.append(int(rng.integers(0, 3)))  # empty and 1-2 sample chunks
        elif kind == 1:
            sizes.append(int(rng.integers(1, 200)))
        elif kind == 2:
            sizes.append(640)
        else:
            sizes.append(int(rng.integers(200, 5000)))
    return sizes


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_streaming_equals_batch(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2 * SR, 3 * SR))
    audio = (0.2 * rng.standard_normal(n)).astype(np.float32) + sine(300.0, n / SR)
    batch = M.log_mel(audio)
    stream = M.StreamingLogMel()
    pieces, pos = [], 0
    for size in _random_chunks(rng, n):
        pieces.append(stream.push(audio[pos : pos + size]))
        pos += size
        assert stream.buffered_samples <= MEL_WIN_LENGTH  # only the window overlap is held
        got = stream.samples_received
        assert stream.mel_frames_ready == (0 if got < 280 else (got - 280) // MEL_HOP_LENGTH + 1)
    pieces.append(stream.flush())
    out = np.concatenate(pieces)
    assert out.shape == batch.shape
    np.testing.assert_allclose(out, batch, rtol=0, atol=1e-5)


def test_streaming_single_push_and_int16_chunks():
    rng = np.random.default_rng(11)
    pcm = (rng.standard_normal(SR + 333) * 3000).astype(np.int16)
    batch = M.log_mel(pcm)
    whole = M.StreamingLogMel()
    out = np.concatenate([whole.push(pcm), whole.flush()])
    np.testing.assert_allclose(out, batch, rtol=0, atol=1e-5)
    chunked = M.StreamingLogMel()
    parts = [chunked.push(pcm[i : i + 321]) for i in range(0, pcm.shape[0], 321)]
    np.testing.assert_allclose(np.concatenate(parts + [chunked.flush()]), batch, atol=1e-5)


def test_streaming_frames_for_video_frame_and_history():
    rng = np.random.default_rng(5)
    audio = (0.2 * rng.standard_normal(SR)).astype(np.float32)
    batch = M.log_mel(audio)
    stream = M.StreamingLogMel(history_frames=40)
    n = 3
    ready = M.video_frame_ready_at(n)  # 640 * 3 + 760
    stream.push(audio[: ready - 1])
    assert stream.frames_for_video_frame(n) is None
    assert stream.video_frames_ready == n
    stream.push(audio[ready - 1 : ready])
    got = stream.frames_for_video_frame(n)
    assert got.shape == (MEL_FRAMES_PER_VIDEO_FRAME, MEL_BINS)
    np.testing.assert_allclose(got, batch[4 * n : 4 * n + 4], atol=1e-5)
    stream.push(audio[ready:])
    stream.flush()
    assert stream.mel_frames_ready == batch.shape[0]
    np.testing.assert_allclose(stream.mel_frames(60, 100), batch[60:100], atol=1e-5)
    with pytest.raises(ValueError, match="no longer kept"):
        stream.frames_for_video_frame(n)
    with pytest.raises(RuntimeError, match="flushed"):
        stream.push(audio[:10])
    stream.reset()
    assert stream.samples_received == 0 and stream.mel_frames_ready == 0
    np.testing.assert_allclose(
        np.concatenate([stream.push(audio), stream.flush()]), batch, atol=1e-5
    )


def test_streaming_short_stream():
    stream = M.StreamingLogMel()
    assert stream.push(np.zeros(200, np.float32)).shape == (0, MEL_BINS)
    tail = stream.flush()
    np.testing.assert_array_equal(tail, M.log_mel(np.zeros(200, np.float32)))
    assert stream.flush().shape == (0, MEL_BINS)


# --- dtypes, channels, sample rates ---------------------------------------------------------------


def test_int16_input_scaled():
    tone = sine(1000.0, amp=0.5)
    pcm = np.round(tone * 32767).astype(np.int16)
    assert peak_bin(pcm) == nearest_bin(1000.0)
    np.testing.assert_allclose(M.log_mel(pcm), M.log_mel(pcm / 32768.0), atol=1e-4)


def test_stereo_48k_through_to_mono_and_resample():
    sr = 48_000
    left = sine(1000.0, sr=sr, amp=0.6)
    right = sine(1000.0, sr=sr, amp=0.3, phase=0.5)
    stereo = np.stack([left, right], axis=1)  # (samples, channels)
    mono = M.to_mono(stereo)
    assert mono.shape == (sr,) and mono.dtype == np.float32
    audio = M.resample_to_16k(mono, sr)
    assert audio.shape == (SR,) and audio.dtype == np.float32
    assert peak_bin(audio) == nearest_bin(1000.0)
    pcm = np.round(stereo * 32767).astype(np.int16)
    np.testing.assert_allclose(M.prepare_audio(pcm, sr), audio, atol=1e-4)


@pytest.mark.parametrize("sr", [8_000, 22_050, 44_100, 48_000])
def test_resample_matches_scipy(sr):
    signal = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(sr)
    audio = (0.3 * rng.standard_normal(sr // 3 + 5)).astype(np.float32)
    g = np.gcd(SR, sr)
    ref = signal.resample_poly(audio.astype(np.float64), SR // g, sr // g)
    ours = M.resample_to_16k(audio, sr)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


def test_resample_identity_and_tone_position():
    tone = sine(1000.0)
    same = M.resample_to_16k(tone, SR)
    np.testing.assert_array_equal(same, tone)
    assert same is not tone
    down = M.resample_to_16k(sine(1000.0, sr=44_100), 44_100)
    assert down.shape == (SR,)
    assert peak_bin(down) == nearest_bin(1000.0)


def test_to_mono_passthrough_and_single_channel():
    x = sine(500.0, 0.1)
    np.testing.assert_array_equal(M.to_mono(x), x)
    np.testing.assert_array_equal(M.to_mono(x[:, None]), x)


# --- bad input ---------------------------------------------------------------------------------


def test_bad_input_raises_clear_errors():
    stereo = np.zeros((SR, 2), np.float32)
    with pytest.raises(ValueError, match="1-D mono.*to_mono"):
        M.log_mel(stereo)
    nan = sine(1000.0, 0.1)
    nan[17] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        M.log_mel(nan)
    with pytest.raises(ValueError, match="non-finite"):
        M.StreamingLogMel().push(nan)
    with pytest.raises(ValueError, match="empty"):
        M.log_mel(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="dtype"):
        M.log_mel(np.zeros(SR, np.int32))
    with pytest.raises(ValueError, match="1-D"):
        M.log_mel(np.float32(0.5))
    with pytest.raises(ValueError, match=r"\(channels, samples\)"):
        M.to_mono(np.zeros((2, SR), np.float32))
    with pytest.raises(ValueError, match="sample_rate"):
        M.resample_to_16k(np.zeros(10, np.float32), 0)
    with pytest.raises(ValueError, match="sample_rate"):
        M.resample_to_16k(np.zeros(10, np.float32), 44_100.5)
    with pytest.raises(ValueError, match="1-D"):
        M.resample_to_16k(stereo, 48_000)
    with pytest.raises(ValueError, match="history_frames"):
        M.StreamingLogMel(history_frames=-1)


# --- budget and dependencies ----------------------------------------------------------------


def test_speed_two_minutes_well_under_a_second():
    audio = (0.1 * np.random.default_rng(0).standard_normal(120 * SR)).astype(np.float32)
    M.log_mel(audio[:SR])  # warm the caches
    start = time.perf_counter()
    feats = M.log_mel(audio)
    elapsed = time.perf_counter() - start
    assert feats.shape == (12_000, MEL_BINS)
    assert elapsed < 1.0, f"log_mel took {elapsed:.2f}s for 2 min of audio"


def test_serving_import_needs_no_librosa_scipy_or_torch():
    code = (
        "import sys, f2f.features.mel as m; "
        "m.log_mel(m.resample_to_16k(m.to_mono([[0.1, 0.2]] * 4000), 48000)); "
        "bad = [k for k in ('librosa', 'scipy', 'torch') if k in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
