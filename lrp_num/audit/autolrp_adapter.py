"""Running autoLRP 0.2.0 on a torch twin of a network, with the relevance at every layer.

autoLRP (``pip install --no-deps autolrp==0.2.0``; it needs only torch and numpy) runs LRP on the
autograd graph: the input is wrapped by ``autolrp.tensor``, the model runs unchanged, and
``out.lrp(config=...)`` installs a hook per autograd node that turns the incoming gradient into
relevance. Its rules are chosen per *node kind* (``AddmmBackward`` for a linear layer with bias,
``MmBackward`` without, ``ConvolutionBackward``), not per layer, so the audit runs one rule on
every linear layer (``--rule``); a composite that mixes rules by layer cannot be expressed.

The backward starts from a unit seed at the chosen output, so autoLRP's relevance is in units of
f_c(x); the adapter runs one backward per sample (a sum over the batch would itself be a node
that autoLRP splits) and multiplies every recorded relevance by f_c(x), as the reference starts
from R = f_c(x). Relevance at layer boundaries is recorded by gradient hooks on the module outputs
(what arrives there is the relevance of the layers above).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Callable, Mapping

import numpy as np

from lrp_num.audit.library_run import LibraryRun, module_groups
from lrp_num.audit.profiles import AUTOLRP
from lrp_num.engine.composites import LayerRule
from lrp_num.errors import MissingDependencyError, UnsupportedLayerError
from lrp_num.io.torch_bridge import INSTALL_HINT, require_torch

#: autograd node kinds whose rule the audit sets (linear layers with and without bias, convolutions)
LINEAR_NODES = ("AddmmBackward", "MmBackward", "ConvolutionBackward")
INSTALL_AUTOLRP = "pip install --no-deps autolrp==0.2.0 (with torch: " + INSTALL_HINT + ")"


def import_autolrp():
    """Import and return autolrp; MissingDependencyError names the install line."""
    require_torch()
    if importlib.util.find_spec("autolrp") is None:
        raise MissingDependencyError(f"autoLRP is not installed: {INSTALL_AUTOLRP}")
    return importlib.import_module("autolrp")


def autolrp_rule(choice: LayerRule) -> object:
    """autoLRP's rule entry for our rule ``choice`` (see :data:`lrp_num.audit.profiles.AUTOLRP`)."""
    p = {**AUTOLRP.rule(choice.rule).defaults, **dict(choice.parameters)}
    if choice.rule == "alphabeta":
        return ("alpha_beta", {"alpha": float(p["alpha"]), "beta": float(p["beta"])})
    return choice.rule  # "epsilon", "zplus": the same names in autoLRP's PRODUCT_RULES


def _one_rule(plan: Mapping[int, LayerRule]) -> LayerRule:
    rules = {(c.rule, tuple(sorted(c.parameters.items()))) for c in plan.values()
             if c.rule not in ("lrp0", "maxpool", "sumpool", "avgpool")}
    if len(rules) != 1:
        raise UnsupportedLayerError("autoLRP chooses a rule per autograd node kind, not per layer: audit it "
                                    "with one --rule on every linear layer, not a composite")
    rule, parameters = rules.pop()
    return LayerRule(rule, dict(parameters))


def _numpy(torch, tensor) -> np.ndarray:
    """A (possibly LRPTensor) tensor as a plain NumPy array."""
    return tensor.detach().as_subclass(torch.Tensor).numpy()


def run_autolrp(network, model, x: np.ndarray, plan: Mapping[int, LayerRule], targets: np.ndarray,
                overrides: Mapping[int, Callable] | None = None) -> LibraryRun:
    """Run autoLRP with our plan's rule and record every layer boundary (scaled by f_c(x)).

    ``overrides`` maps a node kind (e.g. ``"AddmmBackward"``) to a function returning the rule
    entry to use for it instead (tests corrupt the run with it).
    """
    torch = require_torch()
    autolrp = import_autolrp()
    choice = _one_rule(plan)
    entry = autolrp_rule(choice)
    rule = {**autolrp.BASE, **{node: entry for node in LINEAR_NODES}}
    for node, make in (overrides or {}).items():
        rule[node] = make()
    config = autolrp.LRPConfig(rule=rule, eps=AUTOLRP.conventions.eps)
    groups = module_groups(network.source_layers)
    modules = list(model)
    captured: dict[int, object] = {}
    handles = []
    for k in range(1, len(groups)):  # the output of folded layer k-1 is the input of layer k
        def store(module, args, output, k=k):
            output.register_hook(lambda grad: captured.__setitem__(k, grad.detach().clone()))
        handles.append(modules[groups[k - 1][-1]].register_forward_hook(store))
    inputs = autolrp.tensor(torch.tensor(np.asarray(x, dtype=np.float64)))
    per_sample: list[dict[int, np.ndarray]] = []
    try:
        output = model(inputs)
        # one backward per sample: a sum over the batch would be a SumBackward node, which
        # autoLRP splits in proportion to |f_c| instead of passing each sample its unit seed
        for s, target in enumerate(np.asarray(targets)):
            captured.clear()
            output[s, int(target)].lrp(config=config)
            recorded = {k: _numpy(torch, v)[s] for k, v in captured.items()}
            recorded[0] = _numpy(torch, inputs.relevance)[s]
            per_sample.append(recorded)
    finally:
        for handle in handles:
            handle.remove()
    values = _numpy(torch, output.detach())
    f_c = values[np.arange(len(x)), np.asarray(targets)]
    layers = {k: np.stack([sample[k] * f_c[s] for s, sample in enumerate(per_sample)]) for k in per_sample[0]}
    top = np.zeros_like(values)
    top[np.arange(len(x)), np.asarray(targets)] = f_c
    layers[len(groups)] = top
    return LibraryRun(f"autoLRP {getattr(autolrp, '__version__', '0.2.0')}", layers[0], layers, values)


__all__ = ["INSTALL_AUTOLRP", "LINEAR_NODES", "autolrp_rule", "import_autolrp", "run_autolrp"]
