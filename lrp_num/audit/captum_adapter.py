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


def _reshape_rule():
    """A captum PropagationRule that passes relevance through unchanged (for nn.Flatten)."""
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
            rule = _reshape_rule()
        else:
            rule = EpsilonRule()  # captum's default for pooling
        module.rule = rule
        rules[k] = rule
        for extra in group[1:]:  # an unmerged BatchNorm2d: captum's default EpsilonRule
            modules[extra].rule = EpsilonRule()
    inputs = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
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


