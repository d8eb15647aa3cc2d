"""Measurements on rendered frames, one clip at a time: face mesh, lip-sync jaw, mouth landmarks, identity,
PSNR / SSIM. Each function takes what one clip needs and returns small arrays and figures, so clips can be
measured in worker processes (`pipeline.evaluate.workers`) and pooled afterwards.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from f2f.motion import FIELD_INDEX
from models.avatar import Avatar
from pipeline.evaluate.face_metrics import IdentityEncoder, measure_mesh, mouth_landmark_distance, psnr, ssim

JAW = FIELD_INDEX["jawOpen"]


@torch.no_grad()
def render(avatar: Avatar, motion: np.ndarray, chunk: int = 16) -> np.ndarray:
    """(N, 15) -> (N, F, F, 3) uint8 RGB, one frame per renderer call row (K = 1 rows)."""
    out = []
    for i in range(0, len(motion), chunk):
        frames = avatar.renderer(torch.from_numpy(motion[i:i + chunk].astype(np.float32))[:, None])[:, 0]
        out.append((frames.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def rendered_jaw(avatar: Avatar, motion: np.ndarray) -> np.ndarray:
    """jawOpen the face mesh measures on the rendered motion (N,), NaN where it finds no face."""
    mesh = measure_mesh(render(avatar, motion))
    return np.where(mesh.found, mesh.motion[:, JAW], np.nan)


@dataclass
class ClipFrames:
    """What one test clip's rendered-frame measurements need."""

    motion: np.ndarray  # (N, 15) generated at the default scale
    real_index: np.ndarray  # (R,) int: the frames whose real canonical frame is usable (host_render_ok)
    real_motion: np.ndarray  # (R, 15) the measured host motion of those frames (renderer-only reconstruction)
    real_frames: np.ndarray | str  # (R, F, F, 3) uint8 RGB, or the clip's memory-mapped (N, F, F, 3) .npy file
    identity_stride: int  # every n-th frame goes through dlib
    keep_example: bool  # return a (real, generated, reconstruction) triple for the frames plot

    def load_real(self) -> np.ndarray:
        if isinstance(self.real_frames, str):
            return np.asarray(np.load(self.real_frames, mmap_mode="r")[self.real_index])
        return np.asarray(self.real_frames)


@dataclass
class ClipFrameFigures:
    """One clip's measurements; pooled over clips by `f2f evaluate` (weights: the frame counts)."""

    found: np.ndarray  # (N,) bool: face mesh found the rendered face
    jaw: np.ndarray  # (N,) jawOpen measured on the rendered frames, NaN where not found
    rendered_ids: np.ndarray  # (M, 128) dlib descriptors of every n-th rendered frame
    reference_ids: np.ndarray  # (M', 128) the same of the real frames
    real_frames: int  # R
    mouth_distance: tuple[float | None, int] | None  # generated vs real lips, and the frames both found
    mouth_distance_reconstruction: tuple[float | None, int] | None
    psnr: float | None  # generated vs real, mean over the R frames
    ssim: float | None
    psnr_reconstruction: float | None  # renderer on the real motion vs real
    ssim_reconstruction: float | None
    example: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # real, generated, reconstruction (F, F, 3)


def measure_clip(avatar: Avatar, identity: IdentityEncoder, clip: ClipFrames) -> ClipFrameFigures:
    frames = render(avatar, clip.motion)
    mesh = measure_mesh(frames)
    stride = slice(None, None, clip.identity_stride)
    figures = ClipFrameFigures(
        found=mesh.found, jaw=np.where(mesh.found, mesh.motion[:, JAW], np.nan),
        rendered_ids=identity.encode(frames[stride], mesh.boxes[stride]), reference_ids=np.zeros((0, 128), np.float32),
        real_frames=len(clip.real_index), mouth_distance=None, mouth_distance_reconstruction=None, psnr=None, ssim=None,
        psnr_reconstruction=None, ssim_reconstruction=None, example=None)
    if not len(clip.real_index):
        return figures
    ok = clip.real_index
    real = clip.load_real()
    real_mesh = measure_mesh(real)
    generated_mesh = dataclasses.replace(mesh, found=mesh.found[ok], motion=mesh.motion[ok], lips=mesh.lips[ok],
                                         boxes=mesh.boxes[ok])
    figures.mouth_distance = (mouth_landmark_distance(generated_mesh, real_mesh),
                              int((generated_mesh.found & real_mesh.found).sum()))
    recon = render(avatar, clip.real_motion)
    recon_mesh = measure_mesh(recon)
    figures.mouth_distance_reconstruction = (mouth_landmark_distance(recon_mesh, real_mesh),
                                             int((recon_mesh.found & real_mesh.found).sum()))
    figures.psnr, figures.ssim = psnr(frames[ok], real), ssim(frames[ok], real)
    figures.psnr_reconstruction, figures.ssim_reconstruction = psnr(recon, real), ssim(recon, real)
    figures.reference_ids = identity.encode(real[stride], real_mesh.boxes[stride])
    if clip.keep_example:
        middle = len(real) // 2
        figures.example = (real[middle], frames[ok[middle]], recon[middle])
    return figures
