"""Stage 2a, the audio side of an episode: voice activity, a speech/music filter, and diarization.

- Voice activity: silero-vad's ONNX model (shipped inside the `silero-vad` package) through
  onnxruntime, 32 ms chunks, hysteresis thresholds.
- Speech/music filter: sustained pitched notes keep their chroma from one 100 ms step to the next
  while speech moves through phonemes; windows whose chroma stays put are music, not speech.
- Diarization: resemblyzer speaker embeddings (256-d, L2-normalised, weights in the package) of
  1.2 s sliding windows over the speech, agglomerative clustering (cosine, average linkage) into
  speakers; then re-segmentation with short 0.6 s windows every 0.1 s against the speaker
  centroids and a mode filter, so short turns and backchannels get their own speaker (long
  windows give clean centroids, short ones sharp boundaries). Every 10 ms speech frame takes its
  nearest short window's speaker. Where the second-closest speaker is about as close as the first
  (crosstalk), both are kept active: overlapping speech stays as simultaneous segments.
Times are seconds on the episode timeline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.curate.media import AUDIO_RATE
from pipeline.curate.tracking import runs

FRAME_S = 0.01  # the diarization timeline's resolution
PITCHED_CHROMA_PEAK = 0.5  # largest entry of an L2-normalised chroma; flat (noise) chroma is ~0.29


@dataclass(frozen=True)
class SpeechConfig:
    vad_on: float = 0.5          # speech probability that starts speech
    vad_off: float = 0.35        # ... and that ends it (hysteresis)
    min_speech_s: float = 0.2
    max_pause_s: float = 0.15    # pauses shorter than this stay inside one speech region
    music_stability: float = 0.85 # chroma stability above which a window is music
    window_s: float = 1.2        # speaker-embedding window for clustering
    hop_s: float = 0.2
    fine_window_s: float = 0.6   # re-segmentation window
    fine_hop_s: float = 0.1
    mode_filter: int = 2         # re-segmentation labels: mode over +-2 windows
    cluster_distance: float = 0.3  # cosine distance that separates speakers (average linkage)
    min_speaker_s: float = 3.0   # clusters with less speech are merged into their nearest
    overlap_margin: float = 0.01  # second speaker active when within this similarity of the first
    overlap_min_similarity: float = 0.8
    min_segment_s: float = 0.25


@dataclass
class SpeakerSegment:
    speaker: str
    start: float
    end: float
    embedding: list[float]  # mean window embedding over the segment, L2-normalised (256)

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Diarization:
    speech: list[list[float]]          # [start, end] speech regions after the music filter
    music: list[list[float]]           # [start, end] regions dropped as music
    segments: list[SpeakerSegment]     # may overlap in time (crosstalk)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Diarization":
        return cls(data["speech"], data["music"], [SpeakerSegment(**s) for s in data["segments"]])


class SileroVad:
    """Speech probability per 32 ms chunk of 16 kHz audio."""

    CHUNK = 512
    CONTEXT = 64

    def __init__(self):
        import onnxruntime
        import silero_vad

        path = Path(silero_vad.__file__).parent / "data" / "silero_vad.onnx"
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """(samples,) float32 at 16 kHz -> (chunks,) speech probability, chunk k covers 32 ms from k*512."""
        count = len(audio) // self.CHUNK
        state = np.zeros((2, 1, 128), np.float32)
        context = np.zeros((1, self.CONTEXT), np.float32)
        rate = np.array(AUDIO_RATE, np.int64)
        out = np.zeros(count, np.float32)
        for k in range(count):
            chunk = audio[k * self.CHUNK:(k + 1) * self.CHUNK][None, :].astype(np.float32)
            probability, state = self.session.run(None, {"input": np.concatenate([context, chunk], 1),
                                                         "state": state, "sr": rate})
            context = chunk[:, -self.CONTEXT:]
            out[k] = float(probability.reshape(-1)[0])
        return out


def speech_regions(probability: np.ndarray, config: SpeechConfig) -> list[list[float]]:
    """Hysteresis over per-chunk probabilities -> [start, end] seconds."""
    chunk_s = SileroVad.CHUNK / AUDIO_RATE
    active = np.zeros(len(probability), bool)
    on = False
    for k, p in enumerate(probability):
        on = p >= config.vad_on if not on else p >= config.vad_off
        active[k] = on
    gap = int(round(config.max_pause_s / chunk_s))
    length = max(1, int(round(config.min_speech_s / chunk_s)))
    return [[a * chunk_s, b * chunk_s] for a, b in runs(active, max_gap=gap, min_length=length)]


def chroma_stability(audio: np.ndarray) -> tuple[np.ndarray, float]:
    """Per 0.5 s window: mean cosine similarity of chroma 100 ms apart, counted only where the
    chroma is peaked (pitched); flat chroma (noise, applause) is stable too but is not music.
    # (windows,), window length s"""
    import librosa

    hop = 400  # 25 ms
    chroma = librosa.feature.chroma_stft(y=audio, sr=AUDIO_RATE, n_fft=2048, hop_length=hop)  # (12, T)
    chroma = chroma / (np.linalg.norm(chroma, axis=0, keepdims=True) + 1e-8)
    lag = 4  # 100 ms
    similarity = np.sum(chroma[:, lag:] * chroma[:, :-lag], axis=0)  # (T - lag,)
    pitched = chroma.max(axis=0)[lag:] >= PITCHED_CHROMA_PEAK
    similarity = np.where(pitched, similarity, 0.0)
    per_window = 20  # 0.5 s
    windows = len(similarity) // per_window
    stability = similarity[:windows * per_window].reshape(windows, per_window).mean(1)
    return stability, per_window * hop / AUDIO_RATE


class SpeakerEmbedder:
    """resemblyzer's voice encoder over arbitrary windows of one long recording."""

    def __init__(self):
        import torch
        from resemblyzer import VoiceEncoder

        torch.set_num_threads(1)
        self.encoder = VoiceEncoder("cpu", verbose=False)

    def windows(self, audio: np.ndarray, centres_s: np.ndarray, window_s: float) -> np.ndarray:
        """(samples,) audio, (n,) window centres -> (n, 256) L2-normalised embeddings."""
        import torch
        from resemblyzer.audio import wav_to_mel_spectrogram

        mel = wav_to_mel_spectrogram(audio.astype(np.float32))  # (frames at 10 ms, 40)
        half = int(round(window_s / 0.01 / 2))
        out = np.zeros((len(centres_s), 256), np.float32)
        batch = []
        for i, centre in enumerate(centres_s):
            c = int(round(centre / 0.01))
            a, b = max(0, c - half), min(len(mel), c + half)
            window = mel[a:b]
            if len(window) < 2 * half:  # pad at the recording's edges
                window = np.pad(window, ((0, 2 * half - len(window)), (0, 0)), mode="edge")
            batch.append(window)
        for start in range(0, len(batch), 64):
            with torch.no_grad():
                emb = self.encoder(torch.from_numpy(np.stack(batch[start:start + 64])))
            out[start:start + len(emb)] = emb.numpy()
        return out / (np.linalg.norm(out, axis=1, keepdims=True) + 1e-8)


class SpeakerDiarizer:
    """Speech/music filter + diarization of one episode's 16 kHz mono audio."""

    def __init__(self, config: SpeechConfig = SpeechConfig()):
        self.config = config
        self.vad = SileroVad()
        self.embedder = SpeakerEmbedder()

    def run(self, audio: np.ndarray) -> Diarization:
        config = self.config
        duration = len(audio) / AUDIO_RATE
        regions = speech_regions(self.vad.probabilities(audio), config)
        speech_mask = _mask(regions, duration)
        stability, window_len = chroma_stability(audio)
        music_mask = np.repeat(stability > config.music_stability, int(round(window_len / FRAME_S)))
        music_mask = np.pad(music_mask, (0, max(0, len(speech_mask) - len(music_mask))))[:len(speech_mask)]
        dropped = speech_mask & music_mask
        speech_mask &= ~music_mask
        speech = _spans(speech_mask, config.min_speech_s)
        music = _spans(dropped, 0.0)
        if not speech:
            return Diarization(speech, music, [])
        centres = np.arange(config.hop_s / 2, duration, config.hop_s)
        centres = centres[speech_mask[np.minimum((centres / FRAME_S).astype(int), len(speech_mask) - 1)]]
        if len(centres) < 2:
            return Diarization(speech, music, [])
        embeddings = self.embedder.windows(audio, centres, config.window_s)  # (n, 256)
        labels = _cluster(embeddings, config)
        centroids = np.stack([_normalise(embeddings[labels == k].mean(0)) for k in range(labels.max() + 1)])
        fine = np.arange(config.fine_hop_s / 2, duration, config.fine_hop_s)
        fine = fine[speech_mask[np.minimum((fine / FRAME_S).astype(int), len(speech_mask) - 1)]]
        fine_embeddings = self.embedder.windows(audio, fine, config.fine_window_s)  # (m, 256)
        return Diarization(speech, music, self._segments(speech_mask, fine, fine_embeddings, centroids))

    def _segments(self, speech_mask, centres, embeddings, centroids) -> list[SpeakerSegment]:
        config = self.config
        frames = np.flatnonzero(speech_mask)
        nearest_window = np.clip(np.searchsorted(centres, frames * FRAME_S), 0, len(centres) - 1)
        previous = np.clip(nearest_window - 1, 0, len(centres) - 1)
        closer = np.abs(centres[previous] - frames * FRAME_S) < np.abs(centres[nearest_window] - frames * FRAME_S)
        window_of_frame = np.where(closer, previous, nearest_window)
        similarity = embeddings @ centroids.T  # (n, speakers)
        order = np.argsort(-similarity, axis=1)
        best = _mode_filter(order[:, 0], config.mode_filter)
        active = np.zeros((len(speech_mask), len(centroids)), bool)
        active[frames, best[window_of_frame]] = True
        if len(centroids) > 1:
            rows = np.arange(len(similarity))
            others = similarity.copy()
            others[rows, best] = -np.inf
            second = np.argmax(others, axis=1)
            crosstalk = ((similarity[rows, best] - similarity[rows, second] <= config.overlap_margin)
                         & (similarity[rows, second] >= config.overlap_min_similarity))
            overlap_frames = frames[crosstalk[window_of_frame]]
            active[overlap_frames, second[window_of_frame[crosstalk[window_of_frame]]]] = True
        segments = []
        for k in range(len(centroids)):
            for a, b in runs(active[:, k], max_gap=int(0.1 / FRAME_S), min_length=int(config.min_segment_s / FRAME_S)):
                inside = (centres >= a * FRAME_S) & (centres < b * FRAME_S) & (best == k)
                vector = embeddings[inside].mean(0) if inside.any() else centroids[k]
                segments.append(SpeakerSegment(f"spk{k}", round(a * FRAME_S, 2), round(b * FRAME_S, 2),
                                               [round(float(v), 5) for v in _normalise(vector)]))
        return sorted(segments, key=lambda s: (s.start, s.speaker))


def _mode_filter(labels: np.ndarray, radius: int) -> np.ndarray:
    """Each label replaced by the most common label within +-radius positions."""
    if radius <= 0 or len(labels) == 0:
        return labels
    out = labels.copy()
    for i in range(len(labels)):
        out[i] = np.bincount(labels[max(0, i - radius):i + radius + 1]).argmax()
    return out


def _normalise(vector: np.ndarray) -> np.ndarray:
    return vector / (np.linalg.norm(vector) + 1e-8)


def _mask(spans: list[list[float]], duration: float) -> np.ndarray:
    mask = np.zeros(int(np.ceil(duration / FRAME_S)), bool)
    for a, b in spans:
        mask[int(a / FRAME_S):int(np.ceil(b / FRAME_S))] = True
    return mask


def _spans(mask: np.ndarray, min_s: float) -> list[list[float]]:
    return [[round(a * FRAME_S, 2), round(b * FRAME_S, 2)]
            for a, b in runs(mask, min_length=max(1, int(min_s / FRAME_S)))]


def _cluster(embeddings: np.ndarray, config: SpeechConfig) -> np.ndarray:
    """Agglomerative clustering of window embeddings; tiny clusters join their nearest big one."""
    from scipy.cluster.hierarchy import fcluster, linkage

    labels = fcluster(linkage(embeddings, method="average", metric="cosine"), t=config.cluster_distance,
                      criterion="distance") - 1
    min_windows = max(1, int(config.min_speaker_s / config.hop_s))
    sizes = np.bincount(labels)
    big = np.flatnonzero(sizes >= min_windows)
    if len(big) == 0:
        return np.zeros(len(embeddings), np.int64)
    centroids = np.stack([_normalise(embeddings[labels == k].mean(0)) for k in big])
    small = ~np.isin(labels, big)
    remap = {int(k): i for i, k in enumerate(big)}
    out = np.array([remap.get(int(k), -1) for k in labels])
    out[small] = np.argmax(embeddings[small] @ centroids.T, axis=1)
    return out


class PyannoteDiarizer:
    """The production option: a pyannote.audio pipeline loaded from a local folder the user supplies
    (F2F_PYANNOTE_PIPELINE = path of its config.yaml; never downloaded). pyannote decides who spoke
    when (it keeps overlapping speech natively); segment embeddings still come from resemblyzer so the
    host voice model lives in one embedding space whichever diarizer ran. The speech/music filter
    drops segments that are mostly music."""

    def __init__(self, config_path: str, config: SpeechConfig = SpeechConfig()):
        import os

        if not os.path.isfile(config_path):  # a hub id would be fetched: only local files are loaded
            raise FileNotFoundError(f"F2F_PYANNOTE_PIPELINE must be a local config.yaml, got {config_path!r}")
        os.environ["HF_HUB_OFFLINE"] = "1"  # the config's own references must resolve locally too
        try:
            from pyannote.audio import Pipeline
        except ImportError as error:  # optional dependency
            raise RuntimeError("F2F_PYANNOTE_PIPELINE is set but pyannote.audio is not installed") from error
        self.pipeline = Pipeline.from_pretrained(config_path)
        self.config = config
        self.embedder = SpeakerEmbedder()

    def run(self, audio: np.ndarray) -> Diarization:
        import torch

        duration = len(audio) / AUDIO_RATE
        annotation = self.pipeline({"waveform": torch.from_numpy(audio[None, :].astype(np.float32)),
                                    "sample_rate": AUDIO_RATE})
        stability, window_len = chroma_stability(audio)
        music_mask = np.repeat(stability > self.config.music_stability, int(round(window_len / FRAME_S)))
        turns = [(label, float(turn.start), float(turn.end))
                 for turn, _, label in annotation.itertracks(yield_label=True)]
        kept, music = [], []
        for label, start, end in turns:
            frames = music_mask[int(start / FRAME_S):max(int(end / FRAME_S), int(start / FRAME_S) + 1)]
            (music if frames.size and frames.mean() > 0.5 else kept).append((label, start, end))
        segments = []
        for label, start, end in kept:
            centres = np.arange(start + self.config.fine_hop_s / 2, end, self.config.fine_hop_s)
            vector = self.embedder.windows(audio, centres if len(centres) else np.array([(start + end) / 2]),
                                           self.config.fine_window_s).mean(0)
            segments.append(SpeakerSegment(str(label), round(start, 2), round(end, 2),
                                           [round(float(v), 5) for v in _normalise(vector)]))
        speech_mask = _mask([[s, e] for _, s, e in kept], duration)
        return Diarization(_spans(speech_mask, 0.0), [[round(s, 2), round(e, 2)] for _, s, e in music],
                           sorted(segments, key=lambda s: (s.start, s.speaker)))


def make_diarizer(config: SpeechConfig = SpeechConfig()):
    """pyannote when the user points F2F_PYANNOTE_PIPELINE at a local pipeline, else the offline default."""
    import os

    path = os.environ.get("F2F_PYANNOTE_PIPELINE")
    if path:
        return PyannoteDiarizer(path, config)
    return SpeakerDiarizer(config)
