#!/usr/bin/env bash
# Build the ROS 2 interface packages of this repository from their definitions and install them
# into a venv: every package under tools/ and interfaces/ that has msg/ or srv/.
#
# tools/ holds packages that ROS 2 from PyPI wheels lacks (tf2_msgs, map_msgs, diagnostic_msgs:
# each only the messages recon_ros uses, identical to upstream, so they keep upstream's type
# hashes and talk to a real ROS 2 graph); interfaces/ holds recon_ros's own
# (recon_ros_interfaces), which colcon builds on a ROS 2 install. The ament/rosidl wheels
# (requirements/ros-build.txt) generate them; -DRECON_ROS_PYPI_WHEELS=ON tells the interfaces/
# packages to fix up the wheels' include dirs, as tools/ packages always do. A package is
# skipped when the venv holds the same definitions (share/<pkg>/msg, srv: rosidl installs the
# sources) and all of its messages and services import; an edited definition rebuilds it.
#
# Usage: scripts/build_msgs.sh [VENV]   (default: <repo>/.venv)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(cd "${1:-$REPO/.venv}" && pwd)"
PY="$VENV/bin/python"

# ament_index / CMake must find the wheels' packages in the venv prefix.
export AMENT_PREFIX_PATH="$VENV"
export CMAKE_PREFIX_PATH="$VENV"

BUILD_ROOT="$(mktemp -d "${TMPDIR:-/tmp}/recon_ros_msgs_build.XXXXXX")"
trap 'rm -rf "$BUILD_ROOT"' EXIT

shopt -s nullglob

# installed_same SRC PKG: the venv's share/PKG holds every definition of SRC, unchanged.
installed_same() {
    local def
    for def in "$1"/msg/*.msg "$1"/srv/*.srv; do
        cmp -s "$def" "$VENV/share/$2/${def#"$1"/}" || return 1
    done
}
for src in "$REPO"/tools/*/ "$REPO"/interfaces/*/; do
    src="${src%/}"
    pkg="$(basename "$src")"
    # `from tf2_msgs.msg import TFMessage; TFMessage(); ...` for every message of the package,
    # `from recon_ros_interfaces.srv import SaveMap; SaveMap.Request(); ...` for every service
    imports="$(for msg in "$src"/msg/*.msg; do
        name="$(basename "$msg" .msg)"
        printf 'from %s.msg import %s; %s();' "$pkg" "$name" "$name"
    done
    for srv in "$src"/srv/*.srv; do
        name="$(basename "$srv" .srv)"
        printf 'from %s.srv import %s; %s.Request(); %s.Response();' "$pkg" "$name" "$name" \
            "$name"
    done)"
    if [[ -z "$imports" ]]; then
        continue  # not an interface package (tools/cmake)
    fi
    if installed_same "$src" "$pkg" && "$PY" -c "$imports" 2>/dev/null; then
        echo "$pkg: up to date in $VENV, skipping build"
        continue
    fi
    echo "$pkg: building from $src into $VENV"
    cmake -S "$src" -B "$BUILD_ROOT/$pkg" --no-warn-unused-cli \
        -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_INSTALL_PREFIX="$VENV" \
        -DPython3_EXECUTABLE="$PY" \
        -DBUILD_TESTING=OFF \
        -DRECON_ROS_PYPI_WHEELS=ON
    cmake --build "$BUILD_ROOT/$pkg" -j "$(nproc)"
    cmake --install "$BUILD_ROOT/$pkg"
    "$PY" -c "$imports"
    echo "$pkg: installed into $VENV"
done
