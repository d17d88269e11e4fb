"""The reference's public entries: relevance by the definition, the forward pass and the gradient.

:func:`explain` recomputes what :func:`lrp_num.explain` computes, in mpmath at ``dps``
significant digits (:func:`explain_trace` keeps every node's trace); :func:`forward` and
:func:`gradient` evaluate the network itself; :func:`root_point_membership` counts the root
points that lie in their rule's domain.

All arithmetic runs at ``dps + GUARD_DIGITS`` digits; results are rounded once to ``dps``.

Checks
------
Every public function checks its arguments with :mod:`lrp_num.checks`, as :func:`lrp_num.explain`
does: ``dps`` an integer from 20 to 10000 (PrecisionError), a finite, non-empty, numeric input
(NonFiniteError, ShapeError), rule parameters the rule has, finite and >= 0
(KernelArgumentError), no rule parameters with a composite, a valid target (TargetError), an
input box that is finite, fits the input and contains it where z^B uses it (DomainError), and
no negative input where a rule derived for the orthant (zplus, gamma) is applied (DomainError).
The domains come from :data:`~lrp_num.reference.directions.ROOT_POINT_RULES`, the reference's own
table, not from the kernels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import mpmath
import numpy as np

from lrp_num.checks import (check_composite_parameters, check_dps, check_rule_parameters, check_target,
                            explanation_input)
from lrp_num.errors import KernelArgumentError, LRPError, MissingBoundsError, ShapeError, UnknownRuleError
from lrp_num.layers import Add
from lrp_num.progress import progress
from lrp_num.reference.backward import ReferenceNetwork, prepare
from lrp_num.reference.composites import CompositeDefinition, _own_plan, definition_of, plan_nodes
from lrp_num.layers.nonlinear import NONLINEAR
from lrp_num.layers.normalization import NORMALIZATION
from lrp_num.reference.transformer_nodes import NORM_RULES, POINTWISE_RULES
from lrp_num.reference.attention import ATTENTION_RULES
from lrp_num.reference.attention import OPERATIONS as ATTENTION_OPERATIONS
from lrp_num.reference.directions import (ADD_ALIASES, ADD_RULES, BIAS_CONVENTIONS, ROOT_POINT_RULES, RULE_DEFAULTS,
                                          RULES)
from lrp_num.reference.linear import LINEAR_LAYERS
from lrp_num.reference.linear import to_mpf as _to_mpf
from lrp_num.reference.node_rules import LayerTrace
from lrp_num.reference.roots import GUARD_DIGITS, STABILISE_MODES


def _conventions(conventions) -> dict[str, Any]:
    """The conventions as a dict, checked as :class:`lrp_num.engine.conventions.Conventions` checks them."""
    from lrp_num.engine.conventions import Conventions  # configuration and its checks, no numerics

    if conventions is None:
        conventions = Conventions()
    elif isinstance(conventions, Mapping):
        unknown = set(conventions) - {"bias", "eps", "stabilise", "by_sign", "epsilon_stabilises", "maxpool_ties"}
        if unknown:
            raise KernelArgumentError(f"unknown convention(s) {', '.join(sorted(unknown))}; "
                                      "known: bias, eps, stabilise, by_sign, epsilon_stabilises, maxpool_ties")
        conventions = Conventions(**conventions)
    values = {"bias": conventions.bias, "eps": conventions.eps, "stabilise": conventions.stabilise,
              "by_sign": conventions.by_sign, "epsilon_stabilises": conventions.epsilon_stabilises,
              "maxpool_ties": conventions.maxpool_ties}
    if values["bias"] not in BIAS_CONVENTIONS:
        raise UnknownRuleError(f"unknown bias convention {values['bias']!r}; known: {', '.join(BIAS_CONVENTIONS)}")
    if values["stabilise"] not in STABILISE_MODES:
        raise UnknownRuleError(f"unknown stabiliser mode {values['stabilise']!r}")
    return values


def layer_plan(network, rule: str | None = None, composite=None, input_is_box: bool = False,
               **parameters) -> dict[int, tuple[str, dict[str, Any]]]:
    """The rule and parameters of every node index that needs one, planned by the reference.

    ``rule``: that rule on every Dense and Conv2d node; ``composite``: a registered name, read
    from the reference's own restatement of its definition
    (:data:`lrp_num.reference.composites.COMPOSITE_DEFINITIONS`), or an object, read through its
    ``choose`` and ``add``; neither: ``"deep-taylor"``. The engine's planner is never asked
    (:mod:`lrp_num.reference.composites`). Sum, average, adaptive and global pooling and
    ChannelAffine nodes use the z-rule (lrp0), Add nodes the composite's Add rule (``"lrp0"``
    on the stacked addends is ``"add_z"``), and max pooling winner-take-all (no entry).
    """
    from lrp_num.reference.backward import _reference_nodes  # the nodes the reference walks

    parameters = {k: v for k, v in parameters.items() if k not in ("lower", "upper")}
    if rule is not None and composite is not None:
        raise LRPError("pass either rule= or composite=, not both")
    nodes, input_name, _ = _reference_nodes(network)
    if rule is not None:
        if rule not in RULES:
            raise UnknownRuleError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
        choice = (rule, check_rule_parameters(rule, parameters, RULE_DEFAULTS.get(rule, {})))
        definition = CompositeDefinition(rule, dense=choice, conv=choice)
        choices = plan_nodes(nodes, input_name, definition, input_is_box)
    else:
        check_composite_parameters(parameters)
        composite = "deep-taylor" if composite is None else composite
        if not isinstance(composite, str) and _own_plan(composite):
            choices = _object_plan(network, composite, input_is_box)
        else:
            choices = plan_nodes(nodes, input_name, definition_of(composite), input_is_box)
    plan: dict[int, tuple[str, dict[str, Any]]] = {}
    for node in nodes:
        if isinstance(node.operation, (Add, *LINEAR_LAYERS)) and node.index not in choices:
            raise UnknownRuleError(f"node {node.name!r}: the composite chooses no rule for {node.operation!r}")
    for index, (chosen, chosen_parameters) in choices.items():
        if chosen == "maxpool":
            continue
        node = nodes[index]
        chosen_parameters, signed = _signed_parameter(node.name, chosen, chosen_parameters)
        if isinstance(node.operation, ATTENTION_OPERATIONS):
            kind, defaults = ATTENTION_RULES.get(chosen, (None, {}))
            if kind is None or not isinstance(node.operation, kind):
                raise UnknownRuleError(f"node {node.name!r}: {chosen!r} is no rule of {node.operation!r}; known: "
                                       f"{', '.join(n for n, (k, _) in ATTENTION_RULES.items() if isinstance(node.operation, k))}")
            own = check_rule_parameters(chosen, chosen_parameters, defaults)
            plan[index] = (chosen, {**defaults, **own, **signed})
            continue
        if isinstance(node.operation, Add):
            original = chosen
            chosen = ADD_ALIASES.get(chosen, chosen)
            if chosen not in ADD_RULES:
                raise UnknownRuleError(f"node {node.name!r}: {original!r} is no rule of an Add node; "
                                       f"known: {', '.join(ADD_RULES)}")
        elif isinstance(node.operation, NONLINEAR + NORMALIZATION):
            known = POINTWISE_RULES if isinstance(node.operation, NONLINEAR) else NORM_RULES
            if chosen not in known:
                raise UnknownRuleError(f"node {node.name!r}: {chosen!r} is no rule of "
                                       f"{node.operation!r}; known: {', '.join(known)}")
        elif chosen not in RULES:
            raise UnknownRuleError(f"node {node.name!r}: unknown rule {chosen!r}; known: {', '.join(RULES)}")
        own = check_rule_parameters(chosen, chosen_parameters, RULE_DEFAULTS.get(chosen, {}))
        plan[index] = (chosen, {**RULE_DEFAULTS.get(chosen, {}), **own, **signed})
    return plan


#: parameters the reference alone takes, to restate another library's convention for its audit
#: (the engine has no such option), and the rules that take them:
#: ``signed`` (0 or 1; 1, the default, is the definition's eps sign(d)): 0 places the stabiliser as
#: d + eps whatever d's sign, as LXT 2.1 does (``lxt/explicit/functional.py: _stabilize``);
#: ``stabiliser`` (>= 0, default 0): LayerNorm / RMSNorm relevance over y_j + s, as LXT's layer_norm
REFERENCE_PARAMETERS = {"signed": ("epsilon", "matmul_epsilon", "matmul_cp", "add_epsilon"), "stabiliser": NORM_RULES}


def _signed_parameter(name: str, rule: str, parameters: Mapping[str, Any]
                      ) -> tuple[dict[str, Any], dict[str, float]]:
    """(the parameters without the reference-only ones, those given, checked): KernelArgumentError
    for one on another rule or with a value outside its range (see :data:`REFERENCE_PARAMETERS`)."""
    parameters = dict(parameters)
    own = {}
    for key, rules in REFERENCE_PARAMETERS.items():
        if key not in parameters:
            continue
        value = parameters.pop(key)
        valid = value in (0, 1) if key == "signed" else (isinstance(value, (int, float)) and 0 <= value < float("inf"))
        if rule not in rules or not valid:
            raise KernelArgumentError(f"node {name!r}: the reference's parameter {key} belongs to "
                                      f"{', '.join(rules)} ({'0 or 1' if key == 'signed' else 'finite, >= 0'}), "
                                      f"not {rule!r} = {value!r}")
        own[key] = float(value)
    return parameters, own


def _object_plan(network, composite, input_is_box: bool) -> dict[int, tuple[str, Mapping[str, float]]]:
    """The plan of a composite object that defines it outright (a fixed plan, as the audit's)."""
    from lrp_num.engine.graph import as_graph  # the node order such a plan indexes

    graph = as_graph(network)
    if hasattr(composite, "plan_graph"):
        choices = composite.plan_graph(graph, input_is_box)
    else:  # an object with only the list-based plan(layers, input_is_box)
        choices = composite.plan(list(graph.layers), input_is_box)
    return {index: (choice.rule, dict(choice.parameters)) for index, choice in choices.items()}


def _as_batch(network, x) -> tuple[np.ndarray, bool]:
    """``x`` as a float64 batch (checked as explain checks it) and whether it was one sample."""
    x = explanation_input(x).astype(np.float64)
    shape = getattr(network, "input_shape", None)
    if shape is not None and x.shape == tuple(shape):
        return x[None], True
    if shape is not None and x.shape[1:] != tuple(shape):
        raise ShapeError(f"input must have shape {tuple(shape)} or (N, {', '.join(map(str, shape))}), got {x.shape}")
    if x.ndim < 2:
        raise ShapeError(f"input must be a batch (N, ...) for a network without input_shape, got {x.shape}")
    return x, False


def checked_target(reference: "ReferenceNetwork", target, n_samples: int, single: bool):
    """The target checked by :func:`lrp_num.checks.check_target` against the batch's output
    shape: None, one index per sample, or an explicit relevance (n_samples, ...). For one sample
    given without its batch axis, an explicit relevance may omit it too."""
    output_shape = (n_samples,) + tuple(reference.output_shape)
    array = np.asarray(target) if target is not None else None
    if single and array is not None and array.dtype.kind == "f" and array.shape == output_shape[1:]:
        target = array[None]
    return check_target(target, output_shape)


def _top_relevance(output: np.ndarray, target, sample: int) -> np.ndarray:
    """R at the output of one sample: f_c(x) at its target index, or the explicit relevance
    (``target`` as returned by :func:`checked_target`)."""
    if target is not None and target.dtype.kind == "f":
        return _to_mpf(target[sample].reshape(-1))
    zero = mpmath.mpf(0)
    top = np.empty(len(output), dtype=object)
    top[:] = zero
    c = max(range(len(output)), key=lambda k: output[k]) if target is None else int(target[sample])
    top[c] = output[c]
    return top


@dataclass
class ReferenceResult:
    """One sample's reference explanation with its per-node traces.

    ``activations`` and ``relevance_at`` map every node's name (and the input's) to its output
    and to the relevance arriving there (summed over its consumers), flattened.
    """

    relevance: np.ndarray
    top: np.ndarray
    activations: dict
    traces: list[LayerTrace]
    relevance_at: dict = field(default_factory=dict)
    output: str = ""
    input_name: str = "input"


def box_and_plan(network, batch: np.ndarray, rule, composite, rule_parameters: dict):
    """The input box and the plan of a reference call: ``input_domain=(low, high)`` (or an
    InputDomain), or ``lower=`` and ``upper=``, popped from ``rule_parameters``; the box must fit
    the input's shape and, where the plan uses z^B, contain the batch (as the engine checks it).

    Returns (InputDomain or None, the plan of :func:`layer_plan`).
    """
    from lrp_num.io.model_io import InputDomain  # the box and its checks, no numerics

    input_domain = rule_parameters.pop("input_domain", None)
    lower, upper = rule_parameters.pop("lower", None), rule_parameters.pop("upper", None)
    if lower is not None or upper is not None:
        if input_domain is not None:
            raise LRPError("give the box as input_domain=(low, high) or as lower= and upper=, not both")
        if lower is None or upper is None:
            raise MissingBoundsError("the box needs both lower= and upper=")
        input_domain = (lower, upper)
    domain = None
    if input_domain is not None:  # the engine's spelling: (low, high) or an InputDomain
        domain = InputDomain.of(input_domain)
        domain.check_fits(batch.shape[1:])
    plan = layer_plan(network, rule, composite, input_is_box=domain is not None, **rule_parameters)
    if domain is not None and any(chosen == "zbox" for chosen, _ in plan.values()):
        domain.check_contains(batch)
    return domain, plan


def explain_trace(network, x, rule: str | None = None, composite=None, target=None, *, dps: int = 50,
                  conventions=None, solver: str = "newton", diagnostics: bool = True,
                  check_domain: bool = True, **rule_parameters) -> list[ReferenceResult]:
    """Like :func:`explain`, but per sample with activations and per-layer traces (at dps + guard).

    ``solver``: "newton" (default) or "findroot" (mpmath.findroot on each root condition);
    ``diagnostics``: count root points inside their domain (see :func:`root_point_membership`);
    ``check_domain=False`` evaluates zplus and gamma by their definition on negative inputs
    too, instead of raising DomainError (the audit does so to reproduce a library that applies
    them there, and says so in its report).
    """
    dps = check_dps(dps)
    batch, single = _as_batch(network, x)
    conv = _conventions(conventions)
    input_shape = batch.shape[1:]
    domain, plan = box_and_plan(network, batch, rule, composite, rule_parameters)
    bounds = None
    if domain is not None:
        bounds = tuple(_to_mpf(np.broadcast_to(bound, input_shape).ravel())
                       for bound in (domain.low, domain.high))
    reference = prepare(network, input_shape, dps)
    target = checked_target(reference, target, len(batch), single)
    results = []
    with mpmath.workdps(dps + GUARD_DIGITS):  # a progress bar on a terminal for many samples
        for sample, values in enumerate(progress(batch, "reference")):
            activations = reference.forward(values)
            top = _top_relevance(activations[reference.output], target, sample)
            relevance, traces, relevance_at = reference.backward(activations, top, plan, conv, bounds,
                                                                 solver, diagnostics, check_domain)
            results.append(ReferenceResult(relevance, top, activations, traces, relevance_at,
                                           reference.output, reference.input_name))
    return results


def rounded(values: np.ndarray, dps: int, shape: tuple[int, ...]) -> np.ndarray:
    with mpmath.workdps(dps):
        out = np.array([+value for value in values], dtype=object)
    return out.reshape(shape)


def explain(network, x, rule: str | None = None, composite=None, target=None, *, dps: int = 50,
            conventions=None, **rule_parameters) -> np.ndarray:
    """Relevance of every input by the definition of the rules, in mpmath at ``dps`` digits.

    Same meaning as :func:`lrp_num.explain`: the top relevance is the chosen output's value
    f_c(x) (``target`` an index, one per sample, or None for the largest output) or an explicit
    output relevance array; ``rule`` applies one rule to every Dense and Conv2d layer,
    ``composite`` chooses per layer; ``conventions`` (a :class:`lrp_num.engine.conventions.Conventions`
    or a mapping with ``bias``, ``eps``, ``stabilise``) as in the engine; ``input_domain``
    (low, high) or ``lower`` / ``upper`` is the z^B box of the network input; further keywords
    are rule parameters (gamma, epsilon, alpha, beta).

    Returns
    -------
    ndarray of mpmath.mpf (dtype object), the shape of ``x``
        R_p, each rounded once to ``dps`` digits.
    """
    dps = check_dps(dps)
    batch, single = _as_batch(network, x)
    results = explain_trace(network, x, rule, composite, target, dps=dps, conventions=conventions,
                            diagnostics=False, **rule_parameters)
    out = np.stack([rounded(result.relevance, dps, batch.shape[1:]) for result in results])
    return out[0] if single else out


def forward(network, x, *, dps: int = 50) -> np.ndarray:
    """f(x) in mpmath at ``dps`` digits, shape (N, n_outputs) or (n_outputs,) for one sample."""
    dps = check_dps(dps)
    batch, single = _as_batch(network, x)
    reference = prepare(network, batch.shape[1:], dps)
    with mpmath.workdps(dps + GUARD_DIGITS):
        outputs = [reference.forward(values)[reference.output] for values in batch]
    out = np.stack([rounded(o, dps, o.shape) for o in outputs])
    return out[0] if single else out


def gradient(network, x, target=None, *, dps: int = 50) -> np.ndarray:
    """d f_c / dx at x, shape of ``x`` (ReLU derivative 1[z > 0]: 0 on the hinge).

    ``target`` as in :func:`explain`; an explicit output array g gives d(sum_c g_c f_c)/dx.
    """
    dps = check_dps(dps)
    batch, single = _as_batch(network, x)
    reference = prepare(network, batch.shape[1:], dps)
    target = checked_target(reference, target, len(batch), single)
    grads = []
    with mpmath.workdps(dps + GUARD_DIGITS):  # a progress bar on a terminal for many samples
        for sample, values in enumerate(progress(batch, "reference")):
            activations = reference.forward(values)
            output = activations[reference.output]
            if target is not None and target.dtype.kind == "f":
                selector = _to_mpf(target[sample].reshape(-1))
            else:
                c = target_index(output, target, sample)
                selector = np.array([mpmath.mpf(int(k == c)) for k in range(len(output))], dtype=object)
            grads.append(reference.gradient(activations, selector))
    out = np.stack([rounded(g, dps, batch.shape[1:]) for g in grads])
    return out[0] if single else out


def target_index(output, target, sample: int) -> int:
    """The output index of one sample; ``target`` None or checked indices (one per sample)."""
    if target is None:
        return max(range(len(output)), key=lambda k: output[k])
    return int(target[sample])


@dataclass
class LayerMembership:
    """Per linear layer: active neurons and those whose root point lies in the rule's domain."""

    index: int
    rule: str
    n_active: int
    n_inside: int

    @property
    def fraction(self) -> float:
        return self.n_inside / self.n_active if self.n_active else 1.0


def root_point_membership(network, x, rule: str | None = None, composite=None, target=None, *,
                          dps: int = 50, conventions=None, **rule_parameters) -> list[list[LayerMembership]]:
    """Per sample, per root-point layer: does x~^(j) = x - t* v_j lie in the domain (direct check)?

    The domain is the rule's (R^n for w2, lrp0, flat; the orthant for zplus and gamma; the box
    [lower, upper] for zbox); membership is checked coordinate by coordinate at ``dps`` digits
    with a tolerance of 10^-(dps - 5) relative to the layer's inputs.
    """
    results = explain_trace(network, x, rule, composite, target, dps=dps, conventions=conventions,
                            **rule_parameters)
    return [[LayerMembership(t.index, t.rule, t.n_active, t.n_inside) for t in result.traces
             if t.rule in ROOT_POINT_RULES] for result in results]


__all__ = [
    "LayerMembership", "ReferenceResult", "explain", "explain_trace", "forward", "gradient", "layer_plan",
    "root_point_membership",
]
