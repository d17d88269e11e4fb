"""Time explain on each array backend against zennit on the same device, in the same run.

    python benchmarks/backend_speed.py [--repeats 10] [--threads 2] [--devices cpu cuda]
                                       [--resnet-batch 32] [--resnet-size 224] [--resnet-on-cpu]

Models (random weights, seed 0, float32, one target per sample; those of explain_speed.py):
  MLP 784-1000-1000-10, batch 64, z+ on every linear layer;
  VGG-like CNN 3x32x32 (conv 32-32-M-64-64-M-128-128-M, dense 256-10), batch 16, z+;
  on a GPU also ResNet-18 (lrp_num.io.torch_architectures.resnet18, batch norms folded), batch
  32 of 3x224x224, with the rules of zennit's EpsilonPlusFlat (as resnet_speed.py).

Per device (the CPU, and CUDA where torch sees it) every function runs once per repeat, in a
rotated order, after a warm-up (which moves the weights to the device once); the table gives
medians and the median per-repeat ratios: explain / our forward pass and our explain / zennit's.
On the CPU the NumPy backend (the default for NumPy input) is timed too. ``--resnet-on-cpu``
runs the ResNet part on the CPU as well (with ``--resnet-size 32 --resnet-batch 1`` it is the
quick check, run by the tests, that the GPU path of this script works).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any, Callable

import numpy as np

import lrp_num
from lrp_num import backends
from lrp_num.engine.explain import top_relevance
from lrp_num.engine.graph import as_graph

from explain_speed import limit_threads, mlp, vgg  # the sibling benchmarks (this folder is on sys.path)
from resnet_speed import basic_block_sum_canonizer, batch_norm_pairs, epsilon_plus_flat, EPSILON


def interleaved(functions: dict[str, Callable[[], Any]], repeats: int,
                synchronize: Callable[[], None]) -> dict[str, list[float]]:
    """Seconds of every function per repeat; each repeat starts one function later."""
    for function in functions.values():  # warm-up: device weights, allocators, caches
        function()
    synchronize()
    times: dict[str, list[float]] = {name: [] for name in functions}
    names = list(functions)
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            synchronize()
            start = time.perf_counter()
            functions[name]()
            synchronize()
            times[name].append(time.perf_counter() - start)
    return times


def ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> float:
    return statistics.median(a / b for a, b in zip(times[numerator], times[denominator]))


def zennit_function(zennit: Any, model: Any, composite: Any, inputs: Any, top: Any) -> Callable[[], Any]:
    def run() -> Any:
        with zennit.attribution.Gradient(model, composite) as attributor:
            return attributor(inputs, top)[1]
    return run


def zplus_composite(zennit: Any, torch: Any) -> Any:
    return zennit.core.Composite(module_map=lambda ctx, name, module: zennit.rules.ZPlus()
                                 if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) else None)


def chain_functions(name: str, network, x: np.ndarray, device: str, torch: Any,
                    zennit: Any | None) -> dict[str, Callable[[], Any]]:
    """Our forward and explain (torch backend; NumPy too on the CPU) and zennit's z+."""
    from lrp_num.io.torch_bridge import to_torch
    inputs = torch.from_numpy(x).to(device)
    graph = as_graph(network)
    backend = backends.backend_of(inputs)
    functions: dict[str, Callable[[], Any]] = {
        "forward (torch backend)": lambda: backend.forward_trace(graph, inputs),
        "explain (torch backend)": lambda: lrp_num.explain(network, inputs, rule="zplus"),
    }
    if device == "cpu":
        functions["forward (numpy)"] = lambda: network.forward(x)
        functions["explain (numpy)"] = lambda: lrp_num.explain(network, x, rule="zplus")
    if zennit is not None:
        model = to_torch(network, dtype=torch.float32).to(device)
        with torch.no_grad():
            output = model(inputs)
        top = torch.eye(network.n_outputs, device=device)[output.argmax(1)] * output
        functions["zennit z+"] = zennit_function(zennit, model, zplus_composite(zennit, torch),
                                                 inputs, top)
    return functions


def resnet_functions(batch: int, size: int, device: str, torch: Any,
                     zennit: Any | None) -> dict[str, Callable[[], Any]]:
    """ResNet-18 with EpsilonPlusFlat's rules: ours (torch backend) and zennit's."""
    from lrp_num.io.torch_architectures import BasicBlock, resnet18
    from lrp_num.io.torch_import import from_torch_module
    model = resnet18(seed=0)
    graph = from_torch_module(model, (3, size, size))
    x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
    top = top_relevance(graph.forward(x), None)
    inputs, top_torch = torch.from_numpy(x).to(device), torch.from_numpy(top).to(device)
    backend = backends.backend_of(inputs)
    flat = epsilon_plus_flat()
    functions: dict[str, Callable[[], Any]] = {
        "forward (torch backend)": lambda: backend.forward_trace(graph, inputs),
        "explain (torch backend)": lambda: lrp_num.explain(graph, inputs, composite=flat, target=top_torch),
    }
    if zennit is not None:
        canonizers = [zennit.canonizers.NamedMergeBatchNorm(batch_norm_pairs(model)),
                      basic_block_sum_canonizer(zennit, BasicBlock)]
        composite = zennit.composites.EpsilonPlusFlat(epsilon=EPSILON, canonizers=canonizers)
        model = model.to(device)

        def torch_forward() -> None:
            with torch.no_grad():
                model(inputs)
        functions["torch forward"] = torch_forward
        functions["zennit EpsilonPlusFlat"] = zennit_function(zennit, model, composite, inputs, top_torch)
    return functions


def report(title: str, times: dict[str, list[float]], zennit_name: str) -> None:
    print(title)
    for name, values in times.items():
        print(f"  {name:26s} {statistics.median(values) * 1e3:9.2f} ms  "
              f"({min(values) * 1e3:.2f} - {max(values) * 1e3:.2f})")
    for backend in ("torch backend", "numpy"):
        if f"explain ({backend})" not in times:
            continue
        line = f"  {backend:14s} explain / forward {ratio(times, f'explain ({backend})', f'forward ({backend})'):6.2f}"
        if zennit_name in times:
            line += f"   ours / zennit {ratio(times, f'explain ({backend})', zennit_name):6.2f}"
        print(line)


def main(argv: list[str] | None = None) -> None:
    import torch
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="threads of NumPy's BLAS and of torch")
    parser.add_argument("--devices", nargs="+", default=None,
                        help="torch devices (default: cpu, and cuda where available)")
    parser.add_argument("--resnet-batch", type=int, default=32)
    parser.add_argument("--resnet-size", type=int, default=224)
    parser.add_argument("--resnet-on-cpu", action="store_true", help="run the ResNet-18 part on the CPU too")
    parser.add_argument("--no-zennit", action="store_true")
    args = parser.parse_args(argv)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    limit_threads(args.threads)
    zennit = None
    if not args.no_zennit:
        from lrp_num.audit.zennit_adapter import import_zennit
        zennit = import_zennit()
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"{args.threads} thread(s) for BLAS and torch; devices {', '.join(devices)}")
    for device in devices:
        synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        label = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
        rng = np.random.default_rng(0)
        for name, build in (("MLP 784-1000-1000-10, batch 64", mlp),
                            ("VGG-like CNN 3x32x32, batch 16", vgg)):
            network, x = build(rng)
            times = interleaved(chain_functions(name, network, x, device, torch, zennit),
                                args.repeats, synchronize)
            report(f"{name}, z+, float32, {label}; median of {args.repeats}", times, "zennit z+")
        if device.startswith("cuda") or args.resnet_on_cpu:
            times = interleaved(resnet_functions(args.resnet_batch, args.resnet_size, device, torch, zennit),
                                args.repeats, synchronize)
            report(f"ResNet-18, batch {args.resnet_batch}, 3x{args.resnet_size}x{args.resnet_size}, "
                   f"EpsilonPlusFlat rules, float32, {label}; median of {args.repeats}",
                   times, "zennit EpsilonPlusFlat")
    print(f"load average after:  {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
