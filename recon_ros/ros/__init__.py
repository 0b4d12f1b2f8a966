"""The only rclpy code of recon_ros: the parameter table, message conversions, per-camera
frame assembly and the nodes (``recon_mapper``, ``recon_sim_camera``) and the bag player.

Import the submodules directly (``from recon_ros.ros.mapper_node import MapperNode``);
:mod:`.parameters` needs no ROS installation.
"""
