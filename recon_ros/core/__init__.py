"""ROS-free mapping core (torch, device-agnostic): config, frames, block-sparse TSDF volume,
integration (TSDF and latent), incremental marching cubes, occupancy and the :class:`Mapper`
facade."""

from .config import (FusionConfig, IntegrationConfig, MapperConfig, MeshConfig,
                     OccupancyConfig, VolumeConfig)
from .errors import ConfigError, FrameError, ReconError, VolumeError
from .frame import Frame, PinholeCamera
from .mapper import Mapper
from .mesh import TriangleMesh
from .occupancy_grid import OccupancyGrid2D
from .volume import BlockVolume

__all__ = [
    "BlockVolume", "ConfigError", "Frame", "FrameError", "FusionConfig", "IntegrationConfig",
    "Mapper", "MapperConfig", "MeshConfig", "OccupancyConfig", "OccupancyGrid2D",
    "PinholeCamera", "ReconError", "TriangleMesh", "VolumeConfig", "VolumeError",
]
