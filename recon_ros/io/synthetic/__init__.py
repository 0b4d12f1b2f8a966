"""Synthetic RGB-D scenes with analytic SDFs and exact ground truth (ROS-free).

- :mod:`.shapes`: ``Sphere``, ``Box`` (yaw), ``Cylinder`` (vertical), ``Room`` (inside of a
  box) with exact signed distance, exact ray intersection and area sampling.
- :mod:`.scene`: ``Scene`` (room + objects, union SDF, procedural texture),
  ``make_demo_scene``, ``make_random_scene(seed)``, ``make_scene(name, seed)``.
- :mod:`.render`: exact ray-cast ``render`` / ``render_depth`` / ``render_color``,
  ``iter_frames`` (-> ``core.Frame``).
- :mod:`.noise`: ``NoiseConfig`` and ``apply_noise`` (multiplicative, Kinect axial, outlier
  blobs, holes, range cap).
- :mod:`.trajectory`: ``orbit_trajectory``, ``room_scan_trajectory``; each pose comes from
  a REP-105 TF tree (map -> odom -> base_link -> camera_link -> camera_depth_optical_frame).
- :mod:`.dynamic`: ``DynamicScene`` (a static ``Scene`` plus ``DynamicObject`` entries present
  during frame intervals; ``scene_at(i)``), ``make_dynamic_scene(seed, frames_per_loop)`` (the
  two-pass removed/added objects benchmark and its trajectory), ``make_dynamic(name, ...)``.
- :mod:`.ground_truth`: ``sample_surface_points``, ``visible_surface_points``,
  ``gt_occupancy_grid``; for dynamic scenes ``exposed_surface_points``, ``visible_mask``,
  ``change_surface_points``, ``footprint_cells``, ``seen_free_cells`` and all of them at once,
  ``change_ground_truth``.

Conventions: world == map frame, z up; optical frames x right, y down, z forward; depth is
z in metres (0 = no measurement); transforms ``T_target_source``.
"""

from .dynamic import (
    DYNAMIC_SCENES,
    DynamicObject,
    DynamicScene,
    check_layout,
    dynamic_scene_from_dict,
    frame_scene,
    make_dynamic,
    make_dynamic_scene,
    make_table,
)
from .ground_truth import (
    ChangeGroundTruth,
    change_ground_truth,
    change_surface_points,
    exposed_surface_points,
    footprint_cells,
    gt_occupancy_grid,
    sample_surface_points,
    seen_free_cells,
    visible_mask,
    visible_surface_points,
)
from .noise import (
    NoiseConfig,
    NoiseMasks,
    add_holes,
    add_outlier_blobs,
    apply_noise,
    apply_range,
    blob_labels,
    kinect_axial_noise,
    kinect_axial_sigma,
    multiplicative_noise,
)
from .render import (
    RenderResult,
    backproject_depth,
    camera_ray_components,
    camera_rays,
    cast_camera_rays,
    default_camera,
    frame_seed_rng,
    iter_frames,
    render,
    render_color,
    render_depth,
)
from .scene import (
    DEFAULT_PATH_CLEARANCE_M,
    DEFAULT_SCAN_MARGIN_M,
    SCENES,
    Scene,
    make_demo_scene,
    make_random_scene,
    make_scene,
    scene_from_dict,
)
from .shapes import Box, Cylinder, Room, Shape, Sphere, shape_from_dict
from .trajectory import (
    DEFAULT_START_NS,
    Q_LINK_OPTICAL_XYZW,
    CameraRig,
    TfTuple,
    Trajectory,
    compose_tf_chain,
    matrix_to_quat_xyzw,
    orbit_trajectory,
    quat_xyzw_to_matrix,
    repeat_trajectory,
    room_scan_trajectory,
)

__all__ = [
    "Box", "CameraRig", "ChangeGroundTruth", "Cylinder", "DEFAULT_PATH_CLEARANCE_M",
    "DEFAULT_SCAN_MARGIN_M", "DEFAULT_START_NS", "DYNAMIC_SCENES", "DynamicObject", "DynamicScene",
    "NoiseConfig", "NoiseMasks", "Q_LINK_OPTICAL_XYZW", "RenderResult", "Room", "SCENES", "Scene",
    "Shape", "Sphere", "TfTuple", "Trajectory", "add_holes", "add_outlier_blobs", "apply_noise",
    "apply_range", "backproject_depth", "blob_labels", "camera_ray_components", "camera_rays",
    "cast_camera_rays", "change_ground_truth", "change_surface_points", "check_layout",
    "compose_tf_chain", "default_camera", "dynamic_scene_from_dict", "exposed_surface_points",
    "footprint_cells", "frame_scene", "frame_seed_rng", "gt_occupancy_grid", "iter_frames",
    "kinect_axial_noise", "kinect_axial_sigma", "make_demo_scene", "make_dynamic",
    "make_dynamic_scene", "make_random_scene", "make_scene", "make_table", "matrix_to_quat_xyzw",
    "multiplicative_noise", "orbit_trajectory", "quat_xyzw_to_matrix", "render", "render_color",
    "render_depth", "repeat_trajectory", "room_scan_trajectory", "sample_surface_points",
    "scene_from_dict", "seen_free_cells", "shape_from_dict", "visible_mask",
    "visible_surface_points",
]
