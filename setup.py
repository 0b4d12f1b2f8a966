"""ament_python build of recon_ros (also installable with plain ``pip install -e .``)."""

from __future__ import annotations

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "recon_ros"
HERE = Path(__file__).resolve().parent
# Files shipped inside the Python package: learned-model weights and their metadata.
PACKAGE_DATA_SUFFIXES = (".json", ".pt", ".safetensors")


def package_data_files() -> list[str]:
    """Data files under ``recon_ros/``, relative to it (old setuptools has no ``**`` globs)."""
    root = HERE / PACKAGE
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and p.suffix in PACKAGE_DATA_SUFFIXES)


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={PACKAGE: package_data_files()},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", sorted(glob("launch/*.py"))),
        (f"share/{PACKAGE}/config",
         sorted(glob("config/*.yaml") + glob("config/*.rviz") + glob("config/*.xml"))),
    ],
    python_requires=">=3.10",
    # Dependencies are installed by scripts/setup_venv.sh (requirements/*.txt) or rosdep
    # (package.xml); a ROS install provides rclpy and the messages, not pip.
    install_requires=[],
    zip_safe=False,
    maintainer="recon_ros maintainers",
    maintainer_email="recon_ros@example.com",
    description="Volumetric mapping (TSDF, learned fusion) for ROS 2: meshes and Nav2 maps.",
    license="Apache-2.0",
    entry_points={"console_scripts": [
        f"recon-ros = {PACKAGE}.cli:main",
        f"recon_mapper = {PACKAGE}.ros.mapper_node:main",
        f"recon_sim_camera = {PACKAGE}.ros.sim_camera_node:main",
    ]},
)
