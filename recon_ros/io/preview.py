"""A preview picture of a map: shaded mesh (perspective, from above) beside the 2D grid.

Software rendering with numpy: every face is sampled at its vertices, centroid and edge
midpoints, shaded by its normal and splatted through a painter's-order z-buffer. It needs no
display or GPU and is good enough to see at a glance that a map is right; it is not a viewer.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..core.atomic_file import atomic_path
from ..core.mesh import TriangleMesh
from ..core.occupancy_grid import FREE, OCCUPIED, OccupancyGrid2D

_GRID_COLORS = {OCCUPIED: (0, 0, 0), FREE: (254, 254, 254)}
_UNKNOWN_GREY = (205, 205, 205)


def render_mesh_view(mesh: TriangleMesh, size: tuple[int, int] = (640, 480),
                     ceiling_cut_m: float | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB view of the mesh from above and to the side of its bounding box.

    Args:
        mesh: the mesh (map frame, z up).
        size: (width, height) of the picture.
        ceiling_cut_m: faces above this height are hidden (to look into rooms).
    """
    w, h = size
    img = np.full((h, w, 3), 30, np.uint8)
    if mesh.num_faces == 0:
        return img
    tri = mesh.vertices[mesh.faces].astype(np.float64)  # (M, 3, 3)
    keep = np.ones(len(tri), bool)
    if ceiling_cut_m is not None:
        keep = tri[:, :, 2].max(1) <= ceiling_cut_m
    tri, faces = tri[keep], mesh.faces[keep]
    if len(tri) == 0:
        return img
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    lo, hi = tri.reshape(-1, 3).min(0), tri.reshape(-1, 3).max(0)
    center, extent = (lo + hi) / 2, np.linalg.norm(hi - lo)
    eye = center + extent * np.array([-0.55, -0.75, 0.9])
    fwd = center - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    R = np.stack((right, down, fwd))  # rows: camera axes in the world
    f = 0.9 * w
    # Sample each face at its vertices, centroid and edge midpoints (dense enough at this size).
    bary = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1 / 3, 1 / 3, 1 / 3],
                     [0.5, 0.5, 0], [0, 0.5, 0.5], [0.5, 0, 0.5]])
    pts = np.einsum("kb,mbc->mkc", bary, tri).reshape(-1, 3)
    if mesh.colors is not None:
        col = np.einsum("kb,mbc->mkc", bary, mesh.colors[faces].astype(np.float64)).reshape(-1, 3)
    else:
        col = np.full((len(pts), 3), 180.0)
    light = np.array([0.3, 0.4, 0.85])
    shade = 0.35 + 0.65 * np.abs(normals @ (light / np.linalg.norm(light)))
    col = col * np.repeat(shade, len(bary))[:, None]
    pc = (pts - eye) @ R.T
    z = pc[:, 2]
    ok = z > 1e-3
    u = np.round(pc[ok, 0] / z[ok] * f + w / 2).astype(np.int64)
    v = np.round(pc[ok, 1] / z[ok] * f + h / 2).astype(np.int64)
    z, col = z[ok], col[ok]
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    u, v, z, col = u[inside], v[inside], z[inside], col[inside]
    order = np.argsort(-z)  # far first, near last: later writes win
    img[v[order], u[order]] = np.clip(col[order], 0, 255).astype(np.uint8)
    return img


def render_grid(grid: OccupancyGrid2D, size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """(H, W, 3) uint8 RGB picture of the grid (north up), scaled to fit ``size``."""
    img = np.empty((*grid.data.shape, 3), np.uint8)
    img[:] = _UNKNOWN_GREY
    for value, color in _GRID_COLORS.items():
        img[grid.data == value] = color
    img = img[::-1]  # row 0 of the grid is the lowest y: put it at the bottom
    w, h = size
    scale = min(w / img.shape[1], h / img.shape[0])
    scaled = cv2.resize(img, (max(1, int(img.shape[1] * scale)), max(1, int(img.shape[0] * scale))),
                        interpolation=cv2.INTER_NEAREST)
    canvas = np.full((h, w, 3), 30, np.uint8)
    y0, x0 = (h - scaled.shape[0]) // 2, (w - scaled.shape[1]) // 2
    canvas[y0:y0 + scaled.shape[0], x0:x0 + scaled.shape[1]] = scaled
    return canvas


def write_preview(path: str | Path, mesh: TriangleMesh, grid: OccupancyGrid2D,
                  ceiling_cut_m: float | None = None) -> None:
    """Write a PNG with the mesh view (left) and the 2D grid (right), atomically.

    Raises:
        OSError: the picture could not be written (``path`` keeps its previous content).
    """
    picture = np.concatenate((render_mesh_view(mesh, ceiling_cut_m=ceiling_cut_m),
                              render_grid(grid)), axis=1)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write preview picture {path}")
