"""Each curation stage on small generated inputs (real models where a stage has one)."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from f2f.features.mel import prepare_audio
from pipeline.curate import evaluation as ev
from pipeline.curate.clips import ClipConfig, ClipFilter, canonical_window, dominant_trajectory, iqr_inliers
from pipeline.curate.host_face import tune_host_face_model
from pipeline.curate.host_speaker import fit_host_speaker_model, host_speech_intervals, speaker_vote
from pipeline.curate.identity import FaceObservation, SegmentIdentities, source_frame_of
from pipeline.curate.labels import LabelStore
from pipeline.curate.manifest import ClipMeta, ClipRecord, RoleTrack, read_manifest
from pipeline.curate.media import MediaError, count_frames, encode_clip, probe, read_audio
from pipeline.curate.pipeline import assign_splits, discover
from pipeline.curate.speech import SpeakerSegment, SpeechConfig, chroma_stability, speech_regions
from pipeline.curate.tracking import IouTracker, box_iou, runs, track_presence
from pipeline.curate.vetting import min_segment_frames, two_person_segments
from pipeline.curate.work import EpisodeWork, remove_partial_files


# -- stage 1: tracking and vetting ------------------------------------------------------------

def test_tracker_keeps_ids_through_short_gaps_and_starts_new_ones_after_a_cut():
    tracker = IouTracker(max_missed=3)
    left, right = np.array([[10, 10, 50, 50]], np.float32), np.array([[200, 10, 240, 50]], np.float32)
    ids = [tracker.update(0, np.vstack([left, right])), tracker.update(1, np.vstack([left + 2, right + 2]))]
    assert ids[0].tolist() == ids[1].tolist() == [0, 1]
    assert tracker.update(4, left + 3).tolist() == [0]  # 2 frames missed: same person
    assert tracker.update(20, left + 3).tolist() == [2]  # long gap (a cut away and back): a new track


def test_two_person_segments_tolerate_dropouts_and_need_a_whole_clip():
    fps = 25.0
    people = np.full(600, 1)
    people[100:400] = 2
    people[200:206] = 1  # a 0.24 s detector dropout
    people[450:520] = 2  # too short for a clip
    segments = two_person_segments(people, fps, gap_tolerance_s=0.5)
    assert [(s.start_frame, s.end_frame) for s in segments] == [(100, 400)]
    assert segments[0].start_s == pytest.approx(4.0) and segments[0].end_s == pytest.approx(16.0)
    assert min_segment_frames(29.97) == 174  # 145 frames at 25 fps = 5.8 s of a 29.97 fps source


def test_track_presence_fills_gaps_only_up_to_the_tolerance():
    from pipeline.curate.tracking import DetectionTable

    frames = np.array([0, 1, 4, 5, 20])
    table = DetectionTable(frames, np.zeros((5, 4), np.float32), np.ones(5, np.float32), np.zeros(5, np.int64), 25)
    presence = track_presence(table, max_gap=3)
    assert presence[:6].tolist() == [1] * 6 and presence[6:20].sum() == 0 and presence[20] == 1
    assert runs(np.array([1, 1, 0, 1, 0, 0, 0, 1], bool), max_gap=1) == [(0, 4), (7, 8)]


# -- stage 2: speech --------------------------------------------------------------------------

def test_vad_hysteresis_makes_regions_in_seconds():
    probability = np.array([0.1] * 10 + [0.9] * 20 + [0.4] * 5 + [0.1] * 20, np.float32)
    regions = speech_regions(probability, SpeechConfig())
    assert len(regions) == 1
    start, end = regions[0]
    assert start == pytest.approx(10 * 0.032) and end == pytest.approx(35 * 0.032)  # 0.4 stays on (hysteresis)


def test_chroma_stability_separates_sustained_chords_from_noise_bursts():
    rate = 16000
    t = np.arange(rate * 3) / rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0)).astype(np.float32) * 0.2
    rng = np.random.default_rng(0)
    envelope = np.repeat(rng.uniform(0, 1, 60), rate * 3 // 60)
    babble = (rng.normal(0, 0.2, len(t)) * envelope).astype(np.float32)
    music, _ = chroma_stability(chord)
    noise, _ = chroma_stability(babble)
    assert np.median(music) > SpeechConfig().music_stability > np.median(noise)


def test_diarizer_separates_two_espeak_voices(tmp_path):
    """Real VAD + resemblyzer on two alternating espeak-ng voices; DER against the known turns."""
    from pipeline.curate.speech import SpeakerDiarizer
    from pipeline.synth.speech import EspeakSynthesizer, Voice

    synth = EspeakSynthesizer()
    voices = [Voice("en-us+m3", 40, 50, 160), Voice("en-gb+f2", 70, 60, 175)]
    lines = ["Welcome back to the show, it is great to have you here tonight.",
             "Thank you so much, I am really happy to be here with you.",
             "Tell me about the company you started in your garage.",
             "We built the first prototype from old parts and a lot of coffee."]
    audio, reference, cursor = [], [], 0.5
    rate = 16000
    audio.append(np.zeros(int(0.5 * rate), np.float32))
    for i, text in enumerate(lines * 2):
        speech = synth.synthesize(text, voices[i % 2])
        wave = prepare_audio(speech.audio, speech.sample_rate)
        audio += [wave, np.zeros(int(0.4 * rate), np.float32)]
        reference.append((f"voice{i % 2}", cursor, cursor + len(wave) / rate))
        cursor += len(wave) / rate + 0.4
    signal = np.concatenate(audio)
    diarization = SpeakerDiarizer().run(signal)
    hypothesis = [(s.speaker, s.start, s.end) for s in diarization.segments]
    der = ev.diarization_error_rate(reference, hypothesis, len(signal) / rate)
    print(f"two-voice DER {der['der']:.3f} ({len({h[0] for h in hypothesis})} speakers found)")
    assert len({h[0] for h in hypothesis}) == 2
    assert der["der"] < 0.2


def test_host_voice_gaussian_and_speaker_vote():
    rng = np.random.default_rng(1)
    host_centre, guest_centre = rng.normal(size=64), rng.normal(size=64)
    host = host_centre + rng.normal(0, 0.25, (40, 64))
    guest = guest_centre + rng.normal(0, 0.25, (40, 64))
    everything = np.vstack([host, guest])
    truth = np.array([True] * 40 + [False] * 40)
    labelled = rng.choice(80, 24, replace=False)
    model = fit_host_speaker_model(everything[labelled], truth[labelled], everything)
    assert model.labelled_f1 > 0.9
    assert np.mean(model.is_host(everything) == truth) > 0.95
    segments = [SpeakerSegment("a", 0, 1, []), SpeakerSegment("a", 1.1, 3, []), SpeakerSegment("b", 3, 4, [])]
    assert speaker_vote(segments, np.array([False, True, False])).tolist() == [True, True, False]  # 1.9 s of 2.9 s
    assert host_speech_intervals(segments, np.array([True, True, False])) == [[0, 3]]
    with pytest.raises(ValueError, match="at least 5"):
        fit_host_speaker_model(everything[:3], truth[:3], everything)


# -- stage 3: host faces ----------------------------------------------------------------------

def test_host_face_threshold_from_bootstrapped_trials():
    rng = np.random.default_rng(2)

    def people(centre, count):
        vectors = centre + rng.normal(0, 0.03, (count, 128))
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    host_centre = rng.normal(size=128)
    host_centre /= np.linalg.norm(host_centre)
    others = np.vstack([people(rng.normal(size=128) / 11.3, 15) for _ in range(4)])
    model = tune_host_face_model(people(host_centre, 50), others, "test", references=30, trials=50)
    assert model.trial_f1 > 0.95
    assert model.is_host(people(host_centre, 20)).mean() > 0.9
    assert model.is_host(others).mean() < 0.05


# -- stages 5 and 6: clips and crops ----------------------------------------------------------

def test_dominant_trajectory_follows_overlap_and_iqr_drops_outliers():
    a, b = [0, 0, 10, 10], [100, 100, 110, 110]
    picks = dominant_trajectory([[a], [b, [1, 1, 11, 11]], [], [[2, 2, 12, 12], b]])
    assert picks == [a, [1, 1, 11, 11], None, [2, 2, 12, 12]]
    boxes = np.array([[0, 0, 10, 10]] * 9 + [[500, 500, 510, 510]], np.float64)
    assert iqr_inliers(boxes).tolist() == [True] * 9 + [False]


def test_canonical_window_encloses_inliers_enlarged_shifted_and_square():
    boxes = [[100, 100, 140, 160]] * 10 + [[900, 100, 940, 160]]  # one outlier far away
    x0, y0, side = canonical_window(boxes)
    assert side == pytest.approx(60 * 1.3)  # height 60 x 1.3 (wider than the 40 px width x 1.3)
    assert x0 + side / 2 == pytest.approx(120)
    assert y0 + side / 2 == pytest.approx(130 + 0.2 * 60)  # centre shifted 20% of the height down


def _segment(frames: int, host_every: int = 1, guest_from: int = 0, guest_box=(300, 100, 340, 150)) -> SegmentIdentities:
    out = []
    for n in range(frames):
        faces = []
        if n % host_every == 0:
            faces.append(FaceObservation("host", [100, 100, 150, 160], 1))
        if n >= guest_from:
            faces.append(FaceObservation("guest_0", list(guest_box), 2))
        out.append(faces)
    return SegmentIdentities(10.0, frames, out, {"1": "host", "2": "guest_0"}, {"1": 1.0, "2": 0.0})


def test_clip_filter_applies_coverage_and_area_rules():
    kept = ClipFilter().clips("ep", [_segment(300)])
    assert len(kept) == 1 and kept[0].rejected is None and kept[0].guest_identity == "guest_0"
    assert ClipFilter().clips("ep", [_segment(300, guest_from=30)])[0].rejected == "guest_coverage"  # 53% of 64
    assert ClipFilter().clips("ep", [_segment(300, host_every=2)])[0].rejected == "host_coverage"
    tiny_guest = ClipFilter().clips("ep", [_segment(300, guest_box=(300, 100, 310, 110))])[0]
    assert tiny_guest.rejected == "host_guest_area_ratio" and tiny_guest.area_ratio > 10
    assert ClipFilter().clips("ep", [_segment(100)]) == []  # shorter than 64 + 81 frames
    long = ClipFilter(ClipConfig(max_clip_s=20)).clips("ep", [_segment(1100)])
    assert [c.frame_count for c in long] == [367, 366, 367] and long[1].start_s == pytest.approx(10 + 367 / 25)


def test_source_frame_mapping_at_29_97():
    assert source_frame_of(0.0, 25, 30000 / 1001, 10_000) == 29  # 1 s in -> frame 29 of a 29.97 source
    assert source_frame_of(2.0, 0, 25.0, 10_000) == 50


# -- ground-truth measures --------------------------------------------------------------------

def test_der_by_the_standard_definition():
    reference = [("A", 0, 10), ("B", 10, 20)]
    assert ev.diarization_error_rate(reference, [("x", 0, 10), ("y", 10, 20)], 20)["der"] == pytest.approx(0)
    swapped = ev.diarization_error_rate(reference, [("x", 0, 15), ("y", 15, 20)], 20)
    assert swapped["confusion_s"] == pytest.approx(5) and swapped["der"] == pytest.approx(0.25)
    missed = ev.diarization_error_rate(reference, [("x", 0, 10)], 20)
    assert missed["missed_s"] == pytest.approx(10) and missed["der"] == pytest.approx(0.5)
    overlap = ev.diarization_error_rate([("A", 0, 10), ("B", 5, 10)], [("x", 0, 10)], 10)  # crosstalk missed
    assert overlap["missed_s"] == pytest.approx(5) and overlap["der"] == pytest.approx(5 / 15)


def test_containment_and_f1():
    assert ev.containment(np.array([10, 10, 20, 20]), [0, 0, 100]) == 1.0
    assert ev.containment(np.array([90, 0, 110, 10]), [0, 0, 100]) == pytest.approx(0.5)
    scores = ev.f1_score([True, True, False, False], [True, False, True, False])
    assert scores["f1"] == pytest.approx(0.5) and scores["tp"] == 1


# -- stage 7 and the data set ------------------------------------------------------------------

def test_splits_are_by_episode_and_80_10_10():
    names = [f"episode_{i:03d}" for i in range(20)]
    splits = assign_splits(names)
    counts = {s: sum(1 for v in splits.values() if v == s) for s in ("train", "val", "test")}
    assert counts == {"train": 16, "val": 2, "test": 2}
    assert assign_splits(names) == splits  # stable
    assert set(assign_splits(names[:3]).values()) == {"train", "val", "test"}


def test_encode_clip_writes_h264_aac_with_the_frames_it_claims(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (30, 64, 64, 3), np.uint8)
    audio = np.sin(np.arange(30 * 640) / 10).astype(np.float32) * 0.1
    path = tmp_path / "clip.mp4"
    encode_clip(path, frames, audio)
    info = probe(path)
    assert (info.width, info.height, info.fps_float, info.has_audio) == (64, 64, 25.0, True)
    assert count_frames(path) == 30
    assert abs(len(read_audio(path)) - len(audio)) < 2048  # AAC priming, at most a frame or two


def test_corrupt_and_truncated_inputs_raise_media_errors(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(MediaError):
        probe(garbage)
    frames = np.zeros((50, 64, 64, 3), np.uint8)
    good = tmp_path / "good.mp4"
    encode_clip(good, frames, np.zeros(50 * 640, np.float32))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(MediaError):
        probe(truncated)


def test_manifest_round_trip_and_discovery(tmp_path):
    track = RoleTrack("host", [0, 0, 10], [[0, 0, 5, 5], None], [True, False], [[0.0] * 15, None], [False, False])
    meta = ClipMeta("c", "e", 1.0, 2, 25.0, 256, track, track, [[0, 0.5]], [])
    assert ClipMeta.from_dict(json.loads(json.dumps(meta.to_dict()))) == meta
    values, valid = track.motion_array()
    assert values.shape == (2, 15) and valid.tolist() == [True, False]
    record = ClipRecord("c", "e", "train", "v.mp4", None, 1.0, 2, 25.0, 256, "h", "g", "m")
    (tmp_path / "manifest.jsonl").write_text(record.to_json() + "\n")
    assert read_manifest(tmp_path) == [record]
    (tmp_path / "raw").mkdir()
    for name in ("b.mp4", "a.mkv", "a.json", "notes.txt", ".hidden.mp4", "c.partial.mp4"):
        (tmp_path / "raw" / name).write_text("{}" if name.endswith(".json") else "x")
    assert [e.name for e in discover(tmp_path / "raw")] == ["a", "b"]


def test_atomic_work_files_and_partial_cleanup(tmp_path):
    work = EpisodeWork(tmp_path, "ep")
    work.save_json("a.json", {"x": 1})
    work.save_npz("b.npz", {"y": np.arange(3)})
    assert work.load_json("a.json") == {"x": 1} and work.load_npz("b.npz")["y"].tolist() == [0, 1, 2]
    (work.folder / ".host.part.mp4").write_bytes(b"half")
    assert remove_partial_files(tmp_path) == 1 and not list(tmp_path.rglob(".*.part*"))


# -- the labelling page -------------------------------------------------------------------------

def test_labelling_page_serves_candidates_and_saves_labels(tmp_path):
    from pipeline.curate.labeling import LabelServer

    store = LabelStore(tmp_path / "labels")
    store.save_candidates("voice", [{"key": "ep:0", "episode": "ep", "start": 0.0, "end": 1.0}])
    store.save_candidates("face", [{"key": "ep_000010_0", "episode": "ep", "frame": 10}])
    (store.folder / "faces" / "ep_000010_0.jpg").write_bytes(b"\xff\xd8jpeg")
    server = LabelServer(tmp_path).serve(0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def post(body: bytes):
        request = urllib.request.Request(base + "/api/label", data=body, headers={"Content-Type": "application/json"})
        return urllib.request.urlopen(request, timeout=10)

    try:
        assert b"Label the host" in urllib.request.urlopen(base + "/", timeout=10).read()
        listed = json.loads(urllib.request.urlopen(base + "/api/candidates", timeout=10).read())
        assert listed["voice"][0]["key"] == "ep:0" and listed["face"][0]["key"] == "ep_000010_0"
        assert urllib.request.urlopen(base + "/face?key=ep_000010_0", timeout=10).read() == b"\xff\xd8jpeg"
        post(json.dumps({"kind": "voice", "key": "ep:0", "host": True}).encode())
        post(json.dumps({"kind": "faces", "key": "ep_000010_0", "host": False}).encode())
        assert store.labels("voice") == {"ep:0": True} and store.labels("faces") == {"ep_000010_0": False}
        for body, status in ((b"{", 400), (json.dumps({"kind": "voice", "key": "nope", "host": True}).encode(), 404),
                             (json.dumps({"kind": "voice", "key": "ep:0", "host": "yes"}).encode(), 400),
                             (b"x" * 10_000, 413)):
            with pytest.raises(urllib.error.HTTPError) as error:
                post(body)
            assert error.value.code == status
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(base + "/face?key=../../etc/passwd", timeout=10)
        assert error.value.code == 404
    finally:
        server.shutdown()
        server.server_close()


def test_host_is_one_person_per_frame_and_short_fragments_follow_their_speaker():
    from pipeline.curate.host_face import HostFaceModel
    from pipeline.curate.host_speaker import decide_segments
    from pipeline.curate.identity import IdentityAssigner

    host = np.eye(4)[0]
    model = HostFaceModel(np.tile(host, (5, 1)), 0.9, 0.5, "test", 1.0)
    assigner = IdentityAssigner(model, embedder=None)
    lookalike = np.array([0.95, 0.31, 0, 0])
    embeddings = {1: [host] * 4, 2: [lookalike] * 3 + [np.eye(4)[1]], 3: [np.eye(4)[2]] * 2}
    roles, votes = assigner._roles(embeddings, {1: {0, 1, 2}, 2: {2, 3}, 3: {5}})
    assert votes[2] == 0.75 and roles == {1: "host", 2: "guest_0", 3: "guest_1"}  # 2 shares frame 2 with 1

    class Voice:  # a Gaussian stand-in: host when the first coordinate is positive
        def is_host(self, e):
            return np.asarray(e)[:, 0] > 0

    segments = [SpeakerSegment("a", 0, 3, [1.0]), SpeakerSegment("a", 3.1, 3.5, [-1.0]),
                SpeakerSegment("b", 4, 6, [-1.0]), SpeakerSegment("b", 6.1, 6.4, [1.0])]
    assert decide_segments(Voice(), segments).tolist() == [True, True, False, False]


def test_the_pyannote_option_refuses_a_hub_id_instead_of_downloading(tmp_path):
    """Only a local config.yaml is loaded; a hub id (or a missing file) fails before anything is fetched."""
    from pipeline.curate.speech import PyannoteDiarizer

    for source in ("pyannote/speaker-diarization-3.1", str(tmp_path / "missing" / "config.yaml")):
        with pytest.raises(FileNotFoundError, match="must be a local config.yaml"):
            PyannoteDiarizer(source)
