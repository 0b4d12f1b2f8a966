"""Many bags at once: one Ray task per bag, each the same offline replay as ``recon-ros replay``
(:func:`recon_ros.offline.replay_bag`), its map files in ``OUT/<bag name>/``.

Ray runs embedded by default (a local instance with ``workers`` CPUs, no dashboard, its logs in
a temporary folder, shut down at the end) or on a running cluster (``ray_address``). At most
``workers`` bags are mapped at a time, each with ``cores // workers`` torch threads of its
node, so the workers do not oversubscribe the cores. A bag that cannot be mapped (missing,
corrupt, no usable frame) is one failed :class:`BagOutcome` with its reason; the others go on.

``ray`` is imported inside the functions that need it: ``import recon_ros`` works without it.
On a cluster every node needs ``recon_ros`` (and its dependencies) installed and the bags and
``OUT`` on a file system all nodes share.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType

from .core.config import MapperConfig
from .core.errors import ReconError

__all__ = ["BagJob", "BagOutcome", "FleetError", "ReplayOptions", "plan_jobs", "replay_many",
           "replay_one", "write_summary"]

#: Written into ``OUT`` next to the per-bag map directories.
SUMMARY_FILE = "summary.json"


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
    """One bag and the map directory it goes to."""

    bag: Path
    name: str
    out_dir: Path


@dataclass
class BagOutcome:
    """What mapping one bag did.

    Attributes:
        bag: the bag's path; name: its map directory's name in ``OUT``.
        ok: the map was written.
        frames: frames integrated; drops: frames not integrated (all reasons);
        drop_reasons: reason -> count.
        wall_s: wall-clock time of the replay in its task (on failure: until it failed).
        peak_rss_mb: the task process's peak resident memory during the replay (Linux: the
            peak is reset at the start of the task; elsewhere the worker's lifetime peak).
        reason: why it failed ("" when ``ok``).
        out_dir: the map directory.
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


def plan_jobs(bags: Sequence[str | Path], out: str | Path) -> list[BagJob]:
    """One job per bag, its map directory ``out/<name>``: the bag's folder name (``.db3`` /
    ``.mcap`` files: the file stem); names given to more than one bag are prefixed with the
    bag's parent folder (``scene1-bag``), and any still shared get ``-2``, ``-3``, ... in
    order."""
    paths = [Path(b) for b in bags]
    names = [p.stem if p.suffix in (".db3", ".mcap") else p.name for p in paths]
    names = [f"{p.resolve().parent.name}-{n}" if names.count(n) > 1 else n
             for p, n in zip(paths, names)]
    seen: dict[str, int] = {}
    unique = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        unique.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return [BagJob(p, n, Path(out) / n) for p, n in zip(paths, unique)]


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
    """Map one bag with :func:`~recon_ros.offline.replay_bag` (what ``recon-ros replay``
    runs) into ``job.out_dir``; never raises for a bad bag: the outcome says why it failed.

    Args:
        job: the bag and its map directory.
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
    outcome = BagOutcome(bag=str(job.bag), name=job.name, ok=False, out_dir=str(job.out_dir))
    try:
        if not job.bag.exists():
            raise FleetError(f"no such bag: {job.bag}")
        result = replay_bag(job.bag, job.out_dir, config, depth_topic=options.depth_topic,
                            color_topic=options.color_topic, world_frame=options.world_frame,
                            max_frames=options.max_frames, quality_every=options.quality_every,
                            render_views=options.render_views)
    except Exception as exc:  # a bad bag is a row of the summary, never the end of the run
        outcome.reason = str(exc) if isinstance(exc, ReconError) else \
            f"{type(exc).__name__}: {exc}"
    else:
        outcome.frames = result.frames_used
        outcome.drop_reasons = dict(result.drops)
        outcome.drops = sum(result.drops.values())
        outcome.ok = result.frames_used > 0
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
                on_done: Callable[[BagOutcome], None] | None = None) -> list[BagOutcome]:
    """Map every bag in ``bags`` into ``out/<name>/`` (:func:`plan_jobs`), one Ray task per
    bag, at most ``workers`` at a time; write ``out/summary.json`` (:func:`write_summary`).

    Args:
        bags: bag directories, ``.db3`` or ``.mcap`` files.
        out: output folder (created).
        config: mapping configuration of every bag.
        options: replay arguments of every bag.
        workers: bags mapped at a time (default: the CPUs of this machine, or of the cluster).
        ray_address: a running Ray cluster (``ray://host:10001``, ``host:6379`` or ``auto``);
            None: start a local Ray instance for this call and shut it down after.
        gpus_per_task: GPUs Ray reserves for each task (set ``volume.device`` to ``cuda``).
        on_done: called with each bag's outcome as it finishes (completion order).

    Returns:
        the outcomes in the order of ``bags``.

    Raises:
        FleetError: Ray is not installed, cannot start or connect, or ``bags`` is empty.
    """
    if not bags:
        raise FleetError("no bags given")
    ray = _import_ray()
    jobs = plan_jobs(bags, out)
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
    write_summary(Path(out) / SUMMARY_FILE, outcomes, workers=n, ray_address=ray_address,
                  wall_s=time.perf_counter() - start)
    return outcomes


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
            job = jobs[i]
            outcome = BagOutcome(bag=str(job.bag), name=job.name, ok=False,
                                 out_dir=str(job.out_dir),
                                 reason=f"task died: {type(exc).__name__}: {exc}")
        outcomes[i] = outcome
        if on_done is not None:
            on_done(outcome)
    return [outcomes[i] for i in range(len(jobs))]


def write_summary(path: str | Path, outcomes: Sequence[BagOutcome], workers: int,
                  ray_address: str | None, wall_s: float) -> None:
    """``summary.json``: the run (workers, Ray address or ``local``, wall time, bags ok and
    failed) and one entry per bag (:class:`BagOutcome`'s fields)."""
    data = {"workers": workers, "ray_address": ray_address or "local", "wall_s": wall_s,
            "ok": sum(o.ok for o in outcomes), "failed": sum(not o.ok for o in outcomes),
            "bags": [asdict(o) for o in outcomes]}
    Path(path).write_text(json.dumps(data, indent=2))
