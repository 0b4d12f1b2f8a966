"""Atlas-style TSDF regression from posed RGB images (Murez et al. 2020), with the
context-aware view fusion of Pix2Vox (Xie et al. 2019) as an option.

Pipeline for one *fragment* (an axis-aligned box of voxels around the current keyframes,
:class:`Fragment`):

1. :class:`FeatureNet2D`: a small 2D CNN (trained from scratch) maps each ``(H, W)`` RGB view to
   ``C`` features per pixel at 1/``feature_stride`` resolution (stride 4 or 2).
2. :func:`backproject`: every voxel centre is projected into each view; the feature map is
   sampled bilinearly there, so one view's features are copied along the pixel rays through
   the whole box (voxels in front of the camera and inside the image only).
3. :class:`ViewFusion`: the per-view volumes are fused online, view by view (keyframes stream
   in): ``average`` keeps the running mean over the views that saw a voxel (Atlas);
   ``context`` weights the views by a softmax across views of a per-view, per-voxel score
   from a small 3D score head (Pix2Vox), kept online with a running log-sum-exp. Both keep the
   weighted first and second moments of the features, so the 3D network sees their (weighted)
   variance across views, a photo-consistency cue, besides their mean.
3b. :class:`MatchingFusion` (deviation from Atlas, which relies on a pretrained backbone
   instead): an explicit geometric matching cue from the raw full-resolution images. Every
   view contributes, per voxel, the grey-level patch (``(2 r + 1)**2`` pixels at a dilation)
   around the voxel's projection, zero-mean and scaled to unit RMS (:func:`patch_vectors`,
   read bilinearly from the per-pixel vectors, :func:`patch_vector_image`); running sums of these vectors give, exactly and in any view order,
   the mean pairwise ZNCC across all views that saw the voxel (the voxel-space analogue of the
   plane-sweep cost), one channel per patch dilation, fed to the 3D network next to the fused
   features. The context score head also sees each new view's mean ZNCC with the views fused
   before it.
4. :class:`EncoderDecoder3D`: a 3D encoder-decoder over the fused volume with three heads at
   4x, 2x and 1x the voxel size, each predicting a TSDF (``tanh``; 1 = the level's truncation,
   ``truncation_voxels`` voxels *of that level*) and an occupancy logit. Coarse to fine: a
   voxel whose coarser level predicts ``|tsdf| >= mask_threshold`` is far from any surface and
   is not refined (it takes the coarse sign, saturated); see :func:`coarse_to_fine`.

Frames and units: world == map frame (z up), metres; camera poses ``T_world_cam`` (4, 4) of the
optical frame (x right, y down, z forward); pixel ``(u, v)`` centres at integers. A voxel
``(i, j, k)`` of a fragment has the global index ``origin_index + (i, j, k)`` and its centre at
``global index * voxel_size_m`` (the convention of :class:`~recon_ros.core.volume.BlockVolume`).
Dense volumes are ``(..., X, Y, Z)`` tensors indexed ``[i, j, k]``. Everything runs on the
device of the model's parameters (no device is hard-coded).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as nnf

from ..core.config import check_known_keys
from ..core.errors import ConfigError, ReconError
from ..core.frame import PinholeCamera
from .checkpoint import load_model, save_weights

#: Coarsening factors of the three output levels, coarsest first.
LEVEL_SCALES = (4, 2, 1)
#: Default feature-map stride of :class:`FeatureNet2D` (image pixels per feature pixel; v2
#: models use ``AtlasConfig.feature_stride`` 2). Images must be a multiple of it.
FEATURE_STRIDE = 4
VIEW_FUSIONS = ("average", "context")
#: Current weight-file format. v2 added the matching cue and the 2D feature stride to the config.
WEIGHTS_FORMAT = "recon_ros.atlas.weights.v2"
#: The first format (no matching cue, feature stride 4); still readable by :func:`load_atlas`.
WEIGHTS_FORMAT_V1 = "recon_ros.atlas.weights.v1"
#: Config values a v1 file implies for fields it predates.
_V1_DEFAULTS = {"feature_stride": 4, "matching_dilations": []}
#: ``eps`` of :func:`patch_vectors` (intensity**2 in [0, 1] units): patches with an RMS contrast
#: well below 1e-3 shrink towards 0 instead of amplifying noise.
PATCH_EPS = 1.0e-6
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: Log-sum-exp of a voxel no view has seen yet (finite, so gradients never meet ``-inf - -inf``).
_EMPTY_LSE = -1.0e4


@dataclass(frozen=True)
class AtlasConfig:
    """Architecture of an Atlas model (stored with its weights).

    Attributes:
        feature_channels: ``C``, 2D features per pixel (and per back-projected voxel).
        image_hidden: hidden channels of the 2D CNN (doubled after its second stride).
        volume_channels: channels of the 3D encoder-decoder at 1x, 2x and 4x the voxel size.
        score_hidden: hidden channels of the context-fusion score head.
        view_fusion: ``average`` (running mean) or ``context`` (softmax-weighted, Pix2Vox).
        truncation_voxels: TSDF scale at every level, in voxels of that level.
        mask_threshold: a coarse ``|tsdf|`` at or above this masks the finer levels below it.
        feature_stride: image pixels per 2D feature pixel, 4 or 2.
        matching_radius: ``r`` of the ``(2 r + 1)**2``-pixel patches of the matching cue.
        matching_dilations: pixel spacing of the patch taps, one cue channel each; empty = no
            matching cue (the v1 model).
    """

    feature_channels: int = 12
    image_hidden: int = 16
    volume_channels: tuple[int, int, int] = (16, 24, 32)
    score_hidden: int = 8
    view_fusion: str = "average"
    truncation_voxels: float = 3.0
    mask_threshold: float = 0.99
    feature_stride: int = 4
    matching_radius: int = 3
    matching_dilations: tuple[int, ...] = (1, 2)

    def __post_init__(self) -> None:
        for name in ("feature_channels", "image_hidden", "score_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"atlas.{name}={value!r} is invalid: must be an int >= 1")
        vc = tuple(self.volume_channels)
        if len(vc) != 3 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1
                                for c in vc):
            raise ConfigError(f"atlas.volume_channels={self.volume_channels!r} is invalid: "
                              "must be three ints >= 1")
        object.__setattr__(self, "volume_channels", vc)
        if self.view_fusion not in VIEW_FUSIONS:
            raise ConfigError(f"atlas.view_fusion={self.view_fusion!r} is invalid: expected "
                              f"one of {VIEW_FUSIONS}")
        if not 1.0 <= self.truncation_voxels <= 16.0:
            raise ConfigError(f"atlas.truncation_voxels={self.truncation_voxels!r} is invalid: "
                              "must be in [1, 16]")
        if self.feature_stride not in (2, 4):
            raise ConfigError(f"atlas.feature_stride={self.feature_stride!r} is invalid: must "
                              "be 2 or 4")
        if isinstance(self.matching_radius, bool) or not isinstance(self.matching_radius, int) \
                or not 1 <= self.matching_radius <= 8:
            raise ConfigError(f"atlas.matching_radius={self.matching_radius!r} is invalid: "
                              "must be an int in [1, 8]")
        md = tuple(self.matching_dilations)
        if any(isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= 8 for d in md):
            raise ConfigError(f"atlas.matching_dilations={self.matching_dilations!r} is "
                              "invalid: must be ints in [1, 8]")
        object.__setattr__(self, "matching_dilations", md)
        if not 0.0 < self.mask_threshold <= 1.0:
            raise ConfigError(f"atlas.mask_threshold={self.mask_threshold!r} is invalid: must "
                              "be in (0, 1]")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["volume_channels"] = list(self.volume_channels)
        d["matching_dilations"] = list(self.matching_dilations)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AtlasConfig":
        check_known_keys(cls, data, "atlas")
        d = dict(data)
        for name in ("volume_channels", "matching_dilations"):
            if name in d:
                d[name] = tuple(d[name])
        return cls(**d)


@dataclass(frozen=True)
class Fragment:
    """An axis-aligned box of voxels.

    Attributes:
        origin_index: global voxel index (3 ints) of voxel ``(0, 0, 0)``.
        dims: ``(X, Y, Z)`` voxels, each a multiple of 4 (the coarsest level's factor).
        voxel_size_m: voxel edge, metres.
    """

    origin_index: tuple[int, int, int]
    dims: tuple[int, int, int]
    voxel_size_m: float

    def __post_init__(self) -> None:
        if len(self.dims) != 3 or any(d < 4 or d % LEVEL_SCALES[0] for d in self.dims):
            raise ConfigError(f"fragment dims {self.dims} must be three multiples of "
                              f"{LEVEL_SCALES[0]}")
        if not self.voxel_size_m > 0:
            raise ConfigError(f"fragment voxel size must be > 0, got {self.voxel_size_m}")
        object.__setattr__(self, "origin_index", tuple(int(i) for i in self.origin_index))
        object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))

    @property
    def num_voxels(self) -> int:
        return self.dims[0] * self.dims[1] * self.dims[2]

    def voxel_indices(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(X, Y, Z, 3) int64 global voxel indices."""
        axes = [torch.arange(d, device=device) + o for d, o in zip(self.dims, self.origin_index)]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)

    def centres(self, scale: int = 1, device: torch.device | str = "cpu") -> torch.Tensor:
        """(X / s, Y / s, Z / s, 3) float32 world centres of the voxels of the level
        coarsened ``s = scale`` times (a coarse voxel is an ``s**3`` block of voxels; its
        centre is the block's centre), metres."""
        axes = [(torch.arange(d // scale, device=device, dtype=torch.float64) * scale
                 + (scale - 1) / 2.0 + o) * self.voxel_size_m
                for d, o in zip(self.dims, self.origin_index)]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).to(torch.float32)

    def bounds_m(self) -> tuple[np.ndarray, np.ndarray]:
        """World ``(lo, hi)`` corners (3,) of the box spanned by the voxel centres, metres."""
        lo = np.asarray(self.origin_index, np.float64) * self.voxel_size_m
        return lo, lo + (np.asarray(self.dims) - 1) * self.voxel_size_m

    @classmethod
    def in_front_of(cls, poses: list[np.ndarray], dims: tuple[int, int, int],
                    voxel_size_m: float, ahead_m: float, floor_index: int,
                    offset_m: tuple[float, float] = (0.0, 0.0)) -> "Fragment":
        """The box centred (in x, y) on the mean of the points ``ahead_m`` in front of each
        camera along its horizontal viewing direction (plus ``offset_m``), with its lowest
        voxel layer at global z index ``floor_index``; aligned to the global voxel grid."""
        pts = []
        for T in poses:
            fwd = np.asarray(T, np.float64)[:3, 2].copy()
            fwd[2] = 0.0
            norm = np.linalg.norm(fwd)
            fwd = fwd / norm if norm > 1e-9 else fwd
            pts.append(np.asarray(T, np.float64)[:3, 3] + ahead_m * fwd)
        centre = np.mean(pts, axis=0)[:2] + np.asarray(offset_m, np.float64)
        lo = np.round(centre / voxel_size_m - (np.asarray(dims[:2]) - 1) / 2.0).astype(int)
        return cls((int(lo[0]), int(lo[1]), int(floor_index)), dims, voxel_size_m)


def _conv2d(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Module:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation)


def _conv3d(c_in: int, c_out: int, stride: int = 1) -> nn.Module:
    return nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1)


class FeatureNet2D(nn.Module):
    """``(V, 3, H, W)`` RGB in [0, 1] -> ``(V, C, H / s, W / s)`` features (H, W multiples of
    4; ``s = stride``, 4 or 2). Feature pixel ``(x, y)`` is centred on image pixel
    ``(s x, s y)`` (stride-2 convolutions with 3x3 kernels and padding 1; with ``s = 2`` the
    second one has stride 1).

    Args:
        feature_channels: ``C``.
        hidden: channels after the first stride (doubled after the third layer).
        stride: ``s``.
    """

    def __init__(self, feature_channels: int, hidden: int, stride: int = FEATURE_STRIDE
                 ) -> None:
        super().__init__()
        h2 = 2 * hidden
        self.stride = stride
        self.net = nn.Sequential(
            _conv2d(3, hidden, stride=2), nn.ReLU(), _conv2d(hidden, hidden), nn.ReLU(),
            _conv2d(hidden, h2, stride=stride // 2), nn.ReLU(), _conv2d(h2, h2), nn.ReLU(),
            _conv2d(h2, h2, dilation=2), nn.ReLU(), nn.Conv2d(h2, feature_channels, 1))

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.net(rgb - 0.5)


def project_points(centres: torch.Tensor, camera: PinholeCamera, T_world_cam: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3) world points -> (N, 2) full-resolution pixel coordinates ``(u, v)`` and (N,)
    z-depth in the view ``T_world_cam`` (4, 4)."""
    T = T_world_cam.to(centres.device, torch.float32)
    p_cam = (centres.reshape(-1, 3) - T[:3, 3]) @ T[:3, :3]  # R^T (p - t)
    return camera.project(p_cam)


def backproject(features: torch.Tensor, centres: torch.Tensor, camera: PinholeCamera,
                T_world_cam: torch.Tensor, min_depth_m: float = 0.05,
                stride: int = FEATURE_STRIDE,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample one view's feature map at the projections of voxel centres.

    Args:
        features: (C, Hf, Wf) feature map with stride ``stride`` of an image of
            ``camera``'s size.
        centres: (..., 3) world points, metres.
        camera: intrinsics of the full-resolution image.
        T_world_cam: (4, 4) pose of the optical frame in the world.
        min_depth_m: points closer than this (or behind the camera) are invalid.
        stride: image pixels per feature pixel.

    Returns:
        ``(values, valid, depth)``: (..., C) bilinearly sampled features (0 where invalid),
        (...) bool valid (in front of the camera and projecting within half a feature pixel
        of the feature map), (...) z-depth in the view, metres.
    """
    c, hf, wf = features.shape
    shape = centres.shape[:-1]
    uv, z = project_points(centres, camera, T_world_cam)
    uf = uv / stride
    valid = ((z > min_depth_m) & (uf[:, 0] >= -0.5) & (uf[:, 0] <= wf - 0.5)
             & (uf[:, 1] >= -0.5) & (uf[:, 1] <= hf - 0.5))
    uf = torch.where(valid[:, None], uf, torch.zeros_like(uf))
    grid = torch.stack((2.0 * uf[:, 0] / max(wf - 1, 1) - 1.0,
                        2.0 * uf[:, 1] / max(hf - 1, 1) - 1.0), dim=-1)
    sampled = nnf.grid_sample(features[None], grid[None, None], mode="bilinear",
                              padding_mode="border", align_corners=True)[0, :, 0].T
    values = sampled * valid[:, None].to(sampled.dtype)
    return values.reshape(*shape, c), valid.reshape(shape), z.reshape(shape)


def patch_offsets(radius: int, dilation: int = 1) -> torch.Tensor:
    """((2 r + 1)**2, 2) pixel offsets ``(du, dv)`` of a square patch, ``dilation`` pixels
    apart, row-major (``dv`` slowest)."""
    r = torch.arange(-radius, radius + 1, dtype=torch.float32) * dilation
    dv, du = torch.meshgrid(r, r, indexing="ij")
    return torch.stack((du.reshape(-1), dv.reshape(-1)), dim=-1)


def patch_vectors(patches: torch.Tensor, eps: float = PATCH_EPS) -> torch.Tensor:
    """(N, K, P) patches -> (N, D = K P) ZNCC vectors: each channel minus its patch mean, the
    whole vector divided by ``sqrt(mean square + eps)``. So ``a . b / D`` is the zero-mean
    normalised cross-correlation of two patches (exactly, as ``eps -> 0``; a patch of RMS
    contrast ``sigma`` has ``|v|**2 = D sigma**2 / (sigma**2 + eps)``)."""
    z = patches - patches.mean(dim=2, keepdim=True)
    z = z.reshape(z.shape[0], -1)
    return z / torch.sqrt(z.square().mean(dim=1, keepdim=True) + eps)


def zncc(a: torch.Tensor, b: torch.Tensor, eps: float = PATCH_EPS) -> torch.Tensor:
    """(N,) ZNCC of (N, K, P) patches ``a`` and ``b`` (the convention of
    :func:`patch_vectors`)."""
    va, vb = patch_vectors(a, eps), patch_vectors(b, eps)
    return (va * vb).sum(dim=1) / va.shape[1]


def patch_vector_image(image: torch.Tensor, radius: int, dilation: int = 1,
                       eps: float = PATCH_EPS) -> torch.Tensor:
    """(K, H, W) image -> (D = K P, H, W): at every pixel the :func:`patch_vectors` of its
    patch (taps ``pixel + offset`` in :func:`patch_offsets` order, channel slowest), the
    image extended by repeating its border pixels."""
    k, h, w = image.shape
    pad = radius * dilation
    padded = nnf.pad(image[None], (pad, pad, pad, pad), mode="replicate")
    taps = nnf.unfold(padded, 2 * radius + 1, dilation=dilation)  # (1, K P, H W)
    vec = patch_vectors(taps[0].T.reshape(h * w, k, -1), eps)
    return vec.T.reshape(-1, h, w)


def sample_vectors(vectors: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """(D, H, W) per-pixel vectors read bilinearly at (N, 2) full-resolution pixel positions
    ``(u, v)`` (pixel centres at integers; clamped to the image). Returns (N, D)."""
    _, h, w = vectors.shape
    grid = torch.stack((2.0 * uv[:, 0] / max(w - 1, 1) - 1.0,
                        2.0 * uv[:, 1] / max(h - 1, 1) - 1.0), dim=-1)
    return nnf.grid_sample(vectors[None], grid[None, None], mode="bilinear",
                           padding_mode="border", align_corners=True)[0, :, 0].T


class MatchingFusion:
    """The explicit matching cue, online over views (deviation from Atlas).

    A view contributes to a voxel it sees the vector ``v_i`` of its patch around the voxel's
    projection: :func:`patch_vector_image` (the ZNCC vector of the patch centred on every
    pixel) read bilinearly there (:func:`sample_vectors`; exactly the patch's
    :func:`patch_vectors` when the projection falls on a pixel centre). For each patch
    dilation and voxel the state is the number ``n`` of views that saw the voxel, the sum
    ``S`` of their vectors and the sum ``Q`` of ``|v_i|**2``. Since
    ``|S|**2 = Q + 2 sum_{i<j} v_i . v_j``, the mean pairwise ZNCC over all pairs of those
    views is ``(|S|**2 - Q) / (D n (n - 1))`` whatever the view order (0 where ``n < 2``).
    The state is updated in place and carries no gradient (a function of the images only).

    Args:
        num_voxels: ``N``.
        dims: ``D`` per dilation (patch channels x taps).
        device: torch device of the state.
    """

    def __init__(self, num_voxels: int, dims: list[int], device: torch.device | str) -> None:
        self.count = torch.zeros(num_voxels, device=device)
        self.sums = [torch.zeros(num_voxels, d, device=device) for d in dims]
        self.squares = [torch.zeros(num_voxels, device=device) for _ in dims]

    @property
    def channels(self) -> int:
        """Channels of :meth:`fused`: one mean ZNCC per dilation, plus ``n >= 2``."""
        return len(self.sums) + 1

    @torch.no_grad()
    def add(self, vectors: list[torch.Tensor], index: torch.Tensor) -> torch.Tensor:
        """Fuse one view: per dilation (M, D) vectors of the M voxels ``index`` (M,) it sees.
        Returns (N, dilations): this view's mean ZNCC with each view fused before it, at those
        voxels (0 elsewhere and where no view came before)."""
        agree = self.count.new_zeros(self.count.shape[0], len(vectors))
        prev = self.count[index]
        for i, vec in enumerate(vectors):
            dots = (vec * self.sums[i][index]).sum(dim=1)
            agree[index, i] = torch.where(prev > 0, dots / (vec.shape[1] * prev.clamp(min=1)),
                                          0.0)
            self.sums[i].index_add_(0, index, vec)
            self.squares[i].index_add_(0, index, vec.square().sum(dim=1))
        self.count[index] += 1.0
        return agree

    @torch.no_grad()
    def mean_zncc(self) -> torch.Tensor:
        """(N, dilations) mean pairwise ZNCC over the views that saw each voxel (0 if < 2)."""
        n = self.count
        pairs = (n * (n - 1.0)).clamp(min=1.0)
        cols = [torch.where(n >= 2, (s.square().sum(dim=1) - q) / (s.shape[1] * pairs), 0.0)
                for s, q in zip(self.sums, self.squares)]
        return torch.stack(cols, dim=1)

    @torch.no_grad()
    def fused(self) -> torch.Tensor:
        """(N, dilations + 1): :meth:`mean_zncc` and ``n >= 2`` (0 / 1)."""
        return torch.cat((self.mean_zncc(), (self.count >= 2).to(self.count.dtype)[:, None]),
                         dim=1)


class ScoreHead3D(nn.Module):
    """Pix2Vox context score: ``(1, C + 1 + M, X, Y, Z)`` one view's back-projected features,
    validity and ``M`` matching channels (its mean ZNCC with the views before it, one per
    dilation) -> ``(X, Y, Z)`` score (the log of its unnormalised fusion weight).

    Args:
        feature_channels: ``C``.
        hidden: hidden channels.
        matching_channels: ``M``.
    """

    def __init__(self, feature_channels: int, hidden: int, matching_channels: int = 0
                 ) -> None:
        super().__init__()
        self.net = nn.Sequential(_conv3d(feature_channels + 1 + matching_channels, hidden),
                                 nn.ReLU(),
                                 nn.Conv3d(hidden, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0, 0]


class ViewFusion:
    """Online fusion of per-view feature volumes (any number of views, one at a time).

    State per voxel (``N`` voxels, ``C`` channels): the number of views that saw it, the
    weighted first and second feature moments ``m1 = sum_v w_v f_v``, ``m2 = sum_v w_v f_v**2``
    over those views, and (``context``) ``lse = log sum_v exp(s_v)`` of their scores.

    - ``average``: ``w_v = 1 / count`` (running mean: ``m += (f - m) / count``).
    - ``context``: ``w_v = exp(s_v - lse)``, a softmax across views; a new view rescales the
      moments by ``exp(lse_old - lse_new)`` and adds ``exp(s - lse_new) f``, which equals the
      softmax over all views seen so far (up to float rounding) whatever their order.

    Every update is out of place, so gradients flow to the features and scores of every view.

    Args:
        num_voxels: ``N``.
        channels: ``C``.
        mode: ``average`` or ``context``.
        device: torch device of the state.
    """

    def __init__(self, num_voxels: int, channels: int, mode: str,
                 device: torch.device | str) -> None:
        if mode not in VIEW_FUSIONS:
            raise ConfigError(f"view fusion {mode!r}: expected one of {VIEW_FUSIONS}")
        self.mode = mode
        self.count = torch.zeros(num_voxels, device=device)
        self.m1 = torch.zeros(num_voxels, channels, device=device)
        self.m2 = torch.zeros(num_voxels, channels, device=device)
        self.lse = torch.full((num_voxels,), _EMPTY_LSE, device=device)

    def add(self, features: torch.Tensor, valid: torch.Tensor,
            score: torch.Tensor | None = None) -> None:
        """Fuse one view: (N, C) features, (N,) bool valid, (N,) score (``context`` only)."""
        v = valid.to(features.dtype)
        self.count = self.count + v
        if self.mode == "average":
            step = (v / self.count.clamp(min=1.0))[:, None]
            self.m1 = self.m1 + step * (features - self.m1)
            self.m2 = self.m2 + step * (features.square() - self.m2)
            return
        if score is None:
            raise ReconError("context fusion needs a score per voxel")
        new_lse = torch.where(valid, torch.logaddexp(self.lse, score), self.lse)
        keep = torch.exp(self.lse - new_lse)[:, None]
        w = torch.where(valid, torch.exp(torch.where(valid, score - new_lse, 0.0)), 0.0)[:, None]
        self.m1 = keep * self.m1 + w * features
        self.m2 = keep * self.m2 + w * features.square()
        self.lse = new_lse

    def fused(self) -> torch.Tensor:
        """(N, 2C + 1): weighted mean, weighted variance (clamped >= 0) and seen (0 / 1)."""
        var = (self.m2 - self.m1.square()).clamp(min=0.0)
        return torch.cat((self.m1, var, (self.count > 0).to(self.m1.dtype)[:, None]), dim=1)


class EncoderDecoder3D(nn.Module):
    """``(1, Cin, X, Y, Z)`` -> raw ``(1, 2, X / s, Y / s, Z / s)`` outputs (TSDF
    pre-activation, occupancy logit) for ``s`` in :data:`LEVEL_SCALES`, coarsest first. Each
    finer decoder stage sees the upsampled coarser features, the skip connection of its
    encoder stage and the coarser level's (activated) prediction.

    Args:
        in_channels: ``Cin``.
        channels: ``(c1, c2, c4)`` channels at 1x, 2x, 4x.
    """

    def __init__(self, in_channels: int, channels: tuple[int, int, int]) -> None:
        super().__init__()
        c1, c2, c4 = channels
        relu = nn.ReLU
        self.enc1 = nn.Sequential(_conv3d(in_channels, c1), relu(), _conv3d(c1, c1), relu())
        self.enc2 = nn.Sequential(_conv3d(c1, c2, 2), relu(), _conv3d(c2, c2), relu())
        self.enc4 = nn.Sequential(_conv3d(c2, c4, 2), relu(), _conv3d(c4, c4), relu(),
                                  _conv3d(c4, c4), relu())
        self.dec2 = nn.Sequential(_conv3d(c4 + c2 + 2, c2), relu(), _conv3d(c2, c2), relu())
        self.dec1 = nn.Sequential(_conv3d(c2 + c1 + 2, c1), relu(), _conv3d(c1, c1), relu())
        self.heads = nn.ModuleList([nn.Conv3d(c, 2, 1) for c in (c4, c2, c1)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        d = self.enc4(e2)
        outs = [self.heads[0](d)]
        for dec, skip, head in ((self.dec2, e2, self.heads[1]), (self.dec1, e1, self.heads[2])):
            up = nnf.interpolate(d, size=skip.shape[2:], mode="trilinear", align_corners=False)
            prev = nnf.interpolate(activate(outs[-1]), size=skip.shape[2:], mode="nearest")
            d = dec(torch.cat((up, skip, prev), dim=1))
            outs.append(head(d))
        return outs


def activate(raw: torch.Tensor) -> torch.Tensor:
    """``(..., 2, X, Y, Z)`` raw head output -> TSDF ``tanh`` (channel 0) and occupancy logit."""
    return torch.cat((torch.tanh(raw[..., :1, :, :, :]), raw[..., 1:, :, :, :]), dim=-4)


@dataclass
class LevelOutput:
    """One level of a prediction (``X', Y', Z'`` = fragment dims / scale).

    Attributes:
        scale: voxels of the fragment per voxel of this level (4, 2 or 1).
        tsdf: (X', Y', Z') network TSDF in [-1, 1], units of this level's truncation.
        occupancy_logit: (X', Y', Z') occupancy logit.
        refined: (X', Y', Z') bool, voxels the coarser levels did not mask (all True at the
            coarsest level).
        tsdf_final: (X', Y', Z') ``tsdf`` where refined, else the coarse sign (+-1).
    """

    scale: int
    tsdf: torch.Tensor
    occupancy_logit: torch.Tensor
    refined: torch.Tensor
    tsdf_final: torch.Tensor


@dataclass
class AtlasOutput:
    """Prediction for one fragment.

    Attributes:
        levels: :class:`LevelOutput` per :data:`LEVEL_SCALES` entry, coarsest first.
        seen: (X, Y, Z) bool, fragment voxels inside at least one view's frustum.
        view_count: (X, Y, Z) float number of views that saw each voxel.
    """

    levels: list[LevelOutput]
    seen: torch.Tensor
    view_count: torch.Tensor

    @property
    def finest(self) -> LevelOutput:
        return self.levels[-1]


def upsample_nearest(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(X, Y, Z) -> (fX, fY, fZ): each voxel repeated ``factor`` times along every axis."""
    for dim in range(3):
        x = x.repeat_interleave(factor, dim=dim)
    return x


def coarse_to_fine(raw: list[torch.Tensor], mask_threshold: float) -> list[LevelOutput]:
    """Activate the head outputs and apply the coarse-to-fine masking.

    Args:
        raw: per level (coarsest first) ``(1, 2, X', Y', Z')`` raw outputs, each level twice
            the resolution of the previous one.
        mask_threshold: a voxel whose coarser level's final ``|tsdf|`` is at least this is
            masked (not refined) at the finer levels, which then hold the coarse sign.
    """
    levels: list[LevelOutput] = []
    for out, scale in zip(raw, LEVEL_SCALES):
        act = activate(out)[0]
        tsdf, occ = act[0], act[1]
        if not levels:
            refined = torch.ones_like(tsdf, dtype=torch.bool)
            final = tsdf
        else:
            prev = levels[-1]
            factor = prev.scale // scale
            coarse = upsample_nearest(prev.tsdf_final, factor)
            refined = upsample_nearest(prev.refined, factor) & (coarse.abs() < mask_threshold)
            final = torch.where(refined, tsdf, torch.where(coarse < 0, -1.0, 1.0))
        levels.append(LevelOutput(scale, tsdf, occ, refined, final))
    return levels


class AtlasModel(nn.Module):
    """The 2D feature network, the (optional) context score head and the 3D encoder-decoder
    of one :class:`AtlasConfig`.

    Streaming use: ``state = model.begin(fragment)``, ``model.add_views(state, ...)`` once per
    keyframe (or batch of keyframes), ``model.decode(state)``; :meth:`forward` does all three.
    """

    def __init__(self, config: AtlasConfig) -> None:
        super().__init__()
        self.config = config
        c = config.feature_channels
        m = len(config.matching_dilations)
        self.features = FeatureNet2D(c, config.image_hidden, config.feature_stride)
        self.score = ScoreHead3D(c, config.score_hidden, m) \
            if config.view_fusion == "context" else None
        self.volume = EncoderDecoder3D(2 * c + 1 + (m + 1 if m else 0), config.volume_channels)


    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def begin(self, fragment: Fragment) -> "FragmentState":
        """An empty fusion state for ``fragment``."""
        taps = (2 * self.config.matching_radius + 1) ** 2
        matching = MatchingFusion(fragment.num_voxels,
                                  [taps] * len(self.config.matching_dilations),
                                  self.device) if self.config.matching_dilations else None
        return FragmentState(fragment, ViewFusion(fragment.num_voxels,
                                                  self.config.feature_channels,
                                                  self.config.view_fusion, self.device),
                             fragment.centres(1, self.device).reshape(-1, 3), matching)

    def add_views(self, state: "FragmentState", images: torch.Tensor | np.ndarray,
                  camera: PinholeCamera, poses: list[np.ndarray]) -> None:
        """Back-project and fuse views into ``state``.

        Args:
            state: from :meth:`begin`.
            images: (V, H, W, 3) uint8 RGB (numpy or torch), H and W multiples of 4.
            camera: their intrinsics (size H x W).
            poses: V (4, 4) ``T_world_cam``.
        """
        rgb = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor)
                              else images).to(self.device)
        if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.shape[0] != len(poses):
            raise ReconError(f"images must be (V, H, W, 3) with V = {len(poses)} poses, got "
                             f"{tuple(rgb.shape)}")
        if rgb.shape[1] % FEATURE_STRIDE or rgb.shape[2] % FEATURE_STRIDE:
            raise ReconError(f"image size {rgb.shape[2]}x{rgb.shape[1]} must be a multiple of "
                             f"{FEATURE_STRIDE}")
        colour = rgb.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        feats = self.features(colour)
        dims = state.fragment.dims
        stride = self.config.feature_stride
        r = self.config.matching_radius
        for image, f, T in zip(colour, feats, poses):
            T = torch.as_tensor(np.asarray(T, np.float64))
            values, valid, _ = backproject(f, state.centres, camera, T, stride=stride)
            agree = values.new_zeros(values.shape[0], 0)
            if state.matching is not None:
                with torch.no_grad():  # a function of the images only
                    index = valid.nonzero()[:, 0]
                    uv, _ = project_points(state.centres[index], camera, T)
                    grey = image.mean(dim=0, keepdim=True)
                    vectors = [sample_vectors(patch_vector_image(grey, r, d), uv)
                               for d in self.config.matching_dilations]
                    agree = state.matching.add(vectors, index)
            score = None
            if self.score is not None:
                vol = torch.cat((values, valid[:, None].to(values.dtype), agree), dim=1)
                score = self.score(vol.T.reshape(1, -1, *dims)).reshape(-1)
            state.fusion.add(values, valid, score)

    def decode(self, state: "FragmentState") -> AtlasOutput:
        """Run the 3D network on the fused volume of ``state``."""
        dims = state.fragment.dims
        fused = state.fusion.fused()
        if state.matching is not None:
            fused = torch.cat((fused, state.matching.fused()), dim=1)
        x = fused.T.reshape(1, -1, *dims)
        levels = coarse_to_fine(self.volume(x), self.config.mask_threshold)
        count = state.fusion.count.reshape(dims)
        return AtlasOutput(levels, count > 0, count)

    def forward(self, images: torch.Tensor | np.ndarray, camera: PinholeCamera,
                poses: list[np.ndarray], fragment: Fragment) -> AtlasOutput:
        """All views of a fragment at once (same as streaming them)."""
        state = self.begin(fragment)
        self.add_views(state, images, camera, poses)
        return self.decode(state)

    def truncation_m(self, voxel_size_m: float, scale: int = 1) -> float:
        """Metres of TSDF 1.0 at the level ``scale`` of a fragment with ``voxel_size_m``."""
        return self.config.truncation_voxels * scale * voxel_size_m

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@dataclass
class FragmentState:
    """Fusion state of one fragment (see :meth:`AtlasModel.begin`).

    Attributes:
        fragment: the box.
        fusion: the running view fusion over its voxels (flattened ``[i, j, k]`` order).
        centres: (X * Y * Z, 3) float32 world voxel centres, on the model's device.
        matching: the running matching cue (None for a model without one).
    """

    fragment: Fragment
    fusion: ViewFusion
    centres: torch.Tensor
    matching: MatchingFusion | None = None


def save_atlas_weights(model: AtlasModel, path: str | Path, meta: dict[str, Any]) -> None:
    """Write an inference-only weight file (:func:`recon_ros.models.checkpoint.save_weights`
    with the Atlas format tag)."""
    save_weights(model, path, meta, WEIGHTS_FORMAT)


def default_weights(view_fusion: str) -> Path:
    """The shipped weights of a view fusion (trained by ``python -m
    recon_ros.models.train_atlas --preset small --view-fusion ...``)."""
    if view_fusion not in VIEW_FUSIONS:
        raise ConfigError(f"view fusion {view_fusion!r}: expected one of {VIEW_FUSIONS}")
    return WEIGHTS_DIR / f"atlas_{view_fusion}_small.pt"


def load_atlas(path: str | Path = "", device: torch.device | str = "cpu",
               view_fusion: str = "average") -> tuple[AtlasModel, dict[str, Any]]:
    """A model in eval mode on ``device`` and its metadata; ``path=""`` = the shipped weights
    of ``view_fusion``. Read with ``weights_only=True`` (no pickled code runs). Files of the
    current format and of the first one (:data:`WEIGHTS_FORMAT_V1`, no matching cue) load.

    Raises:
        ReconError: unreadable, of another format, or weights that do not fit the config.
    """
    p = Path(path) if str(path) else default_weights(view_fusion)
    try:
        return load_model(p, WEIGHTS_FORMAT, lambda c: AtlasModel(AtlasConfig.from_dict(c)),
                          device)
    except ReconError as exc:
        try:
            return load_model(p, WEIGHTS_FORMAT_V1, lambda c: AtlasModel(
                AtlasConfig.from_dict({**_V1_DEFAULTS, **c})), device)
        except ReconError:
            raise exc from None


def log_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Elementwise log-transformed L1 of Atlas: ``|sgn(p) log(1 + |p|) - sgn(t) log(1 + |t|)|``
    (TSDFs in truncation units)."""
    def tf(x: torch.Tensor) -> torch.Tensor:
        return torch.sign(x) * torch.log1p(x.abs())
    return (tf(pred) - tf(target)).abs()


__all__ = ["AtlasConfig", "AtlasModel", "AtlasOutput", "FEATURE_STRIDE", "Fragment",
           "FragmentState", "LEVEL_SCALES", "LevelOutput", "MatchingFusion", "ViewFusion",
           "WEIGHTS_FORMAT", "WEIGHTS_FORMAT_V1", "backproject", "coarse_to_fine",
           "default_weights", "load_atlas", "log_l1", "patch_offsets", "patch_vectors",
           "patch_vector_image", "project_points", "sample_vectors", "save_atlas_weights",
           "upsample_nearest", "zncc"]
