"""Cost of what is made from a finished map: rendering views and meshing (shared by
``recon-ros bench`` and ``benchmarks/render.py`` / ``benchmarks/meshers.py``).

- :func:`demo_map`: the demo room mapped by a default :class:`~recon_ros.core.Mapper` from
  exact ray-cast frames along the room scan;
- :func:`render_cost`: time :func:`recon_ros.core.render.render` at given poses and compare its
  depth with the exact depth of the scene;
- :func:`mesher_times`: the whole map meshed by marching cubes (``Mapper.mesh``) and by
  screened Poisson (:func:`recon_ros.core.poisson.poisson_mesh`), each timed;
- :func:`color_mode_costs`: the color-only modes on the same color images of the demo room:
  plane-sweep stereo per keyframe and the Atlas network (average and context view fusion) per
  fragment and per keyframe.

Times are wall clock (the device is synchronised by the tensors' trip to the host).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .core import Mapper, MapperConfig, TriangleMesh
from .core.frame import PinholeCamera
from .core.poisson import PoissonConfig, poisson_mesh
from .core.render import RenderOptions, render
from .io import synthetic
from .io.synthetic import (Scene, Trajectory, default_camera, iter_frames, make_demo_scene,
                           render_depth, room_scan_trajectory)


def demo_map(frames: int, width: int, height: int, device: str = "cpu"
             ) -> tuple[Scene, Trajectory, Mapper]:
    """The demo room mapped (default config: 5 cm voxels, on ``device``) from ``frames`` exact
    ``width x height`` RGB-D frames along :func:`room_scan_trajectory`; returns the scene, the
    trajectory and the mapper."""
    scene = make_demo_scene()
    traj = room_scan_trajectory(scene, frames)
    mapper = Mapper(MapperConfig.from_dict({"volume": {"device": device}}))
    for frame in iter_frames(scene, default_camera(width, height), traj):
        mapper.integrate(frame)
    return scene, traj, mapper


@dataclass
class RenderCost:
    """Renders of one image size at several poses against the exact depth.

    Attributes:
        size: (width, height), pixels.
        ms: (V,) wall-clock milliseconds per render.
        samples_per_ray: trilinear TSDF samples per pixel (march and secant refinement).
        skips_per_ray: march steps per pixel that jumped over an unallocated block.
        median_err_m: median |depth error| where both have a surface, metres.
        inliers: share of ground-truth surface pixels rendered within 5 cm.
        coverage: share of ground-truth surface pixels with a hit.
        false_hits: share of all pixels with a hit where the ground truth has none.
    """

    size: tuple[int, int]
    ms: np.ndarray
    samples_per_ray: float
    skips_per_ray: float
    median_err_m: float
    inliers: float
    coverage: float
    false_hits: float

    @property
    def median_ms(self) -> float:
        return float(np.median(self.ms))


def render_cost(scene: Scene, mapper: Mapper, camera: PinholeCamera,
                poses: list[np.ndarray], options: RenderOptions) -> RenderCost:
    """Render ``mapper``'s volume at each of ``poses`` (after one untimed warm-up render at
    the first) and compare each depth image with the scene's exact depth."""
    vol = mapper.volume
    render(vol, camera, poses[0], options)  # warm-up
    ms, errs = [], []
    samples = skips = inliers = coverage = false_hits = surface = pixels = 0
    for T in poses:
        t0 = time.perf_counter()
        res = render(vol, camera, T, options)
        depth = res.depth.cpu().numpy()
        ms.append((time.perf_counter() - t0) * 1e3)
        samples, skips = samples + res.samples, skips + res.block_skips
        truth = render_depth(scene, camera, T, max_range_m=options.max_depth_m)
        gt, hit = truth > 0, depth > 0
        err = np.abs(depth - truth)[gt & hit]
        errs.append(err)
        inliers += int((err < 0.05).sum())
        coverage += int((gt & hit).sum())
        false_hits += int((hit & ~gt).sum())
        surface += int(gt.sum())
        pixels += gt.size
    return RenderCost((camera.width, camera.height), np.asarray(ms), samples / pixels,
                      skips / pixels, float(np.median(np.concatenate(errs))),
                      inliers / surface, coverage / surface, false_hits / pixels)


@dataclass
class MesherTimes:
    """Both meshes of one map and the seconds each meshing call took."""

    marching_cubes: TriangleMesh
    marching_cubes_s: float
    poisson: TriangleMesh
    poisson_s: float


def mesher_times(mapper: Mapper, poisson: PoissonConfig) -> MesherTimes:
    """Mesh the whole map by marching cubes (from scratch) and by screened Poisson (with
    ``mesh.min_weight`` and ``poisson``), timing each call."""
    t0 = time.perf_counter()
    mc = mapper.mesh()
    t1 = time.perf_counter()
    pm = poisson_mesh(mapper.volume, mapper.config.mesh.min_weight, poisson,
                      with_colors=mapper.has_color)
    t2 = time.perf_counter()
    return MesherTimes(mc, t1 - t0, pm, t2 - t1)


#: The color-only modes timed by :func:`color_mode_costs`: name -> config sections. Maps of
#: 8 cm voxels (the shipped Atlas weights' voxel); the plane sweep matches at full size.
COLOR_MODES = {
    "plane-sweep": {"fusion": {"method": "stereo"}, "stereo": {"image_scale": 1.0}},
    "atlas-average": {"fusion": {"method": "rgb"}, "rgb": {"view_fusion": "average"}},
    "atlas-context": {"fusion": {"method": "rgb"}, "rgb": {"view_fusion": "context"}},
}


@dataclass
class ColorModeCost:
    """One color-only mode over a stream of images (every stage timed, device synchronised).

    Attributes:
        method: a key of :data:`COLOR_MODES`.
        keyframes: keyframes selected.
        fragments: fragments predicted (0 for the plane sweep).
        compute_ms: total of the plane sweep (``stereo`` stage) or of the fragment
            predictions (``rgb`` stage: keyframing, resizing and the network), milliseconds.
        fuse_ms: total of the TSDF fusion of the depth maps or of the fragment merges
            (``integrate`` stage), milliseconds.
    """

    method: str
    keyframes: int
    fragments: int
    compute_ms: float
    fuse_ms: float

    @property
    def ms_per_keyframe(self) -> float:
        return (self.compute_ms + self.fuse_ms) / max(self.keyframes, 1)

    @property
    def ms_per_fragment(self) -> float:
        return (self.compute_ms + self.fuse_ms) / self.fragments if self.fragments else 0.0


def color_mode_costs(frames: int, width: int, height: int, device: str = "cpu"
                     ) -> list[ColorModeCost]:
    """Map the color images of ``frames`` poses of the demo room's scan (``width x height``)
    with each mode of :data:`COLOR_MODES` in turn, on ``device``, and total their stages."""
    scene = make_demo_scene()
    camera = default_camera(width, height)
    poses = [np.asarray(T) for T in room_scan_trajectory(scene, frames).poses]
    images = [synthetic.render(scene, camera, T).color for T in poses]
    out = []
    for method, sections in COLOR_MODES.items():
        mapper = Mapper(MapperConfig.from_dict({
            "volume": {"voxel_size_m": 0.08, "device": device},
            "timing": {"mode": "every_stage"}, **sections}))
        for i, (image, T) in enumerate(zip(images, poses)):
            mapper.integrate_color(image, camera, T, i * 100_000_000)
        mapper.finish_color()
        stages = mapper.timer.summary()
        source = mapper.rgb or mapper.stereo
        out.append(ColorModeCost(
            method, source.keyframes, getattr(source, "fragments", 0),
            sum(stages.get(s, {}).get("total_ms", 0.0) for s in ("stereo", "rgb")),
            stages.get("integrate", {}).get("total_ms", 0.0)))
    return out
