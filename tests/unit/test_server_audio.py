"""Host audio on the session timeline: exact streaming resampling, placement, mel, re-timed output."""

from __future__ import annotations

import numpy as np
import pytest

from f2f.features.mel import log_mel, resample_to_16k
from f2f.timebase import AUDIO_SAMPLE_RATE, SAMPLES_PER_FRAME
from server.frames import SessionClock
from server.host_audio import HostAudioTimeline
from server.resample import StreamingResampler


class FakeTime:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize("rate", [48000, 44100, 22050, 16000, 8000])
def test_streaming_resampler_equals_batch(rate):
    rng = np.random.default_rng(rate)
    x = (0.3 * rng.standard_normal(rate)).astype(np.float32)
    resampler = StreamingResampler(rate)
    parts, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, 1500))
        parts.append(resampler.push(x[i:i + n]))
        i += n
    parts.append(resampler.flush())
    streamed = np.concatenate(parts)
    batch = resample_to_16k(x, rate)
    assert streamed.shape == batch.shape
    np.testing.assert_allclose(streamed, batch, atol=1e-6)


def _timeline():
    now = FakeTime()
    clock = SessionClock(now)
    clock.start()
    return now, clock, HostAudioTimeline(clock)


def test_input_is_anchored_at_arrival_and_mel_matches_the_batch_featurizer():
    now, clock, timeline = _timeline()
    rng = np.random.default_rng(0)
    signal = (0.2 * rng.standard_normal(16000)).astype(np.float32)
    now.t += 0.125  # first chunk arrives 125 ms into the session
    chunk = 320
    for k in range(0, len(signal), chunk):
        timeline.write(signal[k:k + chunk], source_pts=k / AUDIO_SAMPLE_RATE)
        now.t += chunk / AUDIO_SAMPLE_RATE
    anchor = 2000  # the first chunk ends where the clock was when it arrived
    assert timeline.source_pts_at(0) is None
    timeline.finalize_to(anchor - chunk + len(signal))
    # The timeline is silence until the anchor, then the signal.
    whole = np.concatenate([np.zeros(anchor - chunk, dtype=np.float32), signal])
    frames = len(whole) // SAMPLES_PER_FRAME - 1
    np.testing.assert_allclose(timeline.mel_window(0, frames), log_mel(whole)[:4 * frames], atol=1e-4)
    # Frames before the start read as silence.
    window = timeline.mel_window(-2, 3)
    assert window.shape == (20, 80)
    np.testing.assert_allclose(window[8:], log_mel(whole)[:12], atol=1e-4)
    # Output audio of frame n is the timeline's samples of that frame; source pts map back.
    n = 10
    np.testing.assert_array_equal(timeline.output_audio(n), whole[n * 640:(n + 1) * 640])
    position = n * SAMPLES_PER_FRAME
    assert timeline.source_pts_at(position) == pytest.approx((position - (anchor - chunk)) / AUDIO_SAMPLE_RATE)
    assert timeline.stats.underrun_samples == 0


def test_late_input_is_shifted_after_the_silence_and_ahead_input_is_dropped():
    now, clock, timeline = _timeline()
    now.t += 0.0625
    timeline.write(np.full(1000, 0.5, np.float32), 0.0)  # placed at [0, 1000)
    now.t += 0.1875
    timeline.finalize_to(3200)  # the loop went ahead: [640, 3200) underran
    assert timeline.stats.underrun_samples == 3200 - 1000
    timeline.write(np.full(640, 0.25, np.float32), 1000 / 16000)  # late: goes right after the final part
    assert timeline.stats.late_shift_samples == 3200 - 1000
    timeline.finalize_to(3840)
    assert timeline.output_audio(5)[0] == pytest.approx(0.25)
    assert timeline.source_pts_at(3200) == pytest.approx(1000 / 16000)
    assert timeline.output_audio(2)[0] == pytest.approx(0.0)  # the underrun played as silence
    # A burst far ahead of the clock is trimmed to max_ahead past now.
    before = timeline.stats.dropped_samples
    timeline.write(np.ones(16000, np.float32), 0.08)
    assert timeline.stats.dropped_samples > before
    assert timeline.write_position <= clock.samples() + timeline.max_ahead


def test_injected_speech_is_mixed_from_the_first_free_sample():
    now, clock, timeline = _timeline()
    now.t += 0.5
    timeline.finalize_to(4000)
    start_s, duration_s = timeline.inject(np.full(1600, 0.1, np.float32))
    assert start_s == pytest.approx(clock.samples() / AUDIO_SAMPLE_RATE)
    assert duration_s == pytest.approx(0.1)
    timeline.finalize_to(16000)
    first = int(start_s * AUDIO_SAMPLE_RATE)
    frame = first // 640 + 1
    assert timeline.output_audio(frame)[0] == pytest.approx(0.1)
    assert timeline.source_pts_at(first) is None  # speech from the server has no input time


def test_a_gap_in_the_input_is_anchored_afresh():
    now, clock, timeline = _timeline()
    now.t += 0.0625
    timeline.write(np.full(1000, 0.5, np.float32), 0.0)  # [0, 1000)
    now.t += 0.5  # the sender stopped sending (silence suppression, loss) for half a second
    timeline.write(np.full(320, 0.25, np.float32), 0.5625, restart=True)
    assert timeline.write_position == clock.samples()  # placed by arrival, not right after the old input
    timeline.finalize_to(timeline.write_position)
    assert timeline.source_pts_at(clock.samples() - 320) == pytest.approx(0.5625)
    assert timeline.source_pts_at(2000) is None  # the gap itself came from nobody


@pytest.mark.parametrize("rate,layout,fmt", [(48000, "stereo", "s16"), (8000, "mono", "s16"),
                                             (44100, "stereo", "fltp")])
def test_host_audio_input_takes_any_webrtc_audio(rate, layout, fmt):
    """Frames of any rate / layout / sample format become the same 16 kHz stream as training's resampler."""
    import asyncio
    import fractions

    import av
    from aiortc.mediastreams import MediaStreamError

    from server.host_audio import HostAudioInput
    from server.metrics import GatewayMetrics

    rng = np.random.default_rng(1)
    mono = (0.2 * rng.standard_normal(rate)).astype(np.float32)  # one second
    channels = 2 if layout == "stereo" else 1
    per_frame = rate // 50

    class Track:
        def __init__(self):
            self.i = 0

        async def recv(self):
            if self.i >= len(mono):
                raise MediaStreamError
            chunk = mono[self.i:self.i + per_frame]
            data = np.repeat(chunk[None, :], channels, axis=0)  # (channels, samples), planar
            if fmt == "s16":
                data = (data * 32767).astype(np.int16).T.reshape(1, -1)  # packed
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, self.i, fractions.Fraction(1, rate)
            self.i += per_frame
            now.t += 0.02  # arriving in real time
            return frame

    now, clock, timeline = _timeline()
    asyncio.run(HostAudioInput(Track(), timeline, GatewayMetrics()).run())
    assert not timeline.input_live
    expected = resample_to_16k(mono, rate)
    placed = timeline.stats.samples_received
    assert len(expected) - 40 <= placed <= len(expected)  # the resampler holds back < 1 ms
    end = timeline.write_position
    timeline.finalize_to(end)
    start = next(p for p in range(end) if timeline.source_pts_at(p) is not None)  # anchored at arrival
    assert timeline.source_pts_at(start) == pytest.approx(0.0)
    assert end - start == placed  # contiguous: no gaps, no drops
    got = np.concatenate([timeline.output_audio(n) for n in range(end // 640)])[start:]
    np.testing.assert_allclose(got, expected[:len(got)], atol=3e-4 if fmt == "s16" else 1e-6)
