"""Speed and accuracy of plane-sweep stereo depth on the synthetic demo room.

The camera drives the demo room scan (``room_scan_trajectory``); frames become keyframes by
:class:`~recon_ros.core.keyframes.KeyframeSelector` (0.1 m / 5 deg, window 8) and every
``--every``-th keyframe that has the full number of source views (the nearest earlier
keyframes at least 0.15 m away, turned at most 30 deg) is a reference. Images are the
renderer's noise-free color; the ground truth is its exact depth. Figures pooled over the
references:

- ``ms/frame``: median wall time of ``PlaneSweepStereo.depth`` (eager, one torch thread unless
  ``--threads``; the first call is a warm-up and not counted);
- ``coverage``: pixels with an estimate / pixels with ground truth depth;
- ``median`` / ``p90``: absolute depth error of the estimates, cm;
- ``>5cm``: fraction of the estimates off by more than 5 cm.

Run::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/plane_sweep.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def measure(width: int, height: int, *, frames: int, refs: int, every: int,
            device: str = "cpu", **config: float) -> dict[str, float]:
    """Run the stereo on ``refs`` reference keyframes of a ``frames``-pose room scan at
    ``width`` x ``height``; ``config`` overrides :class:`PlaneSweepConfig` fields."""
    import torch

    from recon_ros.core.keyframes import KeyframeSelector
    from recon_ros.core.plane_sweep import PlaneSweepConfig, PlaneSweepStereo
    from recon_ros.io.synthetic import (
        RenderResult,
        default_camera,
        make_demo_scene,
        render,
        room_scan_trajectory,
    )

    scene = make_demo_scene()
    camera = default_camera(width, height)
    cfg = PlaneSweepConfig(**config)  # type: ignore[arg-type]
    stereo = PlaneSweepStereo(cfg, device)
    selector: KeyframeSelector[RenderResult | None] = KeyframeSelector(0.1, 5.0, window=8)
    ms: list[float] = []
    errors: list[np.ndarray] = []
    covered = with_truth = candidates = 0
    warmed_up = False
    for T in room_scan_trajectory(scene, frames).poses:
        if len(ms) == refs:
            break
        data = render(scene, camera, T) if selector.is_keyframe(T) else None
        if selector.offer(T, data) is None or data is None:
            continue
        sources = selector.sources(T, cfg.num_sources, min_baseline_m=0.15)
        if len(sources) < cfg.num_sources:
            continue
        candidates += 1
        if (candidates - 1) % every:
            continue
        views = [(s.data.color, camera, s.T_world_cam) for s in sources if s.data is not None]
        if not warmed_up:
            stereo.depth(data.color, camera, T, views)
            warmed_up = True
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        depth_t, _ = stereo.depth(data.color, camera, T, views)
        depth = depth_t.cpu().numpy()
        ms.append((time.perf_counter() - t0) * 1e3)
        truth = data.depth > 0
        estimated = truth & (depth > 0)
        covered += int(estimated.sum())
        with_truth += int(truth.sum())
        errors.append(np.abs(depth[estimated] - data.depth[estimated]))
    if not ms:
        raise RuntimeError("no reference keyframe had enough source views; use more --frames")
    err = np.concatenate(errors)
    return {"width": width, "height": height, "hypotheses": cfg.num_depths,
            "refs": len(ms), "ms_per_frame": float(np.median(ms)),
            "coverage": covered / max(with_truth, 1),
            "median_cm": float(np.median(err)) * 100, "p90_cm": float(np.percentile(err, 90)) * 100,
            "frac_over_5cm": float(np.mean(err > 0.05))}


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["320x240", "640x480"],
                        help="image sizes WxH")
    parser.add_argument("--frames", type=int, default=120, help="poses of the room scan")
    parser.add_argument("--refs", type=int, default=6, help="reference keyframes measured")
    parser.add_argument("--every", type=int, default=4,
                        help="use every n-th keyframe that has all its source views")
    parser.add_argument("--hypotheses", type=int, default=None,
                        help="override PlaneSweepConfig.num_depths")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    overrides = {} if args.hypotheses is None else {"num_depths": args.hypotheses}
    rows = []
    print(f"{'resolution':>10} {'hyps':>5} {'refs':>4} {'ms/frame':>9} {'coverage':>8} "
          f"{'median cm':>9} {'p90 cm':>7} {'>5cm':>6}")
    for size in args.sizes:
        w, h = (int(x) for x in size.lower().split("x"))
        r = measure(w, h, frames=args.frames, refs=args.refs, every=args.every,
                    device=args.device, **overrides)
        rows.append(r)
        print(f"{size:>10} {r['hypotheses']:>5} {r['refs']:>4} {r['ms_per_frame']:>9.0f} "
              f"{r['coverage']:>8.3f} {r['median_cm']:>9.2f} {r['p90_cm']:>7.2f} "
              f"{r['frac_over_5cm']:>6.3f}", flush=True)
    return rows


if __name__ == "__main__":
    main()
