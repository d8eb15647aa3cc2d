"""Non-speech sounds of a talk show: a plucked jingle (sox), applause (numpy), laughter (espeak).

Everything takes a seeded numpy Generator and is repeatable: sox runs with -R (its own random
pluck excitation is then fixed) and all choices come from the generator.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np

from pipeline.synth.speech import EspeakSynthesizer, Utterance, Voice

# Semitone offsets from the key root of the triads on scale degrees I..vi (major key).
_DEGREE_TRIADS = {1: (0, 4, 7), 2: (2, 5, 9), 4: (5, 9, 12), 5: (7, 11, 14), 6: (9, 12, 16)}
_PROGRESSIONS = ((1, 5, 6, 4), (1, 4, 5, 1), (6, 4, 1, 5), (1, 6, 4, 5), (2, 5, 1, 1), (1, 4, 6, 5))
_PENTATONIC = (0, 2, 4, 7, 9, 12, 14, 16)
_SOX_RATE = 44_100  # sox's pluck only synthesises at 44.1-48 kHz; we resample inside the same call


def _hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def _fade(audio: np.ndarray, sample_rate: int, fade_in_s: float, fade_out_s: float) -> np.ndarray:
    """Raised-cosine fade in/out, in place; returns `audio` (samples,)."""
    n_in = min(int(fade_in_s * sample_rate), len(audio))
    n_out = min(int(fade_out_s * sample_rate), len(audio))
    if n_in:
        audio[:n_in] *= 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n_in, dtype=np.float32))
    if n_out:
        audio[-n_out:] *= 0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, n_out, dtype=np.float32))
    return audio


def _sox_pluck_chord(tones_hz: list[float], delays_s: list[float], volumes: list[float],
                     length_s: float, sample_rate: int) -> np.ndarray:
    """One sox call: plucked strings, one per channel, each delayed and weighted, mixed to mono."""
    sox = shutil.which("sox")
    if sox is None:
        raise RuntimeError("the sox CLI is missing; install sox (apt-get install sox)")
    command = [sox, "-R", "-V1", "-r", str(_SOX_RATE), "-n",
               "-r", str(sample_rate), "-c", "1", "-b", "32", "-e", "floating-point", "-t", "raw", "-",
               "synth", f"{length_s:.3f}"]
    for tone in tones_hz:
        command += ["pluck", f"{tone:.3f}"]
    command += ["delay"] + [f"{d:.3f}" for d in delays_s]
    command += ["remix", ",".join(f"{i + 1}v{v:.3f}" for i, v in enumerate(volumes))]
    command += ["rate", str(sample_rate)]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"sox failed ({result.returncode}): {result.stderr.decode(errors='replace')}")
    return np.frombuffer(result.stdout, dtype=np.float32).copy()  # (samples,)


def music(seconds: float, rng: np.random.Generator, sample_rate: int = 22_050) -> np.ndarray:
    """A plucked jingle of exactly `seconds`: a 4-chord progression with a pentatonic melody.

    Returns (round(seconds * sample_rate),) float32, peak 0.8, faded in and out.
    """
    n_total = int(round(seconds * sample_rate))
    out = np.zeros(n_total, np.float32)
    if n_total == 0:
        return out
    root = 48 + int(rng.integers(0, 8))  # C3..G3
    progression = _PROGRESSIONS[int(rng.integers(len(_PROGRESSIONS)))]
    n_chords = max(2, int(round(seconds / 1.2)))
    chord_s = seconds / n_chords
    notes_per_chord = int(rng.integers(2, 5))
    for c in range(n_chords):
        degree = progression[c % len(progression)]
        triad = [root + 12 + step for step in _DEGREE_TRIADS[degree]]
        tones = [_hz(root + _DEGREE_TRIADS[degree][0] - 12)] + [_hz(m) for m in triad]  # bass + triad
        delays = [0.0, 0.0, 0.02, 0.04]  # a slightly strummed chord
        volumes = [0.5, 0.25, 0.25, 0.25]
        for k in range(notes_per_chord):  # melody: pentatonic notes an octave above the chord
            tones.append(_hz(root + 24 + _PENTATONIC[int(rng.integers(len(_PENTATONIC)))]))
            delays.append(k * chord_s / notes_per_chord)
            volumes.append(0.35)
        chord = _sox_pluck_chord(tones, delays, volumes, chord_s + 0.6, sample_rate)
        start = int(round(c * chord_s * sample_rate))
        n = min(len(chord), n_total - start)
        out[start:start + n] += chord[:n]
    _fade(out, sample_rate, min(0.3, seconds / 4), min(1.0, seconds / 3))
    peak = float(np.abs(out).max())
    return out * np.float32(0.8 / peak) if peak > 0 else out


def applause(seconds: float, rng: np.random.Generator, sample_rate: int = 22_050) -> np.ndarray:
    """Crowd applause: many short band-passed noise claps, density rising then falling.

    Returns (round(seconds * sample_rate),) float32, peak 0.8.
    """
    n_total = int(round(seconds * sample_rate))
    out = np.zeros(n_total, np.float32)
    if n_total == 0:
        return out
    # A bank of clap sounds: white noise shaped in frequency (log-Gaussian band around 0.8-2.5 kHz)
    # and in time (1 ms attack, 4-10 ms exponential decay).
    n_bank, clap_len = 32, int(0.04 * sample_rate)
    noise = rng.standard_normal((n_bank, clap_len))  # (B, L)
    freqs = np.fft.rfftfreq(clap_len, 1.0 / sample_rate)  # (L//2+1,)
    centres = rng.uniform(800.0, 2500.0, n_bank)[:, None]  # (B, 1)
    band = np.exp(-0.5 * (np.log(np.maximum(freqs, 1.0)[None, :] / centres) / 0.5) ** 2)  # (B, L//2+1)
    claps = np.fft.irfft(np.fft.rfft(noise, axis=1) * band, n=clap_len, axis=1)  # (B, L)
    t = np.arange(clap_len) / sample_rate
    decay = rng.uniform(0.004, 0.010, n_bank)[:, None]
    claps *= np.minimum(t / 0.001, 1.0)[None, :] * np.exp(-t[None, :] / decay)
    claps /= np.abs(claps).max(axis=1, keepdims=True)

    # Clap times: density follows x^0.6 (1-x)^1.2 (peaks a third of the way in), via rejection.
    def density(x: np.ndarray) -> np.ndarray:
        shape = x ** 0.6 * (1.0 - x) ** 1.2
        return shape / (0.6 ** 0.6 * 1.2 ** 1.2 / 1.8 ** 1.8)  # peak 1

    peak_rate = rng.uniform(150.0, 300.0)  # claps per second at the peak (~40 people)
    n_candidates = int(peak_rate * seconds)
    x = rng.uniform(0.0, 1.0, n_candidates)
    keep = rng.uniform(0.0, 1.0, n_candidates) < density(x)
    starts = (x[keep] * max(n_total - clap_len, 1)).astype(np.int64)  # (N,)
    which = rng.integers(0, n_bank, len(starts))
    gains = rng.lognormal(0.0, 0.4, len(starts)).astype(np.float32)
    index = starts[:, None] + np.arange(clap_len)[None, :]  # (N, L)
    valid = index < n_total
    np.add.at(out, index[valid], (claps[which] * gains[:, None])[valid].astype(np.float32))
    _fade(out, sample_rate, 0.05, min(0.5, seconds / 3))
    peak = float(np.abs(out).max())
    return out * np.float32(0.8 / peak) if peak > 0 else out


LAUGH_TEXTS = ("ha ha ha", "ha ha", "ha ha ha ha", "hahaha", "heh heh heh", "ha ha, ha ha ha", "ha haha")


def laughter(synth: EspeakSynthesizer, voice: Voice, rng: np.random.Generator) -> Utterance:
    """A laughter burst in `voice`: "ha ha ha" said higher and faster, with a breathy tremolo.

    Returns an Utterance, so the laugh comes with phonemes (the mouth opens on each "ha").
    """
    text = LAUGH_TEXTS[int(rng.integers(len(LAUGH_TEXTS)))]
    laugh_voice = voice.with_changes(pitch=int(rng.integers(10, 25)), pitch_range=20,
                                     rate=int(rng.integers(30, 70)))
    said = synth.synthesize(text, laugh_voice)
    n = len(said.audio)
    t = np.arange(n, dtype=np.float32) / said.sample_rate
    rate_hz, depth = rng.uniform(5.0, 8.0), rng.uniform(0.25, 0.5)
    tremolo = 1.0 - depth * (0.5 + 0.5 * np.sin(2 * np.pi * rate_hz * t + rng.uniform(0, 2 * np.pi)))
    trail = np.linspace(1.0, 0.6, n, dtype=np.float32)  # laughs trail off
    audio = (said.audio * tremolo.astype(np.float32) * trail).astype(np.float32)
    return Utterance(text=text, audio=audio, sample_rate=said.sample_rate, phonemes=list(said.phonemes))
