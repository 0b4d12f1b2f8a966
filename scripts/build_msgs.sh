#!/usr/bin/env bash
# Build the ROS 2 message packages in tools/ (tf2_msgs, map_msgs: each holds only the messages
# recon_ros uses, identical to upstream) from their definitions and install them into a venv.
#
# ROS 2 from PyPI wheels has neither package; the ament/rosidl wheels
# (requirements/ros-build.txt) can generate them. The results have upstream's type hashes, so
# they talk to a real ROS 2 graph. A package is skipped when all of its messages already
# import in the venv.
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

for src in "$REPO"/tools/*/msg; do
    src="$(dirname "$src")"
    pkg="$(basename "$src")"
    # `from tf2_msgs.msg import TFMessage; ...` for every message of the package
    imports="$(for msg in "$src"/msg/*.msg; do
        printf 'from %s.msg import %s; %s();' "$pkg" "$(basename "$msg" .msg)" \
            "$(basename "$msg" .msg)"
    done)"
    if "$PY" -c "$imports" 2>/dev/null; then
        echo "$pkg: already importable in $VENV, skipping build"
        continue
    fi
    echo "$pkg: building from $src into $VENV"
    cmake -S "$src" -B "$BUILD_ROOT/$pkg" \
        -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_INSTALL_PREFIX="$VENV" \
        -DPython3_EXECUTABLE="$PY" \
        -DBUILD_TESTING=OFF
    cmake --build "$BUILD_ROOT/$pkg" -j "$(nproc)"
    cmake --install "$BUILD_ROOT/$pkg"
    "$PY" -c "$imports"
    echo "$pkg: installed into $VENV"
done
