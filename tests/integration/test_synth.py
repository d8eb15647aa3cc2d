"""`f2f synth` end to end: real espeak-ng, real ffmpeg, real mediapipe on the frames it wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from f2f.features.face_detection import FaceDetector
from f2f.features.face_geometry import FaceGeometryFeaturizer
from f2f.motion import EXPRESSION_FIELDS, FIELD_INDEX

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "pipeline/synth/ground_truth.schema.json").read_text())
F2F = [sys.executable, "-m", "f2f.cli"]


def synth(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*F2F, "synth", "--out", str(out), "--quiet", *args], capture_output=True, text=True,
                          check=True, cwd=REPO, timeout=900)


def video_frames(path: Path):
    """Decoded BGR frames of a video, with their index."""
    capture = cv2.VideoCapture(str(path))
    index = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        yield index, frame
        index += 1
    capture.release()


def ffprobe(path: Path) -> dict:
    result = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def episode_720(tmp_path_factory):
    """A 30-second 720p episode (seed 7): the material for the format, detector and featurizer checks."""
    out = tmp_path_factory.mktemp("synth720")
    result = synth(out, "--episodes", "1", "--minutes", "0.5", "--seed", "7")
    truth = json.loads((out / "episode_000.json").read_text())
    return out / "episode_000.mp4", truth, result.stderr


def test_video_is_h264_aac_at_25_fps(episode_720, report):
    video, truth, log = episode_720
    probe = ffprobe(video)
    streams = {s["codec_type"]: s for s in probe["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert streams["video"]["avg_frame_rate"] == "25/1"
    assert (streams["video"]["width"], streams["video"]["height"]) == (1280, 720)
    assert streams["audio"]["codec_name"] == "aac"
    assert int(streams["video"]["nb_frames"]) == truth["video"]["frame_count"] == 750
    assert abs(float(probe["format"]["duration"]) - 30.0) < 0.2
    report(f"synth speed (30 s at 1280x720): {log.strip().splitlines()[-1]}")


def test_ground_truth_validates_and_is_consistent(episode_720):
    _, truth, _ = episode_720
    jsonschema.validate(truth, SCHEMA)
    frames = truth["video"]["frame_count"]
    assert len(truth["frames"]["faces"]) == len(truth["frames"]["shot"]) == len(truth["frames"]["speaking"]) == frames
    for person, fields in truth["motion"].items():
        assert all(len(values) == frames for values in fields.values()), person
    shots = truth["shots"]
    assert shots[0]["start_frame"] == 0 and shots[-1]["end_frame"] == frames
    assert all(a["end_frame"] == b["start_frame"] for a, b in zip(shots, shots[1:]))
    # The host is the constant person; music opens and closes the show; speech overlaps are kept.
    assert truth["host_id"] == "host" and truth["people"][0]["role"] == "host"
    music = truth["music_segments"]
    assert music[0]["start"] < 1.0 and music[-1]["end"] > 29.0
    overlapping = [t for t in truth["turns"] if t["overlaps_previous"]]
    assert len(overlapping) >= 0.1 * len(truth["turns"])
    # Reaction events respect their rule's lag window.
    rules = {r["name"]: r for r in truth["rules"]}
    assert truth["reaction_events"], "no host reactions in 30 s"
    for event in truth["reaction_events"]:
        lag = event["response_time"] - event["cue_time"]
        rule = rules[event["rule"]]
        assert rule["lag_min_s"] - 1e-3 <= lag <= rule["lag_max_s"] + 1e-3


def test_host_responds_in_motion_to_cues(episode_720):
    """The events are not only written down: the host's motion carries them."""
    _, truth, _ = episode_720
    fps = 25.0
    host = {k: np.array(v) for k, v in truth["motion"]["host"].items()}
    for event in truth["reaction_events"]:
        start = int(event["response_time"] * fps)
        before = slice(max(start - 3, 0), start)
        during = slice(start, start + max(int(event["response_duration"] * fps), 3))
        if event["rule"] == "nod_after_pause":
            assert host["pitch"][during].max() - host["pitch"][before].mean() > 4.0, event
        elif event["rule"] == "smile_back":
            assert host["mouthSmileLeft"][start: start + 15].max() > 0.3, event


def test_detector_finds_visible_faces_in_closeups_and_two_shots(episode_720, report):
    video, truth, _ = episode_720
    kinds = {s["index"]: s["kind"] for s in truth["shots"]}
    per_kind: dict[str, list[int]] = {}
    with FaceDetector() as detector:
        for index, frame in video_frames(video):
            shot_kind = kinds[truth["frames"]["shot"][index]]
            faces = [f for f in truth["frames"]["faces"][index] if f["visible"] and f["box"][3] >= 64]
            if index % 3 == 0 and shot_kind in ("closeup", "reverse", "two_shot", "wide") and faces:
                centres = [box.centre for box in detector(frame)]
                for face in faces:
                    x, y, w, h = face["box"]
                    hit = any(x <= cx <= x + w and y <= cy <= y + h for cx, cy in centres)
                    counts = per_kind.setdefault(shot_kind, [0, 0])
                    counts[0] += hit
                    counts[1] += 1
    found = sum(v[0] for v in per_kind.values())
    total = sum(v[1] for v in per_kind.values())
    recall = found / max(total, 1)
    detail = ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in sorted(per_kind.items()))
    report(f"mediapipe face detection recall on visible faces >= 64 px: {recall:.3f} ({found}/{total}; {detail})")
    assert total >= 100
    assert recall >= 0.95


def test_featurizer_matches_ground_truth_on_episode_closeups(episode_720, report):
    video, truth, _ = episode_720
    errors: dict[str, list[float]] = {}
    measured = 0
    with FaceGeometryFeaturizer() as featurizer:
        for index, frame in video_frames(video):
            faces = [f for f in truth["frames"]["faces"][index] if f["visible"] and f["box"][3] >= 120]
            if index % 5 == 0 and len(faces) == 1:
                face = faces[0]
                found = featurizer(frame)
                if found:
                    measured += 1
                    got = found[0].motion
                    for name, value in face["pose"].items():
                        errors.setdefault(name, []).append(abs(float(got[FIELD_INDEX[name]]) - value))
                    for name in EXPRESSION_FIELDS:
                        value = truth["motion"][face["person"]][name][index]
                        errors.setdefault(name, []).append(abs(float(got[FIELD_INDEX[name]]) - value))
    assert measured >= 20
    report(f"face geometry featurizer vs episode ground truth ({measured} close-up frames), MAE per field:")
    for name, values in errors.items():
        report(f"  {name:16s} {np.mean(values):.4f}")
    assert np.mean(errors["yaw"]) < 6.0
    assert np.mean(errors["roll"]) < 3.0
    assert np.mean(errors["jawOpen"]) < 0.12


def test_ground_truth_is_byte_identical_for_a_seed(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    synth(first, "--episodes", "1", "--minutes", "0.5", "--seed", "3", "--size", "640x360")
    # Two worker processes: every episode is seeded by (seed, index) alone, so the files are the same.
    synth(second, "--episodes", "2", "--minutes", "0.5", "--seed", "3", "--size", "640x360", "--workers", "2")
    assert (first / "episode_000.json").read_bytes() == (second / "episode_000.json").read_bytes()
    assert (second / "episode_001.json").read_bytes() != (second / "episode_000.json").read_bytes()
    assert (second / "episode_001.mp4").stat().st_size > 0
    other = tmp_path / "c"
    synth(other, "--episodes", "1", "--minutes", "0.5", "--seed", "4", "--size", "640x360")
    assert (other / "episode_000.json").read_bytes() != (first / "episode_000.json").read_bytes()


def test_ntsc_frame_rate_and_resume(tmp_path):
    synth(tmp_path, "--episodes", "1", "--minutes", "0.5", "--seed", "5", "--size", "640x360", "--fps", "29.97")
    video = tmp_path / "episode_000.mp4"
    stream = next(s for s in ffprobe(video)["streams"] if s["codec_type"] == "video")
    assert stream["avg_frame_rate"] == "30000/1001"
    truth = json.loads((tmp_path / "episode_000.json").read_text())
    assert truth["video"]["frame_count"] == int(stream["nb_frames"]) == 899
    # A rerun with the same settings keeps the finished episode untouched.
    stamp = video.stat().st_mtime_ns
    synth(tmp_path, "--episodes", "1", "--minutes", "0.5", "--seed", "5", "--size", "640x360", "--fps", "29.97")
    assert video.stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob("*.partial.mp4")) and not list(tmp_path.glob("*.tmp"))


def test_bad_arguments_are_refused_clearly(tmp_path):
    result = subprocess.run([*F2F, "synth", "--out", str(tmp_path), "--fps", "24"], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 2 and "fps must be 25 or 29.97" in result.stderr
    result = subprocess.run([*F2F, "synth", "--out", str(tmp_path), "--size", "641x360"], capture_output=True,
                            text=True, cwd=REPO)
    assert result.returncode == 2 and "size must be even" in result.stderr
    result = subprocess.run([*F2F, "synth", "--out", str(tmp_path), "--minutes", "0.1"], capture_output=True,
                            text=True, cwd=REPO)
    assert result.returncode == 2 and "minutes must be at least 0.5" in result.stderr


def test_interview_style_frames_host_and_one_guest_and_broadcast_is_unchanged():
    """Plans only (no rendering): the interview world yields far more two-person footage with reactions."""
    from pipeline.synth.episode import EpisodeGenerator, SynthConfig
    from pipeline.synth.style import style_named

    def two_person_share(plan) -> float:
        two = sum(s.end_frame - s.start_frame for s in plan.shots
                  if s.kind == "two_shot" or (s.kind == "wide" and len(plan.seats) == 2))
        return two / len(plan.times)

    broadcast, interview = (EpisodeGenerator(SynthConfig(minutes=2.0, seed=11, style=name)) for name in
                            ("broadcast", "interview"))
    shares = {"broadcast": [], "interview": []}
    for index in range(4):
        plan = interview.plan(index)
        assert [p.role for p in plan.cast].count("guest") == 1
        assert len(plan.behaviour.events) >= 30  # the host reacts to the guest many times in 2 minutes
        shares["interview"].append(two_person_share(plan))
        shares["broadcast"].append(two_person_share(broadcast.plan(index)))
    assert np.mean(shares["interview"]) >= 0.6 and np.mean(shares["interview"]) >= 2 * np.mean(shares["broadcast"])
    # Series written before styles existed still count as complete: broadcast adds no key.
    assert "style" not in SynthConfig(minutes=1.0, seed=0).generator_json(0)
    assert SynthConfig(minutes=1.0, seed=0, style="interview").generator_json(0)["style"] == "interview"
    with pytest.raises(ValueError, match="unknown world style"):
        style_named("sitcom")
