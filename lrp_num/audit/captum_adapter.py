"""Running captum's LRP (0.8 / 0.9) on a torch twin of a network, with per-layer relevance.

captum stores, in each rule object, the relevance at its layer's input (``relevance_input``,
normalised so that the top relevance is 1) and removes the rules from the modules after
``attribute``. The adapter attaches its own rule objects, keeps references to them, and scales
what they recorded by f_c(x) as captum does with the input relevance. captum has no rule for
``nn.Flatten`` (it refuses the model); the adapter gives it a pass-through rule that only
reshapes the relevance, as captum's own ReLU handling does for activations.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Callable, Mapping

import numpy as np

from lrp_num.audit.library_run import LibraryRun, module_groups
from lrp_num.engine.composites import LayerRule
from lrp_num.errors import MissingDependencyError
from lrp_num.audit.profiles import CAPTUM
from lrp_num.io.torch_bridge import INSTALL_HINT, require_torch


def import_captum():
    """Import and return ``captum.attr``; MissingDependencyError names the install line."""
    require_torch()
    if importlib.util.find_spec("captum") is None:
        raise MissingDependencyError(f"captum is not installed: {INSTALL_HINT}")
    import captum.attr

    return captum.attr


def captum_rule(choice: LayerRule):
    """The captum rule object for our rule ``choice`` (see :data:`lrp_num.audit.profiles.CAPTUM`)."""
    import_captum()
    from captum.attr._utils import lrp_rules

    p = {**CAPTUM.rule(choice.rule).defaults, **dict(choice.parameters)}
    if choice.rule == "epsilon":
        return lrp_rules.EpsilonRule(epsilon=p["epsilon"])
    if choice.rule == "gamma":
        return lrp_rules.GammaRule(gamma=p["gamma"])
    return lrp_rules.Alpha1_Beta0_Rule()


def pass_through_rule():
    """A captum PropagationRule that passes relevance through unchanged, for ``nn.Flatten``
    (captum has no rule for it, and its IdentityRule refuses a layer that changes the shape)."""
    from captum.attr._utils.lrp_rules import EpsilonRule

    class PassThroughRule(EpsilonRule):
        def _create_backward_hook_input(self, inputs):
            def hook(grad):
                self.relevance_input[grad.device] = grad.data
                return grad
            return hook

        def _create_backward_hook_output(self, outputs):
            def hook(grad):
                self.relevance_output[grad.device] = grad.data
                return grad
            return hook

    return PassThroughRule()


def run_captum(network, model, x: np.ndarray, plan: Mapping[int, LayerRule], target: np.ndarray,
               overrides: Mapping[int, Callable] | None = None) -> LibraryRun:
    """Run ``captum.attr.LRP(model).attribute(x, target)`` with our plan's rules.

    ``target``: one output index per sample. ``overrides``: folded layer index -> a function
    returning the rule object to use there instead (tests corrupt one layer with it).
    """
    torch = require_torch()
    attr = import_captum()
    from captum.attr._utils.lrp_rules import EpsilonRule

    groups = module_groups(network.source_layers)
    modules = list(model)
    rules: dict[int, object] = {}
    for k, group in enumerate(groups):
        module = modules[group[0]]
        if isinstance(module, (torch.nn.ReLU,)):
            continue
        make = (overrides or {}).get(k)
        choice = plan.get(k)
        if make is not None:
            rule = make()
        elif choice is not None and choice.rule not in ("lrp0", "maxpool", "sumpool", "avgpool"):
            rule = captum_rule(choice)
        elif isinstance(module, torch.nn.Flatten):
            rule = pass_through_rule()
        else:
            rule = EpsilonRule()  # captum's default for pooling
        module.rule = rule
        rules[k] = rule
        for extra in group[1:]:  # an unmerged BatchNorm2d: captum's default EpsilonRule
            modules[extra].rule = EpsilonRule()
    inputs = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True,
                          dtype=next((p.dtype for p in model.parameters()), torch.float64))
    try:
        relevance = attr.LRP(model).attribute(inputs, target=[int(t) for t in target])
    finally:
        for module in modules:
            if hasattr(module, "rule"):
                del module.rule
    with torch.no_grad():
        output = model(inputs).numpy()
    f_c = output[np.arange(len(x)), np.asarray(target)]
    layers: dict[int, np.ndarray] = {}
    for k, rule in rules.items():
        recorded = next(iter(rule.relevance_input.values()), None) if rule.relevance_input else None
        if isinstance(recorded, torch.Tensor):
            layers[k] = recorded.numpy() * f_c.reshape((-1,) + (1,) * (recorded.ndim - 1))
    layers[0] = relevance.detach().numpy()
    top = np.zeros_like(output)
    top[np.arange(len(x)), np.asarray(target)] = f_c
    layers[len(groups)] = top
    version = getattr(importlib.import_module("captum"), "__version__", "?")
    return LibraryRun(f"captum {version}", layers[0], layers, output)




def run_captum_graph(graph, twin, x: np.ndarray, plan: Mapping[int, LayerRule], target: np.ndarray,
                     overrides: Mapping[str, Callable] | None = None) -> LibraryRun:
    """Run ``captum.attr.LRP(twin).attribute(x, target)`` on a graph's twin with our plan's rules.

    Additions are the twin's ``Addition_Module`` instances with captum's default EpsilonRule,
    batch norms (never merged by captum) and pooling get EpsilonRule, as captum's
    ``SUPPORTED_LAYERS_WITH_RULES`` assigns them; Flatten and Identity a pass-through rule (captum
    has none). Relevance recorded at node outputs is normalised to a top relevance of 1 in captum
    and scaled by f_c(x) here, as captum scales the input relevance. ``overrides``: node name ->
    a function returning the rule object for that node's module instead.
    """
    from captum.attr._utils.custom_modules import Addition_Module
    from captum.attr._utils.lrp_rules import EpsilonRule

    from lrp_num.audit.node_recorder import NodeRecorder

    torch = require_torch()
    attr = import_captum()
    by_name = {node.name: (k, node) for k, node in enumerate(graph.nodes)}
    for name, module in twin.node_modules.items():
        make = (overrides or {}).get(name)
        k, node = by_name.get(name, (None, None))
        choice = plan.get(k) if k is not None else None
        if make is not None:
            rule = make()
        elif isinstance(module, (torch.nn.ReLU, torch.nn.Dropout)):
            continue
        elif choice is not None and isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) \
                and choice.rule not in ("lrp0", "maxpool", "sumpool", "avgpool"):
            rule = captum_rule(choice)
        elif isinstance(module, (torch.nn.Flatten, torch.nn.Identity)):
            rule = pass_through_rule()
        else:
            rule = EpsilonRule()  # captum's default for pooling, batch norms and additions
        module.rule = rule
    recorder = NodeRecorder(twin)
    for name, module in twin.node_modules.items():
        if isinstance(module, Addition_Module):
            recorder.watch_addition(name, module)
    inputs = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True,
                          dtype=next((p.dtype for p in twin.parameters()), torch.float64))
    try:
        relevance = attr.LRP(twin).attribute(inputs, target=[int(t) for t in target])
    except TypeError as error:  # captum refuses a module type it has no rule for
        from lrp_num.errors import UnsupportedLayerError

        raise UnsupportedLayerError(f"captum cannot explain this graph: {error}") from None
    finally:
        recorder.close()
        for module in twin.node_modules.values():
            if hasattr(module, "rule"):
                del module.rule
    with torch.no_grad():
        output = twin(inputs).numpy()
    f_c = output[np.arange(len(x)), np.asarray(target)]

    def scaled(array: np.ndarray) -> np.ndarray:
        return array * f_c.reshape((-1,) + (1,) * (array.ndim - 1))

    nodes = {name: scaled(value) for name, value in recorder.nodes.items()}
    nodes[graph.input_name] = relevance.detach().numpy()
    addends = {name: [scaled(share) for share in shares] for name, shares in recorder.addends.items()
               if all(share is not None for share in shares)}  # a plain +: the views it reads
    for name, (values, gradients) in recorder.addition_gradients.items():
        shares = []
        for k, source in enumerate(twin_inputs(twin, name)):
            if twin.consumers[source] == [name] and source in nodes:
                shares.append(nodes[source])  # read by the addition only: measured there
            else:  # captum's hook on that addend multiplies the summed gradient by it
                shares.append(scaled(values[k] * gradients[k]))
        addends[name] = shares
    version = getattr(importlib.import_module("captum"), "__version__", "?")
    return LibraryRun(f"captum {version}", nodes[graph.input_name], output=output, nodes=nodes,
                      addends=addends)


def twin_inputs(twin, name: str) -> tuple[str, ...]:
    """The inputs of source node ``name`` of a twin."""
    return next(node.inputs for node in twin.steps if node.name == name)
