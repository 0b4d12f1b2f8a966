"""Two depth cameras (two namespaces of the ``cameras`` parameter, two optical frames) mapped
into one map."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import ROS_SKIP_REASON, SynthSequence, surface_distance

pytest.importorskip("rclpy", reason=ROS_SKIP_REASON, exc_type=ImportError)

from .helpers import mesh_state, mesh_vertices

CAMERAS = ("camera", "left")
pytestmark = pytest.mark.parametrize("mapper_run", [{"cameras": f"[{', '.join(CAMERAS)}]"}],
                                     indirect=True, ids=["mapper"])
T0 = 1_700_000_000_000_000_000


def test_two_cameras_map_into_one_map(mapper_run, sequence: SynthSequence) -> None:
    h = mapper_run.harness
    for ns in CAMERAS:
        h.wait_subscribed(camera=ns)
    static = sequence.tf_static(T0)
    optical = static[-1]  # camera_link -> the optical frame
    # the second camera sits exactly where the first is, under its own frame name
    h.publish_static([*static, (optical[0], "left_optical_frame", *optical[2:])])
    half = len(sequence) // 2
    for k in range(len(sequence)):
        stamp = T0 + (k + 1) * 100_000_000
        ns, fid = (CAMERAS[0], None) if k < half else (CAMERAS[1], "left_optical_frame")
        n = h.status()["frames_integrated"]
        h.publish_frame(sequence.frames[k], stamp, sequence.tf(k, stamp), camera=ns,
                        frame_id=fid)
        h.wait_integrated(n + 1)
    status = h.status()
    for ns in CAMERAS:
        cam = status["cameras"][ns]
        assert cam["integrated"] == half and cam["drops"] == {}, (ns, cam)
    err = surface_distance(sequence.scene, mesh_vertices(mesh_state(h.wait_mesh_settled())))
    assert np.median(err) < 0.01 and np.percentile(err, 99) < 0.05
