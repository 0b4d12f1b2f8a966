"""recon_ros: GPU-ready volumetric mapping (TSDF, learned fusion) for ROS 2.

Layers (dependencies point one way): ``ros -> io -> core`` and ``cli -> io, core``.
``recon_ros.core`` and ``recon_ros.io`` never import rclpy or any ``*_msgs`` package.
"""

__version__ = "0.1.0"
