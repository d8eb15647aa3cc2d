"""Teacher-forced onset probe: does a motion generator predict the reaction fields' increments around
the ground truth's response onsets when it is given the ground-truth history?

Every frame of a split's clips is generated from the data's own last H frames (not the model's), with
SAMPLES noise draws per frame; then, per rule, the predicted increment of the rule's field (pitch for
nods, smile, roll for tilts, yaw for looks; signed like the ground truth's response) is averaged over
the scored cues at each frame from 6 before to 15 after the response onset, next to the data's own.
A model that continues a started response at half the data's speed, or adds nothing at the onset,
shows it here (docs/model.md, "Session 8").

    .venv/bin/python scripts/onset_probe.py AVATAR_DIR [SPLIT] [LAMBDAS] [--data WORK]
    e.g. .venv/bin/python scripts/onset_probe.py avatars/default test 0,1.5 --data build/avatar_interview

WORK is the directory `scripts/train_default_avatar.sh` used (curated/ and run/cache/ inside).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from f2f.motion import FIELD_INDEX  # noqa: E402
from models.avatar import load_avatar  # noqa: E402
from pipeline.evaluate.ground_truth import clip_truth  # noqa: E402
from pipeline.evaluate.reactivity import clip_cues  # noqa: E402
from pipeline.evaluate.rollouts import guest_features  # noqa: E402
from pipeline.evaluate.run import data_config_of  # noqa: E402
from pipeline.train.data import load_dataset  # noqa: E402
from pipeline.train.windows import WindowBank  # noqa: E402

RULE_FIELDS = {"nod_after_pause": ("pitch",), "smile_back": ("mouthSmileLeft", "mouthSmileRight"),
               "mirror_tilt": ("roll",), "look_at_speaker": ("yaw",)}
LAGS = np.arange(-6, 16)  # frames from the response onset


@torch.no_grad()
def teacher_forced(generator, clip, features: np.ndarray, lam: float, samples: int) -> np.ndarray:
    """Every frame n >= H of a clip from the data's frames n-H..n-1, its inputs gathered as training
    gathers a window's. -> (samples, N - H, 15)"""
    spec = generator.spec
    frames = np.arange(spec.motion_history_frames, clip.num_frames)
    window = WindowBank([clip], spec, np.zeros(spec.motion_dim, np.float32)).gather(np.zeros_like(frames), frames)
    index = window["guest_index"]  # (N - H, G), -1 before the clip
    safe = np.maximum(index, 0)
    visible = (index >= 0) & clip.guest_visible[safe]
    mel = torch.from_numpy(window["audio_mel"])
    guest = torch.from_numpy(np.where(visible[..., None], features[safe], 0.0).astype(np.float32))[:, None]
    seen = torch.from_numpy(visible.astype(np.float32))[:, None]
    history = torch.from_numpy(window["motion_history"].astype(np.float32))
    scale = torch.full((len(frames), 1), lam)
    out = [generator(mel, guest, seen, history, torch.randn(len(frames), spec.noise_frames, spec.motion_dim), scale)
           [:, 0].numpy() for _ in range(samples)]
    return np.stack(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("avatar", type=Path)
    parser.add_argument("split", nargs="?", default="test")
    parser.add_argument("lambdas", nargs="?", default="0,1.5")
    parser.add_argument("--data", type=Path, default=Path("build/avatar_interview"))
    parser.add_argument("--samples", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    lambdas = [float(x) for x in args.lambdas.split(",")]
    avatar = load_avatar(args.avatar)
    generator = avatar.motion_generator
    H = generator.spec.motion_history_frames
    data = load_dataset(args.data / "curated", args.data / "run/cache", avatar.spec, data_config_of(avatar),
                        (args.split,), quiet=True, with_meta=True)
    truth_rows = {rule: [] for rule in RULE_FIELDS}
    model_rows = {lam: {rule: [] for rule in RULE_FIELDS} for lam in lambdas}
    for clip in data.clips:
        cues = clip_cues(clip_truth(clip.record, clip.meta, data.root), clip.guest_visible, 0)
        features = guest_features(avatar, clip)
        predicted = {lam: teacher_forced(generator, clip, features, lam, args.samples) for lam in lambdas}
        motion = clip.host_motion
        for scored in cues.scored:
            onset = int(round(scored.cue.reaction_s * 25))
            if not (H + 1 <= onset + LAGS[0] and onset + LAGS[-1] < clip.num_frames):
                continue
            columns = [FIELD_INDEX[name] for name in RULE_FIELDS[scored.cue.rule]]
            sign = scored.sign or 1
            t = onset + LAGS
            before = motion[t - 1][:, columns].mean(-1)
            truth_rows[scored.cue.rule].append(sign * (motion[t][:, columns].mean(-1) - before))
            for lam in lambdas:
                made = predicted[lam][:, t - H][..., columns].mean(-1)  # (samples, lags)
                model_rows[lam][scored.cue.rule].append(sign * (made - before))
    np.set_printoptions(precision=2, suppress=True, linewidth=250)
    print("frames from the onset", LAGS)
    for rule in RULE_FIELDS:
        if not truth_rows[rule]:
            continue
        print(f"== {rule}: {len(truth_rows[rule])} cues; mean increment of {'/'.join(RULE_FIELDS[rule])}")
        print("  data        ", np.mean(truth_rows[rule], axis=0))
        for lam in lambdas:
            rows = np.stack(model_rows[lam][rule])  # (cues, samples, lags)
            print(f"  lambda {lam:<4} ", rows.mean(axis=(0, 1)), " spread over samples", rows.std(axis=1).mean(axis=0)[:3])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
