"""design.md section 2: core and io never import rclpy or any *_msgs package."""

import subprocess
import sys
from pathlib import Path

CODE = """
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        root = name.split('.')[0]
        if root in ('rclpy', 'tf2_ros', 'launch', 'launch_ros') or root.endswith('_msgs'):
            raise ImportError('blocked: ' + name)
        return None
sys.meta_path.insert(0, Block())
import recon_ros.core, recon_ros.io
names = []
for pkg in (recon_ros.core, recon_ros.io):
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):
        importlib.import_module(info.name)
        names.append(info.name)
bad = [m for m in sys.modules if m.split('.')[0] == 'rclpy' or m.split('.')[0].endswith('_msgs')]
assert not bad, bad
print(len(names))
"""


def test_core_and_io_import_with_ros_blocked():
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", CODE], cwd=root, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 15  # every module of both layers was imported
