#!/usr/bin/env bash
# Build tf2_msgs (TFMessage) from its definition in tools/tf2_msgs/ and install it into a venv.
#
# ROS 2 from PyPI wheels has no tf2_msgs; the ament/rosidl wheels (requirements/ros-build.txt)
# can generate it. The result has upstream's type hash, so it talks to a real ROS 2 /tf.
# Skipped when tf2_msgs already imports in the venv.
#
# Usage: scripts/build_tf2_msgs.sh [VENV]   (default: <repo>/.venv)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(cd "${1:-$REPO/.venv}" && pwd)"
PY="$VENV/bin/python"
SRC="$REPO/tools/tf2_msgs"

# ament_index / CMake must find the wheels' packages in the venv prefix.
export AMENT_PREFIX_PATH="$VENV"
export CMAKE_PREFIX_PATH="$VENV"

if "$PY" -c 'from tf2_msgs.msg import TFMessage' 2>/dev/null; then
    echo "tf2_msgs: already importable in $VENV, skipping build"
    exit 0
fi

BUILD="$(mktemp -d "${TMPDIR:-/tmp}/tf2_msgs_build.XXXXXX")"
trap 'rm -rf "$BUILD"' EXIT

echo "tf2_msgs: building from $SRC into $VENV"
cmake -S "$SRC" -B "$BUILD" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DPython3_EXECUTABLE="$PY" \
    -DBUILD_TESTING=OFF
cmake --build "$BUILD" -j "$(nproc)"
cmake --install "$BUILD"

"$PY" -c 'from tf2_msgs.msg import TFMessage; TFMessage()'
echo "tf2_msgs: installed into $VENV"
