"""``assert_matches_reference``: another implementation's relevance against the mpmath reference.

For a downstream test suite: given the relevance R that some LRP code computed for a model and a
batch of inputs, recompute it by the definition of the rules (:func:`lrp_num.reference.explain_trace`,
which shares no code with any kernel) and fail with an AssertionError where a value lies farther
from the reference than a correct computation in R's floating-point type could.

The tolerance of every value is the audit's first-order rounding bound in the unit roundoff u of
R's dtype (:func:`lrp_num.audit.tolerance.rounding_bounds`: 2^-24 for float32, 2^-53 for float64;
the error of R_i propagated from the output down through every node's fan-in, fan-out and
cancellation K_j = sum_i |R_ij| / |R_j|), never below u max_p |R_ref,p| (the last bit of the
largest relevance), plus what the library's profile leaves unmodelled (``Profile.model_error``)
and the reference's own precision, 10^(1 - dps) max_p |R_ref,p| (it rounds once to ``dps``
digits). The first-order bound assumes no underflow; gradual underflow adds an absolute error of at
most half the dtype's smallest subnormal number per operation, counted as 4 operations per node of
the network (:func:`underflow_floor`). The forward pass's cancellation, which the audit's bound
leaves out, enters as measured: the relative error of every activation of a forward pass of the
same network in R's dtype (:func:`lrp_num.audit.tolerance.measured_forward_errors`), carried into
each node's terms. No constant in it belongs to one dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from lrp_num.audit.tolerance import measured_forward_errors, rounding_bounds, unit_roundoff
from lrp_num.engine.composites import Composite, LayerRule, get_composite
from lrp_num.engine.conventions import DTD, Conventions
from lrp_num.errors import LRPError, ShapeError, UnsupportedLayerError
from lrp_num.layers import Conv2d, Dense

def underflow_floor(dtype: Any, n_nodes: int) -> float:
    """Absolute error that gradual underflow can add to a value: 4 (n_nodes + 1) eta / 2.

    eta is the smallest subnormal number of ``dtype`` (2^-149 in float32, 2^-1074 in float64); a
    product or quotient that lands below the smallest normal number errs by up to eta / 2 in
    absolute terms instead of u in relative ones (Higham 2002, Accuracy and Stability of Numerical
    Algorithms, Sec. 2.1). Each node counts as 4 such operations.
    """
    return 2.0 * (n_nodes + 1) * float(np.finfo(np.dtype(dtype)).smallest_subnormal)


#: the reference's precision (digits) unless a test passes ``dps=`` (the pytest plugin's
#: ``--lrp-dps`` sets it for a whole run)
DEFAULT_DPS = 30


@dataclass
class Defaults:
    """Settings shared by every call in a test run (the pytest plugin sets ``dps``)."""

    dps: int = DEFAULT_DPS


DEFAULTS = Defaults()


def _numpy(value: Any) -> np.ndarray:
    """A torch tensor (any device, detached) or array-like as a NumPy array, dtype kept."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def as_network(model: Any, input_shape: tuple[int, ...]):
    """Our network for ``model``: a Sequential or Graph as it is, a torch module as a graph whose
    nodes are named after its modules, so that messages name them as torch does: an
    ``nn.Sequential`` of the modules :func:`lrp_num.io.torch_bridge.module_to_layer` converts
    module by module, anything else through :func:`lrp_num.io.torch_import.from_torch_module`
    (torch.fx)."""
    from lrp_num.engine.graph import Graph, Node
    from lrp_num.engine.network import Sequential

    if isinstance(model, (Sequential, Graph)):
        return model
    from lrp_num.io.torch_bridge import module_to_layer, require_torch
    from lrp_num.io.torch_import import from_torch_module

    torch = require_torch()
    if isinstance(model, torch.nn.Sequential):  # a chain: no tracing needed (torch.fx takes ~30 ms)
        try:
            layers = [(name, module_to_layer(module)) for name, module in model.named_children()]
        except UnsupportedLayerError:
            layers = None
        if layers:
            nodes, previous = [], "input"
            for name, layer in layers:
                nodes.append(Node(name, layer, previous))
                previous = name
            return Graph(nodes, input_shape=tuple(input_shape))
    return from_torch_module(model, tuple(input_shape))


class _FixedPlan(Composite):
    """A composite that is one fixed node plan (node index -> LayerRule)."""

    def __init__(self, plan: Mapping[int, LayerRule]):
        super().__init__("assert_matches_reference", lambda index, *_: plan[index])
        object.__setattr__(self, "fixed", dict(plan))

    def plan_graph(self, graph, input_is_box: bool) -> dict[int, LayerRule]:
        return dict(self.fixed)


def _chosen(rule: Any, composite: Any, library: str | None, parameters: Mapping[str, float]) -> Composite:
    """Our composite for ``rule`` (our name, a library's class name or rule object) or
    ``composite`` (a registered name, a Composite, a zennit composite object)."""
    from lrp_num.testing.library_rules import LibraryComposite, from_zennit, our_rule

    if (rule is None) == (composite is None):
        raise LRPError("pass either rule= or composite=")
    if rule is not None:
        if library is not None:
            choice = our_rule(library, rule, **parameters)
        elif isinstance(rule, str):
            choice = LayerRule(rule, dict(parameters))
        else:
            raise LRPError(f"a rule object ({type(rule).__name__}) needs library= (zennit or captum)")
        return Composite(choice.rule, lambda *_: choice)
    if parameters:
        raise LRPError(f"a composite sets its own parameters; got {', '.join(parameters)}")
    if isinstance(composite, str):
        return get_composite(composite)
    if isinstance(composite, (Composite, LibraryComposite)):
        return composite
    return from_zennit(composite)


def _conventions(library: str | None, convention: Any, composite: Composite) -> tuple[Conventions, float]:
    """(conventions, the profile's model_error) for a library, a convention or DTD."""
    from lrp_num.audit.profiles import get_profile
    from lrp_num.testing.library_rules import library_conventions

    if library is not None and convention is not None:
        raise LRPError("pass library= (its profile's conventions) or convention=, not both")
    if library is not None:
        eps = getattr(composite, "eps", None)
        return library_conventions(library, eps), get_profile(library).model_error
    if convention is None or convention == "dtd":
        return DTD, 0.0
    if isinstance(convention, Conventions):
        return convention, 0.0
    if isinstance(convention, Mapping):
        return Conventions(**convention), 0.0
    return get_profile(convention).conventions, get_profile(convention).model_error


def _library_network(network, library: str | None):
    """The network the library explains (zennit's merged batch norms, ...), node names kept."""
    if library is None:
        return network
    from lrp_num.audit.profiles import get_profile

    profile = get_profile(library)
    if hasattr(network, "nodes"):
        return profile.library_graph(network) if profile.library_graph else network
    return profile.library_network(network) if profile.library_network else network


def _relevance_arrays(R: Any, batch: int, graph) -> tuple[dict[str, np.ndarray], np.dtype]:
    """{tensor name: (batch, size) float64} and the dtype R was computed in (its first float)."""
    given = dict(R) if isinstance(R, Mapping) else {graph.input_name: R}
    arrays, dtype = {}, None
    for name, value in given.items():
        name = graph.input_name if name in (None, "input") else str(name)
        if name != graph.input_name and name not in graph.shapes:
            raise ShapeError(f"no tensor {name!r} in the network; its nodes: "
                             f"{', '.join(node.name for node in graph.nodes)}")
        array = _numpy(value)
        if dtype is None and np.issubdtype(array.dtype, np.floating):
            dtype = array.dtype
        arrays[name] = array.astype(np.float64).reshape(batch, -1)
    return arrays, np.dtype(np.float64) if dtype is None else dtype


def _where(graph, name: str) -> str:
    """The words that name a tensor in a message: the input (and the node reading it) or a node."""
    if name == graph.input_name:
        readers = [node for node in graph.nodes if graph.input_name in node.inputs]
        return "the input" + (f" (relevance from node {readers[0].name!r}, {readers[0].operation!r})"
                              if readers else "")
    node = next(node for node in graph.nodes if node.name == name)
    return f"the output of node {name!r} ({node.operation!r})"


def assert_matches_reference(R: Any, model: Any, x: Any, rule: Any = None, composite: Any = None, *,
                             library: str | None = None, convention: Any = None, target: Any = None,
                             input_domain: Any = None, dps: int | None = None, **parameters: float) -> None:
    """Fail unless ``R`` equals the reference's relevance within R's rounding bound.

    Parameters
    ----------
    R : array or tensor, or mapping of tensor name -> array
        The relevance to check, the shape of ``x`` (float32 or float64; its dtype sets the
        bound). A mapping also checks relevance at inner tensors (node names of
        ``lrp_num.engine.graph.as_graph(network)``; for a torch module the module names, as
        :func:`lrp_num.io.torch_import.from_torch_module` names its nodes), which localises a
        wrong rule: the message names the node closest to the output whose relevance deviates.
    model : torch.nn.Module, Sequential or Graph
        The network (a torch module is converted once per call with :func:`as_network`).
    x : array or tensor
        The inputs, (N, ...) or one sample.
    rule, composite
        One rule on every Dense / Conv2d layer, or a composite: our names (``"zplus"``,
        ``"epsilon-plus"``), or with ``library`` the library's (``"ZPlus"``, a
        ``zennit.rules.Gamma(gamma=0.5)`` object, a ``zennit.composites.EpsilonPlus()`` object,
        a :meth:`lrp_num.Composite.from_zennit` composite).
    library : {"zennit", "captum"}, optional
        Compare with what that library computes (its profile: rule mapping, bias and stabiliser
        conventions, e.g. zennit's ZPlus is ``zplus_split``).
    convention : Conventions, mapping, profile name or "dtd", optional
        The conventions to compare under instead (default: the derivation, DTD).
    target : int, sequence of int or float array, optional
        The explained output per sample (the top relevance is f_c(x); None: the largest), or the
        output relevance itself (what a zennit user passes as the output gradient).
    input_domain : (low, high), optional
        The input box of z^B (a zennit ZBox composite carries its own).
    dps : int, optional
        The reference's digits (default :data:`DEFAULTS` ``.dps``, which ``--lrp-dps`` sets).
    **parameters
        Rule parameters (``epsilon``, ``gamma``, ``alpha``, ``beta``), with ``rule`` only.

    Raises
    ------
    AssertionError
        Naming the worst input (batch index), the tensor and node, the entry, both values and
        the deviation in units of its bound.
    lrp_num.errors.LRPError
        For a mistake in the call (unknown rule, shapes, both rule and composite, ...).
    """
    from lrp_num import reference
    from lrp_num.engine.graph import as_graph

    x_np = _numpy(x).astype(np.float64)
    chosen = _chosen(rule, composite, library, parameters)
    library = library or getattr(chosen, "library", None)
    conventions, model_error = _conventions(library, convention, chosen)
    input_domain = input_domain if input_domain is not None else getattr(chosen, "input_domain", None)
    shape = getattr(model, "input_shape", None)
    single = shape is not None and x_np.shape == tuple(shape)
    batch_x = x_np[None] if single else x_np
    network = _library_network(as_network(model, batch_x.shape[1:]), library)
    graph = as_graph(network)
    plan = chosen.plan_graph(graph, input_domain is not None)
    if library is not None:
        from lrp_num.testing.library_rules import mapped_plan

        linear = {k for k, node in enumerate(graph.nodes) if isinstance(node.operation, (Dense, Conv2d))}
        plan = mapped_plan(plan, linear, library)
    target_np = None if target is None else _numpy(target)
    if target_np is not None and target_np.dtype.kind == "f" and single and target_np.ndim == 1:
        target_np = target_np[None]
    dps = DEFAULTS.dps if dps is None else dps
    bounds_keywords = {} if input_domain is None else {"input_domain": input_domain}
    results = reference.explain_trace(network, batch_x, composite=_FixedPlan(plan), target=target_np, dps=dps,
                                      conventions=conventions, diagnostics=False,
                                      check_domain=library is None, **bounds_keywords)
    arrays, dtype = _relevance_arrays(R, len(batch_x), graph)
    if graph.input_name in arrays and arrays[graph.input_name].size != batch_x.size:
        raise ShapeError(f"R has {arrays[graph.input_name].size} values, x {batch_x.size}")
    bounds = rounding_bounds(network, results, dtype, measured_forward_errors(network, results, dtype))
    unit = unit_roundoff(dtype)
    floor = underflow_floor(dtype, len(graph.nodes))
    worst, failing = None, []
    order = [graph.input_name] + [node.name for node in graph.nodes]
    for name in sorted(arrays, key=order.index, reverse=True):  # from the output down
        if name == graph.input_name:
            expected = np.stack([reference.to_float(np.asarray(r.relevance)).ravel() for r in results])
        else:
            expected = np.stack([reference.to_float(np.asarray(r.relevance_at[name])).ravel() for r in results])
        given = arrays[name]
        if given.shape != expected.shape:
            raise ShapeError(f"relevance at {name!r} has {given.shape[1]} values per sample, the tensor "
                             f"{expected.shape[1]}")
        scale = np.abs(expected).max(axis=1, keepdims=True)
        bound = np.maximum(bounds[name] + model_error * scale, unit * scale) + 10.0 ** (1 - dps) * scale + floor
        error = np.abs(given - expected)
        ratio = np.where(bound > 0, error / np.where(bound > 0, bound, 1.0), np.where(error > 0, np.inf, 0.0))
        if not np.all(ratio <= 1):
            failing.append(name)
            sample, entry = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
            if worst is None or ratio[sample, entry] > worst[0]:
                worst = (float(ratio[sample, entry]), name, int(sample), int(entry), given, expected, bound,
                         ratio)
    if worst is None:
        return
    size, name, sample, entry, given, expected, bound, ratio = worst
    tensor_shape = batch_x.shape[1:] if name == graph.input_name else graph.shapes[name]
    position = tuple(int(i) for i in np.unravel_index(entry, tensor_shape))
    method = f"rule {rule!r}" if rule is not None else f"composite {getattr(chosen, 'name', composite)!r}"
    under = f"{library} profile" if library else ("DTD" if conventions == DTD else repr(conventions))
    rules = ", ".join(f"{graph.nodes[k].name}: {choice.rule}" for k, choice in sorted(plan.items())
                      if isinstance(graph.nodes[k].operation, (Dense, Conv2d)))
    lines = [f"relevance does not match the reference ({method} under the {under}; derivations {rules}; "
             f"{np.dtype(dtype).name} bound, dps {dps})",
             f"worst: input {sample} of {len(batch_x)}, at {_where(graph, name)}, entry {position}: "
             f"R = {given[sample, entry]:.9g}, reference {expected[sample, entry]:.9g}, "
             f"|error| = {abs(given[sample, entry] - expected[sample, entry]):.3g} = {size:.3g} x its bound "
             f"{bound[sample, entry]:.3g}",
             f"{int((ratio > 1).sum())} of {ratio.size} values beyond their bound at that tensor, in inputs "
             f"{sorted(set(np.nonzero((ratio > 1).any(axis=1))[0].tolist()))}"]
    if len(failing) > 1 or name != graph.input_name:
        lines.append(f"first deviation from the output down: {_where(graph, failing[0])}")
    raise AssertionError("\n".join(lines))


__all__ = ["DEFAULTS", "DEFAULT_DPS", "as_network", "assert_matches_reference"]
