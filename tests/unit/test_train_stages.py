"""The training stages learn what they should, on tiny models and tiny synthetic clips (seconds):
- stage 1 overfits a tiny clip: the generated jaw follows the audio;
- stage 2 on the frozen audio path learns a guest cue -> host response, and guidance scales it
  (lambda 0 is the audio-only model, which cannot react);
- the loop resumes exactly; the audio augmentation is the audio's own gain; the renderer learns.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from f2f.features.mel import log_mel
from f2f.motion import FIELD_INDEX, MOTION_DIM
from f2f.timebase import SAMPLES_PER_FRAME
from models.avatar import Avatar, tiny_config
from pipeline.train import data as D
from pipeline.train.config import AudioAugment, MotionStageConfig, RendererStageConfig
from pipeline.train.loop import LoopConfig, TrainLoop
from pipeline.train.stages import (GuestTable, MotionObjective, MotionSampler, RendererObjective, RendererSampler,
                                   augment_mel, set_normalisers, weight_map)
from pipeline.train.windows import ClipInputs, WindowBank, rollout, rollout_noise
from tests.support.bursts import burst_envelope
from tests.support.torch_threads import one_thread  # noqa: F401  (autouse fixture)

JAW, PITCH, ROLL, SMILE, SMILE_RIGHT = (FIELD_INDEX[name] for name in
                                        ("jawOpen", "pitch", "roll", "mouthSmileLeft", "mouthSmileRight"))
NO_AUGMENT = AudioAugment(gain_range=(1.0, 1.0), noise_probability=0.0, warp_probability=0.0)


CUE_PERIOD = 36  # frames: a guest smile, a tilt, then a burst of talking, each answered 6 frames later


def cue_clip(rng: np.random.Generator, frames: int, framing: D.HostFraming) -> D.Clip:
    """Speech bursts whose envelope is the host's jaw, and guest cues that nothing in the audio announces,
    each answered by the host 6 frames later: a guest smile by a host smile (the main branch's cue), a
    guest head tilt by a host tilt (roll bump, the roll head's), the guest talking for a moment and
    stopping by a host nod (pitch bump, the nod/look head's)."""
    envelope = burst_envelope(rng, frames, start=5, length=(6, 20), level=(0.4, 0.9), gap=(6, 20))
    audio = (rng.standard_normal(frames * SAMPLES_PER_FRAME) * np.repeat(envelope, SAMPLES_PER_FRAME) * 0.3)
    motion = np.tile(framing.rest_motion(), (frames, 1)).astype(np.float32)
    motion[:, JAW] = envelope
    geometry = np.zeros((frames, MOTION_DIM), np.float32)
    bump = np.sin(np.pi * np.arange(1, 7) / 7)  # 6 frames
    for start in range(20, frames - CUE_PERIOD, CUE_PERIOD):
        geometry[start:start + 5, SMILE] = 1.0
        motion[start + 6:start + 12, [SMILE, SMILE_RIGHT]] += 0.8 * bump[:, None]
        geometry[start + 11:start + 16, ROLL] = 8.0
        motion[start + 17:start + 23, ROLL] += 8.0 * bump
        geometry[start + 22:start + 27, JAW] = 1.0
        motion[start + 28:start + 34, PITCH] += 10.0 * bump
    valid = np.ones(frames, bool)
    return D.Clip(record=None, mel=D.clip_mel(audio.astype(np.float32)), host_speaking=envelope > 0,
                  host_motion=motion, host_valid=valid, host_segment=np.zeros(frames, np.int32),
                  host_render_ok=valid, host_face_px=np.full(frames, 100.0, np.float32), guest_geometry=geometry,
                  guest_visible=np.ones(frames, bool), host_frames=np.zeros((frames, 1, 1, 3), np.uint8),
                  guest_crops=np.zeros((frames, 3, 1, 1), np.uint8))


def loop_config(steps: int, batch: int, lr: float = 3e-3, seed: int = 0) -> LoopConfig:
    return LoopConfig(steps=steps, batch_size=batch, lr=lr, warmup_steps=5, ema_decay=0.9, checkpoint_every=steps,
                      log_every=10, seed=seed)


def _corr(a, b) -> float:
    return float(np.corrcoef(a, b)[0, 1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny avatar through stage 1 and stage 2 on one 300-frame cue clip (~20 s on one busy core)."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("stages")
    framing = D.HostFraming()
    clip = cue_clip(np.random.default_rng(0), 300, framing)
    torch.manual_seed(0)
    avatar = Avatar(tiny_config())
    set_normalisers(avatar, [clip])
    spec = avatar.spec
    bank = WindowBank([clip], spec, framing.rest_motion())
    gen, enc = avatar.motion_generator, avatar.guest_encoder
    avatar.requires_grad_(False)
    gen.requires_grad_(True)
    gen.guest_projector.requires_grad_(False)
    stage1_config = MotionStageConfig(loop=loop_config(500, 32), audio=NO_AUGMENT, history_noise_max=1.0,
                                      history_reset_probability=0.0)
    stage1 = MotionObjective(gen, None, 2.0)
    loop1 = TrainLoop("stage1", stage1, stage1, stage1_config.loop, tmp / "stage1", "fp1", quiet=True)
    loop1.run(MotionSampler(bank, gen, stage1_config))
    stage1.load_state_dict(loop1.ema_state())
    avatar.requires_grad_(False)
    gen.guest_projector.requires_grad_(True)
    enc.geometry.requires_grad_(True)
    enc.fuse.requires_grad_(True)
    table = GuestTable.of([clip])
    table.appearance = np.zeros((clip.num_frames, enc.appearance_dim), np.float32)
    stage2_config = dataclasses.replace(stage1_config, loop=loop_config(500, 32, lr=2e-3, seed=1), guest_dropout=0.1)
    stage2 = MotionObjective(gen, enc, 2.0)
    frozen = {k: v.clone() for k, v in gen.state_dict().items() if not k.startswith("guest_projector")}
    loop2 = TrainLoop("stage2", stage2, stage2, stage2_config.loop, tmp / "stage2", "fp2", quiet=True)
    loop2.run(MotionSampler(bank, gen, stage2_config, table))
    stage2.load_state_dict(loop2.ema_state())
    avatar.eval()
    return avatar, clip, loop1, loop2, frozen


def test_a_tiny_model_overfits_a_tiny_clip(trained):
    avatar, clip, loop1, _, _ = trained
    assert loop1.summary()["last_mean"] < 0.5 * loop1.summary()["first_mean"], loop1.summary()
    features = np.zeros((clip.num_frames, avatar.spec.guest_feature_dim), np.float32)
    noise = rollout_noise(1, clip.num_frames, avatar.spec, seed=0)
    motion = rollout(avatar.motion_generator, [ClipInputs(clip.mel, features, clip.guest_visible * 0)], 0.0, noise)[0]
    assert _corr(motion[10:, JAW], clip.host_motion[10:, JAW]) > 0.85


def test_stage2_learns_the_guest_cue_on_the_frozen_audio_path(trained):
    avatar, clip, _, loop2, frozen = trained
    gen = avatar.motion_generator
    for key, value in gen.state_dict().items():  # stage 2 left the audio path exactly as stage 1 made it
        if key in frozen:
            assert torch.equal(value, frozen[key]), key
    with torch.no_grad():
        features = avatar.guest_encoder(torch.zeros(clip.num_frames, 3, avatar.spec.crop_size, avatar.spec.crop_size),
                                        torch.from_numpy(clip.guest_geometry)).numpy()
    inputs = [ClipInputs(clip.mel, features, clip.guest_visible)] * 2
    noise = np.concatenate([rollout_noise(1, clip.num_frames, avatar.spec, seed=s) for s in (0, 0)])
    video, audio_only = rollout(gen, inputs, [1.0, 0.0], noise)
    # The main branch's smile, the roll head's tilt and the nod/look head's nod: the data's bump 8 frames
    # after the cue, at least `learned` of it with the video branch, little without.
    # (On 500 steps: smile 0.39 of 0.78, tilt 5.6 of 7.8, nod 9.2 of 9.7.)
    for field, cue_field, learned in ((SMILE, SMILE, 0.3), (ROLL, ROLL, 0.4), (PITCH, JAW, 0.5)):
        cues = np.flatnonzero(np.diff(clip.guest_geometry[:, cue_field]) > 0.5) + 1
        bump = lambda m: np.mean([m[c + 8, field] - m[c, field] for c in cues[1:]])  # noqa: E731
        data = bump(clip.host_motion)
        assert bump(video) > learned * data, (field, bump(video), data)
        assert abs(bump(audio_only)) < 0.3 * data, (field, bump(audio_only), data)


def test_the_loop_resumes_exactly(tmp_path):
    rng = np.random.default_rng(3)
    framing = D.HostFraming()
    clip = cue_clip(rng, 120, framing)

    def run(directory, stops):
        config = MotionStageConfig(loop=dataclasses.replace(loop_config(8, 8), checkpoint_every=3))
        for stop in stops:  # each part as a new process would run it: fresh networks, then the checkpoint
            torch.manual_seed(0)
            avatar = Avatar(tiny_config())
            set_normalisers(avatar, [clip])
            gen = avatar.motion_generator
            objective = MotionObjective(gen, None, 2.0)
            loop = TrainLoop("stage1", objective, objective, config.loop, directory, "fp", quiet=True)
            loop.run(MotionSampler(WindowBank([clip], avatar.spec, framing.rest_motion()), gen, config), until=stop)
        return loop

    whole = run(tmp_path / "whole", [None])
    resumed = run(tmp_path / "resumed", [5, None])  # interrupted after step 5: resumes from step 3
    assert resumed.step == whole.step == 8
    assert resumed.losses == pytest.approx(whole.losses, rel=1e-5)
    for key, value in whole.module.state_dict().items():
        assert torch.allclose(value, resumed.module.state_dict()[key], atol=1e-6), key
    assert (tmp_path / "whole" / "weights.safetensors").is_file()


def offset_setup():
    """A tiny generator, the windows of one cue clip, and a stage config without history noise or
    resets, so two samplers on the same step draw the same windows and differ only by the offsets."""
    framing = D.HostFraming()
    clip = cue_clip(np.random.default_rng(5), 120, framing)
    avatar = Avatar(tiny_config())
    set_normalisers(avatar, [clip])
    bank = WindowBank([clip], avatar.spec, framing.rest_motion())
    plain = MotionStageConfig(loop=loop_config(1, 64), history_noise_max=0.0, history_noise_other_max=0.0,
                              history_noise_increment_max=0.0, history_reset_probability=0.0)
    return avatar.motion_generator, bank, plain


def test_history_offset_moves_the_whole_history_and_the_target_keeps_most_of_it():
    """Increment fields: one offset per window and field over all history frames; the target keeps
    (1 - recovery) of it, so the model learns to lead a drifted pose back a little per frame.
    Only the listed fields move, and never standardised ones (jaw, blinks): their targets do not depend
    on the history."""
    gen, bank, plain = offset_setup()
    shifted = dataclasses.replace(plain, history_offset_probability=1.0, history_offset_max=1.0,
                                  history_offset_recovery=0.25,
                                  history_offset_fields=("yaw", "pitch", "roll", "jawOpen", "eyeBlinkLeft"))
    a, b = MotionSampler(bank, gen, plain)(0, 0), MotionSampler(bank, gen, shifted)(0, 0)  # same windows
    offset = (b["motion_history"] - a["motion_history"]).numpy()  # (B, H, 15)
    moved = np.zeros(MOTION_DIM, bool)
    moved[[FIELD_INDEX[name] for name in ("yaw", "pitch", "roll")]] = True  # listed increment fields only
    np.testing.assert_allclose(offset, offset[:, :1].repeat(offset.shape[1], 1), atol=1e-5)
    assert np.all(offset[..., ~moved] == 0) and np.all(np.abs(offset[..., moved]).max(axis=(0, 1)) > 0)
    assert np.abs(offset[:, 0, FIELD_INDEX["yaw"]]).mean() > 0.1 * float(gen.motion_std[FIELD_INDEX["yaw"]])
    kept = (b["target"] - a["target"]).numpy()  # (B, K, 15)
    np.testing.assert_allclose(kept, 0.75 * offset[:, :1], atol=1e-5)


def test_an_offset_in_progress_shows_its_recovery_in_the_history_and_the_target_goes_on_with_it():
    """`history_offset_in_progress`: the recovery has already run for 0..H-1 frames, so the history's
    offset shrinks by (1 - recovery) per frame over those frames and the target keeps shrinking at the
    same rate: a model that reads the history's increments learns to go on with its own recovery."""
    gen, bank, plain = offset_setup()
    running = dataclasses.replace(plain, history_offset_probability=1.0, history_offset_max=1.0,
                                  history_offset_recovery=0.25, history_offset_fields=("roll",),
                                  history_offset_in_progress=True)
    a, b = MotionSampler(bank, gen, plain)(0, 0), MotionSampler(bank, gen, running)(0, 0)  # same windows
    roll = FIELD_INDEX["roll"]
    offset = (b["motion_history"] - a["motion_history"]).numpy()[..., roll]  # (B, H)
    newest = offset[:, -1:]
    ratio = offset / newest  # 1 at the newest frame, 1/0.75 per frame back while the recovery ran
    steps = np.round(np.log(ratio) / -np.log(0.75)).astype(int)  # (B, H) frames of recovery after each slot
    np.testing.assert_allclose(ratio, 0.75 ** -steps, rtol=1e-4)
    H = offset.shape[1]
    assert np.all(np.diff(steps, axis=1) <= 0) and np.all(steps[:, -1] == 0)
    ran = steps[:, 0]  # how long the recovery had run; all of 0..H-1 occur
    assert set(ran.tolist()) == set(range(H))
    for row in range(len(steps)):  # counting back from the newest: 0, 1, .., ran, then constant
        expected = np.minimum(np.arange(H)[::-1], ran[row])
        np.testing.assert_array_equal(steps[row], expected)
    kept = (b["target"] - a["target"]).numpy()[..., roll]  # (B, K)
    K = kept.shape[1]
    np.testing.assert_allclose(kept, newest * 0.75 ** np.arange(1, K + 1)[None], rtol=1e-4, atol=1e-6)


def test_a_field_listed_with_its_own_recovery_rate_recovers_at_that_rate():
    """`history_offset_recovery_by_field`: roll recovers at its own (slower) rate, the other fields at the
    shared one, from the same offsets."""
    gen, bank, plain = offset_setup()
    fields = ("yaw", "roll")
    shared = dataclasses.replace(plain, history_offset_probability=1.0, history_offset_max=1.0,
                                 history_offset_recovery=0.25, history_offset_fields=fields)
    own = dataclasses.replace(shared, history_offset_recovery_by_field=(("roll", 0.05),))
    a, b, c = (MotionSampler(bank, gen, cfg)(0, 0) for cfg in (plain, shared, own))  # same windows, offsets
    np.testing.assert_array_equal(b["motion_history"].numpy(), c["motion_history"].numpy())
    offset = (b["motion_history"] - a["motion_history"]).numpy()[:, -1]  # (B, 15)
    kept = (c["target"] - a["target"]).numpy()  # (B, K, 15)
    K = kept.shape[1]
    for name, rate in (("yaw", 0.25), ("roll", 0.05)):
        i = FIELD_INDEX[name]
        expected = offset[:, i, None] * (1.0 - rate) ** np.arange(1, K + 1)[None]
        np.testing.assert_allclose(kept[..., i], expected, rtol=1e-4, atol=1e-6)
    for wrong in ((("rol", 0.05),), (("roll", 1.5),)):
        with pytest.raises(ValueError, match="history_offset_recovery_by_field"):
            MotionSampler(bank, gen, dataclasses.replace(shared, history_offset_recovery_by_field=wrong))


def test_an_offset_inside_the_datas_band_is_held_and_only_the_part_beyond_it_recovers():
    """`history_offset_hold_within_std` b: a drifted pose within the data mean +- b std is one the
    avatar may hold (the target keeps the offset); of a pose beyond it, only the part outside recovers."""
    gen, bank, plain = offset_setup()
    roll = FIELD_INDEX["roll"]
    mean, std = float(gen.motion_mean[roll]), float(gen.motion_std[roll])

    def shift(band):
        cfg = dataclasses.replace(plain, history_offset_probability=1.0, history_offset_max=2.0,
                                  history_offset_recovery=0.25, history_offset_fields=("roll",),
                                  history_offset_hold_within_std=band)
        a, b = MotionSampler(bank, gen, plain)(0, 0), MotionSampler(bank, gen, cfg)(0, 0)  # same windows
        offset = (b["motion_history"] - a["motion_history"]).numpy()[:, -1, roll]  # (B,)
        kept = (b["target"] - a["target"]).numpy()[:, 0, roll]  # (B,) in the first made frame
        return offset, kept, b["motion_history"].numpy()[:, -1, roll]

    offset, kept, _ = shift(1e6)  # every pose is inside: every offset is held
    assert np.abs(offset).max() > 0.5 * std
    np.testing.assert_allclose(kept, offset, atol=1e-5)
    offset, kept, pose = shift(1.0)
    beyond = np.clip(np.abs(pose - mean) - std, 0, np.abs(offset))  # the part outside mean +- 1 std
    outward = np.sign(pose - mean) == np.sign(offset)
    recovering = np.where(outward, np.sign(offset) * beyond, 0.0)
    np.testing.assert_allclose(kept, offset - 0.25 * recovering, atol=1e-4)
    assert (recovering != 0).any() and (outward & (recovering == 0)).any()


def test_audio_gain_augmentation_is_the_audio_at_another_level():
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(16000) * 0.05).astype(np.float32)
    mel = log_mel(audio)[None]
    gain = AudioAugment(gain_range=(0.5, 0.5), noise_probability=0.0, warp_probability=0.0)
    np.testing.assert_allclose(augment_mel(mel, rng, gain)[0], log_mel(audio * 0.5), atol=2e-3)
    unchanged = augment_mel(mel, rng, NO_AUGMENT)
    np.testing.assert_allclose(unchanged, mel, atol=1e-4)


def test_the_renderer_learns_its_frames(tmp_path):
    """A few hundred steps on four frames: the error drops well below the start."""
    torch.manual_seed(0)
    avatar = Avatar(tiny_config())
    framing = D.HostFraming()
    size = avatar.spec.frame_size
    rng = np.random.default_rng(0)
    frames = np.zeros((4, size, size, 3), np.uint8)
    motion = np.tile(framing.rest_motion(), (4, 1)).astype(np.float32)
    for i in range(4):  # a face-like blob whose mouth opening is the jaw
        motion[i, JAW] = i / 3
        frames[i, 16:48, 20:44] = (200, 160, 140)
        frames[i, 38:38 + 1 + 3 * i, 28:36] = (60, 20, 20)
    clip = dataclasses.replace(cue_clip(rng, 4, framing), host_frames=frames, host_motion=motion,
                               host_render_ok=np.ones(4, bool))
    set_normalisers(avatar, [cue_clip(rng, 50, framing)])
    config = RendererStageConfig(loop=loop_config(150, 4, lr=3e-3), jitter_probability=0.0)
    objective = RendererObjective(avatar.renderer, weight_map(framing, size, config), config.gradient_weight)
    loop = TrainLoop("renderer", objective, objective, config.loop, tmp_path, "fp", quiet=True)
    loop.run(RendererSampler([clip], config, framing))
    summary = loop.summary()
    assert summary["last_mean"] < 0.5 * summary["first_mean"], summary


def test_stage2_selection_refuses_a_split_it_trains_on_and_keeps_the_best_reacting_run():
    from pipeline.train.config import TrainConfig
    from pipeline.train.selection import CandidateScore, best_candidate

    with pytest.raises(ValueError, match="also trained on"):
        TrainConfig(stage2_candidates=2, selection_split="val", splits=("train", "val"))
    with pytest.raises(ValueError, match=">= 1"):
        TrainConfig(stage2_candidates=0)
    config = TrainConfig(stage2_candidates=3, splits=("train",))
    first = config.stage2.loop.seed
    assert config.stage2_seeds() == [first, first + 1, first + 2]

    def score(seed, f1):
        return CandidateScore(seed, f1, 0.0, 0.0, 0.9, {})

    assert best_candidate([score(1, 0.2), score(2, 0.5), score(3, 0.4)]) == 1
    assert best_candidate([score(1, 0.5), score(2, 0.5)]) == 0  # a tie keeps the earlier seed


def test_a_candidates_selection_score_is_kept_for_its_weights_and_settings(tmp_path):
    """A resumed training that trains nothing new reads the score instead of generating the split again."""
    from pipeline.train.selection import CandidateScore, Stage2Selector

    class CountingSelector(Stage2Selector):
        calls = 0

        def __init__(self):
            pass  # no split: `score` below stands in for generating it

        def score(self, avatar, seed):
            self.calls += 1
            return CandidateScore(seed, 0.25 * self.calls, 0.5, 0.5, 0.9, {"smile_back": 0.3})

    selector, path = CountingSelector(), tmp_path / "stage2" / "selection.json"
    first = selector.score_kept(None, 17, path, "weights-a")
    assert selector.calls == 1 and path.is_file()
    assert selector.score_kept(None, 17, path, "weights-a") == first
    assert selector.calls == 1
    changed = selector.score_kept(None, 17, path, "weights-b")  # retrained or other settings
    assert selector.calls == 2 and changed.reaction_f1 == 0.5


def test_stage2_also_fits_the_main_branchs_pitch_and_yaw_beside_the_nod_look_head():
    """The nod/look head replaces pitch and yaw in the model's velocity, and the main branch still
    learns them (their features are shared with the cues it answers); roll's main-branch output, unused,
    gets no loss. The extra term counts video rows only."""
    from models.avatar import random_avatar
    from pipeline.train.flow_matching import interpolate

    avatar = random_avatar(tiny_config(), seed=3)
    gen, spec = avatar.motion_generator, avatar.spec
    assert gen.main_branch_fields().nonzero().flatten().tolist() == sorted([PITCH, FIELD_INDEX["yaw"]])
    objective = MotionObjective(gen, None, 2.0)
    rng = torch.Generator().manual_seed(0)
    batch = {"audio_mel": torch.randn(4, spec.mel_frames, spec.mel_bins, generator=rng),
             "motion_history": torch.randn(4, spec.motion_history_frames, MOTION_DIM, generator=rng),
             "target": torch.randn(4, spec.noise_frames, MOTION_DIM, generator=rng),
             "noise": torch.randn(4, spec.noise_frames, MOTION_DIM, generator=rng), "t": torch.rand(4, generator=rng)}
    features, visible = objective.guest_inputs(4)
    features = torch.randn(features.shape, generator=rng)
    visible = torch.ones_like(visible)
    objective.guest_inputs = lambda *args, **kwargs: (features, visible)
    with torch.no_grad():
        data = gen.to_flow(batch["target"], batch["motion_history"])
        x_t, velocity = interpolate(data, batch["noise"], batch["t"])
        cond = gen.condition(batch["audio_mel"], features, visible, batch["motion_history"])
        for on in (torch.ones(4), torch.zeros(4), torch.tensor([1.0, 0.0, 1.0, 0.0])):
            loss, _ = objective(**batch, video_on=on)
            model = (gen.velocity(x_t, batch["t"], cond, on) - velocity).pow(2)
            main = (gen.network_velocity(x_t, batch["t"], cond, on) - velocity).pow(2)
            fitted = torch.zeros(MOTION_DIM)
            fitted[[PITCH, FIELD_INDEX["yaw"]]] = 1.0
            expected = ((model + main * fitted * on[:, None, None]) * objective.weights * gen.sampled_fields).mean()
            torch.testing.assert_close(loss, expected)
