"""The ``Mapper`` facade: frames in; mesh, occupancy and checkpoints out.

    >>> from recon_ros.core import Mapper, MapperConfig
    >>> mapper = Mapper(MapperConfig())
    >>> mapper.integrate(frame)          # a recon_ros.core.Frame
    >>> mesh = mapper.mesh()             # TriangleMesh, map frame
    >>> grid = mapper.occupancy_grid()   # OccupancyGrid2D for Nav2

Only :meth:`Mapper.integrate` changes the map; meshing and occupancy are computed lazily (and
incrementally for the mesh) when asked, so a node can run them at their own rates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .config import MapperConfig
from .checkpoint import read_checkpoint
from .frame import Frame
from .latent_integrator import LatentIntegrator
from .latent_volume import LatentVolume
from .marching_cubes import IncrementalMesher
from .mesh import TriangleMesh
from .occupancy import OccupancyMapper
from .occupancy_grid import OccupancyGrid2D
from .timing import StageTimer
from .tsdf_integrator import FrameTensors, TsdfIntegrator
from .volume import BlockVolume

MAPPER_FORMAT = "recon_ros.mapper.v1"


class Mapper:
    """Incremental mapping on one torch device: classical TSDF fusion, or learned latent fusion
    (``fusion.method: latent``) whose TSDF is decoded lazily into the same block volume before
    any output (mesh, occupancy, checkpoint) is produced.

    Args:
        config: the whole mapping configuration (validated on construction).
    """

    def __init__(self, config: MapperConfig | None = None) -> None:
        self.config = config or MapperConfig()
        vc, ic, oc = self.config.volume, self.config.integration, self.config.occupancy
        self.device = torch.device(vc.device)
        truncation_m = ic.truncation_voxels * vc.voxel_size_m
        self.volume = BlockVolume(vc.voxel_size_m, vc.block_size, truncation_m, self.device,
                                  vc.torch_dtype, vc.initial_capacity_blocks)
        self.integrator = TsdfIntegrator(
            truncation_m, ic.weighting, ic.max_weight, ic.alloc_stride_px,
            drop_start_m=vc.voxel_size_m if ic.behind_surface_drop else None,
            compile=ic.compile)
        self.mesher = IncrementalMesher(self.volume, self.config.mesh.min_weight)
        self.occupancy = OccupancyMapper(
            resolution_m=oc.resolution_m or vc.voxel_size_m,
            min_height_m=oc.min_height_m, max_height_m=oc.max_height_m,
            occupied_threshold_m=oc.occupied_threshold_voxels * vc.voxel_size_m,
            free_below_m=oc.free_below_m,
            min_weight=oc.min_weight, truncation_m=truncation_m,
            free_space_stride_px=oc.free_space_stride_px, device=self.device)
        self.latent: LatentVolume | None = None
        self.latent_integrator: LatentIntegrator | None = None
        if self.config.fusion.method == "latent":
            # Imported here: the learned models live above the core and import it.
            from ..models.checkpoint import load_weights

            model, _ = load_weights(self.config.fusion.weights, self.device)
            self.latent_integrator = model.integrator(self.config.fusion.max_count)
            self.latent = LatentVolume(self.volume, model.config.feature_channels)
        self.timer = StageTimer(self.device)
        self.frames_integrated = 0
        self.has_color = False

    # ------------------------------------------------------------------ mapping
    def integrate(self, frame: Frame) -> int:
        """Fuse one frame into the map.

        Returns:
            the number of blocks that received measurements.
        """
        with self.timer("upload"):
            ft = self._to_device(frame)
        with self.timer("integrate"):
            if self.latent is None:
                changed = self.integrator.integrate(self.volume, ft).numel()
                self.has_color |= ft.color is not None
            else:
                with torch.no_grad():
                    voxels = self.latent_integrator.integrate(self.latent, ft).voxels
                changed = torch.unique(torch.div(voxels, self.volume.voxels_per_block,
                                                 rounding_mode="floor")).numel()
        with self.timer("free_space"):
            self.occupancy.carve(ft)
        self.frames_integrated += 1
        return int(changed)

    def decode(self) -> None:
        """Latent fusion only: decode the blocks changed since the last call into the volume's
        TSDF and weight (every output calls this first; a no-op for TSDF fusion)."""
        if self.latent is not None:
            with self.timer("decode"):
                self.latent_integrator.decode_dirty(self.latent)

    def _to_device(self, frame: Frame) -> FrameTensors:
        dev = self.device
        depth = _as_tensor(frame.depth).to(dev, torch.float32)
        color = None
        if frame.color is not None:
            color = _as_tensor(frame.color).to(dev)
        T_cam_color = torch.as_tensor(frame.T_cam_color, dtype=torch.float64)
        return FrameTensors(
            depth=depth,
            camera=frame.camera,
            T_world_cam=torch.as_tensor(frame.T_world_cam, dtype=torch.float32).to(dev),
            color=color,
            color_camera=frame.color_cam,
            T_color_cam=torch.linalg.inv(T_cam_color).to(dev, torch.float32),
            min_depth_m=self.config.integration.min_depth_m,
            max_depth_m=self.config.integration.max_depth_m,
        )

    # ------------------------------------------------------------------ outputs
    def update_mesh(self) -> torch.Tensor:
        """Re-mesh changed blocks; returns the (K,) keys of the blocks whose mesh changed."""
        self.decode()
        with self.timer("mesh"):
            return self.mesher.update()

    def mesh(self) -> TriangleMesh:
        """The whole map's mesh (changed blocks are re-meshed first)."""
        self.update_mesh()
        with self.timer("mesh_assemble"):
            return self.mesher.mesh(with_colors=self.has_color)

    def occupied_voxels(self) -> np.ndarray:
        """(N, 3) float32 centres of occupied voxels, map frame, metres."""
        self.decode()
        with self.timer("occupancy"):
            return self.occupancy.occupied_points(self.volume).cpu().numpy()

    def occupancy_grid(self) -> OccupancyGrid2D:
        """The 2D occupancy grid over the configured height band."""
        self.decode()
        with self.timer("occupancy"):
            return self.occupancy.grid(self.volume)

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """Forget the whole map (configuration and timers are kept)."""
        if self.latent is not None:
            self.latent.reset()  # resets the shared volume too
        else:
            self.volume.reset()
        self.mesher.reset()
        self.occupancy.reset()
        self.frames_integrated = 0
        self.has_color = False

    def save(self, path: str | Path) -> None:
        """Write the map (volume, latent features if any, free space, config) to one
        checkpoint file."""
        self.decode()
        state = {
            "format": MAPPER_FORMAT,
            "config": self.config.to_dict(),
            "volume": self.volume.state_dict(),
            "occupancy": self.occupancy.state_dict(),
            "frames_integrated": self.frames_integrated,
            "has_color": self.has_color,
        }
        if self.latent is not None:
            state["latent"] = self.latent.state_dict()
        torch.save(state, str(path))

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> "Mapper":
        """Read a checkpoint written by :meth:`save`, optionally onto another device."""
        state = read_checkpoint(path, MAPPER_FORMAT, "map")
        config = MapperConfig.from_dict(state["config"])
        if device is not None:
            config = config.with_overrides(volume={"device": device})
        mapper = cls(config)
        mapper.volume = BlockVolume.from_state_dict(state["volume"], mapper.device)
        if mapper.latent is not None:
            mapper.latent = LatentVolume(mapper.volume, mapper.latent.feature_channels)
            mapper.latent.load_state_dict(state["latent"])
        mapper.mesher = IncrementalMesher(mapper.volume, config.mesh.min_weight)
        mapper.occupancy.load_state_dict(state["occupancy"])
        mapper.frames_integrated = int(state["frames_integrated"])
        mapper.has_color = bool(state["has_color"])
        return mapper

    def to(self, device: str | torch.device) -> "Mapper":
        """Move the map to another device (in place); returns self."""
        self.device = torch.device(device)
        self.config = self.config.with_overrides(volume={"device": str(self.device)})
        if self.latent is not None:
            self.latent.to(self.device)  # moves the shared volume too
            self.latent_integrator.to(self.device)
        else:
            self.volume.to(self.device)
        self.mesher.reset()
        self.occupancy.to(self.device)
        self.timer.device = self.device
        return self

    # ------------------------------------------------------------------ stats
    def stats(self) -> dict[str, float | int]:
        """Map size and memory figures."""
        mem = self.volume.memory_bytes()
        return {
            "frames_integrated": self.frames_integrated,
            "blocks": self.volume.num_blocks,
            "voxels": self.volume.num_blocks * self.volume.voxels_per_block,
            "bytes_per_voxel": self.volume.bytes_per_voxel() + (
                self.latent.bytes_per_voxel() if self.latent is not None else 0.0),
            **mem,
            "mesh_triangles": int(self.mesher.tri_edge.shape[0]),
        }


def _as_tensor(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A tensor view of an image (copying read-only numpy buffers, e.g. decoded messages)."""
    if isinstance(array, np.ndarray) and not array.flags.writeable:
        array = array.copy()
    return torch.as_tensor(array)
