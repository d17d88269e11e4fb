"""Certified enclosures (ball arithmetic, python-flint arb) against the mpmath reference.

    python benchmarks/certified_speed.py [--model digits-cnn] [--samples 1] [--dps 50] [--json]

For every default rule and composite of ``lrp verify`` (``lrp_num.verify.DEFAULT_RULES`` and
``DEFAULT_COMPOSITES``) on the model's first stored test images, in the same run and at the same
precision (``dps`` digits plus the same 10 guard digits on both sides):

* the time of :func:`lrp_num.certified.explain_balls` and of the mpmath reference
  (:func:`lrp_num.reference.explain_trace` with ``diagnostics=False``: the relevance only, as
  the balls compute it), per input, and their ratio (goal: the balls at least 10x faster);
* the largest ball radius over max |R| of the input relevance (goal: at most 1e-30);
* the undecided neurons, and whether every mpmath value lies inside its ball.

Both sides build their per-network structures once (a warm-up run of the first method, not
timed). Times on a shared machine move with its load; the ratio less so.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from lrp_num import reference
from lrp_num.certified import explain_balls
from lrp_num.certified.balls import from_mpf, working_precision
from lrp_num.io.model_io import load_builtin
from lrp_num.verify import DEFAULT_COMPOSITES, DEFAULT_RULES


def measure(model_name: str, samples: int, dps: int) -> list[dict]:
    model = load_builtin(model_name)
    x = model.test_images[:samples]
    targets = model.test_labels[:samples].astype(int)
    common = dict(target=targets, dps=dps, input_domain=model.input_domain)
    methods = [{"rule": r} for r in DEFAULT_RULES] + [{"composite": c} for c in DEFAULT_COMPOSITES]
    explain_balls(model.network, x[:1], **{**common, "target": targets[:1]}, **methods[0])  # warm-up
    reference.explain_trace(model.network, x[:1], **{**common, "target": targets[:1]}, diagnostics=False,
                            **methods[0])
    rows = []
    for method in methods:
        start = time.perf_counter()
        balls = explain_balls(model.network, x, **common, **method)
        time_balls = (time.perf_counter() - start) / len(x)
        start = time.perf_counter()
        exact = reference.explain_trace(model.network, x, **common, diagnostics=False, **method)
        time_reference = (time.perf_counter() - start) / len(x)
        radius, outside, undecided = 0.0, 0, 0
        with working_precision(4 * dps + 100):
            for ball_result, exact_result in zip(balls, exact):
                finite = [b for b in ball_result.relevance if b.is_finite()]
                scale = max(abs(float(b.mid())) for b in finite) or 1.0
                radius = max(radius, max(float(b.rad()) for b in finite) / scale)
                outside += sum(not b.contains(from_mpf(v)) for b, v in zip(ball_result.relevance,
                                                                          exact_result.relevance))
                undecided += sum(ball_result.undecided.values())
        rows.append({"method": next(iter(method.values())), "time_balls": time_balls,
                     "time_reference": time_reference, "speedup": time_reference / time_balls,
                     "radius_over_max": radius, "undecided": undecided, "reference_outside_balls": outside})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits-cnn")
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--dps", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    rows = measure(args.model, args.samples, args.dps)
    total_balls = sum(r["time_balls"] for r in rows)
    total_reference = sum(r["time_reference"] for r in rows)
    summary = {"model": args.model, "samples": args.samples, "dps": args.dps, "load_before": load,
               "load_after": os.getloadavg()[0], "time_balls": total_balls, "time_reference": total_reference,
               "speedup": total_reference / total_balls,
               "radius_over_max": max(r["radius_over_max"] for r in rows), "rows": rows}
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{args.model}, {args.samples} sample(s), {args.dps} digits (+10 guard) on both sides; "
          f"load {summary['load_before']:.1f} -> {summary['load_after']:.1f}")
    print(f"{'rule / composite':<20} {'balls s':>8} {'mpmath s':>9} {'speedup':>8} {'rad/max|R|':>11} "
          f"{'undecided':>9} {'outside':>7}")
    for r in rows:
        print(f"{r['method']:<20} {r['time_balls']:>8.3f} {r['time_reference']:>9.3f} {r['speedup']:>8.1f} "
              f"{r['radius_over_max']:>11.2e} {r['undecided']:>9d} {r['reference_outside_balls']:>7d}")
    print(f"{'all':<20} {total_balls:>8.3f} {total_reference:>9.3f} {summary['speedup']:>8.1f} "
          f"{summary['radius_over_max']:>11.2e}   (goals: speedup >= 10, rad/max|R| <= 1e-30)")


if __name__ == "__main__":
    np.seterr(all="raise")
    main()
