"""Time explain against the engine's own forward pass, and against zennit when installed.

    python benchmarks/explain_speed.py [--repeats 20] [--threads 2]

Models (random weights, z+ on every linear layer, float32, one target per sample):
  MLP 784-1000-1000-10, batch 64;
  VGG-like CNN on 3x32x32: conv 32-32-pool-64-64-pool-128-128-pool, dense 256-10, batch 16.
Prints median times, explain / forward, peak memory of explain relative to forward
(tracemalloc, NumPy allocations), and our time / zennit's time when torch and zennit import.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import tracemalloc

import numpy as np

from lrp_num import Sequential, explain
from lrp_num.layers import Conv2d, Dense, Flatten, MaxPool2d, ReLU


def mlp(rng: np.random.Generator) -> tuple[Sequential, np.ndarray]:
    sizes = [784, 1000, 1000, 10]
    layers = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        layers += [Dense(rng.normal(0, 1 / np.sqrt(n_in), (n_in, n_out)), -np.abs(rng.normal(0, 0.01, n_out))), ReLU()]
    return Sequential(layers[:-1], input_shape=(784,)), rng.random((64, 784), dtype=np.float32)


def vgg(rng: np.random.Generator) -> tuple[Sequential, np.ndarray]:
    layers, channels = [], 3
    for width in (32, 32, "M", 64, 64, "M", 128, 128, "M"):
        if width == "M":
            layers.append(MaxPool2d(2))
            continue
        fan_in = channels * 9
        layers += [Conv2d(rng.normal(0, np.sqrt(2 / fan_in), (width, channels, 3, 3)),
                          -np.abs(rng.normal(0, 0.01, width)), padding=1), ReLU()]
        channels = width
    layers += [Flatten(), Dense(rng.normal(0, 0.03, (128 * 16, 256)), -np.abs(rng.normal(0, 0.01, 256))), ReLU(),
               Dense(rng.normal(0, 0.06, (256, 10)), np.zeros(10))]
    return Sequential(layers, input_shape=(3, 32, 32)), rng.random((16, 3, 32, 32), dtype=np.float32)


def median_seconds(function, repeats: int) -> float:
    function()  # warm up caches of transformed weights
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def limit_threads(threads: int) -> None:
    """Give NumPy's BLAS and torch the same number of threads (threadpoolctl for the BLAS; without
    it, set OPENBLAS_NUM_THREADS before starting). On a loaded machine two busy-waiting BLAS
    threads per product can run several times slower than one."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("threadpoolctl is not installed: NumPy's BLAS keeps its own thread count")
    else:
        threadpool_limits(limits=threads, user_api="blas")
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads)


def peak_bytes(function) -> int:
    tracemalloc.start()
    function()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def zennit_seconds(network: Sequential, x: np.ndarray, repeats: int) -> float | None:
    try:
        import torch
        from lrp_num.io.torch_bridge import to_torch
        from lrp_num.audit.zennit_adapter import import_zennit
    except ImportError:
        return None
    try:
        zennit = import_zennit()
    except ImportError:
        return None
    model = to_torch(network, dtype=torch.float32)
    rules = zennit.core.Composite(module_map=lambda ctx, name, module: zennit.rules.ZPlus()
                                  if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) else None)
    inputs = torch.from_numpy(x)
    with torch.no_grad():  # the output relevance f_c(x) at the target, as our explain uses
        output = model(inputs)
        top = torch.eye(network.n_outputs)[output.argmax(1)] * output

    def run() -> None:
        with zennit.attribution.Gradient(model, rules) as attributor:
            attributor(inputs, top)
    return median_seconds(run, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="threads of NumPy's BLAS and of torch")
    args = parser.parse_args()
    limit_threads(args.threads)
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {args.threads} thread(s) for BLAS and torch")
    rng = np.random.default_rng(0)
    models = [(name, *build(rng)) for name, build in (("MLP", mlp), ("VGG-CNN", vgg))]
    ours = {}
    for name, network, x in models:  # all NumPy timings first: torch's worker threads keep
        forward = median_seconds(lambda: network.forward(x), args.repeats)  # spinning after use
        lrp = median_seconds(lambda: explain(network, x, rule="zplus"), args.repeats)
        memory = peak_bytes(lambda: explain(network, x, rule="zplus")) / peak_bytes(lambda: network.forward(x))
        ours[name] = forward, lrp, memory
    print(f"{'model':8s} {'forward':>10s} {'explain':>10s} {'ratio':>6s} {'peak mem ratio':>15s} {'ours/zennit':>12s}")
    for name, network, x in models:
        forward, lrp, memory = ours[name]
        zennit = zennit_seconds(network, x, args.repeats)
        versus = f"{lrp / zennit:12.2f}" if zennit else f"{'n/a':>12s}"
        print(f"{name:8s} {forward * 1e3:8.2f}ms {lrp * 1e3:8.2f}ms {lrp / forward:6.2f} {memory:15.2f} {versus}")


if __name__ == "__main__":
    main()
