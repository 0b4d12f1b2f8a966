"""Map with recon_mapper from a live depth camera (and optionally RViz).

    ros2 launch recon_ros mapping.launch.py [camera:=camera] [params_file:=...]
        [overlay_file:=...] [use_sim_time:=false] [rviz:=true]

    # a RealSense D435 (realsense2_camera with align_depth.enable:=true)
    ros2 launch recon_ros mapping.launch.py camera:=camera/camera \
        overlay_file:=$(ros2 pkg prefix recon_ros)/share/recon_ros/config/realsense_d435.yaml

The mapper subscribes ``<camera>/depth/image_raw``, ``<camera>/depth/camera_info``,
``<camera>/color/image_raw``, ``<camera>/color/camera_info`` (names inside the namespace come
from the params file; config/realsense_d435.yaml has a RealSense's), ``/tf`` and
``/tf_static``.
It is started exactly as ``recon_mapper --ros-args -r __node:=recon_mapper --params-file
<params_file> --params-file <overlay_file> -p use_sim_time:=... -p cameras:=[<camera>]``; the
tests start it that way (they read this file's constants and check its ``Node(...)`` call).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "recon_ros"
MAPPER_EXECUTABLE = "recon_mapper"
MAPPER_NAME = "recon_mapper"
PARAMS_FILE = "config/mapper.yaml"
RVIZ_CONFIG = "config/recon_ros.rviz"


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    params_file = LaunchConfiguration("params_file")
    overlay_file = LaunchConfiguration("overlay_file")
    camera = LaunchConfiguration("camera")
    use_sim_time = LaunchConfiguration("use_sim_time")
    return LaunchDescription([
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([share, PARAMS_FILE]),
                              description="recon_mapper parameters (YAML)"),
        DeclareLaunchArgument("overlay_file", default_value=params_file,
                              description="parameters applied over params_file, e.g. "
                                          "config/realsense_d435.yaml (default: none)"),
        DeclareLaunchArgument("camera", default_value="camera",
                              description="namespace of the depth camera's topics"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="follow /clock (bag playback, simulators)"),
        DeclareLaunchArgument("rviz", default_value="true", description="start RViz"),
        Node(
            package=PACKAGE,
            executable=MAPPER_EXECUTABLE,
            name=MAPPER_NAME,
            output="screen",
            # A list of one list of substitutions becomes a string array parameter.
            parameters=[params_file, overlay_file,
                        {"use_sim_time": use_sim_time, "cameras": [[camera]]}],
        ),
        Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            arguments=["-d", PathJoinSubstitution([share, RVIZ_CONFIG])],
            parameters=[{"use_sim_time": use_sim_time}],
            condition=IfCondition(LaunchConfiguration("rviz")),
        ),
    ])
