"""Training windows are the gateway's step inputs, and offline generation equals streaming generation.

The serving side is built from the gateway's own pieces (`server.host_audio.HostAudioTimeline` on a
fake clock, `server.partner_input.GuestContext`, the history update of `server/avatar_loop.py`), so
any drift between how training assembles a window and how a session does fails here.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from f2f.avatar_spec import AvatarSpec
from f2f.motion import FIELD_INDEX, MOTION_DIM, neutral_vector
from f2f.timebase import SAMPLES_PER_FRAME
from models.avatar import random_avatar, tiny_config
from pipeline.train import data as D
from pipeline.train.windows import ClipInputs, WindowBank, rollout, rollout_noise
from server.frames import GuestObservation, SessionClock
from server.host_audio import HostAudioTimeline
from server.partner_input import GuestContext
from tests.support.torch_threads import one_thread  # noqa: F401  (autouse fixture)


def synthetic_clip(rng: np.random.Generator, frames: int, spec: AvatarSpec, cut_at: int | None = None) -> D.Clip:
    """A clip without video: noise-burst audio, random motion, a guest visible most of the time."""
    audio = (rng.standard_normal(frames * SAMPLES_PER_FRAME) * 0.1).astype(np.float32)
    audio[: 7 * SAMPLES_PER_FRAME] = 0.0
    segment = np.zeros(frames, np.int32)
    if cut_at is not None:
        segment[cut_at:] = 1
    valid = np.ones(frames, bool)
    valid[frames // 3] = False
    segment[frames // 3] = -1
    return D.Clip(
        record=None, mel=D.clip_mel(audio), host_speaking=np.zeros(frames, bool),
        host_motion=rng.standard_normal((frames, MOTION_DIM)).astype(np.float32), host_valid=valid,
        host_segment=segment, host_render_ok=valid.copy(), host_face_px=np.full(frames, 100.0, np.float32),
        guest_geometry=rng.standard_normal((frames, MOTION_DIM)).astype(np.float32),
        guest_visible=rng.random(frames) < 0.8, host_frames=np.zeros((frames, 1, 1, 3), np.uint8),
        guest_crops=np.zeros((frames, 3, 1, 1), np.uint8)), audio


class ServingSession:
    """One session's input assembly, as server/avatar_loop.py does it, on a fake clock."""

    def __init__(self, spec: AvatarSpec, audio: np.ndarray):
        self.spec = spec
        self.now = 0.0
        self.clock = SessionClock(now=lambda: self.now)
        self.clock.start()
        self.audio = HostAudioTimeline(self.clock, history_s=60.0)
        self.audio.inject(audio)  # the host audio on the session timeline from sample 0
        self.guests = GuestContext(spec, stale_s=0.25)
        self.history = np.tile(neutral_vector(), (spec.motion_history_frames, 1)).astype(np.float32)

    def partner_frame(self, feature: np.ndarray, visible: bool) -> None:
        """The face worker's observation of one partner frame, then the 25 fps tick that takes it."""
        self.now += 0.04
        self.guests.observe(GuestObservation(feature=feature, visible=visible, partner_pts=self.now,
                                             observed_at=self.now))
        self.guests.tick(self.now)

    def step_inputs(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        spec = self.spec
        K, L = spec.frames_per_step, spec.lookahead_frames
        self.audio.finalize_to(self.audio.needed_for(n + K + L))
        mel = self.audio.mel_window(n - spec.audio_past_frames, n + K + L)
        return mel, self.guests._features.copy(), self.guests._visible.copy()


@pytest.mark.parametrize("spec", [AvatarSpec(guest_feature_dim=8),
                                  AvatarSpec(guest_feature_dim=8, frames_per_step=2, lookahead_frames=1,
                                             audio_past_frames=3, guest_context_frames=16)])
def test_training_windows_are_the_gateway_step_inputs(spec):
    rng = np.random.default_rng(0)
    clip, audio = synthetic_clip(rng, 90, spec, cut_at=50)
    rest = D.HostFraming().rest_motion()
    bank = WindowBank([clip], spec, rest)
    features = rng.standard_normal((clip.num_frames, spec.guest_feature_dim)).astype(np.float32)
    session = ServingSession(spec, audio)
    K, H = spec.frames_per_step, spec.motion_history_frames
    checked = 0
    for n in range(0, clip.num_frames - K + 1, K):
        mel, guest_features, guest_visible = session.step_inputs(n)
        w = bank.gather(np.array([0]), np.array([n]))
        np.testing.assert_allclose(w["audio_mel"][0], mel, atol=1e-4)  # float64 BLAS rounding only
        index = w["guest_index"][0]
        assert np.array_equal(guest_visible[0] > 0, (index >= 0) & clip.guest_visible[np.maximum(index, 0)])
        shown = guest_visible[0] > 0
        np.testing.assert_array_equal(guest_features[0][shown], features[index[shown]])
        np.testing.assert_array_equal(w["target"][0], clip.host_motion[n:n + K])
        expected_history = np.stack([clip.host_motion[i] if i >= 0 else rest for i in range(n - H, n)])
        np.testing.assert_array_equal(w["motion_history"][0], expected_history)
        for f in range(n, n + K):  # the partner frames of this step arrive while it runs
            session.partner_frame(features[f], bool(clip.guest_visible[f]))
        checked += 1
    assert checked > 10
    # Training windows: K valid targets and H valid history frames in one segment, no cut inside.
    for c, n in bank.index:
        assert np.all(clip.host_segment[n - H:n + K] == clip.host_segment[n]) and clip.host_segment[n] >= 0
    assert not any(n - H < 50 <= n + K - 1 for _, n in bank.index), "a window crosses the cut"


@pytest.mark.parametrize("frames_per_step, plan_frames", [(1, 0), (2, 0), (1, 3)])
def test_streaming_generation_equals_the_offline_whole_clip_call(frames_per_step, plan_frames):
    """A clip generated step by step as a session runs it (server pieces, the network's forward per
    step, its output fed back as history) equals `rollout`, the whole-clip call, with the same noise
    (with a plan too: each step samples K + Q frames and keeps K)."""
    config = tiny_config()
    config = dataclasses.replace(config, spec=dataclasses.replace(config.spec, frames_per_step=frames_per_step,
                                                                  plan_frames=plan_frames))
    avatar = random_avatar(config, seed=5)  # randomised video branch: the guest matters
    spec = config.spec
    rng = np.random.default_rng(1)
    clip, audio = synthetic_clip(rng, 40, spec)
    features = rng.standard_normal((clip.num_frames, spec.guest_feature_dim)).astype(np.float32)
    noise = rollout_noise(1, clip.num_frames, spec, seed=3)
    offline = rollout(avatar.motion_generator, [ClipInputs(clip.mel, features, clip.guest_visible)], 1.5, noise)[0]

    session = ServingSession(spec, audio)
    K = spec.frames_per_step
    streamed = []
    with torch.no_grad():
        for step, n in enumerate(range(0, clip.num_frames, K)):
            mel, guest_features, guest_visible = session.step_inputs(n)
            motion = avatar.motion_generator(
                torch.from_numpy(mel)[None], torch.from_numpy(guest_features)[None],
                torch.from_numpy(guest_visible)[None], torch.from_numpy(session.history)[None],
                torch.from_numpy(noise[0, step])[None], torch.full((1, 1), 1.5))[0].numpy()
            streamed.append(motion)
            session.history = np.concatenate([session.history, motion])[-spec.motion_history_frames:]
            for f in range(n, min(n + K, clip.num_frames)):
                session.partner_frame(features[f], bool(clip.guest_visible[f]))
    streamed = np.concatenate(streamed)[: clip.num_frames]
    np.testing.assert_allclose(streamed, offline, atol=2e-4)  # mel: float64 BLAS rounding, fed back


def test_rollout_of_clips_of_different_lengths_matches_each_alone():
    avatar = random_avatar(tiny_config(), seed=2)
    spec = avatar.spec
    rng = np.random.default_rng(4)
    inputs = []
    for frames in (30, 22):
        clip, _ = synthetic_clip(rng, frames, spec)
        inputs.append(ClipInputs(clip.mel, rng.standard_normal((frames, spec.guest_feature_dim)).astype(np.float32),
                                 clip.guest_visible))
    noise = rollout_noise(2, 30, spec, seed=0)
    together = rollout(avatar.motion_generator, inputs, [0.0, 2.0], noise)
    alone = rollout(avatar.motion_generator, inputs[1:], 2.0, noise[1:])
    assert together[1].shape == (22, MOTION_DIM)
    # float32 round-off of batched matmuls, carried through 22 autoregressive steps; padding leaking
    # into the shorter clip would differ by O(1)
    np.testing.assert_allclose(together[1], alone[0], rtol=1e-4, atol=5e-5)


def test_speech_gate_and_frame_mask():
    gate = D.speech_gate([[0.5, 1.0]], 32000, pad_s=0.1, ramp_s=0.01)
    assert gate[int(0.45 * 16000)] == 1.0 and gate[int(1.05 * 16000)] == 1.0
    assert gate[int(0.3 * 16000)] == 0.0 and gate[int(1.3 * 16000)] == 0.0
    mask = D.frame_mask([[0.5, 1.0]], 50)
    assert mask.sum() == 13 and mask[13] and not mask[11]


def test_canonical_transform_puts_the_eyes_and_face_size_at_the_framing():
    framing = D.HostFraming(face_fraction=0.55, eye_x=0.5, eye_y=0.35)
    motion = neutral_vector()
    motion[FIELD_INDEX["tx"]], motion[FIELD_INDEX["ty"]], motion[FIELD_INDEX["scale"]] = 0.1, -0.05, 0.4
    matrix = D.canonical_transform(motion, 256, framing, 128)
    eye = np.array([(0.1 + 0.5) * 256, (-0.05 + 0.5) * 256, 1.0])
    np.testing.assert_allclose(matrix @ eye, [0.5 * 128, 0.35 * 128], atol=1e-6)
    assert matrix[0, 0] == pytest.approx(0.55 * 128 / (0.4 * 256))
    canonical = D.canonical_motion(motion[None], framing)[0]
    np.testing.assert_allclose(canonical[[3, 4, 5]], [0.0, -0.15, 0.55], atol=1e-6)


def test_slow_field_smoothing_removes_jitter_keeps_a_nod_and_stays_inside_segments():
    from f2f.motion import FIELD_INDEX
    from pipeline.train.data import smooth_slow_fields

    rng = np.random.default_rng(0)
    n = 200
    pitch, jaw = FIELD_INDEX["pitch"], FIELD_INDEX["jawOpen"]
    nod = np.zeros(n)
    nod[50:63] = 10.0 * np.sin(np.pi * np.arange(13) / 12)  # a 0.5 s nod, 10 deg deep
    motion = np.zeros((n, 15), np.float32)
    motion[:, pitch] = nod + rng.normal(0, 1.0, n)  # the mesh's jitter
    motion[:, jaw] = rng.uniform(0, 1, n)
    motion[150:, pitch] += 20.0  # a camera cut: another segment
    segment = np.where(np.arange(n) < 150, 0, 1)
    segment[100:105] = -1  # invalid frames stay as they are
    out = smooth_slow_fields(motion, segment, sigma=1.5)
    assert np.array_equal(out[:, jaw], motion[:, jaw])  # fast fields untouched
    assert np.array_equal(out[100:105], motion[100:105])
    still = np.r_[0:40, 70:100, 110:140]
    assert np.diff(out[still, pitch]).std() < 0.5 * np.diff(motion[still, pitch]).std()
    clean = np.zeros_like(motion)
    clean[:, pitch] = nod
    assert smooth_slow_fields(clean, np.zeros(n, int), sigma=1.5)[:, pitch].max() > 9.0  # the nod keeps > 90% of its depth
    assert abs(out[150:, pitch].mean() - 20.0) < 0.5 and out[140:150, pitch].max() < 5.0  # no leak across the cut
    assert np.array_equal(smooth_slow_fields(motion, segment, sigma=0.0), motion)


def test_causal_slow_field_smoothing_does_not_start_a_nod_before_it_starts():
    from f2f.motion import FIELD_INDEX
    from pipeline.train.data import smooth_slow_fields

    n = 100
    pitch, roll = FIELD_INDEX["pitch"], FIELD_INDEX["roll"]
    motion = np.zeros((n, 15), np.float32)
    motion[50:63, pitch] = 10.0 * np.sin(np.pi * np.arange(13) / 12)  # a nod from frame 50
    motion[50:, roll] = 5.0  # a tilt from frame 50
    segment = np.zeros(n, int)
    zero_phase = smooth_slow_fields(motion, segment, sigma=1.5)
    causal = smooth_slow_fields(motion, segment, sigma=1.5, causal=("pitch",))
    assert zero_phase[48, pitch] > 0.1  # zero-phase: the nod shows two frames early
    assert np.all(causal[:51, pitch] == 0.0) and causal[51, pitch] > 1.0  # causal: its first move is its own
    assert causal[:, pitch].max() > 9.0  # and it keeps > 90% of its depth
    np.testing.assert_array_equal(causal[:, roll], zero_phase[:, roll])  # the other fields stay zero-phase
    with pytest.raises(ValueError, match="slow fields"):
        smooth_slow_fields(motion, segment, sigma=1.5, causal=("jawOpen",))
