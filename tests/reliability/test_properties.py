"""Property tests (hypothesis) of the featurizers, the A/V re-timing, the offer parser and the limits.

Each property is checked on inputs hypothesis invents (chunkings, rates, levels, boxes, write and
clock schedules, SDP text), not only on the examples the unit tests picked.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from f2f.features.face_crop import crop_face
from f2f.features.mel import log_mel, resample_to_16k, to_mono
from f2f.timebase import AUDIO_SAMPLE_RATE, SAMPLES_PER_FRAME
from server.frames import SessionClock
from server.host_audio import HostAudioTimeline
from server.resample import StreamingResampler
from server.rtc import OfferError, validate_offer
from server.security import RateLimiter, TokenAuth

pytestmark = pytest.mark.timeout(300)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RATES = st.sampled_from([8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000])
chunk_sizes = st.lists(st.integers(min_value=0, max_value=2500), min_size=1, max_size=40)


def signal(seed: int, n: int, level: float = 0.3) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def chunked(x: np.ndarray, sizes: list[int]):
    i = 0
    for size in sizes * (1 + len(x) // max(1, sum(sizes))):
        if i >= len(x):
            break
        yield x[i:i + size]
        i += size
    if i < len(x):
        yield x[i:]


# -- featurizers ------------------------------------------------------------------------------------

@FAST
@given(rate=RATES, sizes=chunk_sizes, seed=st.integers(0, 2**16), seconds=st.floats(0.01, 0.5))
def test_streaming_resampler_equals_training_resampler_for_any_chunking(rate, sizes, seed, seconds):
    x = signal(seed, int(rate * seconds))
    resampler = StreamingResampler(rate)
    streamed = np.concatenate([resampler.push(c) for c in chunked(x, sizes)] + [resampler.flush()])
    np.testing.assert_allclose(streamed, resample_to_16k(x, rate), atol=2e-6)


@FAST
@given(sizes=chunk_sizes, seed=st.integers(0, 2**16), n=st.integers(1, 12000),
       level=st.sampled_from([0.0, 1e-4, 0.3, 1.0, 4.0]))
def test_streaming_log_mel_equals_batch_for_any_chunking_and_level(sizes, seed, n, level):
    from f2f.features.mel import StreamingLogMel

    x = signal(seed, n, level)
    mel = StreamingLogMel(history_frames=1000)
    frames = [mel.push(c) for c in chunked(x, sizes)] + [mel.flush()]
    streamed = np.concatenate(frames)
    batch = log_mel(x)
    assert streamed.shape == batch.shape == (n // 160, 80)
    assert np.isfinite(streamed).all()
    np.testing.assert_allclose(streamed, batch, atol=2e-4, rtol=1e-4)


@FAST
@given(channels=st.integers(1, 8), n=st.integers(0, 2000), as_int16=st.booleans(), seed=st.integers(0, 99))
def test_to_mono_is_the_mean_of_the_channels(channels, n, as_int16, seed):
    x = np.random.default_rng(seed).uniform(-1, 1, (n, channels)).astype(np.float32)
    if as_int16:
        x = (x * 32767).astype(np.int16)
    mono = to_mono(x)
    expected = (x.astype(np.float64) / (32768.0 if as_int16 else 1.0)).mean(axis=1) if n else np.zeros(0)
    assert mono.shape == (n,) and mono.dtype == np.float32
    np.testing.assert_allclose(mono, expected, atol=1e-6)


@FAST
@given(width=st.integers(1, 400), height=st.integers(1, 400), size=st.sampled_from([16, 64, 112]),
       x=st.floats(-800, 800), y=st.floats(-800, 800), w=st.floats(0.0, 1500), h=st.floats(0.0, 1500))
def test_face_crop_never_fails_on_odd_boxes_and_images(width, height, size, x, y, w, h):
    image = np.random.default_rng(width * height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    try:
        crop = crop_face(image, (x, y, w, h), size)
    except ValueError as error:  # the one documented refusal: a box too small to crop
        assert "too small" in str(error) and max(w, h) * 1.3 <= 1
        return
    assert crop.shape == (3, size, size) and crop.dtype == np.float32
    assert np.isfinite(crop).all() and crop.min() >= 0.0 and crop.max() <= 1.0


# -- A/V re-timing --------------------------------------------------------------------------------------

class FakeTime:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# One step of the session: the clock moves on (ms), a chunk of input arrives (samples, and whether
# the input stream had a gap before it), or the avatar loop finalises what is due.
step = st.one_of(
    st.tuples(st.just("tick"), st.integers(1, 120)),
    st.tuples(st.just("write"), st.integers(1, 1600), st.booleans()),
    st.tuples(st.just("finalize"), st.integers(0, 3)),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, min_size=1, max_size=60))
def test_host_audio_retiming_keeps_order_counts_and_av_alignment(steps):
    """Whatever the arrival pattern: input samples come out in order, each at most once; every one is
    accounted for (played, or counted as dropped); the audio sent with frame n is exactly the audio
    the mel of frame n was computed from; the input times reported for output frames never go back."""
    now = FakeTime()
    clock = SessionClock(now)
    clock.start()
    timeline = HostAudioTimeline(clock, history_s=60.0)
    next_value, source_pts = 1, 0.0
    for kind, *args in steps:
        if kind == "tick":
            now.t += args[0] / 1000.0
        elif kind == "write":
            n, gap = args
            if gap:
                source_pts += 0.5
            # every input sample carries its own index (values 1, 2, 3, ...; 0 is silence)
            samples = np.arange(next_value, next_value + n, dtype=np.float64) / 1e6
            timeline.write(samples.astype(np.float32), source_pts, restart=gap)
            next_value += n
            source_pts += n / AUDIO_SAMPLE_RATE
        else:  # finalise up to the frame that is due now, minus up to 3 frames of look-ahead
            due = max(0, clock.samples() // SAMPLES_PER_FRAME - args[0])
            timeline.finalize_to(timeline.needed_for(due))
    now.t += 1.0
    frames = clock.samples() // SAMPLES_PER_FRAME
    timeline.finalize_to(frames * SAMPLES_PER_FRAME)

    played = np.concatenate([timeline.output_audio(n) for n in range(frames)]) if frames else np.zeros(0)
    indices = np.rint(played.astype(np.float64) * 1e6).astype(np.int64)
    indices = indices[indices > 0]
    assert (np.diff(indices) > 0).all(), "input samples reordered or repeated"
    stats = timeline.stats
    assert stats.samples_received == next_value - 1
    assert len(indices) + stats.dropped_samples == stats.samples_received, (
        len(indices), stats)
    # A/V alignment: the mel the engine got for frames [0, N-1) is the log-mel of the audio sent with them
    # (the last frame's mel also reads 120 samples of the next one).
    if frames > 1:
        mel = timeline.mel_window(0, frames - 1)
        np.testing.assert_allclose(mel, log_mel(played)[: (frames - 1) * 4], atol=2e-4, rtol=1e-4)
    pts = [timeline.source_pts_at(n * SAMPLES_PER_FRAME) for n in range(frames)]
    known = [p for p in pts if p is not None]
    assert all(b >= a for a, b in zip(known, known[1:])), "reported input times went back"


# -- the offer parser ----------------------------------------------------------------------------------

SDP_LINES = st.sampled_from([
    "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0 1", "m=video 9 UDP/TLS/RTP/SAVPF 96",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 0.0.0.0",
    "a=rtpmap:96 VP8/90000", "a=rtpmap:111 opus/48000/2", "a=rtpmap:x", "a=ice-ufrag:abcd", "a=ice-pwd:" + "p" * 22,
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=fingerprint:sha-256 zz", "a=setup:actpass", "a=mid:0",
    "a=sendrecv", "a=ssrc:1 cname:x", "a=ssrc-group:FID 1", "a=candidate:1 1 udp 1 127.0.0.1 9 typ host",
    "a=candidate:garbage", "a=sctp-port:5000", "a=fmtp:96 apt=", "a=extmap:1 urn:x", "m=video -1 RTP x",
    "a=rtcp:9 IN IP4", "a=msid:a b", "b=AS:abc", "a=rtcp-fb:96 nack", "m=", "a=", "",
])


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(st.one_of(SDP_LINES, st.text(max_size=40)), max_size=30))
def test_offer_validation_refuses_with_offer_error_only(lines):
    """Any text: either a parsed offer or OfferError (HTTP 400) -- never another exception (HTTP 500)."""
    try:
        parsed = validate_offer("\r\n".join(lines), 64 * 1024)
    except OfferError as error:
        assert str(error)
        return
    assert parsed.media


# -- limits --------------------------------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(rate=st.floats(0.5, 50), burst=st.integers(1, 30),
       gaps=st.lists(st.floats(0, 0.5), min_size=1, max_size=200))
def test_rate_limiter_never_allows_more_than_burst_plus_rate_times_time(rate, burst, gaps):
    now = [0.0]
    limiter = RateLimiter(rate, burst, clock=lambda: now[0])
    allowed_at = []
    for gap in gaps:
        now[0] += gap
        if limiter.acquire("client") == 0.0:
            allowed_at.append(now[0])
        else:
            assert limiter.acquire("client") > 0  # a refusal tells how long to wait
    for i, start in enumerate(allowed_at):  # in every window [start, end]: at most burst + rate * span
        for j in range(i, len(allowed_at)):
            assert j - i + 1 <= burst + rate * (allowed_at[j] - start) + 1e-6


@settings(max_examples=100, deadline=None)
@given(tokens=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=5, unique=True),
       guess=st.text(max_size=25))
def test_token_auth_accepts_exactly_the_configured_tokens(tokens, guess):
    auth = TokenAuth(tuple(tokens))
    assert [auth.owner(t) for t in tokens] == list(range(len(tokens)))
    assume(guess not in tokens)
    assert auth.owner(guess) == -1 and auth.owner(None) == -1
