"""Stage 2b, which diarized speaker is the host: a Gaussian over labelled host voice embeddings.

A small labelled set (the labelling page, or the synthetic ground truth with
--labels-from-ground-truth) gives host / not-host diarized segments. The host's L2-normalised
embeddings fit one Gaussian; a segment is host speech when its Mahalanobis distance is inside the
1% tail cutoff of the fitted Gaussian (chi-square, scaled by the positives' leave-one-out distances). A few dozen labels cannot fit a
256-dimensional covariance, so the Gaussian lives in the top 8 principal components of all the
episodes' (unlabelled) segment embeddings, with Ledoit-Wolf shrinkage. Segments of at least 1 s are
decided by their own embedding; shorter fragments (backchannels, diarization slivers), whose
embeddings cannot tell voices apart, take their diarized speaker's duration-weighted vote.
Positives are merged across short gaps and re-aligned to the video timeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.curate.speech import SpeakerSegment


@dataclass
class HostSpeakerModel:
    basis: np.ndarray       # (D, C) principal directions of the segment embeddings
    centre: np.ndarray      # (D,) their mean
    mean: np.ndarray        # (C,) host mean in the component space
    precision: np.ndarray   # (C, C) inverse covariance
    threshold: float        # squared Mahalanobis distance at the positives' 99th percentile
    positives: int
    negatives: int
    labelled_f1: float      # leave-one-out F1 on the labelled set

    def distance(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, D) -> (n,) squared Mahalanobis distances."""
        centred = self.project(embeddings) - self.mean
        return np.einsum("nd,de,ne->n", centred, self.precision, centred)

    def project(self, embeddings: np.ndarray) -> np.ndarray:
        return (_normalise(np.asarray(embeddings, np.float64)) - self.centre) @ self.basis  # (n, C)

    def is_host(self, embeddings: np.ndarray) -> np.ndarray:
        return self.distance(embeddings) <= self.threshold

    def to_npz(self) -> dict[str, np.ndarray]:
        return {"basis": self.basis, "centre": self.centre, "mean": self.mean, "precision": self.precision, "threshold": np.array(self.threshold),
                "counts": np.array([self.positives, self.negatives]), "labelled_f1": np.array(self.labelled_f1)}

    @classmethod
    def from_npz(cls, data) -> "HostSpeakerModel":
        return cls(data["basis"], data["centre"], data["mean"], data["precision"], float(data["threshold"]), int(data["counts"][0]),
                   int(data["counts"][1]), float(data["labelled_f1"]))


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-8)


def _gaussian(positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.covariance import LedoitWolf

    estimate = LedoitWolf().fit(positives)
    return estimate.location_, estimate.precision_


def fit_host_speaker_model(embeddings: np.ndarray, is_host: np.ndarray, all_embeddings: np.ndarray,
                           components: int = 8, tail: float = 0.01) -> HostSpeakerModel:
    """Labelled (n, D) segment embeddings -> the Gaussian host model with its 1% tail threshold.

    all_embeddings (m, D): every diarized segment of the data set, labelled or not, for the basis.
    """
    every = _normalise(np.asarray(all_embeddings, np.float64))
    centre = every.mean(0)
    _, _, vt = np.linalg.svd(every - centre, full_matrices=False)
    basis = vt[:min(components, len(vt))].T  # (D, C)
    embeddings = (_normalise(np.asarray(embeddings, np.float64)) - centre) @ basis
    is_host = np.asarray(is_host, bool)
    positives = embeddings[is_host]
    if len(positives) < 5:
        raise ValueError(f"need at least 5 labelled host segments to fit the host voice model, got {len(positives)}")
    # Leave-one-out distances: the threshold must hold for host segments the model has not seen.
    held_out = np.zeros(len(positives))
    for i in range(len(positives)):
        mean, precision = _gaussian(np.delete(positives, i, axis=0))
        centred = positives[i] - mean
        held_out[i] = centred @ precision @ centred
    threshold = tail_threshold(held_out, dimensions=positives.shape[1], tail=tail)
    mean, precision = _gaussian(positives)
    model = HostSpeakerModel(basis, centre, mean, precision, threshold, int(is_host.sum()), int((~is_host).sum()), 0.0)
    # Labelled-set F1: held-out distances for positives, the full model for negatives.
    negatives = embeddings[~is_host] - mean
    predicted = np.concatenate([held_out <= threshold, np.einsum("nd,de,ne->n", negatives, precision, negatives) <= threshold])
    truth = np.concatenate([np.ones(len(positives), bool), np.zeros(int((~is_host).sum()), bool)])
    tp = np.sum(predicted & truth)
    f1 = 2 * tp / max(2 * tp + np.sum(predicted & ~truth) + np.sum(~predicted & truth), 1)
    model.labelled_f1 = float(f1)
    return model


def tail_threshold(held_out: np.ndarray, dimensions: int, tail: float) -> float:
    """The 1% tail of the fitted Gaussian: squared Mahalanobis distances of its samples follow
    chi-square(C), scaled here by the held-out positives' median (robust: one mislabelled or mixed
    positive cannot drag the cutoff out the way an empirical maximum of a few dozen would)."""
    from scipy.stats import chi2

    scale = float(np.median(held_out)) / chi2.median(dimensions)
    return float(chi2.ppf(1.0 - tail, dimensions) * scale)


MIN_IDENTIFIABLE_S = 1.0  # a speaker embedding of a shorter fragment ("yeah") cannot tell voices apart


def decide_segments(model: HostSpeakerModel, segments: list[SpeakerSegment],
                    min_identifiable_s: float = MIN_IDENTIFIABLE_S) -> np.ndarray:
    """Host or not per diarized segment: segments long enough to identify by their own embedding;
    shorter fragments take their speaker's duration-weighted vote over its identifiable segments."""
    if not segments:
        return np.zeros(0, bool)
    own = model.is_host(np.array([s.embedding for s in segments]))
    long_enough = np.array([s.duration >= min_identifiable_s for s in segments])
    voted = speaker_vote([s for s, ok in zip(segments, long_enough) if ok], own[long_enough])
    vote_of = {s.speaker: v for s, v, in zip([s for s, ok in zip(segments, long_enough) if ok], voted)}
    return np.array([own[i] if long_enough[i] else vote_of.get(s.speaker, own[i]) for i, s in enumerate(segments)], bool)


def speaker_vote(segments: list[SpeakerSegment], segment_is_host: np.ndarray) -> np.ndarray:
    """Per-segment decisions -> the same for every segment of a speaker: host when most of its
    speech (by duration) was classified host."""
    host_time: dict[str, float] = {}
    total_time: dict[str, float] = {}
    for segment, host in zip(segments, segment_is_host):
        total_time[segment.speaker] = total_time.get(segment.speaker, 0.0) + segment.duration
        host_time[segment.speaker] = host_time.get(segment.speaker, 0.0) + segment.duration * bool(host)
    host_speakers = {k for k in total_time if host_time[k] > 0.5 * total_time[k]}
    return np.array([s.speaker in host_speakers for s in segments], bool)


def host_speech_intervals(segments: list[SpeakerSegment], is_host: np.ndarray, merge_gap_s: float = 0.3) -> list[list[float]]:
    """Host-classified segments merged across gaps shorter than merge_gap_s.  [[start, end], ...]"""
    spans = sorted((s.start, s.end) for s, host in zip(segments, is_host) if host)
    merged: list[list[float]] = []
    for start, end in spans:
        if merged and start - merged[-1][1] <= merge_gap_s:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged
