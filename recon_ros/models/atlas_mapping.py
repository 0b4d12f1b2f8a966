"""The Atlas network as the mapper's fragment model (``fusion.method: rgb``, issue 11).

:func:`load_atlas_for_mapper` loads the weights of ``rgb.weights`` (``""`` = the shipped
weights of ``rgb.view_fusion``), reads the geometry they were trained for from their metadata
(``train_config``: views, image size, fragment box, voxel size, floor layer, distance ahead)
and refuses a map whose ``volume.voxel_size_m`` differs from the training voxel size by more
than :data:`~recon_ros.models.trained_for.RELATIVE_TOLERANCE` (the network's receptive field,
truncation and box are in voxels). :class:`AtlasFragmentModel` places the training box in front
of the fragment's keyframes (:meth:`~recon_ros.models.atlas.Fragment.in_front_of`), streams the
views through :meth:`~recon_ros.models.atlas.AtlasModel.add_views` and decodes the finest
level's final TSDF into metres (:func:`predicted_tsdf_m`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..core.config import MapperConfig
from ..core.errors import ConfigError
from ..core.frame import PinholeCamera
from ..core.rgb_mapping import FragmentGeometry, FragmentTsdf
from .atlas import AtlasModel, Fragment, default_weights, load_atlas
from .train_atlas import AtlasTrainConfig
from .trained_for import RELATIVE_TOLERANCE

__all__ = ["AtlasFragmentModel", "load_atlas_for_mapper", "predicted_tsdf_m"]


def predicted_tsdf_m(tsdf: torch.Tensor, model_truncation_m: float, truncation_m: float
                     ) -> torch.Tensor:
    """The network's TSDF (any shape, units of its truncation ``model_truncation_m``, in
    [-1, 1]) in metres of a map with truncation ``truncation_m``: saturated values (+-1: "at
    least a truncation away", e.g. voxels the coarse-to-fine masking did not refine) become
    ``+-truncation_m``, the others ``tsdf * model_truncation_m`` clamped to it."""
    metres = (tsdf * model_truncation_m).clamp(-truncation_m, truncation_m)
    return torch.where(tsdf.abs() >= 1.0, torch.sign(tsdf) * truncation_m, metres)


class AtlasFragmentModel:
    """:class:`~recon_ros.core.rgb_mapping.FragmentModel` of an Atlas network.

    Args:
        model: the network (eval mode).
        trained: its training configuration (from the weights' metadata).
    """

    def __init__(self, model: AtlasModel, trained: AtlasTrainConfig) -> None:
        self.model = model
        self.trained = trained
        self.geometry = FragmentGeometry(trained.views, trained.width, trained.height,
                                         trained.voxel_size_m)

    def to(self, device: torch.device | str) -> "AtlasFragmentModel":
        self.model.to(device)
        return self

    def fragment(self, poses: list[np.ndarray], floor_height_m: float) -> Fragment:
        """The training box in front of ``poses``: centred the middle of the training
        ``ahead_range_m`` ahead of them, its lowest layer the training ``floor_index`` layers
        from the floor at map height ``floor_height_m``."""
        t = self.trained
        floor = t.floor_index + int(round(floor_height_m / t.voxel_size_m))
        ahead = 0.5 * (t.ahead_range_m[0] + t.ahead_range_m[1])
        return Fragment.in_front_of(poses, t.fragment_dims, t.voxel_size_m, ahead, floor)

    def predict(self, images: list[np.ndarray], cameras: list[PinholeCamera],
                poses: list[np.ndarray], floor_height_m: float, truncation_m: float
                ) -> FragmentTsdf:
        """See :meth:`recon_ros.core.rgb_mapping.FragmentModel.predict` (tensors on the
        network's device)."""
        frag = self.fragment(poses, floor_height_m)
        with torch.no_grad():
            state = self.model.begin(frag)
            for image, camera, T in zip(images, cameras, poses):
                self.model.add_views(state, np.asarray(image)[None], camera, [T])
            out = self.model.decode(state)
        tsdf = predicted_tsdf_m(out.finest.tsdf_final, self.model.truncation_m(
            frag.voxel_size_m), truncation_m)
        return FragmentTsdf(frag.origin_index, tsdf, out.seen)


def load_atlas_for_mapper(config: MapperConfig, device: torch.device | str
                          ) -> AtlasFragmentModel:
    """The Atlas model of ``config.rgb`` on ``device``, checked against the map.

    Raises:
        ConfigError: the weight file does not exist, is of another view fusion than
            ``rgb.view_fusion``, records no training geometry, or was trained for another
            voxel size than ``volume.voxel_size_m``.
        ReconError: the file is unreadable or not Atlas weights.
    """
    rc, vc = config.rgb, config.volume
    path = Path(rc.weights) if rc.weights else default_weights(rc.view_fusion)
    if not path.is_file():
        raise ConfigError(
            f"rgb.weights={rc.weights!r}: no weight file at {path}" if rc.weights else
            f"the shipped Atlas weights {path} are missing from the package (reinstall "
            "recon_ros, or set rgb.weights to a file written by "
            "`python -m recon_ros.models.train_atlas`)")
    model, meta = load_atlas(path, device, rc.view_fusion)
    if model.config.view_fusion != rc.view_fusion:
        raise ConfigError(f"the Atlas weights {path} use view fusion "
                          f"{model.config.view_fusion!r}, not rgb.view_fusion="
                          f"{rc.view_fusion!r}")
    if "train_config" not in meta:
        raise ConfigError(f"the Atlas weights {path} do not record their training geometry "
                          "(train_config): fragment box and image size unknown")
    trained = replace(AtlasTrainConfig.from_dict(meta["train_config"]), device="cpu")
    if abs(vc.voxel_size_m - trained.voxel_size_m) > RELATIVE_TOLERANCE * trained.voxel_size_m:
        raise ConfigError(f"the Atlas weights {path} do not fit the map: "
                          f"volume.voxel_size_m={vc.voxel_size_m:g} m (weights trained for "
                          f"{trained.voxel_size_m:g} m). Set volume.voxel_size_m: "
                          f"{trained.voxel_size_m:g} or use weights trained for this voxel "
                          "size")
    return AtlasFragmentModel(model, trained)
