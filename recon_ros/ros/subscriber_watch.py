"""Noticing new subscribers of a publisher, so that it can send them the whole state again.

A publisher of incremental outputs (mesh blocks, grid updates) must resend everything when a
subscriber joins: an RViz that attaches gets no history. Comparing subscriber counts misses a
subscriber that joins while another leaves; the publisher's *matched* event (rclpy's
``PublisherEventCallbacks(matched=...)``, Iron and newer) reports every match. On Humble,
whose rclpy has no matched event, the watch falls back to a rising subscriber count.
"""

from __future__ import annotations

import inspect
import threading
from typing import Any

from rclpy.event_handler import PublisherEventCallbacks
from rclpy.publisher import Publisher

__all__ = ["SubscriberWatch", "matched_events_supported"]


def matched_events_supported() -> bool:
    """Whether this rclpy reports publisher matched events (Iron and newer)."""
    return "matched" in inspect.signature(PublisherEventCallbacks).parameters


class SubscriberWatch:
    """Tells, once per poll, whether a publisher gained a subscriber since the last poll.

    Usage::

        watch = SubscriberWatch()
        pub = node.create_publisher(T, name, qos, event_callbacks=watch.event_callbacks())
        watch.attach(pub)
        ...
        if watch.poll_newcomer():  # resend everything
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._matched = 0  # matches reported since the last poll
        self._publisher: Publisher | None = None
        self._last_count = 0

    def event_callbacks(self) -> PublisherEventCallbacks:
        """The publisher's event callbacks: matched events counted where rclpy has them."""
        if matched_events_supported():
            return PublisherEventCallbacks(matched=self._on_matched)
        return PublisherEventCallbacks()

    def attach(self, publisher: Publisher) -> None:
        """The publisher to watch (its subscriber count is the fallback on Humble)."""
        self._publisher = publisher

    def _on_matched(self, info: Any) -> None:
        """``info``: rclpy's ``QoSPublisherMatchedInfo``. Its changes accumulate until it is
        read: a leave and a join in between net ``current_count_change`` 0, while
        ``total_count_change`` counts the join."""
        if info.total_count_change > 0:
            with self._lock:
                self._matched += 1

    def poll_newcomer(self) -> bool:
        """True if a subscriber matched since the last call (or, without matched events, if
        the subscriber count rose)."""
        count = 0 if self._publisher is None else self._publisher.get_subscription_count()
        rose = count > self._last_count
        self._last_count = count
        if not matched_events_supported():
            return rose
        with self._lock:
            matched, self._matched = self._matched, 0
        return matched > 0
