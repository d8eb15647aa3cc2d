"""`f2f train` and `f2f evaluate` end to end on a small curated-format dataset built from `f2f synth`
ground truth (tests/support/curated_dataset.py): half a minute of a 640x360 episode, tiny networks.

- train writes a loadable avatar (config + safetensors + train_report.json), TensorBoard scalars and a
  checkpoint per stage; a rerun resumes (nothing retrained, the same weights);
- evaluate writes a strict-JSON eval.json with the issue's headline keys, a lambda sweep and plots, and
  times the exported networks (the trained avatar exports to ONNX with parity, or it fails);
- torchrun with two CPU processes (gloo) trains the same way, data parallel.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from f2f.cli import main as f2f_main
from models.avatar import load_avatar
from tests.support.curated_dataset import BuildConfig, build_dataset
from tests.support.media import missing_tools, synthetic_episode

pytestmark = [pytest.mark.timeout(600),
              pytest.mark.skipif(bool(missing_tools()), reason=f"needs {', '.join(missing_tools())}")]

HEADLINE = ("lipsync_corr", "lipsync_offset_frames", "reaction_f1", "reaction_f1_audio_only", "identity_distance",
            "face_detect_rate", "psnr", "ssim", "cfg_sweep")
ENV_ONE_THREAD = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("curated_from_synth")
    episode = synthetic_episode(base / "raw", seed=3, minutes=0.5)
    return build_dataset([episode.ground_truth], base / "curated", config=BuildConfig(clip_frames=100), test_every=2)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("train")
    out, run = base / "avatar", base / "run"
    code = f2f_main(["train", str(dataset), "--out", str(out), "--run-dir", str(run), "--tiny", "--threads", "1",
                     "--quiet"])
    assert code == 0
    return out, run


def test_train_writes_a_loadable_avatar_with_its_run(trained, dataset):
    out, run = trained
    avatar = load_avatar(out)
    notes = avatar.config.notes
    assert notes["trained"] and notes["dataset"] == str(dataset.resolve())
    assert set(notes["framing"]) == {"face_fraction", "eye_x", "eye_y"}
    report = json.loads((out / "train_report.json").read_text())["report"]
    assert report["data"]["clips"] >= 1 and report["windows"] > 0
    for stage in ("guest", "stage1", "stage2", "renderer"):
        assert report["losses"][stage]["steps"] > 0, stage
        assert (run / stage / "weights.safetensors").is_file() and (run / stage / "state.pt").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*")), "no TensorBoard scalars"
    # The video branch was trained (no longer zero) and the audio path is stage 1's.
    assert float(avatar.motion_generator.guest_projector.to_modulation.weight.detach().abs().sum()) > 0
    stage1 = load_file(str(run / "stage1" / "weights.safetensors"))
    for key, value in avatar.motion_generator.audio_encoder.state_dict().items():
        assert (stage1[f"ema.generator.audio_encoder.{key}"] == value).all(), key


def test_stage2_needs_a_finished_stage1_and_trains_one_candidate_per_call(dataset, tmp_path):
    """The default avatar's script trains stage-2 candidates in parallel processes (--stage2-candidate)."""
    run = tmp_path / "run"
    args = ["train", str(dataset), "--run-dir", str(run), "--tiny", "--threads", "1", "--quiet"]
    assert f2f_main([*args, "--out", str(tmp_path / "guest"), "--stages", "guest"]) == 0
    with pytest.raises(RuntimeError, match="needs a finished stage 1"):
        f2f_main([*args, "--out", str(tmp_path / "early"), "--stages", "stage2"])
    with pytest.raises(ValueError, match="candidate 1 of 1"):
        f2f_main([*args, "--out", str(tmp_path / "none"), "--stages", "stage1,stage2", "--stage2-candidate", "1"])
    assert f2f_main([*args, "--out", str(tmp_path / "one"), "--stages", "stage1,stage2", "--stage2-candidate", "0"]) == 0
    assert json.loads((run / "stage2" / "progress.json").read_text())["steps"] > 0


def _prepare_test_split(dataset: Path, cache: Path, start) -> int:
    import time

    import numpy as np

    from f2f.avatar_spec import AvatarSpec
    from pipeline.train.data import load_dataset

    save = np.save

    def slow_save(*args, **kwargs):  # a slow disk: each written file waits a second before it is renamed
        save(*args, **kwargs)
        time.sleep(1.0)

    np.save = slow_save
    start.wait()  # every process begins preparing at once
    return len(load_dataset(dataset, cache, AvatarSpec(frame_size=64), splits=("test",), quiet=True).clips)


def test_processes_preparing_the_same_clips_at_once_all_finish(dataset, tmp_path):
    """The one command's two stage-2 candidates both prepare the val clips when they score on them."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(3) as pool:
        clips = pool.starmap(_prepare_test_split, [(dataset, tmp_path, manager.Barrier(3))] * 3)
    assert len(set(clips)) == 1 and clips[0] >= 1
    assert not list(tmp_path.rglob(".*.part*")), "temporary files left behind"


def test_a_rerun_resumes_without_retraining(trained, dataset, tmp_path):
    out, run = trained
    again = tmp_path / "again"
    code = f2f_main(["train", str(dataset), "--out", str(again), "--run-dir", str(run), "--tiny", "--threads", "1",
                     "--quiet"])
    assert code == 0
    first, second = load_file(str(out / "model.safetensors")), load_file(str(again / "model.safetensors"))
    assert first.keys() == second.keys() and all((first[k] == second[k]).all() for k in first)
    report = json.loads((again / "train_report.json").read_text())["report"]
    assert report["timings_s"]["stage1_s"] < 5.0, report["timings_s"]


def test_evaluate_writes_eval_json_and_plots(trained, tmp_path):
    out = tmp_path / "eval"
    code = f2f_main(["evaluate", str(trained[0]), "--out", str(out), "--seeds", "1", "--lambdas", "0,1,2",
                     "--latency-calls", "3", "--sweep-render-clips", "1", "--threads", "1", "--quiet",
                     "--cache", str(trained[1] / "cache")])
    assert code == 0
    text = (out / "eval.json").read_text()
    result = json.loads(text, parse_constant=lambda name: pytest.fail(f"eval.json holds {name}"))
    for key in HEADLINE:
        assert key in result, key
    # The sweep is the requested scales plus the avatar's default (the headline reactivity is measured there).
    expected = sorted({0.0, 1.0, 2.0, result["lambda_video_default"]})
    assert [row["lambda_video"] for row in result["cfg_sweep"]] == expected
    assert result["reaction_f1"] == next(row["reaction_f1"] for row in result["cfg_sweep"]
                                         if row["lambda_video"] == result["lambda_video_default"])
    assert 0.0 <= result["face_detect_rate"] <= 1.0 and result["psnr"] > 0
    assert set(result["reaction_per_rule"]) == {"nod_after_pause", "smile_back", "mirror_tilt", "look_at_speaker"}
    assert result["latency_ms"]["median_ms"]["sum"] > 0
    session = result["long_session"]  # the test clips back to back as one session
    assert session["seconds"] == pytest.approx(result["frames"] / 25, abs=0.1)
    assert set(session["fields"]) == {"yaw", "pitch", "roll"} and 0.0 <= session["frames_outside"] <= 1.0
    for plot in ("cfg_sweep.png", "lipsync_offsets.png", "tlcc.png", "timeline.png"):
        assert (out / plot).stat().st_size > 1000, plot


def test_evaluation_figures_do_not_depend_on_the_worker_count(trained, tmp_path):
    """Generation and the rendered-frame measurements run in worker processes; each task computes what
    it would in one process, so one worker and two give the same eval.json."""
    results = []
    for workers in ("1", "2"):
        out = tmp_path / f"eval_{workers}"
        code = f2f_main(["evaluate", str(trained[0]), "--out", str(out), "--seeds", "2", "--lambdas", "0,1",
                         "--latency-calls", "0", "--sweep-render-clips", "2", "--workers", workers, "--quiet",
                         "--cache", str(trained[1] / "cache")])
        assert code == 0
        results.append(json.loads((out / "eval.json").read_text()))
    one, two = ({k: v for k, v in r.items() if k not in ("timings_s", "config")} for r in results)
    assert one == two
    assert one["psnr"] > 0 and len(one["cfg_sweep"]) >= 2 and one["long_session"]["seeds"] == 2


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun is not installed beside this Python")
def test_torchrun_trains_data_parallel_on_two_cpu_processes(trained, dataset, tmp_path):
    out = tmp_path / "ddp_avatar"
    command = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2",
               "-m", "pipeline.train.run", str(dataset), "--out", str(out), "--run-dir", str(tmp_path / "run"),
               "--cache", str(trained[1] / "cache"), "--tiny", "--threads", "1", "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=400,
                          env={**os.environ, **ENV_ONE_THREAD}, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "train_report.json").read_text())["report"]
    assert report["world_size"] == 2
    load_avatar(out)


def test_stage2_candidates_are_scored_on_the_held_out_split_and_the_best_is_kept(trained, dataset, tmp_path):
    from pipeline.train.config import tiny_train_config
    from pipeline.train.run import train

    run = tmp_path / "run"
    shutil.copytree(trained[1], run)  # guest and stage 1 resume from the module's run
    config = dataclasses.replace(tiny_train_config(), stage2_candidates=2, selection_split="test",
                                 selection_noise_seeds=1, splits=("train",))
    report = train(dataset, tmp_path / "avatar", run, config, workers=1, quiet=True)
    selection = report["stage2_selection"]
    seeds = [c["seed"] for c in selection["candidates"]]
    assert seeds == [config.stage2.loop.seed, config.stage2.loop.seed + 1] and selection["split"] == "test"
    f1 = [c["reaction_f1"] for c in selection["candidates"]]
    assert selection["chosen_seed"] == seeds[f1.index(max(f1))]
    # Each candidate trained from the same start into its own directory; the avatar holds the chosen one's EMA.
    directories = {seeds[0]: run / "stage2", seeds[1]: run / f"stage2_seed{seeds[1]}"}
    chosen = load_file(str(directories[selection["chosen_seed"]] / "weights.safetensors"))
    other = load_file(str(directories[next(s for s in seeds if s != selection["chosen_seed"])] / "weights.safetensors"))
    avatar = load_avatar(tmp_path / "avatar")
    assert avatar.config.notes["stage2_seed"] == selection["chosen_seed"]
    key = "generator.guest_projector.to_modulation.weight"
    projector = avatar.motion_generator.guest_projector.to_modulation.weight.detach()
    assert (chosen[f"ema.{key}"] == projector).all()
    assert not (other[f"ema.{key}"] == projector).all(), "both candidates trained alike: the seed did not reach them"
