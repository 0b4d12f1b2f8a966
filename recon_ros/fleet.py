"""Many bags at once: one Ray task per bag, each the same offline replay as ``recon-ros replay``
(:func:`recon_ros.offline.replay_bag`), its map files in ``OUT/<bag name>/``.

A long bag can be cut into time windows of ``window_s`` seconds (:func:`plan_jobs`), one task
each, its map in ``OUT/<bag name>-w000/``, ``-w001``, ...: every window replays the whole
bag's TF and camera_info but maps only the images whose header stamp falls in it. With
``merge_windows`` the window maps of each bag are then merged into ``OUT/<bag name>/`` as
``recon-ros merge`` does (:func:`merge_window_maps`).

Ray runs embedded by default (a local instance with ``workers`` CPUs, no dashboard, its logs in
a temporary folder, shut down at the end) or on a running cluster (``ray_address``). At most
``workers`` bags (or windows) are mapped at a time, each with ``cores // workers`` torch
threads of its node, so the workers do not oversubscribe the cores. A bag that cannot be mapped
(missing, corrupt, no usable frame) is one failed :class:`BagOutcome` with its reason; the
others go on.

``ray`` is imported inside the functions that need it: ``import recon_ros`` works without it.
On a cluster every node needs ``recon_ros`` (and its dependencies) installed and the bags and
``OUT`` on a file system all nodes share.
"""

from __future__ import annotations

import json
import math
import os
import resource
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType

from .core.config import MapperConfig
from .core.errors import ReconError
from .io.rosbag_source import StampWindow, bag_time_span

__all__ = ["BagJob", "BagOutcome", "FleetError", "ReplayOptions", "WindowMerge", "bag_windows",
           "merge_window_maps", "plan_jobs", "replay_many", "replay_one", "write_summary"]

#: Written into ``OUT`` next to the per-bag map directories.
SUMMARY_FILE = "summary.json"
#: The most windows one bag is cut into (each is a task and a map directory ``-w000``..).
MAX_WINDOWS_PER_BAG = 1000


class FleetError(ReconError):
    """Ray is missing or cannot start / connect, or the bag list is unusable."""


@dataclass(frozen=True)
class ReplayOptions:
    """The arguments of :func:`~recon_ros.offline.replay_bag` shared by every bag."""

    depth_topic: str | None = None
    color_topic: str | None = None
    world_frame: str = "map"
    max_frames: int | None = None
    quality_every: int = 10
    render_views: int = 4


@dataclass(frozen=True)
class BagJob:
    """One bag, or one time window of a bag, and the map directory it goes to.

    Attributes:
        bag: the bag's path.
        name: the map directory's name in ``OUT``: the bag's name, for a window followed by
            ``-w000``, ``-w001``, ... in time order.
        out_dir: the map directory.
        bag_name: the bag's name (``name`` without the window suffix); the windows of a bag
            merge into ``OUT/<bag_name>/``.
        window: the image header stamps mapped; None: the whole bag.
    """

    bag: Path
    name: str
    out_dir: Path
    bag_name: str
    window: StampWindow | None = None


@dataclass
class BagOutcome:
    """What mapping one bag did.

    Attributes:
        bag: the bag's path; name: its map directory's name in ``OUT``.
        ok: the map was written with a frame in it, or, for a window, the window held no
            image at all (an empty map, ``frames`` 0: a gap in the recording).
        frames: frames integrated; drops: frames not integrated (all reasons);
        drop_reasons: reason -> count.
        wall_s: wall-clock time of the replay in its task (on failure: until it failed).
        peak_rss_mb: the task process's peak resident memory during the replay (Linux: the
            peak is reset at the start of the task; elsewhere the worker's lifetime peak).
        reason: why it failed ("" when ``ok``).
        out_dir: the map directory.
        window_ns: ``[start, end)`` of the header stamps mapped, nanoseconds (None: that side
            unbounded); None: the whole bag.
    """

    bag: str
    name: str
    ok: bool
    frames: int = 0
    drops: int = 0
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0
    reason: str = ""
    out_dir: str = ""
    drop_reasons: dict[str, int] = field(default_factory=dict)
    window_ns: tuple[int | None, int | None] | None = None

    @classmethod
    def failed(cls, job: BagJob, reason: str = "") -> "BagOutcome":
        """A failed outcome of ``job`` (filled in as its replay goes)."""
        return cls(bag=str(job.bag), name=job.name, ok=False, out_dir=str(job.out_dir),
                   reason=reason, window_ns=None if job.window is None else
                   (job.window.start_ns, job.window.end_ns))


@dataclass
class WindowMerge:
    """The merge of a bag's window maps into ``OUT/<bag name>/``.

    Attributes:
        bag: the bag's path; name: its name, the merged map directory's name in ``OUT``.
        ok: the merged map was written.
        merged: the windows (job names) whose maps were merged, in time order.
        empty: windows that held no image (nothing to merge).
        failed: windows whose mapping failed: not in the merged map.
        frames: frames integrated in the merged map.
        wall_s: wall-clock time of the merge and of writing its map files.
        reason: why no merged map was written ("" when ``ok``).
        out_dir: the merged map directory.
    """

    bag: str
    name: str
    ok: bool
    merged: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    frames: int = 0
    wall_s: float = 0.0
    reason: str = ""
    out_dir: str = ""


def _reason(exc: BaseException) -> str:
    """An error as one line of the summary: the message of a library error, else its type and
    message."""
    return str(exc) if isinstance(exc, ReconError) else f"{type(exc).__name__}: {exc}"


def bag_windows(bag: str | Path, window_s: float) -> list[StampWindow]:
    """The time windows of ``window_s`` seconds a bag is cut into: its log-time span
    ``[start, end)`` (:func:`~recon_ros.io.rosbag_source.bag_time_span`) in
    ``k = ceil((end - start) / window_s)`` windows (at least one) with edges at
    ``start + i * window_s``; the first window has no start and the last no end, so every
    image belongs to exactly one window even where header stamps lie outside the log-time
    span. A bag that cannot be opened gets none (its task reports why).

    Raises:
        FleetError: ``window_s`` is not a finite number of at least 1 ns, or it would cut the
            bag into more than :data:`MAX_WINDOWS_PER_BAG` windows.
    """
    window_ns = round(window_s * 1e9) if math.isfinite(window_s) else 0
    if window_ns < 1:
        raise FleetError(f"the window length must be a finite number of seconds >= 1e-9 "
                         f"(or 0: one job per bag), got {window_s!r}")
    try:
        start, end = bag_time_span(bag)
    except Exception:  # (unreadable in any way: its task fails with the reason, the rest go on)
        return []
    k = max(1, -(-(end - start) // window_ns))
    if k > MAX_WINDOWS_PER_BAG:
        raise FleetError(f"{bag}: windows of {window_s:g} s would cut its "
                         f"{(end - start) / 1e9:g} s "
                         f"into {k} tasks (at most {MAX_WINDOWS_PER_BAG}); choose a longer "
                         f"--window-s")
    edges = [None, *(start + i * window_ns for i in range(1, k)), None]
    return [StampWindow(a, b) for a, b in zip(edges[:-1], edges[1:])]


def plan_jobs(bags: Sequence[str | Path], out: str | Path, window_s: float = 0.0
              ) -> list[BagJob]:
    """The jobs of ``bags``, each its map directory ``out/<name>``.

    A bag's name is its folder name (``.db3`` / ``.mcap`` files: the file stem); names given
    to more than one bag are prefixed with the bag's parent folder (``scene1-bag``), and any
    still shared get ``-2``, ``-3``, ... in order. With ``window_s > 0`` a bag spanning more
    than one window (:func:`bag_windows`) becomes one job per window, named
    ``<name>-w000``, ``<name>-w001``, ... in time order; otherwise (``window_s`` 0, a bag no
    longer than a window, or one that cannot be opened) one job maps the whole bag.

    Raises:
        FleetError: ``window_s`` is neither 0 nor a valid window (:func:`bag_windows`), or two
            jobs would share a map directory (a bag named like another's window).
    """
    paths = [Path(b) for b in bags]
    names = [p.stem if p.suffix in (".db3", ".mcap") else p.name for p in paths]
    names = [f"{p.resolve().parent.name}-{n}" if names.count(n) > 1 else n
             for p, n in zip(paths, names)]
    seen: dict[str, int] = {}
    unique = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        unique.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    jobs = []
    for p, n in zip(paths, unique):
        windows = bag_windows(p, window_s) if window_s != 0 else []
        if len(windows) < 2:
            jobs.append(BagJob(p, n, Path(out) / n, n))
            continue
        digits = max(3, len(str(len(windows) - 1)))
        jobs.extend(BagJob(p, f"{n}-w{i:0{digits}d}", Path(out) / f"{n}-w{i:0{digits}d}", n, w)
                    for i, w in enumerate(windows))
    shared = sorted(name for name, count in Counter(j.name for j in jobs).items() if count > 1)
    if shared:
        raise FleetError(f"map directory names given to more than one job: {shared} (a bag "
                         "is named like another bag's window: rename it)")
    return jobs


def _reset_peak_rss() -> None:
    """Linux: restart the process's peak-RSS counter (``VmHWM``); elsewhere a no-op."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    """Peak resident memory of this process, MiB (``VmHWM``, else ``ru_maxrss``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def replay_one(job: BagJob, config: MapperConfig, options: ReplayOptions,
               threads: int | None = None) -> BagOutcome:
    """Map one bag, or the window of one, with :func:`~recon_ros.offline.replay_bag` (what
    ``recon-ros replay`` runs) into ``job.out_dir``; never raises for a bad bag: the outcome
    says why it failed.

    Args:
        job: the bag, its window and its map directory.
        config: mapping configuration.
        options: replay arguments.
        threads: torch threads for this replay (None: leave torch's setting).
    """
    import torch

    from .offline import replay_bag

    if threads is not None:
        torch.set_num_threads(threads)
    _reset_peak_rss()
    start = time.perf_counter()
    outcome = BagOutcome.failed(job)
    try:
        if not job.bag.exists():
            raise FleetError(f"no such bag: {job.bag}")
        result = replay_bag(job.bag, job.out_dir, config, depth_topic=options.depth_topic,
                            color_topic=options.color_topic, world_frame=options.world_frame,
                            max_frames=options.max_frames, quality_every=options.quality_every,
                            render_views=options.render_views, window=job.window)
    except Exception as exc:  # a bad bag is a row of the summary, never the end of the run
        outcome.reason = _reason(exc)
    else:
        outcome.frames = result.frames_used
        outcome.drop_reasons = dict(result.drops)
        outcome.drops = sum(result.drops.values())
        # (a window without frames and without drops held no image: a gap, not a failure)
        outcome.ok = result.frames_used > 0 or (job.window is not None and not result.drops)
        if not outcome.ok:
            outcome.reason = "no frame could be integrated: " + (
                ", ".join(f"{n} {r}" for r, n in result.drops.most_common()) or "no frames")
    outcome.wall_s = time.perf_counter() - start
    outcome.peak_rss_mb = _peak_rss_mb()
    return outcome


def _import_ray() -> ModuleType:
    try:
        import ray
    except ImportError as exc:
        raise FleetError("replay-many needs Ray, which is not installed: "
                         "pip install ray (see requirements/core.txt)") from exc
    return ray


def _task(job: BagJob, config: MapperConfig, options: ReplayOptions, workers: int
          ) -> BagOutcome:
    """Body of one Ray task: :func:`replay_one` with this node's share of cores."""
    return replay_one(job, config, options, threads=max(1, (os.cpu_count() or 1) // workers))


def replay_many(bags: Sequence[str | Path], out: str | Path, config: MapperConfig,
                options: ReplayOptions = ReplayOptions(), workers: int | None = None,
                ray_address: str | None = None, gpus_per_task: float = 0.0,
                on_done: Callable[[BagOutcome], None] | None = None,
                window_s: float = 0.0, merge_windows: bool = False,
                on_planned: Callable[[list[BagJob]], None] | None = None,
                on_merged: Callable[[WindowMerge], None] | None = None) -> list[BagOutcome]:
    """Map every bag in ``bags`` into ``out/<name>/`` (:func:`plan_jobs`), one Ray task per
    bag or per time window of a bag, at most ``workers`` at a time; then (``merge_windows``)
    merge the window maps of each bag into ``out/<bag name>/`` (:func:`merge_window_maps`, on
    this machine, one bag after the other); write ``out/summary.json``
    (:func:`write_summary`).

    Args:
        bags: bag directories, ``.db3`` or ``.mcap`` files.
        out: output folder (created).
        config: mapping configuration of every bag.
        options: replay arguments of every bag.
        workers: jobs (bags or windows) mapped at a time (default: the CPUs of this machine,
            or of the cluster).
        ray_address: a running Ray cluster (``ray://host:10001``, ``host:6379`` or ``auto``);
            None: start a local Ray instance for this call and shut it down after.
        gpus_per_task: GPUs Ray reserves for each task (set ``volume.device`` to ``cuda``).
        on_done: called with each job's outcome as it finishes (completion order).
        window_s: cut bags into time windows of this many seconds, one task each
            (:func:`plan_jobs`); 0: one task per bag.
        merge_windows: merge the maps of each bag's windows (those mapped) into
            ``out/<bag name>/``, on the configuration's ``volume.device``.
        on_planned: called with the jobs before the first starts.
        on_merged: called with each bag's merge as it finishes.

    Returns:
        the outcomes in the order of the jobs: of ``bags``, each bag's windows in time order.

    Raises:
        FleetError: Ray is not installed, cannot start or connect, ``bags`` is empty, the
            window length is invalid, or windows of latent-fusion maps (which cannot be
            merged) are to be merged.
    """
    if not bags:
        raise FleetError("no bags given")
    if merge_windows and window_s > 0 and config.fusion.method == "latent":
        raise FleetError("latent-fusion maps (fusion.method: latent) cannot be merged: map "
                         "the windows without merging them (--no-merge-windows)")
    ray = _import_ray()
    jobs = plan_jobs(bags, out, window_s)
    if on_planned is not None:
        on_planned(jobs)
    Path(out).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    log_dir = None if ray_address else tempfile.mkdtemp(prefix="recon-ray-")
    try:
        if ray_address:
            ray.init(address=ray_address, logging_level="warning", log_to_driver=False)
        else:
            ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False,
                     _temp_dir=log_dir, logging_level="warning", log_to_driver=False)
    except Exception as exc:  # Ray's own errors (ConnectionError, RuntimeError, ...)
        raise FleetError(f"could not start Ray ({ray_address or 'local'}): "
                         f"{type(exc).__name__}: {exc}") from exc
    try:
        n = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        outcomes = _run_tasks(ray, jobs, config, options, n, gpus_per_task, on_done)
    finally:
        ray.shutdown()
    merges: list[WindowMerge] = []
    if merge_windows:
        for name, windows in _windows_by_bag(jobs, outcomes).items():
            merges.append(merge_window_maps(name, windows, Path(out) / name))
            if on_merged is not None:
                on_merged(merges[-1])
    write_summary(Path(out) / SUMMARY_FILE, outcomes, workers=n, ray_address=ray_address,
                  wall_s=time.perf_counter() - start, window_s=window_s, merges=merges)
    return outcomes


def _windows_by_bag(jobs: Sequence[BagJob], outcomes: Sequence[BagOutcome]
                    ) -> dict[str, list[tuple[BagJob, BagOutcome]]]:
    """Bag name -> its windows' jobs and outcomes, in time order, for every bag cut into
    windows."""
    windows: dict[str, list[tuple[BagJob, BagOutcome]]] = {}
    for job, outcome in zip(jobs, outcomes):
        if job.window is not None:
            windows.setdefault(job.bag_name, []).append((job, outcome))
    return windows


def merge_window_maps(name: str, windows: Sequence[tuple[BagJob, BagOutcome]],
                      out_dir: str | Path) -> WindowMerge:
    """Merge the maps of one bag's windows into ``out_dir`` as ``recon-ros merge`` does
    (:func:`~recon_ros.offline.merge_map_files`, then
    :func:`~recon_ros.offline.write_map_outputs`): the windows whose mapping succeeded with a
    frame, on the configuration's ``volume.device``. Never raises for a bad map: the result
    says why there is no merged map.

    Args:
        name: the bag's name.
        windows: the bag's window jobs with their outcomes, in time order.
        out_dir: the merged map directory.
    """
    from .offline import merge_map_files, write_map_outputs

    start = time.perf_counter()
    mapped = [job for job, outcome in windows if outcome.ok and outcome.frames > 0]
    result = WindowMerge(
        bag=str(windows[0][0].bag), name=name, ok=False, out_dir=str(out_dir),
        merged=[job.name for job in mapped],
        empty=[job.name for job, outcome in windows if outcome.ok and outcome.frames == 0],
        failed=[job.name for job, outcome in windows if not outcome.ok])
    try:
        if not mapped:
            raise FleetError("no window could be mapped")
        mapper = merge_map_files([job.out_dir for job in mapped])
        write_map_outputs(mapper, out_dir)
    except Exception as exc:  # one bag's merge failing does not stop the others
        result.reason = _reason(exc)
    else:
        result.ok, result.frames = True, mapper.frames_integrated
    result.wall_s = time.perf_counter() - start
    return result


def _run_tasks(ray: ModuleType, jobs: list[BagJob], config: MapperConfig,
               options: ReplayOptions, workers: int, gpus_per_task: float,
               on_done: Callable[[BagOutcome], None] | None) -> list[BagOutcome]:
    """Keep ``workers`` tasks in flight until every job is done; a task that dies (worker
    killed, out of memory) is a failed outcome."""
    task = ray.remote(_task).options(num_cpus=1, num_gpus=gpus_per_task, max_retries=0)
    config_ref = ray.put(config)
    pending: dict = {}
    outcomes: dict[int, BagOutcome] = {}
    queue = list(enumerate(jobs))
    while queue or pending:
        while queue and len(pending) < workers:
            i, job = queue.pop(0)
            pending[task.remote(job, config_ref, options, workers)] = i
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        i = pending.pop(ref)
        try:
            outcome = ray.get(ref)
        except ray.exceptions.RayError as exc:
            outcome = BagOutcome.failed(jobs[i], f"task died: {type(exc).__name__}: {exc}")
        outcomes[i] = outcome
        if on_done is not None:
            on_done(outcome)
    return [outcomes[i] for i in range(len(jobs))]


def write_summary(path: str | Path, outcomes: Sequence[BagOutcome], workers: int,
                  ray_address: str | None, wall_s: float, window_s: float = 0.0,
                  merges: Sequence[WindowMerge] = ()) -> None:
    """``summary.json``: the run (workers, Ray address or ``local``, wall time, window length
    in seconds, jobs ok and failed), one entry per job under ``bags`` (:class:`BagOutcome`'s
    fields) and one per merged bag under ``merged`` (:class:`WindowMerge`'s fields)."""
    data = {"workers": workers, "ray_address": ray_address or "local", "wall_s": wall_s,
            "window_s": window_s,
            "ok": sum(o.ok for o in outcomes), "failed": sum(not o.ok for o in outcomes),
            "bags": [asdict(o) for o in outcomes], "merged": [asdict(m) for m in merges]}
    Path(path).write_text(json.dumps(data, indent=2))
