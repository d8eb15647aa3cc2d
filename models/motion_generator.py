"""Motion generator: the F2F-JF method in motion space, streaming and causal.

Inputs of one step (see f2f.avatar_spec): the host's log-mel around the next K frames (past +
those frames + <= 2 frames of look-ahead), the last G = 64 guest features of P partners with a
visibility mask, the last H = 6 host motion frames, noise, and the video guidance scale.

Network (a small diffusion-transformer-style velocity model over motion tokens):
  tokens   = [H history frames (clean) ; K target frames + Q plan frames (noisy, at flow time t)]
  per block:  x += SelfAttn(LN x)                           causal over the motion tokens (Q > 0:
                                                            the noisy frames see each other)
              x += CrossAttn(LN x, audio tokens)            audio enters in every block
              x += gate * (LN(x) * (1 + scale) + shift)     guest video, after the audio branch
              x += FFN(LN x)
  shift, scale, gate come from the guest projector, per block, with zero-initialised gates: a fresh
  video branch leaves the audio-only model unchanged (stage 2 starts from stage 1 exactly).
Guest encoding: visible frames are projected, invisible ones are replaced by a learned blackout
token (the paper's black frames); optionally each slot also carries the guest's recent activity (the
mean |change| of its measured geometry over the last few slots: talking moves the jaw, a pause stops
it). Then learned temporal kernels summarise the 64-frame window
(initialised as windows at spread delays, so "0.3 s after the guest stopped talking" is expressible
from the start), and the P partners are summed (MPE).
Optional field heads: with the video branch on, a few fields' velocity is the audio path's plus a small
MLP's term that reads only chosen columns of the guest's geometry (`FieldHeadSpec`): roll from the guest's
relative roll (MotionGeneratorConfig.guest_roll_head), pitch and yaw from the guest's jaw and yaw
(guest_nod_look_head).

Generative head: rectified flow matching. The flow's data space is per field either the motion
standardised over the data (fast fields the audio drives: jaw, pucker, blinks) or its *increment*
from a reference frame (the last history frame) over the data's spread of increments (`delta_std`,
per k): head pose, smile, gaze, brows. Continuity makes the next head pose nearly the last one; in
absolute units what matters there (a nod or tilt starting) is a sliver of the error, in increment
units it is all of it. A reference's placement (tx, ty, scale) far outside the data's range (a
session starting from `f2f.motion.neutral_vector()`, a fifth of the frame high) is replaced by the
data mean.
Training regresses the velocity (data - noise) at x_t = (1 - t) noise + t data; sampling integrates
x from the given noise at t = 0 to t = 1 in a few Euler steps. Classifier-free guidance on the video
branch only:
  v = v_audio + lambda_video * (v_video - v_audio)
so lambda_video = 0 is exactly the audio-only avatar.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from f2f.avatar_spec import AvatarSpec
from f2f.motion import FIELD_INDEX
from models.guest_encoder import GEOMETRY_FIELDS
from models.layers import Attention, FeedForward, timestep_embedding


HISTORY_CLAMP = 8.0  # normalised units
ABSOLUTE_FIELDS = ("jawOpen", "mouthPucker", "eyeBlinkLeft", "eyeBlinkRight")  # fast: the flow models their values
OUTPUT_RANGE = 6.0  # increment fields' outputs stay within the data mean +- this many std
REFERENCE_RANGE = 6.0  # a reference field further than this many std from the data mean is replaced by the mean


@dataclass(frozen=True)
class MotionGeneratorConfig:  # defaults: the default avatar's sizes
    width: int = 96
    layers: int = 4
    heads: int = 4
    guest_kernels: int = 16  # learned temporal summaries of the guest window
    sampling_steps: int = 4  # Euler steps of the flow at inference
    # The flow starts from temperature x the given standard-normal noise. Below 1 the samples keep to
    # the likelier motions: fewer spontaneous head moves that look like responses to nothing (default
    # avatar, train split, lambda 2: reaction precision 0.58 -> 0.62 at 1 -> 0.5, recall 0.61 both).
    temperature: float = 1.0
    # Guest activity: per slot, how much the guest's measured geometry (jaw, head, brows...) moved over
    # the last this-many slots (mean absolute frame-to-frame change), embedded beside the slot's
    # feature. Talking is a moving jaw, and a pause is its absence; a linear embedding pooled over
    # time sees only the average jaw opening. 0: off.
    guest_activity_frames: int = 0
    # History velocity: each history token also carries its frame's increment from the one before, in
    # the flow's increment units (delta_std). From standardised frames alone the network has to take a
    # small difference of two tokens and scale it up ~8x to continue a nod or a turn, and it
    # continued them at half speed (teacher-forced); given the increment, continuing is copying it.
    history_increments: bool = False
    # Guest geometry relative to the guest's own mean over the visible slots of the window, embedded
    # beside each slot's feature: a tilt or a smile is a change from where this guest's face usually
    # is, and the raw geometry also carries who the guest is (face shape, resting roll), which the
    # branch, trained on a handful of guests, can learn instead of the change.
    guest_relative_geometry: bool = False
    # Roll head: with the video branch on, roll's flow velocity is the audio path's plus a small head's
    # term, and the head reads only the guest's roll (relative to the guest's window mean) and the noisy
    # roll; the main branch still moves every other field. Through the shared branch, a guest's smile or
    # a pause also tilted the host's head: tilts were 83 of 102 false reactions (test split), two thirds
    # after a guest roll change under 3 degrees. A head that cannot see them cannot tilt for them
    # (docs/model.md, session 18: held-out F1 0.48 -> 0.61 on test, 0.56 -> 0.65 on val).
    guest_roll_head: bool = False
    # Nod and look head: the same for pitch and yaw. It reads the guest's jaw (its motion, recent
    # activity: talking, a pause, an onset) and yaw, and the host's own pitch and yaw over the history.
    # A nod answers a pause and a look answers the guest starting to talk; through the shared branch
    # they came with false nods near other cues and looks missed (docs/model.md, session 20: held-out F1
    # 0.61 -> 0.70 on test, 0.65 -> 0.71 on val, both stage-2 seeds). Unlike roll's, the main branch
    # keeps learning pitch and yaw beside the head (`FieldHeadSpec.main_branch_learns`), as measured.
    guest_nod_look_head: bool = False


@dataclass
class GuestGeometry:
    """The guest's measured geometry (the feature's last 12 entries) three ways, each (B, P, G, 12), zero
    where invisible: computed once per step for the projector and the field heads."""

    absolute: torch.Tensor  # as measured (standardised)
    relative: torch.Tensor  # minus the mean over the window's visible slots
    activity: torch.Tensor  # recent mean |change| (zeros without guest_activity_frames)


@dataclass
class Conditioning:
    """Everything but the noisy motion: computed once per step, reused by every flow step."""

    audio: torch.Tensor  # (B, M, W) audio tokens
    history: torch.Tensor  # (B, H, W) embedded history motion tokens
    modulation: torch.Tensor  # (B, layers, 3, W) shift, scale, gate per block
    head_contexts: tuple[torch.Tensor, ...] = ()  # per field head (GuestProjector.heads) its context (B, P, C)

    def doubled(self) -> "Conditioning":
        """Both guidance branches in one batch of 2B, for the network (the heads, applied to the video
        half only, read the undoubled contexts)."""
        twice = lambda x: torch.cat([x, x])  # noqa: E731
        return Conditioning(twice(self.audio), twice(self.history), twice(self.modulation))


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


def recency_kernels(count: int, frames: int) -> torch.Tensor:
    """Initial kernel logits: Gaussian windows centred at delays spread over the window (newest frames
    densest), so the summaries start out time-resolved ("what the guest did 0.2 s ago") rather than
    as plain averages that hide when a cue happened.  -> (count, frames)"""
    delay = torch.arange(frames - 1, -1, -1, dtype=torch.float32)  # slot g is `delay` frames before now
    centres = (frames - 1) * torch.linspace(0.0, 1.0, count) ** 1.5
    width = 1.0 + 0.5 * torch.gradient(centres)[0] if count > 1 else torch.tensor([frames / 2.0])
    return -0.5 * ((delay[None] - centres[:, None]) / width[:, None]) ** 2


@dataclass(frozen=True)
class FieldHeadSpec:
    """A field head: the host fields it drives and the only inputs it reads."""

    fields: tuple[str, ...]  # host motion fields whose video velocity it gives
    guest_absolute: tuple[str, ...] = ()  # guest geometry columns as measured (standardised)
    guest_relative: tuple[str, ...] = ()  # ... relative to the guest's mean over the window's visible slots
    guest_activity: tuple[str, ...] = ()  # ... recent activity (GuestProjector.activity: talking moves the jaw)
    relative_scale: float = 1.0  # relative columns to unit scale
    host_history: bool = False  # also the host's own `fields` over the history (standardised)
    main_branch_learns: bool = False  # training also fits the main branch's `fields` (its shared features)


# The guest's relative roll is small in geometry std units (a tilt ~0.25): x 4 brings it to unit scale.
ROLL_HEAD = FieldHeadSpec(("roll",), guest_relative=("roll",), relative_scale=4.0)
NOD_LOOK_HEAD = FieldHeadSpec(("pitch", "yaw"), guest_absolute=("yaw",), guest_relative=("jawOpen", "yaw"),
                              guest_activity=("jawOpen",), host_history=True, main_branch_learns=True)
ACTIVITY_SCALE = 4.0  # the activity (a mean |change| per frame: small) scaled up like the relative roll


class FieldHead(nn.Module):
    """A field head's term of its fields' video velocity, per partner (summed like the branch):
    context (B, P, C), the noisy motion x_t (B, K+Q, 15), t (B,) -> (B, K+Q, F) for the spec's F fields.
    The last layer starts at zero: a fresh head adds nothing (stage 2 starts from stage 1 exactly)."""

    def __init__(self, spec: FieldHeadSpec, guest_frames: int, history_frames: int, noisy_frames: int,
                 hidden: int = 64):
        super().__init__()
        self.spec = spec
        self.fields = [FIELD_INDEX[name] for name in spec.fields]
        self.columns = [[GEOMETRY_FIELDS.index(FIELD_INDEX[name]) for name in names]
                        for names in (spec.guest_absolute, spec.guest_relative, spec.guest_activity)]
        guest_rows = len(spec.guest_absolute) + len(spec.guest_relative) + len(spec.guest_activity) + 1  # + visibility
        context = guest_rows * guest_frames + (len(self.fields) * history_frames if spec.host_history else 0)
        noisy = len(self.fields) * noisy_frames
        self.net = nn.Sequential(nn.Linear(context + noisy + 1, hidden), nn.GELU(),
                                 nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, noisy))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def context(self, absolute: torch.Tensor, relative: torch.Tensor, activity: torch.Tensor,
                visible: torch.Tensor, host_history: torch.Tensor) -> torch.Tensor:
        """The guest's geometry (B, P, G, 12) as measured, relative and as activity, visibility (B, P, G),
        the host's standardised history (B, H, 15) -> (B, P, C)."""
        scales = (1.0, self.spec.relative_scale, ACTIVITY_SCALE)
        rows = [source[..., c] * scale for source, columns, scale in zip((absolute, relative, activity), self.columns, scales)
                for c in columns]  # each (B, P, G)
        rows.append(visible)
        if self.spec.host_history:
            host = host_history[..., self.fields].flatten(1)  # (B, H * F)
            rows.append(host[:, None].expand(-1, visible.shape[1], -1))
        return torch.cat(rows, dim=-1)

    def forward(self, context: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        noisy = x_t[..., self.fields]  # (B, K+Q, F)
        state = torch.cat([noisy.flatten(1), t[:, None]], dim=-1)[:, None].expand(-1, context.shape[1], -1)
        return self.net(torch.cat([context, state], dim=-1)).sum(dim=1).reshape(noisy.shape)


class GuestProjector(nn.Module):
    """Guest features (B, P, G, D) + visibility (B, P, G) -> per-block shift/scale/gate (B, L, 3, W)
    (and the field heads with their contexts: `heads`, `head_contexts`)."""

    def __init__(self, spec: AvatarSpec, config: MotionGeneratorConfig):
        super().__init__()
        width = config.width
        self.layers = config.layers
        self.width = width
        self.embed = nn.Linear(spec.guest_feature_dim, width)
        self.activity_frames = config.guest_activity_frames
        if self.activity_frames > 0:
            self.embed_activity = nn.Linear(len(GEOMETRY_FIELDS), width)
        self.relative_geometry = config.guest_relative_geometry
        if self.relative_geometry:
            with torch.random.fork_rng():  # the rest of the model initialises as without it
                self.embed_relative = nn.Linear(len(GEOMETRY_FIELDS), width)
        self.blackout = nn.Parameter(torch.zeros(width))
        self.position = nn.Parameter(torch.zeros(spec.guest_context_frames, width))
        self.kernels = nn.Parameter(recency_kernels(config.guest_kernels, spec.guest_context_frames))
        self.summarise = nn.Sequential(nn.Linear(config.guest_kernels * width, width), nn.GELU(), nn.Linear(width, width))
        self.to_modulation = nn.Linear(width, config.layers * 3 * width)
        # Zero gates: a fresh branch leaves every block as the audio-only model. Shift and scale
        # start small and random rather than zero too: with both the gate and the shift at zero the
        # gate's gradient sees only LN(x), not the guest, and on real clips the branch learned
        # nothing from a smile or a tilt; with a guest-dependent shift the gate opens to it.
        nn.init.normal_(self.to_modulation.weight, std=0.02)
        nn.init.zeros_(self.to_modulation.bias)
        with torch.no_grad():
            self.to_modulation.weight.view(config.layers, 3, width, width)[:, 2] = 0.0
        # The heads initialise apart (forked RNG): the rest of the model initialises as without them, and
        # the nod/look head draws from its own seed, so adding it changes no other weight either.
        head = lambda head_spec: FieldHead(head_spec, spec.guest_context_frames, spec.motion_history_frames,  # noqa: E731
                                           spec.noise_frames)
        self.roll_head = self.nod_look_head = None
        if config.guest_roll_head:
            with torch.random.fork_rng():
                self.roll_head = head(ROLL_HEAD)
        if config.guest_nod_look_head:
            if NOD_LOOK_HEAD.guest_activity and self.activity_frames == 0:
                raise ValueError("guest_nod_look_head reads the guest's activity: set guest_activity_frames > 0")
            with torch.random.fork_rng():
                torch.manual_seed(torch.initial_seed() + 99)
                self.nod_look_head = head(NOD_LOOK_HEAD)

    def geometry(self, guest_features: torch.Tensor, guest_visible: torch.Tensor) -> GuestGeometry:
        visible = guest_visible[..., None]  # (B, P, G, 1)
        absolute = guest_features[..., -len(GEOMETRY_FIELDS):] * visible
        activity = self.activity(guest_features, visible) if self.activity_frames > 0 else torch.zeros_like(absolute)
        return GuestGeometry(absolute, self.relative(guest_features, visible), activity)

    def forward(self, guest_features: torch.Tensor, guest_visible: torch.Tensor, geometry: GuestGeometry) -> torch.Tensor:
        batch, partners, frames, _ = guest_features.shape
        visible = guest_visible[..., None]  # (B, P, G, 1)
        embedded = self.embed(guest_features)  # (B, P, G, W)
        if self.activity_frames > 0:
            embedded = embedded + self.embed_activity(geometry.activity)
        if self.relative_geometry:
            embedded = embedded + self.embed_relative(geometry.relative)
        tokens = visible * embedded + (1.0 - visible) * self.blackout  # (B, P, G, W)
        tokens = tokens + self.position
        weights = self.kernels.softmax(dim=-1)  # (Kg, G)
        summary = torch.einsum("kg,bpgw->bpkw", weights, tokens).reshape(batch, partners, -1)  # (B, P, Kg*W)
        per_partner = self.summarise(summary)  # (B, P, W)
        guest = per_partner.sum(dim=1)  # (B, W): multiple partners share the encoder and add up
        return self.to_modulation(guest).reshape(batch, self.layers, 3, self.width)

    @property
    def heads(self) -> list[FieldHead]:
        return [h for h in (self.roll_head, self.nod_look_head) if h is not None]

    def head_contexts(self, geometry: GuestGeometry, guest_visible: torch.Tensor,
                      host_history: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The guest's geometry, visibility (B, P, G), the host's standardised history (B, H, 15) -> per
        head (B, P, C)."""
        return tuple(h.context(geometry.absolute, geometry.relative, geometry.activity, guest_visible, host_history)
                     for h in self.heads)

    @staticmethod
    def relative(guest_features: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """(B, P, G, D), (B, P, G, 1) -> (B, P, G, 12): each visible slot's geometry minus the mean over
        the window's visible slots (zero where invisible)."""
        geometry = guest_features[..., -len(GEOMETRY_FIELDS):] * visible  # (B, P, G, 12)
        mean = geometry.sum(dim=2, keepdim=True) / visible.sum(dim=2, keepdim=True).clamp(min=1.0)
        return (geometry - mean) * visible

    def activity(self, guest_features: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """(B, P, G, D), (B, P, G, 1) -> (B, P, G, 12): causal moving mean of |change| of the geometry
        (the feature's last 12 entries), counting only changes between two visible slots."""
        geometry = guest_features[..., -len(GEOMETRY_FIELDS):]  # (B, P, G, 12)
        change = (geometry[:, :, 1:] - geometry[:, :, :-1]).abs() * visible[:, :, 1:] * visible[:, :, :-1]
        frames = geometry.shape[2]
        window = min(self.activity_frames, frames)
        # Slot g sums the changes into slots g-w+1 .. g (a sum of shifted copies: no cumulative-sum
        # cancellation, so a row's result does not depend on what else is in the batch).
        padded = torch.cat([torch.zeros_like(geometry[:, :, :window]), change], dim=2)  # (B, P, w + G - 1, 12)
        total = sum(padded[:, :, k:k + frames] for k in range(window))
        return total / self.activity_frames


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
        H, noisy = spec.motion_history_frames, spec.noise_frames
        tokens = H + noisy
        self.audio_encoder = AudioEncoder(spec, width)
        self.guest_projector = GuestProjector(spec, config)
        self.embed_history = nn.Linear(spec.motion_dim * (2 if config.history_increments else 1), width)
        self.embed_target = nn.Linear(spec.motion_dim, width)
        self.embed_time = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))
        self.position = nn.Parameter(torch.zeros(tokens, width))
        self.blocks = nn.ModuleList(MotionBlock(width, config.heads) for _ in range(config.layers))
        self.norm_out = nn.LayerNorm(width)
        self.head = nn.Linear(width, spec.motion_dim)
        causal = torch.full((tokens, tokens), float("-inf")).triu(1)
        if spec.plan_frames > 0:  # the made and the planned frames are sampled jointly
            causal[H:, H:] = 0.0
        self.register_buffer("causal_mask", causal, persistent=False)
        self.register_buffer("motion_mean", torch.zeros(spec.motion_dim))
        self.register_buffer("motion_std", torch.ones(spec.motion_dim))
        self.register_buffer("delta_std", torch.ones(noisy, spec.motion_dim))  # per frame ahead
        increments = torch.ones(spec.motion_dim)
        increments[[FIELD_INDEX[name] for name in ABSOLUTE_FIELDS]] = 0.0
        self.register_buffer("increment_fields", increments)  # 1: flow over increments, 0: standardised
        # The plan carries the slow fields only: the audio-driven ones (jaw, pucker, blinks) of frames past
        # the step's audio window have nothing to follow, and sampling them jointly cost the made frame's
        # jaw its accuracy (jaw correlation 0.89 -> 0.77 with a 6-frame plan).
        sampled = torch.ones(noisy, spec.motion_dim)
        sampled[spec.frames_per_step:] = increments
        self.register_buffer("sampled_fields", sampled, persistent=False)  # (K+Q, 15)
        placement = torch.zeros(spec.motion_dim)
        placement[[FIELD_INDEX[name] for name in ("tx", "ty", "scale")]] = 1.0
        self.register_buffer("placement_fields", placement, persistent=False)  # where a session's start is off
        nn.init.normal_(self.position, std=0.02)

    # --- normalisation: the network works on standardised motion --------------------------
    def normalise(self, motion: torch.Tensor) -> torch.Tensor:
        return (motion - self.motion_mean) / self.motion_std

    def reference(self, motion_history: torch.Tensor) -> torch.Tensor:
        """The frame increments are measured from: (B, H, 15) -> (B, 1, 15)."""
        last = motion_history[:, -1:]
        far = (self.normalise(last).abs() > REFERENCE_RANGE) & (self.placement_fields > 0)
        return torch.where(far, self.motion_mean, last)

    def to_flow(self, motion: torch.Tensor, motion_history: torch.Tensor) -> torch.Tensor:
        """Motion (B, T, 15), T <= K+Q frames ahead -> the flow's data space (increments or standardised,
        per field)."""
        increment = (motion - self.reference(motion_history)) / self.delta_std[:motion.shape[1]]
        return torch.where(self.increment_fields > 0, increment, self.normalise(motion))

    def to_motion(self, x: torch.Tensor, motion_history: torch.Tensor) -> torch.Tensor:
        """The flow's sample (B, T, 15) -> motion (B, T, 15) (T frames ahead of the history)."""
        increment = self.reference(motion_history) + x * self.delta_std[:x.shape[1]]
        # Increments integrate: bound them to the data's range so a drifting rollout cannot leave it
        # (a guard; training with history offsets is what keeps the pose there).
        bound = OUTPUT_RANGE * self.motion_std
        increment = torch.maximum(torch.minimum(increment, self.motion_mean + bound), self.motion_mean - bound)
        return torch.where(self.increment_fields > 0, increment, x * self.motion_std + self.motion_mean)

    def history_increments(self, motion_history: torch.Tensor) -> torch.Tensor:
        """(B, H, 15) -> (B, H, 15): each frame minus the one before in delta_std units (0 for the
        first), bounded like the history (a session's first frames jump from the neutral start)."""
        step = (motion_history[:, 1:] - motion_history[:, :-1]) / self.delta_std[0]
        step = torch.cat([torch.zeros_like(motion_history[:, :1]), step], dim=1)
        return step.clamp(-HISTORY_CLAMP, HISTORY_CLAMP)

    # --- the pieces training uses -----------------------------------------------------------
    def condition(self, audio_mel, guest_features, guest_visible, motion_history) -> Conditioning:
        # A session's history starts far from the data (f2f.motion.neutral_vector): bounded, so the
        # first steps see a large but finite offset and leave it (training shows them that start too).
        standardised = self.normalise(motion_history).clamp(-HISTORY_CLAMP, HISTORY_CLAMP)  # (B, H, 15)
        history = standardised
        if self.config.history_increments:
            history = torch.cat([history, self.history_increments(motion_history)], dim=-1)  # (B, H, 30)
        projector = self.guest_projector
        geometry = projector.geometry(guest_features, guest_visible)
        return Conditioning(
            audio=self.audio_encoder(audio_mel),
            history=self.embed_history(history),
            modulation=projector(guest_features, guest_visible, geometry),
            head_contexts=projector.head_contexts(geometry, guest_visible, standardised),
        )

    def velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, video_on: torch.Tensor) -> torch.Tensor:
        """Flow velocity at x_t (B, K+Q, 15) (flow space, `to_flow`), time t (B,); video_on (B,) is 1
        to apply the guest branch and 0 for the audio-only path (guidance dropout) -> (B, K+Q, 15)."""
        return self.with_field_heads(self.network_velocity(x_t, t, cond, video_on), x_t, t, cond, video_on)

    def with_field_heads(self, v: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                         video_on: torch.Tensor) -> torch.Tensor:
        """The network's velocity v (B, K+Q, 15) -> the model's: on video rows the heads' fields replaced."""
        if not cond.head_contexts or not bool(video_on.any()):  # no heads, or stage 1: no video rows
            return v
        # The heads add to the audio path's velocity. Stage 2 trains the branch on a frozen audio path,
        # so that pass needs no gradient (its guest inputs are multiplied by 0 anyway).
        with torch.no_grad():
            v_audio = self.network_velocity(x_t, t, cond, torch.zeros_like(video_on))
        on = video_on[:, None, None] > 0.5  # (B, 1, 1)
        return torch.where(on, self.replace_head_fields(v, v_audio, x_t, t, cond.head_contexts), v)

    def replace_head_fields(self, v_video: torch.Tensor, v_audio: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
                            contexts: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The video branch's velocity (B, K+Q, 15) with each head's fields replaced by the audio path's
        plus the head's term (see MotionGeneratorConfig.guest_roll_head, guest_nod_look_head)."""
        columns = list(v_video.unbind(dim=-1))  # 15 x (B, K+Q)
        for head, context in zip(self.guest_projector.heads, contexts, strict=True):
            value = v_audio[..., head.fields] + head(context, x_t, t)  # (B, K+Q, F)
            for k, field in enumerate(head.fields):
                columns[field] = value[..., k]
        return torch.stack(columns, dim=-1)

    def main_branch_fields(self) -> torch.Tensor:
        """(15,) 1 where training also fits the main branch's own video velocity: the fields of heads
        with `main_branch_learns` (the others' main-branch outputs are unused, so left alone)."""
        mask = torch.zeros(self.spec.motion_dim, device=self.motion_mean.device)
        for head in self.guest_projector.heads:
            if head.spec.main_branch_learns:
                mask[head.fields] = 1.0
        return mask

    def network_velocity(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning, video_on: torch.Tensor) -> torch.Tensor:
        """The transformer's velocity (B, K+Q, 15), without the field heads."""
        time = self.embed_time(timestep_embedding(t, self.config.width))[:, None, :]  # (B, 1, W)
        if self.spec.plan_frames > 0:  # no op in the graph of an avatar without a plan
            x_t = x_t * self.sampled_fields
        target = self.embed_target(x_t) + time  # (B, K+Q, W)
        x = torch.cat([cond.history, target], dim=1) + self.position  # (B, H+K+Q, W)
        modulation = cond.modulation * video_on[:, None, None, None]  # (B, L, 3, W)
        for i, block in enumerate(self.blocks):
            x = block(x, cond.audio, modulation[:, i], self.causal_mask)
        return self.head(self.norm_out(x[:, -self.spec.noise_frames:]))

    # --- inference: one streaming step ------------------------------------------------------
    def forward(self, audio_mel, guest_features, guest_visible, motion_history, noise, lambda_video) -> torch.Tensor:
        # audio_mel (B, M, 80), guest_features (B, P, G, D), guest_visible (B, P, G),
        # motion_history (B, H, 15), noise (B, K+Q, 15), lambda_video (B, 1) -> motion (B, K, 15)
        batch = noise.shape[0]
        cond = self.condition(audio_mel, guest_features, guest_visible, motion_history)
        # Both guidance branches in one batch of 2B: the first half audio-only, the second with video.
        doubled = cond.doubled()
        video_on = torch.cat([noise.new_zeros(batch), noise.new_ones(batch)])  # (2B,)
        x = noise * self.config.temperature
        steps = self.config.sampling_steps
        for i in range(steps):
            t = noise.new_full((2 * batch,), i / steps)
            v_both = self.network_velocity(torch.cat([x, x]), t, doubled, video_on)  # (2B, K+Q, 15)
            v_audio, v_video = v_both[:batch], v_both[batch:]
            if cond.head_contexts:  # the audio half is the heads' base: no extra pass
                v_video = self.replace_head_fields(v_video, v_audio, x, t[:batch], cond.head_contexts)
            v = v_audio + lambda_video[:, :, None] * (v_video - v_audio)
            x = x + v / steps
        return self.to_motion(x[:, :self.spec.frames_per_step], motion_history)  # the plan is dropped
