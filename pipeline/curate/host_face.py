"""Stage 3, host face modelling: identity embeddings and a voting threshold tuned by bootstrapped trials.

Faces come from the host-speech windows; a few dozen are confirmed as the host (the labelling
page, a folder of crops, or the synthetic ground truth). A face is the host when at least half of
the reference embeddings are within cosine similarity tau of it (a vote, so one odd reference
cannot decide). tau is tuned by bootstrapped trials: each trial resamples the references and
scores held-out confirmed host / not-host faces; the tau with the best mean F1 wins.

Embeddings: dlib's face-recognition ResNet (128-d; weights in `face-recognition-models`) by
default; insightface ArcFace when its model pack is present (F2F_ARCFACE_DIR).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np


class DlibFaceEmbedder:
    """(H, W, 3) BGR image + face box -> 128-d L2-normalised identity embedding."""

    name = "dlib_resnet_128"

    def __init__(self):
        import warnings

        import dlib

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # face_recognition_models imports pkg_resources
            import face_recognition_models as models
        self._dlib = dlib
        self._shape = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
        self._net = dlib.face_recognition_model_v1(models.face_recognition_model_location())

    def __call__(self, image_bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        shape = self._shape(rgb, self._dlib.rectangle(x0, y0, x1, y1))
        vector = np.array(self._net.compute_face_descriptor(rgb, shape), np.float32)
        return vector / (np.linalg.norm(vector) + 1e-8)


class ArcFaceEmbedder:
    """insightface ArcFace from a user-supplied model pack folder (never downloaded)."""

    name = "arcface"

    def __init__(self, model_dir: str):
        from insightface.app import FaceAnalysis  # optional dependency

        self._app = FaceAnalysis(name=os.path.basename(model_dir), root=os.path.dirname(os.path.dirname(model_dir)),
                                 allowed_modules=["recognition", "detection"], providers=["CPUExecutionProvider"])
        self._app.prepare(ctx_id=-1)

    def __call__(self, image_bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
        faces = self._app.get(image_bgr)
        if not faces:
            raise ValueError("ArcFace found no face in the box")
        centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
        face = min(faces, key=lambda f: np.linalg.norm(((f.bbox[:2] + f.bbox[2:]) / 2) - centre))
        return face.normed_embedding.astype(np.float32)


def make_face_embedder():
    model_dir = os.environ.get("F2F_ARCFACE_DIR")
    if model_dir and os.path.isdir(model_dir):
        return ArcFaceEmbedder(model_dir)
    return DlibFaceEmbedder()


@dataclass
class HostFaceModel:
    references: np.ndarray   # (R, D) confirmed host embeddings
    threshold: float         # cosine similarity tau of one vote
    vote_share: float        # share of references that must agree
    embedder: str
    trial_f1: float          # mean held-out F1 of the chosen tau over the bootstrapped trials

    def votes(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, D) -> (n,) share of references within tau."""
        return np.mean(np.asarray(embeddings) @ self.references.T >= self.threshold, axis=1)

    def is_host(self, embeddings: np.ndarray) -> np.ndarray:
        return self.votes(embeddings) >= self.vote_share

    def to_npz(self) -> dict[str, np.ndarray]:
        return {"references": self.references, "threshold": np.array(self.threshold),
                "vote_share": np.array(self.vote_share), "embedder": np.array(self.embedder),
                "trial_f1": np.array(self.trial_f1)}

    @classmethod
    def from_npz(cls, data) -> "HostFaceModel":
        return cls(data["references"], float(data["threshold"]), float(data["vote_share"]),
                   str(data["embedder"]), float(data["trial_f1"]))


def tune_host_face_model(host: np.ndarray, others: np.ndarray, embedder: str, references: int = 40,
                         trials: int = 200, vote_share: float = 0.5, seed: int = 0) -> HostFaceModel:
    """Confirmed host (h, D) and not-host (o, D) embeddings -> references + tau by bootstrapped trials."""
    if len(host) < 6:
        raise ValueError(f"need at least 6 confirmed host faces, got {len(host)}")
    rng = np.random.default_rng(seed)
    taus = np.round(np.arange(0.20, 0.995, 0.01), 2)  # ArcFace same-person cosines sit far lower than dlib's
    scores = np.zeros((trials, len(taus)))
    reference_count = min(references, len(host) * 2 // 3)
    for trial in range(trials):
        order = rng.permutation(len(host))
        chosen = host[rng.choice(order[:reference_count], reference_count, replace=True)]
        held_host = host[order[reference_count:]]
        held_other = others[rng.choice(len(others), min(len(others), max(len(held_host), 20)), replace=False)] \
            if len(others) else others
        for k, tau in enumerate(taus):
            agree_host = np.mean(held_host @ chosen.T >= tau, axis=1) >= vote_share
            agree_other = np.mean(held_other @ chosen.T >= tau, axis=1) >= vote_share if len(held_other) else np.zeros(0, bool)
            tp, fn, fp = agree_host.sum(), (~agree_host).sum(), agree_other.sum()
            scores[trial, k] = 2 * tp / max(2 * tp + fn + fp, 1)
    mean = scores.mean(0)
    best = int(np.argmax(mean))
    chosen_refs = host[rng.choice(len(host), min(references, len(host)), replace=False)]
    return HostFaceModel(chosen_refs.astype(np.float32), float(taus[best]), vote_share, embedder, float(mean[best]))
