"""Relevance propagation over a whole network with the generated kernels.

``explain`` walks a :class:`~lrp_num.engine.graph.Graph` (a :class:`~lrp_num.engine.network.Sequential` is
the chain of its layers) backwards from the chosen output, node by node in reverse topological
order: every Dense and Conv2d node applies the kernel its composite assigns, pooling,
per-channel affine and Add nodes their derived rule (an Add's rule acts on its addends stacked
on axis 1), Concat slices the relevance back onto its inputs, ReLU, Identity and Dropout pass
it through (a neuron is its linear map and its ReLU), and Flatten reshapes it. Relevance
arriving at a tensor from several consumers is summed. The top relevance is the chosen output's
value f_c(x) (deep Taylor decomposition assumes f_c(x) >= 0), or an explicit array.

The input box (``input_domain``) bounds the network input only: z^B uses it at a first linear
node (no Dense or Conv2d before it) when every node before it only reshapes (Flatten, Identity,
Dropout), checks that the inputs lie in it, and raises
:class:`~lrp_num.errors.MissingBoundsError` anywhere else. Every layer's
relevance is checked to be finite (a NaN or Inf, e.g. from float32 overflow at a tiny
denominator, raises :class:`~lrp_num.errors.NonFiniteError` naming the layer), node by node,
so that the node where it first appears is named and no later step (by_sign's mask by sign(z_j),
a user's kernel) can hide it.

Arrays stay where the input lives: a NumPy input runs on the layers' NumPy code, a torch tensor
(CPU or CUDA) or a CuPy array on the operators of its backend (:mod:`lrp_num.backends`), with
the same generated kernels, and the relevance comes back in the input's type, device and dtype.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable, NamedTuple, Sequence

import array_api_compat
import numpy as np

from lrp_num import backends
from lrp_num.checks import (check_composite_parameters, check_orthant,
                            check_rule_parameters, check_target)
from lrp_num.engine import attention_rules
from lrp_num.engine.composites import Composite, LayerRule, get_composite
from lrp_num.engine.conventions import DTD, SIGN_COUNTERPARTS, Conventions
from lrp_num.errors import (DerivationScopeWarning, KernelArgumentError, LRPError, MissingBoundsError,
                            NonFiniteError, ShapeError, UnknownRuleError)
from lrp_num.engine.graph import SHAPE_ONLY, Graph, as_graph
from lrp_num.engine.kernels import LAYER_KERNEL_NAMES, has_kernel, known_rules, load_module
from lrp_num.layers import (AdaptiveAvgPool2d, Add, AvgPool2d, ChannelAffine, Concat, Conv2d,
                            Dense, Flatten, MaxPool2d, Reshape, SumPool2d)
from lrp_num.io.model_io import InputDomain
from lrp_num.layers.nonlinear import NONLINEAR
from lrp_num.layers.normalization import NORMALIZATION
from lrp_num.engine.network import Sequential

__all__ = ["Explanation", "LayerReport", "MissingBoundsError", "explain", "explain_details",
           "top_relevance"]  # MissingBoundsError lives in lrp_num.errors; kept here for imports

#: keywords of a generated kernel that are not rule parameters
_RUNTIME_KEYWORDS = frozenset({"op", "x", "relevance_out", "lower", "upper", "eps", "stabilise",
                               "bias_shares", "z", "y"})
#: the keyword under which a kernel takes the node's output from the forward trace: a linear
#: layer's z_j = sum_i x_i w_ij + b_j, a normalisation's y_j (a kernel whose signature has it
#: is given it and skips recomputing it; the attention nodes': attention_rules.FORWARD_QUANTITIES)
_OUTPUT_KEYWORDS = ((Dense, "z"), (Conv2d, "z"), (NORMALIZATION, "y"))
#: the neurons a generated kernel can be derived for (its NEURON), in words
_NEURONS = {"linear": "a linear neuron sum_i x_i w_ij + b_j", "sum": "an addition of tensors (Add node)",
            "pointwise": "an element-wise nonlinearity y = g(x) (GELU, SiLU, Tanh, Sigmoid)",
            "norm": "a normalisation over the last axis (LayerNorm, RMSNorm)"}
#: operations whose relevance rule is always the shipped, derived one (never a user's kernel)
_DERIVED_ONLY = (SumPool2d, AvgPool2d, MaxPool2d, AdaptiveAvgPool2d, ChannelAffine, Add, *NONLINEAR,
                 *NORMALIZATION, *attention_rules.RULED)


@dataclass
class LayerReport:
    """What happened at one layer of the backward pass.

    Attributes
    ----------
    index : int
        Position in ``network.layers`` (for a Graph, in its topologically sorted ``nodes``).
    layer : str
        The layer's repr.
    rule : str or None
        The rule applied (None for pass-through layers).
    relevance_in, relevance_out : ndarray, shape (batch,)
        Sum of relevance below and above the layer, per sample (conservation per layer).
    root_point_valid : ndarray or None, shape (batch,)
        Fraction of active neurons whose root point lies in the rule's domain by the derived
        condition; None when the rule has no domain condition.
    relevance_above : ndarray or None
        The relevance arriving at the layer's output, summed over its consumers (kept with
        ``keep_layers=True``).
    name : str or None
        The node's name (``layer{index}`` for a Sequential).
    """

    index: int
    layer: str
    rule: str | None
    relevance_in: np.ndarray
    relevance_out: np.ndarray
    root_point_valid: np.ndarray | None = None
    relevance_above: np.ndarray | None = None
    name: str | None = None


@dataclass
class Explanation:
    """Relevance and everything measured on the way.

    Attributes
    ----------
    relevance : ndarray
        Input relevance, the shape of x.
    output : ndarray
        The network output f(x).
    relevance_top : ndarray
        The output relevance the backward pass started from.
    layers : list of LayerReport
        One report per layer, input side first.
    """

    relevance: np.ndarray
    output: np.ndarray
    relevance_top: np.ndarray
    layers: list[LayerReport] = field(default_factory=list)


def top_relevance(output: np.ndarray, target: object) -> np.ndarray:
    """Output relevance: f_c(x) at the target index per sample, or an explicit array.

    ``target`` is None (each sample's largest output), an int (one index for all), a sequence
    of one index per sample, or an array of the output's shape used as given.
    """
    batch, n_outputs = output.shape[0], int(np.prod(output.shape[1:]))
    checked = check_target(target, output.shape)
    if checked is None:
        indices = output.reshape(batch, -1).argmax(axis=1)
    elif checked.dtype.kind == "f":
        return checked.astype(output.dtype)
    else:
        indices = checked
    flat = np.zeros((batch, n_outputs), dtype=output.dtype)
    rows = np.arange(batch)
    flat[rows, indices] = output.reshape(batch, -1)[rows, indices]
    return flat.reshape(output.shape)


class _Kernel(NamedTuple):
    relevance: Callable
    accepted: frozenset[str]
    needs_bounds: bool
    n_terms: int
    condition: Callable | None
    parameters: frozenset[str]
    domain: str | None
    neuron: str
    z_sign: str
    held: str | None = None


@functools.lru_cache(maxsize=None)
def _kernel_of(module: ModuleType) -> _Kernel:
    """The module's kernel, the keywords it accepts, whether it needs box bounds, its number of
    terms, its root-point condition, its rule parameters and the input domain it is derived for
    (None for a module generated without DOMAIN; cached per module object, so a changed user file that
    :mod:`lrp_num.engine.kernels` reloads is never served stale)."""
    kernel = module.relevance
    condition = getattr(module, "root_point_in_domain", None)
    accepted = frozenset(inspect.signature(kernel).parameters)
    parameters = getattr(module, "PARAMETERS", None)
    parameters = frozenset(parameters) if parameters is not None else accepted - _RUNTIME_KEYWORDS
    return _Kernel(kernel, accepted, bool(getattr(module, "BOUNDS", ())),
                   int(getattr(module, "N_TERMS", 1)), condition if callable(condition) else None,
                   parameters, getattr(module, "DOMAIN", None), getattr(module, "NEURON", "linear"),
                   getattr(module, "Z_SIGN", "any"), getattr(module, "HELD", None))


def _kernel(rule: str, folder: str | None, layer: object) -> _Kernel:
    """The kernel of ``rule`` for ``layer``: from the user's folder when it holds the rule, else
    the shipped one (pooling, affine and Add nodes always use the shipped, derived kernels)."""
    if folder is not None and not isinstance(layer, _DERIVED_ONLY) \
            and has_kernel(rule, folder):
        return _kernel_of(load_module(rule, folder))
    return _kernel_of(load_module(rule))


def _resolve_composite(rule: str | None, composite: str | Composite | None,
                       parameters: dict, folder: str | None) -> Composite:
    if (rule is None) == (composite is None):
        raise LRPError("give exactly one of rule= or composite=")
    if rule is not None:
        valid = known_rules() + (tuple(r for r in known_rules(folder) if r not in known_rules())
                                 if folder is not None else ())
        if rule not in valid:
            if rule in LAYER_KERNEL_NAMES:
                raise UnknownRuleError(f"{rule!r} is the kernel of a layer type, not a rule; "
                                       f"known rules: {', '.join(valid)}")
            raise UnknownRuleError(f"no generated kernel for rule {rule!r}; known rules: "
                                   f"{', '.join(valid)}")
        return Composite.single(rule, **parameters)
    check_composite_parameters(parameters)
    return get_composite(composite) if isinstance(composite, str) else composite


def _check_plan(plan: dict[int, LayerRule], layers: Sequence, folder: str | None) -> None:
    """Reject layer kernels chosen for linear layers and invalid rule parameters (the rule's
    own, from its generated module's PARAMETERS, checked as the reference checks them)."""
    for index, choice in plan.items():
        if isinstance(layers[index], (Dense, Conv2d)) and choice.rule in LAYER_KERNEL_NAMES:
            raise UnknownRuleError(f"{choice.rule!r} is the kernel of a layer type, not a rule for "
                                   f"layer {index}; rules: {', '.join(known_rules())}")
        kernel = _kernel(choice.rule, folder, layers[index])
        wanted = _neuron_of(layers[index])
        if kernel.neuron != wanted:
            words = {**_NEURONS, **attention_rules.NEURON_WORDS}
            raise UnknownRuleError(
                f"rule {choice.rule!r} is derived for {words.get(kernel.neuron, kernel.neuron)}, but "
                f"node {index} ({layers[index]!r}) is {words[wanted]}" + (
                    "; choose the Add nodes' rule with a composite's add field, e.g. "
                    "dataclasses.replace(composite, add=LayerRule('add_zplus'))"
                    if kernel.neuron == "sum" else ""))
        check_rule_parameters(choice.rule, choice.parameters, kernel.parameters)


def _neuron_of(layer: object) -> str:
    """The neuron a node's rule must be derived for (a key of :data:`_NEURONS` or of
    :data:`lrp_num.engine.attention_rules.NEURON_WORDS`)."""
    attention = attention_rules.neuron_of(layer)
    if attention is not None:
        return attention
    if isinstance(layer, Add):
        return "sum"
    if isinstance(layer, NONLINEAR):
        return "pointwise"
    if isinstance(layer, NORMALIZATION):
        return "norm"
    return "linear"


def explain_details(
    network: Graph | Sequential,
    x: np.ndarray,
    rule: str | None = None,
    composite: str | Composite | None = None,
    target: object = None,
    *,
    conventions: Conventions = DTD,
    input_domain: InputDomain | tuple | None = None,
    diagnostics: bool = True,
    kernel_folder: str | None = None,
    keep_layers: bool = False,
    layer_reports: bool = True,
    **parameters: float,
) -> Explanation:
    """Explain ``network`` at ``x`` and report per layer; see :func:`explain`.

    ``diagnostics`` adds the root-point validity per layer, ``keep_layers`` keeps the relevance
    arriving at every layer's output, ``kernel_folder`` loads kernels generated into a folder;
    ``layer_reports=False`` skips the per-layer reports altogether (what :func:`explain` does).
    """
    x = backends.backend_of(x).checked_input(x)
    backend = backends.backend_of(x)  # the backend of the checked (float) dtype
    if input_domain is not None:
        input_domain = InputDomain.of(input_domain)
    graph = as_graph(network)
    plan = _resolve_composite(rule, composite, parameters, kernel_folder).plan_graph(
        graph, input_domain is not None)
    _check_plan(plan, graph.layers, kernel_folder)
    # attention nodes always use the shipped kernels; which input a held factor is comes from the graph
    plan = attention_rules.hold_constants(graph, plan, lambda choice: _kernel_of(load_module(choice.rule)).held)
    with contextlib.ExitStack() as stack:
        for layer in graph.layers:  # convolutions reuse the im2col columns of the forward pass
            if hasattr(layer, "reusing_columns"):
                stack.enter_context(layer.reusing_columns())
        return _backward(graph, x, plan, target, conventions, input_domain,
                         diagnostics and layer_reports, kernel_folder, keep_layers, layer_reports,
                         backend)


def _backward(graph: Graph, x, plan, target, conventions, input_domain, diagnostics, kernel_folder,
              keep_layers, layer_reports, backend) -> Explanation:
    """The forward trace, then every node's rule from the output down to the input; relevance
    reaching a tensor from several consumers is summed; every ruled node's relevance is checked
    to be finite (NonFiniteError naming the node)."""
    activations = backend.forward_trace(graph, x)
    output = activations[graph.output]
    if not _all_finite(output):
        raise NonFiniteError(f"the network output holds NaN or Inf for finite input ({output.dtype} "
                             "overflow in the forward pass); use float64 inputs")
    if input_domain is not None:
        input_domain.check_fits(x.shape[1:])
    top = backend.top_relevance(output, target)
    arriving = {graph.output: top}
    reports: list[LayerReport] = []
    box = _Box(input_domain, x, graph, backend)
    for index in reversed(range(len(graph.nodes))):
        node = graph.nodes[index]
        layer, inputs = node.operation, [activations[name] for name in node.inputs]
        above = arriving.pop(node.name)
        choice = plan.get(index)
        valid = None
        if choice is not None:
            lower, valid = _apply_node_rule(layer, inputs, above, choice, conventions, box, index,
                                            diagnostics, kernel_folder, backend, activations[node.name])
            for relevance in lower:
                if not _all_finite(relevance):
                    raise NonFiniteError(_non_finite_message(index, layer, choice.rule, relevance))
        else:
            lower = _route(layer, inputs, above)
        if hasattr(layer, "release_columns"):  # the kept im2col columns are no longer needed
            layer.release_columns()
        for name, relevance in zip(node.inputs, lower):  # summed over consumers, never in place
            arriving[name] = arriving[name] + relevance if name in arriving else relevance
        if layer_reports:
            reports.append(LayerReport(index, repr(layer), choice.rule if choice else None,
                                       sum(_per_sample_sum(r) for r in lower), _per_sample_sum(above),
                                       valid, above if keep_layers else None, node.name))
    relevance = arriving.pop(graph.input_name)
    if relevance.shape != x.shape:  # pragma: no cover - every layer keeps shapes consistent
        raise ShapeError(f"relevance shape {relevance.shape} differs from input shape {x.shape}")
    return Explanation(relevance, output, top, reports[::-1])


def _route(layer, inputs: list[np.ndarray], above: np.ndarray) -> list[np.ndarray]:
    """Relevance below a node without a rule: Concat slices it back, Flatten reshapes it, and
    ReLU, Identity and Dropout pass it on."""
    if isinstance(layer, Concat):
        if isinstance(above, np.ndarray):
            return layer.split(above, [a.shape[1:] for a in inputs])
        return _split_concat(layer, above, [tuple(a.shape[1:]) for a in inputs])
    if isinstance(layer, (Flatten, Reshape)):
        return [above.reshape(inputs[0].shape)]
    moved = attention_rules.route(layer, inputs, above)
    return moved if moved is not None else [above]


def _apply_node_rule(layer, inputs: list[np.ndarray], above: np.ndarray, choice: LayerRule,
                     conventions: Conventions, box: "_Box", index: int, diagnostics: bool,
                     kernel_folder: str | None, backend, output=None
                     ) -> tuple[list[np.ndarray], np.ndarray | None]:
    """A node's rule, with the layer's operator on the input's backend; an Add node's acts on
    its addends stacked on axis 1; an attention node's kernel takes the node's inputs. ``output``: the node's
    output z from the forward trace (None: recomputed where needed)."""
    if isinstance(layer, attention_rules.RULED):
        kernel = _kernel(choice.rule, kernel_folder, layer)
        return attention_rules.apply(layer, inputs, above, kernel.relevance, dict(choice.parameters),
                                     choice.constant_inputs, kernel.held, output, kernel.accepted), None
    if isinstance(layer, Add):
        stacked, operator = backend.stack_addends(inputs), backend.addends(len(inputs))
        relevance, valid = _apply_rule(layer, operator, stacked, above, choice, conventions, box,
                                       index, diagnostics, kernel_folder)
        return [relevance[:, k, ...] for k in range(len(inputs))], valid
    if isinstance(layer, NONLINEAR + NORMALIZATION):  # the rule takes the layer itself
        relevance, valid = _apply_rule(layer, layer, inputs[0], above, choice, conventions, box,
                                       index, diagnostics, kernel_folder,
                                       output if isinstance(layer, NORMALIZATION) else None)
        return [relevance], valid
    if output is not None and tuple(output.shape) != tuple(above.shape):
        output = None  # not this node's z_j: recomputed from the operator
    relevance, valid = _apply_rule(layer, backend.operator(layer), inputs[0], above, choice,
                                   conventions, box, index, diagnostics, kernel_folder, output)
    return [relevance], valid


def explain(
    network: Graph | Sequential,
    x: np.ndarray,
    rule: str | None = None,
    composite: str | Composite | None = None,
    target: object = None,
    *,
    conventions: Conventions = DTD,
    input_domain: InputDomain | tuple | None = None,
    kernel_folder: str | None = None,
    **parameters: float,
) -> np.ndarray:
    """Layer-wise relevance of ``x`` for a batch, with the shape of ``x``.

    Parameters
    ----------
    network : Graph or Sequential
    x : ndarray
        A batch of inputs (float32 or float64; relevance comes back in the same dtype).
    rule : str, optional
        One rule for every Dense/Conv2d layer (``"zplus"``, ``"w2"``, ``"zbox"``, ``"lrp0"``,
        ``"gamma"``, ``"flat"``, ``"epsilon"``, ``"alphabeta"``, ``"bias_neuron"``,
        ``"zplus_split"``, ``"gamma_split"``; :func:`lrp_num.engine.kernels.known_rules`). Layer
        kernels such as ``"maxpool"`` are not rules (UnknownRuleError).
    composite : str or Composite, optional
        A per-layer mapping (``"deep-taylor"``, ``"epsilon-plus"``, ``"epsilon-gamma-box"``,
        ``"alpha2-beta1"`` or your own :class:`~lrp_num.engine.composites.Composite`).
    target : None, int, sequence of int, or ndarray
        Output index per sample (default: the largest output) or an explicit output relevance.
    conventions : Conventions
        Bias placement and stabiliser (default: the DTD derivation).
    input_domain : InputDomain or (low, high), optional
        The input box, needed by z^B at the input; it must fit one input sample (ShapeError),
        be finite (NonFiniteError), and, where z^B uses it, contain the inputs (DomainError).
        It bounds the network input only: z^B applies it at a first linear node (no Dense or
        Conv2d before it) when every node before that only reshapes (Flatten, Identity,
        Dropout), else MissingBoundsError.
    kernel_folder : str, optional
        Load kernels from a folder written by ``lrp regenerate --out`` (your own rules). A rule
        the folder does not hold, and every pooling layer's rule, uses the shipped kernel.
    **parameters
        Rule parameters (gamma, alpha, beta, epsilon) when ``rule`` is given: numbers, finite,
        gamma, epsilon, alpha and beta >= 0 (else KernelArgumentError). With ``composite`` they
        are an error: a composite sets its own.

    Raises
    ------
    LRPError
        A subclass for every user mistake; NonFiniteError also when a layer's relevance
        overflows (float32 with a tiny denominator: use float64, or a larger eps with
        ``Conventions(stabilise="everywhere")``).

    Returns
    -------
    ndarray
        R_p for every input p; sum_p R_p = f_c(x) for conservative rules (Montavon et al. 2017).
    """
    return explain_details(network, x, rule, composite, target, conventions=conventions,
                           input_domain=input_domain, diagnostics=False, kernel_folder=kernel_folder,
                           layer_reports=False,
                           **parameters).relevance


def _per_sample_sum(r: np.ndarray) -> np.ndarray:
    if isinstance(r, np.ndarray):
        return r.reshape(r.shape[0], -1).sum(axis=1, dtype=np.float64)
    xp = array_api_compat.array_namespace(r)
    return xp.sum(xp.reshape(r, (r.shape[0], -1)), axis=1, dtype=xp.float64)


def _all_finite(a) -> bool:
    """No NaN or Inf in ``a`` (any array library).

    A finite sum proves every entry finite (a NaN or Inf makes the sum NaN or Inf): one
    reduction (and, on a device, one sync) instead of a boolean copy of the array; the full
    check runs only when the sum is not finite (an overflow of the sum alone is not an error).
    """
    if isinstance(a, np.ndarray):
        with np.errstate(over="ignore", invalid="ignore"):  # the sum's own overflow is no news
            return bool(np.isfinite(a.sum())) or bool(np.isfinite(a).all())
    xp = array_api_compat.array_namespace(a)
    return bool(xp.isfinite(xp.sum(a))) or bool(xp.all(xp.isfinite(a)))


def _count_nonzero(mask) -> int:
    if isinstance(mask, np.ndarray):
        return int(np.count_nonzero(mask))
    xp = array_api_compat.array_namespace(mask)
    return int(xp.sum(xp.astype(mask, xp.int64)))


def _split_concat(layer: Concat, relevance, input_shapes: list[tuple[int, ...]]) -> list:
    """Slice the relevance of a Concat back onto its inputs, for any array library."""
    axis = layer.sample_axis(len(input_shapes[0])) + 1
    pieces, start = [], 0
    for shape in input_shapes:
        index = [slice(None)] * relevance.ndim
        index[axis] = slice(start, start + shape[axis - 1])
        pieces.append(relevance[tuple(index)])
        start += shape[axis - 1]
    return pieces


class _Box:
    """Where the input box may be used: a first linear node, if only reshaping precedes it."""

    def __init__(self, domain: InputDomain | None, x: np.ndarray, graph: Graph, backend) -> None:
        self.domain, self.x, self.graph, self.backend = domain, x, graph, backend
        self.first_linear = graph.first_linear()

    def _in_between(self, index: int) -> list[tuple[int, object]]:
        """The nodes before node ``index`` that change values (not only reshape)."""
        graph = self.graph
        return [(graph.index(name), graph.node(name).operation)
                for name in graph.ancestors(graph.nodes[index].name)
                if not isinstance(graph.node(name).operation, SHAPE_ONLY)]

    def bounds(self, rule: str, a: np.ndarray, index: int) -> dict:
        if index not in self.first_linear:
            raise MissingBoundsError(f"rule {rule} needs box bounds, which only the network input "
                                     "has; use it on the first linear layer only")
        if self.domain is None:
            raise MissingBoundsError(f"rule {rule} needs the input box: pass input_domain=(low, high)")
        in_between = self._in_between(index)
        if in_between:
            names = ", ".join(f"{i} ({type(layer).__name__})" for i, layer in in_between)
            raise MissingBoundsError(
                f"rule {rule} at layer {index} needs box bounds on its input, but layer(s) {names} "
                "before it change the values, so the input box does not bound them; use a rule "
                "without bounds there (e.g. w2 or zplus), or pass no input_domain to deep-taylor "
                "(w2 at the input)")
        if isinstance(a, np.ndarray):
            self.domain.check_contains(self.x)
            sample = self.x.shape[1:]
            return {name: np.broadcast_to(bound.astype(a.dtype), sample).reshape(a.shape[1:])[None]
                    for name, bound in (("lower", self.domain.low), ("upper", self.domain.high))}
        # a device backend: the check reads a host copy of the input (z^B at the input only)
        host = self.backend.to_host(self.x)
        self.domain.check_contains(host)
        return {name: self.backend.from_host(
                    np.broadcast_to(bound, host.shape[1:]).reshape(tuple(a.shape[1:]))[None], like=a)
                for name, bound in (("lower", self.domain.low), ("upper", self.domain.high))}


def _non_finite_message(index: int, layer, rule: str, relevance: np.ndarray) -> str:
    xp = array_api_compat.array_namespace(relevance)
    n_bad = _count_nonzero(~xp.isfinite(relevance))
    cause = ("likely float32 overflow at a tiny non-zero denominator; use float64 inputs, or "
             "Conventions(eps=..., stabilise='everywhere')" if relevance.dtype == xp.float32 else
             "likely overflow at a tiny non-zero denominator; use Conventions(eps=..., "
             "stabilise='everywhere')")
    return (f"relevance below layer {index} ({layer!r}, rule {rule}) holds {n_bad} NaN or Inf "
            f"value(s): {cause}")


def _magnitude_bias_split(operator, a, relevance, eps: float):
    """The "magnitude" bias convention (lrp_num.engine.conventions): R_j scaled by
    |z_j - b_j| / (|z_j - b_j| + |b_j| + eps), the share the bias does not keep (0 where that
    denominator is 0)."""
    xp = array_api_compat.array_namespace(relevance)
    linear = xp.abs(operator.forward(a, "identity"))
    denominator = linear + xp.abs(operator.bias_like(linear)) + eps
    nonzero = denominator != 0
    share = xp.where(nonzero, linear / xp.where(nonzero, denominator, xp.ones_like(denominator)),
                     xp.zeros_like(linear))
    return relevance * share


def _apply_by_sign(layer, operator, a, relevance, choice: LayerRule, counterpart: str,
                   conventions: Conventions, box: _Box, index: int, diagnostics: bool,
                   kernel_folder: str | None, z=None):
    """Conventions.by_sign: the rule's derivation on neurons with z_j > 0, its counterpart's on
    z_j < 0, nothing through z_j = 0 (z_j the layer output with its bias)."""
    xp = array_api_compat.array_namespace(relevance)
    if z is None:
        z = _preactivation(operator, a)
    plain = dataclasses.replace(conventions, by_sign=False)
    zero = xp.zeros_like(relevance)
    positive, valid = _apply_rule(layer, operator, a, xp.where(z > 0, relevance, zero), choice, plain, box,
                                  index, diagnostics, kernel_folder, z)
    negative, _ = _apply_rule(layer, operator, a, xp.where(z < 0, relevance, zero),
                              LayerRule(counterpart, choice.parameters), plain, box, index, False, kernel_folder,
                              z)
    return positive + negative, valid


def _preactivation(operator, a):
    """z_j = sum_i a_i w_ij + b_j of a Dense or Conv2d layer's operator."""
    z = operator.forward(a, "identity")
    return z + operator.bias_like(z)


def _warn_outside_derivation(kernel: _Kernel, rule: str, layer, index: int, relevance, z) -> None:
    """DerivationScopeWarning when relevance arrives at neurons whose z_j has the sign the
    rule's derivation does not cover (its generated ``Z_SIGN``)."""
    xp = array_api_compat.array_namespace(relevance)
    outside = (z < 0) if kernel.z_sign == "positive" else (z > 0)
    if not bool(xp.any(outside & (relevance != 0))):
        return
    covered, other = ("z_j > 0", "z_j < 0") if kernel.z_sign == "positive" else ("z_j < 0", "z_j > 0")
    counterpart = SIGN_COUNTERPARTS.get(rule)
    hint = (f"; Conventions(by_sign=True) applies {counterpart} to the neurons with z_j < 0" if counterpart
            else "; LRP-epsilon and alpha-beta are defined for both signs" if kernel.z_sign == "positive"
            else "")
    warnings.warn(f"rule {rule} is derived for neurons with {covered} (its kernel's Z_SIGN = "
                  f"{kernel.z_sign!r}), but at layer {index} {layer!r} relevance arrives at neurons with "
                  f"{other}: outside its derivation{hint}", DerivationScopeWarning, stacklevel=2)


def _apply_rule(layer, operator, a, relevance, choice: LayerRule, conventions: Conventions,
                box: _Box, index: int, diagnostics: bool, kernel_folder: str | None, z=None):
    """Apply the node's kernel to ``operator``, the layer's linear part on the input's backend
    (the layer itself for NumPy); ``z``: the node's output where the forward trace has it (a
    linear layer's z_j, a normalisation's y_j), handed to a kernel that takes it
    (:data:`_OUTPUT_KEYWORDS`)."""
    if conventions.bias == "magnitude" and isinstance(layer, (Dense, Conv2d)):
        relevance = _magnitude_bias_split(operator, a, relevance, conventions.eps)
        conventions = dataclasses.replace(conventions, bias="dtd")
    counterpart = SIGN_COUNTERPARTS.get(choice.rule) if conventions.by_sign else None
    if counterpart is not None and isinstance(layer, (Dense, Conv2d)):
        return _apply_by_sign(layer, operator, a, relevance, choice, counterpart, conventions, box, index,
                              diagnostics, kernel_folder, z)
    kernel = _kernel(choice.rule, kernel_folder, layer)
    if kernel.z_sign != "any" and isinstance(layer, (Dense, Conv2d)):
        _warn_outside_derivation(kernel, choice.rule, layer, index, relevance,
                                 _preactivation(operator, a) if z is None else z)
    if kernel.domain == "orthant":
        check_orthant(a, index, layer, choice.rule)
    accepted = kernel.accepted
    keywords = dict(choice.parameters)
    if "eps" in accepted:
        keywords["eps"] = conventions.eps_for(choice.rule)
    if "stabilise" in accepted:
        keywords["stabilise"] = conventions.stabilise
    if "ties" in accepted:
        keywords["ties"] = conventions.maxpool_ties
    shares = conventions.bias_shares(choice.rule, kernel.n_terms)
    if shares is not None and "bias_shares" in accepted and isinstance(layer, (Dense, Conv2d)):
        keywords["bias_shares"] = shares
    if kernel.needs_bounds:
        keywords.update(box.bounds(choice.rule, a, index))
    if z is not None:
        name = next((name for kind, name in _OUTPUT_KEYWORDS if isinstance(layer, kind)), None)
        if name in accepted:
            keywords[name] = z
    unknown = set(keywords) - accepted
    if unknown:
        raise KernelArgumentError(f"rule {choice.rule} takes no parameter(s) {', '.join(sorted(unknown))}")
    lower_relevance = kernel.relevance(operator, a, relevance, **keywords)
    valid = None
    if diagnostics:
        valid = _root_point_validity(kernel.condition, operator, a, keywords)
    return lower_relevance, valid


def _root_point_validity(condition: Callable | None, layer, a: np.ndarray, keywords: dict):
    """Fraction of active neurons whose root point is in the rule's domain (derived condition)."""
    if condition is None:
        return None
    accepted = inspect.signature(condition).parameters
    arguments = {k: v for k, v in keywords.items() if k in accepted}
    inside, active = condition(layer, a, **arguments)
    batch = a.shape[0]
    if not isinstance(inside, np.ndarray):  # a device backend: the fraction per sample
        xp = array_api_compat.array_namespace(inside)
        inside, active = xp.reshape(inside, (batch, -1)), xp.reshape(active, (batch, -1))
        n_active = xp.sum(xp.astype(active, xp.float64), axis=1)
        n_inside = xp.sum(xp.astype(inside & active, xp.float64), axis=1)
        return xp.where(n_active > 0, n_inside / xp.clip(n_active, min=1), xp.ones_like(n_active))
    inside = inside.reshape(batch, -1)
    active = active.reshape(batch, -1)
    n_active = active.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(n_active > 0, (inside & active).sum(axis=1) / np.maximum(n_active, 1), 1.0)
    return fraction
