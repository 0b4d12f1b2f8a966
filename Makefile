# recon_ros developer entry points. `make test` is the single test command (CI: .ci/run).
VENV := $(CURDIR)/.venv

# ROS 2 from the venv's wheels: ament_index must look in the venv; keep DDS discovery and ROS
# logs local to this checkout.
export AMENT_PREFIX_PATH := $(VENV)
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_LOG_DIR := $(CURDIR)/build/ros_log

.PHONY: venv demo test bench gpu-check clean

venv:
	scripts/setup_venv.sh

demo: venv
	$(VENV)/bin/recon-ros demo --out out/demo

test: venv
	mkdir -p $(ROS_LOG_DIR)
	$(VENV)/bin/python -m pytest -q test

bench: venv
	$(VENV)/bin/recon-ros bench

# Every GPU check in one run (test suite, bench vs Open3D, latent bench) into out/gpu_check.md;
# options in GPU_CHECK_ARGS (benchmarks/gpu_check.sh --help), e.g. GPU_CHECK_ARGS="--device cpu".
# No venv prerequisite: on a lent GPU machine the venv cannot be built and python3 is used.
gpu-check:
	benchmarks/gpu_check.sh $(GPU_CHECK_ARGS)

# Build outputs only; the venv stays (remove .venv by hand to rebuild it from scratch).
clean:
	rm -rf build out .pytest_cache
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
