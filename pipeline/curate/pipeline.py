"""`f2f curate`: raw long-form episodes -> paired host/guest clips (the F2F-JF recipe, stage by stage).

Phases (per-episode work runs in `--workers` processes; each stage's result is persisted under
OUT_DIR/work/<episode>/ so a rerun resumes where the last one stopped):
  A  per episode: probe, 1 initial vetting, 2a speech/music filter + VAD + diarization
  B  data set:    voice labels -> host voice Gaussian -> per episode host-speech intervals (2b)
  C  per episode: face candidates from host-speech windows; data set: face labels -> host face
                  model with its bootstrapped threshold (3)
  D  per episode: 4 identity assignment, 5 clip filtering, 6 canonical crops, 7 export
  E  data set:    80/10/10 split by episode, manifest.jsonl, dataset card + histogram, report.json
Corrupt or unreadable episodes are listed in the report and skipped; they never stop the run.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.curate.clips import ClipCandidate, ClipConfig, ClipFilter
from pipeline.curate.export import ClipExporter
from pipeline.curate.host_face import HostFaceModel, make_face_embedder, tune_host_face_model
from pipeline.curate.host_speaker import decide_segments, fit_host_speaker_model, host_speech_intervals
from pipeline.curate.identity import IdentityAssigner, SegmentIdentities
from pipeline.curate.labels import LabelStore, NeedsLabels, sample_keys
from pipeline.curate.manifest import MANIFEST_NAME, ClipMeta, ClipRecord
from pipeline.curate.media import MediaError, probe, read_audio
from pipeline.curate.speech import Diarization, make_diarizer
from pipeline.curate.tracking import DetectionTable
from pipeline.curate.vetting import InitialVetting, VettingConfig, VettingResult
from pipeline.curate.work import EpisodeWork, atomic_write_bytes, atomic_write_json, remove_partial_files

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")


@dataclass(frozen=True)
class CurateConfig:
    raw_dir: Path
    out_dir: Path
    workers: int = 1
    labels_from_ground_truth: bool = False
    host_crops: Path | None = None
    crop_size: int = 256
    voice_label_share: float = 0.10   # the paper labels ~10% of the diarized clips
    min_voice_labels: int = 30
    face_candidates_per_episode: int = 24
    face_references: int = 40         # "a few dozen confirmed host crops"
    seed: int = 0
    progress: bool = True
    vetting: VettingConfig = VettingConfig()
    clips: ClipConfig = ClipConfig()


@dataclass
class Episode:
    name: str
    video: Path
    ground_truth: Path | None


def discover(raw_dir: Path) -> list[Episode]:
    """Videos in RAW_DIR (sorted); a JSON of the same stem with a `generator` key is ground truth."""
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"raw folder not found: {raw_dir}")
    episodes = []
    for path in sorted(raw_dir.iterdir()):
        if path.suffix.lower() not in VIDEO_SUFFIXES or path.name.startswith(".") or ".partial" in path.name:
            continue
        truth = path.with_suffix(".json")
        episodes.append(Episode(path.stem, path, truth if _is_ground_truth(truth) else None))
    return episodes


def _is_ground_truth(path: Path) -> bool:
    try:
        with open(path) as stream:
            head = stream.read(4096)
        return '"generator"' in head or '"speaker_segments"' in head
    except OSError:
        return False


def _load_ground_truth(episode: Episode) -> dict | None:
    if episode.ground_truth is None:
        return None
    with open(episode.ground_truth) as stream:
        return json.load(stream)


# ---------------------------------------------------------------------------------------------
# Per-episode work (runs in worker processes: top-level functions, plain arguments)

def _timed(work: EpisodeWork, stage: str, seconds: float) -> None:
    timings = work.load_json("timings.json") if work.has("timings.json") else {}
    timings[stage] = round(timings.get(stage, 0.0) + seconds, 2)
    work.save_json("timings.json", timings)


def phase_a(config: CurateConfig, episode: Episode) -> dict:
    """Probe, vetting (stage 1) and diarization (stage 2a) of one episode."""
    work = EpisodeWork(config.out_dir, episode.name)
    info = probe(episode.video)
    if not info.has_audio:
        raise MediaError("no audio stream (host localisation needs the audio)")
    if not (work.has("vetting.json") and work.has("detections.npz")):
        started = time.perf_counter()
        result, table = InitialVetting(config.vetting).run(info, progress=config.progress, label=episode.name)
        if result.frame_count < 0.9 * info.frame_count:
            raise MediaError(f"truncated video: decoded {result.frame_count} of {info.frame_count} frames")
        work.save_npz("detections.npz", table.to_npz())
        work.save_json("vetting.json", result.to_dict())
        _timed(work, "1_vetting", time.perf_counter() - started)
    if not work.has("diarization.json"):
        started = time.perf_counter()
        audio = read_audio(episode.video)
        work.save_json("diarization.json", make_diarizer().run(audio).to_dict())
        _timed(work, "2a_diarization", time.perf_counter() - started)
    return {"episode": episode.name}


def phase_c(config: CurateConfig, episode: Episode) -> dict:
    """Face candidates from the host-speech windows inside the two-person segments (stage 3 input)."""
    import cv2

    work = EpisodeWork(config.out_dir, episode.name)
    if work.has("face_candidates.npz"):
        return {"episode": episode.name}
    started = time.perf_counter()
    vetting = VettingResult.from_dict(work.load_json("vetting.json"))
    table = DetectionTable.from_npz(work.load_npz("detections.npz"))
    host_speech = work.load_json("host_speech.json")["host"]
    fps = vetting.fps
    frames = [f for s in vetting.segments for f in range(s.start_frame, s.end_frame)
              if any(a <= f / fps < b for a, b in host_speech)]
    frames = [f for f in frames if np.any(table.frame == f)]
    picks = sorted({frames[i] for i in np.linspace(0, len(frames) - 1, min(config.face_candidates_per_episode,
                                                                            len(frames))).round().astype(int)}) if frames else []
    embedder = make_face_embedder()
    labels = LabelStore(config.out_dir / "labels")
    capture = cv2.VideoCapture(str(episode.video))
    keys, embeddings, boxes, frame_of = [], [], [], []
    try:
        for frame_index in picks:
            capture.set(cv2.CAP_PROP_POS_FRAMES, frame_index)
            ok, image = capture.read()
            if not ok:
                continue
            for k, row in enumerate(np.flatnonzero(table.frame == frame_index)):
                box = table.boxes[row]
                try:
                    vector = embedder(image, box)
                except (RuntimeError, ValueError):
                    continue
                key = f"{episode.name}_{frame_index:06d}_{k}"
                x0, y0, x1, y1 = (int(v) for v in box)
                crop = image[max(0, y0):max(0, y1), max(0, x0):max(0, x1)]
                if crop.size:
                    ok, jpeg = cv2.imencode(".jpg", crop)
                    atomic_write_bytes(labels.folder / "faces" / f"{key}.jpg", jpeg.tobytes())
                keys.append(key)
                embeddings.append(vector)
                boxes.append(box)
                frame_of.append(frame_index)
    finally:
        capture.release()
    work.save_npz("face_candidates.npz", {
        "keys": np.array(keys, dtype=str),
        "embeddings": np.array(embeddings, np.float32) if embeddings else np.zeros((0, 0), np.float32),
        "boxes": np.array(boxes, np.float32).reshape(-1, 4), "frame": np.array(frame_of, np.int64)})
    _timed(work, "3_face_candidates", time.perf_counter() - started)
    return {"episode": episode.name}


def phase_d(config: CurateConfig, episode: Episode) -> dict:
    """Identity assignment (4), clip filtering (5), canonical crops (6) and export (7) of one episode."""
    work = EpisodeWork(config.out_dir, episode.name)
    info = probe(episode.video)
    vetting = VettingResult.from_dict(work.load_json("vetting.json"))
    if not work.has("identities.json"):
        started = time.perf_counter()
        table = DetectionTable.from_npz(work.load_npz("detections.npz"))
        with np.load(config.out_dir / "models" / "host_face.npz") as data:
            model = HostFaceModel.from_npz(data)
        assigner = IdentityAssigner(model, make_face_embedder())
        segments = [assigner.run(info, table, s).to_dict()
                    for s in tqdm(vetting.segments, desc=f"{episode.name} identities", leave=False,
                                  disable=not config.progress)]
        work.save_json("identities.json", segments)
        _timed(work, "4_identity", time.perf_counter() - started)
    if not work.has("clips.json"):
        started = time.perf_counter()
        segments = [SegmentIdentities.from_dict(s) for s in work.load_json("identities.json")]
        clips = ClipFilter(config.clips).clips(episode.name, segments)
        work.save_json("clips.json", [asdict(c) for c in clips])
        _timed(work, "5_6_filter_and_crops", time.perf_counter() - started)
    clips = [ClipCandidate(**c) for c in work.load_json("clips.json")]
    speech = work.load_json("host_speech.json")
    exporter = ClipExporter(config.out_dir, config.crop_size)
    started = time.perf_counter()
    kept = [c for c in clips if c.rejected is None]
    for clip in tqdm(kept, desc=f"{episode.name} export", leave=False, disable=not config.progress):
        if not exporter.is_done(clip.clip_id):
            exporter.export(info, episode.name, clip, speech["host"], speech["other"])
    _timed(work, "7_export", time.perf_counter() - started)
    return {"episode": episode.name}


# ---------------------------------------------------------------------------------------------
# The run

@dataclass
class RunState:
    episodes: list[Episode]
    failed: dict[str, str] = field(default_factory=dict)  # episode -> reason

    @property
    def healthy(self) -> list[Episode]:
        return [e for e in self.episodes if e.name not in self.failed]


class Curator:
    def __init__(self, config: CurateConfig):
        self.config = config
        self.labels = LabelStore(config.out_dir / "labels")

    def run(self) -> dict:
        config = self.config
        started = time.perf_counter()
        config.out_dir.mkdir(parents=True, exist_ok=True)
        remove_partial_files(config.out_dir)
        state = RunState(discover(config.raw_dir))
        if not state.episodes:
            raise FileNotFoundError(f"no videos in {config.raw_dir}")
        self._parallel("1-2a vetting + diarization", phase_a, state)
        self._host_voice(state)
        self._parallel("3 face candidates", phase_c, state)
        self._host_face(state)
        self._parallel("4-7 identities, clips, export", phase_d, state)
        return self._finish(state, time.perf_counter() - started)

    def _parallel(self, title: str, function, state: RunState) -> None:
        episodes = state.healthy
        bar = tqdm(total=len(episodes), desc=title, unit="episode", disable=not self.config.progress)
        if self.config.workers <= 1:
            for episode in episodes:
                self._record(state, episode, lambda e=episode: function(self.config, e))
                bar.update()
        else:
            with ProcessPoolExecutor(self.config.workers) as pool:
                futures = {pool.submit(function, self.config, e): e for e in episodes}
                for future in as_completed(futures):
                    self._record(state, futures[future], future.result)
                    bar.update()
        bar.close()

    @staticmethod
    def _record(state: RunState, episode: Episode, call) -> None:
        try:
            call()
        except MediaError as error:
            state.failed[episode.name] = str(error)
        except Exception as error:  # one bad episode must not stop the others; the report says why
            state.failed[episode.name] = f"{type(error).__name__}: {error}"
            tqdm.write(f"[curate] {episode.name} skipped: {error}\n{traceback.format_exc(limit=3)}")

    # -- stage 2b: which speaker is the host ------------------------------------------------------
    def _host_voice(self, state: RunState) -> None:
        config = self.config
        segments = {e.name: Diarization.from_dict(EpisodeWork(config.out_dir, e.name).load_json("diarization.json")).segments
                    for e in state.healthy}
        keys = [f"{name}:{i}" for name, segs in segments.items() for i in range(len(segs))]
        embedding_of = {f"{name}:{i}": s.embedding for name, segs in segments.items() for i, s in enumerate(segs)}
        labels = self.labels.labels("voice")
        if len(labels) < config.min_voice_labels:
            chosen = sample_keys(keys, config.voice_label_share, config.min_voice_labels, config.seed)
            if config.labels_from_ground_truth:
                labels = self._voice_labels_from_truth(state, segments, chosen)
                self.labels.save_labels("voice", labels)
            else:
                self.labels.save_candidates("voice", [{"key": k, "episode": k.split(":")[0],
                                                       "start": segments[k.split(":")[0]][int(k.split(":")[1])].start,
                                                       "end": segments[k.split(":")[0]][int(k.split(":")[1])].end}
                                                      for k in chosen])
                raise NeedsLabels(f"{len(chosen)} voice segments need host / not-host labels: run "
                                  f"`f2f curate label {config.out_dir}`, then run `f2f curate` again "
                                  "(or pass --labels-from-ground-truth for synthetic episodes)")
        known = [k for k in labels if k in embedding_of]
        model = fit_host_speaker_model(np.array([embedding_of[k] for k in known]), np.array([labels[k] for k in known]),
                                       np.array(list(embedding_of.values())))
        (config.out_dir / "models").mkdir(exist_ok=True)
        buffer_path = config.out_dir / "models" / "host_voice.npz"
        _save_npz(buffer_path, model.to_npz())
        for name, segs in segments.items():
            decided = decide_segments(model, segs)
            EpisodeWork(config.out_dir, name).save_json("host_speech.json", {
                "host": host_speech_intervals(segs, decided),
                "other": host_speech_intervals(segs, ~decided),
                "segment_is_host": decided.tolist(),
            })

    def _voice_labels_from_truth(self, state: RunState, segments, chosen: list[str]) -> dict[str, bool]:
        from pipeline.curate.evaluation import host_speech_fraction

        truth = {e.name: _load_ground_truth(e) for e in state.healthy}
        labels = {}
        for key in chosen:
            name, index = key.split(":")
            if truth.get(name) is None:
                continue
            segment = segments[name][int(index)]
            labels[key] = host_speech_fraction(truth[name], segment.start, segment.end) >= 0.5
        if not labels:
            raise NeedsLabels("--labels-from-ground-truth was given but no episode has ground truth beside it")
        return labels

    # -- stage 3: host face model -----------------------------------------------------------------
    def _host_face(self, state: RunState) -> None:
        config = self.config
        path = config.out_dir / "models" / "host_face.npz"
        candidates = {}
        for e in state.healthy:
            data = EpisodeWork(config.out_dir, e.name).load_npz("face_candidates.npz")
            if len(data["keys"]) == 0:
                continue  # no face during this episode's host speech in two-person segments
            for key, vector, box, frame in zip(data["keys"], data["embeddings"], data["boxes"], data["frame"]):
                candidates[str(key)] = (vector, box, int(frame), e)
        embedder = make_face_embedder()
        labels = self.labels.labels("faces")
        if config.host_crops is not None:
            host, others = self._faces_from_folder(config.host_crops, candidates, embedder)
        else:
            if config.labels_from_ground_truth and len(labels) < 12:
                labels = self._face_labels_from_truth(candidates)
                self.labels.save_labels("faces", labels)
            if sum(labels.values()) < 6:
                self.labels.save_candidates("face", [{"key": k, "episode": c[3].name, "frame": c[2]}
                                                     for k, c in sorted(candidates.items())])
                raise NeedsLabels(f"confirm host faces: run `f2f curate label {config.out_dir}` "
                                  "(or pass --host-crops DIR, or --labels-from-ground-truth for synthetic episodes)")
            host = np.array([candidates[k][0] for k, v in labels.items() if v and k in candidates])
            others = np.array([candidates[k][0] for k, v in labels.items() if not v and k in candidates])
        model = tune_host_face_model(host, others.reshape(-1, host.shape[1]), embedder.name,
                                     references=config.face_references, seed=config.seed)
        _save_npz(path, model.to_npz())

    def _face_labels_from_truth(self, candidates) -> dict[str, bool]:
        from pipeline.curate.evaluation import xywh_to_xyxy
        from pipeline.curate.tracking import box_iou

        truth_cache: dict[str, dict] = {}
        labels = {}
        for key, (_, box, frame, episode) in sorted(candidates.items()):
            if episode.ground_truth is None:
                continue
            truth = truth_cache.setdefault(episode.name, _load_ground_truth(episode))
            best = max(((box_iou(box, xywh_to_xyxy(f["box"])), f["person"]) for f in truth["frames"]["faces"][frame]),
                       default=(0.0, None))
            if best[0] >= 0.4:
                labels[key] = best[1] == truth["host_id"]
        hosts = [k for k, v in labels.items() if v][: self.config.face_references + 20]
        not_hosts = [k for k, v in labels.items() if not v]
        return {**{k: True for k in hosts}, **{k: False for k in not_hosts}}

    @staticmethod
    def _faces_from_folder(folder: Path, candidates, embedder) -> tuple[np.ndarray, np.ndarray]:
        """Host crops from a folder are the positives. Negatives: a two-person frame during host
        speech shows the host and one other face, so the candidates least like the crops (below
        the median of their best similarity) stand in for the not-host faces."""
        import cv2

        host = []
        for path in sorted(folder.iterdir()):
            image = cv2.imread(str(path))
            if image is None:
                continue
            try:
                host.append(embedder(image, np.array([0, 0, image.shape[1], image.shape[0]], np.float32)))
            except (RuntimeError, ValueError):
                continue
        if len(host) < 6:
            raise ValueError(f"{folder} holds {len(host)} usable host crops; at least 6 are needed")
        host = np.array(host)
        pool = np.array([c[0] for c in candidates.values()]).reshape(-1, host.shape[1])
        best = (pool @ host.T).max(1) if len(pool) else np.zeros(0)
        return host, pool[best < np.median(best)] if len(pool) else pool

    # -- phase E -------------------------------------------------------------------------------
    def _finish(self, state: RunState, elapsed: float) -> dict:
        from pipeline.curate.report import build_report

        config = self.config
        splits = assign_splits([e.name for e in state.healthy])
        records = []
        for episode in state.healthy:
            for clip in EpisodeWork(config.out_dir, episode.name).load_json("clips.json"):
                folder = config.out_dir / "clips" / clip["clip_id"]
                if clip["rejected"] is not None or not (folder / "meta.json").exists():
                    continue
                with open(folder / "meta.json") as stream:
                    meta = ClipMeta.from_dict(json.load(stream))
                records.append(ClipRecord(
                    clip_id=meta.clip_id, episode=episode.name, split=splits[episode.name],
                    source_video=str(episode.video), ground_truth=str(episode.ground_truth) if episode.ground_truth else None,
                    start_time=meta.start_time, num_frames=meta.num_frames, fps=meta.fps, crop_size=meta.crop_size,
                    host_video=f"clips/{meta.clip_id}/host.mp4", guest_video=f"clips/{meta.clip_id}/guest.mp4",
                    meta=f"clips/{meta.clip_id}/meta.json"))
        records.sort(key=lambda r: r.clip_id)
        atomic_write_bytes(config.out_dir / MANIFEST_NAME, "".join(r.to_json() + "\n" for r in records).encode())
        report = build_report(config, state, records, elapsed)
        atomic_write_json(config.out_dir / "report.json", report)
        return report


def assign_splits(episodes: list[str], shares: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> dict[str, str]:
    """80/10/10 by episode, stable: an episode's split depends only on its name and the set size.

    Episodes are ordered by a hash of their name; with 3+ episodes val and test get at least one."""
    ordered = sorted(episodes, key=lambda name: hashlib.sha256(name.encode()).hexdigest())
    count = len(ordered)
    n_test = max(1, round(shares[2] * count)) if count >= 3 else 0
    n_val = max(1, round(shares[1] * count)) if count >= 3 else 0
    out = {}
    for i, name in enumerate(ordered):
        out[name] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


def _save_npz(path: Path, arrays: dict) -> None:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
