"""Classical multi-view plane-sweep stereo: depth maps from posed color images.

The reference view's depth is found by sweeping fronto-parallel planes (constant z in the
reference optical frame) through a range of depths sampled uniformly in inverse depth. For each
hypothesis every source image is warped into the reference view (back-project the reference
pixels at that depth, project them into the source, ``grid_sample``), compared with the
reference by windowed zero-mean normalised cross-correlation (ZNCC), and the per-view costs
``1 - ZNCC`` are aggregated over the best ``best_k`` views. Winner-take-all over hypotheses, a
parabola fit in inverse depth for sub-hypothesis precision, then invalidation of pixels that are
textureless, ambiguous (a second cost minimum nearly as good), poorly matched, out of view, or
not confirmed by enough source views individually.

Conventions (see :mod:`recon_ros.core.frame`): optical frames x right, y down, z forward; depth
is z in metres, 0 = no estimate; ``T_world_cam`` maps camera points into the world; pixel
centres sit at integer coordinates. All tensors live on the stereo object's device; there is no
loop over pixels, only over hypothesis chunks and source views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError, FrameError
from .frame import PinholeCamera, check_pose

#: ITU-R BT.601 luma weights of RGB.
LUMA_RGB = (0.299, 0.587, 0.114)
#: Largest number of (hypothesis x pixel) elements processed at once per source view; bounds
#: the memory of one chunk to a few tens of MB whatever the image size.
CHUNK_ELEMENTS = 1 << 20
#: Cost given to a hypothesis no source view sees: worse than any ZNCC cost (at most 2).
NO_VIEW_COST = 4.0

ImageLike = np.ndarray | torch.Tensor
#: One source view: (image, intrinsics, T_world_src (4, 4) pose of its optical frame).
SourceView = tuple[ImageLike, PinholeCamera, np.ndarray]


@dataclass(frozen=True)
class PlaneSweepConfig:
    """Settings of :class:`PlaneSweepStereo`; defaults suit the synthetic rooms at 640x480.

    Attributes:
        min_depth_m: nearest depth hypothesis, metres (> 0).
        max_depth_m: farthest depth hypothesis, metres (> ``min_depth_m``).
        num_depths: number of hypotheses, uniform in inverse depth between the two (>= 3).
            Depths estimated at the first or last hypothesis are discarded (the true surface
            may lie outside the range).
        window_radius_px: the ZNCC window is ``2 r + 1`` pixels square, at the compute scale.
        image_scale: images are resampled by this factor (0, 1] before matching (area
            averaging); the depth map is computed at that size and returned at full size.
        num_sources: the most source views used (the first ones given); extra are ignored.
        best_k: the cost of a hypothesis is the mean of its ``best_k`` lowest per-view costs
            (views that do not see it excluded); ``best_k < num_sources`` tolerates views in
            which the pixel is occluded.
        min_score: smallest aggregated ZNCC (``1 - cost``, in [-1, 1]) of an accepted depth.
        uniqueness_ratio: an accepted depth's cost must be at most this times the cost of the
            best other local minimum over the hypotheses (more than one hypothesis away);
            in (0, 1], smaller = stricter (rejects repetitive texture and edges parallel to
            the epipolar lines).
        min_texture_std: smallest standard deviation of the reference grey values (in [0, 1])
            inside the window; flatter windows are textureless and get no estimate.
        consistency_steps: a source view confirms a depth when its own best hypothesis (its
            single-view winner) lies within this many hypotheses of the aggregated winner and
            its own best ZNCC reaches ``min_score``.
        min_consistent_views: number of source views that must confirm a depth (capped at the
            number of sources given, so a single source works for two-view stereo).
    """

    min_depth_m: float = 0.5
    max_depth_m: float = 10.0
    num_depths: int = 96
    window_radius_px: int = 4
    image_scale: float = 0.5
    num_sources: int = 4
    best_k: int = 2
    min_score: float = 0.6
    uniqueness_ratio: float = 0.8
    min_texture_std: float = 0.01
    consistency_steps: int = 1
    min_consistent_views: int = 2

    def __post_init__(self) -> None:
        _require(math.isfinite(self.min_depth_m) and self.min_depth_m > 0, "min_depth_m",
                 "must be a finite number > 0 m", self.min_depth_m)
        _require(math.isfinite(self.max_depth_m) and self.max_depth_m > self.min_depth_m,
                 "max_depth_m", f"must be finite and > min_depth_m = {self.min_depth_m}",
                 self.max_depth_m)
        _require(_is_int(self.num_depths) and self.num_depths >= 3, "num_depths",
                 "must be an integer >= 3", self.num_depths)
        _require(_is_int(self.window_radius_px) and 1 <= self.window_radius_px <= 15,
                 "window_radius_px", "must be an integer in [1, 15]", self.window_radius_px)
        _require(math.isfinite(self.image_scale) and 0 < self.image_scale <= 1, "image_scale",
                 "must be in (0, 1]", self.image_scale)
        _require(_is_int(self.num_sources) and self.num_sources >= 1, "num_sources",
                 "must be an integer >= 1", self.num_sources)
        _require(_is_int(self.best_k) and 1 <= self.best_k <= self.num_sources, "best_k",
                 f"must be an integer in [1, num_sources = {self.num_sources}]", self.best_k)
        _require(-1 <= self.min_score < 1, "min_score", "must be in [-1, 1)", self.min_score)
        _require(0 < self.uniqueness_ratio <= 1, "uniqueness_ratio", "must be in (0, 1]",
                 self.uniqueness_ratio)
        _require(0 <= self.min_texture_std < 0.5, "min_texture_std", "must be in [0, 0.5)",
                 self.min_texture_std)
        _require(_is_int(self.consistency_steps) and self.consistency_steps >= 0,
                 "consistency_steps", "must be an integer >= 0", self.consistency_steps)
        _require(_is_int(self.min_consistent_views)
                 and 1 <= self.min_consistent_views <= self.num_sources,
                 "min_consistent_views",
                 f"must be an integer in [1, num_sources = {self.num_sources}]",
                 self.min_consistent_views)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _require(cond: bool, name: str, reason: str, value: Any) -> None:
    if not cond:
        raise ConfigError(f"plane_sweep.{name}={value!r} is invalid: {reason}")


def to_gray(image: ImageLike, device: torch.device | str) -> torch.Tensor:
    """Grey values of an image as a (1, 1, H, W) float32 tensor in [0, 1] on ``device``.

    Args:
        image: (H, W, 3) RGB or (H, W) grey; uint8 (0..255) or floating point (0..1).
    """
    img = torch.as_tensor(image).to(device)
    if img.ndim == 3 and img.shape[2] == 3:
        scale = 1.0 / 255.0 if img.dtype == torch.uint8 else 1.0
        weights = torch.tensor(LUMA_RGB, dtype=torch.float32, device=img.device) * scale
        gray = img.to(torch.float32) @ weights
    elif img.ndim == 2:
        gray = img.to(torch.float32) / (255.0 if img.dtype == torch.uint8 else 1.0)
    else:
        raise FrameError(f"image must be (H, W, 3) RGB or (H, W) grey, got shape "
                         f"{tuple(img.shape)}")
    return gray[None, None]


def scale_camera(camera: PinholeCamera, width: int, height: int) -> PinholeCamera:
    """Intrinsics of ``camera``'s image resampled to ``width`` x ``height`` pixels.

    Pixel centres are at integers, so a pixel's edge ``u + 1/2`` scales: ``u' + 1/2 = s (u +
    1/2)`` with ``s = width / camera.width`` (and likewise in v).
    """
    sx, sy = width / camera.width, height / camera.height
    K = np.array([[camera.fx * sx, 0.0, (camera.cx + 0.5) * sx - 0.5],
                  [0.0, camera.fy * sy, (camera.cy + 0.5) * sy - 0.5],
                  [0.0, 0.0, 1.0]])
    return PinholeCamera(K=K, width=width, height=height)


def box_sum(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Sum over the ``(2 radius + 1)``-pixel square window of every pixel of (..., H, W)
    ``x``, pixels outside the image counting as 0 (two cumulative sums: cost independent of
    the radius, several times faster than ``avg_pool2d`` on CPU)."""
    k = 2 * radius + 1
    c = F.pad(x, (radius + 1, radius, radius + 1, radius)).cumsum(-1)
    c = (c[..., k:] - c[..., :-k]).cumsum(-2)
    return c[..., k:, :] - c[..., :-k, :]


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the ``(2 radius + 1)``-pixel square window of every pixel of (..., H, W)
    ``x``; windows are cut at the image border (only pixels inside are averaged)."""
    return box_sum(x, radius) * _inverse_window_count(x.shape[-2:], radius, x)


def _inverse_window_count(size: Sequence[int], radius: int, like: torch.Tensor
                          ) -> torch.Tensor:
    """(H, W) reciprocal of the number of in-image pixels of every pixel's window."""
    return 1.0 / box_sum(torch.ones(tuple(size), dtype=like.dtype, device=like.device), radius)


@dataclass
class _View:
    """One image prepared for matching, at the compute scale.

    Attributes:
        gray: (1, 1, h, w) grey values minus 0.5 (in [-0.5, 0.5]: centred, so that window
            sums keep float32 precision; ZNCC ignores the offset).
        camera: intrinsics of ``gray``.
        T_world_cam: (4, 4) float64 pose of its optical frame.
    """

    gray: torch.Tensor
    camera: PinholeCamera
    T_world_cam: np.ndarray


@dataclass
class _WindowStats:
    """Window statistics of the reference image, each (h, w).

    Attributes:
        inv_count: reciprocal of the number of in-image pixels of each window.
        mean: window mean of the (centred) grey values.
        var: window variance of the grey values.
    """

    inv_count: torch.Tensor
    mean: torch.Tensor
    var: torch.Tensor


class PlaneSweepStereo:
    """Depth of a reference image from posed source images by plane sweeping (see module doc).

    Args:
        config: matching and filtering settings.
        device: torch device for all computation and the returned maps.
    """

    def __init__(self, config: PlaneSweepConfig = PlaneSweepConfig(),
                 device: torch.device | str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)

    def inverse_depths(self) -> torch.Tensor:
        """(D,) float32 inverse depths of the hypotheses, 1/m, from ``1 / min_depth_m``
        decreasing uniformly to ``1 / max_depth_m``."""
        c = self.config
        return torch.linspace(1.0 / c.min_depth_m, 1.0 / c.max_depth_m, c.num_depths,
                              dtype=torch.float64, device=self.device).to(torch.float32)

    def _prepare(self, image: ImageLike, camera: PinholeCamera, T_world_cam: np.ndarray,
                 what: str) -> _View:
        """Grey, resampled to the compute scale, with its intrinsics; checks sizes and pose."""
        gray = to_gray(image, self.device)
        h, w = gray.shape[-2:]
        if (h, w) != (camera.height, camera.width):
            raise FrameError(f"{what} image is {w}x{h} but its camera model is "
                             f"{camera.width}x{camera.height}")
        T, _ = check_pose(f"T_world_{what}", T_world_cam)
        s = self.config.image_scale
        hs, ws = max(1, round(h * s)), max(1, round(w * s))
        if (hs, ws) != (h, w):
            gray = F.interpolate(gray, size=(hs, ws), mode="area")
            camera = scale_camera(camera, ws, hs)
        return _View(gray - 0.5, camera, T)

    @torch.no_grad()
    def depth(self, ref_image: ImageLike, ref_camera: PinholeCamera, T_world_ref: np.ndarray,
              sources: Sequence[SourceView]) -> tuple[torch.Tensor, torch.Tensor]:
        """Depth map of the reference view.

        Args:
            ref_image: (H, W, 3) RGB or (H, W) grey reference image; uint8 or float in [0, 1].
            ref_camera: intrinsics of ``ref_image``.
            T_world_ref: (4, 4) pose of the reference optical frame in the world, metres.
            sources: ``(image, camera, T_world_src)`` per source view (at least one; only the
                first ``num_sources`` are used); images may differ in size from the reference.

        Returns:
            ``(depth, confidence)``, both (H, W) float32 on the stereo device: z-depth in the
            reference optical frame, metres, 0 where there is no estimate; and the aggregated
            ZNCC score of the estimate clipped to [0, 1] (0 where there is no estimate).
            Computed at ``image_scale`` and enlarged to (H, W) by nearest-neighbour.

        Raises:
            FrameError: no source view, an image not matching its camera, or a bad pose.
        """
        if not sources:
            raise FrameError("plane-sweep stereo needs at least one source view")
        c = self.config
        ref = self._prepare(ref_image, ref_camera, T_world_ref, "ref")
        views = [self._prepare(img, cam, T, f"src{i}")
                 for i, (img, cam, T) in enumerate(sources[:c.num_sources])]
        depth, score = self._sweep(ref, views)
        if depth.shape != (ref_camera.height, ref_camera.width):
            size = (ref_camera.height, ref_camera.width)
            both = F.interpolate(torch.stack((depth, score))[None], size=size,
                                 mode="nearest-exact")[0]
            depth, score = both[0], both[1]
        return depth.contiguous(), score.contiguous()

    def _sweep(self, ref: _View, views: list[_View]) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, w) depth (0 = none) and score at the compute scale of ``ref``."""
        c = self.config
        r = c.window_radius_px
        h, w = ref.gray.shape[-2:]
        inv = self.inverse_depths()
        n_views, n_depths = len(views), c.num_depths
        inv_count = _inverse_window_count((h, w), r, ref.gray)
        mean, sq = (box_sum(torch.cat((ref.gray, ref.gray * ref.gray), dim=1), r)
                    * inv_count)[0]
        stats = _WindowStats(inv_count, mean, (sq - mean * mean).clamp_min(0.0))
        rays = self._rays(ref.camera)  # (3, h*w), z = 1
        warps = [self._warp_terms(ref.T_world_cam, v, rays) for v in views]

        cost = torch.empty(n_depths, h, w, device=self.device)
        view_best = torch.full((n_views, h, w), math.inf, device=self.device)
        view_arg = torch.zeros((n_views, h, w), dtype=torch.long, device=self.device)
        chunk = max(1, CHUNK_ELEMENTS // (h * w))
        for d0 in range(0, n_depths, chunk):
            inv_c = inv[d0:d0 + chunk]
            costs = [self._view_cost(ref.gray, stats, v, a, t, inv_c)
                     for v, (a, t) in zip(views, warps)]  # S x (Dc, h, w)
            for s, view_cost in enumerate(costs):
                chunk_best, chunk_arg = view_cost.min(dim=0)
                better = chunk_best < view_best[s]
                view_best[s] = torch.where(better, chunk_best, view_best[s])
                view_arg[s] = torch.where(better, chunk_arg + d0, view_arg[s])
            cost[d0:d0 + inv_c.numel()] = self._aggregate(costs)

        best, arg = cost.min(dim=0)  # (h, w)
        offset = self._parabola_offset(cost, arg, best)
        step = (inv[-1] - inv[0]) / (n_depths - 1)
        depth = 1.0 / (inv[0] + (arg.to(torch.float32) + offset) * step)

        max_cost = 1.0 - c.min_score
        agree = (((view_arg - arg).abs() <= c.consistency_steps) & (view_best <= max_cost))
        valid = ((stats.var >= c.min_texture_std ** 2)
                 & (arg > 0) & (arg < n_depths - 1)
                 & (best <= max_cost)
                 & (best <= c.uniqueness_ratio * self._second_minimum(cost, arg))
                 & (agree.sum(dim=0) >= min(c.min_consistent_views, n_views)))
        depth = torch.where(valid, depth, torch.zeros_like(depth))
        score = torch.where(valid, (1.0 - best).clamp(0.0, 1.0), torch.zeros_like(best))
        return depth, score

    def _rays(self, camera: PinholeCamera) -> torch.Tensor:
        """(3, h*w) float32 optical-frame rays ``((u - cx)/fx, (v - cy)/fy, 1)`` of every pixel
        centre, row-major."""
        uv = camera.pixel_grid(self.device, torch.float32).reshape(-1, 2)
        return camera.backproject(uv, torch.ones_like(uv[:, 0])).T.contiguous()

    def _warp_terms(self, T_world_ref: np.ndarray, view: _View, rays: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, t)`` such that the reference pixel ray at depth z lands at ``z a + t`` in the
        source optical frame: (3, h*w) ``a = R_src_ref rays`` and (3, 1) ``t = t_src_ref``,
        metres."""
        T_src_ref = np.linalg.inv(view.T_world_cam) @ T_world_ref
        R = torch.as_tensor(T_src_ref[:3, :3], dtype=torch.float32, device=self.device)
        t = torch.as_tensor(T_src_ref[:3, 3:], dtype=torch.float32, device=self.device)
        return R @ rays, t

    def _view_cost(self, ref_gray: torch.Tensor, stats: _WindowStats, view: _View,
                   a: torch.Tensor, t: torch.Tensor, inv: torch.Tensor) -> torch.Tensor:
        """(Dc, h, w) ZNCC cost ``1 - ZNCC`` in [0, 2] of one source view for the inverse
        depths ``inv`` (Dc,); ``inf`` where the pixel's window does not land inside the source
        image (or the point is behind the source camera).

        Args:
            ref_gray: (1, 1, h, w) centred reference grey values.
            stats: the reference's window statistics.
            a, t: the view's warp terms (:meth:`_warp_terms`).
        """
        r = self.config.window_radius_px
        h, w = ref_gray.shape[-2:]
        cam = view.camera
        hs, ws = view.gray.shape[-2:]
        p = a[None] / inv[:, None, None] + t[None]  # (Dc, 3, h*w) in the source frame
        z = p[:, 2]
        safe_z = torch.where(z > 1e-6, z, torch.ones_like(z))
        u = p[:, 0] / safe_z * cam.fx + cam.cx
        v = p[:, 1] / safe_z * cam.fy + cam.cy
        inside = ((z > 1e-6) & (u >= r) & (u <= ws - 1 - r) & (v >= r) & (v <= hs - 1 - r))
        grid = torch.stack((u * (2.0 / max(ws - 1, 1)) - 1.0, v * (2.0 / max(hs - 1, 1)) - 1.0),
                           dim=-1)
        n = inv.numel()
        warped = F.grid_sample(view.gray, grid.view(1, n * h, w, 2), mode="bilinear",
                               padding_mode="border", align_corners=True).view(n, 1, h, w)
        sums = box_sum(torch.cat((warped, warped * warped, warped * ref_gray), dim=1), r)
        mean_s, sq_s, cross = (sums * stats.inv_count).unbind(dim=1)  # (Dc, h, w) each
        var_s = (sq_s - mean_s * mean_s).clamp_min_(0.0)
        zncc = (cross - stats.mean * mean_s) * torch.rsqrt(stats.var * var_s + 1e-12)
        cost = 1.0 - zncc.clamp_(-1.0, 1.0)
        return cost.masked_fill_(~inside.view(n, h, w), math.inf)

    def _aggregate(self, costs: list[torch.Tensor]) -> torch.Tensor:
        """S per-view (Dc, h, w) costs (inf = not seen) -> (Dc, h, w) mean of the ``best_k``
        lowest finite ones per hypothesis; :data:`NO_VIEW_COST` where no view sees it.

        The ``best_k`` lowest are found by ``best_k`` bubble passes of element-wise
        min/max (for a handful of views much faster than ``topk`` over a stacked tensor)."""
        vals = list(costs)
        k = min(self.config.best_k, len(vals))
        for i in range(k):
            for j in range(len(vals) - 1, i, -1):
                vals[j - 1], vals[j] = (torch.minimum(vals[j - 1], vals[j]),
                                        torch.maximum(vals[j - 1], vals[j]))
        total = torch.zeros_like(vals[0])
        n_seen = torch.zeros_like(vals[0])
        for low in vals[:k]:
            seen = torch.isfinite(low)
            total += torch.where(seen, low, 0.0)
            n_seen += seen
        return torch.where(n_seen > 0, total / n_seen.clamp_min(1.0), NO_VIEW_COST)

    @staticmethod
    def _parabola_offset(cost: torch.Tensor, arg: torch.Tensor, best: torch.Tensor
                         ) -> torch.Tensor:
        """(h, w) sub-hypothesis offset in [-0.5, 0.5] of the vertex of the parabola through
        the costs at ``arg - 1, arg, arg + 1`` ((D, h, w) ``cost``, (h, w) ``arg`` and its
        ``best`` cost); 0 at the ends of the range and where the costs are flat."""
        d = cost.shape[0]
        mid = arg.clamp(1, d - 2)
        prev = cost.gather(0, (mid - 1)[None])[0]
        nxt = cost.gather(0, (mid + 1)[None])[0]
        curv = prev - 2.0 * best + nxt
        offset = 0.5 * (prev - nxt) / torch.where(curv > 0, curv, torch.ones_like(curv))
        keep = (curv > 0) & (arg == mid)
        return torch.where(keep, offset.clamp(-0.5, 0.5), torch.zeros_like(offset))

    @staticmethod
    def _second_minimum(cost: torch.Tensor, arg: torch.Tensor) -> torch.Tensor:
        """(h, w) lowest cost among the local minima over hypotheses of (D, h, w) ``cost``
        lying more than one hypothesis away from ``arg``; ``inf`` where there is none."""
        pad = F.pad(cost[None, None], (0, 0, 0, 0, 1, 1), value=math.inf)[0, 0]
        local_min = (cost <= pad[:-2]) & (cost <= pad[2:])
        idx = torch.arange(cost.shape[0], device=cost.device)[:, None, None]
        local_min &= (idx - arg[None]).abs() > 1
        return torch.where(local_min, cost, torch.full_like(cost, math.inf)).min(dim=0).values
