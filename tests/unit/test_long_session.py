"""Long-session stability figures: clips joined with aligned audio, and the share of frames outside
the data's range."""

from __future__ import annotations

import numpy as np
import pytest

from f2f.timebase import MEL_FRAMES_PER_VIDEO_FRAME
from pipeline.evaluate.long_session import MARGIN_DEG, back_to_back, frames_outside
from pipeline.train.windows import ClipInputs


def clip(frames: int, tail_rows: int, value: float) -> ClipInputs:
    mel = np.full((frames * MEL_FRAMES_PER_VIDEO_FRAME + tail_rows, 80), value, np.float32)
    return ClipInputs(mel, np.full((frames, 4), value, np.float32), np.ones(frames, bool))


def test_back_to_back_keeps_each_clips_audio_on_its_own_frames():
    a, b = clip(10, 3, 1.0), clip(7, 3, 2.0)
    session = back_to_back([a, b])
    assert session.num_frames == 17
    rows = MEL_FRAMES_PER_VIDEO_FRAME
    assert np.all(session.mel[:10 * rows] == 1.0) and np.all(session.mel[10 * rows:] == 2.0)
    assert len(session.mel) == 17 * rows + 3  # the last clip's flushed tail stays
    assert np.all(session.guest_features[10:] == 2.0)


def test_frames_outside_counts_only_beyond_the_margin():
    reference = np.linspace(-10.0, 10.0, 1001)  # p1..p99 = -9.8..9.8
    generated = np.array([0.0, 9.8 + MARGIN_DEG - 0.1, 9.8 + MARGIN_DEG + 0.1, -100.0])
    figures = frames_outside(generated, reference)
    assert figures["frames_outside"] == pytest.approx(0.5)
    assert figures["generated_min"] == -100.0 and figures["data_p99"] == pytest.approx(9.8)
