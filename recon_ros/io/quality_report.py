"""Writing the per-frame map quality of a replay (``Mapper.frame_agreement``): a CSV with
every figure and a PNG plot of how much of each frame the map already explained."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..core.atomic_file import atomic_path
from ..core.map_quality import FrameAgreement

#: CSV columns, in order.
COLUMNS = ("frame", "stamp_ns", "mean_abs_error_m", "inlier_ratio", "explained", "unknown",
           "pixels")


@dataclass(frozen=True)
class QualitySample:
    """The agreement of the map with frame number ``frame`` (0-based, in integration order,
    measured before the frame was fused)."""

    frame: int
    stamp_ns: int
    agreement: FrameAgreement


def write_quality_csv(path: str | Path, samples: list[QualitySample]) -> None:
    """One row per sample (:data:`COLUMNS`), written atomically."""
    with atomic_path(Path(path)) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for s in samples:
            a = s.agreement
            writer.writerow((s.frame, s.stamp_ns, f"{a.mean_abs_error_m:.5f}",
                             f"{a.inlier_ratio:.4f}", f"{a.explained:.4f}",
                             f"{a.unknown:.4f}", a.pixels))


def render_quality_plot(samples: list[QualitySample], size: tuple[int, int] = (640, 240)
                        ) -> np.ndarray:
    """(H, W, 3) uint8 BGR chart over the frame number: the share of each frame the map
    explained (green), the inlier ratio where both had depth (blue), the share unknown
    (grey); the y axis is 0..1."""
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 40, 10, 20, 25
    x0, x1, y0, y1 = left, w - right, top, h - bottom
    for frac in (0.0, 0.5, 1.0):
        y = int(round(y1 - frac * (y1 - y0)))
        cv2.line(img, (x0, y), (x1, y), (220, 220, 220), 1)
        cv2.putText(img, f"{frac:.1f}", (4, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
    frames = np.array([s.frame for s in samples], dtype=np.float64)
    span = max(frames.max() - frames.min(), 1.0) if frames.size else 1.0
    series = (("explained", (40, 160, 40)), ("inlier_ratio", (200, 80, 0)),
              ("unknown", (150, 150, 150)))
    for i, (name, colour) in enumerate(series):
        values = np.array([getattr(s.agreement, name) for s in samples], dtype=np.float64)
        ok = np.isfinite(values)
        xs = x0 + (frames[ok] - (frames.min() if frames.size else 0)) / span * (x1 - x0)
        ys = y1 - np.clip(values[ok], 0, 1) * (y1 - y0)
        points = np.stack((xs, ys), axis=1).round().astype(np.int32)
        if len(points) > 1:
            cv2.polylines(img, [points], False, colour, 2)
        for p in points:
            cv2.circle(img, tuple(int(c) for c in p), 2, colour, -1)
        cv2.putText(img, name, (x0 + 5 + 110 * i, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1)
    last = int(frames.max()) if frames.size else 0
    cv2.putText(img, f"frame 0 .. {last}", (x0, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                (0, 0, 0), 1)
    return img


def write_quality_plot(path: str | Path, samples: list[QualitySample]) -> None:
    """:func:`render_quality_plot` as a PNG, written atomically."""
    with atomic_path(Path(path)) as tmp:
        if not cv2.imwrite(str(tmp), render_quality_plot(samples)):
            raise OSError(f"cannot write {path}")
