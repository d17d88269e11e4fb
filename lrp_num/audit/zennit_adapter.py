"""Running zennit 0.5.1 on a torch twin of a network, with the relevance at every layer.

:func:`import_zennit` imports zennit without torchvision: zennit's ``__init__`` imports
``zennit.torchvision``, which needs only ``torchvision.models.resnet.Bottleneck`` and
``BasicBlock`` (for its ResNet canonizers). When torchvision is not installed, a placeholder
module holding two empty ``torch.nn.Module`` subclasses of those names is registered just for
that import and removed again, so ``import torchvision`` elsewhere still fails as it should. The
ResNet canonizers then never match a module (nothing is an instance of the placeholders); the
audit uses only ``SequentialMergeBatchNorm`` and the rules, which need torch alone.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Callable, Mapping

import numpy as np

from lrp_num.audit.library_run import LibraryRun, module_groups
from lrp_num.engine.composites import LayerRule
from lrp_num.errors import MissingDependencyError
from lrp_num.audit.profiles import ZENNIT
from lrp_num.io.torch_bridge import INSTALL_HINT, require_torch

_PLACEHOLDER_MODULES = ("torchvision", "torchvision.models", "torchvision.models.resnet")


def _torchvision_placeholder(torch) -> dict[str, types.ModuleType]:
    """Modules providing exactly what zennit/torchvision.py imports (two ResNet block classes)."""
    modules = {name: types.ModuleType(name, "placeholder registered by lrp_num.audit for zennit's import")
               for name in _PLACEHOLDER_MODULES}
    for name in ("Bottleneck", "BasicBlock"):
        setattr(modules["torchvision.models.resnet"], name,
                type(name, (torch.nn.Module,), {"__doc__": "placeholder: torchvision is not installed"}))
    modules["torchvision"].models = modules["torchvision.models"]
    modules["torchvision.models"].resnet = modules["torchvision.models.resnet"]
    return modules


def import_zennit():
    """Import and return zennit (see the module docstring for the torchvision placeholder)."""
    torch = require_torch()
    if "zennit" in sys.modules:
        return sys.modules["zennit"]
    if importlib.util.find_spec("zennit") is None:
        raise MissingDependencyError(f"zennit is not installed: {INSTALL_HINT}")
    if importlib.util.find_spec("torchvision") is not None:
        return importlib.import_module("zennit")
    placeholders = _torchvision_placeholder(torch)
    sys.modules.update(placeholders)
    try:
        return importlib.import_module("zennit")
    finally:
        for name in _PLACEHOLDER_MODULES:
            if sys.modules.get(name) is placeholders[name]:
                del sys.modules[name]


def _dtype(model, torch):
    """The floating-point type the twin computes in (float64 unless the caller converted it)."""
    return next((p.dtype for p in model.parameters()), torch.float64)


def zennit_rule(choice: LayerRule, eps: float = ZENNIT.conventions.eps, low=None, high=None):
    """The zennit hook for our rule ``choice`` (see :data:`lrp_num.audit.profiles.ZENNIT`)."""
    zennit = import_zennit()
    rules = zennit.rules
    p = {**ZENNIT.rule(choice.rule).defaults, **dict(choice.parameters)}
    if choice.rule == "zplus":
        return rules.ZPlus(stabilizer=eps)
    if choice.rule == "epsilon":
        return rules.Epsilon(epsilon=p["epsilon"])
    if choice.rule == "gamma":
        return rules.Gamma(gamma=p["gamma"], stabilizer=eps)
    if choice.rule == "alphabeta":
        return rules.AlphaBeta(alpha=p["alpha"], beta=p["beta"], stabilizer=eps)
    if choice.rule == "zbox":
        return rules.ZBox(low=low, high=high, stabilizer=eps)
    if choice.rule == "w2":
        return rules.WSquare(stabilizer=eps)
    return rules.Flat(stabilizer=eps)


def run_zennit(network, model, x: np.ndarray, plan: Mapping[int, LayerRule], top: np.ndarray,
               input_domain=None, overrides: Mapping[int, Callable] | None = None) -> LibraryRun:
    """Run zennit's Gradient attributor with our plan's rules and record every boundary.

    Parameters
    ----------
    network : Sequential
        Our network (its source layers give the torch module layout).
    model : torch.nn.Sequential
        Its twin from :func:`lrp_num.io.torch_bridge.to_torch` (float64).
    plan : mapping
        Folded layer index -> LayerRule for Dense and Conv2d layers.
    top : ndarray
        Output relevance passed as zennit's output gradient (f_c(x) at the target).
    overrides : mapping, optional
        Folded layer index -> a function returning the hook to use there instead (tests use it
        to corrupt one layer).
    """
    torch = require_torch()
    zennit = import_zennit()
    groups = module_groups(network.source_layers)
    modules = list(model)
    dtype = _dtype(model, torch)
    low = high = None
    if input_domain is not None:
        shape = (1,) + tuple(x.shape[1:])
        low = torch.tensor(np.broadcast_to(input_domain.low, shape[1:])[None].copy(), dtype=dtype)
        high = torch.tensor(np.broadcast_to(input_domain.high, shape[1:])[None].copy(), dtype=dtype)
    hooks = {}
    for k, choice in plan.items():
        if choice.rule in ("lrp0", "maxpool", "sumpool", "avgpool"):
            continue  # pooling: Norm / the gradient, as in zennit's layer_map_base
        make = (overrides or {}).get(k)
        hooks[id(modules[groups[k][0]])] = make() if make else zennit_rule(choice, low=low, high=high)
    types_ = zennit.types

    def module_map(ctx, name, module):
        if id(module) in hooks:
            return hooks[id(module)]
        if isinstance(module, types_.Activation) or isinstance(module, types_.BatchNorm):
            return zennit.rules.Pass()
        if isinstance(module, types_.AvgPool):
            return zennit.rules.Norm(stabilizer=ZENNIT.conventions.eps)
        return None

    composite = zennit.core.Composite(module_map=module_map,
                                      canonizers=[zennit.canonizers.SequentialMergeBatchNorm()])
    captured: dict[int, object] = {}
    inputs = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True, dtype=dtype)
    with zennit.attribution.Gradient(model, composite) as attributor:
        handles = []
        for k in range(1, len(groups)):  # the output of folded layer k-1 is the input of layer k
            def store(module, args, output, k=k):
                output.register_hook(lambda grad: captured.__setitem__(k, grad.detach().clone()))
            handles.append(modules[groups[k - 1][-1]].register_forward_hook(store))
        try:
            output, relevance = attributor(inputs, torch.tensor(top, dtype=dtype))
        finally:
            for handle in handles:
                handle.remove()
    layers = {k: v.numpy() for k, v in captured.items()}
    layers[0] = relevance.detach().numpy()
    layers[len(groups)] = np.asarray(top, dtype=np.float64)
    return LibraryRun(f"zennit {getattr(zennit, '__version__', '0.5.1')}", layers[0], layers,
                      output.detach().numpy())


def run_zennit_graph(graph, twin, x: np.ndarray, plan: Mapping[int, LayerRule], top: np.ndarray,
                     input_domain=None, overrides: Mapping[str, Callable] | None = None) -> LibraryRun:
    """Run zennit's Gradient attributor on a graph's twin as zennit users run a ResNet.

    Batch norms are merged by ``canonizers.NamedMergeBatchNorm`` with the (linear, batch norm)
    pairs the graph folds (``SequentialMergeBatchNorm`` only sees module order, not the graph),
    additions go through the twin's ``zennit.layer.Sum`` modules, which get ``Norm`` as in
    zennit's ``layer_map_base``; activations and batch norms ``Pass``, average pooling ``Norm``.

    Parameters
    ----------
    graph : Graph
        Our graph; ``plan`` is keyed by its node indices.
    twin : GraphTwin
        ``to_torch(graph, addition=...)`` (float64).
    top : ndarray
        Output relevance passed as zennit's output gradient.
    overrides : mapping, optional
        Node name -> a function returning the hook to use for that node's module instead
        (tests corrupt one node with it).
    """
    from lrp_num.audit.node_recorder import NodeRecorder

    torch = require_torch()
    zennit = import_zennit()
    dtype = _dtype(twin, torch)
    low = high = None
    if input_domain is not None:
        low = torch.tensor(np.broadcast_to(input_domain.low, x.shape[1:])[None].copy(), dtype=dtype)
        high = torch.tensor(np.broadcast_to(input_domain.high, x.shape[1:])[None].copy(), dtype=dtype)
    from lrp_num.layers import Conv2d, Dense

    hooks = {}
    for k, choice in plan.items():  # pooling and additions: zennit's Norm / the gradient, below
        node = graph.nodes[k]
        if isinstance(node.operation, (Dense, Conv2d)) and node.name in twin.node_modules:
            hooks[id(twin.node_modules[node.name])] = zennit_rule(choice, low=low, high=high)
    for name, make in (overrides or {}).items():
        hooks[id(twin.node_modules[name])] = make()
    types_ = zennit.types
    stabilizer = ZENNIT.conventions.eps

    def module_map(ctx, name, module):
        if id(module) in hooks:
            return hooks[id(module)]
        if isinstance(module, (types_.Activation, types_.BatchNorm)):
            return zennit.rules.Pass()
        if isinstance(module, (types_.AvgPool, zennit.layer.Sum)):
            return zennit.rules.Norm(stabilizer=stabilizer)
        return None

    pairs = [((twin.module_paths[linear],), twin.module_paths[bn]) for bn, linear in graph.folded.items()]
    composite = zennit.core.Composite(module_map=module_map,
                                      canonizers=[zennit.canonizers.NamedMergeBatchNorm(pairs)])
    recorder = NodeRecorder(twin)
    inputs = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True, dtype=dtype)
    try:
        with zennit.attribution.Gradient(twin, composite) as attributor:
            output, relevance = attributor(inputs, torch.tensor(top, dtype=dtype))
    finally:
        recorder.close()
    nodes = dict(recorder.nodes)
    nodes[graph.input_name] = relevance.detach().numpy()
    return LibraryRun(f"zennit {getattr(zennit, '__version__', '0.5.1')}", nodes[graph.input_name],
                      output=output.detach().numpy(), nodes=nodes, addends=dict(recorder.addends))
