"""What each training stage optimises (objectives) and what it is fed (samplers, augmentations).

Stages, in order (`pipeline/train/run.py` runs them):
- guest: the guest encoder's CNN reads the partner's geometry off the crop (auxiliary target), then
  is frozen; its per-frame features are computed once (`appearance_table`), as the paper's frozen I3D;
- stage1: the motion generator's audio path (everything but the guest projector), flow matching with
  the guest branch off (video_on = 0);
- stage2: the audio path frozen; the video branch (guest projector + the guest encoder's geometry
  and fusion layers) trains with video_on = 1 and guest-context dropout;
- renderer: canonical host frames from their motion.
Objectives are nn.Modules whose forward returns (loss, logs), so `torchrun` can wrap them in DDP.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from f2f.features.mel import LOG_MEL_EPS, hann_window, mel_filterbank
from f2f.motion import FIELD_INDEX, MOTION_DIM, MOTION_FIELDS, neutral_vector
from models.avatar import Avatar
from models.guest_encoder import GuestEncoder
from models.motion_generator import MotionGenerator
from models.renderer import Renderer
from pipeline.train.config import AudioAugment, MotionStageConfig, RendererStageConfig
from pipeline.train.data import Clip, HostFraming
from pipeline.train.flow_matching import interpolate
from pipeline.train.loop import step_rngs
from pipeline.train.windows import WindowBank

MOUTH_FIELDS = ("jawOpen", "mouthPucker", "mouthSmileLeft", "mouthSmileRight")
REACTION_FIELDS = ("pitch", "roll", "yaw", "mouthSmileLeft", "mouthSmileRight", "eyeLookX")


def std_floor() -> np.ndarray:
    """Smallest standard deviation each motion field is normalised by (a field constant in the data,
    like tx/ty/scale in the canonical framing, must not blow up small deviations).  # (15,)"""
    floor = np.full(MOTION_DIM, 0.02, np.float32)
    for name in ("yaw", "pitch", "roll"):
        floor[FIELD_INDEX[name]] = 0.5
    for name in ("tx", "ty", "scale"):
        floor[FIELD_INDEX[name]] = 0.02
    return floor


def delta_floor() -> np.ndarray:
    """Smallest spread of frame increments per field (fields constant in the data).  # (15,)"""
    return 0.05 * std_floor()


def set_normalisers(avatar: Avatar, clips: list[Clip], bank: WindowBank | None = None) -> dict:
    """Data statistics into the networks' normalisation buffers. -> the values, for the report.
    The increments' spread (`delta_std`) comes from the training windows (`bank`, default: all
    windows of the clips), measured from the last history frame."""
    mel = np.concatenate([c.mel for c in clips])
    motion = np.concatenate([c.host_motion[c.host_valid] for c in clips])
    geometry = np.concatenate([c.guest_geometry[c.guest_visible] for c in clips])
    if not len(geometry):
        geometry = np.zeros((1, MOTION_DIM), np.float32)
    floor = std_floor()
    motion_std = np.maximum(motion.std(0), floor)
    gen = avatar.motion_generator
    gen.audio_encoder.mel_mean.fill_(float(mel.mean()))
    gen.audio_encoder.mel_std.fill_(max(float(mel.std()), 1.0))  # clips with hardly any host speech: not ~0
    gen.motion_mean.copy_(torch.from_numpy(motion.mean(0)))
    gen.motion_std.copy_(torch.from_numpy(motion_std))
    avatar.renderer.motion_mean.copy_(torch.from_numpy(motion.mean(0)))
    avatar.renderer.motion_std.copy_(torch.from_numpy(motion_std))
    bank = bank or WindowBank(clips, avatar.spec, np.zeros(MOTION_DIM, np.float32))
    if len(bank):
        w = bank.gather(bank.index[:, 0], bank.index[:, 1])
        deltas = w["target"] - w["motion_history"][:, -1:]  # (W, K+Q, 15)
        delta_std = np.maximum(deltas.std(0), delta_floor())
        gen.delta_std.copy_(torch.from_numpy(delta_std.astype(np.float32)))
    enc = avatar.guest_encoder
    enc.geometry_mean.copy_(torch.from_numpy(geometry.mean(0)))
    enc.geometry_std.copy_(torch.from_numpy(np.maximum(geometry.std(0), floor)))
    return {"mel_mean": round(float(mel.mean()), 4), "mel_std": round(float(gen.audio_encoder.mel_std), 4),
            "motion_mean": dict(zip(MOTION_FIELDS, np.round(motion.mean(0), 4).tolist())),
            "motion_std": dict(zip(MOTION_FIELDS, np.round(motion_std, 4).tolist())),
            "delta_std": dict(zip(MOTION_FIELDS, np.round(gen.delta_std[0].numpy(), 4).tolist()))}


# ---------------------------------------------------------------------------------------------
# Guest encoder CNN (auxiliary geometry regression)
# ---------------------------------------------------------------------------------------------


@dataclass
class GuestTable:
    """Every frame of the clips, in WindowBank's global order: the partner's inputs."""

    clips: list[Clip]
    geometry: np.ndarray  # (T, 15)
    visible: np.ndarray  # (T,) bool
    appearance: np.ndarray | None = None  # (T, C) frozen CNN features, once computed

    @classmethod
    def of(cls, clips: list[Clip]) -> "GuestTable":
        return cls(clips, np.concatenate([c.guest_geometry for c in clips]),
                   np.concatenate([c.guest_visible for c in clips]))

    def locate(self, index: np.ndarray) -> list[tuple[int, int]]:
        bases = np.cumsum([0] + [c.num_frames for c in self.clips])
        clip = np.searchsorted(bases, index, side="right") - 1
        return list(zip(clip.tolist(), (index - bases[clip]).tolist()))

    def crops(self, index: np.ndarray) -> np.ndarray:
        """(B,) global frames -> (B, 3, S, S) uint8."""
        return np.stack([self.clips[c].guest_crops[i] for c, i in self.locate(index)])


class GuestAppearanceObjective(nn.Module):
    def __init__(self, encoder: GuestEncoder):
        super().__init__()
        self.encoder = encoder
        self.used = [i for i in range(MOTION_DIM) if float(encoder.geometry_used[i]) > 0]
        self.head = nn.Linear(encoder.appearance_dim, len(self.used))

    def forward(self, crops: torch.Tensor, geometry: torch.Tensor):
        # crops (B, 3, S, S) float 0..1, geometry (B, 15) -> MSE on the normalised used fields
        target = ((geometry - self.encoder.geometry_mean) / self.encoder.geometry_std)[:, self.used]
        loss = (self.head(self.encoder.appearance(crops)) - target).pow(2).mean()
        return loss, {}


class GuestSampler:
    def __init__(self, table: GuestTable, batch_size: int, seed: int, world: int = 1):
        self.table, self.batch, self.seed = table, max(batch_size // world, 1), seed
        self.frames = np.flatnonzero(table.visible)
        if not len(self.frames):
            raise ValueError("no visible guest frames to train the guest encoder on")

    def __call__(self, step: int, rank: int) -> dict:
        rng, _ = step_rngs(self.seed, rank, step)
        index = self.frames[rng.integers(len(self.frames), size=self.batch)]
        crops = self.table.crops(index).astype(np.float32) / 255.0
        # Photometric jitter: a webcam's exposure and white balance differ from the studio's.
        crops = crops * rng.uniform(0.8, 1.2, (len(index), 3, 1, 1)) + rng.uniform(-0.08, 0.08, (len(index), 1, 1, 1))
        return {"crops": torch.from_numpy(np.clip(crops, 0, 1).astype(np.float32)),
                "geometry": torch.from_numpy(self.table.geometry[index])}


@torch.no_grad()
def appearance_table(encoder: GuestEncoder, table: GuestTable, chunk: int = 256) -> np.ndarray:
    """Frozen CNN features of every visible guest frame (zeros elsewhere). -> (T, C) float32"""
    out = np.zeros((len(table.visible), encoder.appearance_dim), np.float32)
    encoder.eval()
    frames = np.flatnonzero(table.visible)
    for i in range(0, len(frames), chunk):
        index = frames[i:i + chunk]
        crops = torch.from_numpy(table.crops(index).astype(np.float32) / 255.0)
        out[index] = encoder.appearance(crops).numpy()
    return out


# ---------------------------------------------------------------------------------------------
# Motion generator, stages 1 and 2
# ---------------------------------------------------------------------------------------------


def _noise_power_per_bin() -> np.ndarray:
    """Mel power of unit-variance white noise per bin (expected |rfft|^2 = sum of window^2).  # (80,)"""
    return float(np.sum(hann_window() ** 2)) * mel_filterbank().sum(axis=1)


_NOISE_POWER = _noise_power_per_bin()


def augment_mel(mel: np.ndarray, rng: np.random.Generator, aug: AudioAugment) -> np.ndarray:
    """Log-mel windows (B, M, 80) as another gain, noise floor and voice would give them.

    Works on the mel power (exp(log-mel) - eps): gain scales it, white noise adds its expected power,
    the voice warp stretches the mel axis about its low end."""
    batch, _, bins = mel.shape
    power = np.maximum(np.exp(mel.astype(np.float64)) - LOG_MEL_EPS, 0.0)
    gain = np.exp(rng.uniform(np.log(aug.gain_range[0]), np.log(aug.gain_range[1]), batch))
    power *= (gain ** 2)[:, None, None]
    noisy = rng.random(batch) < aug.noise_probability
    sigma = np.exp(rng.uniform(np.log(aug.noise_range[0]), np.log(aug.noise_range[1]), batch))
    power += (noisy * sigma ** 2)[:, None, None] * _NOISE_POWER
    warp = rng.random(batch) < aug.warp_probability
    alpha = np.where(warp, rng.uniform(*aug.warp_range, batch), 1.0)
    positions = np.arange(bins)
    for b in np.flatnonzero(warp):
        source = np.clip(positions * alpha[b], 0, bins - 1)
        lo = np.floor(source).astype(int)
        hi = np.minimum(lo + 1, bins - 1)
        frac = source - lo
        power[b] = power[b][:, lo] * (1 - frac) + power[b][:, hi] * frac
    return np.log(power + LOG_MEL_EPS).astype(np.float32)


def field_weights(mouth_weight: float, reaction_weight: float = 1.0) -> torch.Tensor:
    """(15,) loss weights, mean 1: the mouth's, then the reaction fields' (a smile is both)."""
    weights = torch.ones(MOTION_DIM)
    for name in MOUTH_FIELDS:
        weights[FIELD_INDEX[name]] = mouth_weight
    for name in REACTION_FIELDS:
        weights[FIELD_INDEX[name]] = reaction_weight
    return weights * MOTION_DIM / weights.sum()


class MotionObjective(nn.Module):
    """Rectified flow matching of the motion generator (see pipeline/train/flow_matching.py).

    Without guest inputs (stage 1) the guest branch sees nothing; with them (stage 2) each window's
    guest features come from the frozen CNN features through the encoder's trainable fusion."""

    def __init__(self, generator: MotionGenerator, encoder: GuestEncoder | None, mouth_weight: float,
                 reaction_weight: float = 1.0):
        super().__init__()
        self.generator = generator
        self.encoder = encoder
        self.register_buffer("weights", field_weights(mouth_weight, reaction_weight))
        self.mouth = [FIELD_INDEX[name] for name in MOUTH_FIELDS]

    def guest_inputs(self, batch: int, guest_appearance=None, guest_geometry=None, guest_visible=None):
        spec = self.generator.spec
        if guest_appearance is None:
            shape = (batch, spec.partners, spec.guest_context_frames)
            device = self.weights.device
            return torch.zeros(shape + (spec.guest_feature_dim,), device=device), torch.zeros(shape, device=device)
        features = self.encoder.from_appearance(guest_appearance, guest_geometry)  # (B, G, D)
        features = features * guest_visible[..., None]  # serving sends zeros where no face was seen
        return features[:, None], guest_visible[:, None]  # (B, 1, G, D), (B, 1, G): P = 1

    def forward(self, audio_mel, motion_history, target, noise, t, video_on,
                guest_appearance=None, guest_geometry=None, guest_visible=None):
        gen = self.generator
        data = gen.to_flow(target, motion_history)  # (B, K+Q, 15)
        x_t, velocity = interpolate(data, noise, t)
        features, visible = self.guest_inputs(len(target), guest_appearance, guest_geometry, guest_visible)
        cond = gen.condition(audio_mel, features, visible, motion_history)
        v_network = gen.network_velocity(x_t, t, cond, video_on)  # (B, K+Q, 15)
        error = (gen.with_field_heads(v_network, x_t, t, cond, video_on) - velocity).pow(2)
        loss = (error * self.weights * gen.sampled_fields).mean()  # the plan's audio-driven fields: no loss
        if cond.head_contexts and bool(video_on.any()):  # the main branch also fits what some heads replace (video rows)
            own = (v_network - velocity).pow(2) * gen.main_branch_fields() * video_on[:, None, None]
            loss = loss + (own * self.weights * gen.sampled_fields).mean()
        return loss, {"mse_mouth": error[..., self.mouth].mean().detach()}


class MotionSampler:
    """Training windows of stage 1 (`with_guest` False) or stage 2 (True), with augmentations."""

    def __init__(self, bank: WindowBank, generator: MotionGenerator, config: MotionStageConfig,
                 table: GuestTable | None = None, world: int = 1):
        self.bank, self.config, self.table = bank, config, table
        self.batch = max(config.loop.batch_size // world, 1)
        self.motion_std = generator.motion_std.detach().cpu().numpy()
        self.motion_mean = generator.motion_mean.detach().cpu().numpy()
        mouth = np.zeros(MOTION_DIM, bool)
        mouth[[FIELD_INDEX[name] for name in MOUTH_FIELDS]] = True
        increments = generator.increment_fields.detach().cpu().numpy() > 0
        # History noise scale per field (see MotionStageConfig).
        self.noise_scale = np.where(increments, config.history_noise_increment_max * generator.delta_std[0].cpu().numpy(),
                                    np.where(mouth, config.history_noise_max, config.history_noise_other_max)
                                    * self.motion_std).astype(np.float32)
        offset_fields = np.zeros(MOTION_DIM, bool)
        offset_fields[[FIELD_INDEX[name] for name in config.history_offset_fields]] = True
        self.offset_scale = np.where(increments & offset_fields, config.history_offset_max * self.motion_std,
                                     0.0).astype(np.float32)
        self.offset_recovery = np.full(MOTION_DIM, config.history_offset_recovery)
        for name, rate in config.history_offset_recovery_by_field:  # checked by MotionStageConfig
            self.offset_recovery[FIELD_INDEX[name]] = rate
        self.session_start = neutral_vector()
        if len(bank) == 0:
            raise ValueError("no training windows: no clip has valid host motion long enough")
        self.probability = None
        if config.dynamic_sampling > 0 or config.listening_weight != 1.0:
            weight = np.ones(len(bank))
            if config.dynamic_sampling > 0:
                activity = bank.activity([FIELD_INDEX[name] for name in REACTION_FIELDS],
                                         generator.delta_std[0].cpu().numpy())
                weight += config.dynamic_sampling * activity / max(float(activity.mean()), 1e-9)
            weight *= np.where(bank.listening(), config.listening_weight, 1.0)
            self.probability = weight / weight.sum()

    def _apply_offset(self, rng: np.random.Generator, offset: np.ndarray, history: np.ndarray,
                      target: np.ndarray) -> None:
        """Shift history (B, H, 15) by offset (B, 1, 15), in place, and the target (B, K+Q, 15) by what
        it keeps of it: the part that recovers shrinks by the field's recovery rate per frame (and, in
        progress, has already shrunk over the history's last frames); the held part stays."""
        cfg = self.config
        b, H, K = history.shape[0], history.shape[1], target.shape[1]
        recovering = offset  # the part of the offset the target leads back
        if cfg.history_offset_hold_within_std is not None:
            band = cfg.history_offset_hold_within_std * self.motion_std
            pose = history[:, -1:] + offset
            beyond = np.abs(pose - self.motion_mean) - band  # > 0: this far outside the band
            recovering = np.sign(offset) * np.clip(beyond, 0.0, np.abs(offset))
            recovering *= np.sign(pose - self.motion_mean) == np.sign(offset)  # an inward offset is kept
        keep = 1.0 - self.offset_recovery  # (15,) of the recovering part, per frame
        running = (rng.integers(0, H, b) if cfg.history_offset_in_progress
                   else np.zeros(b, int))  # frames the recovery has run by the newest history frame
        age = np.arange(H)[::-1]  # frames before the newest, per history slot
        held = offset - recovering
        history += held + recovering * keep ** -np.minimum(age[None], running[:, None])[:, :, None]
        target += held + recovering * keep ** np.arange(1, K + 1)[None, :, None]

    def __call__(self, step: int, rank: int) -> dict:
        cfg, spec = self.config, self.bank.spec
        rng, _ = step_rngs(cfg.loop.seed, rank, step)
        b, H, K = self.batch, spec.motion_history_frames, spec.noise_frames  # K: made + plan frames
        w = self.bank.sample(rng, b, self.probability)
        history = w["motion_history"].copy()  # (B, H, 15)
        history += rng.uniform(0, 1, (b, 1, 1)) * self.noise_scale * rng.standard_normal(history.shape)
        reset = rng.random(b) < cfg.history_reset_probability
        first = rng.integers(1, H + 1, b)
        replaced = reset[:, None] & (np.arange(H)[None] < first[:, None])  # (B, H)
        history[replaced] = self.session_start
        target = w["target"].copy()  # (B, K+Q, 15)
        shifted = (rng.random(b) < cfg.history_offset_probability) & ~reset
        offset = (shifted[:, None] * rng.uniform(0, 1, (b, 1)) * self.offset_scale
                  * rng.standard_normal((b, MOTION_DIM)))[:, None, :]  # (B, 1, 15)
        self._apply_offset(rng, offset, history, target)
        batch = {
            "audio_mel": torch.from_numpy(augment_mel(w["audio_mel"], rng, cfg.audio)),
            "motion_history": torch.from_numpy(history.astype(np.float32)),
            "target": torch.from_numpy(target.astype(np.float32)),
            "noise": torch.from_numpy(rng.standard_normal((b, K, MOTION_DIM)).astype(np.float32)),
            "t": torch.from_numpy(rng.uniform(0, 1, b).astype(np.float32)),
            "video_on": torch.full((b,), 1.0 if self.table is not None else 0.0),
        }
        if self.table is not None:
            index = w["guest_index"]  # (B, G), -1 before the clip
            safe = np.maximum(index, 0)
            visible = (index >= 0) & self.table.visible[safe]
            visible &= ~(rng.random(b) < cfg.guest_dropout)[:, None]  # guest-context dropout
            batch["guest_appearance"] = torch.from_numpy(self.table.appearance[safe] * visible[..., None])
            batch["guest_geometry"] = torch.from_numpy(self.table.geometry[safe] * visible[..., None])
            batch["guest_visible"] = torch.from_numpy(visible.astype(np.float32))
        return batch


# ---------------------------------------------------------------------------------------------
# Renderer
# ---------------------------------------------------------------------------------------------


def weight_map(framing: HostFraming, size: int, config: RendererStageConfig) -> np.ndarray:
    """(size, size) loss weights: 1 + more inside the face, more again on the mouth and eyes, placed
    by the canonical framing (eyes at eye_x/eye_y, face height face_fraction)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size
    h = framing.face_fraction
    ex, ey = framing.eye_x, framing.eye_y
    face = ((xs - ex) / (0.42 * h)) ** 2 + ((ys - (ey + 0.2 * h)) / (0.62 * h)) ** 2 <= 1.0
    mouth = np.exp(-0.5 * ((xs - ex) ** 2 + (ys - (ey + 0.42 * h)) ** 2) / (0.1 * h) ** 2)
    eyes = sum(np.exp(-0.5 * ((xs - (ex + d)) ** 2 + (ys - ey) ** 2) / (0.07 * h) ** 2) for d in (-0.17 * h, 0.17 * h))
    return (1.0 + config.face_weight * face + config.mouth_weight * mouth + config.eye_weight * eyes).astype(np.float32)


class RendererObjective(nn.Module):
    def __init__(self, renderer: Renderer, weights: np.ndarray, gradient_weight: float):
        super().__init__()
        self.renderer = renderer
        self.register_buffer("weights", torch.from_numpy(weights)[None, None])  # (1, 1, F, F)
        self.gradient_weight = gradient_weight

    def forward(self, motion: torch.Tensor, frames: torch.Tensor):
        # motion (B, 15), frames (B, 3, F, F) float 0..1
        out = self.renderer(motion[:, None])[:, 0]  # (B, 3, F, F)
        l1 = (self.weights * (out - frames).abs()).mean() / self.weights.mean()
        grad = sum((out.diff(dim=d) - frames.diff(dim=d)).abs().mean() for d in (2, 3))
        return l1 + self.gradient_weight * grad, {"l1": l1.detach()}


class RendererSampler:
    def __init__(self, clips: list[Clip], config: RendererStageConfig, framing: HostFraming, world: int = 1):
        self.clips, self.config, self.framing = clips, config, framing
        self.batch = max(config.loop.batch_size // world, 1)
        self.items = np.array([(c, i) for c, clip in enumerate(clips) for i in np.flatnonzero(clip.host_render_ok)],
                              np.int64).reshape(-1, 2)
        if not len(self.items):
            raise ValueError("no host frames sharp enough to train the renderer on")

    def __call__(self, step: int, rank: int) -> dict:
        cfg, framing = self.config, self.framing
        rng, _ = step_rngs(cfg.loop.seed, rank, step)
        chosen = self.items[rng.integers(len(self.items), size=self.batch)]
        frames, motions = [], []
        for c, i in chosen:
            image = np.asarray(self.clips[c].host_frames[i])
            motion = self.clips[c].host_motion[i].copy()
            if rng.random() < cfg.jitter_probability:
                image, motion = jitter(image, motion, framing, rng, cfg.jitter_shift, cfg.jitter_scale)
            frames.append(image)
            motions.append(motion)
        frames = np.stack(frames).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        return {"motion": torch.from_numpy(np.stack(motions).astype(np.float32)), "frames": torch.from_numpy(frames)}


def jitter(image: np.ndarray, motion: np.ndarray, framing: HostFraming, rng: np.random.Generator,
           shift: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Zoom about the eyes and shift a canonical frame; its tx, ty, scale follow."""
    size = image.shape[0]
    s = float(np.exp(rng.uniform(-scale, scale)))
    dx, dy = rng.uniform(-shift, shift, 2)
    ex, ey = framing.eye_x * size, framing.eye_y * size
    matrix = np.array([[s, 0.0, ex - s * ex + dx * size], [0.0, s, ey - s * ey + dy * size]])
    out = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    motion = motion.copy()
    motion[FIELD_INDEX["tx"]] += dx
    motion[FIELD_INDEX["ty"]] += dy
    motion[FIELD_INDEX["scale"]] *= s
    return out, motion
