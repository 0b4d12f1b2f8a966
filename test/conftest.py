"""Shared fixtures: the torch device under test, one torch thread, and the real data folder
beside the checkout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu",
                     help="torch device for core tests, e.g. cpu or cuda:0")


@pytest.fixture
def device(request: pytest.FixtureRequest) -> str:
    dev = request.config.getoption("--device")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("CUDA requested but not available")
    return dev


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one CPU thread for the test (the figures its code computes, e.g. op counts
    or float summation order, do not depend on the machine's cores), restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 0.0, 1.0])
            ) -> np.ndarray:
    """T_world_cam of an optical frame (z forward, y down) at ``eye`` looking at ``target``."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:
        x = np.cross(z, np.array([0.0, 1.0, 0.0]))
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack((x, y, z), axis=1)
    T[:3, 3] = eye
    return T


def render_sphere_depth(K: np.ndarray, width: int, height: int, T_world_cam: np.ndarray,
                        center: np.ndarray, radius: float) -> np.ndarray:
    """Exact z-depth (H, W) of a sphere by ray intersection, 0 where the ray misses."""
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    rays = np.stack(((u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)),
                    -1)  # camera frame, z = 1
    R, t = T_world_cam[:3, :3], T_world_cam[:3, 3]
    d = rays @ R.T  # world directions with unit z in camera
    oc = t - center
    a = (d * d).sum(-1)
    b = 2 * (d @ oc)
    c = oc @ oc - radius**2
    disc = b * b - 4 * a * c
    s = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)  # parameter = z-depth since ray z = 1
    return np.where((disc > 0) & (s > 0), s, 0.0).astype(np.float32)
