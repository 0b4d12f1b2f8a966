"""The mapper's parameter callbacks on an rclpy without ``add_post_set_parameters_callback``
(Humble): one on-set callback validates and applies, reading the new values on top of the
current ones (they are not set yet inside it)."""

from __future__ import annotations

import pytest

from .conftest import ROS_SKIP_REASON

rclpy = pytest.importorskip("rclpy", reason=ROS_SKIP_REASON, exc_type=ImportError)

from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from recon_ros.ros.mapper_node import MapperNode  # noqa: E402


@pytest.mark.parametrize("humble", [True, False], ids=["humble", "iron+"])
def test_parameter_changes_validate_and_apply(monkeypatch: pytest.MonkeyPatch, humble: bool
                                              ) -> None:
    if humble:
        monkeypatch.delattr(Node, "add_post_set_parameters_callback")
    context = rclpy.Context()
    rclpy.init(context=context)
    node = MapperNode(context=context)
    try:
        results = node.set_parameters([Parameter("mesh_rate_hz", value=4.0),
                                       Parameter("volume.voxel_size_m", value=0.1)])
        assert all(r.successful for r in results)
        assert node._rate_timers["mesh_rate_hz"].timer_period_ns == int(1e9 / 4.0)
        # applied at once while the map is empty (next tick), with the new value, not the old
        assert node._config_target.volume.voxel_size_m == pytest.approx(0.1)
        (bad,) = node.set_parameters([Parameter("mesh_rate_hz", value=-1.0)])
        assert not bad.successful and "mesh_rate_hz" in bad.reason
        assert node._rate_timers["mesh_rate_hz"].timer_period_ns == int(1e9 / 4.0)
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
