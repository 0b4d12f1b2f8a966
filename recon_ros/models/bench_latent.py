"""Per-frame cost of latent fusion: ``python -m recon_ros.models.bench_latent [--device cuda:0]``.

Frames of the synthetic demo scene (room scan, exact depth) at the requested resolution are
fused by a :class:`~recon_ros.core.mapper.Mapper` with ``fusion.method: latent`` and, for
reference, by classical TSDF fusion with the same volume. After a warm-up frame the map is
reset; then every frame is integrated and, as a node meshing at frame rate would, the changed
blocks are decoded right after it. Reported: median / p95 milliseconds of the integration
(extraction, fusion network, pooling, running average) and of the lazy decode (translator over
the changed blocks and their neighbours), and their ratios to TSDF fusion in the same process.
The weights run at any ``--voxel-cm`` (``fusion.allow_weights_mismatch``): only speed is
measured here.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

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

    @property
    def integrate_ratio(self) -> float:
        """Latent integration / TSDF integration (medians)."""
        return self.latent_integrate_ms / self.tsdf_integrate_ms

    @property
    def total_ratio(self) -> float:
        """(Latent integration + decode) / TSDF integration (medians)."""
        return (self.latent_integrate_ms + self.latent_decode_ms) / self.tsdf_integrate_ms


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
            "fusion": {"method": method, "weights": weights,
                       "allow_weights_mismatch": True},
            "timing": {"mode": "every_stage"}}))  # every frame, each stage's whole cost
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


def latent_table(result: LatentBench) -> Table:
    """The timings as a rich table (``stage``, ``median ms``, ``p95 ms``) titled with the frame
    size, the number of frames and the device; the last two rows are ratios to TSDF fusion."""
    table = Table(title=f"Latent fusion: ms per {result.width}x{result.height} frame "
                        f"({result.frames} frames of the demo scene, {result.device})")
    table.add_column("stage")
    for col in ("median ms", "p95 ms"):
        table.add_column(col, justify="right")
    table.add_row("latent integrate (extraction, network, pooling, average)",
                  f"{result.latent_integrate_ms:.2f}", f"{result.latent_integrate_p95_ms:.2f}")
    table.add_row("latent decode (changed blocks and neighbours)",
                  f"{result.latent_decode_ms:.2f}", f"{result.latent_decode_p95_ms:.2f}")
    table.add_row("TSDF integrate, same frames and volume (reference)",
                  f"{result.tsdf_integrate_ms:.2f}", "-")
    table.add_row("ratio latent integrate / TSDF integrate", f"{result.integrate_ratio:.1f}x",
                  "-")
    table.add_row("ratio latent (integrate + decode) / TSDF integrate",
                  f"{result.total_ratio:.1f}x", "-")
    return table


def main(argv: list[str] | None = None) -> LatentBench:
    """Command line: time latent fusion, print the hardware and the table; returns the
    timings."""
    parser = argparse.ArgumentParser(
        prog="python -m recon_ros.models.bench_latent",
        description="Per-frame cost of latent fusion (and TSDF fusion for reference) on "
                    "synthetic frames of the demo scene.")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--width", type=int, default=320, help="frame width, pixels")
    parser.add_argument("--height", type=int, default=240, help="frame height, pixels")
    parser.add_argument("--frames", type=int, default=20, help="frames integrated (timed)")
    parser.add_argument("--voxel-cm", type=float, default=5.0, help="voxel size, cm")
    parser.add_argument("--weights", default="", help='latent weights ("" = shipped)')
    args = parser.parse_args(argv)
    result = latent_fusion_ms_per_frame(args.width, args.height, args.frames, args.device,
                                        args.weights, args.voxel_cm / 100)
    console = Console()
    console.print(f"hardware: {result.hardware}")
    console.print(latent_table(result))
    return result


if __name__ == "__main__":
    main()
