"""Time ``lrp verify`` on Dask workers: 32 digits-cnn inputs, 1 worker against 2, in one run.

    python benchmarks/distributed_speed.py [--inputs 32] [--rules zplus] [--dps 50] [--workers 1 2]

The inputs: digits-cnn stores 8 test images; the 32 inputs are those 8 and their copies shifted
by one pixel right, down, and right and down (zeros fill the edge; the values stay in the
model's box [0, 1]). Each worker count gets its own local cluster (one process and one BLAS
thread per worker, bound to 127.0.0.1); the clusters start and import the toolkit before the
clock runs, so the times are those of the verification itself, scatter of the model included.
The default rule set is z+ alone (``lrp verify``'s full set takes about 12 times longer per
input); the reference at 50 digits is the bulk of the work either way.

Prints, per worker count, the wall time, the sum of the per-sample times the workers measured
(their compute), how busy the workers were (compute / (wall x workers)), the load average
before and after, then the speed-up over 1 worker
(the machine may be shared; a speed-up below the number of workers with a high load average is
the other processes' share of the cores, not the scheduler's). ``--json PATH`` writes them too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time

import numpy as np


def shifted_inputs(images: np.ndarray, count: int) -> np.ndarray:
    """``count`` inputs: the images, then their one-pixel shifts (right, down, both), in turn."""
    shifts = [(0, 0), (0, 1), (1, 0), (1, 1)]
    batches = []
    for dy, dx in shifts:
        shifted = np.zeros_like(images)
        shifted[..., dy:, dx:] = images[..., : images.shape[-2] - dy, : images.shape[-1] - dx]
        batches.append(shifted)
    x = np.concatenate(batches)
    if count > len(x):
        raise SystemExit(f"--inputs at most {len(x)} (the stored images and their three shifts)")
    return x[:count]


def _warm_up() -> None:
    import lrp_num.verify  # noqa: F401  (the toolkit and mpmath imported before the clock runs)


def time_workers(workers: int, network, x: np.ndarray, rules: tuple[str, ...], dps: int, input_domain) -> dict:
    import distributed

    from lrp_num.distributed import ONE_THREAD_ENVIRONMENT, SCHEDULER_HTTP, verify_distributed

    load_before = os.getloadavg()
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, scheduler_kwargs=SCHEDULER_HTTP,
                                  env=ONE_THREAD_ENVIRONMENT, silence_logs=logging.CRITICAL) as cluster, \
            distributed.Client(cluster) as client:
        client.wait_for_workers(workers, timeout=120)
        client.run(_warm_up)
        start = time.perf_counter()
        report, per_sample = verify_distributed(client, network, x, rules=rules, composites=(), dps=dps,
                                                input_domain=input_domain, model_name="digits-cnn")
        wall = time.perf_counter() - start
    compute = sum(row["time_engine"] + row["time_reference"] for result in per_sample
                  for row in result["report"]["rows"])
    # wall x workers / compute: 1 when the workers computed all the time (scheduling costs nothing)
    return {"workers": workers, "wall_s": wall, "compute_s": compute, "ok": report.ok,
            "busy": compute / (wall * workers),
            "load_before": load_before, "load_after": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=32)
    parser.add_argument("--rules", nargs="+", default=["zplus"])
    parser.add_argument("--dps", type=int, default=50)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = parser.parse_args()

    from lrp_num.commands.common import load_model

    model = load_model("digits-cnn")
    x = shifted_inputs(model.test_images, args.inputs)
    print(f"distributed verify: digits-cnn, {len(x)} inputs, rules {' '.join(args.rules)}, {args.dps} digits; "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}", flush=True)
    results = []
    for workers in args.workers:
        results.append(time_workers(workers, model.network, x, tuple(args.rules), args.dps, model.input_domain))
        r = results[-1]
        print(f"  {workers} worker(s): {r['wall_s']:7.1f} s wall, {r['compute_s']:7.1f} s compute, "
              f"workers busy {r['busy']:.0%}, verification "
              f"{'passed' if r['ok'] else 'FAILED'}; load average {r['load_before'][0]:.2f} before, "
              f"{r['load_after'][0]:.2f} after", flush=True)
    single = next((r for r in results if r["workers"] == 1), None)
    for r in results:
        if single is not None and r is not single:
            print(f"speed-up of {r['workers']} workers over 1: {single['wall_s'] / r['wall_s']:.2f}x "
                  f"(compute per sample {r['compute_s'] / single['compute_s']:.2f}x that of 1 worker)")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"inputs": len(x), "rules": args.rules, "dps": args.dps, "cpus": os.cpu_count(),
                       "results": results}, file, indent=2)


if __name__ == "__main__":
    main()
