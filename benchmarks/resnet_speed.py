"""ResNet-18: explain against the engine's own forward pass, and against zennit 0.5.1.

    python benchmarks/resnet_speed.py [--repeats 5] [--batch 8] [--threads 2] [--no-zennit]

ResNet-18 (``lrp_num.io.torch_architectures.resnet18``: torchvision's module structure, random
weights and random batch-norm statistics, seed 0) on a batch of 3x224x224 inputs drawn
uniformly from [0, 1), float32, imported with ``lrp_num.io.torch_import.from_torch_module`` (the
batch norms are folded into the convolutions before them). One target per sample: the output
relevance is f_c(x) at each sample's largest output, the same array for both libraries.

Measured, as medians over ``--repeats`` runs after one warm-up, interleaved (every function
once per repeat, each repeat in a rotated order) so that the load of the machine affects all
alike:

1. our ``explain`` with the ``epsilon-plus`` composite (z+ on every convolution, epsilon on the
   classifier) over our own forward pass (``Graph.forward``), and the peak of NumPy allocations
   during explain over that of forward (``tracemalloc``);
2. our ``explain`` over zennit's, both with the rules of zennit's ``EpsilonPlusFlat``: flat at
   the first convolution, z+ on the other convolutions, epsilon on the dense layer (for us a
   :class:`lrp_num.Composite` built below with the same epsilon). zennit runs as its users run
   it on a torchvision ResNet: every batch norm merged into the convolution before it by a
   ``NamedMergeBatchNorm`` canonizer with the explicit (convolution, batch norm) pairs, and the
   residual additions routed through a ``zennit.layer.Sum`` module, which ``EpsilonPlusFlat``
   gives the ``Norm`` rule. zennit's own ResNet canonizer does that rewrite for torchvision's
   ``BasicBlock`` only (and imports torchvision, which cannot be imported here), so
   :class:`BasicBlockSum` below does the same rewrite for the project's ``BasicBlock``.

The relevance of both libraries is compared: under our default conventions (DTD: no bias in
the z+ denominators, stabiliser only at zero denominators) and, like for like, under
``Conventions(bias="zennit", stabilise="everywhere")`` (zennit's z+ adds b^+ to the
denominator and stabilises every denominator by 1e-6 sign(d)). Like for like they still differ
by about 1e-4 of max |R|, in float64 too: zennit's batch-norm merge leaves each BatchNorm in
the forward pass with mean 0 and variance 1, i.e. x / sqrt(1 + eps_bn) rather than the
identity. The last check therefore repeats the comparison in float64 with eps_bn = 0 on both
sides (on 64x64 inputs, to be quick), where the two agree to rounding.

The ratios are medians of the per-repeat ratios (each repeat times every function back to
back). The machine's load average is printed before and after: timings on a shared machine
move with it, the ratios less so.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
import tracemalloc
from typing import Any, Callable

import numpy as np

import lrp_num
from lrp_num import Composite, Conventions, LayerRule
from lrp_num.engine.explain import top_relevance

from explain_speed import limit_threads  # the sibling benchmark (this folder is on sys.path)

#: the epsilon of the dense layer, for both libraries (our epsilon-plus composite's value)
EPSILON = 0.25


def epsilon_plus_flat(epsilon: float = EPSILON) -> Composite:
    """zennit's EpsilonPlusFlat as our composite: flat at the first linear layer, z+ on the other
    convolutions, epsilon on dense layers; Add nodes keep the proportional split (add_z)."""
    return Composite.from_types("epsilon-plus-flat", dense=LayerRule("epsilon", {"epsilon": epsilon}),
                                conv=LayerRule("zplus"), first=LayerRule("flat"),
                                description="flat at the first layer, z+ on convolutions, epsilon on dense")


def batch_norm_pairs(model: Any) -> list[tuple[list[str], str]]:
    """The (convolution, batch norm) pairs of the project's ResNet, by module name, in the form
    of zennit's ``NamedMergeBatchNorm``: ``conv1``/``bn1`` of the stem and of every block,
    ``conv2``/``bn2`` of every block, ``downsample.0``/``downsample.1`` of the shortcuts."""
    names = dict(model.named_modules())
    pairs = []
    for name in names:
        prefix, _, last = name.rpartition(".")
        if last.startswith("bn"):
            pairs.append(([f"{prefix}.conv{last[2:]}".lstrip(".")], name))
        elif last == "1" and prefix.endswith("downsample"):
            pairs.append(([f"{prefix}.0"], name))
    for linears, batch_norm in pairs:
        assert linears[0] in names, f"no convolution {linears[0]} before {batch_norm}"
    return pairs


def basic_block_sum_canonizer(zennit: Any, block_type: type) -> Any:
    """A zennit canonizer that gives every ``block_type`` (the project's BasicBlock) a
    ``zennit.layer.Sum`` module and a forward that adds shortcut and residual branch through it
    (the two stacked on a new last axis), so that zennit's hooks see the addition and a
    composite can give it the ``Norm`` rule; the rewrite zennit's ResNet canonizer makes to
    torchvision's BasicBlock."""
    torch = __import__("torch")

    def forward_through_sum(block, x):
        branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
        shortcut = x if block.downsample is None else block.downsample(x)
        return block.relu(block.residual_sum(torch.stack([shortcut, branch], dim=-1)))

    def attributes(name: str, module: Any) -> dict | None:
        if not isinstance(module, block_type):
            return None
        return {"forward": forward_through_sum.__get__(module), "residual_sum": zennit.layer.Sum()}

    return zennit.canonizers.AttributeCanonizer(attributes)


def peak_bytes(function: Callable[[], Any]) -> int:
    tracemalloc.start()
    function()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def relative_difference(ours: np.ndarray, theirs: np.ndarray) -> float:
    """max |ours - theirs| / max |theirs|."""
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="threads of NumPy's BLAS and of torch")
    parser.add_argument("--no-zennit", action="store_true", help="time our engine only")
    args = parser.parse_args()

    import torch
    from lrp_num.io.torch_architectures import BasicBlock, resnet18
    from lrp_num.io.torch_import import from_torch_module

    limit_threads(args.threads)
    print(f"load average before: {load()}; {args.threads} thread(s) for BLAS and torch")
    model = resnet18(seed=0)
    graph = from_torch_module(model, (3, 224, 224))
    x = np.random.default_rng(0).random((args.batch, 3, 224, 224), dtype=np.float32)
    output = graph.forward(x)
    top = top_relevance(output, None)  # f_c(x) at each sample's largest output
    flat = epsilon_plus_flat()

    def ours_forward() -> np.ndarray:
        return graph.forward(x)

    def ours_epsilon_plus() -> np.ndarray:
        return lrp_num.explain(graph, x, composite="epsilon-plus", target=top)

    def ours_flat() -> np.ndarray:
        return lrp_num.explain(graph, x, composite=flat, target=top)

    timed: dict[str, Callable[[], Any]] = {"forward": ours_forward, "explain epsilon-plus": ours_epsilon_plus,
                                           "explain epsilon-plus-flat": ours_flat}
    relevance_zennit = None
    if not args.no_zennit:
        from lrp_num.audit.zennit_adapter import import_zennit
        zennit = import_zennit()
        canonizers = [zennit.canonizers.NamedMergeBatchNorm(batch_norm_pairs(model)),
                      basic_block_sum_canonizer(zennit, BasicBlock)]
        composite = zennit.composites.EpsilonPlusFlat(epsilon=EPSILON, canonizers=canonizers)
        inputs, top_torch = torch.from_numpy(x), torch.from_numpy(top)
        with torch.no_grad():
            assert np.allclose(model(inputs).numpy(), output, rtol=1e-4, atol=1e-4 * np.abs(output).max())

        def zennit_flat() -> np.ndarray:
            with zennit.attribution.Gradient(model, composite) as attributor:
                return attributor(inputs, top_torch)[1].numpy()

        def torch_forward() -> None:
            with torch.no_grad():
                model(inputs)
        timed.update({"zennit EpsilonPlusFlat": zennit_flat, "torch forward": torch_forward})
        relevance_zennit = zennit_flat()

    times: dict[str, list[float]] = {name: [] for name in timed}
    for function in timed.values():  # warm-up: transformed-weight caches, torch's allocator
        function()
    names = list(timed)
    for repeat in range(args.repeats):  # each repeat starts one function later: no fixed order
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            start = time.perf_counter()
            timed[name]()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}

    def ratio(numerator: str, denominator: str) -> float:
        return statistics.median(a / b for a, b in zip(times[numerator], times[denominator]))

    memory = peak_bytes(ours_epsilon_plus) / peak_bytes(ours_forward)
    print(f"load average after:  {load()}")
    print(f"ResNet-18, batch {args.batch}, 3x224x224, float32; median of {args.repeats} (min - max)")
    for name, values in times.items():
        print(f"  {name:28s} {median[name]:7.3f} s  ({min(values):.3f} - {max(values):.3f})")
    print(f"explain / forward (epsilon-plus):      {ratio('explain epsilon-plus', 'forward'):.2f}  (goal <= 4)")
    print(f"explain / forward (epsilon-plus-flat): {ratio('explain epsilon-plus-flat', 'forward'):.2f}")
    print(f"peak memory explain / forward:         {memory:.2f}  (goal <= 4)")
    if relevance_zennit is None:
        return
    print(f"ours / zennit (EpsilonPlusFlat):       {ratio('explain epsilon-plus-flat', 'zennit EpsilonPlusFlat'):.2f}"
          "  (goal < 1.0)")
    print(f"our forward / torch forward:           {ratio('forward', 'torch forward'):.2f}")
    like = lrp_num.explain(graph, x, composite=flat, target=top,
                           conventions=Conventions(bias="zennit", stabilise="everywhere"))
    print(f"relevance vs zennit, max |diff| / max |R|: DTD conventions "
          f"{relative_difference(ours_flat(), relevance_zennit):.1e}, zennit conventions "
          f"{relative_difference(like, relevance_zennit):.1e}")
    print(f"sum of relevance, sample 0: ours {like[0].sum():.6f}, zennit {relevance_zennit[0].sum():.6f}, "
          f"f_c(x) {top[0].sum():.6f}")
    print(f"float64, eps_bn = 0, 2 x 3x64x64, zennit conventions: max |diff| / max |R| "
          f"{float64_agreement(model, zennit, BasicBlock):.1e}")


def float64_agreement(model: Any, zennit: Any, block_type: type) -> float:
    """Ours (zennit conventions) against zennit in float64 with every batch norm's eps set to 0
    on both sides, so that zennit's merged batch norms are exactly the identity."""
    import torch
    from lrp_num.io.torch_import import from_torch_module

    model = copy.deepcopy(model).double()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = 0.0
    graph = from_torch_module(model, (3, 64, 64))
    x = np.random.default_rng(1).random((2, 3, 64, 64))
    top = top_relevance(graph.forward(x), None)
    canonizers = [zennit.canonizers.NamedMergeBatchNorm(batch_norm_pairs(model)),
                  basic_block_sum_canonizer(zennit, block_type)]
    composite = zennit.composites.EpsilonPlusFlat(epsilon=EPSILON, canonizers=canonizers)
    with zennit.attribution.Gradient(model, composite) as attributor:
        theirs = attributor(torch.from_numpy(x), torch.from_numpy(top))[1].numpy()
    ours = lrp_num.explain(graph, x, composite=epsilon_plus_flat(), target=top,
                           conventions=Conventions(bias="zennit", stabilise="everywhere"))
    return relative_difference(ours, theirs)

if __name__ == "__main__":
    main()
