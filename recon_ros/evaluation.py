"""Quality metrics (design.md section 6), ROS-free.

Mesh vs ground truth (Atlas / NeuralRecon protocol): points sampled by area on the predicted
mesh; *accuracy* = mean distance prediction -> ground truth, *completeness* = mean distance
ground truth -> prediction, precision / recall / F-score at distance thresholds.

Occupancy grids: IoU of occupied cells and the rate of ground-truth obstacles marked free.

Dynamic scenes: what remains of removed objects (surface within a threshold of the mesh,
footprint cells still occupied), recall of added objects, F-score of the rest.

Nearest neighbours use Open3D's KD-tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .core.mesh import TriangleMesh
from .core.occupancy_grid import FREE, OCCUPIED, UNKNOWN, OccupancyGrid2D


def sample_mesh_points(mesh: TriangleMesh, n: int, seed: int = 0) -> np.ndarray:
    """(n, 3) points uniformly distributed by area on the mesh surface."""
    if mesh.num_faces == 0:
        return np.zeros((0, 3), np.float64)
    tri = mesh.vertices[mesh.faces].astype(np.float64)  # (M, 3, 3)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if area.sum() <= 0:
        return np.zeros((0, 3), np.float64)
    rng = np.random.default_rng(seed)
    face = rng.choice(len(area), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    a, b, c = (1 - s), s * (1 - r2), s * r2
    t = tri[face]
    return a[:, None] * t[:, 0] + b[:, None] * t[:, 1] + c[:, None] * t[:, 2]


def nearest_distances(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(N,) distance from each ``src`` point to its nearest ``dst`` point (inf if dst empty)."""
    if len(dst) == 0:
        return np.full(len(src), np.inf)
    if len(src) == 0:
        return np.zeros(0)
    import open3d as o3d

    a = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(src, np.float64)))
    b = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(dst, np.float64)))
    return np.asarray(a.compute_point_cloud_distance(b))


@dataclass
class MeshMetrics:
    """Accuracy / completeness in metres; precision, recall, F-score per threshold (metres)."""

    accuracy_m: float
    completeness_m: float
    precision: dict[float, float] = field(default_factory=dict)
    recall: dict[float, float] = field(default_factory=dict)
    fscore: dict[float, float] = field(default_factory=dict)
    n_pred: int = 0
    n_gt: int = 0

    def as_rows(self) -> list[tuple[str, str]]:
        rows = [("accuracy m", f"{self.accuracy_m:.4f}"),
                ("completeness m", f"{self.completeness_m:.4f}")]
        for t in sorted(self.fscore):
            cm = f"{t * 100:g} cm"
            rows += [(f"precision @ {cm}", f"{self.precision[t]:.4f}"),
                     (f"recall @ {cm}", f"{self.recall[t]:.4f}"),
                     (f"F-score @ {cm}", f"{self.fscore[t]:.4f}")]
        return rows


def point_metrics(pred: np.ndarray, gt: np.ndarray, thresholds_m: tuple[float, ...]
                  ) -> MeshMetrics:
    """Metrics between predicted surface samples (N, 3) and ground-truth samples (M, 3)."""
    d_pred = nearest_distances(pred, gt)
    d_gt = nearest_distances(gt, pred)
    m = MeshMetrics(float(d_pred.mean()) if len(d_pred) else float("inf"),
                    float(d_gt.mean()) if len(d_gt) else float("inf"),
                    n_pred=len(pred), n_gt=len(gt))
    for t in thresholds_m:
        p = float((d_pred < t).mean()) if len(d_pred) else 0.0
        r = float((d_gt < t).mean()) if len(d_gt) else 0.0
        m.precision[t], m.recall[t] = p, r
        m.fscore[t] = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return m


def mesh_metrics(mesh: TriangleMesh, gt_points: np.ndarray,
                 thresholds_m: tuple[float, ...] = (0.02, 0.05), n_samples: int = 100_000,
                 crop_margin_m: float | None = 0.1, seed: int = 0) -> MeshMetrics:
    """Compare a mesh with ground-truth surface points.

    Args:
        mesh: predicted mesh.
        gt_points: (M, 3) points on the true surface (e.g. the observed part of it).
        thresholds_m: distance thresholds for precision / recall / F-score.
        n_samples: points sampled on the predicted mesh.
        crop_margin_m: keep only predicted samples inside the ground truth's bounding box
            grown by this margin (the observed region); None disables cropping.
        seed: sampling seed.
    """
    pred = sample_mesh_points(mesh, n_samples, seed)
    if crop_margin_m is not None and len(gt_points):
        lo = gt_points.min(0) - crop_margin_m
        hi = gt_points.max(0) + crop_margin_m
        pred = pred[((pred >= lo) & (pred <= hi)).all(1)]
    return point_metrics(pred, gt_points, thresholds_m)


@dataclass
class GridMetrics:
    """2D occupancy agreement over the ground-truth grid's known cells."""

    occupied_iou: float
    obstacles_marked_free: float  # fraction of true obstacle cells the map calls free
    free_marked_occupied: float  # fraction of true free cells the map calls occupied
    coverage: float  # fraction of true cells the map knows (free or occupied)


def grid_metrics(pred: OccupancyGrid2D, gt: OccupancyGrid2D) -> GridMetrics:
    """Compare ``pred`` with ``gt`` at the centres of ``gt``'s cells."""
    rows, cols = np.nonzero(gt.data != UNKNOWN)
    x = gt.origin_xy[0] + (cols + 0.5) * gt.resolution_m
    y = gt.origin_xy[1] + (rows + 0.5) * gt.resolution_m
    r, c = pred.cell_of(x, y)
    inside = (r >= 0) & (r < pred.height) & (c >= 0) & (c < pred.width)
    p = np.full(len(rows), UNKNOWN, np.int8)
    p[inside] = pred.data[r[inside], c[inside]]
    g = gt.data[rows, cols]
    occ_p, occ_g = p == OCCUPIED, g == OCCUPIED
    union = (occ_p | occ_g).sum()
    return GridMetrics(
        occupied_iou=float((occ_p & occ_g).sum() / union) if union else 1.0,
        obstacles_marked_free=float((occ_g & (p == FREE)).sum() / max(occ_g.sum(), 1)),
        free_marked_occupied=float(((g == FREE) & occ_p).sum() / max((g == FREE).sum(), 1)),
        coverage=float((p != UNKNOWN).mean()) if len(p) else 0.0,
    )


def fraction_within(points: np.ndarray, reference: np.ndarray, threshold_m: float) -> float:
    """Fraction of ``points`` (N, 3) that have a ``reference`` point (M, 3) closer than
    ``threshold_m`` metres; NaN when there are no points."""
    if len(points) == 0:
        return float("nan")
    return float((nearest_distances(points, reference) < threshold_m).mean())


def mesh_surface_points(mesh: TriangleMesh, n_samples: int = 100_000, seed: int = 0
                        ) -> np.ndarray:
    """(V + n_samples, 3) float64 points on a mesh: its vertices and area samples (an empty
    array for a mesh without faces)."""
    if mesh.num_faces == 0:
        return np.zeros((0, 3), np.float64)
    return np.concatenate((mesh.vertices.astype(np.float64),
                           sample_mesh_points(mesh, n_samples, seed)))


@dataclass
class DynamicMetrics:
    """How a map handled objects that disappeared or appeared (design.md section 6).

    Attributes:
        removed_surface_kept: fraction of the removed objects' ground-truth surface points
            that still have mesh within ``threshold_m`` (goal: a few percent at most).
        removed_footprint_occupied: fraction of the removed objects' footprint cells (those
            seen free after the removal) that the grid still marks occupied (goal: a few
            percent at most).
        added_surface_recall: fraction of the added objects' surface points with mesh within
            ``threshold_m`` (goal: close to 1).
        static_fscore: F-score at ``threshold_m`` of the mesh against the final scene's
            surface (:func:`mesh_metrics`, cropped to the observed region).
        threshold_m: the distance threshold, metres.
        n_removed_points, n_footprint_cells, n_added_points: sizes of the ground-truth sets
            (a fraction over an empty set is NaN).
        static: the full mesh metrics of the static comparison.
    """

    removed_surface_kept: float
    removed_footprint_occupied: float
    added_surface_recall: float
    static_fscore: float
    threshold_m: float
    n_removed_points: int
    n_footprint_cells: int
    n_added_points: int
    static: MeshMetrics

    def as_rows(self) -> list[tuple[str, str]]:
        cm = f"{self.threshold_m * 100:g} cm"
        return [(f"removed surface kept @ {cm}", f"{self.removed_surface_kept:.4f}"),
                ("removed footprint still occupied", f"{self.removed_footprint_occupied:.4f}"),
                (f"added surface recall @ {cm}", f"{self.added_surface_recall:.4f}"),
                (f"static F-score @ {cm}", f"{self.static_fscore:.4f}")]


def dynamic_metrics(mesh: TriangleMesh, grid: OccupancyGrid2D, removed_surface: np.ndarray,
                    removed_footprint_xy: np.ndarray, added_surface: np.ndarray,
                    static_gt: np.ndarray, threshold_m: float = 0.05,
                    n_samples: int = 100_000, seed: int = 0) -> DynamicMetrics:
    """Score a map of a scene whose objects changed between passes.

    Args:
        mesh: the map's mesh (map frame).
        grid: the map's 2D occupancy grid.
        removed_surface: (N, 3) points on the removed objects' surface (e.g.
            ``ground_truth/removed_surface.ply`` of ``recon-ros synth --scene dynamic``).
        removed_footprint_xy: (K, 2) map-frame centres of their footprint cells seen free
            after the removal, metres (``removed_footprint_seen_free.ply``).
        added_surface: (M, 3) points on the added objects' surface (``added_surface.ply``).
        static_gt: (P, 3) points on the final scene's surface (``points.ply``).
        threshold_m: distance threshold, metres.
        n_samples: points sampled on the mesh (added to its vertices for the surface checks).
        seed: sampling seed.
    """
    on_mesh = mesh_surface_points(mesh, n_samples, seed)
    xy = np.asarray(removed_footprint_xy, dtype=np.float64).reshape(-1, 2)
    cells = grid.value_at(xy[:, 0], xy[:, 1])
    static = mesh_metrics(mesh, static_gt, (threshold_m,), n_samples=n_samples, seed=seed)
    return DynamicMetrics(
        removed_surface_kept=fraction_within(removed_surface, on_mesh, threshold_m),
        removed_footprint_occupied=float((cells == OCCUPIED).mean()) if len(xy) else float("nan"),
        added_surface_recall=fraction_within(added_surface, on_mesh, threshold_m),
        static_fscore=static.fscore[threshold_m],
        threshold_m=float(threshold_m), n_removed_points=len(removed_surface),
        n_footprint_cells=len(xy), n_added_points=len(added_surface), static=static)
