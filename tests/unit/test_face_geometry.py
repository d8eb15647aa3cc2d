"""The face-geometry featurizer measures back the pose and expressions a face was drawn with."""

from __future__ import annotations

import numpy as np
import pytest

from f2f.features.face_geometry import FaceGeometryFeaturizer, motion_from_landmarks, rotation_to_angles
from f2f.motion import FIELD_INDEX, MOTION_FIELDS, neutral_vector
from pipeline.synth.face_drawing import rotation_matrix
from pipeline.synth.face_samples import random_motion, render_face

# Mean absolute error allowed per field over random faces (angles in degrees; tx/ty/scale in image
# fractions; expressions in coefficient units). The mesh follows the lips, eyes' corners and pose
# closely; brows and vertical gaze on drawn faces much less (see docs/synthetic_world.md).
TOLERANCE = {
    "yaw": 4.0, "pitch": 5.0, "roll": 2.0, "tx": 0.01, "ty": 0.01, "scale": 0.03,
    "jawOpen": 0.08, "mouthSmileLeft": 0.3, "mouthSmileRight": 0.3, "mouthPucker": 0.12,
    "eyeBlinkLeft": 0.3, "eyeBlinkRight": 0.3, "browInnerUp": 0.4, "eyeLookX": 0.3, "eyeLookY": 0.6,
}
# Fields whose measurement must also follow the truth (a constant guess cannot pass).
MIN_CORRELATION = {"yaw": 0.95, "pitch": 0.8, "roll": 0.95, "jawOpen": 0.9, "eyeLookX": 0.8, "mouthPucker": 0.7}


@pytest.fixture(scope="module")
def featurizer():
    with FaceGeometryFeaturizer() as f:
        yield f


def test_rotation_decomposition_inverts_the_renderer_convention():
    for yaw, pitch, roll in [(0, 0, 0), (25, -10, 5), (-35, 12, -14), (10, 20, 30)]:
        got = rotation_to_angles(rotation_matrix(yaw, pitch, roll))
        assert np.allclose(got, (yaw, pitch, roll), atol=1e-6)


def test_rejects_wrong_landmark_shapes():
    with pytest.raises(ValueError, match="478"):
        motion_from_landmarks(np.zeros((468, 3)), 640, 480)


def test_rejects_non_bgr_images(featurizer):
    with pytest.raises(ValueError, match="uint8 BGR"):
        featurizer(np.zeros((64, 64), np.uint8))


def test_rgb_entry_point_measures_what_the_bgr_one_does():
    # The gateway hands its decoded RGB straight to `measure_rgb`; training and curation pass BGR.
    # Both must see the same face (static mode: no tracking state carried between the two calls).
    image, _ = render_face(np.random.default_rng(3), neutral_vector())
    with FaceGeometryFeaturizer() as featurizer:
        (from_bgr,) = featurizer(image)
        (from_rgb,) = featurizer.measure_rgb(image[..., ::-1])
    np.testing.assert_array_equal(from_bgr.landmarks, from_rgb.landmarks)
    np.testing.assert_array_equal(from_bgr.motion, from_rgb.motion)
    with pytest.raises(ValueError, match="uint8 RGB"):
        featurizer.measure_rgb(np.zeros((8, 8, 4), np.uint8))


def test_no_face_gives_no_measurement(featurizer):
    assert featurizer(np.full((240, 320, 3), 90, np.uint8)) == []


@pytest.mark.parametrize("yaw", [-25.0, 0.0, 25.0])
def test_known_yaw_is_measured_back(featurizer, yaw):
    motion = neutral_vector()
    motion[FIELD_INDEX["yaw"]] = yaw
    image, truth = render_face(np.random.default_rng(5), motion)
    (face,) = featurizer(image)
    assert abs(face.motion[FIELD_INDEX["yaw"]] - yaw) < 6.0


@pytest.mark.parametrize("jaw", [0.0, 0.5, 0.9])
def test_known_jaw_open_is_measured_back(featurizer, jaw):
    motion = neutral_vector()
    motion[FIELD_INDEX["jawOpen"]] = jaw
    image, _ = render_face(np.random.default_rng(11), motion)
    (face,) = featurizer(image)
    assert abs(face.motion[FIELD_INDEX["jawOpen"]] - jaw) < 0.12


def test_error_per_field_on_random_faces(featurizer, report):
    rng = np.random.default_rng(2026)  # not a calibration seed
    truths, measured, missed = [], [], 0
    for _ in range(60):
        image, truth = render_face(rng, random_motion(rng))
        faces = featurizer(image)
        if not faces:
            missed += 1
            continue
        truths.append(truth)
        measured.append(faces[0].motion)
    truths, measured = np.array(truths), np.array(measured)
    assert missed <= 1
    report(f"face geometry featurizer vs drawn truth ({len(truths)} random faces), MAE / correlation per field:")
    failures = []
    for name in MOTION_FIELDS:
        t, m = truths[:, FIELD_INDEX[name]], measured[:, FIELD_INDEX[name]]
        mae = float(np.abs(t - m).mean())
        corr = float(np.corrcoef(t, m)[0, 1])
        report(f"  {name:16s} MAE {mae:7.4f} (tolerance {TOLERANCE[name]})  corr {corr:6.3f}")
        if mae > TOLERANCE[name]:
            failures.append(f"{name}: MAE {mae:.4f} > {TOLERANCE[name]}")
        if name in MIN_CORRELATION and corr < MIN_CORRELATION[name]:
            failures.append(f"{name}: correlation {corr:.3f} < {MIN_CORRELATION[name]}")
    assert not failures, failures
