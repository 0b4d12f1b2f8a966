"""Message intake on its own thread, so that map work never makes sensor messages wait.

The mapper's map work (integration, meshing, publishing, saving) takes tens of milliseconds
per call and runs in the node's executor. Images, camera_info and TF must keep flowing
meanwhile: a DDS reader whose callbacks do not run fills its history and loses samples, and
TF that arrives late makes frames wait. :class:`IntakeThread` therefore owns a second,
internal node, ``<node>_intake`` in the node's namespace, that holds only the input
subscriptions, spun by its own executor (:func:`~recon_ros.ros.executors.make_executor`'s
choice) in a daemon thread. Its callbacks only queue messages and add TF (both locked).

Topic names are resolved by the owning node (its namespace and remappings, e.g. ``/tf:=tf``
for a namespaced robot) and handed over as absolute names; the internal node ignores the
process's command-line arguments, so ``__node:=`` or a parameter file for the mapper do not
rename or configure it. ``ros2 topic info -v`` lists the subscriptions under
``<node>_intake``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile

from .executors import make_executor
from .runtime import spin_until

__all__ = ["INTAKE_SUFFIX", "IntakeThread"]

INTAKE_SUFFIX = "_intake"
#: How long :meth:`IntakeThread.shutdown` waits for the thread (a spin step takes <= 0.1 s).
JOIN_TIMEOUT_S = 5.0


class IntakeThread:
    """The input subscriptions of ``owner``, spun in their own thread.

    Args:
        owner: the node the inputs belong to (names are resolved with its namespace and
            remappings; its context is used).
    """

    def __init__(self, owner: Node) -> None:
        self._owner = owner
        self.node = Node(owner.get_name() + INTAKE_SUFFIX, namespace=owner.get_namespace(),
                         context=owner.context, use_global_arguments=False,
                         start_parameter_services=False)
        self._executor = make_executor(self.node)
        self._thread = threading.Thread(target=self._spin, name=self.node.get_name(),
                                        daemon=True)
        self._stop = threading.Event()
        self._started = False
        self._stopped = False

    def subscribe(self, msg_type: Any, topic: str, callback: Callable[[Any], None],
                  qos: QoSProfile) -> str:
        """Subscribe to ``topic`` as the owner names it (relative, private or absolute, with
        the owner's remappings applied); returns the resolved absolute name."""
        resolved = self._owner.resolve_topic_name(topic)
        self.node.create_subscription(msg_type, resolved, callback, qos)
        return resolved

    def start(self) -> None:
        """Start taking messages (once every subscription is made)."""
        self._started = True
        self._thread.start()

    def _spin(self) -> None:
        # A callback's exception is a bug: it ends the intake and is reported by the thread.
        spin_until(self._executor, self._stop)

    def shutdown(self) -> None:
        """Stop the executor, wait for the thread and destroy the internal node (once; later
        calls do nothing)."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()  # the events executor's shutdown() blocks while another thread spins
        if self._started:
            self._thread.join(JOIN_TIMEOUT_S)
            if self._thread.is_alive():  # a daemon thread: it cannot keep the process alive
                self._owner.get_logger().warning(
                    f"intake thread did not stop within {JOIN_TIMEOUT_S:g} s; leaving it")
                return
        self._executor.shutdown()
        self.node.destroy_node()
