"""ROS-free data access: rosbag2 source and writer, TF buffer, dataset folders, synthetic scenes
and map files. Nothing here imports rclpy or any ``*_msgs`` package (message types come from the
pure-Python ``rosbags`` typestores). Import the submodules directly, e.g.
``from recon_ros.io.tf_buffer import TfBuffer``.
"""
