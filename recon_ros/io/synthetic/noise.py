"""Depth noise models (design.md section 6), all seeded through ``numpy.random.Generator``.

Applied in this order by :func:`apply_noise`: Gaussian noise (multiplicative
``d * (1 + sigma N(0, 1))`` and/or Kinect axial ``sigma(z) = 0.0012 + 0.0019 (z - 0.4)^2``),
flying pixels (pixels at depth discontinuities replaced by a random mix of the two sides),
outlier blobs (random seed pixels dilated into discs, or random axis-aligned rectangles and
stripes, each blob shifted by one large random depth offset), holes (discs set to 0), range cap
(depths outside ``[min, max]`` set to 0). Disabled stages draw no random numbers, so adding a
stage never changes what the others produce.
Pixels without a measurement (0) stay 0 throughout.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ...core.config import check_known_keys
from ...core.errors import ConfigError

SeedLike = int | np.random.Generator | None

#: Shapes of outlier blobs (:attr:`NoiseConfig.outlier_shape`).
OUTLIER_SHAPES = ("disc", "rect")


def as_generator(rng: SeedLike) -> np.random.Generator:
    """An ``int`` seed, ``None`` (seed 0) or a Generator -> a Generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(0 if rng is None else int(rng))


@dataclass(frozen=True)
class NoiseConfig:
    """What :func:`apply_noise` does; the default is no noise at all.

    Attributes:
        multiplicative_sigma: sigma of ``d * (1 + sigma N(0, 1))`` (0 = off; typical 0.005-0.05).
        kinect_axial: add ``N(0, sigma(z)^2)`` with ``sigma(z) = 0.0012 + 0.0019 (z - 0.4)^2`` m.
        outlier_fraction: fraction of image pixels covered by outlier blobs (0 = off).
        outlier_blob_radius_px: disc radius of one outlier blob, pixels (0 = single pixels).
        outlier_shape: ``disc`` (discs of ``outlier_blob_radius_px``) or ``rect`` (axis-aligned
            rectangles with sides uniform in ``1..6 * radius + 1`` pixels: blocks and stripes).
        outlier_offset_range_m: (min, max) magnitude of a blob's depth offset; the sign is random.
        min_outlier_depth_m: outlier depths are clamped to at least this.
        flying_pixel_fraction: probability that a pixel at a depth discontinuity becomes a
            flying pixel (0 = off).
        flying_pixel_jump_m: a pixel is at a discontinuity when a 4-neighbour's depth differs
            by more than this.
        hole_fraction: fraction of image pixels set to 0 by hole blobs (0 = off).
        hole_blob_radius_px: disc radius of one hole blob, pixels.
        min_range_m: measured depths below are set to 0.
        max_range_m: measured depths above are set to 0 (None = no cap).
    """

    multiplicative_sigma: float = 0.0
    kinect_axial: bool = False
    outlier_fraction: float = 0.0
    outlier_blob_radius_px: int = 2
    outlier_shape: str = "disc"
    outlier_offset_range_m: tuple[float, float] = (0.3, 1.5)
    min_outlier_depth_m: float = 0.1
    flying_pixel_fraction: float = 0.0
    flying_pixel_jump_m: float = 0.1
    hole_fraction: float = 0.0
    hole_blob_radius_px: int = 4
    min_range_m: float = 0.0
    max_range_m: float | None = None

    def __post_init__(self) -> None:
        def bad(name: str, reason: str) -> ConfigError:
            return ConfigError(f"noise.{name}={getattr(self, name)!r} is invalid: {reason}")

        if not (math.isfinite(self.multiplicative_sigma) and 0 <= self.multiplicative_sigma < 1):
            raise bad("multiplicative_sigma", "must be in [0, 1)")
        if not isinstance(self.kinect_axial, bool):
            raise bad("kinect_axial", "must be a bool")
        for name in ("outlier_fraction", "hole_fraction"):
            v = getattr(self, name)
            if not (math.isfinite(v) and 0 <= v < 1):
                raise bad(name, "must be in [0, 1)")
        if self.outlier_shape not in OUTLIER_SHAPES:
            raise bad("outlier_shape", f"must be one of {list(OUTLIER_SHAPES)}")
        flying = self.flying_pixel_fraction
        if not (math.isfinite(flying) and 0 <= flying <= 1):
            raise bad("flying_pixel_fraction", "must be in [0, 1]")
        if not (math.isfinite(self.flying_pixel_jump_m) and self.flying_pixel_jump_m > 0):
            raise bad("flying_pixel_jump_m", "must be > 0")
        for name in ("outlier_blob_radius_px", "hole_blob_radius_px"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= 64:
                raise bad(name, "must be an int in [0, 64]")
        try:
            lo, hi = (float(x) for x in self.outlier_offset_range_m)
        except (TypeError, ValueError) as exc:
            raise bad("outlier_offset_range_m", "must be (min, max)") from exc
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
            raise bad("outlier_offset_range_m", "must satisfy 0 <= min <= max")
        object.__setattr__(self, "outlier_offset_range_m", (lo, hi))
        if not (math.isfinite(self.min_outlier_depth_m) and self.min_outlier_depth_m > 0):
            raise bad("min_outlier_depth_m", "must be > 0")
        if not (math.isfinite(self.min_range_m) and self.min_range_m >= 0):
            raise bad("min_range_m", "must be >= 0")
        if self.max_range_m is not None and not (
                math.isfinite(self.max_range_m) and self.max_range_m > self.min_range_m):
            raise bad("max_range_m", "must be None or > min_range_m")

    @property
    def is_noise_free(self) -> bool:
        return self == NoiseConfig()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outlier_offset_range_m"] = list(self.outlier_offset_range_m)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NoiseConfig":
        check_known_keys(cls, d, "noise")
        d = dict(d)
        if "outlier_offset_range_m" in d:
            d["outlier_offset_range_m"] = tuple(d["outlier_offset_range_m"])
        return cls(**d)


def kinect_axial_sigma(z: np.ndarray) -> np.ndarray:
    """Axial noise std of a Kinect-class sensor, metres: ``0.0012 + 0.0019 (z - 0.4)^2``."""
    z = np.asarray(z, dtype=np.float64)
    return 0.0012 + 0.0019 * (z - 0.4) ** 2


def _check_depth(depth: np.ndarray) -> np.ndarray:
    depth = np.asarray(depth)
    if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
        raise ConfigError(f"depth must be a float (H, W) array, got {depth.dtype} {depth.shape}")
    return depth


def _valid(depth: np.ndarray) -> np.ndarray:
    return np.isfinite(depth) & (depth > 0)


def multiplicative_noise(depth: np.ndarray, sigma: float, rng: SeedLike = None) -> np.ndarray:
    """``d * (1 + sigma N(0, 1))`` on valid pixels; returns a new float32 array."""
    depth = _check_depth(depth)
    g = as_generator(rng)
    out = depth.astype(np.float32, copy=True)
    v = _valid(depth)
    noise = g.standard_normal(size=depth.shape)
    out[v] = (depth[v] * (1.0 + sigma * noise[v])).astype(np.float32)
    out[v & (out <= 0)] = 0.0
    return out


def kinect_axial_noise(depth: np.ndarray, rng: SeedLike = None) -> np.ndarray:
    """``d + N(0, sigma(d)^2)`` with :func:`kinect_axial_sigma`; returns new float32 array."""
    depth = _check_depth(depth)
    g = as_generator(rng)
    out = depth.astype(np.float32, copy=True)
    v = _valid(depth)
    noise = g.standard_normal(size=depth.shape)
    d = depth[v].astype(np.float64)
    out[v] = (d + kinect_axial_sigma(d) * noise[v]).astype(np.float32)
    out[v & (out <= 0)] = 0.0
    return out


def _disc_offsets(radius: int) -> list[tuple[int, int]]:
    r = int(radius)
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
            if dy * dy + dx * dx <= r * r + r]  # "+ r": rounder small discs


def _dilate_max(img: np.ndarray, radius: int) -> np.ndarray:
    """Grey dilation of a non-negative int image with a disc (max over shifted copies)."""
    if radius <= 0:
        return img.copy()
    h, w = img.shape
    out = img.copy()
    for dy, dx in _disc_offsets(radius):
        if dy == 0 and dx == 0:
            continue
        ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        np.maximum(out[yd, xd], img[ys, xs], out=out[yd, xd])
    return out


def blob_labels(shape: tuple[int, int], fraction: float, radius_px: int,
                rng: SeedLike = None) -> np.ndarray:
    """Random disc blobs covering about ``fraction`` of the image.

    Seed pixels are drawn uniformly and dilated into discs of ``radius_px``; seeds are added in
    rounds until the covered fraction reaches ``fraction`` (overshoot at most about one blob
    per round's last seeds).

    Returns:
        (H, W) int32 blob id per pixel (0 = not in a blob; ids 1..K).
    """
    g = as_generator(rng)
    h, w = int(shape[0]), int(shape[1])
    labels = np.zeros((h, w), dtype=np.int32)
    if fraction <= 0 or h * w == 0:
        return labels
    target = int(round(fraction * h * w))
    area = len(_disc_offsets(radius_px))
    next_id = 1
    covered = 0
    for _ in range(64):
        if covered >= target:
            break
        k = max(1, int(math.ceil((target - covered) / area)))
        seeds = np.zeros((h, w), dtype=np.int32)
        idx = g.integers(0, h * w, size=k)
        seeds.flat[idx] = np.arange(next_id, next_id + k, dtype=np.int32)
        next_id += k
        grown = _dilate_max(seeds, radius_px)
        new = (labels == 0) & (grown > 0)
        if covered + int(new.sum()) > target and k > 1:
            # last round: add seeds one blob at a time (in id order) until the target is met
            ids = grown[new]
            order = np.sort(np.unique(ids))
            counts = np.bincount(ids, minlength=next_id)[order]
            need = np.searchsorted(np.cumsum(counts), target - covered) + 1
            keep = np.isin(grown, order[:need]) & new
            labels[keep] = grown[keep]
            covered += int(keep.sum())
            break
        labels[new] = grown[new]
        covered += int(new.sum())
    return labels


def rect_labels(shape: tuple[int, int], fraction: float, max_side_px: int,
                rng: SeedLike = None) -> np.ndarray:
    """Random axis-aligned rectangles (sides uniform in ``1..max_side_px``: blocks and thin
    stripes) added one at a time until they cover at least ``fraction`` of the image; a later
    rectangle overwrites the overlap of earlier ones.

    Returns:
        (H, W) int32 blob id per pixel (0 = not in a blob; ids 1..K).
    """
    g = as_generator(rng)
    h, w = int(shape[0]), int(shape[1])
    labels = np.zeros((h, w), dtype=np.int32)
    if fraction <= 0 or h * w == 0:
        return labels
    target = int(round(fraction * h * w))
    covered, next_id = 0, 1
    while covered < target:
        rh, rw = (int(x) for x in g.integers(1, max(1, max_side_px) + 1, size=2))
        y, x = int(g.integers(0, max(1, h - rh + 1))), int(g.integers(0, max(1, w - rw + 1)))
        covered += int((labels[y:y + rh, x:x + rw] == 0).sum())
        labels[y:y + rh, x:x + rw] = next_id
        next_id += 1
    return labels


def add_flying_pixels(depth: np.ndarray, fraction: float, jump_m: float, rng: SeedLike = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Flying (mixed) pixels: each valid pixel with a valid 4-neighbour whose depth differs by
    more than ``jump_m`` becomes, with probability ``fraction``, ``d + t (d_n - d)`` with
    ``t ~ U(0, 1)`` and ``d_n`` one such neighbour (the first of up, down, left, right) - a
    point floating between the two surfaces, as time-of-flight and structured-light sensors
    produce at depth edges.

    Returns:
        ``(depth_out float32, mask bool)``: the mask marks the changed pixels.
    """
    depth = _check_depth(depth)
    g = as_generator(rng)
    d = depth.astype(np.float32)
    valid = _valid(d)
    other = np.zeros_like(d)
    found = np.zeros(d.shape, dtype=bool)
    for axis, step in ((0, -1), (0, 1), (1, -1), (1, 1)):
        n = np.roll(d, step, axis=axis)
        nv = np.roll(valid, step, axis=axis)
        edge = (slice(0, 1) if step == 1 else slice(-1, None))
        nv[(edge, slice(None)) if axis == 0 else (slice(None), edge)] = False  # no wrap-around
        jump = valid & nv & ~found & (np.abs(n - d) > jump_m)
        other[jump] = n[jump]
        found |= jump
    mask = found & (g.uniform(size=d.shape) < fraction)
    t = g.uniform(size=d.shape)
    out = d.copy()
    out[mask] = (d[mask] + t[mask] * (other[mask] - d[mask])).astype(np.float32)
    return out, mask


def add_outlier_blobs(depth: np.ndarray, fraction: float, radius_px: int,
                      offset_range_m: tuple[float, float], rng: SeedLike = None,
                      min_depth_m: float = 0.1, shape: str = "disc"
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Shift blobs of valid pixels by one random offset each (``+-U(lo, hi)`` metres).

    ``shape``: ``disc`` (:func:`blob_labels` with ``radius_px``) or ``rect``
    (:func:`rect_labels` with sides up to ``6 * radius_px + 1``).

    Returns:
        ``(depth_out float32, mask bool)``: the mask marks the valid pixels that were changed.
    """
    depth = _check_depth(depth)
    g = as_generator(rng)
    if shape == "rect":
        labels = rect_labels(depth.shape, fraction, 6 * radius_px + 1, g)
    else:
        labels = blob_labels(depth.shape, fraction, radius_px, g)
    n = int(labels.max())
    lo, hi = offset_range_m
    offsets = g.uniform(lo, hi, size=n + 1) * np.where(g.uniform(size=n + 1) < 0.5, -1.0, 1.0)
    offsets[0] = 0.0
    out = depth.astype(np.float32, copy=True)
    mask = (labels > 0) & _valid(depth)
    out[mask] = np.maximum(depth[mask] + offsets[labels[mask]], min_depth_m).astype(np.float32)
    return out, mask


def add_holes(depth: np.ndarray, fraction: float, radius_px: int, rng: SeedLike = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Set random disc blobs covering ``fraction`` of the image to 0; returns (depth, mask)."""
    depth = _check_depth(depth)
    labels = blob_labels(depth.shape, fraction, radius_px, rng)
    out = depth.astype(np.float32, copy=True)
    mask = labels > 0
    out[mask] = 0.0
    return out, mask


def apply_range(depth: np.ndarray, min_range_m: float = 0.0, max_range_m: float | None = None
                ) -> np.ndarray:
    """Depths outside ``[min_range_m, max_range_m]`` (and NaN/Inf) -> 0; new float32 array."""
    out = _check_depth(depth).astype(np.float32, copy=True)
    bad = ~np.isfinite(out) | (out < min_range_m)
    if max_range_m is not None:
        bad |= out > max_range_m
    out[bad] = 0.0
    return out


@dataclass
class NoiseMasks:
    """Which pixels each stage changed (all (H, W) bool)."""

    outliers: np.ndarray  # outlier blobs and flying pixels
    holes: np.ndarray
    out_of_range: np.ndarray


def apply_noise(depth: np.ndarray, config: NoiseConfig = NoiseConfig(), rng: SeedLike = None,
                return_masks: bool = False) -> np.ndarray | tuple[np.ndarray, NoiseMasks]:
    """Apply every enabled stage of ``config`` to a (H, W) depth image (metres; 0 = invalid).

    Args:
        depth: (H, W) float depth, metres.
        config: the noise model.
        rng: Generator or int seed (same seed -> same output).
        return_masks: also return a :class:`NoiseMasks`.

    Returns:
        (H, W) float32 noisy depth (a new array), and optionally the masks.
    """
    depth = _check_depth(depth)
    g = as_generator(rng)
    out = depth.astype(np.float32, copy=True)
    out[~_valid(out)] = 0.0
    h, w = out.shape
    none = np.zeros((h, w), dtype=bool)
    outliers, holes = none, none
    if config.multiplicative_sigma > 0:
        out = multiplicative_noise(out, config.multiplicative_sigma, g)
    if config.kinect_axial:
        out = kinect_axial_noise(out, g)
    if config.flying_pixel_fraction > 0:
        out, flying = add_flying_pixels(out, config.flying_pixel_fraction,
                                        config.flying_pixel_jump_m, g)
        outliers = outliers | flying
    if config.outlier_fraction > 0:
        out, blobs = add_outlier_blobs(out, config.outlier_fraction,
                                       config.outlier_blob_radius_px,
                                       config.outlier_offset_range_m, g,
                                       config.min_outlier_depth_m, config.outlier_shape)
        outliers = outliers | blobs
    if config.hole_fraction > 0:
        out, holes = add_holes(out, config.hole_fraction, config.hole_blob_radius_px, g)
    before = out > 0
    out = apply_range(out, config.min_range_m, config.max_range_m)
    if not return_masks:
        return out
    return out, NoiseMasks(outliers=outliers, holes=holes, out_of_range=before & (out == 0))
