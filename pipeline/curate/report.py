"""report.json, the dataset card (Table 1 statistics) and the clip-length histogram of a curated set."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from pipeline.curate import evaluation as ev
from pipeline.curate.host_speaker import MIN_IDENTIFIABLE_S
from pipeline.curate.manifest import CLIP_FPS, ClipMeta, ClipRecord
from pipeline.curate.speech import Diarization
from pipeline.curate.tracking import box_iou
from pipeline.curate.vetting import VettingResult, min_segment_frames
from pipeline.curate.work import EpisodeWork, atomic_write_bytes


def build_report(config, state, records: list[ClipRecord], elapsed_s: float) -> dict:
    out_dir: Path = config.out_dir
    episodes = state.healthy
    vettings = {e.name: VettingResult.from_dict(EpisodeWork(out_dir, e.name).load_json("vetting.json")) for e in episodes}
    raw_minutes = sum(v.frame_count / v.fps for v in vettings.values()) / 60.0
    clip_verdicts = Counter()
    for e in episodes:
        for clip in EpisodeWork(out_dir, e.name).load_json("clips.json"):
            clip_verdicts[clip["rejected"] or "kept"] += 1
    timings: dict[str, float] = {}
    for e in episodes:
        work = EpisodeWork(out_dir, e.name)
        for stage, seconds in (work.load_json("timings.json") if work.has("timings.json") else {}).items():
            timings[stage] = round(timings.get(stage, 0.0) + seconds, 1)
    with np.load(out_dir / "models" / "host_voice.npz") as data:
        voice_f1 = float(data["labelled_f1"])
        voice_counts = data["counts"].tolist()
    with np.load(out_dir / "models" / "host_face.npz") as data:
        face_tau, face_f1, embedder = float(data["threshold"]), float(data["trial_f1"]), str(data["embedder"])
    report = {
        "episodes": len(state.episodes),
        "episodes_curated": len(episodes),
        "skipped_inputs": [{"episode": name, "reason": reason} for name, reason in sorted(state.failed.items())],
        "raw_minutes": round(raw_minutes, 2),
        "two_person_minutes": round(sum(s.duration_s for v in vettings.values() for s in v.segments) / 60, 2),
        "clips_kept": clip_verdicts.get("kept", 0),
        "clips_rejected": {k: v for k, v in sorted(clip_verdicts.items()) if k != "kept"},
        "clips_exported": len(records),
        "clip_minutes": round(sum(r.num_frames for r in records) / CLIP_FPS / 60, 2),
        "splits": dict(Counter(r.split for r in records)),
        "split_episodes": {split: sorted({r.episode for r in records if r.split == split}) for split in ("train", "val", "test")},
        "host_voice_model": {"labelled_positive": voice_counts[0], "labelled_negative": voice_counts[1],
                             "labelled_f1_leave_one_out": round(voice_f1, 4)},
        "host_face_model": {"embedder": embedder, "cosine_threshold": face_tau, "bootstrap_f1": round(face_f1, 4)},
        "stage_seconds": timings,
        "elapsed_s": round(elapsed_s, 1),
        "throughput_video_minutes_per_minute": round(raw_minutes / max(elapsed_s / 60, 1e-9), 3),
        "throughput_note": "raw minutes / wall minutes of this invocation; a resumed run only does what was left",
    }
    truths = {e.name: _load(e.ground_truth) for e in episodes if e.ground_truth is not None}
    if truths:
        report.update(ground_truth_measures(config, truths, vettings, records))
        report["definitions"] = ev.__doc__.split("Definitions (written in the report too):")[1].strip()
    write_dataset_card(out_dir, report, records)
    return report


def _load(path: Path) -> dict:
    with open(path) as stream:
        return json.load(stream)


def ground_truth_measures(config, truths: dict[str, dict], vettings: dict[str, VettingResult],
                          records: list[ClipRecord]) -> dict:
    out_dir: Path = config.out_dir
    predicted_all, truth_all = [], []
    der_parts = {"missed_s": 0.0, "false_alarm_s": 0.0, "confusion_s": 0.0, "reference_speech_s": 0.0}
    host_pred, host_true, host_long, host_seconds = [], [], [], []
    for name, truth in truths.items():
        vetting = vettings[name]
        segments = [(s.start_frame, s.end_frame) for s in vetting.segments]
        predicted_all.append(ev.segment_mask(segments, vetting.frame_count))
        reference = ev.ground_truth_segments(truth, vetting.fps, config.vetting.gap_tolerance_s, min_segment_frames(vetting.fps))
        truth_all.append(ev.segment_mask(reference, vetting.frame_count)[:vetting.frame_count])
        work = EpisodeWork(out_dir, name)
        diarization = Diarization.from_dict(work.load_json("diarization.json"))
        decided = work.load_json("host_speech.json")["segment_is_host"]
        # The pipeline's final speaker timeline: every cluster the host model recognised is "host".
        hypothesis = [("host" if is_host else s.speaker, s.start, s.end) for s, is_host in zip(diarization.segments, decided)]
        der = ev.diarization_error_rate(ev.reference_speech(truth), hypothesis, vetting.frame_count / vetting.fps)
        for key in der_parts:
            der_parts[key] += der[key]
        for segment, is_host in zip(diarization.segments, decided):
            host_pred.append(bool(is_host))
            host_true.append(ev.host_speech_fraction(truth, segment.start, segment.end) >= 0.5)
            host_long.append(segment.duration >= MIN_IDENTIFIABLE_S)
            host_seconds.append(segment.duration)
    precision, recall = ev.precision_recall(np.concatenate(predicted_all), np.concatenate(truth_all))
    der_value = (der_parts["missed_s"] + der_parts["false_alarm_s"] + der_parts["confusion_s"]) / max(der_parts["reference_speech_s"], 1e-9)
    long_enough = np.array(host_long, bool)
    host_f1 = ev.f1_score(np.array(host_pred)[long_enough], np.array(host_true)[long_enough])
    host_f1_all = ev.f1_score(host_pred, host_true)
    host_time_f1 = ev.f1_score(host_pred, host_true, weights=host_seconds)
    identity, containment = _clip_measures(out_dir, truths, records)
    return {
        "segment_precision": round(precision, 4),
        "segment_recall": round(recall, 4),
        "der": round(der_value, 4),
        "der_components_s": {k: round(v, 1) for k, v in der_parts.items()},
        "host_speaker_f1": round(host_f1["f1"], 4),
        "host_speaker_counts": {k: host_f1[k] for k in ("tp", "fp", "fn")},
        "host_speaker_f1_all_segments": round(host_f1_all["f1"], 4),
        "host_speaker_time_f1": round(host_time_f1["f1"], 4),
        "identity_accuracy": identity["accuracy"],
        "identity_counts": identity,
        "crop_containment": containment["inside_share"],
        "crop_containment_detail": containment,
    }


def _clip_measures(out_dir: Path, truths: dict[str, dict], records: list[ClipRecord]) -> tuple[dict, dict]:
    correct = matched = 0
    inside = total = 0
    area_shares = []
    for record in records:
        truth = truths.get(record.episode)
        if truth is None:
            continue
        with open(out_dir / record.meta) as stream:
            meta = ClipMeta.from_dict(json.load(stream))
        fps = float(_fraction(truth["video"]["fps"]))
        host_id = truth["host_id"]
        role_person: dict[str, Counter] = {"host": Counter(), "guest": Counter()}
        for n in range(meta.num_frames):
            source = min(int(np.floor((meta.start_time + n / CLIP_FPS) * fps + 1e-6)), len(truth["frames"]["faces"]) - 1)
            faces = [f for f in truth["frames"]["faces"][source] if f["visible"]]
            for role, track in (("host", meta.host), ("guest", meta.guest)):
                box = track.boxes[n]
                if box is None:
                    continue
                best = max(((box_iou(np.array(box), ev.xywh_to_xyxy(f["box"])), f) for f in faces),
                           default=(0.0, None), key=lambda t: t[0])
                if best[0] >= 0.3 and best[1]["person"] != "audience":
                    person = best[1]["person"]
                    if person == host_id or person.startswith("guest"):
                        matched += 1
                        correct += (role == "host") == (person == host_id)
                        role_person[role][person] += 1
        # Containment: the ground-truth face of the person each role mostly holds, where visible.
        for role, track in (("host", meta.host), ("guest", meta.guest)):
            if not role_person[role]:
                continue
            person = role_person[role].most_common(1)[0][0]
            for n in range(meta.num_frames):
                source = min(int(np.floor((meta.start_time + n / CLIP_FPS) * fps + 1e-6)), len(truth["frames"]["faces"]) - 1)
                for face in truth["frames"]["faces"][source]:
                    if face["person"] == person and face["visible"]:
                        share = ev.containment(ev.xywh_to_xyxy(face["box"]), track.crop_window)
                        area_shares.append(share)
                        inside += share >= 0.95
                        total += 1
    identity = {"accuracy": round(correct / matched, 4) if matched else 0.0, "correct": correct, "matched": matched}
    containment = {"inside_share": round(inside / total, 4) if total else 0.0, "boxes": total,
                   "mean_area_inside": round(float(np.mean(area_shares)), 4) if area_shares else 0.0}
    return identity, containment


def _fraction(text: str) -> float:
    if "/" in str(text):
        a, b = str(text).split("/")
        return float(a) / float(b)
    return float(text)


def write_dataset_card(out_dir: Path, report: dict, records: list[ClipRecord]) -> None:
    lengths = np.array([r.num_frames / CLIP_FPS for r in records])
    _histogram(out_dir / "clip_lengths.png", lengths)
    resolutions = Counter(f"{r.crop_size}x{r.crop_size}" for r in records)
    mean = f"{lengths.mean():.2f} ± {lengths.std():.2f}" if len(lengths) else "n/a"
    lines = [
        "# Curated dataset card",
        "",
        "Made by `f2f curate` (the F2F-JF recipe: vetting, host localisation from audio, host face",
        "modelling, identity tracking, clip filtering, canonical crops, export). See report.json for",
        "every figure and docs/curation.md for the method.",
        "",
        "| # Clips | Total duration (hrs) | Average duration (s) | Resolution | Interactive |",
        "|---|---|---|---|---|",
        f"| {len(records)} | {lengths.sum() / 3600:.3f} | {mean} | {', '.join(resolutions) or 'n/a'} | yes (host + guest) |",
        "",
        f"- Raw video: {report['raw_minutes']} min in {report['episodes']} episodes "
        f"({len(report['skipped_inputs'])} skipped); two-person segments: {report['two_person_minutes']} min.",
        f"- Clips kept {report['clips_kept']}, rejected {sum(report['clips_rejected'].values())} "
        f"({', '.join(f'{k}: {v}' for k, v in report['clips_rejected'].items()) or 'none'}).",
        f"- Splits by episode: {report['splits']}.",
        "",
        "![clip lengths](clip_lengths.png)",
        "",
    ]
    atomic_write_bytes(out_dir / "dataset_card.md", "\n".join(lines).encode())


def _histogram(path: Path, lengths: np.ndarray) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.2), dpi=110)
    axis.hist(lengths, bins=np.arange(0, max(22.0, float(lengths.max()) + 2 if len(lengths) else 22.0), 1.0),
              color="#4a7bb7", edgecolor="white")
    axis.set_xlabel("clip length (s)")
    axis.set_ylabel("clips")
    axis.set_title(f"{len(lengths)} clips")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
