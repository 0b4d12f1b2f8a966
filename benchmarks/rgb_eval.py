"""Colour-only reconstruction on held-out synthetic fragments: Atlas (average / context view
fusion) vs plane-sweep stereo -> TSDF, with depth TSDF fusion as the ceiling.

    .venv/bin/python benchmarks/rgb_eval.py [--fragments 8] [--weights-average PATH]
        [--weights-context PATH] [--json PATH]

Protocol (:mod:`recon_ros.models.evaluate_rgb`): one fragment per held-out room (scene seeds
from 3000000; training draws seeds < 1000000), the geometry of the shipped weights' training
configuration (views, image size, voxel box), every method on the same posed views and the
same box, meshed by the same marching cubes and scored against the exact surface the views saw
inside the box, and each method's 2D grid (from the box's TSDF) against the true grid of the
box: the fraction of true obstacle cells marked free (``free``). Prints the mean over
fragments per method, then F-score at 5 cm and that fraction per fragment.
``recon-ros eval-rgb`` runs this protocol and the whole-map ones
(:mod:`recon_ros.models.evaluate_rgb_maps`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch

from recon_ros.models.evaluate_rgb import METHODS, RgbEvalConfig, evaluate_rgb, summary


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fragments", type=int, default=8, help="held-out fragments")
    parser.add_argument("--weights-average", default="", help="Atlas weights (average)")
    parser.add_argument("--weights-context", default="", help="Atlas weights (context)")
    parser.add_argument("--json", type=Path, help="write per-fragment results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = RgbEvalConfig(fragments=args.fragments, weights_average=args.weights_average,
                        weights_context=args.weights_context)
    results, geo = evaluate_rgb(cfg, log=lambda s: print(s, flush=True))
    table = summary(results, cfg.thresholds_m)
    print(f"\n{len(results)} held-out fragments {geo.fragment_dims} at "
          f"{100 * geo.voxel_size_m:g} cm, {geo.views} views {geo.width}x{geo.height}, "
          f"truncation {geo.model.truncation_voxels:g} voxels")
    print(f"{'method':>14} {'acc cm':>7} {'comp cm':>7} {'P@5':>5} {'R@5':>5} {'F@5':>5} "
          f"{'F@10':>5} {'free':>5} {'meshed':>6} {'s/frag':>6}")
    for m in METHODS:
        r = table[m]
        print(f"{m:>14} {r['accuracy_cm']:>7.2f} {r['completeness_cm']:>7.2f} "
              f"{r['precision@5']:>5.3f} {r['recall@5']:>5.3f} {r['fscore@5']:>5.3f} "
              f"{r['fscore@10']:>5.3f} {r['marked_free']:>5.3f} {int(r['meshed']):>6} "
              f"{r['seconds']:>6.2f}")
    print("\nF@5cm / true obstacle cells marked free, per fragment:")
    print(f"{'scene':>8} " + " ".join(f"{m:>14}" for m in METHODS))
    for r in results:
        print(f"{r.scene_seed:>8} " + " ".join(
            f"{r.metrics[m].fscore[0.05]:>8.3f} {r.marked_free[m]:>5.3f}" for m in METHODS))
    if args.json is not None:
        args.json.write_text(json.dumps({
            "summary": table, "geometry": geo.to_dict(),
            "fragments": [{"scene_seed": r.scene_seed, "gt_points": r.gt_points,
                           "seconds": r.seconds, "marked_free": r.marked_free,
                           "metrics": {m: asdict(x) for m, x in r.metrics.items()}}
                          for r in results]}, indent=1, default=str))
    return table


if __name__ == "__main__":
    main()
