"""The ``recon-ros`` command line: synth, replay, replay-many, merge, eval, demo, bench, play,
train, eval-fusion, eval-fusion-unbiased.

Library errors (bad config, unreadable bag, missing topic) end in one clear line on stderr and
exit code 2; nothing here calls ``sys.exit`` from library code.
"""

from __future__ import annotations

import json
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from .core.config import MESH_METHODS, MapperConfig
from .core.errors import ReconError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="recon_ros: volumetric mapping from RGB-D rosbags (no ROS install needed).")
console = Console()
err_console = Console(stderr=True)


class Storage(str, Enum):
    sqlite3 = "sqlite3"
    mcap = "mcap"


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=2)


def _load_config(config: Optional[Path], device: Optional[str], voxel_size_m: Optional[float]
                 ) -> MapperConfig:
    cfg = MapperConfig.from_yaml(config) if config else MapperConfig()
    overrides: dict = {}
    if device:
        overrides["device"] = device
    if voxel_size_m:
        overrides["voxel_size_m"] = voxel_size_m
    return cfg.with_overrides(volume=overrides) if overrides else cfg


# ---------------------------------------------------------------------------------- synth
@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Output folder (bag/, ground_truth/, scene.json).")],
    scene: Annotated[str, typer.Option(
        help="Scene name: demo, random, or dynamic (two passes; --frames must be even).")]
    = "demo",
    seed: Annotated[int, typer.Option(help="Scene and noise seed.")] = 0,
    frames: Annotated[int, typer.Option(min=1, help="Number of RGB-D frames.")] = 60,
    storage: Annotated[Storage, typer.Option(help="rosbag2 storage format.")] = Storage.sqlite3,
    width: Annotated[int, typer.Option(min=16)] = 640,
    height: Annotated[int, typer.Option(min=16)] = 480,
    rate_hz: Annotated[float, typer.Option(min=0.1, help="Image rate.")] = 10.0,
    noise_sigma: Annotated[float, typer.Option(help="Multiplicative depth noise sigma.")] = 0.0,
    kinect_noise: Annotated[bool, typer.Option(help="Kinect axial depth noise.")] = False,
    outliers: Annotated[float, typer.Option(help="Fraction of pixels in outlier blobs.")] = 0.0,
    holes: Annotated[float, typer.Option(help="Fraction of pixels in holes.")] = 0.0,
    depth_encoding: Annotated[str, typer.Option(help="16UC1 (mm) or 32FC1 (m).")] = "16UC1",
) -> None:
    """Render a synthetic scene (analytic SDF) into a rosbag2 with TF, plus exact ground truth.

    Ground truth in OUT/ground_truth/: points.ply (the surface the camera saw)
    and map.yaml (2D occupancy of the height band).

    --scene dynamic drives one loop twice (FRAMES/2 frames per pass): a box, a
    cylinder and a table stand only in pass 1, a crate only in pass 2.
    points.ply and map.yaml then describe pass 2, and there are also
    removed_surface.ply / added_surface.ply: seen surface points of the
    removed / added objects, more than 10 cm from every other surface;
    removed_footprint.ply: centres (z = 0) of the 2D cells under the removed
    objects; removed_footprint_seen_free.ply: those of them seen free low in
    the band during pass 2. Score maps with recon_ros.evaluation.dynamic_metrics.
    """
    from .io.synthetic_dataset import write_synthetic_dataset

    try:
        info = write_synthetic_dataset(
            out, scene_name=scene, seed=seed, n_frames=frames, storage=storage.value,
            width=width, height=height, rate_hz=rate_hz, noise_sigma=noise_sigma,
            kinect_noise=kinect_noise, outlier_fraction=outliers, hole_fraction=holes,
            depth_encoding=depth_encoding)
    except (ReconError, FileExistsError) as exc:
        raise _fail(str(exc)) from exc
    console.print(f"wrote {info.n_frames} frames of scene [bold]{scene}[/] (seed {seed}) to "
                  f"{info.path} ({info.storage}); ground truth in {Path(out) / 'ground_truth'}")


# --------------------------------------------------------------------------------- replay
def _replay_table(result) -> Table:
    table = Table(title="replay summary", show_header=True)
    table.add_column("item")
    table.add_column("value", justify="right")
    if result.color_only:
        counts = result.color_only
        table.add_row("color messages", str(result.color_messages))
        table.add_row("color-only: posed images / keyframes",
                      f"{counts['frames_seen']} / {counts['keyframes']}")
        if "without_sources" in counts:
            table.add_row("stereo: keyframes with too few source views",
                          str(counts["without_sources"]))
        if "fragments" in counts:
            table.add_row("rgb: fragments predicted", str(counts["fragments"]))
    else:
        table.add_row("depth messages", str(result.depth_messages))
    table.add_row("frames integrated", str(result.frames_used))
    for reason, n in result.drops.most_common():
        table.add_row(f"dropped: {reason}", str(n))
    for reason, n in result.color_drops.most_common():
        table.add_row(f"without color: {reason}", str(n))
    for stage, s in result.timings.items():
        table.add_row(f"{stage} ms median / p95 ({s['count']} timed)",
                      f"{s['median_ms']:.1f} / {s['p95_ms']:.1f}")
    st = result.stats
    table.add_row("blocks / voxels", f"{st['blocks']} / {st['voxels']}")
    table.add_row("voxel memory MiB used / allocated",
                  f"{st['voxel_used_bytes'] / 2**20:.1f} / {st['voxel_capacity_bytes'] / 2**20:.1f}")
    table.add_row("bytes per voxel", f"{st['bytes_per_voxel']:.0f}")
    table.add_row("map memory MiB (what map.max_memory_mb bounds)", f"{st['memory_mb']:.1f}")
    released = ", ".join(f"{st[f'blocks_released_{k}']} {k.replace('_', ' ')}"
                         for k in ("free_space", "decay", "radius", "memory"))
    table.add_row("blocks released", released)
    table.add_row("2D cells cleared (occupied -> not)", str(st["grid_cells_cleared"]))
    table.add_row("ESDF memory MiB / distance assignments",
                  f"{st['esdf_memory_mb']:.1f} / {st['esdf_voxels_updated']}")
    if result.quality:
        q = np.array([(s.agreement.explained, s.agreement.inlier_ratio,
                       s.agreement.mean_abs_error_m * 100) for s in result.quality])
        med = np.nanmedian(q, axis=0)
        table.add_row(f"map quality, {len(q)} frames: explained median (min) / inliers / "
                      "MAE cm", f"{med[0]:.2f} ({np.nanmin(q[:, 0]):.2f}) / {med[1]:.2f} / "
                      f"{med[2]:.2f}")
    table.add_row(f"mesh ({result.mesh_method}) vertices / triangles / s",
                  f"{result.mesh_vertices} / {result.mesh_faces} / {result.mesh_s:.2f}")
    speed = result.bag_duration_s / result.wall_s if result.wall_s else 0.0
    table.add_row("wall time s (x real time)", f"{result.wall_s:.1f} ({speed:.1f}x)")
    return table


@app.command()
def replay(
    bag: Annotated[Path, typer.Argument(help="rosbag2: folder, .db3 or .mcap.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder for the map files.")],
    config: Annotated[Optional[Path], typer.Option(help="Mapper config YAML.")] = None,
    device: Annotated[Optional[str], typer.Option(help="torch device (cpu, cuda:0).")] = None,
    voxel_size_m: Annotated[Optional[float], typer.Option(help="Override voxel size.")] = None,
    depth_topic: Annotated[Optional[str], typer.Option()] = None,
    color_topic: Annotated[Optional[str], typer.Option(help='"" disables color.')] = None,
    world_frame: Annotated[str, typer.Option(help="TF frame of the map.")] = "map",
    max_frames: Annotated[Optional[int], typer.Option(min=1)] = None,
    mesh_method: Annotated[Optional[str], typer.Option(
        help=f"Mesher of mesh.ply, overrides mesh.method: {' | '.join(MESH_METHODS)}.")]
    = None,
    quality_every: Annotated[int, typer.Option(
        min=0, help="Score the map against every n-th depth frame before fusing it "
        "(quality.csv, quality.png); 0 = off.")] = 10,
    render_views: Annotated[int, typer.Option(
        min=0, help="renders.png: the map rendered from this many recorded and as many "
        "orbit poses; 0 = off.")] = 4,
) -> None:
    """Map a rosbag2 offline: mesh.ply, map.yaml/pgm, map.pt, config.yaml, preview.png,
    quality.csv/png (how much of each n-th frame the map already explained), renders.png.

    With fusion.method: stereo or rgb in the config the bag needs only color
    images, their camera_info and TF (depth topics are ignored): keyframe depth
    comes from plane-sweep stereo (stereo), or fragments of keyframes get their
    TSDF from the Atlas network (rgb; volume.voxel_size_m must be its 0.08).
    """
    from .offline import replay_bag

    try:
        cfg = _load_config(config, device, voxel_size_m)
        if mesh_method is not None:
            cfg = cfg.with_overrides(mesh={"method": mesh_method})
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("integrating", total=None)
            result = replay_bag(bag, out, cfg, depth_topic=depth_topic, color_topic=color_topic,
                                world_frame=world_frame, max_frames=max_frames,
                                progress=lambda done, total: bar.update(task, completed=done,
                                                                        total=total),
                                quality_every=quality_every, render_views=render_views)
    except ReconError as exc:
        raise _fail(str(exc)) from exc
    console.print(_replay_table(result))
    for name, path in result.outputs.items():
        console.print(f"  {name:10s} {path}")
    if result.frames_used == 0:
        raise _fail("no frame could be integrated (see the drop reasons above)")


def _fleet_table(outcomes) -> Table:
    table = Table(title="replay-many summary", show_header=True)
    for name, justify in (("bag", "left"), ("status", "left"), ("frames", "right"),
                          ("drops", "right"), ("wall s", "right"), ("peak RSS MiB", "right"),
                          ("reason", "left")):
        table.add_column(name, justify=justify)
    for o in outcomes:
        table.add_row(o.name, "[green]ok[/]" if o.ok else "[red]failed[/]", str(o.frames),
                      str(o.drops), f"{o.wall_s:.1f}", f"{o.peak_rss_mb:.0f}", o.reason)
    return table


def _merge_table(merges) -> Table:
    table = Table(title="merged windows", show_header=True)
    for name, justify in (("bag", "left"), ("status", "left"), ("windows merged", "right"),
                          ("empty", "right"), ("failed", "left"), ("frames", "right"),
                          ("wall s", "right"), ("map / reason", "left")):
        table.add_column(name, justify=justify)
    for m in merges:
        table.add_row(m.name, "[green]ok[/]" if m.ok else "[red]failed[/]", str(len(m.merged)),
                      str(len(m.empty)), ", ".join(m.failed), str(m.frames), f"{m.wall_s:.1f}",
                      m.out_dir if m.ok else m.reason)
    return table


@app.command("replay-many")
def replay_many(
    bags: Annotated[list[Path], typer.Argument(help="rosbag2s: folders, .db3 or .mcap files.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: OUT/<bag name>/ per bag "
                                      "and OUT/summary.json.")],
    ray_address: Annotated[Optional[str], typer.Option(
        help="Running Ray cluster (ray://host:10001, host:6379, auto); default: a local Ray "
             "instance started for this run.")] = None,
    workers: Annotated[Optional[int], typer.Option(
        min=1, help="Bags (or windows) mapped at a time (default: the CPUs of this machine / "
                    "cluster).")]
    = None,
    gpus_per_task: Annotated[float, typer.Option(
        min=0.0, help="GPUs reserved per bag or window (with --device cuda).")] = 0.0,
    config: Annotated[Optional[Path], typer.Option(help="Mapper config YAML.")] = None,
    device: Annotated[Optional[str], typer.Option(help="torch device (cpu, cuda).")] = None,
    voxel_size_m: Annotated[Optional[float], typer.Option(help="Override voxel size.")] = None,
    world_frame: Annotated[str, typer.Option(help="TF frame of the maps.")] = "map",
    quality_every: Annotated[int, typer.Option(min=0, help="As for replay; 0 = off.")] = 10,
    render_views: Annotated[int, typer.Option(min=0, help="As for replay; 0 = off.")] = 4,
    window_s: Annotated[float, typer.Option(
        help="Cut each bag into time windows of this many seconds, one task each, "
        "maps in OUT/<bag name>-w000/, -w001, ... (images by header stamp; the first window "
        "has no start, the last no end); 0 = one task per bag.")] = 0.0,
    merge_windows: Annotated[Optional[bool], typer.Option(
        "--merge-windows/--no-merge-windows",
        help="Merge each bag's window maps into OUT/<bag name>/ as `merge` does (default: "
             "on with --window-s).")] = None,
) -> None:
    """Map many rosbag2s in parallel with Ray, one task per bag (or per time window of a bag
    with --window-s), each exactly `replay` (same outputs in OUT/<bag name>/; names shared by
    several bags get their parent folder's name in front). A bag that fails is one failed row
    with its reason; the others go on, and the exit code is 2 if any failed. Each task uses
    cores / workers torch threads."""
    from .fleet import ReplayOptions, SUMMARY_FILE, WindowMerge
    from .fleet import replay_many as run_fleet

    if merge_windows and not window_s:
        raise _fail("--merge-windows needs --window-s > 0 (without windows there is nothing "
                    "to merge)")
    merge_on = window_s > 0 if merge_windows is None else merge_windows
    merges: list[WindowMerge] = []
    try:
        cfg = _load_config(config, device, voxel_size_m)
        options = ReplayOptions(world_frame=world_frame, quality_every=quality_every,
                                render_views=render_views)
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
            task = bar.add_task("maps", total=None)
            outcomes = run_fleet(bags, out, cfg, options, workers=workers,
                                 ray_address=ray_address, gpus_per_task=gpus_per_task,
                                 on_done=lambda o: bar.advance(task), window_s=window_s,
                                 merge_windows=merge_on, on_merged=merges.append,
                                 on_planned=lambda jobs: bar.update(task, total=len(jobs)))
    except ReconError as exc:
        raise _fail(str(exc)) from exc
    console.print(_fleet_table(outcomes))
    if merges:
        console.print(_merge_table(merges))
    console.print(f"summary: {out / SUMMARY_FILE}")
    failed = [o.name for o in outcomes if not o.ok]
    unmerged = [m.name for m in merges if not m.ok]
    problems = []
    if failed:
        what = "maps (bags or windows)" if window_s else "bags"
        problems.append(f"{len(failed)} of {len(outcomes)} {what} failed: {', '.join(failed)}")
    if unmerged:
        problems.append(f"{len(unmerged)} of {len(merges)} merges failed: "
                        f"{', '.join(unmerged)}")
    if problems:
        raise _fail("; ".join(problems))


# ----------------------------------------------------------------------------------- eval
@app.command()
def merge(
    maps: Annotated[list[Path], typer.Argument(
        help="Map directories (or map.pt checkpoints) of one place.")],
    out: Annotated[Path, typer.Option("--out", help="Map directory of the merged map.")],
    transform: Annotated[Optional[list[str]], typer.Option(
        "--transform", help="Per map, in the order of MAPS (all or none): the rigid transform "
        "from its map frame into the output frame (normally the first map's: 'identity' for "
        "it): 'identity', x,y,z,qx,qy,qz,qw (m, unit quaternion) or a file holding a 4x4 "
        "matrix.")] = None,
    device: Annotated[Optional[str], typer.Option(help="torch device (cpu, cuda:0).")] = None,
) -> None:
    """Merge maps of the same place (sessions, robots): TSDF, weights and colors block by
    block (weights add), 2D free space, then the usual map files. Maps made in different map
    frames need --transform, once per map: each map is resampled into the first map's frame
    (exact for whole-voxel translations and 90-degree rotations, trilinear otherwise).
    The first map's configuration is kept; maps of other voxel size, block size, truncation or
    2D layer, and latent-fusion maps, are refused."""
    from .core.merge import parse_transform
    from .offline import merge_map_files, write_map_outputs

    if len(maps) < 2:
        raise _fail("merge needs at least two maps")
    if transform and len(transform) != len(maps):
        raise _fail(f"--transform given {len(transform)} times for {len(maps)} maps: give it "
                    "once per map, in the order of MAPS ('identity' for the first)")
    try:
        transforms = [parse_transform(t) for t in transform] if transform else None
        merged = merge_map_files(
            maps, transforms, device,
            on_added=lambda path, added: console.print(f"{path}: {added} new blocks"))
        outputs, export = write_map_outputs(merged, out)
    except ReconError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"merged {len(maps)} maps: {merged.volume.num_blocks} blocks, "
                  f"{merged.frames_integrated} frames, mesh ({export.method}) "
                  f"{export.mesh.num_faces} triangles")
    for name, path in outputs.items():
        console.print(f"  {name:10s} {path}")


@app.command(name="eval")
def evaluate(
    mesh: Annotated[Path, typer.Argument(help="Predicted mesh (PLY).")],
    gt: Annotated[Path, typer.Option("--gt", help="Ground truth PLY: mesh or point cloud.")],
    thresholds_cm: Annotated[str, typer.Option(help="Comma-separated thresholds, cm.")] = "2,5",
    gt_map: Annotated[Optional[Path], typer.Option(help="Ground-truth Nav2 map YAML.")] = None,
    pred_map: Annotated[Optional[Path], typer.Option(help="Predicted Nav2 map YAML.")] = None,
    samples: Annotated[int, typer.Option(min=1000)] = 100_000,
    json_out: Annotated[Optional[Path], typer.Option(help="Also write metrics as JSON.")] = None,
    changes: Annotated[Optional[Path], typer.Option(
        help="ground_truth/ folder of a `synth --scene dynamic` dataset: also score what is "
             "left of removed objects and how much of added ones is mapped (needs --pred-map)."
    )] = None,
) -> None:
    """Accuracy, completeness, precision, recall and F-score of a mesh against ground truth
    (and, with --changes, how the map followed objects removed and added between passes)."""
    from .evaluation import dynamic_metrics, grid_metrics, mesh_metrics, sample_mesh_points
    from .io.map_files import ply_has_faces, read_nav2_map, read_ply, read_points
    from .io.synthetic_dataset import read_change_ground_truth

    try:
        thresholds = tuple(float(t) / 100 for t in thresholds_cm.split(","))
        pred = read_ply(mesh)
        gt_points = (sample_mesh_points(read_ply(gt), samples) if ply_has_faces(gt)
                     else read_points(gt))
        metrics = mesh_metrics(pred, gt_points, thresholds, n_samples=samples)
        grid = None
        if gt_map and pred_map:
            grid = grid_metrics(read_nav2_map(pred_map), read_nav2_map(gt_map))
        change = None
        if changes is not None:
            if pred_map is None:
                raise ValueError("--changes needs --pred-map (the map's Nav2 grid)")
            c = read_change_ground_truth(changes)
            change = dynamic_metrics(pred, read_nav2_map(pred_map), c.removed_surface,
                                     c.removed_footprint_seen_free_xy, c.added_surface,
                                     gt_points, threshold_m=max(thresholds),
                                     n_samples=samples)
    except (ReconError, FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    table = Table(title=f"{mesh.name} vs {gt.name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.as_rows():
        table.add_row(k, v)
    if grid is not None:
        for k, v in vars(grid).items():
            table.add_row(f"grid {k}", f"{v:.4f}")
    if change is not None:
        for k, v in change.as_rows():
            table.add_row(k, v)
    console.print(table)
    if json_out:
        data = {"mesh": {k: v for k, v in metrics.as_rows()},
                "grid": vars(grid) if grid else None,
                "changes": dict(change.as_rows()) if change else None}
        json_out.write_text(json.dumps(data, indent=2))


# ----------------------------------------------------------------------------------- demo
@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("out/demo"),
    frames: Annotated[int, typer.Option(min=2)] = 60,
    device: Annotated[Optional[str], typer.Option()] = None,
) -> None:
    """Synthesize the demo scene as a bag, map it offline, score it against ground truth."""
    import shutil

    from .evaluation import grid_metrics, mesh_metrics
    from .io.map_files import read_esdf, read_nav2_map, read_ply, read_points
    from .io.synthetic_dataset import write_synthetic_dataset
    from .offline import replay_bag

    start = time.perf_counter()
    scene_dir, map_dir = out / "scene", out / "map"
    if scene_dir.exists():
        shutil.rmtree(scene_dir)
    try:
        console.print(f"[bold]1/3[/] rendering the demo scene ({frames} frames, 640x480) ...")
        info = write_synthetic_dataset(scene_dir, scene_name="demo", seed=0, n_frames=frames,
                                       noise_sigma=0.0, kinect_noise=True)
        console.print(f"[bold]2/3[/] mapping {info.path} ...")
        cfg = _load_config(None, device, None)
        result = replay_bag(info.path, map_dir, cfg)
        console.print(_replay_table(result))
        console.print("[bold]3/3[/] scoring against the exact ground truth ...")
        gt_points = read_points(scene_dir / "ground_truth" / "points.ply")
        metrics = mesh_metrics(read_ply(result.outputs["mesh"]), gt_points, (0.02, 0.05))
        grid = grid_metrics(read_nav2_map(result.outputs["grid"]),
                            read_nav2_map(scene_dir / "ground_truth" / "map.yaml"))
        esdf = read_esdf(result.outputs["esdf"]) if "esdf" in result.outputs else None
    except ReconError as exc:
        raise _fail(str(exc)) from exc
    table = Table(title="demo: map vs ground truth")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.as_rows():
        table.add_row(k, v)
    for k, v in vars(grid).items():
        table.add_row(f"2D grid {k}", f"{v:.4f}")
    console.print(table)
    console.print(f"outputs in {map_dir}: " + ", ".join(p.name for p in result.outputs.values()))
    if esdf is not None:
        console.print(
            f"distance field {result.outputs['esdf'].name}: {esdf.num_voxels} observed voxels "
            f"({int(esdf.obstacle.sum())} obstacle), slice {esdf.slice.width}x"
            f"{esdf.slice.height} cells at z = {esdf.slice.height_m:.2f} m")
    console.print(f"done in {time.perf_counter() - start:.1f} s")


# ---------------------------------------------------------------------------------- bench
@app.command()
def bench(
    voxel_sizes_cm: Annotated[str, typer.Option(help="Comma-separated voxel sizes, cm.")] = "2,4,5",
    frames_dir: Annotated[Optional[Path], typer.Option(
        help="3DMatch-style frame folder (default: ../shared/data/3dmatch-seq01 if present, "
             "else synthetic frames).")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Integrations per voxel size.")] = 30,
    device: Annotated[str, typer.Option(
        help="torch device (cpu, cuda:0); Open3D's grid runs on the same device (on CUDA only "
             "if the open3d build has CUDA, else the output says so).")] = "cpu",
    compile: Annotated[bool, typer.Option(help="Also time the torch.compile'd kernel.")] = True,
    growth_frames: Annotated[int, typer.Option(help="Synthetic frames for the map-growth run.")]
    = 120,
    esdf: Annotated[bool, typer.Option(
        help="Also time the distance field at 5 cm (carving, update, recompute, queries).")]
    = True,
    latent: Annotated[bool, typer.Option(
        help="Also time latent fusion against TSDF fusion (10 frames, 320x240).")] = True,
    render: Annotated[bool, typer.Option(
        help="Also time 640x480 renders of the demo room mapped at 5 cm.")] = True,
    poisson: Annotated[bool, typer.Option(
        help="Also time screened Poisson against marching cubes on that map.")] = True,
    rgb: Annotated[bool, typer.Option(
        help="Also time color-only mapping: plane-sweep stereo per keyframe, Atlas (average "
        "and context) per fragment and per keyframe (16 images, 128x96).")] = True,
) -> None:
    """Integration speed vs Open3D's VoxelBlockGrid on the same frames, in one process; the
    cost of the distance field (ESDF); latent fusion against TSDF fusion; renders; Poisson
    against marching cubes; color-only mapping per keyframe."""
    from .bench import run_benchmarks

    try:
        run_benchmarks(console, [float(v) / 100 for v in voxel_sizes_cm.split(",")], frames_dir,
                       repeats, device, compile, growth_frames, esdf, latent=latent,
                       render=render, poisson=poisson, rgb=rgb)
    except ReconError as exc:
        raise _fail(str(exc)) from exc


# ----------------------------------------------------------------------------------- play
@app.command()
def play(
    bag: Annotated[Path, typer.Argument(help="rosbag2: folder, .db3 or .mcap.")],
    rate: Annotated[float, typer.Option(min=0.01, help="Playback speed factor.")] = 1.0,
    clock_hz: Annotated[float, typer.Option(min=0.0, help="/clock rate (0: none).")] = 100.0,
    loop: Annotated[bool, typer.Option(help="Start over at the end.")] = False,
    topics: Annotated[Optional[list[str]], typer.Option("--topic", help="Only these topics.")]
    = None,
) -> None:
    """Publish a rosbag2's messages on their topics with /clock (needs rclpy)."""
    try:
        from .ros.bag_player import play as play_bag
    except ImportError as exc:
        raise _fail(f"`play` needs ROS 2 (rclpy): {exc}") from exc
    try:
        code = play_bag(bag, rate=rate, clock_hz=clock_hz, loop=loop, topics=topics)
    except ReconError as exc:
        raise _fail(str(exc)) from exc
    raise typer.Exit(code=code)


# ---------------------------------------------------------------------------------- train
train_app = typer.Typer(no_args_is_help=True, help="Train the learned models.")
app.add_typer(train_app, name="train")


@train_app.command("latent-fusion")
def train_latent_fusion(
    out: Annotated[Path, typer.Option("--out", help="Output folder (checkpoint, weights, "
                                      "loss.png).")] = Path("out/train/latent_fusion_small"),
    preset: Annotated[str, typer.Option(help="small (2 CPU cores) or full (GPU).")] = "small",
    sequences: Annotated[Optional[int], typer.Option(min=1, help="Override the number of "
                                                     "training sequences.")] = None,
    time_limit_min: Annotated[Optional[float], typer.Option(
        help="Stop after this much training time (all resumed runs together).")] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    device: Annotated[Optional[str], typer.Option()] = None,
    threads: Annotated[Optional[int], typer.Option(min=1)] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoint.pt.")] = True,
    ship: Annotated[bool, typer.Option(help="Copy the final weights into the package "
                                       "(recon_ros/models/weights/).")] = False,
) -> None:
    """Train latent fusion (NeuralFusion) on generated synthetic rooms; seeded, resumable."""
    import shutil

    from .models.checkpoint import DEFAULT_WEIGHTS
    from .models.train import preset as make_preset
    from .models.train import train

    try:
        cfg = make_preset(preset, sequences=sequences, seed=seed, device=device,
                          threads=threads,
                          time_limit_s=None if time_limit_min is None else 60 * time_limit_min)
        result = train(cfg, out, resume=resume, log=lambda line: print(line, flush=True))
    except ReconError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"{result.sequences_done}/{cfg.sequences} sequences in "
                  f"{result.wall_s / 60:.1f} min; weights: {result.weights}; curves: "
                  f"{result.out_dir / 'loss.png'}")
    if ship and result.weights is not None:
        shutil.copyfile(result.weights, DEFAULT_WEIGHTS)
        console.print(f"shipped as {DEFAULT_WEIGHTS}")


# ---------------------------------------------------------------------------- eval-fusion
@app.command("eval-fusion")
def eval_fusion(
    out_md: Annotated[Path, typer.Option(help="Markdown report.")]
    = Path("docs/latent_fusion_eval.md"),
    json_out: Annotated[Optional[Path], typer.Option(help="Also write all numbers as JSON.")]
    = Path("out/eval_fusion/results.json"),
    scenes: Annotated[int, typer.Option(min=1, help="Held-out rooms.")] = 3,
    frames: Annotated[int, typer.Option(min=2, help="Frames per room.")] = 40,
    width: Annotated[int, typer.Option(min=16)] = 160,
    height: Annotated[int, typer.Option(min=16)] = 120,
    weights: Annotated[str, typer.Option(help='Latent weights ("" = shipped).')] = "",
    real: Annotated[bool, typer.Option(help="Also run ../shared/data/3dmatch-seq01.")] = True,
    threads: Annotated[int, typer.Option(min=1)] = 2,
) -> None:
    """TSDF fusion vs latent fusion on identical noisy inputs: held-out synthetic rooms x
    (sigma x outliers), and real frames."""
    import dataclasses
    import sys

    import torch

    from .models.evaluate import EvalConfig, evaluate

    torch.set_num_threads(threads)
    cfg = EvalConfig(scenes=scenes, frames=frames, width=width, height=height, weights=weights)
    if not real:
        cfg = dataclasses.replace(cfg, real_frames=None)
    command = " ".join(["recon-ros", *sys.argv[1:]])
    try:
        _, _, checks = evaluate(cfg, out_md, json_out, command,
                                log=lambda line: print(line, flush=True))
    except ReconError as exc:
        raise _fail(str(exc)) from exc
    table = Table(title="latent fusion goals")
    table.add_column("goal")
    table.add_column("met")
    table.add_column("measured")
    for name, ok, text in checks:
        table.add_row(name, "yes" if ok else "no", text)
    console.print(table)
    console.print(f"report: {out_md}")


@app.command("eval-fusion-unbiased")
def eval_fusion_unbiased(
    out_md: Annotated[Path, typer.Option(help="Markdown report.")]
    = Path("docs/latent_fusion_eval2.md"),
    json_out: Annotated[Optional[Path], typer.Option(help="All numbers as JSON.")]
    = Path("out/eval_fusion2/results.json"),
    csv_out: Annotated[Optional[Path], typer.Option(help="One row per run and method.")]
    = Path("out/eval_fusion2/results.csv"),
    conditions: Annotated[str, typer.Option(
        help="Comma-separated: indist, kinect, flying, rects, vga, voxel4, voxel8, rooms.")]
    = "indist,kinect,flying,rects,vga,voxel4,voxel8,rooms",
    scenes: Annotated[int, typer.Option(min=1, help="Sequences per in-distribution condition.")]
    = 2,
    ood_scenes: Annotated[int, typer.Option(min=1, help="Sequences per OOD condition.")] = 1,
    frames: Annotated[int, typer.Option(min=2, help="Frames per sequence.")] = 40,
    width: Annotated[int, typer.Option(min=16)] = 160,
    height: Annotated[int, typer.Option(min=16)] = 120,
    sigmas: Annotated[str, typer.Option(help="Comma-separated multiplicative sigmas.")]
    = "0.005,0.01,0.05",
    outliers: Annotated[str, typer.Option(help="Comma-separated outlier fractions.")]
    = "0,0.05,0.1",
    weights: Annotated[str, typer.Option(help='Latent weights ("" = shipped).')] = "",
    compare: Annotated[Optional[list[str]], typer.Option(
        metavar="NAME=WEIGHTS", help="Also score these latent weights, as method latent:NAME "
        "with goal rows of their own, on the same runs (repeatable).")] = None,
    threads: Annotated[int, typer.Option(min=1)] = 1,
) -> None:
    """Latent fusion vs TSDF fusion and outlier-aware classical baselines (speckle filter,
    weight threshold), scored against the true SDF and each method's own noise-free and
    outlier-free runs over voxels observed from free space, per condition."""
    import sys

    import torch

    from .models.evaluate_fusion import FusionEvalConfig, parse_compare, run_evaluation

    torch.set_num_threads(threads)
    try:
        cfg = FusionEvalConfig(
            scenes=scenes, ood_scenes=ood_scenes, frames=frames, width=width, height=height,
            sigmas=tuple(float(x) for x in sigmas.split(",") if x.strip()),
            outliers=tuple(float(x) for x in outliers.split(",") if x.strip()),
            conditions=tuple(c.strip() for c in conditions.split(",") if c.strip()),
            weights=weights, compare=parse_compare(compare or []))
        cfg.condition_list()
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    command = " ".join(["recon-ros", *sys.argv[1:]])
    try:
        _, checks = run_evaluation(cfg, out_md, json_out, csv_out, command,
                                   log=lambda line: print(line, flush=True))
    except ReconError as exc:
        raise _fail(str(exc)) from exc
    table = Table(title="latent fusion goals (unbiased evaluation)")
    for col in ("goal", "met", "measured"):
        table.add_column(col)
    for name, ok, text in checks:
        table.add_row(name, "yes" if ok else "no", text)
    console.print(table)
    console.print(f"report: {out_md}")


@app.command("eval-rgb")
def eval_rgb(
    rooms: Annotated[int, typer.Option(
        min=1, help="Held-out synthetic rooms of the fragment protocol (one fragment each).")]
    = 8,
    map_rooms: Annotated[int, typer.Option(
        min=0, help="Held-out rooms mapped whole through Mapper (one loop of the room scan "
        "each); 0 = none.")] = 2,
    frames: Annotated[int, typer.Option(min=2, help="Poses per room scan (map rooms).")] = 48,
    real: Annotated[bool, typer.Option(
        "--3dmatch/--no-3dmatch", help="Also map the color frames of --frames-dir, scored "
        "against its depth.")] = True,
    frames_dir: Annotated[Path, typer.Option(help="RGB-D frame folder (3DMatch layout).")]
    = Path("../shared/data/3dmatch-seq01"),
    json_out: Annotated[Optional[Path], typer.Option(
        "--json", help="Also write every number (per room, per map) as JSON.")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads.")] = 1,
) -> None:
    """Color-only mapping scored: Atlas (average / context view fusion) against plane-sweep
    stereo -> TSDF, with depth TSDF fusion as the ceiling. Three parts: single fragments of
    held-out rooms (models.evaluate_rgb), whole maps of held-out rooms through Mapper
    (fusion.method rgb / stereo / tsdf), and the color frames of a real RGB-D folder against
    its own depth (out of distribution for the synthetic-trained network). Accuracy,
    completeness, F-score at 5 cm and the fraction of true obstacle cells the 2D grid marks
    free, per room and per map (means shown too)."""
    import dataclasses

    import torch

    from .models.evaluate_rgb import METHODS, RgbEvalConfig, evaluate_rgb, summary
    from .models.evaluate_rgb_maps import (MAP_METHODS, MapEvalConfig, evaluate_frame_folder,
                                           evaluate_rooms, map_summary)

    torch.set_num_threads(threads)

    def log(line: str) -> None:
        print(line, flush=True)

    fcfg = RgbEvalConfig(fragments=rooms)
    mcfg = MapEvalConfig(rooms=map_rooms, frames=frames)
    try:
        fragments, geometry = evaluate_rgb(fcfg, log)
        maps = evaluate_rooms(mcfg, log) if map_rooms else []
        if real:
            maps.append(evaluate_frame_folder(frames_dir, mcfg, log))
    except (ReconError, ValueError) as exc:
        raise _fail(str(exc)) from exc

    table = Table(title=f"fragments ({geometry.fragment_dims} voxels of "
                        f"{100 * geometry.voxel_size_m:g} cm, {geometry.views} views "
                        f"{geometry.width}x{geometry.height}): F@5cm / obstacles marked free")
    table.add_column("room")
    for m in METHODS:
        table.add_column(m, justify="right")
    for r in fragments:
        table.add_row(str(r.scene_seed), *(f"{r.metrics[m].fscore[0.05]:.3f} / "
                                           f"{r.marked_free[m]:.3f}" for m in METHODS))
    frag_means = summary(fragments, fcfg.thresholds_m)
    table.add_row("mean", *(f"{frag_means[m]['fscore@5']:.3f} / "
                            f"{frag_means[m]['marked_free']:.3f}" for m in METHODS))
    console.print(table)
    if maps:
        table = Table(title="whole maps: F@5cm / acc cm / comp cm / obstacles marked free / "
                            "grid coverage / ms per keyframe")
        table.add_column("map")
        for m in MAP_METHODS:
            table.add_column(m, justify="right")
        for r in maps:
            table.add_row(r.name, *(
                f"{s.metrics.fscore[0.05]:.3f} / {100 * s.metrics.accuracy_m:.1f} / "
                f"{100 * s.metrics.completeness_m:.1f} / {s.marked_free:.3f} / "
                f"{s.coverage:.2f} / {s.ms_per_keyframe:.0f}"
                for s in (r.scores[m] for m in MAP_METHODS)))
        console.print(table)
    if json_out is not None:
        def scores(metrics) -> dict:
            return dataclasses.asdict(metrics)

        synthetic = [r for r in maps if r.name.startswith("room")]
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({
            "fragments": {
                "summary": frag_means, "geometry": geometry.to_dict(),
                "rooms": [{"scene_seed": r.scene_seed, "gt_points": r.gt_points,
                           "seconds": r.seconds, "marked_free": r.marked_free,
                           "metrics": {m: scores(x) for m, x in r.metrics.items()}}
                          for r in fragments]},
            "maps": {
                "config": dataclasses.asdict(mcfg),
                "summary_synthetic": map_summary(synthetic, mcfg.thresholds_m)
                if synthetic else {},
                "maps": [{"name": r.name, "gt_points": r.gt_points, "scores": {
                    m: {**scores(s.metrics), "marked_free": s.marked_free,
                        "coverage": s.coverage,
                        "seconds": s.seconds, "keyframes": s.keyframes,
                        "ms_per_keyframe": s.ms_per_keyframe}
                    for m, s in r.scores.items()}} for r in maps]}},
            indent=1, default=str))
        console.print(f"json: {json_out}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
