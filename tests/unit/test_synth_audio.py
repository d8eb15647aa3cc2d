"""pipeline.synth audio half: espeak-ng speech + phonemes, visemes, jingle/applause/laughter, the
talk-show script and its mix. Real espeak-ng and sox throughout (no fakes)."""

from __future__ import annotations

import time
from itertools import combinations

import numpy as np
import pytest

from pipeline.synth import speech as S
from pipeline.synth.script import AudioScript, CastMember, build_audio_script
from pipeline.synth.sounds import applause, laughter, music
from pipeline.synth.speech import EspeakSynthesizer, Phoneme, Voice, sample_voices
from pipeline.synth.visemes import TRACK_KEYS, mouth_target, viseme_tracks

SR = 22_050


@pytest.fixture(scope="module")
def synth() -> EspeakSynthesizer:
    return EspeakSynthesizer()


def f0_median(audio: np.ndarray, sr: int = SR) -> float:
    """Median F0 (Hz) of the loud frames, by autocorrelation (60-400 Hz)."""
    frame, hop, lo, hi = int(0.04 * sr), int(0.01 * sr), int(sr / 400), int(sr / 60)
    f0 = []
    for i in range(0, len(audio) - frame, hop):
        w = audio[i:i + frame] - audio[i:i + frame].mean()
        if np.sqrt(np.mean(w ** 2)) < 0.05:
            continue
        ac = np.correlate(w, w, "full")[frame - 1:]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.5 * ac[0]:
            f0.append(sr / lag)
    return float(np.median(f0))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


# --------------------------------------------------------------------------------- speech

def test_hello_world_has_increasing_phoneme_events(synth):
    u = synth.synthesize("hello world", Voice("en-us+m3", 50, 50, 175))
    assert u.sample_rate == SR and u.audio.dtype == np.float32 and u.audio.ndim == 1
    assert 0.4 < u.duration_s < 1.5 and np.abs(u.audio).max() <= 1.0
    symbols = [p.symbol for p in u.phonemes]
    assert symbols[:4] == ["h", "@", "l", "oU"] and "w" in symbols and "3:" in symbols
    starts = [p.start_s for p in u.phonemes]
    assert starts[0] == 0.0 and all(b > a for a, b in zip(starts, starts[1:]))
    assert all(p.end_s == q.start_s for p, q in zip(u.phonemes, u.phonemes[1:]))
    assert u.phonemes[-1].end_s == pytest.approx(u.duration_s)
    # trimmed: sound right at both ends, no pause phonemes left at the edges
    assert np.abs(u.audio[:300]).max() > 0.003 and np.abs(u.audio[-300:]).max() > 0.003
    assert not symbols[0].startswith("_") and not symbols[-1].startswith("_")


def test_same_text_and_voice_give_identical_audio_whatever_came_before(synth):
    voice = Voice("en-gb+f2", 60, 55, 170)
    first = synth.synthesize("Tell me about your new book.", voice)
    # espeak-ng keeps hidden state (pitch flutter phase, noise generator) between calls in a process;
    # the zygote must make that irrelevant.
    for other in sample_voices(np.random.default_rng(7), 3):
        synth.synthesize("Something completely different, with commas, and more words.", other)
    second = synth.synthesize("Tell me about your new book.", voice)
    assert np.array_equal(first.audio, second.audio)
    assert first.phonemes == second.phonemes


def test_unknown_voice_names_are_refused(synth):
    with pytest.raises(ValueError):
        synth.synthesize("hi", Voice("en-us+robot99", 50, 50, 175))
    with pytest.raises(ValueError):
        synth.synthesize("hi", Voice("xx-yy", 50, 50, 175))


def test_missing_library_error_says_what_to_install(monkeypatch):
    monkeypatch.setattr(S, "LIBRARY_NAME", "libespeak-ng-not-here.so.9")
    with pytest.raises(S.EspeakUnavailable, match="libespeak-ng1"):
        S._EspeakLibrary()


def test_sampled_voices_are_distinct_and_clearly_different(synth):
    text = "I remember standing in the kitchen thinking, what am I doing here?"
    for seed in range(3):
        voices = sample_voices(np.random.default_rng(seed), 4)
        assert len({v.name.split("+")[1] for v in voices}) == 4  # no variant twice
        assert {v.is_female for v in voices} == {True, False}  # genders mixed
        f0 = {v: f0_median(synth.synthesize(text, v).audio) for v in voices}
        for a, b in combinations(voices, 2):
            ratio = max(f0[a], f0[b]) / min(f0[a], f0[b])
            assert ratio > (1.4 if a.is_female != b.is_female else 1.1), (a, b, f0[a], f0[b])
    assert sample_voices(np.random.default_rng(3), 4) == sample_voices(np.random.default_rng(3), 4)


def test_sampled_voices_keep_away_from_a_fixed_host_voice(synth):
    host = Voice("en-us+m3", 45, 60, 165)
    text = "Where do you find the energy for all of this?"
    host_f0 = f0_median(synth.synthesize(text, host).audio)
    for seed in range(3):
        guests = sample_voices(np.random.default_rng(seed), 3, avoid=[host])
        assert all(v.variant != "m3" for v in guests)
        for v in guests:
            f0 = f0_median(synth.synthesize(text, v).audio)
            assert max(f0, host_f0) / min(f0, host_f0) > 1.1, (v, f0, host_f0)


# --------------------------------------------------------------------------------- visemes

def test_visemes_open_jaw_on_vowels_and_close_lips_on_m_and_p(synth):
    u = synth.synthesize("Papa, mama, hot pot.", Voice("en-us+m1", 50, 50, 160))
    offset = 2.0  # absolute episode seconds
    phonemes = [Phoneme(p.symbol, p.start_s + offset, p.end_s + offset) for p in u.phonemes]
    frames = np.arange(0.0, offset + u.duration_s + 1.0, 0.005)
    tracks = viseme_tracks(phonemes, frames)
    assert set(tracks) == set(TRACK_KEYS)
    jaw = tracks["jawOpen"]

    def during(p: Phoneme) -> np.ndarray:  # the lips lead the sound a little
        return jaw[(frames >= p.start_s - 0.03) & (frames <= p.end_s)]

    bilabials = [p for p in phonemes if p.symbol in ("m", "p", "b")]
    open_vowels = [p for p in phonemes if p.symbol in ("A:", "a", "0", "V", "aa")]
    assert len(bilabials) >= 4 and len(open_vowels) >= 3
    assert max(during(p).min() for p in bilabials) < 0.1  # lips meet on every m / p
    assert min(during(p).max() for p in open_vowels) > 0.45  # jaw opens on every open vowel
    # closed and relaxed outside speech
    outside = (frames < offset - 0.15) | (frames > offset + u.duration_s + 0.15)
    for key in TRACK_KEYS:
        assert np.all(tracks[key][outside] == 0.0)
        assert tracks[key].dtype == np.float32 and tracks[key].min() >= 0 and tracks[key].max() <= 1


def test_visemes_rounding_spreading_and_unknown_symbols():
    phonemes = [Phoneme("u:", 1.0, 1.2), Phoneme("_", 1.2, 1.5), Phoneme("i:", 1.5, 1.7),
                Phoneme("Q%?", 1.7, 1.8), Phoneme("'aI", 1.8, 2.0)]
    frames = np.array([1.1, 1.6, 1.75, 1.9])
    tracks = viseme_tracks(phonemes, frames)
    assert tracks["mouthPucker"][0] > 0.7 and tracks["mouthStretch"][1] > 0.6
    assert np.all(np.isfinite(tracks["jawOpen"]))
    assert mouth_target("weird!") is not None and mouth_target("") == mouth_target("_:")
    assert mouth_target("'aI") == mouth_target("aI")  # stress marks ignored
    assert viseme_tracks([], frames)["jawOpen"].tolist() == [0, 0, 0, 0]


def test_visemes_are_fast_for_a_ten_minute_episode():
    rng = np.random.default_rng(0)
    symbols = ["h", "@", "l", "oU", "w", "3:", "m", "p", "a", "_", "i:", "u:", "S", "?x"]
    starts = np.cumsum(rng.uniform(0.05, 0.15, 4000))  # ~400 s of phonemes
    phonemes = [Phoneme(symbols[i % len(symbols)], s, s + 0.05) for i, s in enumerate(starts)]
    frames = np.arange(15_000) / 25.0  # 10 minutes at 25 fps
    best = min(_timed(lambda: viseme_tracks(phonemes, frames)) for _ in range(3))
    assert best < 0.2, best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------- sounds

def test_music_is_exact_length_faded_and_repeatable():
    a = music(4.5, np.random.default_rng(3), SR)
    b = music(4.5, np.random.default_rng(3), SR)
    c = music(4.5, np.random.default_rng(4), SR)
    assert a.dtype == np.float32 and len(a) == round(4.5 * SR)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert abs(a[0]) < 1e-3 and abs(a[-1]) < 1e-3 and 0.5 < np.abs(a).max() <= 0.8 + 1e-6
    assert rms(a[SR:2 * SR]) > 0.05


def test_applause_rises_then_falls_and_is_repeatable():
    a = applause(5.0, np.random.default_rng(1), SR)
    assert len(a) == 5 * SR and np.array_equal(a, applause(5.0, np.random.default_rng(1), SR))
    tenth = len(a) // 10
    levels = [rms(a[i * tenth:(i + 1) * tenth]) for i in range(10)]
    assert max(levels[2:6]) > 1.3 * levels[0] and max(levels[2:6]) > 2.0 * levels[-1]


def test_laughter_is_an_utterance_with_phonemes(synth):
    voice = Voice("en-us+f3", 60, 50, 175)
    u = laughter(synth, voice, np.random.default_rng(2))
    assert u.duration_s > 0.3 and u.phonemes and "h" in [p.symbol for p in u.phonemes]
    again = laughter(synth, voice, np.random.default_rng(2))
    assert np.array_equal(u.audio, again.audio)
    assert f0_median(u.audio) > f0_median(synth.synthesize("ha ha ha", voice).audio)  # raised pitch


# --------------------------------------------------------------------------------- the script

def _cast(seed: int, n_guests: int) -> list[CastMember]:
    voices = sample_voices(np.random.default_rng(seed), 1 + n_guests)
    return [CastMember("host", "host", voices[0])] + [
        CastMember(f"guest{i}", "guest", v) for i, v in enumerate(voices[1:])]


@pytest.fixture(scope="module")
def show(synth) -> AudioScript:
    return build_audio_script(_cast(11, 1), 60.0, np.random.default_rng(11), synth)


def test_script_frame_music_intro_and_outro(show):
    assert show.duration_s == 60.0 and show.sample_rate == SR
    music_parts = [n for n in show.non_speech if n.kind == "music"]
    claps = [n for n in show.non_speech if n.kind == "applause"]
    assert len(music_parts) == 2 and len(claps) == 2
    intro, outro = music_parts
    assert intro.start_s == 0.0 and 3.0 <= intro.end_s <= 6.0 + 1e-3
    assert outro.end_s == pytest.approx(60.0) and 3.0 - 1e-3 <= outro.end_s - outro.start_s <= 5.0 + 1e-3
    assert claps[0].start_s < intro.end_s < claps[0].end_s  # applause over the end of the intro
    assert claps[1].start_s < outro.start_s  # closing applause leads into the outro music
    speech = [s for s in show.segments if s.kind == "speech"]
    assert speech[0].person_id == "host" and speech[-1].person_id == "host"  # welcome ... goodbye
    assert speech[0].start_s > intro.end_s - 0.5 and speech[-1].end_s < outro.start_s


def test_script_segments_turns_and_phonemes_are_consistent(show):
    assert show.segments == sorted(show.segments, key=lambda s: s.start_s)
    for seg in show.segments:
        assert 0.0 <= seg.start_s < seg.end_s <= show.duration_s
        assert seg.kind in ("speech", "backchannel", "laugh") and seg.text and seg.phonemes
        assert all(seg.start_s - 1e-6 <= p.start_s <= p.end_s <= seg.end_s + 1e-6 for p in seg.phonemes)
        assert 0 <= seg.turn_index < len(show.turns)
    # nobody overlaps themselves
    for person in {s.person_id for s in show.segments}:
        own = [s for s in show.segments if s.person_id == person]
        assert all(a.end_s <= b.start_s for a, b in zip(own, own[1:])), person
    for turn in show.turns:
        own = [s for s in show.segments if s.turn_index == turn.index and s.person_id == turn.person_id]
        assert own[0].start_s == turn.start_s and own[-1].end_s == turn.end_s
        assert own[0].overlaps_previous == turn.overlaps_previous
    assert {t.person_id for t in show.turns} == {"host", "guest0"}


def test_script_has_overlaps_backchannels_and_laughter(show):
    turns = show.turns
    overlapping = [t for t in turns if t.overlaps_previous]
    assert len(overlapping) >= 0.1 * len(turns) and len(turns) >= 6
    for prev, turn in zip(turns, turns[1:]):
        lead = prev.end_s - turn.start_s
        if turn.overlaps_previous:
            assert 0.3 - 1e-3 <= lead <= 1.0 + 1e-3
        else:
            assert 0.2 - 1e-3 <= -lead <= 0.8 + 1e-3
    backchannels = [s for s in show.segments if s.kind == "backchannel"]
    assert backchannels and all(show.turns[s.turn_index].person_id != s.person_id for s in backchannels)
    assert [s for s in show.segments if s.kind == "laugh"]


def test_script_mix_levels_speech_loud_and_designed_pauses_silent(show):
    audio = show.audio
    assert audio.dtype == np.float32 and len(audio) == round(60.0 * SR)
    assert np.abs(audio).max() <= 0.9 + 1e-6
    for seg in show.segments:
        a, b = int(seg.start_s * SR), int(seg.end_s * SR)
        assert rms(audio[a:b]) > 0.02, seg.text
    # Pauses inside guest turns are 0.3-1.2 s; where nobody else makes a sound they are silent.
    checked = 0
    for index, person, start, end in show.turn_pauses():
        turn_segments = [s for s in show.segments if s.turn_index == index and s.person_id == person]
        after = next(s for s in turn_segments if s.start_s >= end - 1e-9)
        before = [s for s in turn_segments if s.end_s <= start + 1e-9][-1]
        if person.startswith("guest") and before.kind == after.kind == "speech":
            assert 0.3 - 1e-3 <= end - start <= 1.2 + 1e-3
        busy = [s for s in show.segments if s.start_s < end and s.end_s > start and s.person_id != person]
        busy += [n for n in show.non_speech if n.start_s < end and n.end_s > start]
        if not busy:
            assert rms(audio[int(start * SR) + 1:int(end * SR) - 1]) < 1e-4
            checked += 1
    assert checked >= 2


def test_script_is_deterministic_for_a_seed(synth, show):
    again = build_audio_script(_cast(11, 1), 60.0, np.random.default_rng(11), synth)
    assert again.segments == show.segments and again.turns == show.turns
    assert again.non_speech == show.non_speech
    assert again.audio.tobytes() == show.audio.tobytes()
    other = build_audio_script(_cast(11, 1), 60.0, np.random.default_rng(12), synth)
    assert [s.text for s in other.segments] != [s.text for s in show.segments]


def test_panel_gives_every_guest_turns_and_guests_reply_to_each_other(synth):
    panel = build_audio_script(_cast(5, 2), 120.0, np.random.default_rng(5), synth)
    speakers = [t.person_id for t in panel.turns]
    assert {"host", "guest0", "guest1"} <= set(speakers)
    assert any(a.startswith("guest") and b.startswith("guest") and a != b
               for a, b in zip(speakers, speakers[1:]))  # a guest answers a guest
    assert sum(t.overlaps_previous for t in panel.turns) >= 0.1 * len(panel.turns)
    assert np.abs(panel.audio).max() <= 0.9 + 1e-6


def test_ten_minute_script_builds_much_faster_than_real_time(synth, report):
    t0 = time.perf_counter()
    long_show = build_audio_script(_cast(3, 1), 600.0, np.random.default_rng(3), synth)
    seconds = time.perf_counter() - t0
    report(f"synth audio: 10-min talk-show script built in {seconds:.1f} s "
           f"({len(long_show.turns)} turns, {len(long_show.segments)} segments)")
    assert seconds < 30.0
    assert long_show.audio.nbytes == round(600.0 * SR) * 4
    assert sum(t.overlaps_previous for t in long_show.turns) >= 0.1 * len(long_show.turns)
