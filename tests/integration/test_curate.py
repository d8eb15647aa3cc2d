"""`f2f curate` end to end on a short synthetic episode (real detector, VAD, diarizer, dlib, ffmpeg),
with a corrupt and a truncated input beside it, and the kill-and-resume check."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.curate.manifest import ClipMeta, read_manifest
from pipeline.curate.media import count_frames, probe

REPO = Path(__file__).resolve().parents[2]
F2F = [sys.executable, "-m", "f2f.cli"]
HEADLINE_KEYS = ("segment_precision", "segment_recall", "der", "host_speaker_f1", "identity_accuracy", "crop_containment")


def curate(raw: Path, out: Path, *extra: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([*F2F, "curate", str(raw), str(out), "--labels-from-ground-truth", "--quiet", *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory) -> Path:
    """One 1-minute episode (seed 3: a two-person stretch of ~16 s) + a garbage and a truncated video."""
    raw = tmp_path_factory.mktemp("raw")
    subprocess.run([*F2F, "synth", "--out", str(raw), "--episodes", "1", "--minutes", "1", "--seed", "3", "--quiet"],
                   cwd=REPO, check=True, capture_output=True, timeout=900)
    (raw / "garbage.mp4").write_bytes(b"\x00\x01 this is not a video " * 500)
    video = (raw / "episode_000.mp4").read_bytes()
    (raw / "truncated.mp4").write_bytes(video[: len(video) // 3])
    return raw


@pytest.fixture(scope="module")
def curated(raw_dir, tmp_path_factory) -> tuple[Path, dict, float]:
    out = tmp_path_factory.mktemp("curated")
    started = time.perf_counter()
    process = curate(raw_dir, out, "--workers", "2")
    stdout, stderr = process.communicate(timeout=1200)
    assert process.returncode == 0, stderr[-3000:]
    return out, json.loads((out / "report.json").read_text()), time.perf_counter() - started


def test_curate_writes_manifest_and_report_with_ground_truth_measures(curated, report):
    out, result, elapsed = curated
    records = read_manifest(out)
    assert records, "no clip was kept"
    for key in HEADLINE_KEYS:
        assert key in result, key
    report(f"curate 1-min episode: {len(records)} clips, {result['clip_minutes']} min, {elapsed:.0f} s wall; "
           + ", ".join(f"{k} {result[k]}" for k in HEADLINE_KEYS)
           + f"; rejected {result['clips_rejected']}; stage s {result['stage_seconds']}")
    assert result["segment_recall"] >= 0.8
    assert result["identity_accuracy"] >= 0.95
    assert result["crop_containment"] >= 0.9
    assert result["host_speaker_f1"] >= 0.8
    assert result["der"] < 0.35
    assert (out / "dataset_card.md").exists() and (out / "clip_lengths.png").stat().st_size > 1000


def test_corrupt_and_truncated_inputs_are_listed_not_fatal(curated):
    _, result, _ = curated
    skipped = {item["episode"]: item["reason"] for item in result["skipped_inputs"]}
    assert set(skipped) == {"garbage", "truncated"}, skipped
    assert result["episodes_curated"] == 1


def test_every_exported_clip_decodes_with_the_frames_it_claims(curated):
    out, _, _ = curated
    for record in read_manifest(out):
        meta = ClipMeta.from_dict(json.loads((out / record.meta).read_text()))
        assert meta.num_frames == record.num_frames >= 145
        for video in (record.host_video, record.guest_video):
            info = probe(out / video)
            assert (info.width, info.height, info.fps_float, info.has_audio) == (256, 256, 25.0, True)
            assert count_frames(out / video) == record.num_frames
        for track in (meta.host, meta.guest):
            assert len(track.boxes) == len(track.visible) == len(track.motion) == len(track.black) == meta.num_frames
            assert [b is None for b in track.face_boxes] == [m is None for m in track.motion]
        assert sum(m is not None for m in meta.host.motion) >= 0.85 * meta.num_frames
        assert all(meta.guest.black[n] == (meta.guest.boxes[n] is None) for n in range(meta.num_frames))
        assert record.split in ("train", "val", "test") and record.ground_truth


def test_killed_mid_run_then_rerun_gives_the_same_manifest_and_no_partial_files(raw_dir, curated, tmp_path, report):
    reference_out, _, _ = curated
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("episode_000.mp4", "episode_000.json"):
        os.link(raw_dir / name, raw / name) if raw_dir.stat().st_dev == raw.stat().st_dev else shutil.copy(raw_dir / name, raw / name)
    out = tmp_path / "out"
    first = curate(raw, out)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and first.poll() is None:
        if (out / "clips").exists() and list((out / "clips").rglob(".*.part*")):
            break  # the export stage is writing a clip: kill it in the middle
        time.sleep(0.05)
    assert first.poll() is None, "the run ended before it could be killed"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed_state = sorted(p.name for p in (out / "clips").rglob("*"))
    assert any(".part" in name for name in killed_state), killed_state
    second = curate(raw, out)
    _, stderr = second.communicate(timeout=1200)
    assert second.returncode == 0, stderr[-3000:]
    assert not list(out.rglob(".*.part*")), "partial files left behind"
    for folder in (out / "clips").iterdir():
        assert sorted(p.name for p in folder.iterdir()) == ["guest.mp4", "host.mp4", "meta.json"], folder
    reference = (reference_out / "manifest.jsonl").read_text().replace(str(raw_dir), "RAW")
    assert (out / "manifest.jsonl").read_text().replace(str(raw), "RAW") == reference
    report(f"curate kill-and-resume: killed while writing {[n for n in killed_state if '.part' in n]}, rerun gave the same "
           f"manifest ({len(reference.splitlines())} clips), no partial files")
