"""The rclpy executor that spins the nodes' message intake, chosen in one place for all of them.

rclpy's events executor (``rclpy.experimental.EventsExecutor``: a C++ event queue, callbacks
in one thread) takes messages off DDS far faster than the Python wait-set executors. It spins
``recon_mapper``'s intake thread (:mod:`recon_ros.ros.intake`: the input subscriptions) and
``recon_sim_camera``. It exists on Kilted and on Jazzy from rclpy 7.1.4; on Humble and older
Jazzy releases its import fails, and these fall back to rclpy's ``SingleThreadedExecutor``:
the same one-thread model, with slower message handling. (``recon_mapper``'s own callbacks,
its map work and its save/load services, run on a two-thread ``MultiThreadedExecutor``:
:func:`recon_ros.ros.mapper_node.map_executor`.)

The environment variable :data:`ENV_VAR` (``RECON_ROS_EXECUTOR``) overrides the choice:

- ``auto`` (default, also when unset or empty): ``EventsExecutor`` where rclpy has it, else
  ``SingleThreadedExecutor``;
- ``events``: ``EventsExecutor``, an error where rclpy has none;
- ``single_threaded``: ``SingleThreadedExecutor``;
- ``multi_threaded``: ``MultiThreadedExecutor`` (one thread per core). Safe for the nodes
  here: the intake callbacks only queue messages (queues and TF are locked);
  ``recon_sim_camera`` keeps every callback in its default, mutually exclusive group.

The choice is logged at start-up (``executor: <class> (<why>)``).
"""

from __future__ import annotations

import os

from rclpy.executors import Executor, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node

from recon_ros.core.errors import ConfigError

__all__ = ["CHOICES", "ENV_VAR", "choose_executor", "events_executor_class", "make_executor"]

#: Environment variable naming the executor (see the module docstring).
ENV_VAR = "RECON_ROS_EXECUTOR"
#: Its values.
CHOICES = ("auto", "events", "single_threaded", "multi_threaded")
_NO_EVENTS_EXECUTOR = ("rclpy.experimental.EventsExecutor is not available in this rclpy "
                       "(Humble, or Jazzy before rclpy 7.1.4)")


def events_executor_class() -> type[Executor] | None:
    """rclpy's ``EventsExecutor`` class, or None where this rclpy has none."""
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError:
        return None
    return EventsExecutor


def choose_executor() -> tuple[type[Executor], str]:
    """The executor class :data:`ENV_VAR` asks for (unset or empty: ``auto``) and why it was
    chosen (for the start-up log).

    Raises:
        ConfigError: an unknown value, or ``events`` where rclpy has no events executor.
    """
    value = os.environ.get(ENV_VAR, "")
    requested = value or "auto"
    source = f"{ENV_VAR}={value}" if value else f"{ENV_VAR} unset: auto"
    if requested not in CHOICES:
        raise ConfigError(f"{ENV_VAR}={requested!r} is invalid: must be one of {list(CHOICES)}")
    if requested == "single_threaded":
        return SingleThreadedExecutor, source
    if requested == "multi_threaded":
        return MultiThreadedExecutor, source
    events = events_executor_class()
    if events is not None:
        return events, source
    if requested == "events":
        raise ConfigError(f"{ENV_VAR}=events is invalid here: {_NO_EVENTS_EXECUTOR}")
    return SingleThreadedExecutor, f"{source}; {_NO_EVENTS_EXECUTOR}"


def make_executor(node: Node) -> Executor:
    """The executor :func:`choose_executor` picks (from :data:`ENV_VAR`), with ``node``
    added; the choice is logged.

    Raises:
        ConfigError: :data:`ENV_VAR` is invalid (see :func:`choose_executor`).
    """
    executor_class, why = choose_executor()
    executor = executor_class(context=node.context)
    executor.add_node(node)
    node.get_logger().info(f"executor: {executor_class.__name__} ({why})")
    return executor
