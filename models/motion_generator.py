"""Motion generator: the F2F-JF method in motion space, streaming and causal.

Inputs of one step (see f2f.avatar_spec): the host's log-mel around the next K frames (past +
those frames + <= 2 frames of look-ahead), the last G = 64 guest features of P partners with a
visibility mask, the last H = 6 host motion frames, noise, and the video guidance scale.

Network (a small diffusion-transformer-style velocity model over motion tokens):
  tokens   = [H history frames (clean) ; K target frames (noisy, at flow time t)]
  per block:  x += SelfAttn(LN x)                           causal over the motion tokens
              x += CrossAttn(LN x, audio tokens)            audio enters in every block
              x += gate * (LN(x) * (1 + scale) + shift)     guest video, after the audio branch
              x += FFN(LN x)
  shift, scale, gate come from the guest projector, per block, zero-initialised: a fresh video
  branch leaves the audio-only model unchanged (stage 2 starts from stage 1 exactly).
Guest encoding: visible frames are projected, invisible ones are replaced by a learned blackout
token (the paper's black frames), then learned temporal kernels summarise the 64-frame window
(so "0.3 s after the guest stopped talking" is expressible), and the P partners are summed (MPE).

Generative head: rectified flow matching. Training regresses the velocity (data - noise) at
x_t = (1 - t) noise + t data; sampling integrates x from the given noise at t = 0 to t = 1 in a
few Euler steps. Classifier-free guidance on the video branch only:
  v = v_audio + lambda_video * (v_video - v_audio)
so lambda_video = 0 is exactly the audio-only avatar.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from f2f.avatar_spec import AvatarSpec
from models.layers import Attention, FeedForward, timestep_embedding


@dataclass(frozen=True)
class MotionGeneratorConfig:
    width: int = 128
    layers: int = 4
    heads: int = 4
    guest_kernels: int = 8  # learned temporal summaries of the guest window
    sampling_steps: int = 4  # Euler steps of the flow at inference


@dataclass
class Conditioning:
    """Everything but the noisy motion: computed once per step, reused by every flow step."""

    audio: torch.Tensor  # (B, M, W) audio tokens
    history: torch.Tensor  # (B, H, W) embedded history motion tokens
    modulation: torch.Tensor  # (B, layers, 3, W) shift, scale, gate per block


class AudioEncoder(nn.Module):
    """Log-mel (B, M, 80) -> audio tokens (B, M, W): normalise, two 1-D convs, positions."""

    def __init__(self, spec: AvatarSpec, width: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(spec.mel_bins, width, 3, padding=1), nn.GELU(), nn.Conv1d(width, width, 3, padding=1)
        )
        self.position = nn.Parameter(torch.zeros(spec.mel_frames, width))
        self.register_buffer("mel_mean", torch.zeros(()))
        self.register_buffer("mel_std", torch.ones(()))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = (mel - self.mel_mean) / self.mel_std  # (B, M, 80)
        return self.conv(x.transpose(1, 2)).transpose(1, 2) + self.position  # (B, M, W)


class GuestProjector(nn.Module):
    """Guest features (B, P, G, D) + visibility (B, P, G) -> per-block shift/scale/gate (B, L, 3, W)."""

    def __init__(self, spec: AvatarSpec, config: MotionGeneratorConfig):
        super().__init__()
        width = config.width
        self.layers = config.layers
        self.width = width
        self.embed = nn.Linear(spec.guest_feature_dim, width)
        self.blackout = nn.Parameter(torch.zeros(width))
        self.position = nn.Parameter(torch.zeros(spec.guest_context_frames, width))
        self.kernels = nn.Parameter(torch.zeros(config.guest_kernels, spec.guest_context_frames))
        self.summarise = nn.Sequential(nn.Linear(config.guest_kernels * width, width), nn.GELU(), nn.Linear(width, width))
        self.to_modulation = nn.Linear(width, config.layers * 3 * width)
        nn.init.zeros_(self.to_modulation.weight)
        nn.init.zeros_(self.to_modulation.bias)

    def forward(self, guest_features: torch.Tensor, guest_visible: torch.Tensor) -> torch.Tensor:
        batch, partners, frames, _ = guest_features.shape
        visible = guest_visible[..., None]  # (B, P, G, 1)
        tokens = visible * self.embed(guest_features) + (1.0 - visible) * self.blackout  # (B, P, G, W)
        tokens = tokens + self.position
        weights = self.kernels.softmax(dim=-1)  # (Kg, G)
        summary = torch.einsum("kg,bpgw->bpkw", weights, tokens).reshape(batch, partners, -1)  # (B, P, Kg*W)
        per_partner = self.summarise(summary)  # (B, P, W)
        guest = per_partner.sum(dim=1)  # (B, W): multiple partners share the encoder and add up
        return self.to_modulation(guest).reshape(batch, self.layers, 3, self.width)


class MotionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm_self = nn.LayerNorm(width)
        self.self_attention = Attention(width, heads)
        self.norm_audio = nn.LayerNorm(width)
        self.audio_attention = Attention(width, heads)
        self.norm_video = nn.LayerNorm(width, elementwise_affine=False)
        self.norm_ff = nn.LayerNorm(width)
        self.feed_forward = FeedForward(width)

    def forward(self, x: torch.Tensor, audio: torch.Tensor, modulation: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        # x (B, T, W), audio (B, M, W), modulation (B, 3, W), causal (T, T) additive mask
        h = self.norm_self(x)
        x = x + self.self_attention(h, h, causal)
        x = x + self.audio_attention(self.norm_audio(x), audio)
        shift, scale, gate = modulation[:, 0:1], modulation[:, 1:2], modulation[:, 2:3]  # (B, 1, W) each
        x = x + gate * (self.norm_video(x) * (1.0 + scale) + shift)
        return x + self.feed_forward(self.norm_ff(x))


class MotionGenerator(nn.Module):
    def __init__(self, spec: AvatarSpec, config: MotionGeneratorConfig = MotionGeneratorConfig()):
        super().__init__()
        self.spec = spec
        self.config = config
        width = config.width
        tokens = spec.motion_history_frames + spec.frames_per_step
        self.audio_encoder = AudioEncoder(spec, width)
        self.guest_projector = GuestProjector(spec, config)
        self.embed_history = nn.Linear(spec.motion_dim, width)
        self.embed_target = nn.Linear(spec.motion_dim, width)
        self.embed_time = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
        self.position = nn.Parameter(torch.zeros(tokens, width))
        self.blocks = nn.ModuleList(MotionBlock(width, config.heads) for _ in range(config.layers))
        self.norm_out = nn.LayerNorm(width)
        self.head = nn.Linear(width, spec.motion_dim)
        causal = torch.full((tokens, tokens), float("-inf")).triu(1)
        self.register_buffer("causal_mask", causal, persistent=False)
        self.register_buffer("motion_mean", torch.zeros(spec.motion_dim))
        self.register_buffer("motion_std", torch.ones(spec.motion_dim))
        nn.init.normal_(self.position, std=0.02)

    # --- normalisation: the network works on standardised motion --------------------------
    def normalise(self, motion: torch.Tensor) -> torch.Tensor:
        return (motion - self.motion_mean) / self.motion_std

    def denormalise(self, motion: torch.Tensor) -> torch.Tensor:
        return motion * self.motion_std + self.motion_mean

    # --- the pieces training uses -----------------------------------------------------------
    def condition(self, audio_mel, guest_features, guest_visible, motion_history) -> Conditioning:
        return Conditioning(
            audio=self.audio_encoder(audio_mel),
            history=self.embed_history(self.normalise(motion_history)),
            modulation=self.guest_projector(guest_features, guest_visible),
        )

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, video_on: torch.Tensor) -> torch.Tensor:
        """Flow velocity at normalised motion x_t (B, K, 15), time t (B,); video_on (B,) is 1 to
        apply the guest branch and 0 for the audio-only path (guidance dropout) -> (B, K, 15)."""
        time = self.embed_time(timestep_embedding(t, self.config.width))[:, None, :]  # (B, 1, W)
        target = self.embed_target(x_t) + time  # (B, K, W)
        x = torch.cat([cond.history, target], dim=1) + self.position  # (B, H+K, W)
        modulation = cond.modulation * video_on[:, None, None, None]  # (B, L, 3, W)
        for i, block in enumerate(self.blocks):
            x = block(x, cond.audio, modulation[:, i], self.causal_mask)
        return self.head(self.norm_out(x[:, -self.spec.frames_per_step:]))

    # --- inference: one streaming step ------------------------------------------------------
    def forward(self, audio_mel, guest_features, guest_visible, motion_history, noise, lambda_video) -> torch.Tensor:
        # audio_mel (B, M, 80), guest_features (B, P, G, D), guest_visible (B, P, G),
        # motion_history (B, H, 15), noise (B, K, 15), lambda_video (B, 1) -> motion (B, K, 15)
        batch = noise.shape[0]
        cond = self.condition(audio_mel, guest_features, guest_visible, motion_history)
        # Both guidance branches in one batch of 2B: the first half audio-only, the second with video.
        doubled = Conditioning(
            audio=torch.cat([cond.audio, cond.audio]),
            history=torch.cat([cond.history, cond.history]),
            modulation=torch.cat([cond.modulation, cond.modulation]),
        )
        video_on = torch.cat([noise.new_zeros(batch), noise.new_ones(batch)])  # (2B,)
        x = noise
        steps = self.config.sampling_steps
        for i in range(steps):
            t = noise.new_full((2 * batch,), i / steps)
            v_both = self.velocity(torch.cat([x, x]), t, doubled, video_on)  # (2B, K, 15)
            v_audio, v_video = v_both[:batch], v_both[batch:]
            v = v_audio + lambda_video[:, :, None] * (v_video - v_audio)
            x = x + v / steps
        return self.denormalise(x)
