"""Mouth shapes from phoneme timings: espeak-ng English mnemonics -> ARKit-named mouth targets.

Each phoneme holds a target (jawOpen, mouthPucker, mouthStretch, mouthClose) over its span; the held
signal is then smoothed with a Gaussian (coarticulation: neighbouring phonemes blend, and the lips
move before the sound because the kernel reaches ahead) and shifted a little earlier, since lips lead
the acoustic onset. Outside speech every track is 0 (mouth closed and relaxed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.synth.speech import Phoneme

TRACK_KEYS = ("jawOpen", "mouthPucker", "mouthStretch")  # what viseme_tracks returns by default
ALL_KEYS = TRACK_KEYS + ("mouthClose",)

SMOOTH_SIGMA_S = 0.02  # Gaussian sigma: ~47 ms full width at half maximum
ANTICIPATION_S = 0.02  # lips lead the sound by this much
BILABIAL_MIN_S = 0.07  # shortest lip closure we show for p / b / m
_GRID_HZ = 400.0  # held targets are rasterised at 2.5 ms, smoothed, then read at frame times


@dataclass(frozen=True)
class MouthTarget:
    jaw_open: float  # 0..1
    pucker: float  # 0..1, lip rounding
    stretch: float  # 0..1, lip spreading
    close: float = 0.0  # 1 = lips pressed together (bilabials)

    def as_row(self) -> tuple[float, float, float, float]:
        return (self.jaw_open, self.pucker, self.stretch, self.close)


REST = MouthTarget(0.0, 0.0, 0.0, 0.0)  # pauses and silence
NEUTRAL = MouthTarget(0.3, 0.1, 0.1)  # unknown symbols: a mid, unremarkable shape
_VOWEL_FALLBACK = MouthTarget(0.45, 0.1, 0.15)
_CONSONANT_FALLBACK = MouthTarget(0.2, 0.05, 0.15)

# espeak-ng English (ph_english) mnemonics. Diphthongs get one blended target: the smoothing cannot
# show the glide inside a ~150 ms vowel at 25 fps anyway.
TARGETS: dict[str, MouthTarget] = {
    # vowels
    "a": MouthTarget(0.70, 0.00, 0.30), "a#": MouthTarget(0.55, 0.00, 0.20),
    "aa": MouthTarget(0.75, 0.00, 0.20), "A:": MouthTarget(0.80, 0.05, 0.05),
    "A@": MouthTarget(0.70, 0.10, 0.00), "A": MouthTarget(0.75, 0.05, 0.05),
    "aI": MouthTarget(0.65, 0.00, 0.30), "aI@": MouthTarget(0.60, 0.00, 0.25),
    "aI3": MouthTarget(0.60, 0.10, 0.20), "aU": MouthTarget(0.65, 0.35, 0.00),
    "aU@": MouthTarget(0.60, 0.30, 0.00),
    "@": MouthTarget(0.35, 0.00, 0.10), "@-": MouthTarget(0.30, 0.00, 0.10),
    "@2": MouthTarget(0.30, 0.00, 0.10), "@5": MouthTarget(0.30, 0.10, 0.05),
    "@L": MouthTarget(0.30, 0.00, 0.10), "3": MouthTarget(0.35, 0.25, 0.00),
    "3:": MouthTarget(0.35, 0.30, 0.00),
    "e": MouthTarget(0.45, 0.00, 0.40), "E": MouthTarget(0.50, 0.00, 0.45),
    "e@": MouthTarget(0.50, 0.00, 0.30), "eI": MouthTarget(0.45, 0.00, 0.50),
    "i": MouthTarget(0.20, 0.00, 0.60), "i:": MouthTarget(0.15, 0.00, 0.80),
    "i@": MouthTarget(0.30, 0.00, 0.40), "i@3": MouthTarget(0.30, 0.05, 0.35),
    "I": MouthTarget(0.25, 0.00, 0.50), "I#": MouthTarget(0.25, 0.00, 0.40),
    "I2": MouthTarget(0.25, 0.00, 0.45),
    "0": MouthTarget(0.65, 0.35, 0.00), "O": MouthTarget(0.55, 0.55, 0.00),
    "O:": MouthTarget(0.55, 0.60, 0.00), "O@": MouthTarget(0.50, 0.50, 0.00),
    "o@": MouthTarget(0.50, 0.50, 0.00), "OI": MouthTarget(0.50, 0.50, 0.10),
    "o": MouthTarget(0.45, 0.60, 0.00), "oU": MouthTarget(0.45, 0.70, 0.00),
    "u:": MouthTarget(0.20, 0.90, 0.00), "u": MouthTarget(0.20, 0.80, 0.00),
    "U": MouthTarget(0.25, 0.60, 0.00), "U@": MouthTarget(0.30, 0.50, 0.00),
    "V": MouthTarget(0.55, 0.00, 0.10),
    # consonants
    "p": MouthTarget(0.0, 0.10, 0.0, 1.0), "b": MouthTarget(0.0, 0.10, 0.0, 1.0),
    "m": MouthTarget(0.0, 0.05, 0.0, 1.0),
    "f": MouthTarget(0.10, 0.00, 0.20), "v": MouthTarget(0.10, 0.00, 0.20),
    "T": MouthTarget(0.20, 0.00, 0.20), "D": MouthTarget(0.20, 0.00, 0.20),
    "t": MouthTarget(0.20, 0.00, 0.20), "d": MouthTarget(0.20, 0.00, 0.20),
    "n": MouthTarget(0.20, 0.00, 0.20), "l": MouthTarget(0.25, 0.00, 0.15),
    "s": MouthTarget(0.10, 0.00, 0.40), "z": MouthTarget(0.10, 0.00, 0.40),
    "S": MouthTarget(0.15, 0.60, 0.00), "Z": MouthTarget(0.15, 0.60, 0.00),
    "tS": MouthTarget(0.15, 0.60, 0.00), "dZ": MouthTarget(0.15, 0.60, 0.00),
    "k": MouthTarget(0.30, 0.00, 0.10), "g": MouthTarget(0.30, 0.00, 0.10),
    "N": MouthTarget(0.25, 0.00, 0.10), "x": MouthTarget(0.30, 0.00, 0.10),
    "h": MouthTarget(0.35, 0.05, 0.10), "?": MouthTarget(0.20, 0.00, 0.10),
    "r": MouthTarget(0.20, 0.40, 0.00), "w": MouthTarget(0.15, 0.90, 0.00),
    "j": MouthTarget(0.20, 0.00, 0.50),
}
_STRESS_MARKS = "'\",%=!"
_VOWEL_LETTERS = set("aAeEiIoOuUV@30")


def mouth_target(symbol: str) -> MouthTarget:
    """The target for one espeak mnemonic; never raises (unknowns fall back by first letter)."""
    if symbol.startswith("_") or symbol in ("", ";", "||", "|"):
        return REST
    bare = symbol.strip(_STRESS_MARKS)
    if not bare:
        return REST
    for candidate in (bare, bare.rstrip("#-/2345;:"), bare[:2], bare[:1]):
        if candidate in TARGETS:
            return TARGETS[candidate]
    if bare[0] in _VOWEL_LETTERS:
        return _VOWEL_FALLBACK
    if bare[0].isalpha():
        return _CONSONANT_FALLBACK
    return NEUTRAL


def viseme_tracks(phonemes: list[Phoneme], frame_times: np.ndarray,
                  keys: tuple[str, ...] = TRACK_KEYS) -> dict[str, np.ndarray]:
    """Smoothed mouth tracks at `frame_times` (F,) seconds; phoneme times are absolute seconds.

    Returns {key: (F,) float32 in [0, 1]} for `keys` (default jawOpen, mouthPucker, mouthStretch;
    "mouthClose" is available too).
    """
    frame_times = np.asarray(frame_times, dtype=np.float64)
    unknown = [k for k in keys if k not in ALL_KEYS]
    if unknown:
        raise KeyError(f"unknown mouth track(s) {unknown}; choose from {ALL_KEYS}")
    columns = [ALL_KEYS.index(k) for k in keys]
    if frame_times.size == 0 or not phonemes:
        return {k: np.zeros(frame_times.shape, np.float32) for k in keys}

    starts = np.array([p.start_s for p in phonemes], np.float64)  # (P,)
    ends = np.array([p.end_s for p in phonemes], np.float64)  # (P,)
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    table = np.array([mouth_target(phonemes[i].symbol).as_row() for i in order], np.float32)  # (P, 4)

    # A 2.5 ms grid covering the frames we need plus the kernel's reach.
    reach = 4 * SMOOTH_SIGMA_S + ANTICIPATION_S
    t0 = float(frame_times.min()) - reach
    n_grid = int(np.ceil((float(frame_times.max()) + reach - t0) * _GRID_HZ)) + 1
    grid = t0 + np.arange(n_grid) / _GRID_HZ  # (G,)

    # Held targets: the phoneme whose span contains each grid time, REST elsewhere.
    index = np.searchsorted(starts, grid, side="right") - 1  # (G,)
    inside = (index >= 0) & (grid < ends[np.clip(index, 0, None)])
    held = np.zeros((n_grid, len(ALL_KEYS)), np.float32)  # (G, 4)
    held[inside] = table[index[inside]]
    # Lips must meet for p/b/m even when espeak gives the closure only ~30 ms: hold bilabials for
    # at least BILABIAL_MIN_S (centred), painted over their neighbours, so smoothing cannot erase them.
    for i in np.flatnonzero(table[:, 3] > 0.5):
        centre = 0.5 * (starts[i] + ends[i])
        half_width = max(0.5 * (ends[i] - starts[i]), 0.5 * BILABIAL_MIN_S)
        lo, hi = np.searchsorted(grid, [centre - half_width, centre + half_width])
        held[lo:hi] = table[i]

    # Gaussian coarticulation smoothing along time, one column at a time.
    half = int(np.ceil(4 * SMOOTH_SIGMA_S * _GRID_HZ))
    taps = np.arange(-half, half + 1) / _GRID_HZ
    kernel = np.exp(-0.5 * (taps / SMOOTH_SIGMA_S) ** 2)
    kernel /= kernel.sum()

    # Anticipation: the value shown at time t is the smoothed target at t + ANTICIPATION_S.
    look = frame_times + ANTICIPATION_S
    tracks = {}
    for key, column in zip(keys, columns):
        smooth = np.convolve(held[:, column], kernel, mode="same")  # (G,)
        tracks[key] = np.clip(np.interp(look, grid, smooth), 0.0, 1.0).astype(np.float32)
    return tracks
