"""The ``Mapper`` facade: frames in; mesh, occupancy and checkpoints out.

    >>> from recon_ros.core import Mapper, MapperConfig
    >>> mapper = Mapper(MapperConfig())
    >>> mapper.integrate(frame)          # a recon_ros.core.Frame
    >>> mapper.integrate_color(rgb, camera, T_world_cam, stamp_ns)  # fusion.method: stereo | rgb
    >>> mesh = mapper.mesh()             # TriangleMesh, map frame
    >>> export = mapper.export_mesh()    # per mesh.method (marching_cubes | poisson)
    >>> grid = mapper.occupancy_grid()   # OccupancyGrid2D for Nav2
    >>> q = mapper.distance(points)      # ESDF distance + gradient for planners
    >>> cost = mapper.costmap()          # Nav2-style inflated costmap

Only :meth:`Mapper.integrate` (:meth:`Mapper.integrate_color` and
:meth:`Mapper.finish_color` with ``fusion.method: stereo`` or ``rgb``) changes the map;
meshing and occupancy are computed lazily (and incrementally for the mesh) when asked, so a
node can run them at their own rates.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from . import costmap as costmaps
from .atomic_file import atomic_path
from .config import MapperConfig
from .checkpoint import read_checkpoint
from .distance_slice import DistanceSlice
from .errors import ConfigError
from .esdf import DistanceQuery, EsdfLayer
from .frame import Frame, PinholeCamera
from .latent_integrator import LatentIntegrator
from .latent_volume import LatentVolume
from .map_quality import FrameAgreement, frame_agreement
from .merge import check_mergeable, merge_volume, rigid_transform
from .marching_cubes import IncrementalMesher
from .mesh import TriangleMesh
from .occupancy import OccupancyMapper
from .occupancy_grid import OccupancyGrid2D
from .poisson import poisson_mesh
from .refine import TsdfRefiner
from .rgb_mapping import FragmentTsdf, RgbFragments, fuse_fragment
from .stereo_mapping import StereoDepthFrames
from .timing import StageTimer
from .tsdf_integrator import FrameTensors, IntegrationResult, TsdfIntegrator
from .upload import HostStaging
from .volume import BlockVolume

MAPPER_FORMAT = "recon_ros.mapper.v1"
#: Fusion methods whose map is made from color images (:meth:`Mapper.integrate_color`).
COLOR_METHODS = ("stereo", "rgb")
#: Worst-case hash index bytes per block: a rehash sizes the table to the power of two at or
#: above 4x the blocks (up to 8 cells of 16 bytes per block), plus up to 2 slot keys of 8 bytes.
_INDEX_BYTES_PER_BLOCK = 144


class Mapper:
    """Incremental mapping on one torch device: classical TSDF fusion, learned latent fusion
    (``fusion.method: latent``) whose TSDF is decoded lazily into the same block volume before
    any output (mesh, occupancy, checkpoint) is produced, or TSDF fusion of depth computed by
    plane-sweep stereo from posed color images (``fusion.method: stereo``), or TSDF of
    keyframe fragments predicted by an Atlas-style network and merged into the map
    (``fusion.method: rgb``); in both color modes frames go to :meth:`integrate_color`, not
    :meth:`integrate`.

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
            compile=ic.compile, clear_free_space=ic.clear_free_space,
            clearing_weight_factor=ic.clearing_weight_factor)
        self.truncation_m = truncation_m
        self.staging = HostStaging(self.device)
        self._attach_outputs()
        self.latent: LatentVolume | None = None
        self.latent_integrator: LatentIntegrator | None = None
        if self.config.fusion.method == "latent":
            # Imported here: the learned models live above the core and import it.
            from ..models.trained_for import load_for_mapper

            model, trained = load_for_mapper(self.config, self.device)  # checks the geometry
            self.latent_integrator = model.integrator(
                self.config.fusion.max_count, trained.size_range if trained else None)
            self.latent = LatentVolume(self.volume, model.config.feature_channels)
        #: Keyframes and stereo depth of ``fusion.method: stereo``, else None.
        self.stereo: StereoDepthFrames | None = (
            StereoDepthFrames(self.config.stereo, self.device)
            if self.config.fusion.method == "stereo" else None)
        #: Keyframe fragments and their predicted TSDF of ``fusion.method: rgb``, else None.
        self.rgb: RgbFragments | None = None
        if self.config.fusion.method == "rgb":
            from ..models.atlas_mapping import load_atlas_for_mapper  # (models import core)

            self.rgb = RgbFragments(self.config.rgb,
                                    load_atlas_for_mapper(self.config, self.device),
                                    truncation_m, self.device)
        #: Test-time refinement after each depth frame (``refine.enabled``), else None.
        self.refiner = self._refiner()
        self._limit_capacity()
        self.timer = StageTimer(self.device, self.config.timing.mode,
                                self.config.timing.sample_every)
        self.frames_integrated = 0
        self.has_color = False
        self.blocks_released = {"free_space": 0, "decay": 0, "radius": 0, "memory": 0}
        #: What the last frame did (TSDF fusion; None before the first frame or for latent).
        self.last_integration: IntegrationResult | None = None
        self._last_stamp_ns: int | None = None

    def _attach_outputs(self) -> None:
        """(Re)build the mesher and the occupancy layers on the current volume."""
        vc, oc = self.config.volume, self.config.occupancy
        self.mesher = IncrementalMesher(self.volume, self.config.mesh.min_weight)
        self.occupancy = OccupancyMapper(
            self.volume, resolution_m=oc.resolution_m or vc.voxel_size_m,
            min_height_m=oc.min_height_m, max_height_m=oc.max_height_m,
            occupied_threshold_m=oc.occupied_threshold_voxels * vc.voxel_size_m,
            free_below_m=oc.free_below_m, min_weight=oc.min_weight,
            truncation_m=self.truncation_m, free_space_stride_px=oc.free_space_stride_px)
        self.volume.release_hooks = [self.occupancy.remember_free_space]
        if self.config.fusion.method == "latent":  # the occupancy head decides (issue 13)
            self.occupancy.use_probability(self._latent_occupancy,
                                           self.config.fusion.occupancy_threshold)
        self.esdf: EsdfLayer | None = None
        ec = self.config.esdf
        if ec.enabled:
            self.esdf = EsdfLayer(self.volume, ec.max_distance_m, oc.min_weight,
                                  carve_stride_px=oc.free_space_stride_px)
            self.volume.release_hooks.append(self.esdf.remember_free_space)

    def _limit_capacity(self) -> None:
        """Stop the storage from doubling past ``map.max_memory_mb``."""
        self.volume.max_capacity_blocks = self.max_blocks()

    def max_blocks(self) -> int:
        """Blocks that fit the ``map.max_memory_mb`` budget (0 = no budget)."""
        budget = self.config.map.max_memory_mb
        if budget <= 0:
            return 0
        per_block = self.volume.bytes_per_block() + _INDEX_BYTES_PER_BLOCK
        if self.latent is not None:
            per_block += int(self.latent.bytes_per_voxel()) * self.volume.voxels_per_block
        return max(1, int(budget * 2**20) // per_block)

    # ------------------------------------------------------------------ mapping
    def integrate(self, frame: Frame, robot_position_m: np.ndarray | None = None) -> int:
        """Fuse one depth frame into the map, then apply the map bounds (``map`` config
        section).

        Args:
            frame: the frame.
            robot_position_m: (3,) robot position in the map frame, metres, the centre of
                ``map.clearing_radius_m`` and of memory eviction; None = the camera position.

        Returns:
            the number of blocks whose TSDF changed.

        Raises:
            ConfigError: ``fusion.method`` is ``stereo`` or ``rgb`` (their map is made from
                color images only, by :meth:`integrate_color`).
        """
        method = self.config.fusion.method
        if method in COLOR_METHODS:
            raise ConfigError(f"fusion.method is {method!r}: the map is built from color "
                              "images by Mapper.integrate_color, depth frames are not "
                              "integrated")
        return self._fuse(frame, robot_position_m)

    def integrate_color(self, color: np.ndarray | torch.Tensor, camera: PinholeCamera,
                        T_world_cam: np.ndarray, stamp_ns: int, frame_id: str = "camera",
                        robot_position_m: np.ndarray | None = None
                        ) -> Frame | FragmentTsdf | None:
        """``fusion.method: stereo``: offer one posed color image; when it completes a
        keyframe's depth map (:class:`~recon_ros.core.stereo_mapping.StereoDepthFrames`),
        fuse that depth frame like :meth:`integrate` does. ``fusion.method: rgb``: when it
        completes a fragment of keyframes (:class:`~recon_ros.core.rgb_mapping.RgbFragments`),
        merge the fragment's predicted TSDF into the map.

        Args:
            color: (H, W, 3) uint8 RGB image.
            camera: its intrinsics.
            T_world_cam: (4, 4) pose of its optical frame in the map frame, metres.
            stamp_ns: acquisition time, nanoseconds.
            frame_id: its optical frame's name.
            robot_position_m: as in :meth:`integrate`.

        Returns:
            The depth frame integrated (a keyframe's, possibly an earlier one's; stereo) or
            the fragment merged (rgb), or None.

        Raises:
            ConfigError: ``fusion.method`` is neither ``stereo`` nor ``rgb``.
            FrameError: a malformed image or pose.
        """
        if self.rgb is not None:
            self.timer.next_frame()
            with self.timer("rgb"):
                fragment = self.rgb.add(color, camera, T_world_cam, stamp_ns, frame_id)
            if fragment is not None:
                self._fuse_fragment(fragment, robot_position_m)
            return fragment
        with self.timer("stereo"):
            frame = self._stereo().add(color, camera, T_world_cam, stamp_ns, frame_id)
        if frame is not None:
            self._fuse(frame, robot_position_m)
        return frame

    def color_input_counts(self) -> dict[str, int]:
        """What the color-only pipeline did so far (empty for depth input): ``frames_seen``
        (posed color images), ``keyframes``, then for ``stereo`` ``depth_frames`` (keyframes
        given a depth map) and ``without_sources`` (keyframes with too few source views), for
        ``rgb`` ``fragments`` (fragments fused)."""
        if self.stereo is not None:
            st = self.stereo
            return {"frames_seen": st.frames_seen, "keyframes": st.keyframes,
                    "depth_frames": st.depth_frames, "without_sources": st.without_sources}
        if self.rgb is not None:
            return {"frames_seen": self.rgb.frames_seen, "keyframes": self.rgb.keyframes,
                    "fragments": self.rgb.fragments}
        return {}

    def finish_color(self, robot_position_m: np.ndarray | None = None
                     ) -> list[Frame] | list[FragmentTsdf]:
        """At the end of a stream. ``fusion.method: stereo``: compute and fuse the depth of
        the keyframes still waiting for newer ones (``stereo.reference_delay``); returns the
        frames integrated. ``rgb``: predict and merge the fragment of the last keyframes
        when some arrived after the last fragment; returns it (or nothing)."""
        if self.rgb is not None:
            with self.timer("rgb"):
                fragments = self.rgb.finish()
            for fragment in fragments:
                self._fuse_fragment(fragment, robot_position_m)
            return fragments
        with self.timer("stereo"):
            frames = self._stereo().finish()
        for frame in frames:
            self._fuse(frame, robot_position_m)
        return frames

    def _stereo(self) -> StereoDepthFrames:
        if self.stereo is None:
            raise ConfigError(f"color-only input needs fusion.method: stereo or rgb, not "
                              f"{self.config.fusion.method!r}")
        return self.stereo

    def _fuse_fragment(self, fragment: FragmentTsdf, robot_position_m: np.ndarray | None
                       ) -> int:
        """Merge a predicted fragment (``fusion.method: rgb``) into the map, then apply the
        map bounds around ``robot_position_m`` (None = the newest keyframe's camera); returns
        the number of blocks merged. Weight decay applies as for depth frames; there are no
        depth rays, so nothing is carved (the 2D grid follows the merged TSDF)."""
        T = fragment.keyframes[-1].T_world_cam
        centre = torch.as_tensor(np.asarray(
            T[:3, 3] if robot_position_m is None else robot_position_m, dtype=np.float32),
            device=self.device)
        self._decay(fragment.stamp_ns)
        with self.timer("integrate"):
            changed = fuse_fragment(self.volume, fragment, self.config.rgb.fragment_weight,
                                    self.config.integration.max_weight)
        self.has_color |= fragment.color is not None
        with self.timer("bound"):
            self._bound(centre)
        self.frames_integrated += fragment.new_keyframes
        return changed

    def _fuse(self, frame: Frame, robot_position_m: np.ndarray | None) -> int:
        """:meth:`integrate` without the check of the fusion method."""
        self.timer.next_frame()
        with self.timer("upload"):
            ft = self._to_device(frame)
            centre = (ft.T_world_cam[:3, 3] if robot_position_m is None else torch.as_tensor(
                np.asarray(robot_position_m, dtype=np.float32), device=self.device))
        self._decay(frame.stamp_ns)
        radius = self.config.map.clearing_radius_m
        stamp = self.volume.stamp
        with self.timer("integrate"):
            if self.latent is None:
                result = self.integrator.integrate(
                    self.volume, ft, within=(centre, radius) if radius > 0 else None)
                changed = result.blocks_changed
                self.last_integration = result
                self.blocks_released["free_space"] += result.blocks_released
                self.has_color |= ft.color is not None
            else:
                with torch.no_grad():
                    changed = self.latent_integrator.integrate(self.latent, ft).blocks
        if self.refiner is not None:
            with self.timer("refine"):
                self.refiner.refine(self.volume, self.volume.changes(stamp).slots, ft)
        with self.timer("free_space"):
            self.occupancy.carve(ft, within=(centre, radius) if radius > 0 else None)
        if self.esdf is not None:
            with self.timer("esdf_carve"):
                self.esdf.carve(ft, within=(centre, radius) if radius > 0 else None)
        with self.timer("bound"):
            self._bound(centre)
        self.frames_integrated += 1
        return int(changed)

    def _refiner(self) -> TsdfRefiner | None:
        """The refiner of ``refine.enabled`` (None when off).

        Raises:
            ConfigError: refinement is enabled with a fusion method other than ``tsdf``:
                latent fusion's TSDF is decoded from features (they, not the TSDF, would
                need the gradient), and stereo depth is computed from the same color images
                by a filtered plane sweep, so fitting the map to it would fit its errors.
        """
        rc = self.config.refine
        if not rc.enabled:
            return None
        if self.config.fusion.method != "tsdf":
            raise ConfigError(f"refine.enabled needs fusion.method: tsdf, not "
                              f"{self.config.fusion.method!r}")
        return TsdfRefiner(self.truncation_m, rc.steps, rc.learning_rate_m,
                           rc.color_learning_rate, rc.stride_px, rc.depth_weight,
                           rc.color_weight, rc.free_space_weight, rc.free_space_samples,
                           rc.eikonal_weight)

    def _decay(self, stamp_ns: int) -> None:
        """Apply ``integration.decay_per_s`` for the sensor time since the last frame."""
        rate = self.config.integration.decay_per_s
        last, self._last_stamp_ns = self._last_stamp_ns, stamp_ns
        if rate <= 0 or last is None or stamp_ns <= last or self.latent is not None:
            return
        with self.timer("decay"):
            factor = math.exp(-rate * (stamp_ns - last) * 1e-9)
            self.blocks_released["decay"] += self.volume.decay(factor,
                                                               self.config.mesh.min_weight)

    def _bound(self, centre: torch.Tensor) -> None:
        """Drop blocks beyond ``map.clearing_radius_m`` of ``centre`` (3,) and evict the
        farthest blocks while the map exceeds ``map.max_memory_mb``."""
        radius, max_blocks = self.config.map.clearing_radius_m, self.max_blocks()
        if radius > 0:
            far = torch.nonzero(self._block_distances(centre) > radius).squeeze(1)
            if far.numel():
                self.blocks_released["radius"] += self._release(far)
            self.occupancy.drop_tiles_beyond(centre[:2], radius)
            if self.esdf is not None:
                self.esdf.drop_beyond(centre, radius)
        if max_blocks and self.volume.num_blocks > max_blocks:
            excess = self.volume.num_blocks - max_blocks
            farthest = torch.topk(self._block_distances(centre), excess).indices
            self.blocks_released["memory"] += self._release(farthest)
            self.volume.shrink_to(max_blocks)
            if self.esdf is not None:  # the distance field never outgrows the kept map
                self.esdf.drop_beyond(centre, float(self._block_distances(centre).max()))

    def _block_distances(self, centre: torch.Tensor) -> torch.Tensor:
        """(N,) distance of each block's centre from ``centre`` (3,), metres."""
        mid = self.volume.block_centers(self.volume.block_coords)
        return (mid - centre.to(mid.dtype)).norm(dim=1)

    def _release(self, slots: torch.Tensor) -> int:
        return int(self.volume.release(slots).numel())

    def merge(self, other: "Mapper", T_dst_src: np.ndarray | torch.Tensor | None = None
              ) -> int:
        """Fuse ``other``, a map of the same place in the same map frame (another session or
        robot), into this one: TSDF, weights and colors block by block (``core.merge``:
        exact for the TSDF up to the weight cap and change detection) and the 2D layer's
        carved free space. The mesh, the grid and the distance field follow from the change
        log; the free space only the distance field's own carving saw in ``other`` (outside
        its TSDF blocks) is not carried over. ``other`` is not changed.

        Args:
            other: the map to add.
            T_dst_src: (4, 4) rigid transform from ``other``'s map frame into this one's, for
                maps made in different frames: ``other`` is resampled into this map's grid
                first (``core.merge.resample_volume``; exact for whole-voxel translations and
                90-degree rotations, trilinear otherwise). None: the same frame.

        Returns:
            how many blocks ``other`` added.

        Raises:
            ConfigError: either map is latent fusion (its feature volume has no merge), their
                voxel size, block size, truncation or 2D layer differ, or ``T_dst_src`` is not
                a rigid transform.
        """
        if self.latent is not None or other.latent is not None:
            raise ConfigError("cannot merge latent-fusion maps (fusion.method: latent): "
                              "their feature volumes have no defined merge")
        check_mergeable(self.volume, other.volume)  # (before anything changes)
        T = None if T_dst_src is None else rigid_transform(T_dst_src)
        self.occupancy.merge_free_space(other.occupancy, T)
        added = merge_volume(self.volume, other.volume, self.config.integration.max_weight, T)
        self.frames_integrated += other.frames_integrated
        self.has_color |= other.has_color
        return added

    def agreement_due(self, every: int) -> bool:
        """Whether the next frame is one to score with :meth:`frame_agreement` when scoring
        every ``every``-th integrated frame (0 = never): frames ``0, every, 2 every, ...``,
        once the map holds a block."""
        return bool(every) and self.frames_integrated % every == 0 and self.volume.num_blocks > 0

    def frame_agreement(self, frame: Frame, render_width_px: int = 80) -> FrameAgreement:
        """How well the map explains ``frame`` before it is fused: the map rendered at the
        frame's pose against its depth (``core.map_quality``), on every ``stride``-th pixel
        with the stride that brings the render to about ``render_width_px`` pixels wide."""
        self.decode()
        ic = self.config.integration
        stride = max(1, frame.camera.width // render_width_px)
        with self.timer("quality"):
            return frame_agreement(self.volume, _as_tensor(frame.depth), frame.camera,
                                   frame.T_world_cam, min_depth_m=ic.min_depth_m,
                                   max_depth_m=ic.max_depth_m, stride=stride)

    def decode(self) -> None:
        """Latent fusion only: decode the blocks changed since the last call into the volume's
        TSDF and weight (every output calls this first; a no-op for TSDF fusion)."""
        if self.latent is not None:
            with self.timer("decode"):
                self.latent_integrator.decode_dirty(self.latent)

    def _to_device(self, frame: Frame) -> FrameTensors:
        ic = self.config.integration
        return FrameTensors.from_host(
            frame.depth, frame.camera, frame.T_world_cam, frame.color, frame.color_cam,
            frame.T_cam_color, ic.min_depth_m, ic.max_depth_m, self.staging)

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

    def export_mesh(self) -> TriangleMesh:
        """The mesh of exports (``mesh.ply`` of replay and of every saved map directory), by
        ``mesh.method``: ``marching_cubes`` is :meth:`mesh`; ``poisson`` is the screened
        Poisson mesh of the map (:func:`~recon_ros.core.poisson.poisson_mesh` with
        ``mesh.min_weight`` and the ``mesh.poisson_*`` options), computed from scratch. The
        live mesh (:meth:`update_mesh`, :meth:`mesh`) is marching cubes either way."""
        mc = self.config.mesh
        if mc.method == "marching_cubes":
            return self.mesh()
        self.decode()
        with self.timer("mesh_poisson"):
            return poisson_mesh(self.volume, mc.min_weight, mc.poisson(),
                                with_colors=self.has_color)

    def occupied_voxels(self) -> np.ndarray:
        """(N, 3) float32 centres of occupied voxels, map frame, metres (latent fusion: the
        observed voxels whose decoded occupancy probability is >= ``fusion.
        occupancy_threshold``; else those whose TSDF is below the occupancy threshold)."""
        self.decode()
        with self.timer("occupancy"):
            return self.occupancy.occupied_points().cpu().numpy()

    def occupied_voxels_with_probability(self) -> tuple[np.ndarray, np.ndarray]:
        """Latent fusion only: :meth:`occupied_voxels` and (N,) float32 occupancy probability
        of each (the decoded occupancy head: a per-voxel confidence; saved maps carry it).

        Raises:
            ConfigError: the map is not latent fusion (``fusion.method: latent``).
        """
        if self.latent is None:
            raise ConfigError("occupancy probabilities need fusion.method: latent, not "
                              f"{self.config.fusion.method!r}")
        self.decode()
        with self.timer("occupancy"):
            points, prob = self.occupancy.occupied_points_with_probability()
        return points.cpu().numpy(), prob.cpu().numpy()

    def _latent_occupancy(self) -> torch.Tensor | None:
        """The latent map's decoded occupancy probability per voxel slot (None before the
        latent volume exists)."""
        latent = getattr(self, "latent", None)  # None while __init__ builds the outputs
        return latent.occupancy if latent is not None else None

    def refresh_occupancy(self) -> None:
        """Bring the occupancy layers up to date with the map (incremental: only blocks
        changed since the last refresh). Outputs do this themselves; calling it between
        outputs keeps ``grid_cells_cleared`` counting the occupied -> free changes along the
        way rather than only between two outputs."""
        self.decode()
        with self.timer("occupancy"):
            self.occupancy.update()

    def occupancy_grid(self) -> OccupancyGrid2D:
        """The 2D occupancy grid over the configured height band."""
        self.decode()
        with self.timer("occupancy"):
            return self.occupancy.grid()

    def _esdf(self) -> EsdfLayer:
        if self.esdf is None:
            raise ConfigError("the distance field is off (esdf.enabled: false)")
        return self.esdf

    def update_esdf(self) -> int:
        """Bring the distance field up to date (incremental: only what changed since the last
        call); returns the number of voxel distances (re)assigned. Queries do this first."""
        esdf = self._esdf()
        self.decode()
        with self.timer("esdf"):
            return esdf.update()

    def distance(self, points: torch.Tensor | np.ndarray) -> DistanceQuery:
        """Distance to the nearest obstacle and its gradient at (N, 3) map-frame points,
        metres (torch tensor on any device, or numpy); see :class:`DistanceQuery`. Positive
        in free space (capped at ``esdf.max_distance_m``), negative just inside obstacles,
        NaN where the map has not observed the space around a point."""
        self.update_esdf()
        with self.timer("esdf_query"):
            return self.esdf.query(_as_tensor(points).to(torch.float32))

    def esdf_slice(self, height_m: float | None = None) -> DistanceSlice:
        """Horizontal slice of the distance field at map height ``height_m`` (None =
        ``esdf.slice_height_m``), on the voxel lattice."""
        self.update_esdf()
        height = self.config.esdf.slice_height_m if height_m is None else float(height_m)
        with self.timer("esdf_slice"):
            return self.esdf.slice(height)

    def costmap(self, center_xy: tuple[float, float] | None = None,
                size_m: float | None = None) -> OccupancyGrid2D:
        """Nav2-style costmap (0..100, 99 inscribed, -1 unknown) of the 2D grid's obstacles
        inflated by ``esdf.robot_radius_m`` / ``esdf.inflation_radius_m``; the whole grid, or
        a square rolling window of ``size_m`` around ``center_xy`` (map frame, metres)."""
        ec = self.config.esdf
        grid = self.occupancy_grid()
        with self.timer("costmap"):
            return costmaps.costmap(grid, ec.robot_radius_m, ec.inflation_radius_m,
                                    ec.cost_scaling_factor, center_xy, size_m)

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """Forget the whole map (configuration and timers are kept)."""
        if self.latent is not None:
            self.latent.reset()  # resets the shared volume too
        else:
            self.volume.reset()
        self.mesher.reset()
        self.occupancy.reset()
        if self.esdf is not None:
            self.esdf.reset()
        if self.stereo is not None:
            self.stereo.reset()
        if self.rgb is not None:
            self.rgb.reset()
        self.frames_integrated = 0
        self.has_color = False
        self.blocks_released = dict.fromkeys(self.blocks_released, 0)
        self._last_stamp_ns = None

    def save(self, path: str | Path) -> None:
        """Write the map (volume, latent features if any, free space, config) to one
        checkpoint file, atomically: a crash while saving leaves the previous file at ``path``
        (see :func:`~recon_ros.core.atomic_file.atomic_path`)."""
        self.decode()
        state = {
            "format": MAPPER_FORMAT,
            "config": self.config.to_dict(),
            "volume": self.volume.state_dict(),
            "occupancy": self.occupancy.state_dict(),
            "esdf": None if self.esdf is None else self.esdf.state_dict(),
            "frames_integrated": self.frames_integrated,
            "has_color": self.has_color,
        }
        if self.latent is not None:
            state["latent"] = self.latent.state_dict()
        with atomic_path(path) as tmp:
            torch.save(state, str(tmp))

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
        mapper._limit_capacity()
        mapper._attach_outputs()
        mapper.occupancy.load_state_dict(state["occupancy"])
        if mapper.esdf is not None and state.get("esdf") is not None:
            mapper.esdf.load_state_dict(state["esdf"])
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
        self.occupancy.follow_volume_device()
        if self.esdf is not None:
            self.esdf.to(self.device)
        if self.stereo is not None:
            self.stereo.to(self.device)
        if self.rgb is not None:
            self.rgb.to(self.device)
        self.timer.device = self.device
        return self

    # ------------------------------------------------------------------ stats
    def stats(self) -> dict[str, float | int]:
        """Map size, memory and clearing figures.

        ``memory_mb`` is what ``map.max_memory_mb`` bounds (voxel storage capacity, latent
        storage and the block index); ``blocks_released_*`` count blocks released by
        free-space clearing, weight decay, the clearing radius and memory eviction;
        ``grid_cells_cleared`` counts 2D cells that went from occupied to not occupied;
        ``esdf_memory_mb`` is the distance field's storage (outside ``map.max_memory_mb``,
        bounded by ``map.clearing_radius_m`` and by the extent of the kept blocks);
        ``esdf_voxels_updated`` counts distance assignments since the start.
        """
        mem = self.volume.memory_bytes()
        bounded = mem["voxel_capacity_bytes"] + mem["index_bytes"]
        if self.latent is not None:
            bounded += self.latent.memory_bytes()
        return {
            "frames_integrated": self.frames_integrated,
            "blocks": self.volume.num_blocks,
            "voxels": self.volume.num_blocks * self.volume.voxels_per_block,
            "bytes_per_voxel": self.volume.bytes_per_voxel() + (
                self.latent.bytes_per_voxel() if self.latent is not None else 0.0),
            **mem,
            "memory_mb": bounded / 2**20,
            "occupancy_bytes": self.occupancy.memory_bytes(),
            **{f"blocks_released_{k}": v for k, v in self.blocks_released.items()},
            "grid_cells_cleared": self.occupancy.cells_cleared,
            "mesh_triangles": self.mesher.num_triangles,
            "esdf_memory_mb": 0.0 if self.esdf is None else self.esdf.memory_bytes() / 2**20,
            "esdf_voxels_updated": 0 if self.esdf is None else self.esdf.voxels_updated,
        }


def _as_tensor(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A tensor view of an image (copying read-only numpy buffers, e.g. decoded messages)."""
    if isinstance(array, np.ndarray) and not array.flags.writeable:
        array = array.copy()
    return torch.as_tensor(array)
