#!/usr/bin/env python
"""Refit the face-geometry calibration (f2f.features.face_geometry._CALIBRATION) on synthetic faces.

For each field, the raw geometric measure is regressed on the true value over random renders:
raw = at_zero + (at_one - at_zero) * truth. Prints the table to paste into the featurizer and the
fit quality. Usage: .venv/bin/python scripts/calibrate_face_geometry.py [--samples 400] [--seed 1]
"""

from __future__ import annotations

import argparse

import numpy as np
from tqdm import tqdm

from f2f.features.face_geometry import FaceGeometryFeaturizer, raw_measures
from f2f.motion import FIELD_INDEX
from pipeline.synth.face_samples import random_motion, render_face

FIELDS = {  # calibration entry -> (raw measure names, truth field)
    "yaw": (["yaw"], "yaw"), "pitch": (["pitch"], "pitch"), "roll": (["roll"], "roll"),
    "jawOpen": (["jawOpen"], "jawOpen"),
    "mouthSmile": (["mouthSmileLeft", "mouthSmileRight"], None),
    "mouthPucker": (["mouthPucker"], "mouthPucker"),
    "eyeBlink": (["eyeBlinkLeft", "eyeBlinkRight"], None),
    "browInnerUp": (["browInnerUp"], "browInnerUp"),
    "eyeLookX": (["eyeLookX"], "eyeLookX"), "eyeLookY": (["eyeLookY"], "eyeLookY"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    raws, truths = [], []
    with FaceGeometryFeaturizer() as featurizer:
        for _ in tqdm(range(args.samples), desc="rendering and measuring"):
            image, truth = render_face(rng, random_motion(rng))
            faces = featurizer(image)
            if faces:
                raws.append(raw_measures(faces[0].landmarks.astype(np.float64)))
                truths.append(truth)
                raws[-1]["scale"] = raws[-1]["eye_span"] / image.shape[0]
    truths = np.array(truths)
    print(f"{len(raws)} of {args.samples} faces measured")
    for entry, (measures, field) in {**FIELDS, "scale": (["scale"], "scale")}.items():
        xs, ys = [], []
        for name in measures:
            xs.append(truths[:, FIELD_INDEX[field or name]])
            ys.append(np.array([r[name] for r in raws]))
        x, y = np.concatenate(xs), np.concatenate(ys)
        slope, intercept = np.polyfit(x, y, 1)
        corr = np.corrcoef(x, y)[0, 1]
        print(f'    "{entry}": ({intercept:.4f}, {intercept + slope:.4f}),  # corr {corr:.3f}')


if __name__ == "__main__":
    main()
