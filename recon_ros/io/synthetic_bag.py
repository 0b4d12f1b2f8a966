"""Write a rendered synthetic sequence as a rosbag2 bag (sqlite3 or MCAP), no ROS needed.

Topics (all images in the registered optical frame ``camera_depth_optical_frame``):

- ``/camera/depth/image_raw`` (``sensor_msgs/msg/Image``, 16UC1 millimetres or 32FC1 metres)
  and ``/camera/depth/camera_info`` (``sensor_msgs/msg/CameraInfo``), if ``depth``
- ``/camera/color/image_raw`` (``sensor_msgs/msg/Image``, rgb8) and
  ``/camera/color/camera_info``, if ``color``
- ``/tf`` (map -> odom, odom -> base_link [, base_link -> camera_link]) at every image stamp
- ``/tf_static`` (base_link -> camera_link, camera_link -> camera_depth_optical_frame)

No ground truth is stored: the scene is rebuilt from ``(scene_name, scene_seed)`` with
:func:`recon_ros.io.synthetic.make_scene` (dynamic scenes: with
:func:`recon_ros.io.synthetic.make_dynamic` ``(scene_name, scene_seed, n_frames // 2)``), the
poses from the bag's own TF.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ..core.frame import PinholeCamera
from .synthetic.dynamic import DynamicScene
from .synthetic.noise import NoiseConfig
from .synthetic.render import iter_frames
from .synthetic.scene import Scene
from .synthetic.trajectory import Trajectory

DEPTH_TOPIC = "/camera/depth/image_raw"
DEPTH_INFO_TOPIC = "/camera/depth/camera_info"
COLOR_TOPIC = "/camera/color/image_raw"
COLOR_INFO_TOPIC = "/camera/color/camera_info"


@dataclass
class SceneBagInfo:
    """What :func:`write_scene_bag` wrote.

    Attributes:
        path: bag directory.
        storage: ``sqlite3`` or ``mcap``.
        n_frames: number of images per image topic.
        topics: topic name -> message type.
        depth_frame_id, color_frame_id: header frame ids of the images.
        world_frame: the TF root (map == the scene's world frame).
        tf_frames: every frame of the TF tree, root first.
        stamps_ns: first and last image stamp, nanoseconds.
        depth_encoding: ``16UC1`` or ``32FC1``.
        scene_name, scene_seed: rebuild the scene with ``make_scene(scene_name, scene_seed)``
            or, for a name in ``DYNAMIC_SCENES``, ``make_dynamic(scene_name, scene_seed,
            n_frames // 2)`` (``scene_name == "custom"`` cannot be rebuilt).
        noise: the noise configuration, as a dict; seed: its seed.
    """

    path: Path
    storage: str
    n_frames: int
    topics: dict[str, str]
    depth_frame_id: str
    color_frame_id: str | None
    world_frame: str
    tf_frames: list[str]
    stamps_ns: tuple[int, int]
    depth_encoding: str
    scene_name: str
    scene_seed: int | None
    noise: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


def write_scene_bag(path: str | Path, scene: Scene | DynamicScene, camera: PinholeCamera,
                    trajectory: Trajectory, storage: str = "sqlite3",
                    noise: NoiseConfig = NoiseConfig(), rate_hz: float | None = 10.0,
                    depth_encoding: str = "16UC1", color: bool = True, seed: int = 0,
                    depth: bool = True) -> SceneBagInfo:
    """Render ``scene`` along ``trajectory`` and write it as a rosbag2 bag.

    Args:
        path: bag directory to create (must not exist).
        scene: the scene; frame ``i`` of a :class:`DynamicScene` shows ``scene.scene_at(i)``.
        camera: intrinsics of the (registered) depth and color images.
        trajectory: robot poses and TF tree; its stamps are replaced by ``rate_hz`` spacing
            from its first stamp unless ``rate_hz`` is None.
        storage: ``sqlite3`` or ``mcap``.
        noise: depth noise; frame ``i`` uses ``numpy.random.default_rng([seed, i])``.
        rate_hz: image rate (None keeps the trajectory's stamps).
        depth_encoding: ``16UC1`` (millimetres) or ``32FC1`` (metres).
        color: write the color image and its camera_info.
        seed: noise seed.
        depth: write the depth image and its camera_info (False: a color-only bag, as from
            a camera without a depth sensor).

    Returns:
        A :class:`SceneBagInfo`.
    """
    from .rosbag_writer import BagWriter  # lazy: pulls in rosbags

    if depth_encoding not in ("16UC1", "32FC1"):
        raise ConfigError(f"depth_encoding must be '16UC1' or '32FC1', got {depth_encoding!r}")
    if storage not in ("sqlite3", "mcap"):
        raise ConfigError(f"storage must be 'sqlite3' or 'mcap', got {storage!r}")
    if not (depth or color):
        raise ConfigError("a bag needs depth or color images (depth=False, color=False)")
    if len(trajectory) == 0:
        raise ConfigError("trajectory has no poses")
    traj = trajectory.retimed(rate_hz) if rate_hz is not None else trajectory
    rig = traj.rig
    frame_id = rig.optical_frame
    topics = {"/tf": "tf2_msgs/msg/TFMessage", "/tf_static": "tf2_msgs/msg/TFMessage"}
    if depth:
        topics[DEPTH_TOPIC] = "sensor_msgs/msg/Image"
        topics[DEPTH_INFO_TOPIC] = "sensor_msgs/msg/CameraInfo"
    if color:
        topics[COLOR_TOPIC] = "sensor_msgs/msg/Image"
        topics[COLOR_INFO_TOPIC] = "sensor_msgs/msg/CameraInfo"
    K, w, h = camera.K, camera.width, camera.height
    n = 0
    with BagWriter(path, storage=storage) as bag:
        bag.write_tf(traj.tf_static(), static=True)
        for i, frame in enumerate(iter_frames(scene, camera, traj, noise=noise, seed=seed,
                                              color=color)):
            stamp = int(traj.stamps_ns[i])
            bag.write_tf(traj.tf_dynamic(i), static=False)
            if depth:
                bag.write_camera_info(DEPTH_INFO_TOPIC, stamp, K, w, h, frame_id)
                bag.write_depth(DEPTH_TOPIC, stamp, frame.depth, frame_id,
                                encoding=depth_encoding)
            if color and frame.color is not None:
                bag.write_camera_info(COLOR_INFO_TOPIC, stamp, K, w, h, frame_id)
                bag.write_color(COLOR_TOPIC, stamp, frame.color, frame_id, encoding="rgb8")
            n += 1
    return SceneBagInfo(
        path=Path(path), storage=storage, n_frames=n, topics=topics, depth_frame_id=frame_id,
        color_frame_id=frame_id if color else None, world_frame=rig.map_frame,
        tf_frames=[rig.map_frame, rig.odom_frame, rig.base_frame, rig.camera_link_frame,
                   rig.optical_frame],
        stamps_ns=(int(traj.stamps_ns[0]), int(traj.stamps_ns[-1])),
        depth_encoding=depth_encoding, scene_name=scene.name, scene_seed=scene.seed,
        noise=noise.to_dict(), seed=int(seed),
    )
