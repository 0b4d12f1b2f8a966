"""Pictures of a map rendered from poses (``recon_ros.core.render``): a strip of views from
recorded camera poses above a strip of views from an orbit around the map."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..core.atomic_file import atomic_path
from ..core.frame import PinholeCamera
from ..core.mapper import Mapper
from ..core.render import RenderOptions, render
from .synthetic.trajectory import orbit_trajectory

__all__ = ["orbit_poses", "render_strip", "write_render_strip"]


def orbit_poses(mapper: Mapper, n: int) -> np.ndarray:
    """(n, 4, 4) ``T_world_cam`` on a horizontal circle inside the map's bounding box (radius
    0.3 of its smaller horizontal extent, at its mid height), each looking at the box centre.
    Empty when the map is."""
    vol = mapper.volume
    if vol.num_blocks == 0 or n < 1:
        return np.zeros((0, 4, 4))
    centres = vol.block_centers(vol.block_coords).cpu().numpy()
    lo, hi = centres.min(axis=0), centres.max(axis=0)
    mid = (lo + hi) / 2
    radius = max(0.3 * float(np.min(hi[:2] - lo[:2])), vol.block_size * vol.voxel_size_m)
    return orbit_trajectory(mid, radius, float(mid[2]), n, look_at=mid - [0, 0, 0.3]).poses


def render_strip(mapper: Mapper, camera: PinholeCamera, recorded: np.ndarray, views: int = 4,
                 width_px: int = 160) -> np.ndarray:
    """(H, W, 3) uint8 RGB picture: ``views`` renders at evenly spaced ``recorded`` (N, 4, 4)
    poses (in color when the map has color, else shaded) above ``views`` shaded renders from
    :func:`orbit_poses`; each tile ``camera`` strided to about ``width_px`` pixels wide. Black
    = no surface (free or unknown space)."""
    cam = camera.strided(max(1, camera.width // width_px))
    opt = RenderOptions(max_depth_m=mapper.config.integration.max_depth_m,
                        min_depth_m=mapper.config.integration.min_depth_m)
    mapper.decode()
    pick = np.linspace(0, len(recorded) - 1, min(views, len(recorded))).round().astype(int)
    rows = []
    for poses, colored in ((recorded[pick] if len(recorded) else recorded, mapper.has_color),
                           (orbit_poses(mapper, views), False)):
        tiles = []
        for T in poses:
            r = render(mapper.volume, cam, T, opt)
            tile = r.color if colored else r.shaded[..., None].expand(-1, -1, 3)
            tiles.append(tile.cpu().numpy())
        tiles += [np.zeros((cam.height, cam.width, 3), np.uint8)] * (views - len(tiles))
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def write_render_strip(path: str | Path, mapper: Mapper, camera: PinholeCamera,
                       recorded: np.ndarray, views: int = 4) -> None:
    """:func:`render_strip` as a PNG, written atomically."""
    with atomic_path(Path(path)) as tmp:
        picture = render_strip(mapper, camera, recorded, views)
        if not cv2.imwrite(str(tmp), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
            raise OSError(f"cannot write {path}")
