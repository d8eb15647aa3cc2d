"""Configuration of `f2f train`: the avatar's sizes, the data, and each stage's loop and augmentations."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

from f2f.avatar_spec import AvatarSpec
from models.avatar import AvatarConfig, tiny_config
from models.guest_encoder import GuestEncoderConfig
from f2f.motion import MOTION_FIELDS
from models.motion_generator import ABSOLUTE_FIELDS, MotionGeneratorConfig
from models.renderer import RendererConfig
from pipeline.train.data import DataConfig
from pipeline.train.loop import LoopConfig


def default_avatar_config(name: str = "default") -> AvatarConfig:
    """The default avatar's sizes: ~1.8 M parameters (~7 MiB float32) and a per-frame cost within the
    25 ms CPU budget at 256x256 (the model card has the measured figures).

    One frame of audio look-ahead, not two: the output runs (K + L) frames behind the input audio,
    and on the default avatar's series L = 1 gave the same jaw correlation of the generated motion
    (test split, lambda 0: 0.932 at L = 2 and L = 1) for 40 ms less audio-to-photon latency.
    The renderer's last doubling is sub-pixel: 12.2 -> 6.6 ms per frame (onnxruntime, 1 thread).
    The motion is sampled with a 6-frame plan, the history carries its increments, and the guest
    branch also sees the guest's geometry relative to the guest's own window mean (docs/model.md,
    session 10: held-out test reaction F1 0.52 at lambda 1.5, against 0.21-0.27 without it). Roll's
    video term comes from a head that reads only the guest's roll (session 18: fewer tilts at smiles),
    pitch's and yaw's from one that reads the guest's jaw and yaw (session 20: nods and looks).
    The flow is sampled from 0.1 x the noise: with the field heads, fewer spontaneous moves read as
    responses to nothing (session 21, this avatar's val split, lambda 1.5, 6 noise seeds: reaction F1
    0.72 / 0.76 / 0.80 at temperature 0.5 / 0.25 / 0.1; 0 would drop the sampling altogether)."""
    return AvatarConfig(name=name, spec=AvatarSpec(lookahead_frames=1, plan_frames=6),
                        guest_encoder=GuestEncoderConfig(),
                        motion_generator=MotionGeneratorConfig(temperature=0.1, guest_activity_frames=8,
                                                               history_increments=True,
                                                               guest_relative_geometry=True, guest_roll_head=True,
                                                               guest_nod_look_head=True),
                        renderer=RendererConfig(channels=(64, 64, 48, 32, 16), subpixel_output=True))


@dataclass(frozen=True)
class AudioAugment:
    """Host audio as the gateway may receive it: another level, a noise floor, another voice."""

    gain_range: tuple[float, float] = (0.25, 2.0)  # amplitude, log-uniform
    noise_probability: float = 0.5
    noise_range: tuple[float, float] = (1e-4, 3e-3)  # white-noise std, log-uniform
    warp_probability: float = 0.5  # mel-axis stretch (vocal tract length): the mouth must not hinge on one voice
    warp_range: tuple[float, float] = (0.9, 1.1)


@dataclass(frozen=True)
class GuestPretrainConfig:
    """The guest encoder's CNN learns to read the partner's pose and expression from the crop (the
    mesh's geometry is the target), then is frozen, as the paper's I3D."""

    loop: LoopConfig = LoopConfig(steps=300, batch_size=64, lr=2e-3, warmup_steps=20, ema_decay=0.98,
                                  checkpoint_every=100, seed=21)


@dataclass(frozen=True)
class MotionStageConfig:
    loop: LoopConfig = LoopConfig()
    audio: AudioAugment = AudioAugment()
    # History noise (std U(0, max) per window): large on the mouth, which must come from the audio
    # (in data standard deviations); small elsewhere, where continuity is what the history is for
    # (standardised fields: data std; increment fields: increment std), so that a rollout's own small
    # errors are familiar.
    history_noise_max: float = 0.5
    history_noise_other_max: float = 0.1
    history_noise_increment_max: float = 0.5
    # The gateway starts a session's history at f2f.motion.neutral_vector(), far from this avatar's
    # framing: some windows get their first 1..H history frames replaced by it.
    history_reset_probability: float = 0.03
    # History offset: some windows get their whole history shifted by one random offset per listed
    # field (std U(0, max) x the field's data std; increment fields only) and the target keeps all but
    # `history_offset_recovery` of it per frame. Without it the history is always on track in training,
    # so a rollout's increments integrate their own errors into a random walk (head pose drifted
    # tens of degrees over a clip); with it the model learns to lead a drifted pose back, smoothly.
    history_offset_probability: float = 0.0
    history_offset_max: float = 0.0
    history_offset_recovery: float = 0.1
    # Per-field recovery rates that replace `history_offset_recovery` for the named fields. A recovery
    # is itself a movement: at 0.1 per frame a roll offset of 5 deg comes back by 3 deg within 0.45 s,
    # which looks (and is detected) like a head tilt, and a smile offset like a smile; slower there, a
    # drifted pose creeps back instead of making a gesture.
    history_offset_recovery_by_field: tuple[tuple[str, float], ...] = ()
    history_offset_fields: tuple[str, ...] = ()  # the (increment) fields that get offsets
    # Offsets whose recovery is already under way: the history shows the last 0..H-1 frames of it, so
    # the model sees its own recovery as motion and learns to go on with it at the same rate. With a
    # constant offset in the history only, a model that reads the history's increments (momentum)
    # continues a recovery it has started *and* adds the recovery again: it overshoots and its head
    # sways (plan models: roll increments 3x the data's; docs/model.md).
    history_offset_in_progress: bool = False
    # None: the whole offset recovers (towards the data's own pose at that moment). A number b: only the
    # part of it that takes the pose beyond the data mean +- b std recovers; inside that band the
    # offset is kept. A pose the avatar could well hold is then not "wrong", so nothing teaches the
    # model to correct its level towards where the data happened to be (which, while the host
    # listens, is the guest's mirror level: it moved whenever its level was off the guest's).
    history_offset_hold_within_std: float | None = None
    mouth_weight: float = 2.0
    reaction_weight: float = 1.0  # loss weight of the fields reactions move (head pose, smile, gaze)
    # Windows drawn with probability 1 + dynamic_sampling * (how much the reaction fields change in
    # the next 0.4 s, relative to the mean): reactions are rare moments among mostly still listening.
    dynamic_sampling: float = 0.0
    # ... and that probability times this where the host listens (the rules apply only then; while
    # he talks, his head moves with his own speech and no reaction is due).
    listening_weight: float = 1.0
    # Stage 2: guest-context dropout. The whole window is marked invisible (what the gateway sends
    # when no partner face is seen), so the branch learns the no-partner condition; the unconditional
    # side of guidance is the frozen stage-1 audio-only path itself.
    guest_dropout: float = 0.15

    def __post_init__(self):
        for name, rate in self.history_offset_recovery_by_field:
            if name not in MOTION_FIELDS or not 0.0 <= rate <= 1.0:
                raise ValueError(f"history_offset_recovery_by_field: ({name!r}, {rate}) needs a motion field "
                                 f"({', '.join(MOTION_FIELDS)}) and a rate in [0, 1]")


@dataclass(frozen=True)
class RendererStageConfig:
    loop: LoopConfig = LoopConfig(steps=1500, batch_size=8, lr=2e-3, weight_decay=0.0, warmup_steps=50,
                                  ema_decay=0.98, checkpoint_every=100, seed=31)
    # Small shifts and zooms of the canonical frame (the motion's tx, ty, scale follow), so the
    # renderer honours those fields.
    jitter_probability: float = 0.3
    jitter_shift: float = 0.03  # fraction of the frame
    jitter_scale: float = 0.06  # relative
    face_weight: float = 2.0  # extra L1 weight inside the face, more on the mouth and eyes
    mouth_weight: float = 4.0
    eye_weight: float = 2.0
    gradient_weight: float = 1.0  # L1 on image gradients (sharp edges)


# The default avatar's history offsets: on every field its flow models as increments, up to 1.5 std, with
# the recovery already under way in the history (session 9: false tilts 262 -> 94). No hold: an offset
# inside the data's range recovers too, or the head wanders without a partner (session 10). History
# noise on the increments: 0.1 of their spread.
DEFAULT_HISTORY_OFFSETS = dict(
    history_offset_probability=0.5, history_offset_max=1.5, history_offset_recovery=0.1,
    history_offset_fields=tuple(name for name in MOTION_FIELDS if name not in ABSOLUTE_FIELDS),
    history_offset_in_progress=True, history_noise_increment_max=0.1)

# Stage 2 lets roll and smile offsets recover at 0.03 per frame instead of 0.1, so the video branch does
# not learn to correct its pose with a tilt or a smile (session 12: false tilts 38-71 -> 17-31 of 2 noise
# seeds on val and test, reaction F1 +0.03 on average over two stage-2 seeds; at 0.03 on every field the
# pitch drifted in long sessions).
STAGE2_SLOW_RECOVERY = (("roll", 0.03), ("mouthSmileLeft", 0.03), ("mouthSmileRight", 0.03))


@dataclass(frozen=True)
class TrainConfig:
    avatar: AvatarConfig = field(default_factory=default_avatar_config)
    data: DataConfig = DataConfig(causal_slow_fields=("pitch",))  # nods start in the data where they start (session 21)
    guest: GuestPretrainConfig = GuestPretrainConfig()
    # History offsets in both stages: without them the default avatar's head pose ran away in any
    # rollout longer than a clip (yaw past -1000 deg within 3.3 min of back-to-back val+test clips).
    stage1: MotionStageConfig = MotionStageConfig(
        loop=LoopConfig(steps=1500, batch_size=128, lr=1e-3, warmup_steps=100, ema_decay=0.995,
                        checkpoint_every=250, seed=7),
        **DEFAULT_HISTORY_OFFSETS)
    stage2: MotionStageConfig = MotionStageConfig(
        loop=LoopConfig(steps=1500, batch_size=128, lr=2e-3, warmup_steps=50, ema_decay=0.995,
                        checkpoint_every=250, seed=17),
        mouth_weight=0.5, reaction_weight=3.0, dynamic_sampling=4.0, listening_weight=4.0,
        history_offset_recovery_by_field=STAGE2_SLOW_RECOVERY, **DEFAULT_HISTORY_OFFSETS)
    renderer: RendererStageConfig = RendererStageConfig()
    # Chosen on the train split of the default avatar's series (reaction F1 0.478 / 0.571 / 0.508 / 0.433
    # at lambda 1 / 1.5 / 2 / 2.5, temperature 0.5): the video branch alone (lambda 1) responds to too
    # few cues, and more guidance overshoots (a tilt mirrored past the guest's and back is two responses).
    default_lambda_video: float = 1.5
    threads: int = 2
    # Stage 2 trains this many times (loop seeds seed, seed + 1, ...) and keeps the run whose reaction F1
    # on `selection_split` (synthetic ground truth, default lambda, `selection_noise_seeds` noise draws)
    # is highest. On the same stage 1, stage 2's seed alone moved the test F1 from 0.21 to 0.57
    # (docs/model.md, session 9). 1: no selection. Without ground-truth clips in that split (curated
    # real videos) only the first run trains.
    stage2_candidates: int = 2
    selection_split: str = "val"
    selection_noise_seeds: int = 2
    # The splits trained on. The split that selects stage 2 must not be among them.
    splits: tuple[str, ...] = ("train",)

    def __post_init__(self):
        if self.stage2_candidates < 1:
            raise ValueError(f"stage2_candidates must be >= 1, got {self.stage2_candidates}")
        if self.stage2_candidates > 1 and self.selection_split in self.splits:
            raise ValueError(f"stage 2 is selected on {self.selection_split!r}, which is also trained on "
                             f"(splits {self.splits}): take it out of the trained splits")

    def stage2_seeds(self) -> list[int]:
        return [self.stage2.loop.seed + i for i in range(self.stage2_candidates)]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["avatar"] = self.avatar.to_dict()
        return data


def tiny_train_config() -> TrainConfig:
    """Seconds-scale settings for tests and smoke runs: tiny networks, a few steps per stage."""
    tiny = dataclasses.replace(tiny_config("tiny"), notes={})

    def loop(steps, batch, seed):
        return LoopConfig(steps=steps, batch_size=batch, lr=2e-3, warmup_steps=2, ema_decay=0.9,
                          checkpoint_every=max(steps // 2, 1), log_every=2, seed=seed)

    return TrainConfig(
        avatar=tiny,
        data=DataConfig(min_target_face_px=16.0, min_render_face_px=32.0),  # small test episodes (640x360)
        guest=GuestPretrainConfig(loop=loop(6, 16, 1)),
        stage1=MotionStageConfig(loop=loop(12, 32, 2)),
        stage2=MotionStageConfig(loop=loop(12, 32, 3)),
        renderer=RendererStageConfig(loop=loop(8, 4, 4)),
        stage2_candidates=1,
    )


def with_steps(config: TrainConfig, **steps: int | None) -> TrainConfig:
    """Override the step count of stages by name (guest, stage1, stage2, renderer)."""
    for name, value in steps.items():
        if value is None:
            continue
        stage = getattr(config, name)
        config = dataclasses.replace(config, **{name: dataclasses.replace(
            stage, loop=dataclasses.replace(stage.loop, steps=value))})
    return config
