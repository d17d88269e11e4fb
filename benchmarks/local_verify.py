"""Time ``lrp verify --local`` on ResNet-18 and VGG-11-BN with random weights, 3x224x224, one image.

    PYTHONPATH=. python benchmarks/local_verify.py --neurons 256 --models resnet18 vgg11

Prints the load average, the time to build each model (torch initialisation and import, not part
of the check), the engine's time (forward, backward, and the restricted backward of every node)
and the reference's, the per-node table, and the slowest nodes; CPU time (process_time) beside
the wall time, since on a loaded machine the process gets a fraction of a core. The issue's
goal: K = 256 in under 2 minutes per model on the project's 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=int, default=256)
    parser.add_argument("--models", nargs="+", default=["resnet18", "vgg11"], choices=["resnet18", "vgg11"])
    parser.add_argument("--composite", default="deep-taylor")
    parser.add_argument("--dps", type=int, default=50)
    parser.add_argument("--path", choices=["arb", "mpmath"], default=None,
                        help="the high-precision path (default: arb where python-flint is installed)")
    args = parser.parse_args()

    from lrp_num.commands.verify_local import architecture
    from lrp_num.verify_local import format_local_table, verify_local

    ok = True
    for name in args.models:
        print(f"load average before {name}: {load()}", flush=True)
        start = time.perf_counter()
        graph, image = architecture(name)
        built = time.perf_counter() - start
        start, cpu = time.perf_counter(), time.process_time()
        report = verify_local(graph, image, composite=args.composite, neurons=args.neurons, dps=args.dps,
                              model_name=name, path=args.path)
        total, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(format_local_table(report))
        slowest = sorted(report.layers, key=lambda row: -row.time_reference)[:5]
        print("slowest nodes: " + ", ".join(f"{row.name} {row.time_reference:.1f}s" for row in slowest))
        print(f"{name}: K = {args.neurons}, {report.path} path, build {built:.1f}s, check {total:.1f}s wall, {cpu:.1f}s CPU (engine "
              f"{report.time_engine:.1f}s, reference {report.time_reference:.1f}s), load average after: {load()}\n",
              flush=True)
        ok = ok and report.ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
