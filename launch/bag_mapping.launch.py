"""Map a recorded rosbag2 with the live node in simulated time.

    ros2 launch recon_ros bag_mapping.launch.py bag:=/path/to/bag [rate:=1.0]
        [camera:=camera] [params_file:=...] [rviz:=true]

The bag is played by ``recon-ros play`` (which publishes /clock; use ``ros2 bag play --clock``
where rosbag2 is installed) and mapped by mapping.launch.py with ``use_sim_time:=true``.
For deterministic, faster-than-real-time processing use ``recon-ros replay`` instead.

Every process is found in the package's ``lib/recon_ros`` (where colcon's ament_python build
installs the console scripts; they are not on ``PATH``): the nodes as ``Node(package=...,
executable=...)``, the player through ``ExecutableInPackage``, the substitution ``Node`` uses.
The player is not a ``Node`` because launch_ros appends ``--ros-args`` to a Node's command
line, which ``recon-ros play`` does not accept. The tests run ``PLAYER_COMMAND BAG --rate R``.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import ExecutableInPackage, FindPackageShare

PACKAGE = "recon_ros"
# the console script in lib/recon_ros, then its arguments
PLAYER_COMMAND = ["recon-ros", "play"]
MAPPING_LAUNCH = "launch/mapping.launch.py"
PARAMS_FILE = "config/mapper.yaml"


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 directory, .db3 or .mcap"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback speed"),
        DeclareLaunchArgument("camera", default_value="camera",
                              description="namespace of the bag's camera topics"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([share, PARAMS_FILE]),
                              description="recon_mapper parameters (YAML)"),
        DeclareLaunchArgument("rviz", default_value="true", description="start RViz"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(PathJoinSubstitution([share, MAPPING_LAUNCH])),
            launch_arguments={"camera": LaunchConfiguration("camera"),
                              "params_file": LaunchConfiguration("params_file"),
                              "use_sim_time": "true",
                              "rviz": LaunchConfiguration("rviz")}.items(),
        ),
        ExecuteProcess(
            cmd=[ExecutableInPackage(executable=PLAYER_COMMAND[0], package=PACKAGE),
                 *PLAYER_COMMAND[1:], LaunchConfiguration("bag"),
                 "--rate", LaunchConfiguration("rate")],
            output="screen",
        ),
    ])
