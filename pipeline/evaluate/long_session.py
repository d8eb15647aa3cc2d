"""Long-session stability: the evaluation clips played back to back as one session.

Head pose is sampled as increments from the last frame, so a rollout integrates its own errors; a
model that never learned to come back from a drifted pose looks fine for a clip and spins its head a
minute later (the session-6 default avatar: yaw past -1000 deg within 3.3 min). This measures, per
head-pose field, how much of such a session the generated pose spends outside the range of the same
clips' measured host motion.
"""

from __future__ import annotations

import numpy as np

from f2f.motion import FIELD_INDEX
from f2f.timebase import MEL_FRAMES_PER_VIDEO_FRAME, VIDEO_FPS
from pipeline.train.windows import ClipInputs, rollout, rollout_noise

POSE_FIELDS = ("yaw", "pitch", "roll")
MARGIN_DEG = 5.0  # outside means beyond the data's 1st-99th percentile range by more than this


def back_to_back(clips: list[ClipInputs]) -> ClipInputs:
    """One session from clips in order; each clip's mel is cut to its own frames but the last's
    flushed tail is kept, so the audio stays aligned with the frames."""
    rows = [c.mel[:c.num_frames * MEL_FRAMES_PER_VIDEO_FRAME] for c in clips[:-1]] + [clips[-1].mel]
    return ClipInputs(np.concatenate(rows), np.concatenate([c.guest_features for c in clips]),
                      np.concatenate([c.guest_visible for c in clips]))


def frames_outside(generated: np.ndarray, reference: np.ndarray) -> dict:
    """(N,) generated and (M,) measured values of one field -> the generated range, the data's p1-p99
    and the fraction of generated frames beyond that range by more than MARGIN_DEG."""
    low, high = np.percentile(reference, [1, 99])
    outside = (generated < low - MARGIN_DEG) | (generated > high + MARGIN_DEG)
    return {"generated_min": round(float(generated.min()), 2), "generated_max": round(float(generated.max()), 2),
            "data_p1": round(float(low), 2), "data_p99": round(float(high), 2),
            "frames_outside": round(float(outside.mean()), 4)}


def long_session(generator, clips: list[ClipInputs], host_motion: list[np.ndarray], lambda_video: float,
                 seeds: int) -> dict:
    """Roll the back-to-back session out once per noise seed at `lambda_video` (the seeds as one
    batch); host_motion: per clip the measured (N, 15) motion (its valid frames are the reference range)."""
    session = back_to_back(clips)
    reference = np.concatenate(host_motion)
    noise = np.concatenate([rollout_noise(1, session.num_frames, generator.spec, seed) for seed in range(seeds)])
    fields: dict[str, dict] = {}
    for motion in rollout(generator, [session] * seeds, lambda_video, noise):  # (N, 15) per seed
        for name in POSE_FIELDS:
            figures = frames_outside(motion[:, FIELD_INDEX[name]], reference[:, FIELD_INDEX[name]])
            worst = fields.get(name)
            if worst is None or figures["frames_outside"] > worst["frames_outside"]:
                fields[name] = figures
    return {"seconds": round(session.num_frames / VIDEO_FPS, 1), "lambda_video": lambda_video, "seeds": seeds,
            "margin_deg": MARGIN_DEG, "frames_outside": max(f["frames_outside"] for f in fields.values()),
            "fields": fields}
