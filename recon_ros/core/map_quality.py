"""How well the map explains a new depth image: render the map at the image's pose before the
image is fused and compare (issue 12, "map quality").

A robot operator wants to know, frame by frame, whether the map agrees with what the sensor
sees now: a map that explains most of each new frame is converged there; a drop means new
ground, a moved object, or a pose error. :func:`frame_agreement` renders the TSDF at the
frame's pose (``recon_ros.core.render``, on a strided pixel grid to bound the cost) and
compares depths pixel by pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .frame import PinholeCamera
from .render import RayStatus, RenderOptions, render
from .volume import BlockVolume

__all__ = ["FrameAgreement", "frame_agreement"]


@dataclass(frozen=True)
class FrameAgreement:
    """Rendered map depth against one measured depth image (strided pixels).

    Attributes:
        mean_abs_error_m: mean ``|rendered - measured|`` over pixels where both have a depth,
            metres (NaN when there are none).
        inlier_ratio: share of those pixels whose depths agree within ``inlier_m``.
        explained: share of the measured pixels (valid readings) that the map renders within
            ``inlier_m``: how much of the frame the map already explains.
        unknown: share of the measured pixels whose ray crossed only unobserved space.
        pixels: measured pixels compared (after striding).
    """

    mean_abs_error_m: float
    inlier_ratio: float
    explained: float
    unknown: float
    pixels: int


def frame_agreement(volume: BlockVolume, depth: torch.Tensor, camera: PinholeCamera,
                    T_world_cam: np.ndarray | torch.Tensor, *, min_depth_m: float,
                    max_depth_m: float, inlier_m: float = 0.05, stride: int = 4,
                    options: RenderOptions | None = None) -> FrameAgreement:
    """Compare ``volume`` rendered at a frame's pose with the frame's depth.

    Args:
        volume: the map (before the frame is fused).
        depth: (H, W) measured z-depth, metres (0, NaN, Inf or outside
            ``[min_depth_m, max_depth_m]`` = no reading); any device.
        camera: its intrinsics.
        T_world_cam: (4, 4) pose of its optical frame in the map frame.
        min_depth_m, max_depth_m: the valid reading range, metres.
        inlier_m: agreement threshold, metres.
        stride: compare every ``stride``-th pixel in both directions (the render costs about
            ``1 / stride**2`` of a full one).
        options: marcher options (default: :class:`RenderOptions` up to ``max_depth_m``).

    Returns:
        the :class:`FrameAgreement` (read on the host: one synchronisation per call).
    """
    opt = options or RenderOptions(max_depth_m=max_depth_m, min_depth_m=min_depth_m)
    measured = depth[::stride, ::stride].to(volume.device, torch.float32)
    result = render(volume, camera.strided(stride), T_world_cam, opt)
    valid = (measured >= min_depth_m) & (measured <= max_depth_m)
    hit = result.status == RayStatus.HIT
    both = valid & hit
    err = (result.depth - measured).abs()
    close = both & (err <= inlier_m)
    counts = torch.stack((valid.sum(), both.sum(), close.sum(),
                          (valid & (result.status == RayStatus.UNKNOWN)).sum())).tolist()
    n_valid, n_both, n_close, n_unknown = counts
    mae = float(torch.where(both, err, 0.0).sum()) / n_both if n_both else float("nan")
    return FrameAgreement(
        mean_abs_error_m=mae,
        inlier_ratio=n_close / n_both if n_both else float("nan"),
        explained=n_close / n_valid if n_valid else float("nan"),
        unknown=n_unknown / n_valid if n_valid else float("nan"),
        pixels=int(n_valid))
