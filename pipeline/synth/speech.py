"""Text to speech with phoneme timings: espeak-ng through ctypes (libespeak-ng.so.1).

`espeak-ng --pho` needs mbrola voices that Debian does not ship, so the phoneme timings come from the
library itself: `espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None, 1)` (option 1 = phoneme events)
plus a synth callback that receives both the 22.05 kHz samples and the `espeakEVENT_PHONEME` events.

Determinism. The library keeps hidden state between calls (a function-static pitch-flutter phase in
wavegen.c, the Klatt noise generator, echo buffers), so the same text and voice synthesised twice in
one process come out a few samples different. No API resets it. We therefore run the library in a
small "zygote" process that initialises espeak-ng once and forks a fresh child per utterance: every
utterance starts from the same pristine library state, whatever was synthesised before.
The library is process-global, so the zygote is a module-level singleton behind one lock.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

ESPEAK_SAMPLE_RATE = 22_050
LIBRARY_NAME = "libespeak-ng.so.1"
INSTALL_HINT = "install espeak-ng / libespeak-ng1 (apt-get install espeak-ng libespeak-ng1)"

# espeak-ng API constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4

# Language codes we offer -> a name espeak_SetVoiceByName resolves ("en-gb" alone is not found in
# espeak-ng 1.51: British English is the voice file "gmw/en").
LANGUAGES = ("en-us", "en-gb", "en-gb-scotland", "en-029")
_ESPEAK_LANGUAGE_NAME = {"en-us": "en-us", "en-gb": "en", "en-gb-scotland": "en-gb-scotland",
                         "en-029": "en-029"}
# Variants (espeak-ng-data/voices/!v) we offer. espeak silently ignores an unknown variant, so we
# check names ourselves.
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5")

# Trimming: a sample counts as sound above this level (espeak's silence is not exactly zero).
_SILENCE_LEVEL = 0.003
_TRIM_MARGIN_S = 0.005


class EspeakUnavailable(RuntimeError):
    """libespeak-ng could not be loaded or initialised."""


@dataclass(frozen=True)
class Voice:
    name: str  # espeak language + variant, e.g. "en-us+m3"
    pitch: int  # 0..99 (espeak default 50)
    pitch_range: int  # 0..99 (espeak default 50)
    rate: int  # words per minute (espeak default 175)

    @property
    def language(self) -> str:
        return self.name.split("+", 1)[0]

    @property
    def variant(self) -> str | None:
        parts = self.name.split("+", 1)
        return parts[1] if len(parts) == 2 else None

    @property
    def is_female(self) -> bool:
        return (self.variant or "").startswith("f")

    def with_changes(self, pitch: int = 0, pitch_range: int = 0, rate: int = 0) -> Voice:
        """This voice with pitch / range / rate moved by the given amounts (clamped to espeak's range)."""
        return Voice(self.name, _clamp(self.pitch + pitch, 0, 99),
                     _clamp(self.pitch_range + pitch_range, 0, 99), _clamp(self.rate + rate, 80, 450))


@dataclass(frozen=True)
class Phoneme:
    symbol: str  # espeak-ng mnemonic, e.g. "oU", "3:", "_:" (pause)
    start_s: float
    end_s: float


@dataclass
class Utterance:
    text: str
    audio: np.ndarray  # (samples,) float32 in [-1, 1]
    sample_rate: int
    phonemes: list[Phoneme] = field(default_factory=list)  # seconds from the utterance start

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate


def _clamp(value: int, low: int, high: int) -> int:
    return int(min(max(value, low), high))


def espeak_voice_name(voice: Voice) -> str:
    """The name handed to espeak_SetVoiceByName; raises on names espeak would silently mis-resolve."""
    language, variant = voice.language, voice.variant
    if language not in _ESPEAK_LANGUAGE_NAME:
        raise ValueError(f"unknown espeak language {language!r}; expected one of {LANGUAGES}")
    if variant is not None and variant not in MALE_VARIANTS + FEMALE_VARIANTS:
        raise ValueError(f"unknown espeak variant {variant!r} in {voice.name!r}")
    name = _ESPEAK_LANGUAGE_NAME[language]
    return f"{name}+{variant}" if variant else name


def sample_voices(rng: np.random.Generator, count: int, avoid: Sequence[Voice] = ()) -> list[Voice]:
    """`count` clearly different voices: genders alternate, variants never repeat, pitches spaced.

    A speaker-embedding diarizer must later tell them apart, so besides distinct variants (formant
    sets) each voice of a gender gets its own base pitch, as far as possible from the others'.
    `avoid`: voices already in use (e.g. a fixed host voice); their variants are not reused and
    the new pitches keep away from theirs.
    """
    if count < 1:
        return []
    used = {v.variant for v in avoid}
    female_free = [v for v in FEMALE_VARIANTS if v not in used]
    male_free = [v for v in MALE_VARIANTS if v not in used]
    if count > len(female_free) + len(male_free):
        raise ValueError(f"at most {len(female_free) + len(male_free)} distinct voices are left")
    first_female = bool(rng.integers(2))
    genders = [(i % 2 == 0) == first_female for i in range(count)]  # True = female
    while sum(genders) > len(female_free):  # too many of one gender left: flip the last ones
        genders[len(genders) - 1 - genders[::-1].index(True)] = False
    while count - sum(genders) > len(male_free):
        genders[len(genders) - 1 - genders[::-1].index(False)] = True
    n_female = sum(genders)
    n_male = count - n_female
    female_variants = list(rng.permutation(female_free)[:n_female])
    male_variants = list(rng.permutation(male_free)[:n_male])
    # Pitch ranges measured with espeak-ng 1.51: male variants go ~78 -> ~135 Hz over pitch
    # 10 -> 80, female variants ~145 -> ~280 Hz over 25 -> 90; two voices of one gender thus sit
    # ~30-40 % apart in F0.
    female_pitches = list(rng.permutation(
        _spread_pitches(25, 90, n_female, [v.pitch for v in avoid if v.is_female])))
    male_pitches = list(rng.permutation(
        _spread_pitches(10, 80, n_male, [v.pitch for v in avoid if not v.is_female])))
    voices = []
    for female in genders:
        variant = female_variants.pop() if female else male_variants.pop()
        pitch = int(female_pitches.pop() if female else male_pitches.pop()) + int(rng.integers(-3, 4))
        language = LANGUAGES[int(rng.integers(len(LANGUAGES)))]
        voices.append(Voice(name=f"{language}+{variant}", pitch=_clamp(pitch, 0, 99),
                            pitch_range=int(rng.integers(35, 85)), rate=int(rng.integers(150, 196))))
    return voices


def _spread_pitches(low: int, high: int, count: int, taken: Sequence[int]) -> list[int]:
    """`count` pitches in [low, high]: bin centres, or, with `taken` pitches, each new one as far as
    possible from the taken and the already chosen ones."""
    if not taken:
        return [int(p) for p in np.round(low + (high - low) * (np.arange(count) + 0.5) / max(count, 1))]
    grid = np.arange(low, high + 1)  # (G,)
    chosen: list[int] = []
    for _ in range(count):
        others = np.array(list(taken) + chosen)  # (K,)
        distance = np.abs(grid[:, None] - others[None, :]).min(axis=1)  # (G,)
        chosen.append(int(grid[int(np.argmax(distance))]))
    return chosen


class EspeakSynthesizer:
    """Text + Voice -> Utterance (audio at 22.05 kHz and phoneme timings), deterministic.

    Instances are cheap and share one process-wide espeak zygote; calls are serialised by a lock.
    """

    def __init__(self) -> None:
        self.sample_rate = _shared_worker().sample_rate  # starts the zygote; raises if espeak is missing

    def synthesize(self, text: str, voice: Voice) -> Utterance:
        text = " ".join(text.split())
        if not text:
            return Utterance(text, np.zeros(0, np.float32), self.sample_rate, [])
        pcm, events = _shared_worker().request(text, espeak_voice_name(voice), voice)
        audio = pcm.astype(np.float32) / 32768.0  # (samples,)
        return _trimmed_utterance(text, audio, self.sample_rate, events)


def _trimmed_utterance(text: str, audio: np.ndarray, sample_rate: int,
                       events: list[tuple[str, int]]) -> Utterance:
    """Cut leading/trailing silence and turn phoneme events (symbol, sample) into spans.

    Leading and trailing pause phonemes are dropped; each phoneme ends where the next starts and the
    last one ends at the end of the (trimmed) audio.
    """
    loud = np.flatnonzero(np.abs(audio) > _SILENCE_LEVEL)
    if len(loud) == 0:
        return Utterance(text, np.zeros(0, np.float32), sample_rate, [])
    margin = int(_TRIM_MARGIN_S * sample_rate)
    first = max(int(loud[0]) - margin, 0)
    last = min(int(loud[-1]) + 1 + margin, len(audio))
    clip = np.ascontiguousarray(audio[first:last])
    n = len(clip)

    spans = [(symbol, min(max(sample - first, 0), n)) for symbol, sample in events]
    while spans and _is_pause(spans[0][0]):
        spans.pop(0)
    while spans and (_is_pause(spans[-1][0]) or spans[-1][1] >= n):
        spans.pop()
    phonemes = []
    for i, (symbol, start) in enumerate(spans):
        end = spans[i + 1][1] if i + 1 < len(spans) else n
        phonemes.append(Phoneme(symbol, start / sample_rate, end / sample_rate))
    if phonemes and phonemes[0].start_s > 0.0 and phonemes[0].start_s < 2 * _TRIM_MARGIN_S:
        # Sound starts a few ms before espeak reports the first phoneme: let it own that onset.
        phonemes[0] = Phoneme(phonemes[0].symbol, 0.0, phonemes[0].end_s)
    return Utterance(text, clip, sample_rate, phonemes)


def _is_pause(symbol: str) -> bool:
    return symbol.startswith("_") or symbol == ";"


# ---------------------------------------------------------------------------------------------
# Parent side: the zygote process and its wire protocol (length-prefixed frames on stdin/stdout).
# ---------------------------------------------------------------------------------------------

_WORKER_LOCK = threading.Lock()
_WORKER: _ZygoteClient | None = None


def _shared_worker() -> _ZygoteClient:
    global _WORKER
    with _WORKER_LOCK:
        # A forked child (e.g. a multiprocessing worker) must not share its parent's pipes.
        if _WORKER is None or _WORKER.owner_pid != os.getpid() or not _WORKER.alive():
            _WORKER = _ZygoteClient()
        return _WORKER


def _write_frame(stream: BinaryIO | int, payload: bytes) -> None:
    data = struct.pack("<I", len(payload)) + payload
    if isinstance(stream, int):
        view = memoryview(data)
        while view:
            view = view[os.write(stream, view):]
    else:
        stream.write(data)
        stream.flush()


def _read_exact(stream: BinaryIO | int, size: int) -> bytes:
    if not isinstance(stream, int):
        data = stream.read(size)
        if len(data) != size:
            raise EOFError("espeak worker closed its pipe")
        return data
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(stream, remaining)
        if not chunk:
            raise EOFError("espeak worker input closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_frame(stream: BinaryIO | int) -> bytes:
    (size,) = struct.unpack("<I", _read_exact(stream, 4))
    return _read_exact(stream, size)


class _ZygoteClient:
    """Owns the zygote process; one request at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.owner_pid = os.getpid()
        self._proc = subprocess.Popen(
            [sys.executable, "-u", os.path.abspath(__file__), "--espeak-zygote"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        hello = json.loads(_read_frame(self._proc.stdout))
        if "error" in hello:
            self.close()
            raise EspeakUnavailable(hello["error"])
        self.sample_rate = int(hello["sample_rate"])
        atexit.register(self.close)

    def alive(self) -> bool:
        return self._proc.poll() is None

    def request(self, text: str, espeak_name: str, voice: Voice) -> tuple[np.ndarray, list[tuple[str, int]]]:
        message = {"text": text, "voice": espeak_name, "pitch": voice.pitch,
                   "range": voice.pitch_range, "rate": voice.rate}
        with self._lock:
            _write_frame(self._proc.stdin, json.dumps(message).encode())
            header = json.loads(_read_frame(self._proc.stdout))
            pcm = _read_frame(self._proc.stdout)
        if "error" in header:
            raise RuntimeError(f"espeak-ng failed on {text!r} with {espeak_name}: {header['error']}")
        events = [(str(symbol), int(sample)) for symbol, sample in header["phonemes"]]
        return np.frombuffer(pcm, dtype="<i2"), events  # (samples,) int16

    def close(self) -> None:
        proc = self._proc
        if proc.poll() is None and os.getpid() == self.owner_pid:
            try:
                proc.stdin.close()  # the zygote exits on EOF
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()


# ---------------------------------------------------------------------------------------------
# Zygote side: runs as `python speech.py --espeak-zygote`. Only ctypes/os/json/struct here.
# ---------------------------------------------------------------------------------------------

class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):  # espeak_EVENT
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int),  # ms
                ("sample", ctypes.c_int),  # samples from the start of this synth call
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                  ctypes.POINTER(_Event))


class _EspeakLibrary:
    """The raw library in the zygote: initialise once, synthesise once per forked child."""

    def __init__(self) -> None:
        try:
            self.lib = ctypes.CDLL(LIBRARY_NAME)
        except OSError as err:
            raise EspeakUnavailable(f"cannot load {LIBRARY_NAME} ({err}); {INSTALL_HINT}") from err
        lib = self.lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None,
                                                 _INITIALIZE_PHONEME_EVENTS)
        if self.sample_rate <= 0:
            raise EspeakUnavailable(f"espeak_Initialize failed (espeak-ng-data missing?); {INSTALL_HINT}")
        self._pcm: list[bytes] = []
        self._phonemes: list[tuple[str, int]] = []
        self._callback = _SynthCallback(self._on_synth)  # keep a reference: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _on_synth(self, wav, n_samples, events) -> int:
        if n_samples > 0 and wav:
            self._pcm.append(ctypes.string_at(wav, 2 * n_samples))
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == _EVENT_PHONEME:
                symbol = bytes(event.id.string).split(b"\0", 1)[0].decode("ascii", "replace")
                self._phonemes.append((symbol, int(event.sample)))
            i += 1
        return 0  # 0 = continue

    def synthesize(self, request: dict) -> tuple[bytes, list[tuple[str, int]]]:
        lib = self.lib
        if lib.espeak_SetVoiceByName(request["voice"].encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {request['voice']!r}")
        lib.espeak_SetParameter(_PARAM_RATE, int(request["rate"]), 0)
        lib.espeak_SetParameter(_PARAM_VOLUME, 100, 0)
        lib.espeak_SetParameter(_PARAM_PITCH, int(request["pitch"]), 0)
        lib.espeak_SetParameter(_PARAM_RANGE, int(request["range"]), 0)
        text = request["text"].encode("utf-8")
        status = lib.espeak_Synth(text, len(text) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
        if status != 0:
            raise RuntimeError(f"espeak_Synth returned {status}")
        return b"".join(self._pcm), self._phonemes


def _zygote_main() -> None:
    """Initialise espeak once, then fork one child per request so each starts from the same state."""
    out_fd, in_fd = 1, 0
    try:
        library = _EspeakLibrary()
    except EspeakUnavailable as err:
        _write_frame(out_fd, json.dumps({"error": str(err)}).encode())
        return
    _write_frame(out_fd, json.dumps({"sample_rate": library.sample_rate}).encode())
    while True:
        try:
            request = json.loads(_read_frame(in_fd))
        except EOFError:
            return
        pid = os.fork()
        if pid == 0:  # child: synthesise from the pristine post-initialisation state, then vanish
            code = 0
            try:
                pcm, phonemes = library.synthesize(request)
                _write_frame(out_fd, json.dumps({"phonemes": phonemes}).encode())
                _write_frame(out_fd, pcm)
            except BaseException as err:  # report, never let the child return into the loop
                _write_frame(out_fd, json.dumps({"error": f"{type(err).__name__}: {err}"}).encode())
                _write_frame(out_fd, b"")
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if status != 0 and os.WIFSIGNALED(status):  # child crashed before answering
            _write_frame(out_fd, json.dumps({"error": f"espeak child died ({status})"}).encode())
            _write_frame(out_fd, b"")


if __name__ == "__main__" and sys.argv[1:] == ["--espeak-zygote"]:
    _zygote_main()
