"""The no-hardware demo: a synthetic RGB-D camera, the mapper and RViz.

    ros2 launch recon_ros demo.launch.py [rate_hz:=10.0] [rviz:=true]

recon_sim_camera renders a synthetic room (recon_ros.io.synthetic.make_demo_scene) along a
loop and publishes it in the ``camera`` namespace with TF; mapping.launch.py's mapper maps it.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "recon_ros"
SIM_CAMERA_EXECUTABLE = "recon_sim_camera"
SIM_CAMERA_NAME = "recon_sim_camera"
CAMERA_NAMESPACE = "camera"
MAPPING_LAUNCH = "launch/mapping.launch.py"


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("rate_hz", default_value="10.0",
                              description="synthetic camera frame rate"),
        DeclareLaunchArgument("rviz", default_value="true", description="start RViz"),
        Node(
            package=PACKAGE,
            executable=SIM_CAMERA_EXECUTABLE,
            name=SIM_CAMERA_NAME,
            namespace=CAMERA_NAMESPACE,
            output="screen",
            parameters=[{"rate_hz": LaunchConfiguration("rate_hz")}],
        ),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(PathJoinSubstitution([share, MAPPING_LAUNCH])),
            launch_arguments={"camera": CAMERA_NAMESPACE,
                              "rviz": LaunchConfiguration("rviz")}.items(),
        ),
    ])
