"""A procedural 3D face, drawn with OpenCV from motion parameters.

The synthetic world needs faces that the real detectors (mediapipe face detection and face mesh)
find, whose pose and expression are known exactly. So the face is a small 3D model, not a sprite:
- the head is a lathe-like surface (horizontal elliptical cross-sections whose width and depth
  follow a face profile), tessellated into quads, flat-shaded by a directional light and softened
  with a blur, so rotation reads as rotation;
- skin, hair and beard are colours of that same mesh, so hair covers the back of the head when
  the head turns;
- nose, eyes, brows, lips, ears, glasses are 3D polylines on that surface, deformed by the ARKit
  coefficients (jawOpen, mouthSmile*, mouthPucker, eyeBlink*, browInnerUp, eyeLook*) and projected.

Face coordinates, in units of the face height F (forehead top to chin = 1): x towards the subject's
left (image right when frontal), y down, z away from the camera. The eye line is y = 0, x = 0 is the
midline. Projection is orthographic (weak perspective), which suits faces seen from a few metres.
Rotation follows `f2f.motion`: R = Ryaw @ Rpitch @ Rroll, about a pivot at the top of the neck.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from f2f.motion import FIELD_INDEX

# --- Face profile (F units). Knots over y: half-width, front depth, back depth of the head. ---
_PROFILE_Y = np.array([-0.66, -0.60, -0.50, -0.42, -0.25, -0.10, 0.00, 0.12, 0.25, 0.38, 0.48, 0.56, 0.61, 0.64])
_PROFILE_HALF_WIDTH = np.array([0.02, 0.17, 0.29, 0.34, 0.385, 0.40, 0.405, 0.40, 0.375, 0.33, 0.25, 0.15, 0.06, 0.005])
_PROFILE_FRONT_Z = np.array([0.42, 0.24, 0.10, 0.05, 0.01, -0.01, 0.02, 0.00, -0.01, -0.01, -0.005, 0.0, 0.04, 0.10])
_PROFILE_BACK_Z = np.array([0.50, 0.80, 0.95, 1.00, 1.03, 1.02, 1.00, 0.95, 0.85, 0.72, 0.60, 0.45, 0.30, 0.20])
CHIN_Y = 0.58  # the chin's lowest point on the front profile, at jawOpen 0
FOREHEAD_TOP_Y = -0.42
MOUTH_Y = 0.385
NOSE_BASE_Y = 0.27
PIVOT = np.array([0.0, 0.32, 0.48])  # top of the neck, behind the jaw: the head turns about it

JAW_GAP_AT_FULL_OPEN = 0.20  # inner-lip gap (F units) at jawOpen = 1
LIGHT_DIRECTION = np.array([-0.45, -0.55, -0.70]) / np.linalg.norm([-0.45, -0.55, -0.70])


@dataclass(frozen=True)
class FaceIdentity:
    """What makes one synthetic person look like themselves. Colours are BGR (OpenCV order)."""

    face_width: float = 1.0  # scales every x of the head
    jaw_width: float = 1.0  # scales the lower face's width
    skin_bgr: tuple[int, int, int] = (150, 175, 215)
    hair_bgr: tuple[int, int, int] = (40, 45, 60)
    hair_style: str = "short"  # short | long | bald | curly
    hairline: float = -0.40  # y of the front hairline
    eye_spacing: float = 1.0
    eye_size: float = 1.0
    iris_bgr: tuple[int, int, int] = (90, 70, 40)
    brow_bgr: tuple[int, int, int] = (45, 45, 55)
    brow_thickness: float = 0.028
    brow_arch: float = 0.03
    nose_length: float = 1.0
    nose_width: float = 1.0
    lip_fullness: float = 1.0
    lip_bgr: tuple[int, int, int] = (95, 100, 175)
    glasses: str = "none"  # none | round | square
    beard: str = "none"  # none | stubble | full | goatee
    clothing_bgr: tuple[int, int, int] = (90, 60, 40)


@dataclass(frozen=True)
class DrawnFace:
    """What a drawing produced, in image pixels: the ground truth of that face in that frame."""

    box: tuple[float, float, float, float]  # x, y, w, h of the face (brows to chin, cheek to cheek)
    eye_center: tuple[float, float]  # mid-point between the eyes
    face_height_px: float  # forehead top to chin at jawOpen 0, as projected at zero rotation
    visible: bool  # False when the face is turned away or outside the image


def _soften(image: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian-like blur; stackBlur's cost does not grow with the radius."""
    size = 2 * int(round(2.0 * sigma)) + 1
    return cv2.stackBlur(image, (size, size)) if size > 1 else image


def rotation_matrix(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """R = Ryaw @ Rpitch @ Rroll (column vectors), the convention of `f2f.motion`.  # (3, 3)"""
    a, b, g = np.radians([yaw_deg, pitch_deg, roll_deg])
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    r_yaw = np.array([[ca, 0, -sa], [0, 1, 0], [sa, 0, ca]])
    r_pitch = np.array([[1, 0, 0], [0, cb, -sb], [0, sb, cb]])
    r_roll = np.array([[cg, -sg, 0], [sg, cg, 0], [0, 0, 1]])
    return r_yaw @ r_pitch @ r_roll


class HeadModel:
    """The 3D head of one identity: surface lookups and feature geometry in face coordinates."""

    def __init__(self, identity: FaceIdentity):
        self.identity = identity

    # -- surface ---------------------------------------------------------------------------
    def half_width(self, y: np.ndarray) -> np.ndarray:
        w = np.interp(y, _PROFILE_Y, _PROFILE_HALF_WIDTH) * self.identity.face_width
        lower = np.clip((y - 0.15) / 0.4, 0.0, 1.0)  # the jaw identity only shapes the lower face
        return w * (1.0 + (self.identity.jaw_width - 1.0) * lower)

    def front_z(self, y: np.ndarray) -> np.ndarray:
        return np.interp(y, _PROFILE_Y, _PROFILE_FRONT_Z)

    def back_z(self, y: np.ndarray) -> np.ndarray:
        return np.interp(y, _PROFILE_Y, _PROFILE_BACK_Z)

    def surface_point(self, y: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Points of the head at height y and angle theta around the vertical (0 = front).  # (..., 3)"""
        y, theta = np.broadcast_arrays(np.asarray(y, float), np.asarray(theta, float))
        front, back = self.front_z(y), self.back_z(y)
        centre, depth = (front + back) / 2, (back - front) / 2
        return np.stack([self.half_width(y) * np.sin(theta), y, centre - depth * np.cos(theta)], axis=-1)

    def on_face(self, x: np.ndarray, y: np.ndarray, lift: float | np.ndarray = 0.0) -> np.ndarray:
        """The front-surface point under face coordinates (x, y), raised by `lift` towards the camera."""
        x, y = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
        theta = np.arcsin(np.clip(x / np.maximum(self.half_width(y), 1e-3), -0.999, 0.999))
        points = self.surface_point(y, theta)
        points[..., 2] -= lift
        return points


class FacePainter:
    """Draws one identity's head, face and shoulders into a BGR frame for given motion values."""

    def __init__(self, identity: FaceIdentity, mesh_rows: int = 30, mesh_cols: int = 40):
        self.identity = identity
        self.head = HeadModel(identity)
        self._rows, self._cols = mesh_rows, mesh_cols
        # Mesh parameters (rows over y, columns over theta); vertices are rebuilt per frame because
        # jawOpen deforms them.
        self._mesh_y = np.linspace(_PROFILE_Y[0], _PROFILE_Y[-1], mesh_rows + 1)  # (R+1,)
        self._mesh_theta = np.linspace(-np.pi, np.pi, mesh_cols + 1)  # (C+1,)
        self._quad_material = self._materials()  # (R, C) 0 skin, 1 hair, 2 beard

    # -- public ----------------------------------------------------------------------------
    def draw(
        self,
        frame: np.ndarray,
        motion: np.ndarray,
        pivot_px: tuple[float, float],
        face_height_px: float,
        light_gain: float = 1.0,
        draw_body: bool = True,
    ) -> DrawnFace:
        """Draw into `frame` (H, W, 3) uint8, in place. `motion` follows MOTION_FIELDS; its pose
        fields yaw/pitch/roll are used, tx/ty/scale are outputs of the placement (pivot, size)."""
        m = {name: float(motion[i]) for name, i in FIELD_INDEX.items()}
        rot = rotation_matrix(m["yaw"], m["pitch"], m["roll"])
        scale = float(face_height_px)
        origin = np.array(pivot_px, float)

        def project(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """Face coordinates (..., 3) -> image pixels (..., 2) and camera depth (...)."""
            cam = (points - PIVOT) @ rot.T
            return origin + scale * cam[..., :2], cam[..., 2]

        height, width = frame.shape[:2]
        eye_px, _ = project(self.eye_corners().mean(axis=0))
        if draw_body:
            self._draw_body(frame, project, m["yaw"], scale)
        face_points = self._face_outline(m["jawOpen"])
        face_px, _ = project(face_points)
        x0, y0 = face_px.min(axis=0)
        x1, y1 = face_px.max(axis=0)
        box = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
        on_screen = x1 > 0 and y1 > 0 and x0 < width and y0 < height
        facing = np.cos(np.radians(m["yaw"])) * np.cos(np.radians(m["pitch"])) > 0.35
        if x1 < -scale or y1 < -scale or x0 > width + scale or y0 > height + scale:
            return DrawnFace(box, (float(eye_px[0]), float(eye_px[1])), scale, False)

        self._draw_hair_back(frame, project, scale)
        self._draw_ears(frame, project, scale)
        self._draw_head_mesh(frame, project, rot, m["jawOpen"], scale, light_gain)
        self._draw_nose(frame, project, rot, scale, light_gain)
        self._draw_eyes(frame, project, m, scale)
        self._draw_brows(frame, project, m["browInnerUp"], scale)
        self._draw_mouth(frame, project, m, scale)
        if self.identity.glasses != "none":
            self._draw_glasses(frame, project, scale)
        return DrawnFace(box, (float(eye_px[0]), float(eye_px[1])), scale, bool(on_screen and facing))

    def eye_corners(self) -> np.ndarray:
        """The four eye corners (right outer, right inner, left inner, left outer).  # (4, 3)"""
        reach = np.array([-1.0, 1.0, -1.0, 1.0]) * 0.088 * self.identity.eye_size
        centres = np.array([-1.0, -1.0, 1.0, 1.0]) * 0.18 * self.identity.eye_spacing
        x = centres + reach
        tilt = np.array([-0.008, 0.008, 0.008, -0.008])  # outer corners sit higher (see _draw_eyes)
        return self.head.on_face(x, tilt)

    # -- mesh ------------------------------------------------------------------------------
    def _materials(self) -> np.ndarray:
        ident = self.identity
        yc = (self._mesh_y[:-1] + self._mesh_y[1:]) / 2  # (R,)
        tc = (self._mesh_theta[:-1] + self._mesh_theta[1:]) / 2  # (C,)
        y, t = np.meshgrid(yc, tc, indexing="ij")  # (R, C)
        material = np.zeros(y.shape, np.int8)
        if ident.hair_style != "bald":
            # The hairline rises at the temples and drops to the nape at the back.
            side = np.abs(t) / np.pi  # 0 front .. 1 back
            line = ident.hairline + 0.10 * np.sin(np.clip(side * 2.2, 0, np.pi / 2) * 1.0) ** 2
            line = np.where(side > 0.42, 0.05 + 0.35 * (side - 0.42) / 0.58, line)
            if ident.hair_style == "long":
                line = np.where(side > 0.30, 0.60, line)
            material[y < line] = 1
        else:
            material[(y < -0.15) & (np.abs(t) > 2.0)] = 1 if ident.hair_style == "curly" else 0
        x = np.sin(t)
        if ident.beard in ("full", "stubble"):
            jaw = (y > 0.30) & (np.abs(t) < 1.7) & ~((np.abs(x) < 0.42) & (y > 0.33) & (y < 0.45))
            moustache = (y > 0.27) & (y < 0.34) & (np.abs(x) < 0.45)
            material[(jaw | moustache) & (material == 0)] = 2
        elif ident.beard == "goatee":
            material[(y > 0.46) & (np.abs(x) < 0.35) & (material == 0)] = 2
        return material

    def _deformed_vertices(self, jaw_open: float) -> np.ndarray:
        """Head mesh vertices with the jaw dropped.  # (R+1, C+1, 3)"""
        y, t = np.meshgrid(self._mesh_y, self._mesh_theta, indexing="ij")
        verts = self.head.surface_point(y, t)
        drop = JAW_GAP_AT_FULL_OPEN * 0.9 * jaw_open * np.clip((y - 0.33) / 0.12, 0.0, 1.0)
        verts[..., 1] += drop
        return verts

    def _draw_head_mesh(self, frame, project, rot, jaw_open, scale, light_gain) -> None:
        verts = self._deformed_vertices(jaw_open)
        if self.identity.hair_style != "bald":
            # Hair has volume: push hair-covered vertices out from the head's axis.
            hair_rows = self._mesh_y < self.identity.hairline + 0.12
            centre = (self.head.front_z(self._mesh_y) + self.head.back_z(self._mesh_y)) / 2
            bulge = 1.06 if self.identity.hair_style != "curly" else 1.12
            verts[hair_rows, :, 0] *= bulge
            verts[hair_rows, :, 2] = centre[hair_rows, None] + (verts[hair_rows, :, 2] - centre[hair_rows, None]) * bulge
        px, _ = project(verts)  # (R+1, C+1, 2)
        cam = (verts - PIVOT) @ rot.T  # (R+1, C+1, 3) the same points in camera space
        depth = cam[..., 2]
        # Quad corners in drawing order.
        a, b = cam[:-1, :-1], cam[:-1, 1:]
        c, d = cam[1:, 1:], cam[1:, :-1]
        normal = np.cross(c - a, b - d)  # (R, C, 3), points outwards
        normal /= np.linalg.norm(normal, axis=-1, keepdims=True) + 1e-9
        front_facing = normal[..., 2] < 0.0
        diffuse = np.clip(normal @ LIGHT_DIRECTION, 0.0, 1.0)
        shade = (0.50 + 0.62 * diffuse) * light_gain  # (R, C)
        colours = self._material_colours()  # (3 materials, 3)
        quad_depth = (depth[:-1, :-1] + depth[1:, 1:]) / 2
        rows, cols = np.nonzero(front_facing)
        order = np.argsort(-quad_depth[rows, cols], kind="stable")  # far first
        corners = np.stack([px[:-1, :-1], px[:-1, 1:], px[1:, 1:], px[1:, :-1]], axis=2)  # (R, C, 4, 2)
        shift = 4  # sub-pixel precision for fillConvexPoly
        corners_fixed = np.round(corners * (1 << shift)).astype(np.int32)

        bx0, by0 = np.floor(px.reshape(-1, 2).min(axis=0)).astype(int) - 2
        bx1, by1 = np.ceil(px.reshape(-1, 2).max(axis=0)).astype(int) + 3
        h, w = frame.shape[:2]
        bx0, by0, bx1, by1 = max(bx0, 0), max(by0, 0), min(bx1, w), min(by1, h)
        if bx1 <= bx0 or by1 <= by0:
            return
        # Draw into a patch, then blur it inside its own mask so the facets read as smooth skin.
        patch = frame[by0:by1, bx0:bx1].copy()
        mask = np.zeros(patch.shape[:2], np.uint8)
        offset = np.array([bx0, by0]) << shift
        quad_colours = np.clip(colours[self._quad_material] * shade[..., None], 0, 255).tolist()  # (R, C, 3)
        rows_l, cols_l = rows[order].tolist(), cols[order].tolist()
        polys = corners_fixed[rows[order], cols[order]] - offset  # (Q, 4, 2)
        for poly, r, cidx in zip(polys, rows_l, cols_l):
            cv2.fillConvexPoly(patch, poly, quad_colours[r][cidx], cv2.LINE_AA, shift)
            cv2.fillConvexPoly(mask, poly, 255, cv2.LINE_8, shift)
        blurred = _soften(patch, max(scale / 90.0, 0.6))
        soft_mask = _soften(mask, max(scale / 150.0, 0.5)).astype(np.float32)[..., None] / 255.0
        region = frame[by0:by1, bx0:bx1]
        region[:] = (blurred * soft_mask + region * (1.0 - soft_mask)).astype(np.uint8)

    def _material_colours(self) -> np.ndarray:
        ident = self.identity
        skin = np.array(ident.skin_bgr, float)
        hair = np.array(ident.hair_bgr, float)
        beard_mix = 0.75 if ident.beard in ("full", "goatee") else 0.35
        beard = skin * (1 - beard_mix) + hair * beard_mix
        return np.stack([skin, hair, beard])

    # -- outline ---------------------------------------------------------------------------
    def _face_outline(self, jaw_open: float) -> np.ndarray:
        """Points bounding the face (brows to chin, cheek to cheek) for the ground-truth box.  # (N, 3)"""
        ys = np.linspace(-0.22, CHIN_Y, 12)
        half = self.head.half_width(ys) * 0.92
        left = self.head.on_face(-half, ys)
        right = self.head.on_face(half, ys)
        points = np.concatenate([left, right])
        chin = points[:, 1] > 0.33
        points[chin, 1] += JAW_GAP_AT_FULL_OPEN * 0.9 * jaw_open * np.clip((points[chin, 1] - 0.33) / 0.12, 0, 1)
        return points

    # -- body, hair, ears ------------------------------------------------------------------
    def _draw_body(self, frame, project, yaw, scale) -> None:
        """Neck and shoulders: they turn a third as much as the head and do not pitch or roll."""
        ident = self.identity
        body_rot = rotation_matrix(yaw * 0.3, 0.0, 0.0)
        head_pivot_px, _ = project(PIVOT)

        def body_px(points: np.ndarray) -> np.ndarray:
            cam = (np.asarray(points, float) - PIVOT) @ body_rot.T
            return head_pivot_px + scale * cam[..., :2]

        skin = np.array(ident.skin_bgr, float)
        neck = body_px([[-0.17, 0.35, 0.45], [0.17, 0.35, 0.45], [0.19, 1.05, 0.45], [-0.19, 1.05, 0.45]])
        cv2.fillConvexPoly(frame, np.round(neck).astype(np.int32), (skin * 0.78).tolist(), cv2.LINE_AA)
        t = np.linspace(0, np.pi, 24)
        torso_top = np.stack([-0.95 * np.cos(t), 1.02 - 0.12 * np.sin(t), np.full_like(t, 0.45)], axis=1)
        torso = np.concatenate([torso_top, [[1.05, 3.0, 0.45], [-1.05, 3.0, 0.45]]])
        cv2.fillPoly(frame, [np.round(body_px(torso)).astype(np.int32)], ident.clothing_bgr, cv2.LINE_AA)
        collar = body_px([[-0.20, 0.93, 0.40], [0.0, 1.30, 0.40], [0.20, 0.93, 0.40]])
        cv2.fillConvexPoly(frame, np.round(collar).astype(np.int32), (skin * 0.85).tolist(), cv2.LINE_AA)

    def _draw_hair_back(self, frame, project, scale) -> None:
        """Long hair falls behind the head onto the shoulders."""
        if self.identity.hair_style != "long":
            return
        ys = np.linspace(-0.45, 0.95, 16)
        half = np.maximum(self.head.half_width(np.minimum(ys, 0.05)), 0.36) * 1.12
        pts = np.concatenate([np.stack([-half, ys, np.full_like(ys, 0.75)], 1),
                              np.stack([half, ys, np.full_like(ys, 0.75)], 1)[::-1]])
        px, _ = project(pts)
        cv2.fillPoly(frame, [np.round(px).astype(np.int32)], self.identity.hair_bgr, cv2.LINE_AA)

    def _draw_ears(self, frame, project, scale) -> None:
        skin = np.array(self.identity.skin_bgr, float) * 0.85
        t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        for side in (-1.0, 1.0):
            y = 0.10 + 0.16 * np.sin(t)
            half = self.head.half_width(np.full_like(t, 0.10))
            x = side * (half + 0.015 + 0.035 * (1 + np.cos(t)))
            z = 0.48 + 0.05 * np.cos(t)
            px, _ = project(np.stack([x, y, z], 1))
            cv2.fillPoly(frame, [np.round(px).astype(np.int32)], skin.tolist(), cv2.LINE_AA)

    # -- nose ------------------------------------------------------------------------------
    def _draw_nose(self, frame, project, rot, scale, light_gain) -> None:
        ident = self.identity
        head = self.head
        length, width = ident.nose_length, ident.nose_width
        bridge = head.on_face(0.0, -0.02, lift=0.02)
        tip = head.on_face(0.0, 0.20 * length, lift=0.13)
        base = head.on_face(0.0, NOSE_BASE_Y, lift=0.035)
        wing_l = head.on_face(-0.085 * width, 0.245, lift=0.025)
        wing_r = head.on_face(0.085 * width, 0.245, lift=0.025)
        skin = np.array(ident.skin_bgr, float)
        faces = [  # (polygon, outward normal hint) drawn far side first
            [bridge, tip, wing_l],
            [bridge, wing_r, tip],
            [tip, wing_r, base, wing_l],
        ]
        drawn = []
        for poly in faces:
            p = np.array(poly)
            cam = (p - PIVOT) @ rot.T
            n = np.cross(cam[1] - cam[0], cam[2] - cam[0])
            n /= np.linalg.norm(n) + 1e-9
            if n[2] > 0:  # make every normal point at the camera side for shading
                n = -n
            shade = (0.55 + 0.55 * max(float(n @ LIGHT_DIRECTION), 0.0)) * light_gain
            drawn.append((cam[:, 2].mean(), p, np.clip(skin * shade, 0, 255)))
        for _, p, colour in sorted(drawn, key=lambda item: -item[0]):
            px, _ = project(p)
            cv2.fillConvexPoly(frame, np.round(px * 16).astype(np.int32), colour.tolist(), cv2.LINE_AA, 4)
        # Nostrils: dark ellipses either side of the base.
        for side in (-1.0, 1.0):
            centre = head.on_face(side * 0.04 * width, 0.255, lift=0.04)
            px, _ = project(centre)
            r = max(scale * 0.018, 1.0)
            cv2.ellipse(frame, (int(px[0]), int(px[1])), (int(r * 1.4), max(int(r * 0.8), 1)), 0, 0, 360,
                        (skin * 0.35).tolist(), -1, cv2.LINE_AA)
        # A soft shadow line along the near side of the bridge gives the nose depth.
        ridge_px, _ = project(np.array([bridge, tip]))
        cv2.line(frame, tuple(np.round(ridge_px[0]).astype(int)), tuple(np.round(ridge_px[1]).astype(int)),
                 (skin * 0.8).tolist(), max(int(scale * 0.012), 1), cv2.LINE_AA)

    # -- eyes ------------------------------------------------------------------------------
    def _draw_eyes(self, frame, project, m, scale) -> None:
        ident = self.identity
        skin = np.array(ident.skin_bgr, float)
        half_w = 0.088 * ident.eye_size
        for side, blink in ((-1.0, m["eyeBlinkRight"]), (1.0, m["eyeBlinkLeft"])):
            cx = side * 0.18 * ident.eye_spacing
            u = np.linspace(-1.0, 1.0, 13)
            x = cx + u * half_w
            # Inner corners sit slightly lower than outer ones, as on real eyes.
            tilt = -0.008 * u * side
            opening = 0.047 * ident.eye_size * (1.0 - np.clip(blink, 0, 1))
            upper = tilt - opening * (1 - u**2) ** 0.6
            lower = tilt + 0.026 * ident.eye_size * (1 - u**2) ** 0.8
            upper_pts = self.head.on_face(x, upper, lift=0.005)
            lower_pts = self.head.on_face(x, lower, lift=0.005)
            upper_px, _ = project(upper_pts)
            lower_px, _ = project(lower_pts)
            # Socket shadow above the eye.
            socket = self.head.on_face(x, tilt - 0.075 * (1 - u**2) ** 0.5 - 0.01)
            socket_px, _ = project(socket)
            outline = np.concatenate([socket_px, upper_px[::-1]])
            cv2.fillPoly(frame, [np.round(outline * 16).astype(np.int32)], (skin * 0.82).tolist(), cv2.LINE_AA, 4)
            if opening > 0.004:
                self._draw_eyeball(frame, project, upper_px, lower_px, cx, m, scale)
            lash = np.round(upper_px * 16).astype(np.int32)
            cv2.polylines(frame, [lash], False, (25, 22, 25), max(int(scale * 0.011), 1), cv2.LINE_AA, 4)
            cv2.polylines(frame, [np.round(lower_px * 16).astype(np.int32)], False, (skin * 0.6).tolist(),
                          max(int(scale * 0.004), 1), cv2.LINE_AA, 4)

    def _draw_eyeball(self, frame, project, upper_px, lower_px, cx, m, scale) -> None:
        """Sclera, iris and pupil, clipped to the eye opening through a small local mask."""
        ident = self.identity
        opening = np.concatenate([upper_px, lower_px[::-1]])  # (N, 2)
        x0, y0 = np.floor(opening.min(axis=0)).astype(int) - 1
        x1, y1 = np.ceil(opening.max(axis=0)).astype(int) + 2
        h, w = frame.shape[:2]
        if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
            return
        ox, oy = max(x0, 0), max(y0, 0)
        ex, ey = min(x1, w), min(y1, h)
        local = frame[oy:ey, ox:ex]
        mask = np.zeros(local.shape[:2], np.uint8)
        cv2.fillPoly(mask, [np.round((opening - [ox, oy]) * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
        eyeball = np.empty_like(local)
        eyeball[:] = (225, 232, 238)
        iris_r = 0.040 * ident.eye_size
        iris_centre = self.head.on_face(cx + 0.045 * m["eyeLookX"], -0.004 - 0.022 * m["eyeLookY"], lift=0.01)
        iris_px, _ = project(iris_centre)
        centre = (iris_px - [ox, oy]) * 16
        r = iris_r * scale * 16
        cv2.circle(eyeball, tuple(np.round(centre).astype(int)), int(r), ident.iris_bgr, -1, cv2.LINE_AA, 4)
        cv2.circle(eyeball, tuple(np.round(centre).astype(int)), int(r * 0.45), (15, 12, 12), -1, cv2.LINE_AA, 4)
        glint = centre + np.array([-0.3, -0.35]) * r
        cv2.circle(eyeball, tuple(np.round(glint).astype(int)), max(int(r * 0.15), 8), (250, 250, 250), -1,
                   cv2.LINE_AA, 4)
        alpha = mask.astype(np.float32)[..., None] / 255.0
        local[:] = (eyeball * alpha + local * (1 - alpha)).astype(np.uint8)

    # -- brows -----------------------------------------------------------------------------
    def _draw_brows(self, frame, project, inner_up, scale) -> None:
        ident = self.identity
        for side in (-1.0, 1.0):
            u = np.linspace(0.0, 1.0, 9)  # 0 inner .. 1 outer
            x = side * (0.065 + 0.23 * u) * ident.eye_spacing
            raise_ = 0.075 * inner_up * (1.0 - 0.55 * u)
            y = -0.115 - ident.brow_arch * np.sin(np.pi * np.clip(u * 1.1, 0, 1)) - raise_ + 0.01 * u
            thickness = ident.brow_thickness * (1.2 - 0.6 * u)
            top = self.head.on_face(x, y - thickness / 2, lift=0.008)
            bottom = self.head.on_face(x, y + thickness / 2, lift=0.008)
            top_px, _ = project(top)
            bottom_px, _ = project(bottom)
            poly = np.concatenate([top_px, bottom_px[::-1]])
            cv2.fillPoly(frame, [np.round(poly * 16).astype(np.int32)], ident.brow_bgr, cv2.LINE_AA, 4)

    # -- mouth -----------------------------------------------------------------------------
    def _draw_mouth(self, frame, project, m, scale) -> None:
        ident = self.identity
        jaw = float(np.clip(m["jawOpen"], 0, 1))
        pucker = float(np.clip(m["mouthPucker"], 0, 1))
        smile_l, smile_r = float(np.clip(m["mouthSmileLeft"], 0, 1)), float(np.clip(m["mouthSmileRight"], 0, 1))
        full = ident.lip_fullness
        base_half = 0.135 * (1.0 - 0.38 * pucker)
        u = np.linspace(-1.0, 1.0, 17)  # -1 the subject's right corner .. +1 left
        smile = np.where(u > 0, smile_l, smile_r) * np.abs(u) ** 1.5
        x = u * base_half * (1.0 + 0.16 * smile)
        corner_lift = 0.065 * smile
        gap = JAW_GAP_AT_FULL_OPEN * jaw + 0.035 * pucker * jaw
        bow = 0.010 * np.cos(np.pi * u * 3.0) * (1 - np.abs(u))  # cupid's bow
        curve = (1 - u**2) ** 0.7
        upper_inner = MOUTH_Y - corner_lift - 0.004 * curve - 0.10 * gap * curve
        lower_inner = MOUTH_Y - corner_lift + gap * curve
        upper_outer = upper_inner - (0.035 * full + bow) * (1 - u**2) ** 0.5
        lower_outer = lower_inner + 0.048 * full * (1 - u**2) ** 0.5
        lift = 0.02 + 0.03 * pucker
        project_line = lambda ys: project(self.head.on_face(x, ys, lift=lift))[0]
        ui, li = project_line(upper_inner), project_line(lower_inner)
        uo, lo = project_line(upper_outer), project_line(lower_outer)
        to_poly = lambda pts: np.round(pts * 16).astype(np.int32)
        lip = np.array(ident.lip_bgr, float)
        if gap > 0.006:
            cv2.fillPoly(frame, [to_poly(np.concatenate([ui, li[::-1]]))], (30, 25, 45), cv2.LINE_AA, 4)
            # Upper teeth just below the upper lip.
            teeth_bottom = project_line(upper_inner + np.minimum(gap * 0.45, 0.03) * curve)
            teeth = np.concatenate([ui[3:-3], teeth_bottom[3:-3][::-1]])
            cv2.fillPoly(frame, [to_poly(teeth)], (215, 225, 230), cv2.LINE_AA, 4)
        cv2.fillPoly(frame, [to_poly(np.concatenate([uo, ui[::-1]]))], (lip * 0.92).tolist(), cv2.LINE_AA, 4)
        cv2.fillPoly(frame, [to_poly(np.concatenate([li, lo[::-1]]))], lip.tolist(), cv2.LINE_AA, 4)
        cv2.polylines(frame, [to_poly(ui)], False, (lip * 0.55).tolist(), max(int(scale * 0.006), 1), cv2.LINE_AA, 4)

    # -- glasses ---------------------------------------------------------------------------
    def _draw_glasses(self, frame, project, scale) -> None:
        ident = self.identity
        t = np.linspace(0, 2 * np.pi, 28)
        thickness = max(int(scale * 0.012), 1)
        colour = (30, 30, 35)
        rims = []
        for side in (-1.0, 1.0):
            cx = side * 0.18 * ident.eye_spacing
            if ident.glasses == "round":
                x, y = cx + 0.105 * np.cos(t), 0.005 + 0.085 * np.sin(t)
            else:
                c, s = np.cos(t), np.sin(t)
                x = cx + 0.11 * np.sign(c) * np.abs(c) ** 0.35
                y = 0.005 + 0.075 * np.sign(s) * np.abs(s) ** 0.35
            pts, _ = project(self.head.on_face(x, y, lift=0.06))
            rims.append(pts)
            cv2.polylines(frame, [np.round(pts * 16).astype(np.int32)], True, colour, thickness, cv2.LINE_AA, 4)
        bridge, _ = project(self.head.on_face(np.array([-0.075, 0.075]), np.array([-0.01, -0.01]), lift=0.07))
        cv2.line(frame, tuple(np.round(bridge[0]).astype(int)), tuple(np.round(bridge[1]).astype(int)),
                 colour, thickness, cv2.LINE_AA)
