#!/usr/bin/env bash
# Create and fill the project venv (<repo>/.venv): torch, Python dependencies, ROS 2 Kilted from
# PyPI wheels, the interface packages built from their definitions (tools/: tf2_msgs, map_msgs,
# diagnostic_msgs; interfaces/: recon_ros_interfaces), and recon_ros itself (editable).
#
# Idempotent and fast when nothing changed: a stamp file .venv/.recon_ros_setup_<hash>, keyed on
# the inputs below, skips everything. Environment: PYTHON (default python3, >= 3.10) creates the
# venv when it is missing.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
PY="$VENV/bin/python"
REQ="$REPO/requirements"
cd "$REPO"

# Everything that decides what ends up in the venv. (package.xml, launch/ and config/ are
# not: an editable install does not copy setup.py's data_files into the venv.)
STAMP_INPUTS=(
    scripts/setup_venv.sh scripts/build_msgs.sh setup.py setup.cfg requirements/*.txt
    tools/cmake/*.cmake tools/*/CMakeLists.txt tools/*/package.xml tools/*/msg/*.msg
    interfaces/*/CMakeLists.txt interfaces/*/package.xml interfaces/*/msg/*.msg
    tools/*/srv/*.srv interfaces/*/srv/*.srv
)
hash="$(for f in "${STAMP_INPUTS[@]}"; do if [[ -f "$f" ]]; then sha256sum "$f"; fi; done \
    | sha256sum | cut -c1-16)"
STAMP="$VENV/.recon_ros_setup_$hash"
if [[ -f "$STAMP" ]]; then
    echo "setup_venv: $VENV is up to date"
    exit 0
fi

# --- the venv -------------------------------------------------------------------------------
if [[ ! -x "$PY" ]]; then
    PYTHON="${PYTHON:-python3}"
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
        echo "setup_venv: $PYTHON is older than Python 3.10; set PYTHON=/path/to/python3.x" >&2
        exit 1
    fi
    echo "setup_venv: creating $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$VENV"
fi

# --- Debian packages: libusb for open3d; cmake and a C/C++ toolchain for the interfaces -----
apt_missing=()
ldconfig_out="$(/sbin/ldconfig -p)"  # not piped into `grep -q`: SIGPIPE + pipefail = false miss
grep -q 'libusb-1.0' <<<"$ldconfig_out" || apt_missing+=(libusb-1.0-0)
command -v cmake >/dev/null || apt_missing+=(cmake)
command -v make >/dev/null || apt_missing+=(make)
command -v cc >/dev/null || apt_missing+=(gcc)
command -v c++ >/dev/null || apt_missing+=(g++)
if (( ${#apt_missing[@]} )); then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        echo "setup_venv: apt-get install ${apt_missing[*]}"
        apt-get update
        DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends "${apt_missing[@]}"
    else
        echo "setup_venv: missing system packages: ${apt_missing[*]}." >&2
        echo "  Install them (Debian/Ubuntu: sudo apt-get install ${apt_missing[*]})." >&2
        echo "  libusb-1.0-0 is needed to import open3d; cmake/make/gcc/g++ to build" \
            "tools/*_msgs and interfaces/*." >&2
    fi
fi

pip_install() {
    "$PY" -m pip install --disable-pip-version-check "$@"
}

# --- torch: keep whatever build imports (e.g. CUDA); otherwise the pinned CPU/local one -------
if ! "$PY" -c 'import torch' 2>/dev/null; then
    pip_install -r "$REQ/torch.txt"
fi

# --- Python dependencies, ROS 2 wheels, rosidl build tools -----------------------------------
pip_install -r "$REQ/core.txt" -r "$REQ/ros.txt" -r "$REQ/ros-build.txt" -r "$REQ/test.txt"

# --- tools/ (tf2_msgs, map_msgs, diagnostic_msgs: not on PyPI), interfaces/ -----------------
"$REPO/scripts/build_msgs.sh" "$VENV"

# --- recon_ros itself -----------------------------------------------------------------------
pip_install -e "$REPO" --no-deps

# --- verify ---------------------------------------------------------------------------------
AMENT_PREFIX_PATH="$VENV" "$PY" -c 'from tf2_msgs.msg import TFMessage
from map_msgs.msg import OccupancyGridUpdate
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from recon_ros_interfaces.msg import Mesh, MeshBlock
from recon_ros_interfaces.srv import LoadMap, Render, SaveMap
import rclpy, torch'
[[ -x "$VENV/bin/recon-ros" ]] || { echo "setup_venv: $VENV/bin/recon-ros is missing" >&2; exit 1; }
if ! "$PY" -c 'import open3d' 2>/dev/null; then
    echo "setup_venv: WARNING: open3d does not import (is libusb-1.0-0 installed?)" >&2
fi

rm -f "$VENV"/.recon_ros_setup_*
touch "$STAMP"
echo "setup_venv: $VENV is ready"
