#!/usr/bin/env bash
# Every GPU check in one command (issue 10): the environment, the test suite with
# `--device DEV`, `recon-ros bench --device DEV` against Open3D's VoxelBlockGrid on the same
# device, and the latent-fusion benchmark; all of it written as Markdown to one file.
#
# Usage: benchmarks/gpu_check.sh [options]
#   --device DEV        torch device (default cuda:0); a CUDA device that torch cannot see is
#                       an error (exit 2) before anything runs
#   --out FILE          Markdown report (default out/gpu_check.md); each part's whole output
#                       goes to FILE's stem + .<part>.log beside it
#   --parts LIST        comma-separated subset of tests,bench,latent (default: all three; the
#                       environment is always recorded)
#   --tests "ARGS"      pytest selection and options (default: test, the whole suite)
#   --bench-args "ARGS" more options for `recon-ros bench` (default: none, its defaults)
#   --latent-args "ARGS" options for `python -m recon_ros.models.bench_latent` (default: none)
#   --timeout S         limit per part in seconds, 0 = none (default 180: the three parts end
#                       within about 9.5 minutes)
#   --python PATH       interpreter (default: $PYTHON, else .venv/bin/python if present, else
#                       python3, as on a GPU machine that has only the checkout)
# ARGS strings are split on whitespace (no quoting inside them).
# Exit status: 0 when every part passed, 1 when a part failed or timed out (the report holds
# what ran), 2 for a usage error or an unusable device.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEVICE="cuda:0"
OUT_FILE="out/gpu_check.md"
PARTS="tests,bench,latent"
TESTS="test"
BENCH_ARGS=""
LATENT_ARGS=""
PART_TIMEOUT=180
PY="${PYTHON:-}"
COMMAND_LINE="benchmarks/gpu_check.sh"
for arg in "$@"; do  # as typed: arguments with spaces or other characters in single quotes
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=,+-]+$ ]]; then COMMAND_LINE+=" $arg"; else COMMAND_LINE+=" '$arg'"; fi
done

die() {
    echo "gpu_check: error: $*" >&2
    exit 2
}

while (($#)); do
    case "$1" in
        --device | --out | --parts | --tests | --bench-args | --latent-args | --timeout | --python)
            (($# >= 2)) || die "$1 needs a value"
            case "$1" in
                --device) DEVICE="$2" ;;
                --out) OUT_FILE="$2" ;;
                --parts) PARTS="$2" ;;
                --tests) TESTS="$2" ;;
                --bench-args) BENCH_ARGS="$2" ;;
                --latent-args) LATENT_ARGS="$2" ;;
                --timeout) PART_TIMEOUT="$2" ;;
                --python) PY="$2" ;;
            esac
            shift 2
            ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

[[ "$PART_TIMEOUT" =~ ^[0-9]+$ ]] || die "--timeout must be a whole number of seconds, not '$PART_TIMEOUT'"
for part in ${PARTS//,/ }; do
    [[ "$part" =~ ^(tests|bench|latent)$ ]] || die "unknown part '$part' in --parts (tests, bench, latent)"
done
if [[ -z "$PY" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="python3"; fi
fi
command -v "$PY" >/dev/null || die "python interpreter '$PY' not found"

OUT_FILE="$(realpath -m "$OUT_FILE")"
LOG_STEM="${OUT_FILE%.md}"
mkdir -p "$(dirname "$OUT_FILE")"
cd "$ROOT"

# The ROS tests' environment, as the Makefile's `test` target exports it (kept when set).
export AMENT_PREFIX_PATH="${AMENT_PREFIX_PATH:-$("$PY" -c 'import sys; print(sys.prefix)')}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export ROS_LOG_DIR="${ROS_LOG_DIR:-$ROOT/build/ros_log}"
mkdir -p "$ROS_LOG_DIR"
export COLUMNS=200 PYTHONUNBUFFERED=1  # wide rich tables in the logs; output as it happens

report() { printf '%s\n' "$@" >>"$OUT_FILE"; }

# ------------------------------------------------------------------------------ environment
{
    echo "# GPU check"
    echo
    echo "- command: \`$COMMAND_LINE\`"
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), host $(uname -n), $(getconf _NPROCESSORS_ONLN) CPU cores"
    echo "- device under test: \`$DEVICE\`"
    echo
    echo "## Environment"
    echo
} >"$OUT_FILE"
env_status=0
"$PY" - "$DEVICE" >>"$OUT_FILE" 2>"$LOG_STEM.env.log" <<'EOF' || env_status=$?
"""Markdown lines describing torch, CUDA and Open3D; exit 3 when the device is not usable."""
import importlib.util
import platform
import sys

import torch

requested = sys.argv[1]
print(f"- python {platform.python_version()} ({sys.executable}), {platform.platform()}")
print(f"- torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'}), "
      f"torch.cuda.is_available(): {torch.cuda.is_available()}, "
      f"devices: {torch.cuda.device_count()}")
for i in range(torch.cuda.device_count()):
    print(f"- cuda:{i}: {torch.cuda.get_device_name(i)}")
try:
    import open3d
    import open3d.core as o3c
except ImportError as exc:
    print(f"- open3d: not importable ({exc}): the bench cannot compare against Open3D")
else:
    print(f"- open3d {open3d.__version__}, open3d.core.cuda.is_available(): "
          f"{o3c.cuda.is_available()}, CUDA devices: {o3c.cuda.device_count()}")
missing = [name for name in ("open3d", "rosbags", "transforms3d", "cv2", "yaml", "typer",
                             "rich", "pytest", "rclpy") if importlib.util.find_spec(name) is None]
print(f"- Python packages missing: {', '.join(missing) or 'none'} (the tests and benches that "
      "need them skip or fail)")
try:
    device = torch.device(requested)
except RuntimeError as exc:
    sys.exit(f"device {requested!r} is not a torch device: {exc}")
if device.type == "cuda":
    index = device.index or 0
    if not torch.cuda.is_available() or index >= torch.cuda.device_count():
        print(f"device {requested} requested but torch {torch.__version__} cannot see it "
              f"(torch.cuda.is_available(): {torch.cuda.is_available()}, "
              f"{torch.cuda.device_count()} CUDA device(s)); nothing was run", file=sys.stderr)
        sys.exit(3)
EOF
sed -n '/^## Environment/,$p' "$OUT_FILE"
if ((env_status == 0)); then
    rm -f "$LOG_STEM.env.log"
else
    message="$(cat "$LOG_STEM.env.log")"
    report "" "**error:** ${message:-the environment probe failed (exit $env_status)}"
    die "${message:-the environment probe failed (exit $env_status)}; report: $OUT_FILE"
fi

# ----------------------------------------------------------------------------------- parts
declare -a SUMMARY=()
failed=0

# run_part NAME TITLE CMD...: run CMD with the part's time limit, its whole output in
# $LOG_STEM.NAME.log; reports its result and time, appends it to SUMMARY, sets `failed`.
run_part() {
    local name="$1" title="$2" start result part_status=0 part_seconds
    shift 2
    echo "== $title: $*" >&2
    start=$SECONDS
    if ((PART_TIMEOUT > 0)); then
        timeout --kill-after=10 "$PART_TIMEOUT" "$@" >"$LOG_STEM.$name.log" 2>&1 || part_status=$?
    else
        "$@" >"$LOG_STEM.$name.log" 2>&1 || part_status=$?
    fi
    part_seconds=$((SECONDS - start))
    if ((part_status == 0)); then
        result="passed"
    elif ((PART_TIMEOUT > 0 && (part_status == 124 || part_status == 137))); then
        result="timed out after ${PART_TIMEOUT} s"
    else
        result="failed (exit $part_status)"
    fi
    ((part_status == 0)) || failed=1
    SUMMARY+=("| $name | $result | $part_seconds |")
    report "" "## $title" "" "\`$*\`" "" \
        "Result: **$result** in $part_seconds s; whole output: \`$LOG_STEM.$name.log\`" ""
    echo "   $result in $part_seconds s" >&2
}

# fenced FILE: append FILE to the report as a text block.
fenced() {
    report '```text'
    cat "$1" >>"$OUT_FILE"
    report '```'
}

for part in ${PARTS//,/ }; do
    case "$part" in
        tests)
            read -r -a test_args <<<"$TESTS"
            run_part tests "Tests" "$PY" -m pytest -q -rfEs --device "$DEVICE" "${test_args[@]}"
            log="$LOG_STEM.tests.log"
            # pytest's closing line, e.g. "512 passed, 40 skipped in 300.12s".
            counts='[0-9]+ (passed|failed|errors?|skipped|deselected|xfailed|xpassed)'
            line="$(grep -E "($counts|no tests ran).* in [0-9.]+s" "$log" | tail -n 1 \
                | sed -E 's/^=+ //; s/ =+$//')" || true
            report "Pytest result line: \`${line:-none (pytest did not finish)}\`"
            if grep -q "short test summary info" "$log"; then
                report "" "Failures, errors and skips:" ""
                sed -n '/short test summary info/,$p' "$log" | sed '1d; $d' >"$LOG_STEM.tests.summary"
                fenced "$LOG_STEM.tests.summary"
                rm -f "$LOG_STEM.tests.summary"
            fi
            ;;
        bench)
            read -r -a bench_args <<<"$BENCH_ARGS"
            run_part bench "recon-ros bench vs Open3D" \
                "$PY" -m recon_ros.cli bench --device "$DEVICE" "${bench_args[@]}"
            fenced "$LOG_STEM.bench.log"
            ;;
        latent)
            read -r -a latent_args <<<"$LATENT_ARGS"
            run_part latent "Latent fusion bench" \
                "$PY" -m recon_ros.models.bench_latent --device "$DEVICE" "${latent_args[@]}"
            fenced "$LOG_STEM.latent.log"
            ;;
    esac
done

report "" "## Summary" "" "| part | result | seconds |" "|---|---|---|" "${SUMMARY[@]}"
echo "report: $OUT_FILE" >&2
if ((failed)); then
    echo "gpu_check: some parts failed (see the summary in $OUT_FILE)" >&2
    exit 1
fi
