"""The three networks: shapes, zero-initialised video branch, guidance at lambda 0, checkpoints."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from export.onnx_export import example_inputs
from f2f.avatar_spec import GUEST_ENCODER, MOTION_GENERATOR, RENDERER, AvatarSpec
from f2f.motion import FIELD_INDEX
from models.avatar import Avatar, load_avatar, random_avatar, save_avatar, tiny_config
from models.guest_encoder import GEOMETRY_FIELDS
from models.motion_generator import GuestProjector, MotionGeneratorConfig
from models.renderer import Renderer, RendererConfig


@pytest.fixture(scope="module")
def avatar():
    return random_avatar(tiny_config(), seed=3)


@pytest.mark.parametrize("batch", [1, 3])
def test_output_shapes_follow_the_spec(avatar, batch):
    spec = avatar.spec
    with torch.no_grad():
        for network in (GUEST_ENCODER, MOTION_GENERATOR, RENDERER):
            out = avatar.network(network)(**example_inputs(spec, network, batch))
            (name, shape), = spec.outputs(network).items()
            assert tuple(out.shape) == (batch, *shape), name
        frames = avatar.renderer(torch.randn(batch, spec.frames_per_step, spec.motion_dim))
    assert float(frames.min()) >= 0.0 and float(frames.max()) <= 1.0


def test_k_frames_per_call_and_512_frames():
    config = tiny_config()
    config = dataclasses.replace(config, spec=dataclasses.replace(config.spec, frames_per_step=3, frame_size=128))
    avatar = random_avatar(config)
    with torch.no_grad():
        motion = avatar.motion_generator(**example_inputs(config.spec, MOTION_GENERATOR, 2))
        frames = avatar.renderer(motion)
    assert motion.shape == (2, 3, 15) and frames.shape == (2, 3, 3, 128, 128)
    assert config.spec.mel_frames == 4 * (8 + 3 + 2)


def test_fresh_video_branch_leaves_outputs_unchanged():
    """Zero-initialised shift/scale/gate: a fresh model ignores the guest entirely (stage 2 starts
    from the audio-only model), whatever the guest features, visibility and lambda."""
    torch.manual_seed(0)
    avatar = Avatar(tiny_config()).eval()
    inputs = example_inputs(avatar.spec, MOTION_GENERATOR, 4)
    other = dict(inputs, guest_features=torch.randn_like(inputs["guest_features"]) * 5,
                 guest_visible=1 - inputs["guest_visible"], lambda_video=inputs["lambda_video"] + 2)
    with torch.no_grad():
        assert torch.equal(avatar.motion_generator(**inputs), avatar.motion_generator(**other))


def sample_by_hand(net, inputs: dict, video_on: float) -> torch.Tensor:
    """The sampler's Euler steps written out with `velocity`, the video branch on (1) or off (0) in every
    step (no guidance mix) -> the made frames (B, K, 15)."""
    batch = len(inputs["noise"])
    cond = net.condition(inputs["audio_mel"], inputs["guest_features"], inputs["guest_visible"], inputs["motion_history"])
    x = inputs["noise"] * net.config.temperature
    steps = net.config.sampling_steps
    for i in range(steps):
        x = x + net.velocity(x, torch.full((batch,), i / steps), cond, torch.full((batch,), video_on)) / steps
    return net.to_motion(x[:, :net.spec.frames_per_step], inputs["motion_history"])


def test_guidance_at_lambda_zero_is_the_audio_only_path():
    avatar = random_avatar(tiny_config(), seed=1)  # randomised video branch: guidance matters
    net = avatar.motion_generator
    inputs = example_inputs(avatar.spec, MOTION_GENERATOR, 3)
    with torch.no_grad():
        guided = net(**dict(inputs, lambda_video=torch.zeros(3, 1)))
        audio_only = sample_by_hand(net, inputs, video_on=0.0)  # the same Euler steps, video branch off
        with_video = net(**dict(inputs, lambda_video=torch.ones(3, 1)))
    assert torch.allclose(guided, audio_only, atol=1e-6)
    assert not torch.allclose(guided, with_video, atol=1e-4), "the video branch should matter at lambda 1"


def test_checkpoint_round_trip(tmp_path, avatar):
    save_avatar(avatar, tmp_path / "ckpt")
    loaded = load_avatar(tmp_path / "ckpt")
    assert loaded.config == avatar.config
    inputs = example_inputs(avatar.spec, MOTION_GENERATOR, 2)
    with torch.no_grad():
        assert torch.equal(avatar.motion_generator(**inputs), loaded.motion_generator(**inputs))
    assert not list(tmp_path.glob("ckpt/*.partial"))


def test_bad_checkpoints_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_avatar(tmp_path)
    with pytest.raises(ValueError, match="lookahead"):
        AvatarSpec(lookahead_frames=3)


def test_guest_encoder_ignores_the_partner_framing_and_splits_for_training():
    """tx, ty, scale of the partner's geometry depend on the camera (webcam frame vs curated crop):
    the encoder does not read them; `appearance` + `from_appearance` is the forward."""
    avatar = random_avatar(tiny_config(), seed=4)
    inputs = example_inputs(avatar.spec, GUEST_ENCODER, 3)
    moved = inputs["face_geometry"].clone()
    moved[:, 3:6] += torch.tensor([0.3, -0.2, 0.4])  # tx, ty, scale
    with torch.no_grad():
        feature = avatar.guest_encoder(**inputs)
        assert torch.equal(feature, avatar.guest_encoder(inputs["face_crop"], moved))
        split = avatar.guest_encoder.from_appearance(avatar.guest_encoder.appearance(inputs["face_crop"]),
                                                     inputs["face_geometry"])
    assert torch.allclose(feature, split, atol=1e-6)


def test_a_session_starting_from_the_neutral_vector_is_referred_to_the_data():
    """Increments are measured from the last history frame, except a placement far outside the data
    (the gateway's neutral_vector start, a fifth of the frame high): then from the data mean."""
    from f2f.motion import FIELD_INDEX, neutral_vector

    net = random_avatar(tiny_config(), seed=1).motion_generator
    net.motion_mean[FIELD_INDEX["scale"]] = 0.6
    net.motion_std[FIELD_INDEX["scale"]] = 0.02
    history = torch.from_numpy(neutral_vector()).repeat(1, 6, 1)
    reference = net.reference(history)[0, 0]
    assert float(reference[FIELD_INDEX["scale"]]) == pytest.approx(0.6)
    assert float(reference[FIELD_INDEX["yaw"]]) == 0.0  # in range: the history's own value
    x = 0.01 * torch.randn(1, 1, 15)  # a step that stays inside the data's range
    assert torch.allclose(net.to_flow(net.to_motion(x, history), history), x, atol=1e-4)


def test_increment_outputs_stay_within_the_data_range():
    """A rollout whose history drifted far off (yaw +1000 deg) cannot step further: the increment
    fields' outputs are bounded to the data mean +- OUTPUT_RANGE std; standardised fields are not."""
    from f2f.motion import FIELD_INDEX
    from models.motion_generator import OUTPUT_RANGE

    net = random_avatar(tiny_config(), seed=2).motion_generator
    yaw, jaw = FIELD_INDEX["yaw"], FIELD_INDEX["jawOpen"]
    net.motion_std[yaw] = 5.0
    history = torch.zeros(2, 6, 15)
    history[0, :, yaw] = 1000.0
    x = torch.zeros(2, 1, 15)
    x[1, 0, yaw] = 0.5
    x[:, 0, jaw] = 50.0
    out = net.to_motion(x, history)  # (2, 1, 15)
    assert float(out[0, 0, yaw]) == pytest.approx(float(net.motion_mean[yaw]) + OUTPUT_RANGE * 5.0)
    assert float(out[1, 0, yaw]) == pytest.approx(0.5 * float(net.delta_std[0, yaw]))  # in range: untouched
    assert float(out[0, 0, jaw]) == pytest.approx(50.0 * float(net.motion_std[jaw]) + float(net.motion_mean[jaw]))


def test_history_tokens_carry_each_frames_increment_in_flow_units():
    """With `history_increments` the history tokens see each frame's change from the one before over
    delta_std (0 for the first frame, bounded like the history), so a nod under way is read directly."""
    from f2f.motion import FIELD_INDEX
    from models.motion_generator import HISTORY_CLAMP

    net = random_avatar(tiny_config(), seed=3).motion_generator
    assert net.config.history_increments and net.embed_history.in_features == 2 * net.spec.motion_dim
    pitch = FIELD_INDEX["pitch"]
    net.delta_std[0, pitch] = 0.5
    history = torch.zeros(1, 6, 15)
    history[0, :, pitch] = torch.tensor([0.0, 0.0, 0.0, 0.2, 0.7, 1.5])  # a nod starting
    history[0, 0, FIELD_INDEX["yaw"]] = 500.0  # a far first frame: its jump to the next is bounded
    steps = net.history_increments(history)[0]  # (6, 15)
    assert steps[:, pitch].tolist() == pytest.approx([0.0, 0.0, 0.0, 0.4, 1.0, 1.6])
    assert float(steps[0].abs().sum()) == 0.0
    assert float(steps[1, FIELD_INDEX["yaw"]]) == -HISTORY_CLAMP
    # The same last frame reached at another speed is another input, hence another output.
    slower = history.clone()
    slower[0, :, pitch] = torch.tensor([1.5, 1.5, 1.5, 1.5, 1.5, 1.5])
    inputs = example_inputs(net.spec, MOTION_GENERATOR, 1)
    with torch.no_grad():
        moving = net(**dict(inputs, motion_history=history))
        still = net(**dict(inputs, motion_history=slower))
    assert not torch.allclose(moving, still)
    plain = random_avatar(dataclasses.replace(tiny_config(), motion_generator=dataclasses.replace(
        tiny_config().motion_generator, history_increments=False)), seed=3).motion_generator
    assert plain.embed_history.in_features == plain.spec.motion_dim  # older checkpoints load as before


def test_plan_frames_are_sampled_with_the_made_frames_and_dropped():
    """plan_frames Q: the noise covers K + Q frames, the output is K; the plan's noise moves the made
    frame (joint sampling: the noisy frames see each other); history tokens still see no noisy frame."""
    config = tiny_config()
    spec = dataclasses.replace(config.spec, plan_frames=3)
    net = random_avatar(dataclasses.replace(config, spec=spec), seed=4).motion_generator
    inputs = example_inputs(spec, MOTION_GENERATOR, 2)
    assert inputs["noise"].shape == (2, 4, 15) and net.delta_std.shape == (4, 15)
    H = spec.motion_history_frames
    assert torch.isinf(net.causal_mask[:H, H:]).all() and not torch.isinf(net.causal_mask[H:]).any()
    other_plan = inputs["noise"].clone()
    other_plan[:, 1:] = torch.randn_like(other_plan[:, 1:])
    with torch.no_grad():
        made = net(**inputs)
        replanned = net(**dict(inputs, noise=other_plan))
    assert made.shape == (2, 1, 15)
    assert not torch.allclose(made, replanned)
    # The plan carries the slow fields only: its audio-driven fields (jaw...) are never read.
    from f2f.motion import FIELD_INDEX
    other_jaw = inputs["noise"].clone()
    other_jaw[:, 1:, FIELD_INDEX["jawOpen"]] += 5.0
    with torch.no_grad():
        assert torch.allclose(net(**dict(inputs, noise=other_jaw)), made, atol=1e-6)
    assert net.sampled_fields[0].all() and not net.sampled_fields[1:, FIELD_INDEX["jawOpen"]].any()


def test_sampling_temperature_scales_the_starting_noise_and_survives_a_checkpoint(tmp_path):
    config = tiny_config()
    cold = dataclasses.replace(config, motion_generator=dataclasses.replace(config.motion_generator, temperature=0.0))
    half = dataclasses.replace(config, motion_generator=dataclasses.replace(config.motion_generator, temperature=0.5))
    base, frozen, warm = (random_avatar(c, seed=5) for c in (config, cold, half))
    inputs = example_inputs(config.spec, MOTION_GENERATOR, 2)
    other = dict(inputs, noise=torch.randn_like(inputs["noise"]))
    with torch.no_grad():
        # Temperature 0: the noise no longer matters; 0.5: the same as temperature 1 on half the noise.
        assert torch.equal(frozen.motion_generator(**inputs), frozen.motion_generator(**other))
        halved = dict(inputs, noise=0.5 * inputs["noise"])
        assert torch.allclose(warm.motion_generator(**inputs), base.motion_generator(**halved), atol=1e-6)
    save_avatar(warm, tmp_path / "warm")
    assert load_avatar(tmp_path / "warm").config.motion_generator.temperature == 0.5


def test_subpixel_renderer_makes_full_size_frames_with_one_conv_stage_fewer():
    spec = AvatarSpec(frame_size=128)
    plain = Renderer(spec, RendererConfig(hidden=16, channels=(16, 8, 8, 4)))
    subpixel = Renderer(spec, RendererConfig(hidden=16, channels=(16, 8, 8, 4), subpixel_output=True))
    assert len(subpixel.stages) == len(plain.stages) - 1 == 3
    with torch.no_grad():
        frames = subpixel(torch.randn(2, 1, spec.motion_dim))
    assert frames.shape == (2, 1, 3, 128, 128)
    assert float(frames.min()) >= 0.0 and float(frames.max()) <= 1.0


def test_guest_activity_is_causal_and_counts_only_changes_between_visible_frames():
    """The projector's activity feature: the mean |change| of the geometry over the last w slots."""
    spec = AvatarSpec(guest_feature_dim=16, guest_context_frames=12)
    projector = GuestProjector(spec, MotionGeneratorConfig(width=8, layers=1, heads=1, guest_kernels=2,
                                                           guest_activity_frames=3))
    features = torch.zeros(1, 1, 12, 16)
    visible = torch.ones(1, 1, 12, 1)
    assert torch.equal(projector.activity(features, visible), torch.zeros(1, 1, 12, len(GEOMETRY_FIELDS)))
    features[0, 0, 6:, -1] = 3.0  # the last geometry field steps up at slot 6 and stays
    activity = projector.activity(features, visible)[0, 0, :, -1]
    assert activity.tolist() == [0.0] * 6 + [1.0] * 3 + [0.0] * 3  # seen at slots 6..8 only (w = 3)
    assert float(projector.activity(features, visible)[..., :-1].abs().sum()) == 0.0
    visible[0, 0, 6] = 0.0  # the step's slot unseen: no change counted into or out of it
    assert float(projector.activity(features, visible).abs().sum()) == 0.0


def test_relative_guest_geometry_is_each_visible_slot_minus_the_guests_window_mean():
    """Who the guest is (a constant offset of the geometry) cancels; invisible slots neither count nor show."""
    features = torch.randn(2, 1, 10, 16)
    visible = torch.ones(2, 1, 10, 1)
    visible[1, 0, :4] = 0.0
    relative = GuestProjector.relative(features, visible)  # (2, 1, 10, 12)
    geometry = features[..., -len(GEOMETRY_FIELDS):]
    assert torch.allclose(relative[0], geometry[0] - geometry[0].mean(dim=1, keepdim=True), atol=1e-6)
    assert torch.allclose(relative[1, :, 4:], geometry[1, :, 4:] - geometry[1, :, 4:].mean(dim=1, keepdim=True), atol=1e-6)
    assert float(relative[1, :, :4].abs().sum()) == 0.0
    shifted = features.clone()
    shifted[..., -len(GEOMETRY_FIELDS):] += torch.randn(2, 1, 1, len(GEOMETRY_FIELDS)) * 5
    assert torch.allclose(GuestProjector.relative(shifted, visible), relative, atol=1e-5)
    assert float(GuestProjector.relative(features, torch.zeros_like(visible)).abs().sum()) == 0.0


@pytest.mark.parametrize("option, new_keys", [
    ("guest_relative_geometry", {f"motion_generator.guest_projector.embed_relative.{p}" for p in ("weight", "bias")}),
    ("guest_roll_head", {f"motion_generator.guest_projector.roll_head.net.{i}.{p}"
                         for i in (0, 2, 4) for p in ("weight", "bias")}),
    ("guest_nod_look_head", {f"motion_generator.guest_projector.nod_look_head.net.{i}.{p}"
                             for i in (0, 2, 4) for p in ("weight", "bias")}),
])
def test_a_video_branch_option_leaves_the_rest_of_the_model_initialised_alike(option, new_keys):
    """Stage 1 does not depend on it: the same seed gives the same weights outside the new layers."""
    config = tiny_config()

    def with_option(on: bool):
        generator = dataclasses.replace(config.motion_generator, **{option: on})
        return dataclasses.replace(config, motion_generator=generator)

    torch.manual_seed(4)
    plain = Avatar(with_option(False)).state_dict()
    torch.manual_seed(4)
    added = Avatar(with_option(True)).state_dict()
    assert set(added) - set(plain) == new_keys
    assert all(torch.equal(plain[k], added[k]) for k in plain)


def test_renderer_coordinate_term_split_equals_the_concatenated_convolution():
    # The renderer computes conv(cat([x, coordinates])) as conv(x) + conv(coordinates) so the export
    # folds the coordinates away; the weights and the result must stay those of the one convolution.
    from models.renderer import _conv_with_coordinates, _coordinates

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(32 + 2, 16, 3, padding=1)
    x = torch.randn(3, 32, 64, 64)
    whole = conv(torch.cat([x, _coordinates(64, x.device).expand(3, -1, -1, -1)], dim=1))
    torch.testing.assert_close(_conv_with_coordinates(conv, x), whole, rtol=1e-5, atol=1e-5)


def _one_head_avatar(head: str, seed: int = 6) -> Avatar:
    """A fresh avatar (main video branch closed: zero gates) whose field head `head` alone is randomised."""
    torch.manual_seed(seed)
    avatar = Avatar(tiny_config()).eval()
    torch.nn.init.normal_(getattr(avatar.motion_generator.guest_projector, head).net[-1].weight, std=0.2)
    return avatar


def _geometry_column(field: str) -> int:
    """The guest feature's entry holding `field` (the feature ends with the geometry)."""
    return -len(GEOMETRY_FIELDS) + GEOMETRY_FIELDS.index(FIELD_INDEX[field])


def test_the_roll_head_moves_only_roll_and_reads_only_the_guests_roll_change():
    """Main branch closed, head randomised: the video velocity differs from the audio path's in roll
    only, and only the guest's roll relative to their window mean reaches it."""
    avatar = _one_head_avatar("roll_head")
    net = avatar.motion_generator
    roll, column = FIELD_INDEX["roll"], _geometry_column("roll")
    inputs = example_inputs(avatar.spec, MOTION_GENERATOR, 3)
    inputs["guest_visible"] = torch.ones_like(inputs["guest_visible"])
    x, t, on = inputs["noise"], torch.tensor([0.0, 0.3, 0.7]), torch.ones(3)

    def video_velocity(guest_features):
        cond = net.condition(inputs["audio_mel"], guest_features, inputs["guest_visible"], inputs["motion_history"])
        return net.velocity(x, t, cond, on), net.velocity(x, t, cond, torch.zeros(3))

    with torch.no_grad():
        video, audio = video_velocity(inputs["guest_features"])
        others = inputs["guest_features"].clone()
        others[..., :column] = torch.randn_like(others[..., :column]) * 3  # everything but the roll column
        others[..., column + 1:] = 0.0
        same_roll, _ = video_velocity(others)
        steady = inputs["guest_features"].clone()
        steady[..., column] += 1.5  # the same roll changes from another resting roll
        resting, _ = video_velocity(steady)
        tilted = inputs["guest_features"].clone()
        tilted[..., -8:, column] += 1.0  # the guest tilts over the last 8 slots
        tilting, _ = video_velocity(tilted)
        sampled = net(**dict(inputs, guest_features=tilted, lambda_video=torch.full((3, 1), 2.0)))
        unguided = net(**dict(inputs, guest_features=tilted, lambda_video=torch.zeros(3, 1)))
    others_fields = [i for i in range(avatar.spec.motion_dim) if i != roll]
    assert torch.equal(video[..., others_fields], audio[..., others_fields])
    assert not torch.allclose(video[..., roll], audio[..., roll], atol=1e-4)
    assert torch.allclose(same_roll, video, atol=1e-6)
    assert torch.allclose(resting, video, atol=1e-5)
    assert not torch.allclose(tilting[..., roll], video[..., roll], atol=1e-4)
    assert not torch.allclose(sampled[..., roll], unguided[..., roll], atol=1e-4)  # and sampling follows it


def test_the_nod_look_head_moves_only_pitch_and_yaw_from_the_guests_jaw_and_yaw_and_the_hosts_own_pose():
    """Main branch closed, head randomised: the video velocity differs from the audio path's in pitch and
    yaw only; the guest's other columns and appearance do not reach it, their jaw and yaw do, and so do
    the host's own pitch and yaw (not the rest of the host's history)."""
    avatar = _one_head_avatar("nod_look_head")
    net = avatar.motion_generator
    driven = [FIELD_INDEX["pitch"], FIELD_INDEX["yaw"]]
    jaw, yaw = _geometry_column("jawOpen"), _geometry_column("yaw")
    inputs = example_inputs(avatar.spec, MOTION_GENERATOR, 3)
    inputs["guest_visible"] = torch.ones_like(inputs["guest_visible"])
    x, t = inputs["noise"], torch.tensor([0.0, 0.3, 0.7])

    def head_term(guest_features=None, motion_history=None):
        """video - audio velocity: with closed gates, the head's term on its fields alone."""
        cond = net.condition(inputs["audio_mel"], inputs["guest_features"] if guest_features is None else guest_features,
                             inputs["guest_visible"], inputs["motion_history"] if motion_history is None else motion_history)
        return net.velocity(x, t, cond, torch.ones(3)) - net.velocity(x, t, cond, torch.zeros(3))

    def changed(columns, scale=3.0):
        features = inputs["guest_features"].clone()
        features[..., columns] = torch.randn_like(features[..., columns]) * scale
        return features

    others = [c for c in range(-inputs["guest_features"].shape[-1], 0) if c not in (jaw, yaw)]
    history = inputs["motion_history"]
    with torch.no_grad():
        term = head_term()
        other_guest = head_term(guest_features=changed(others))
        talking = head_term(guest_features=changed([jaw], scale=1.0))
        turning = head_term(guest_features=changed([yaw], scale=1.0))
        offset = lambda column: inputs["guest_features"] + 1.5 * torch.eye(inputs["guest_features"].shape[-1])[column]  # noqa: E731
        other_resting_jaw = head_term(guest_features=offset(jaw))  # the jaw is read relative and as activity only
        facing_elsewhere = head_term(guest_features=offset(yaw))  # yaw is also read as measured
        host_nodding = head_term(motion_history=history + 3.0 * torch.eye(15)[FIELD_INDEX["pitch"]])
        host_tilting = head_term(motion_history=history + 3.0 * torch.eye(15)[FIELD_INDEX["roll"]])
    rest = [i for i in range(avatar.spec.motion_dim) if i not in driven]
    assert float(term[..., rest].abs().max()) == 0.0
    assert float(term[..., driven].abs().min()) > 0.0
    assert torch.allclose(other_guest, term, atol=1e-6)
    assert not torch.allclose(talking[..., driven], term[..., driven], atol=1e-4)
    assert not torch.allclose(turning[..., driven], term[..., driven], atol=1e-4)
    assert torch.allclose(other_resting_jaw, term, atol=1e-5)
    assert not torch.allclose(facing_elsewhere[..., driven], term[..., driven], atol=1e-4)
    assert not torch.allclose(host_nodding[..., driven], term[..., driven], atol=1e-4)
    assert torch.allclose(host_tilting, term, atol=1e-6)


def test_training_velocity_with_the_video_branch_is_what_sampling_integrates_at_lambda_one():
    """Stage 2 regresses `velocity(video_on = 1)`; the sampler must integrate that same field (the
    field heads' base is the audio half of its doubled batch, not another pass)."""
    avatar = random_avatar(tiny_config(), seed=2)
    net = avatar.motion_generator
    inputs = example_inputs(avatar.spec, MOTION_GENERATOR, 3)
    with torch.no_grad():
        sampled = net(**dict(inputs, lambda_video=torch.ones(3, 1)))
        by_hand = sample_by_hand(net, inputs, video_on=1.0)
    assert torch.allclose(sampled, by_hand, atol=1e-5)


def test_the_nod_look_head_needs_the_guest_activity_it_reads():
    config = tiny_config()
    generator = dataclasses.replace(config.motion_generator, guest_activity_frames=0)
    with pytest.raises(ValueError, match="guest_activity_frames"):
        Avatar(dataclasses.replace(config, motion_generator=generator))
