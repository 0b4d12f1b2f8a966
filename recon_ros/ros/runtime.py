"""Running a node: SIGINT/SIGTERM handling that lets it finish its work (e.g. autosave) while
ROS is still up, and spinning until then."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import rclpy
from rclpy.executors import Executor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from recon_ros.core.errors import ReconError

from .executors import make_executor

__all__ = ["run_node", "spin_until", "stop_on_signals"]


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while the ``with`` block runs (the previous handlers
    are restored afterwards). Use with ``rclpy.init(signal_handler_options=
    SignalHandlerOptions.NO)``, so the ROS context survives the signal and the code can finish
    its work before shutting ROS down."""
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set())
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def spin_until(executor: Executor, stop: threading.Event) -> None:
    """Run callbacks until ``stop`` is set or ROS shuts down; a callback's exception (a bug)
    propagates."""
    while not stop.is_set() and rclpy.ok(context=executor.context):
        executor.spin_once(timeout_sec=0.1)


def run_node(name: str, make_node: Callable[[], Node], args: list[str] | None = None,
             on_shutdown: Callable[[Node], None] | None = None,
             executor_factory: Callable[[Node], Executor] = make_executor) -> int:
    """The whole life of a console-script node: init, construct, spin
    (``executor_factory(node)``; by default the executor
    :func:`~recon_ros.ros.executors.make_executor` picks) until SIGINT/SIGTERM,
    ``on_shutdown(node)`` (e.g. autosave), clean shutdown.

    Returns:
        0 after a clean shutdown, 2 when the node cannot be built (invalid parameters,
        unusable weights or device) or ``RECON_ROS_EXECUTOR`` is invalid: the reason is
        logged as fatal.
    """
    rclpy.init(args=sys.argv if args is None else args,
               signal_handler_options=SignalHandlerOptions.NO)
    try:
        # either raises ConfigError for a bad RECON_ROS_EXECUTOR
        node = make_node()
        executor = executor_factory(node)
    except (ReconError, OSError) as err:
        rclpy.logging.get_logger(name).fatal(f"cannot start: {err}")
        rclpy.try_shutdown()
        return 2
    try:
        with stop_on_signals() as stop:
            spin_until(executor, stop)
    finally:
        # Further SIGINT/SIGTERM during the shutdown work are absorbed: `ros2 launch` sends
        # SIGTERM 5 s after SIGINT, and the autosave gets the whole window until its SIGKILL
        # (10 s) instead of dying at 5 s.
        with stop_on_signals():
            executor.shutdown()
            node.get_logger().info("shutting down")
            if on_shutdown is not None:
                on_shutdown(node)
            node.destroy_node()
            rclpy.try_shutdown()
    return 0
