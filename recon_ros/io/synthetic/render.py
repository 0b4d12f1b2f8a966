"""Exact depth and color rendering of synthetic scenes by analytic ray casting.

Every pixel casts one ray through its centre (pixel (u, v) -> optical-frame direction
``((u - cx) / fx, (v - cy) / fy, 1)``); because that direction has z = 1, the hit parameter of
the ray *is* the z-depth. No sphere tracing: each primitive is intersected in closed form and
the nearest hit wins, vectorised over all pixels in torch (any device).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from ...core.errors import ConfigError
from ...core.frame import Frame, PinholeCamera
from .dynamic import DynamicScene, frame_scene
from .noise import NoiseConfig, apply_noise
from .scene import Scene
from .trajectory import Trajectory


def default_camera(width: int = 640, height: int = 480) -> PinholeCamera:
    """Kinect-like intrinsics (fx = fy = 525 px at 640 x 480, scaled for other sizes)."""
    s = width / 640.0
    K = np.array([[525.0 * s, 0.0, (width - 1) / 2.0],
                  [0.0, 525.0 * s, (height - 1) / 2.0],
                  [0.0, 0.0, 1.0]])
    return PinholeCamera(K=K, width=width, height=height)


_RAY_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _optical_dirs(camera: PinholeCamera, device: torch.device | str, dtype: torch.dtype
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(H*W,) x and y of the optical-frame ray ``((u - cx)/fx, (v - cy)/fy, 1)`` (cached)."""
    key = (camera.K.tobytes(), camera.width, camera.height, str(device), dtype)
    hit = _RAY_CACHE.get(key)
    if hit is None:
        u = (torch.arange(camera.width, dtype=torch.float64) - camera.cx) / camera.fx
        v = (torch.arange(camera.height, dtype=torch.float64) - camera.cy) / camera.fy
        x = u[None, :].expand(camera.height, -1).reshape(-1)
        y = v[:, None].expand(-1, camera.width).reshape(-1)
        hit = (x.to(device=device, dtype=dtype).contiguous(),
               y.to(device=device, dtype=dtype).contiguous())
        if len(_RAY_CACHE) > 16:
            _RAY_CACHE.clear()
        _RAY_CACHE[key] = hit
    return hit


def _check_pose(T_world_cam: np.ndarray) -> np.ndarray:
    T = np.asarray(T_world_cam, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ConfigError(f"T_world_cam must be a finite (4, 4) matrix, got {T.shape}")
    return T


def camera_ray_components(camera: PinholeCamera, T_world_cam: np.ndarray,
                          device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64
                          ) -> tuple[tuple[float, float, float],
                                     tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Like :func:`camera_rays` but as components: origin floats, three (H*W,) tensors."""
    T = _check_pose(T_world_cam)
    x, y = _optical_dirs(camera, device, dtype)
    R = T[:3, :3]
    d = tuple(float(R[i, 0]) * x + float(R[i, 1]) * y + float(R[i, 2]) for i in range(3))
    o = (float(T[0, 3]), float(T[1, 3]), float(T[2, 3]))
    return o, d  # type: ignore[return-value]


def camera_rays(camera: PinholeCamera, T_world_cam: np.ndarray,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """World-frame rays of every pixel centre.

    Returns:
        ``(origin (1, 3), directions (H*W, 3))``, row-major pixels; each direction is the
        world image of the optical-frame vector ``((u - cx)/fx, (v - cy)/fy, 1)``, so a hit's
        ray parameter equals its z-depth.
    """
    o, d = camera_ray_components(camera, T_world_cam, device, dtype)
    return torch.tensor([o], dtype=dtype, device=device), torch.stack(d, dim=1)


def _screen_rect(shape_lo: np.ndarray, shape_hi: np.ndarray, camera: PinholeCamera,
                 T_world_cam: np.ndarray) -> tuple[int, int, int, int] | None:
    """Pixel rectangle ``(v0, v1, u0, u1)`` (half-open) containing every pixel whose ray can
    hit the box ``[lo, hi]``; the full image when the box reaches behind the camera; None when
    it projects outside the image."""
    h, w = camera.height, camera.width
    if not (np.all(np.isfinite(shape_lo)) and np.all(np.isfinite(shape_hi))):
        return 0, h, 0, w
    corners = np.array([[x, y, z] for x in (shape_lo[0], shape_hi[0])
                        for y in (shape_lo[1], shape_hi[1]) for z in (shape_lo[2], shape_hi[2])])
    R, t = T_world_cam[:3, :3], T_world_cam[:3, 3]
    pc = (corners - t) @ R  # rows: R^T (p - t)
    if np.all(pc[:, 2] <= 0):  # entirely behind the camera: hits have camera z = t > 0
        return None
    if np.any(pc[:, 2] <= 1e-6):
        return 0, h, 0, w
    u = pc[:, 0] / pc[:, 2] * camera.fx + camera.cx
    v = pc[:, 1] / pc[:, 2] * camera.fy + camera.cy
    u0, u1 = max(0, int(math.floor(u.min())) - 1), min(w, int(math.ceil(u.max())) + 2)
    v0, v1 = max(0, int(math.floor(v.min())) - 1), min(h, int(math.ceil(v.max())) + 2)
    if u1 <= u0 or v1 <= v0:
        return None
    return v0, v1, u0, u1


#: On CPU, rays are cast in bands of at most this many pixels: small enough for the L2 cache
#: (about 2.5x faster in float64 than whole images) and below torch's intra-op grain size
#: (32768), so each op runs on one thread: no OpenMP stragglers on a shared, oversubscribed
#: machine. On GPUs the whole image is one band.
BAND_PIXELS = 32767


def _cast_band(scene: Scene, o: tuple[float, float, float],
               d: tuple[torch.Tensor, torch.Tensor, torch.Tensor], r0: int, r1: int, w: int,
               rects: list[tuple[int, int, int, int] | None]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """First hits of the rays of image rows ``[r0, r1)`` (flat components ``d``)."""
    hb = r1 - r0
    t, valid = scene.room.cast(o, d)
    t = torch.where(valid, t, math.inf)
    part = torch.zeros(t.shape, dtype=torch.int64, device=t.device)
    t_img, part_img = t.view(hb, w), part.view(hb, w)
    for i, (shape, rect) in enumerate(zip(scene.objects, rects), start=1):
        if rect is None:
            continue
        v0, v1 = max(rect[0], r0) - r0, min(rect[1], r1) - r0
        u0, u1 = rect[2], rect[3]
        if v1 <= v0:
            continue
        if (v0, v1, u0, u1) == (0, hb, 0, w):
            sub = d
        else:
            sub = tuple(di.view(hb, w)[v0:v1, u0:u1].reshape(-1) for di in d)  # type: ignore
        ti, vi = shape.cast(o, sub)  # type: ignore[arg-type]
        ti, vi = ti.view(v1 - v0, u1 - u0), vi.view(v1 - v0, u1 - u0)
        t_sub = t_img[v0:v1, u0:u1]
        closer = vi & (ti < t_sub)
        t_img[v0:v1, u0:u1] = torch.where(closer, ti, t_sub)
        part_img[v0:v1, u0:u1].masked_fill_(closer, i)
    part.masked_fill_(~torch.isfinite(t), -1)
    return t, part


def _bands(camera: PinholeCamera, device: torch.device | str) -> list[tuple[int, int]]:
    if torch.device(device).type != "cpu":
        return [(0, camera.height)]
    rows = max(1, BAND_PIXELS // camera.width)
    return [(r, min(camera.height, r + rows)) for r in range(0, camera.height, rows)]


def _band_rays(camera: PinholeCamera, T: np.ndarray, r0: int, r1: int,
               device: torch.device | str, dtype: torch.dtype
               ) -> tuple[tuple[float, float, float], tuple[torch.Tensor, ...]]:
    x, y = _optical_dirs(camera, device, dtype)
    w = camera.width
    x, y = x[r0 * w:r1 * w], y[r0 * w:r1 * w]
    R = T[:3, :3]
    d = tuple(float(R[i, 0]) * x + float(R[i, 1]) * y + float(R[i, 2]) for i in range(3))
    return (float(T[0, 3]), float(T[1, 3]), float(T[2, 3])), d


def cast_camera_rays(scene: Scene, camera: PinholeCamera, T_world_cam: np.ndarray,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact first hits of every pixel's ray.

    Objects are only cast inside the pixel rectangle of their projected bounding box, and
    rays are processed in bands of :data:`BAND_PIXELS`.

    Returns:
        ``(t, part)``: (H, W) z-depth of the first hit (inf where none) and (H, W) int64 index
        into ``scene.parts`` (-1 where none).
    """
    T = _check_pose(T_world_cam)
    rects = [_screen_rect(*s.aabb(), camera, T) for s in scene.objects]
    ts, parts = [], []
    for r0, r1 in _bands(camera, device):
        o, d = _band_rays(camera, T, r0, r1, device, dtype)
        t, part = _cast_band(scene, o, d, r0, r1, camera.width, rects)  # type: ignore[arg-type]
        ts.append(t)
        parts.append(part)
    h, w = camera.height, camera.width
    return torch.cat(ts).view(h, w), torch.cat(parts).view(h, w)


@dataclass
class RenderResult:
    """One noise-free render.

    Attributes:
        depth: (H, W) float32 z-depth, metres; 0 where nothing was hit or beyond the range.
        color: (H, W, 3) uint8 RGB (black where depth is 0), or None if not requested.
        part: (H, W) int16 index into ``scene.parts`` (0 = room, -1 = none / out of range).
        depth64: (H, W) float64 torch tensor of the exact depth (0 where invalid), on the
            render device; used for sub-micrometre ground truth.
    """

    depth: np.ndarray
    color: np.ndarray | None
    part: np.ndarray
    depth64: torch.Tensor


@torch.no_grad()
def render(scene: Scene, camera: PinholeCamera, T_world_cam: np.ndarray, *,
           max_range_m: float | None = None, color: bool = True,
           device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64
           ) -> RenderResult:
    """Ray-cast depth (and color) of ``scene`` seen from ``T_world_cam``.

    Args:
        scene: the scene.
        camera: pinhole intrinsics.
        T_world_cam: (4, 4) pose of the optical frame (x right, y down, z forward) in world.
        max_range_m: z-depths beyond are reported as 0 (None = no cap).
        color: also shade the color image.
        device, dtype: where and in which precision to cast (float64 by default: exact to
            ~1e-12 m; float32 is ~1.5x faster).
    """
    if max_range_m is not None and not max_range_m > 0:
        raise ConfigError(f"max_range_m must be > 0 or None, got {max_range_m}")
    T = _check_pose(T_world_cam)
    h, w = camera.height, camera.width
    rects = [_screen_rect(*s.aabb(), camera, T) for s in scene.objects]
    depth64 = torch.empty(h * w, dtype=dtype, device=device)
    depth32 = torch.empty(h * w, dtype=torch.float32, device=device)
    part16 = torch.empty(h * w, dtype=torch.int16, device=device)
    rgb_t = torch.empty(h * w, 3, dtype=torch.uint8, device=device) if color else None
    # every op below works on one band (see BAND_PIXELS), including the output conversions
    for r0, r1 in _bands(camera, device):
        o, d = _band_rays(camera, T, r0, r1, device, dtype)
        t, part = _cast_band(scene, o, d, r0, r1, w, rects)  # type: ignore[arg-type]
        valid = torch.isfinite(t)
        if max_range_m is not None:
            valid &= t <= max_range_m
        depth = torch.where(valid, t, 0.0)
        part.masked_fill_(~valid, -1)
        sl = slice(r0 * w, r1 * w)
        depth64[sl] = depth
        depth32[sl] = depth
        part16[sl] = part
        if rgb_t is not None:
            rgb_t[sl] = _shade(scene, o, d, depth, part, valid)
    return RenderResult(
        depth=depth32.view(h, w).cpu().numpy(),
        color=rgb_t.view(h, w, 3).cpu().numpy() if rgb_t is not None else None,
        part=part16.view(h, w).cpu().numpy(),
        depth64=depth64.view(h, w),
    )


def _shade(scene: Scene, o: tuple[float, float, float], d: tuple[torch.Tensor, ...],
           depth: torch.Tensor, part: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(N, 3) uint8 albedo of the band's hits (black where not valid)."""
    all_valid = bool(valid.all())
    idx = None if all_valid else torch.nonzero(valid, as_tuple=True)[0]
    ts = depth if idx is None else depth[idx]
    # points in the cast precision, texture in float32 (only checker edges could differ)
    px, py, pz = ((oi + ts * (di if idx is None else di[idx])).to(torch.float32)
                  for oi, di in zip(o, d))
    albedo = scene.albedo_xyz(px, py, pz, part if idx is None else part[idx])
    shaded = (albedo * 255.0 + 0.5).clamp_(0.0, 255.0).to(torch.uint8)
    if idx is None:
        return shaded
    img = torch.zeros(depth.shape[0], 3, dtype=torch.uint8, device=depth.device)
    img[idx] = shaded
    return img


def render_depth(scene: Scene, camera: PinholeCamera, T_world_cam: np.ndarray, *,
                 max_range_m: float | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float64) -> np.ndarray:
    """(H, W) float32 z-depth in metres along the optical axis; 0 where no hit / too far."""
    return render(scene, camera, T_world_cam, max_range_m=max_range_m, color=False,
                  device=device, dtype=dtype).depth


def render_color(scene: Scene, camera: PinholeCamera, T_world_cam: np.ndarray, *,
                 max_range_m: float | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float64) -> np.ndarray:
    """(H, W, 3) uint8 RGB of the same ray hits as :func:`render_depth` (black = no hit)."""
    out = render(scene, camera, T_world_cam, max_range_m=max_range_m, color=True,
                 device=device, dtype=dtype).color
    return out if out is not None else np.zeros((camera.height, camera.width, 3), np.uint8)


def backproject_depth(depth: np.ndarray | torch.Tensor, camera: PinholeCamera,
                      T_world_cam: np.ndarray) -> np.ndarray:
    """World points (M, 3) float64 of the valid (> 0, finite) pixels of a depth image."""
    dt = torch.as_tensor(np.asarray(depth) if not isinstance(depth, torch.Tensor) else depth)
    dt = dt.detach().to("cpu", torch.float64)
    uv = camera.pixel_grid(dtype=torch.float64)
    valid = torch.isfinite(dt) & (dt > 0)
    pc = camera.backproject(uv[valid], dt[valid])
    T = torch.as_tensor(np.asarray(T_world_cam, dtype=np.float64))
    return (pc @ T[:3, :3].T + T[:3, 3]).numpy()


def frame_seed_rng(seed: int, index: int) -> np.random.Generator:
    """The Generator used for frame ``index`` of a sequence seeded with ``seed``."""
    return np.random.default_rng([int(seed), int(index)])


def iter_frames(scene: Scene | DynamicScene, camera: PinholeCamera,
                trajectory: Trajectory | Sequence[np.ndarray], *,
                noise: NoiseConfig = NoiseConfig(), seed: int = 0, color: bool = True,
                max_range_m: float | None = None, device: torch.device | str = "cpu",
                frame_id: str | None = None) -> Iterator[Frame]:
    """Render a sequence as :class:`~recon_ros.core.frame.Frame` objects (noisy depth, clean
    registered color). Frame ``i``'s noise uses :func:`frame_seed_rng` ``(seed, i)``; a
    :class:`~.dynamic.DynamicScene` is rendered as its ``scene_at(i)``.

    ``trajectory`` is a :class:`Trajectory` (stamps and frame id from it) or a sequence of
    (4, 4) ``T_world_cam`` (stamps ``i``, frame id ``frame_id`` or ``camera_depth_optical_frame``).
    """
    if isinstance(trajectory, Trajectory):
        poses = trajectory.poses
        stamps = [int(s) for s in trajectory.stamps_ns]
        fid = frame_id or trajectory.rig.optical_frame
    else:
        poses = [np.asarray(T, dtype=np.float64) for T in trajectory]
        stamps = list(range(len(poses)))
        fid = frame_id or "camera_depth_optical_frame"
    for i, T in enumerate(poses):
        r = render(frame_scene(scene, i), camera, T, max_range_m=max_range_m, color=color,
                   device=device)
        depth = r.depth
        if not noise.is_noise_free:
            depth = apply_noise(depth, noise, frame_seed_rng(seed, i))
        yield Frame(depth=depth, camera=camera, T_world_cam=T, color=r.color,
                    stamp_ns=stamps[i], frame_id=fid)
