"""The one time base of f2f. Every module that counts frames, samples or mel frames imports it.

Video runs at 25 fps, audio at 16 kHz mono, so one video frame owns exactly 640 audio samples and
four 10 ms mel hops. The training windows come from the F2F-JF paper (Section 4).
"""

from __future__ import annotations

from fractions import Fraction

VIDEO_FPS = 25
AUDIO_SAMPLE_RATE = 16_000
SAMPLES_PER_FRAME = AUDIO_SAMPLE_RATE // VIDEO_FPS  # 640

# Log-mel: 25 ms window, 10 ms hop, 80 bins -> 4 mel frames per video frame.
MEL_WIN_LENGTH = 400  # 25 ms at 16 kHz
MEL_HOP_LENGTH = 160  # 10 ms at 16 kHz
MEL_N_FFT = 512
MEL_BINS = 80
MEL_FMIN_HZ = 20.0
MEL_FMAX_HZ = 8_000.0
MEL_FRAMES_PER_VIDEO_FRAME = SAMPLES_PER_FRAME // MEL_HOP_LENGTH  # 4

# Windows (frames at VIDEO_FPS).
GUEST_CONTEXT_FRAMES = 64  # 2.56 s of partner video before the host response
HOST_RESPONSE_FRAMES = 81  # 3.24 s of host response
HOST_MOTION_HISTORY_FRAMES = 6  # "motion frames" carried for continuity
MAX_AUDIO_LOOKAHEAD_FRAMES = 2  # 80 ms

# Frame rates that source footage may arrive at (the pipeline resamples to VIDEO_FPS).
NTSC_FPS = Fraction(30000, 1001)  # 29.97


def parse_fps(text: str | float | Fraction) -> Fraction:
    """'25', '29.97', '30000/1001' or a number -> an exact frame rate."""
    if isinstance(text, Fraction):
        return text
    text = str(text).strip()
    if "/" in text:
        num, den = text.split("/", 1)
        return Fraction(int(num), int(den))
    value = float(text)
    if abs(value - 29.97) < 1e-3:
        return NTSC_FPS
    if abs(value - 59.94) < 1e-3:
        return Fraction(60000, 1001)
    return Fraction(text).limit_denominator(1001)


def frame_time(index: int, fps: Fraction | int = VIDEO_FPS) -> float:
    """Presentation time in seconds of frame `index` at `fps`."""
    return float(Fraction(index) / Fraction(fps))


def frames_in(seconds: float, fps: Fraction | int = VIDEO_FPS) -> int:
    """Number of whole frames that start within `seconds`."""
    return int(Fraction(seconds).limit_denominator(1_000_000) * Fraction(fps))


def frame_of(seconds: float, fps: Fraction | int = VIDEO_FPS) -> int:
    """Index of the frame on screen at time `seconds`."""
    return int(seconds * float(fps) + 1e-9)


def samples_for_frames(frames: int) -> int:
    """Audio samples at AUDIO_SAMPLE_RATE that cover `frames` video frames at VIDEO_FPS."""
    return frames * SAMPLES_PER_FRAME
