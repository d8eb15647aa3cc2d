"""Bootstrap training (pipeline.train.bootstrap): windows equal serving's, the loops learn and
resume, the sampler equals the exported forward, and a tiny end-to-end run writes a loadable avatar."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from f2f.avatar_spec import AvatarSpec
from f2f.features.mel import LOG_MEL_FLOOR, StreamingLogMel, log_mel
from f2f.motion import FIELD_INDEX, MOTION_DIM
from f2f.timebase import MEL_FRAMES_PER_VIDEO_FRAME, SAMPLES_PER_FRAME
from models.avatar import Avatar, load_avatar, tiny_config
from pipeline.train import bootstrap as B
from pipeline.train.flow_matching import sample_audio_only


def synthetic_stream(rng: np.random.Generator, frames: int, rest: np.ndarray) -> B.SpeechStream:
    """Noise bursts whose envelope is the jawOpen target (no espeak needed)."""
    envelope = np.zeros(frames)
    t = int(rng.integers(5, 15))
    while t < frames - 10:
        length = int(rng.integers(8, 30))
        envelope[t : t + length] = rng.uniform(0.3, 0.9)
        t += length + int(rng.integers(5, 25))
    envelope = np.convolve(envelope, np.ones(3) / 3, mode="same")
    carrier = rng.standard_normal(frames * SAMPLES_PER_FRAME).astype(np.float32)
    audio = (0.3 * carrier * np.repeat(envelope, SAMPLES_PER_FRAME)).astype(np.float32) + 1e-4 * carrier
    motion = np.tile(rest, (frames, 1)).astype(np.float32)
    motion[:, FIELD_INDEX["jawOpen"]] = envelope
    motion[:, FIELD_INDEX["yaw"]] = np.cumsum(rng.standard_normal(frames)) * 0.2
    rms = np.sqrt(np.mean(audio.reshape(frames, -1) ** 2, axis=1)).astype(np.float32)
    return B.SpeechStream(audio, log_mel(audio), motion, rms, envelope > 0)


def serving_window(stream: StreamingLogMel, n: int, spec: AvatarSpec) -> np.ndarray:
    """The AvatarSpec contract read off a live stream: mel frames 4(n - past) .. 4(n + K + L) - 1,
    log-mel silence before the stream starts."""
    start = MEL_FRAMES_PER_VIDEO_FRAME * (n - spec.audio_past_frames)
    stop = MEL_FRAMES_PER_VIDEO_FRAME * (n + spec.frames_per_step + spec.lookahead_frames)
    before = max(0, -start)
    rows = stream.mel_frames(max(start, 0), stop)
    assert rows is not None
    return np.concatenate([np.full((before, spec.mel_bins), LOG_MEL_FLOOR, np.float32), rows])


@pytest.mark.parametrize("spec", [AvatarSpec(), AvatarSpec(frames_per_step=2, lookahead_frames=1, audio_past_frames=3)])
def test_windows_are_built_exactly_like_serving(spec):
    rng = np.random.default_rng(0)
    rest = B.HostFraming().rest_motion()
    streams = [synthetic_stream(rng, 60, rest), synthetic_stream(rng, 45, rest)]
    bank = B.WindowBank(streams, spec, rest)
    k, look, hist = spec.frames_per_step, spec.lookahead_frames, spec.motion_history_frames
    for s, data in enumerate(streams):
        live = StreamingLogMel(history_frames=1000)
        pushed = 0
        for n in range(0, data.frames - k - look + 1):
            # A live session pushes 640-sample chunks; step n runs once its look-ahead audio is in.
            while live.mel_frames_ready < MEL_FRAMES_PER_VIDEO_FRAME * (n + k + look) and not live.flushed:
                live.push(data.audio[pushed : pushed + SAMPLES_PER_FRAME])
                pushed += SAMPLES_PER_FRAME
                if pushed >= len(data.audio):
                    live.flush()
            window = bank.windows(np.array([s]), np.array([n]))
            assert window["audio_mel"].shape == (1, spec.mel_frames, spec.mel_bins)
            np.testing.assert_array_equal(window["audio_mel"][0], serving_window(live, n, spec))
            expected_history = np.stack([data.motion[i] if i >= 0 else rest for i in range(n - hist, n)])
            np.testing.assert_array_equal(window["motion_history"][0], expected_history)
            np.testing.assert_array_equal(window["target"][0], data.motion[n : n + k])
    # Past the end of a stream the look-ahead reads silence (a flushed stream is zero-padded).
    last = streams[0].frames - k
    tail = bank.windows(np.array([0]), np.array([last]))["audio_mel"][0]
    assert np.all(tail[-MEL_FRAMES_PER_VIDEO_FRAME * look :] == np.float32(LOG_MEL_FLOOR)) if look else True
    assert len(bank) == sum(s.frames - k + 1 for s in streams)


def _tiny_generator(streams, rest):
    torch.manual_seed(0)
    avatar = Avatar(tiny_config())
    B._normalisers(avatar, streams, np.concatenate([s.motion for s in streams]))
    return avatar


def _mean_losses(losses, count=10):
    return float(np.mean(losses[:count])), float(np.mean(losses[-count:]))


def test_generator_flow_matching_loss_goes_down(tmp_path):
    rng = np.random.default_rng(1)
    rest = B.HostFraming().rest_motion()
    streams = [synthetic_stream(rng, 200, rest) for _ in range(3)]
    avatar = _tiny_generator(streams, rest)
    config = B.GeneratorTrainConfig(steps=80, batch_size=64, lr=3e-3, warmup_steps=5, checkpoint_every=1000)
    trainer = B.GeneratorTrainer(
        avatar.motion_generator, B.WindowBank(streams, avatar.spec, rest), config, tmp_path / "g.pt", "test", quiet=True
    )
    trainer.run()
    first, last = _mean_losses(trainer.losses)
    assert last < 0.8 * first, (first, last)
    # The guest branch is untouched by stage 1: the projector is still zero.
    assert float(avatar.motion_generator.guest_projector.to_modulation.weight.detach().abs().max()) == 0.0


def test_training_resumes_from_its_checkpoint(tmp_path):
    rng = np.random.default_rng(2)
    rest = B.HostFraming().rest_motion()
    streams = [synthetic_stream(rng, 80, rest)]
    config = B.GeneratorTrainConfig(steps=12, batch_size=16, warmup_steps=2, checkpoint_every=6)

    straight = _tiny_generator(streams, rest)
    B.GeneratorTrainer(
        straight.motion_generator,
        B.WindowBank(streams, straight.spec, rest),
        config,
        tmp_path / "straight.pt",
        "fp",
        quiet=True,
    ).run()

    interrupted = _tiny_generator(streams, rest)
    first = B.GeneratorTrainer(
        interrupted.motion_generator,
        B.WindowBank(streams, interrupted.spec, rest),
        config,
        tmp_path / "resumed.pt",
        "fp",
        quiet=True,
    )
    first.run(until=6)  # interrupted right after its step-6 checkpoint
    resumed_model = _tiny_generator(streams, rest)
    second = B.GeneratorTrainer(
        resumed_model.motion_generator,
        B.WindowBank(streams, resumed_model.spec, rest),
        config,
        tmp_path / "resumed.pt",
        "fp",
        quiet=True,
    )
    assert second.step == 6
    second.run()
    assert second.step == 12
    for key, value in straight.motion_generator.state_dict().items():
        torch.testing.assert_close(resumed_model.motion_generator.state_dict()[key], value, msg=key)
    # Another configuration's checkpoint is not resumed.
    other = B.GeneratorTrainer(
        _tiny_generator(streams, rest).motion_generator,
        B.WindowBank(streams, straight.spec, rest),
        config,
        tmp_path / "resumed.pt",
        "another",
        quiet=True,
    )
    assert other.step == 0


def test_audio_only_sampler_equals_the_exported_forward():
    rest = B.HostFraming().rest_motion()
    streams = [synthetic_stream(np.random.default_rng(3), 40, rest)]
    generator = _tiny_generator(streams, rest).motion_generator.eval()
    spec = generator.spec
    windows = B.WindowBank(streams, spec, rest).windows(np.zeros(4, int), np.array([0, 5, 20, 30]))
    features, visible = B.audio_only_guest_inputs(spec, 4)
    mel, history = torch.from_numpy(windows["audio_mel"]), torch.from_numpy(windows["motion_history"])
    noise = torch.randn(4, spec.frames_per_step, MOTION_DIM)
    with torch.no_grad():
        expected = generator(mel, features, visible, history, noise, torch.zeros(4, 1))
    torch.testing.assert_close(sample_audio_only(generator, mel, history, noise, features, visible), expected)


def test_renderer_loss_goes_down(tmp_path):
    config = tiny_config()
    framing = B.HostFraming()
    drawer = B.HostDrawer(framing, config.spec.frame_size)
    rng = np.random.default_rng(4)
    frames = B.RendererFrames.build(tmp_path / "frames", drawer, B.random_host_motion(rng, framing, 24))
    assert frames.images.shape == (24, config.spec.frame_size, config.spec.frame_size, 3)
    torch.manual_seed(0)
    avatar = Avatar(config)
    B._normalisers(avatar, [synthetic_stream(rng, 20, framing.rest_motion())], frames.motion)
    trainer = B.RendererTrainer(
        avatar.renderer,
        frames,
        B.RendererTrainConfig(steps=60, batch_size=8, lr=3e-3, warmup_steps=3, checkpoint_every=1000),
        tmp_path / "r.pt",
        "test",
        quiet=True,
    )
    trainer.run()
    first, last = _mean_losses(trainer.losses, 5)
    assert last < 0.8 * first, (first, last)


def test_host_drawer_places_the_eyes_where_tx_ty_say():
    framing = B.HostFraming()
    drawer = B.HostDrawer(framing, 256)
    motion = np.tile(framing.rest_motion(), (3, 1))
    motion[:, FIELD_INDEX["yaw"]] = [0.0, 15.0, -10.0]
    motion[:, FIELD_INDEX["pitch"]] = [0.0, 8.0, -5.0]
    pivot, face_px = drawer.placement(motion)
    eyes = pivot + face_px[:, None] * drawer.eye_offset(motion)
    expected = (motion[:, [FIELD_INDEX["tx"], FIELD_INDEX["ty"]]] + 0.5) * 256
    np.testing.assert_allclose(eyes, expected, atol=1e-4)
    np.testing.assert_allclose(face_px, framing.face_fraction * 256)


def test_tiny_bootstrap_writes_a_loadable_interim_avatar(tmp_path):
    pytest.importorskip("mediapipe")
    try:
        from pipeline.synth.speech import EspeakSynthesizer

        EspeakSynthesizer()
    except Exception as error:  # noqa: BLE001 - any failure to start espeak means: skip
        pytest.skip(f"espeak-ng unavailable: {error}")
    out = tmp_path / "avatar"
    result = B.run_bootstrap(B.tiny_bootstrap_config(), out, tmp_path / "cache", quiet=True)
    avatar = load_avatar(out)
    assert avatar.config.notes["trained"] is True and "interim" in avatar.config.notes
    assert len(avatar.config.notes["rest_motion"]) == MOTION_DIM
    report = json.loads((out / "bootstrap_report.json").read_text())["report"]
    assert report["losses"]["motion_generator"]["steps"] == B.tiny_bootstrap_config().generator_training.steps
    assert "rollout" in report["motion_generator"] and "renderer" in report
    assert (out / "model_card.md").read_text().startswith("# Default avatar (interim bootstrap)")
    # The motion normalisers were set from the data, and they are in the checkpoint.
    assert float(avatar.motion_generator.motion_std[FIELD_INDEX["jawOpen"]]) != 1.0
    assert result.report["checkpoint_bytes"] > 0
    # Rerunning resumes from the cache: no training steps left, same weights.
    again = B.run_bootstrap(
        B.tiny_bootstrap_config(), tmp_path / "again", tmp_path / "cache", quiet=True, evaluate=False
    )
    for key, value in result.avatar.state_dict().items():
        torch.testing.assert_close(again.avatar.state_dict()[key], value, msg=key)
