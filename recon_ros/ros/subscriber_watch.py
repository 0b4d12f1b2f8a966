"""Publishers of incremental outputs, and when they owe their subscribers everything.

A publisher of incremental outputs (mesh blocks, grid updates) must send everything again when
a subscriber joins: an RViz that attaches gets no history. Comparing subscriber counts misses a
subscriber that joins while another leaves; the publisher's *matched* event (rclpy's
``PublisherEventCallbacks(matched=...)``, Iron and newer) reports every match. On Humble,
whose rclpy has no matched event, a rising subscriber count is the signal. The owner can also
ask for a full resend itself (its map was replaced).
"""

from __future__ import annotations

import inspect
import threading
from typing import Any

from rclpy.callback_groups import CallbackGroup
from rclpy.event_handler import PublisherEventCallbacks
from rclpy.node import Node
from rclpy.qos import QoSProfile

__all__ = ["SubscriberWatch", "matched_events_supported"]


def matched_events_supported() -> bool:
    """Whether this rclpy reports publisher matched events (Iron and newer)."""
    return "matched" in inspect.signature(PublisherEventCallbacks).parameters


class SubscriberWatch:
    """A publisher that knows whether it owes its subscribers a full resend.

    Args:
        node, msg_type, topic, qos: the publisher's.
        callback_group: group of its matched-event callback.

    Attributes:
        publisher: the publisher.
    """

    def __init__(self, node: Node, msg_type: Any, topic: str, qos: QoSProfile,
                 callback_group: CallbackGroup) -> None:
        self._lock = threading.Lock()
        self._matched = 0  # matches reported since the last take_full()
        self._last_count = 0
        self._full_requested = False
        events = (PublisherEventCallbacks(matched=self._on_matched)
                  if matched_events_supported() else PublisherEventCallbacks())
        self.publisher = node.create_publisher(msg_type, topic, qos, event_callbacks=events,
                                               callback_group=callback_group)

    def _on_matched(self, info: Any) -> None:
        """``info``: rclpy's ``QoSPublisherMatchedInfo``. Its changes accumulate until it is
        read: a leave and a join in between net ``current_count_change`` 0, while
        ``total_count_change`` counts the join."""
        if info.total_count_change > 0:
            with self._lock:
                self._matched += 1

    def subscribed(self) -> bool:
        """Whether the publisher has subscribers now."""
        return self.publisher.get_subscription_count() > 0

    def request_full(self) -> None:
        """Owe the subscribers everything at the next :meth:`take_full`."""
        self._full_requested = True

    def take_full(self) -> bool:
        """True (once) if everything must be sent: :meth:`request_full` was called, or a
        subscriber matched (without matched events: the subscriber count rose) since the last
        call."""
        count = self.publisher.get_subscription_count()
        rose = count > self._last_count
        self._last_count = count
        requested, self._full_requested = self._full_requested, False
        if not matched_events_supported():
            return requested or rose
        with self._lock:
            matched, self._matched = self._matched, 0
        return requested or matched > 0
