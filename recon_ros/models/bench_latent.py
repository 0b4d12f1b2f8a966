"""Per-frame cost of latent fusion (for ``recon-ros bench``).

Frames of the synthetic demo scene (room scan, exact depth) at the requested resolution are
fused by a :class:`~recon_ros.core.mapper.Mapper` with ``fusion.method: latent`` and, for
reference, by classical TSDF fusion with the same volume. After a warm-up frame the map is
reset; then every frame is integrated and, as a node meshing at frame rate would, the changed
blocks are decoded right after it. Reported: median / p95 milliseconds of the integration
(extraction, fusion network, pooling, running average) and of the lazy decode (translator over
the changed blocks and their neighbours).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.config import MapperConfig
from ..core.mapper import Mapper


@dataclass
class LatentBench:
    """Timings of one run (milliseconds per frame)."""

    width: int
    height: int
    frames: int
    device: str
    latent_integrate_ms: float
    latent_integrate_p95_ms: float
    latent_decode_ms: float
    latent_decode_p95_ms: float
    tsdf_integrate_ms: float
    hardware: str


def latent_fusion_ms_per_frame(width: int = 320, height: int = 240, frames: int = 20,
                               device: str = "cpu", weights: str = "",
                               voxel_size_m: float = 0.05) -> LatentBench:
    """Time latent fusion (and TSDF fusion) per ``width x height`` frame on ``device``."""
    from ..bench import hardware_line
    from ..io.synthetic import default_camera, iter_frames, make_demo_scene, room_scan_trajectory

    scene = make_demo_scene()
    seq = list(iter_frames(scene, default_camera(width, height),
                           room_scan_trajectory(scene, frames), color=False))
    timings = {}
    for method in ("latent", "tsdf"):
        mapper = Mapper(MapperConfig.from_dict({
            "volume": {"voxel_size_m": voxel_size_m, "device": device},
            "fusion": {"method": method, "weights": weights}}))
        mapper.integrate(seq[0])  # warm-up (allocations, kernel selection) outside the timing
        mapper.decode()
        mapper.reset()
        mapper.timer.clear()
        for frame in seq:
            mapper.integrate(frame)
            mapper.decode()
        timings[method] = mapper.timer.summary()
    lat = timings["latent"]
    return LatentBench(
        width=width, height=height, frames=frames, device=device,
        latent_integrate_ms=lat["integrate"]["median_ms"],
        latent_integrate_p95_ms=lat["integrate"]["p95_ms"],
        latent_decode_ms=lat["decode"]["median_ms"],
        latent_decode_p95_ms=lat["decode"]["p95_ms"],
        tsdf_integrate_ms=timings["tsdf"]["integrate"]["median_ms"],
        hardware=hardware_line(device))
