"""Map sharing between robots on one DDS network (the mapper node's ``map_sharing.*``).

Sending (``map_sharing.publish_deltas``): every ``delta_period_s`` the blocks of the node's
*own* map that changed since the previous delta, and the keys it released, go out as
``recon_ros_interfaces/MapDelta`` on ``delta_topic`` (relative: ``/<robot ns>/map_deltas``),
split into messages of at most ``max_message_bytes`` of uncompressed data. A new subscriber
(the publisher's matched event, :class:`~recon_ros.ros.subscriber_watch.SubscriberWatch`) or
a replaced map (reset, load) gets the whole own map, its first message marked
``replace_all``. Blocks received from peers are never in the own map, so never sent: no echo.

Receiving (``map_sharing.peer_topics``): each message replaces the sender's copy of its blocks
in a per-source layer of a :class:`~recon_ros.core.shared_map.SharedMap`; the map the node
publishes, renders and saves is that shared map's view, own map merged with every peer's
latest blocks (each counted once, however often it arrives). A message of another map frame
or geometry, a malformed one, or the node's own (its source id) is not applied: counted in the
status's ``map_sharing.rejected`` by reason, logged (throttled); so is every delta while the
own map is a latent-fusion map (no merge is defined for it). Sequence gaps per source are
counted (lost messages: their blocks arrive with their next change or the next snapshot).
"""

from __future__ import annotations

import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rclpy.callback_groups import CallbackGroup
from rclpy.clock import Clock
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from recon_ros_interfaces.msg import MapDelta

from recon_ros.core.errors import ReconError
from recon_ros.core.map_delta import (
    BlockGeometry,
    ChangeCursor,
    block_bytes,
    decode_blocks,
    encode_blocks,
)
from recon_ros.core.mapper import Mapper
from recon_ros.core.shared_map import SharedMap

from . import parameters as P
from .conversions import ns_to_time
from .subscriber_watch import SubscriberWatch

__all__ = ["DELTA_QOS", "MapSharing", "SharingSettings"]

#: Reliable, volatile; deep enough for a full snapshot of 200 messages (about 20,000 blocks of
#: 8^3 float32 voxels with color at the default max_message_bytes) in one burst.
DELTA_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200,
                       reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)


@dataclass(frozen=True)
class SharingSettings:
    """The node's ``map_sharing.*`` parameters (start-up ones).

    Attributes:
        publish: publish deltas of the own map.
        topic: their topic (relative to the node's namespace).
        period_s: their period, seconds.
        source_id: the id they carry.
        peer_topics: delta topics of other robots to merge.
    """

    publish: bool
    topic: str
    period_s: float
    source_id: str
    peer_topics: tuple[str, ...]

    @classmethod
    def from_values(cls, values: dict[str, Any], node_name: str) -> "SharingSettings":
        return cls(bool(values["map_sharing.publish_deltas"]),
                   str(values["map_sharing.delta_topic"]),
                   float(values["map_sharing.delta_period_s"]),
                   str(values["map_sharing.robot_id"]) or node_name,
                   tuple(P.peer_topics(values)))


class MapSharing:
    """The node's side of map sharing (see the module docstring). Every method but the
    constructor runs with the node's map lock held (map group callbacks).

    Args:
        node: the mapper node (publisher, subscriptions, timer, logger, parameters).
        own: the own map.
        settings: the ``map_sharing.*`` parameters.
        map_frame: the node's map frame.
        group: callback group of the map work.
        clock: clock of the delta timer (the node's steady clock).
        locked: wraps a callback so that it holds the map lock.
        header_stamp: the stamp of outgoing messages (newest integrated frame), ns.
        throttle_s: period of the throttled warnings, seconds.
    """

    def __init__(self, node: Node, own: Mapper, settings: SharingSettings, map_frame: str,
                 group: CallbackGroup, clock: Clock,
                 locked: Callable[[Callable[..., Any]], Callable[..., Any]],
                 header_stamp: Callable[[], int], throttle_s: Callable[[], float]) -> None:
        self._node = node
        self._settings = settings
        self._map_frame = map_frame
        self._header_stamp = header_stamp
        self._throttle_s = throttle_s
        self.own = own
        self.shared: SharedMap | None = None
        self._cursor = ChangeCursor(own.volume)
        self._sequence = 0
        self._frames_sent = 0
        self._sent: Counter[str] = Counter()
        self._received: dict[str, Counter[str]] = {}
        self._last_sequence: dict[str, int] = {}
        self._rejected: Counter[str] = Counter()
        self._watch: SubscriberWatch | None = None
        if settings.publish:
            self._watch = SubscriberWatch(node, MapDelta, settings.topic, DELTA_QOS, group)
            node.create_timer(settings.period_s, locked(self.publish), callback_group=group,
                              clock=clock)
        for topic in settings.peer_topics:
            node.create_subscription(MapDelta, topic, locked(self.receive), DELTA_QOS,
                                     callback_group=group)
        self.rebase(own)

    # ------------------------------------------------------------------ the map

    def output(self) -> Mapper:
        """The map the node publishes, renders and saves: with peers (and a TSDF map), the
        shared view brought up to date; else the own map."""
        if self.shared is None:
            return self.own
        self.shared.sync()
        return self.shared.view

    def version(self) -> int:
        """Changes whenever peers' blocks changed :meth:`output` (0 without peers); call
        after :meth:`output`."""
        return 0 if self.shared is None else self.shared.version

    def rebase(self, own: Mapper) -> None:
        """The own map was replaced (reset, load, new parameters): the next delta sends all
        of it (``replace_all``), the shared view is rebuilt on it."""
        self.own = own
        self._cursor = ChangeCursor(own.volume)
        if not self._settings.peer_topics:
            return
        if own.latent is not None:  # as Mapper.merge: features have no merge
            self.shared = None
            self._node.get_logger().warning(
                "map_sharing.peer_topics: a latent-fusion map (fusion.method: latent) cannot "
                "merge peers' blocks; their deltas are rejected while it is the map")
        elif self.shared is None:
            self.shared = SharedMap(own)
        else:
            self.shared.rebase(own)

    # ------------------------------------------------------------------ sending

    def publish(self) -> None:
        """Timer: the own map's changes since the last delta (everything to a new
        subscriber), in messages of at most ``map_sharing.max_message_bytes``."""
        watch = self._watch
        if watch is None:
            return
        full = watch.take_full()
        self.own.decode()  # latent fusion: share the decoded TSDF
        slots, removed, complete = self._cursor.take(full)
        if not watch.subscribed():
            return  # changes dropped: a subscriber that joins gets a full snapshot
        self._frames_sent = self.own.frames_integrated
        if complete and not slots.numel() and not removed.numel():
            return
        volume, color = self.own.volume, self.own.has_color
        limit = int(self._node.get_parameter("map_sharing.max_message_bytes").value)
        per_message = max(1, limit // block_bytes(volume, color))
        parts = [(slots[i:i + per_message], removed[:0])
                 for i in range(0, slots.numel(), per_message)]
        parts += [(slots[:0], removed[i:i + limit // 8])
                  for i in range(0, removed.numel(), limit // 8)]
        geometry = BlockGeometry.of(volume)
        for k, (part_slots, part_removed) in enumerate(parts or [(slots, removed)]):
            encoding, data = encode_blocks(volume, part_slots, part_removed, color)
            msg = MapDelta()
            msg.header.frame_id = self._map_frame
            msg.header.stamp = ns_to_time(self._header_stamp())
            msg.source_id = self._settings.source_id
            msg.sequence = self._sequence
            msg.replace_all = not complete and k == 0
            msg.voxel_size_m = geometry.voxel_size_m
            msg.block_size = geometry.block_size
            msg.truncation_m = geometry.truncation_m
            msg.encoding = encoding
            msg.num_blocks = int(part_slots.numel())
            msg.num_removed = int(part_removed.numel())
            msg.data = array.array("B", data)
            watch.publisher.publish(msg)
            self._sequence += 1
            self._sent.update(messages=1, blocks=msg.num_blocks, removed=msg.num_removed,
                              bytes=len(data), snapshots=int(msg.replace_all))

    # ------------------------------------------------------------------ receiving

    def receive(self, msg: MapDelta) -> None:
        """Subscription: apply a peer's delta to its layer, or count and log why not."""
        shared = self.shared
        if shared is None:
            self._reject("latent map", f"delta of {msg.source_id!r} rejected: the map is a "
                         "latent-fusion map, which cannot merge blocks")
            return
        source = msg.source_id
        if source == self._settings.source_id:
            self._reject("own source id", f"a delta carries this node's own source id "
                         f"{source!r} (map_sharing.peer_topics lists its own topic, or two "
                         f"robots share a map_sharing.robot_id): ignored")
            return
        frame = msg.header.frame_id.removeprefix("/")
        if frame != self._map_frame:
            self._reject("map frame", f"delta of {source!r} in frame {frame!r}, the map is in "
                         f"{self._map_frame!r}: rejected")
            return
        geometry = BlockGeometry(float(msg.voxel_size_m), int(msg.block_size),
                                 float(msg.truncation_m))
        why = shared.geometry.mismatch(geometry)
        if why is not None:
            self._reject("geometry", f"delta of {source!r} from a map of another geometry "
                         f"({why}): rejected")
            return
        try:
            delta = decode_blocks(msg.encoding, msg.data.tobytes(), int(msg.num_blocks),
                                  int(msg.num_removed), int(msg.block_size))
            shared.apply(source, delta, geometry, bool(msg.replace_all))
        except (ReconError, ValueError, RuntimeError) as err:
            self._reject("malformed", f"delta of {source!r} not applied: {err}")
            return
        counts = self._received.setdefault(source, Counter())
        last = self._last_sequence.get(source)
        if last is not None and msg.sequence > last + 1:
            counts["gaps"] += msg.sequence - last - 1
        self._last_sequence[source] = msg.sequence
        counts.update(messages=1, blocks=int(msg.num_blocks), removed=int(msg.num_removed),
                      snapshots=int(msg.replace_all))

    def _reject(self, reason: str, message: str) -> None:
        """Count a delta not applied; log the first of each reason, later ones throttled."""
        self._rejected[reason] += 1
        if self._rejected[reason] == 1:
            self._node.get_logger().warning(message)
        else:
            self._node.get_logger().warning(message, throttle_duration_sec=self._throttle_s())

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        """The status's ``map_sharing``: what was sent and received (per source), the own
        map's integrated frames the last delta covered (``frames_sent``), what was rejected
        (per reason), and the peers' and the shared map's blocks."""
        out: dict[str, Any] = {
            "source_id": self._settings.source_id,
            "sent": dict(self._sent),
            "frames_sent": self._frames_sent,
            "received": {s: dict(c) for s, c in self._received.items()},
            "rejected": dict(self._rejected),
        }
        if self.shared is not None:
            out["peer_blocks"] = {s: layer.num_blocks for s, layer in self.shared.peers.items()}
            out["shared_blocks"] = self.shared.view.volume.num_blocks
        return out
