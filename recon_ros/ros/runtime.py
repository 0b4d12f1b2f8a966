"""Running nodes: a multi-threaded spin that drains before returning, and SIGINT/SIGTERM
handling that lets a node finish its work (e.g. autosave) while ROS is still up."""

from __future__ import annotations

import signal
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import rclpy
from rclpy.executors import (
    Executor,
    ExternalShutdownException,
    ShutdownException,
    TimeoutException,
)
from rclpy.task import Task

__all__ = ["spin_until", "stop_on_signals"]


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM (install after ``rclpy.init(signal_handler_options=
    SignalHandlerOptions.NO)``, so the ROS context survives the signal)."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def spin_until(executor: Executor, stop: threading.Event, threads: int) -> None:
    """Run ready callbacks on a thread pool until ``stop`` is set or ROS shuts down; returns
    only after every dispatched callback has finished.

    rclpy's ``MultiThreadedExecutor`` is not used because its ``shutdown`` destroys its guard
    condition before its thread pool drains, and callbacks still queued then raise.

    Raises:
        Exception: the first exception a callback raised (after the pool has drained).
    """
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: dict[Future[None], Task[None]] = {}
        while not stop.is_set() and rclpy.ok():
            try:
                handler, _, _ = executor.wait_for_ready_callbacks(timeout_sec=0.1)
            except (TimeoutException, ShutdownException, ExternalShutdownException):
                continue
            pending[pool.submit(handler)] = handler
            for future in [f for f in pending if f.done()]:
                error = pending.pop(future).exception()
                if error is not None:  # a callback raised: that is a bug, let it surface
                    raise error
