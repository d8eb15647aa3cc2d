"""Training windows and offline generation, assembled exactly as serving assembles a step's inputs.

The step that makes host frames n .. n+K-1 (`f2f.avatar_spec`, `server/avatar_loop.py`) sees:
  audio_mel       mel frames 4(n - past) .. 4(n + K + L) - 1; log-mel silence (LOG_MEL_FLOOR) before
                  the clip (a session starts in silence) and after its end (a flushed stream);
  guest_features  the partner's frames [n - G, n): one slot per 25 fps tick, newest last; slots
  guest_visible   before the clip are empty and invisible (as a session starts with no partner);
  motion_history  host motion frames n - H .. n - 1.
A training window needs K + Q valid target frames (the made and the plan frames, `plan_frames`) and H
valid history frames, all in one continuity segment of the host track (no camera cut inside; see
`data.host_validity`).

`rollout` is the offline whole-clip call: it walks a clip step by step through the exported forward
(`MotionGenerator.forward`, guidance included), feeding its own output back as history from
`neutral_vector()`, exactly as a gateway session does; tests check it against a streaming loop
built from the gateway's own pieces (`StreamingLogMel`, `GuestContext`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from f2f.avatar_spec import AvatarSpec
from f2f.features.mel import LOG_MEL_FLOOR
from f2f.motion import MOTION_DIM, neutral_vector
from f2f.timebase import MEL_FRAMES_PER_VIDEO_FRAME
from pipeline.train.data import Clip

STEP = MEL_FRAMES_PER_VIDEO_FRAME


def pad_mel(mel: np.ndarray, spec: AvatarSpec, frames: int) -> np.ndarray:
    """A clip's mel (`data.clip_mel`: its N frames and the flushed stream after them) -> the rows steps
    0 .. N-1 read: 4 * past rows of silence before, 4 * (N + K + L) rows from the clip (silence where
    the clip's mel ends)."""
    past = STEP * spec.audio_past_frames
    out = np.full((past + STEP * (frames + spec.frames_per_step + spec.lookahead_frames), spec.mel_bins),
                  LOG_MEL_FLOOR, np.float32)
    rows = min(len(mel), len(out) - past)
    out[past:past + rows] = mel[:rows]
    return out


def mel_rows(spec: AvatarSpec, n: np.ndarray) -> np.ndarray:
    """Rows of the padded mel that step n reads.  (B,) -> (B, M)"""
    return STEP * np.asarray(n)[:, None] + np.arange(spec.mel_frames)


def guest_slots(spec: AvatarSpec, n: np.ndarray) -> np.ndarray:
    """Clip frame of each guest slot of step n (negative: before the clip).  (B,) -> (B, G)"""
    return np.asarray(n)[:, None] - spec.guest_context_frames + np.arange(spec.guest_context_frames)


class WindowBank:
    """Every training window of a list of clips, gathered in batches.

    Guest frames are referred to by a global index into the concatenation of the clips' frames (-1 for
    a slot before the clip); the caller turns indices into features (cached CNN features + the
    trainable fusion in stage 2)."""

    def __init__(self, clips: list[Clip], spec: AvatarSpec, rest_motion: np.ndarray):
        self.spec = spec
        K, H = spec.noise_frames, spec.motion_history_frames  # targets: the made and the plan frames
        mels, histories, index = [], [], []
        self.mel_base, self.hist_base, self.frame_base, self.lengths = [], [], [], []
        mel_offset = hist_offset = frame_offset = 0
        for c, clip in enumerate(clips):
            padded = pad_mel(clip.mel, spec, clip.num_frames)
            history = np.concatenate([np.repeat(rest_motion[None].astype(np.float32), H, 0), clip.host_motion])
            mels.append(padded)
            histories.append(history)
            self.mel_base.append(mel_offset)
            self.hist_base.append(hist_offset)
            self.frame_base.append(frame_offset)
            self.lengths.append(clip.num_frames)
            mel_offset += len(padded)
            hist_offset += len(history)
            frame_offset += clip.num_frames
            seg = clip.host_segment
            for n in range(H, clip.num_frames - K + 1):
                s = seg[n]
                if s >= 0 and np.all(seg[n - H:n + K] == s):
                    index.append((c, n))
        self.mel = np.concatenate(mels)  # (rows, 80)
        self.history = np.concatenate(histories)  # (rows, 15)
        self.motion = np.concatenate([clip.host_motion for clip in clips])  # (frames, 15)
        self.segment = np.concatenate([clip.host_segment for clip in clips])  # (frames,)
        self.speaking = np.concatenate([clip.host_speaking for clip in clips])  # (frames,) diarized
        self.index = np.asarray(index, np.int64).reshape(-1, 2)  # (W, 2) clip, n
        self.mel_base = np.asarray(self.mel_base)
        self.hist_base = np.asarray(self.hist_base)
        self.frame_base = np.asarray(self.frame_base)
        self.lengths = np.asarray(self.lengths)
        self.total_frames = frame_offset

    def __len__(self) -> int:
        return len(self.index)

    def gather(self, clip: np.ndarray, n: np.ndarray) -> dict[str, np.ndarray]:
        """(B,) clip and frame -> audio_mel (B, M, 80), motion_history (B, H, 15), target (B, K+Q, 15),
        guest_index (B, G) global frame index or -1."""
        spec = self.spec
        K, H = spec.noise_frames, spec.motion_history_frames
        mel = self.mel[self.mel_base[clip][:, None] + mel_rows(spec, n)]
        history = self.history[self.hist_base[clip][:, None] + n[:, None] + np.arange(H)]
        target = self.motion[self.frame_base[clip][:, None] + n[:, None] + np.arange(K)]
        slots = guest_slots(spec, n)
        guest = np.where(slots >= 0, self.frame_base[clip][:, None] + slots, -1)
        return {"audio_mel": mel, "motion_history": history, "target": target, "guest_index": guest}

    def sample(self, rng: np.random.Generator, batch: int, probability: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """A batch of windows, uniformly or with the given probability per window (W,)."""
        if probability is None:
            chosen = self.index[rng.integers(len(self.index), size=batch)]
        else:
            chosen = self.index[rng.choice(len(self.index), size=batch, p=probability)]
        return self.gather(chosen[:, 0], chosen[:, 1])

    def listening(self, ahead: int = 10) -> np.ndarray:
        """Per window: the host does not speak (diarized) from frame n-1 to n+ahead-1.  -> (W,) bool"""
        out = np.zeros(len(self.index), bool)
        for w, (c, n) in enumerate(self.index):
            base = self.frame_base[c]
            out[w] = not self.speaking[base + max(n - 1, 0):base + min(n + ahead, self.lengths[c])].any()
        return out

    def activity(self, fields: list[int], std: np.ndarray, ahead: int = 10) -> np.ndarray:
        """Per window: the largest change of the given fields from the last history frame to any of the
        next `ahead` frames of its continuity segment, in standard deviations.  -> (W,)"""
        out = np.zeros(len(self.index), np.float32)
        scale = np.asarray(std, np.float32)[fields]
        for w, (c, n) in enumerate(self.index):
            base = self.frame_base[c]
            stop = min(n + ahead, self.lengths[c])
            same = self.segment[base + n:base + stop] == self.segment[base + n]
            stop = n + int(np.argmin(same)) if not same.all() else stop
            future = self.motion[base + n:base + stop][:, fields]
            out[w] = float(np.max(np.abs(future - self.motion[base + n - 1, fields]) / scale))
        return out


@dataclass
class ClipInputs:
    """What a session would receive over one clip: host audio features and the partner's features."""

    mel: np.ndarray  # (>= 4N, 80) log-mel of the host audio (`data.clip_mel`: with the flushed tail)
    guest_features: np.ndarray  # (N, D) guest encoder output per partner frame (anything where invisible)
    guest_visible: np.ndarray  # (N,) bool

    @property
    def num_frames(self) -> int:
        return len(self.guest_visible)


@torch.no_grad()
def rollout(generator, clips: list[ClipInputs], lambda_video: float | list[float], noise: np.ndarray,
            start_motion: np.ndarray | None = None) -> list[np.ndarray]:
    """Generate every clip from its first frame, batched across clips, as a gateway session would.

    noise (C, steps, K+Q, 15) with steps >= ceil(longest clip / K): the sampler's start of each step of
    each clip; `lambda_video` one value or one per clip. Shorter clips are padded with silence and an
    invisible partner (the model is causal: the padding never reaches their frames).
    -> per clip its motion (N, 15) float32."""
    spec = generator.spec
    K, H, G = spec.frames_per_step, spec.motion_history_frames, spec.guest_context_frames
    count = len(clips)
    steps = -(-max(c.num_frames for c in clips) // K)
    frames = steps * K
    if noise.shape[0] != count or noise.shape[1] < steps:
        raise ValueError(f"noise {noise.shape} does not cover {count} clips of {steps} steps")
    lambdas = np.broadcast_to(np.asarray(lambda_video, np.float32), (count,))
    dim = clips[0].guest_features.shape[-1]
    mels = np.full((count, STEP * (frames + spec.frames_per_step + spec.lookahead_frames), spec.mel_bins),
                   LOG_MEL_FLOOR, np.float32)
    # Guest features with G empty slots in front: slot s of step n is padded index n + s.
    features = np.zeros((count, G + frames, dim), np.float32)
    visible = np.zeros((count, G + frames), np.float32)
    for i, c in enumerate(clips):
        n = c.num_frames
        rows = min(len(c.mel), mels.shape[1])
        mels[i, :rows] = c.mel[:rows]
        features[i, G:G + n] = np.where(c.guest_visible[:, None], c.guest_features, 0.0)
        visible[i, G:G + n] = c.guest_visible
    mels = np.stack([pad_mel(m, spec, frames) for m in mels])  # (C, rows, 80)
    start = neutral_vector() if start_motion is None else start_motion
    history = torch.from_numpy(np.tile(start.astype(np.float32), (count, H, 1)))
    lam = torch.from_numpy(lambdas.copy())[:, None]
    out = np.zeros((count, frames, MOTION_DIM), np.float32)
    for step in range(steps):
        n = step * K
        mel = torch.from_numpy(mels[:, mel_rows(spec, np.array([n]))[0]])  # (C, M, 80)
        feats = torch.from_numpy(features[:, n:n + G])[:, None]  # (C, 1, G, D)
        vis = torch.from_numpy(visible[:, n:n + G])[:, None]  # (C, 1, G)
        motion = generator(mel, feats, vis, history, torch.from_numpy(noise[:, step]), lam)  # (C, K, 15)
        out[:, n:n + K] = motion.numpy()
        history = torch.cat([history, motion], dim=1)[:, -H:]
    return [out[i, : c.num_frames] for i, c in enumerate(clips)]


def rollout_noise(count: int, frames: int, spec: AvatarSpec, seed: int) -> np.ndarray:
    """Standard normal noise for `rollout` of clips up to `frames` long: (count, ceil(frames / K), K+Q, 15)."""
    rng = np.random.default_rng(seed)
    steps = -(-frames // spec.frames_per_step)
    return rng.standard_normal((count, steps, spec.noise_frames, MOTION_DIM)).astype(np.float32)
