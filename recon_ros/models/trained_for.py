"""What latent-fusion weights were trained for, and the mapper's check against it (issue 13).

A weight file's metadata holds ``"trained_for"`` (:class:`TrainedFor`, written by
:func:`recon_ros.models.checkpoint.save_weights`): the voxel size and truncation of the
training volumes, the image sizes, the running-average count cap and the depth range. The
translator's TSDF is normalized by the truncation **in voxels** (``tanh`` output x
``truncation_voxels`` x the map's voxel size) and the ray samples are one voxel apart, so both
the voxel size and the truncation in voxels shape what the networks see.

:func:`load_for_mapper` loads the weights of ``fusion.weights`` and compares them with the
mapper configuration:

- ``volume.voxel_size_m`` or ``integration.truncation_voxels`` more than
  :data:`RELATIVE_TOLERANCE` away from the training values: :class:`ConfigError` naming both
  values and ``fusion.allow_weights_mismatch``; with that option set, one warning instead;
- ``fusion.max_count`` other than the training cap: a warning (a documented tuning knob);
- image sizes are per camera: the integrator warns once per frame size outside the trained
  range (:attr:`TrainedFor.size_range`);
- weights without ``trained_for`` (written before it existed): a warning that nothing can be
  checked.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.config import MapperConfig
from ..core.errors import ConfigError
from .checkpoint import DEFAULT_WEIGHTS, load_weights
from .networks import LatentFusionModel

_log = logging.getLogger(__name__)

#: Relative difference of voxel size or truncation still taken as equal (float round-off,
#: values written with fewer digits).
RELATIVE_TOLERANCE = 0.01


@dataclass(frozen=True)
class TrainedFor:
    """The geometry latent-fusion weights were trained on.

    Attributes:
        voxel_size_m: voxel edge of the training volumes, metres.
        truncation_voxels: TSDF truncation (the translator's output scale), voxels.
        resolutions: ``(width, height)`` image sizes of the training frames, pixels.
        max_count: cap of the running-average count during training.
        min_depth_m, max_depth_m: valid depth range of the training frames, metres.
    """

    voxel_size_m: float
    truncation_voxels: float
    resolutions: tuple[tuple[int, int], ...]
    max_count: float
    min_depth_m: float
    max_depth_m: float

    @property
    def truncation_m(self) -> float:
        """Truncation of the training volumes, metres."""
        return self.truncation_voxels * self.voxel_size_m

    @property
    def size_range(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """((min width, min height), (max width, max height)) of the training frames."""
        widths = [w for w, _ in self.resolutions]
        heights = [h for _, h in self.resolutions]
        return (min(widths), min(heights)), (max(widths), max(heights))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (lists for the resolutions), with ``truncation_m`` for readers."""
        d = asdict(self)
        d["resolutions"] = [list(r) for r in self.resolutions]
        d["truncation_m"] = self.truncation_m
        return d

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> "TrainedFor | None":
        """The ``"trained_for"`` entry of a weight file's metadata (None if absent)."""
        d = meta.get("trained_for")
        if d is None:
            return None
        return cls(voxel_size_m=float(d["voxel_size_m"]),
                   truncation_voxels=float(d["truncation_voxels"]),
                   resolutions=tuple((int(w), int(h)) for w, h in d["resolutions"]),
                   max_count=float(d["max_count"]), min_depth_m=float(d["min_depth_m"]),
                   max_depth_m=float(d["max_depth_m"]))


def _differs(a: float, b: float) -> bool:
    return abs(a - b) > RELATIVE_TOLERANCE * abs(b)


def check_config(trained: TrainedFor, config: MapperConfig, weights: str) -> None:
    """Compare ``config`` with ``trained`` (see the module docstring).

    Raises:
        ConfigError: voxel size or truncation differ and ``fusion.allow_weights_mismatch``
            is not set.
    """
    vc, ic, fc = config.volume, config.integration, config.fusion
    mismatches = []
    if _differs(vc.voxel_size_m, trained.voxel_size_m):
        mismatches.append(f"volume.voxel_size_m={vc.voxel_size_m:g} m (weights trained for "
                          f"{trained.voxel_size_m:g} m)")
    if _differs(ic.truncation_voxels, trained.truncation_voxels):
        mismatches.append(
            f"integration.truncation_voxels={ic.truncation_voxels:g} (= "
            f"{ic.truncation_voxels * vc.voxel_size_m:g} m; weights trained for "
            f"{trained.truncation_voxels:g} voxels = {trained.truncation_m:g} m)")
    if mismatches:
        what = (f"the latent weights {weights} do not fit the map (tolerance "
                f"{RELATIVE_TOLERANCE:.0%}): {'; '.join(mismatches)}")
        if not fc.allow_weights_mismatch:
            raise ConfigError(f"{what}. Use weights trained for this geometry or set "
                              "fusion.allow_weights_mismatch: true to run them anyway")
        _log.warning("%s; running them anyway (fusion.allow_weights_mismatch: true)", what)
    if fc.max_count != trained.max_count:
        _log.warning("fusion.max_count=%g differs from the %g the latent weights %s were "
                     "trained with", fc.max_count, trained.max_count, weights)


def load_for_mapper(config: MapperConfig, device: torch.device | str
                    ) -> tuple[LatentFusionModel, TrainedFor | None]:
    """The model of ``fusion.weights`` (``""`` = shipped) on ``device``, checked against
    ``config`` (:func:`check_config`), and what it was trained for.

    Raises:
        ConfigError: the weight file does not exist, or does not fit (:func:`check_config`).
        ReconError: the file is unreadable or not latent-fusion weights.
    """
    path = Path(config.fusion.weights) if config.fusion.weights else DEFAULT_WEIGHTS
    if not path.is_file():
        raise ConfigError(
            f"fusion.weights={config.fusion.weights!r}: no weight file at {path}"
            if config.fusion.weights else
            f"the shipped latent weights {path} are missing from the package (reinstall "
            "recon_ros, or set fusion.weights to a file written by `recon-ros train "
            "latent-fusion`)")
    model, meta = load_weights(path, device)
    trained = TrainedFor.from_meta(meta)
    if trained is None:
        _log.warning("the latent weights %s do not record what they were trained for: "
                     "voxel size and truncation cannot be checked", path)
    else:
        check_config(trained, config, str(path))
    return model, trained
