"""The audit on graph models (residual and branching networks), node by node.

For every node of the (folded) graph the audit compares the relevance arriving at the node's
output, summed over the nodes that read it, as the library computed it, with the reference
under the library's own profile and under the deep Taylor derivation; the input relevance is
the row ``input``. A node's output is the torch tensor of its module (a folded BatchNorm's
output for a linear node it was folded into). For every Add node it also checks conservation
through the node, sum_k R_k against the node's relevance R, and whether every addend received
the same relevance where the convention splits R_k = a_k / stab(sum a) R. A library whose
sum is invisible to its rules (a functional ``+``) copies R to each addend: the ratio is K.

Deviations are max |R_lib - R_ref| and that divided by max |R_ref| at the node and over the batch,
judged against the rounding bound of the library's dtype (:mod:`lrp_num.audit.tolerance`). A
node's rule shows at its inputs: the verdict names the node output deviating most relative to
its relevance, and the deviating tensor nearest the output with the nodes reading it whose own
output still matches (where the deviation starts). Rules outside their domain and the causes of
a departure from DTD are found per linear node as for chains (:mod:`lrp_num.audit.findings`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping

import numpy as np

from lrp_num.audit.library_run import LibraryRun
from lrp_num.checks import check_composite_parameters, check_rule_parameters
from lrp_num.engine.composites import AFFINE_RULE, Composite, LayerRule, get_composite
from lrp_num.engine.conventions import DTD, Conventions
from lrp_num.errors import LRPError, UnknownRuleError
from lrp_num.engine.explain import top_relevance
from lrp_num.layers import Add, ChannelAffine, Conv2d, Dense
from lrp_num.audit.profiles import Profile

_FIXED = ("lrp0", "maxpool", "sumpool", "avgpool")


@dataclass
class NodeAudit:
    """The checks at one node's output (see the module docstring).

    ``addend_sum_*``: sum_k R_k / R over the addends of an Add node (worst sample), for the
    library, its profile and DTD; None for other nodes. ``same_addends``: the library gives every
    addend the same relevance where its profile does not. ``bound``, ``own_over_bound``,
    ``dtd_over_bound`` as in :class:`lrp_num.audit.compare.LayerAudit`, for the node's output;
    ``addend_bound`` the rounding of the addends' ratio. ``domain`` ... ``causes`` as there,
    for the node's own rule at its input.
    """

    node: str
    tensor: str
    operation: str
    rule: str | None
    library_rule: str
    own_deviation: float
    own_relative: float
    dtd_deviation: float
    dtd_relative: float
    addend_sum_library: float | None = None
    addend_sum_profile: float | None = None
    addend_sum_dtd: float | None = None
    same_addends: bool = False
    bound: float = 0.0
    bound_relative: float = 0.0
    own_over_bound: float = 0.0
    dtd_over_bound: float = 0.0
    addend_bound: float = 1e-12
    domain: str = "R^n"
    outside_domain: int = 0
    outside_relevance: float = 0.0
    generalisation: str | None = None
    applied_outside_domain: bool = False
    causes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class NodeRelevance:
    """Relevance at the output of every node (by torch tensor name), at the input, and per
    addend; ``results``: the reference's per-sample results with their traces."""

    nodes: dict[str, np.ndarray]
    addends: dict[str, list[np.ndarray]]
    results: list = field(default_factory=list)


class PlannedComposite(Composite):
    """A composite that returns a plan fixed in advance (node index -> LayerRule)."""

    def __init__(self, name: str, plan: Mapping[int, LayerRule]) -> None:
        super().__init__(name, lambda index, layer, first, box: plan[index])
        object.__setattr__(self, "fixed_plan", dict(plan))

    def plan_graph(self, graph, input_is_box: bool) -> dict[int, LayerRule]:
        return dict(self.fixed_plan)


def tensor_names(graph) -> dict[str, str]:
    """Node name -> the source node whose output holds that node's output (a folded
    BatchNorm's name for the linear node it was folded into)."""
    names = {node.name: node.name for node in graph.nodes}
    for bn, linear in graph.folded.items():
        names[linear] = bn
    names[graph.input_name] = graph.input_name
    return names


def chosen_composite(rule: str | None, composite: str | Composite | None,
                     parameters: Mapping) -> Composite:
    """Our composite for an audit: one rule everywhere, or a composite by name or object; rule
    parameters checked as :func:`lrp_num.explain` checks them (the rule's own, finite, >= 0;
    none with a composite): KernelArgumentError otherwise."""
    from lrp_num.reference import RULE_DEFAULTS, RULES

    if (rule is None) == (composite is None):
        raise LRPError("give exactly one of rule= or composite=")
    if rule is not None:
        if rule not in RULES:
            raise UnknownRuleError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
        return Composite.single(rule, **check_rule_parameters(rule, parameters,
                                                              RULE_DEFAULTS.get(rule, {})))
    check_composite_parameters(parameters)
    return get_composite(composite) if isinstance(composite, str) else composite


def graph_plan(graph, rule: str | None, composite: str | Composite | None, parameters: Mapping,
               input_is_box: bool) -> dict[int, LayerRule]:
    """Node index -> our LayerRule on ``graph`` (see :func:`chosen_composite`)."""
    return chosen_composite(rule, composite, parameters).plan_graph(graph, input_is_box)


def mapped_graph_plans(profile: Profile, graph, library_graph, plan: Mapping[int, LayerRule]
                       ) -> tuple[dict[int, LayerRule], dict[int, LayerRule]]:
    """(plan on ``library_graph`` reproducing the library, plan on ``graph`` under DTD)."""
    by_name = {graph.nodes[k].name: choice for k, choice in plan.items()}
    operations = {node.name: node.operation for node in graph.nodes}
    dtd, own = {}, {}
    for k, choice in plan.items():
        if isinstance(graph.nodes[k].operation, (Dense, Conv2d)):
            mapping = profile.rule(choice.rule)
            dtd[k] = LayerRule(mapping.dtd_rule, {**mapping.defaults, **dict(choice.parameters)})
        else:
            dtd[k] = choice
    for k, node in enumerate(library_graph.nodes):
        original = operations.get(node.name)
        choice = by_name.get(node.name)
        if isinstance(original, (Dense, Conv2d)) and choice is not None:
            mapping = profile.rule(choice.rule)
            own[k] = LayerRule(mapping.reference_rule, profile.reference_parameters(mapping, choice.parameters))
        elif isinstance(node.operation, Add):
            own[k] = LayerRule(profile.add.reference_rule if profile.add else choice.rule)
        elif isinstance(node.operation, (Dense, Conv2d)) or isinstance(original, ChannelAffine):
            # a batch norm the library leaves unmerged (captum: a 1x1 depthwise convolution)
            own[k] = LayerRule(profile.batch_norm_rule or AFFINE_RULE)
        elif choice is not None:
            own[k] = choice
        elif isinstance(node.operation, ChannelAffine):
            own[k] = LayerRule(AFFINE_RULE)
    return own, dtd


# -- the reference, per node: the one place that computes it ----------------------------------

def reference_nodes(graph, x: np.ndarray, plan: Mapping[int, LayerRule], top: np.ndarray,
                    conventions: Conventions, input_domain=None, dps: int = 50) -> NodeRelevance:
    """Relevance at every node's output and every Add node's addends, under ``conventions``.

    Computed by the mpmath reference (:func:`lrp_num.reference.explain_trace`, by the rules'
    definitions at ``dps`` digits, nothing taken from the engine) and rounded to float64. Rules
    derived for x >= 0 (z+, gamma) are evaluated by their definition on negative layer inputs
    too (``check_domain=False``), as a library applies them there; the report says so.
    """
    from lrp_num import reference

    results = reference.explain_trace(graph, x, composite=PlannedComposite("audit", plan), target=top,
                                      dps=dps, conventions=conventions, input_domain=input_domain,
                                      diagnostics=False, check_domain=False)
    names = tensor_names(graph)
    shapes = {name: value.shape[1:] for name, value in graph.forward_trace(x[:1]).items()}

    def stacked(values: list) -> np.ndarray:  # one flattened mpf array per sample -> float64
        return np.stack([reference.to_float(np.asarray(v)) for v in values])

    nodes = {names[name]: stacked([r.relevance_at[name] for r in results]).reshape((len(x), *shapes[name]))
             for name in results[0].relevance_at}
    addends = {}
    for position, trace in enumerate(results[0].traces):
        if trace.name is not None and isinstance(graph.node(trace.name).operation, Add):
            node = graph.node(trace.name)
            addends[node.name] = [
                stacked([r.traces[position].relevance_inputs[k] for r in results]).reshape(
                    (len(x), *shapes[node.inputs[k]]))
                for k in range(len(node.inputs))]
    return NodeRelevance(nodes, addends, results)


# -- comparing -----------------------------------------------------------------------------------

def _deviation(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a, b = np.asarray(a, dtype=np.float64).reshape(len(a), -1), np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    absolute = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return absolute, (absolute / scale if scale > 0 else absolute)


def _sums(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, dtype=np.float64).reshape(len(array), -1).sum(axis=1)


def _addend_ratio(addends: list[np.ndarray], relevance: np.ndarray) -> np.ndarray:
    """sum_k R_k / R per sample (nan where the node's relevance sums to 0)."""
    total = _sums(relevance)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total != 0, sum(_sums(a) for a in addends) / np.where(total != 0, total, 1.0), np.nan)


def _negatives(relevance: np.ndarray, bound: np.ndarray | float) -> int:
    """Entries below -bound (a negative relevance beyond rounding)."""
    return int(np.count_nonzero(np.asarray(relevance, dtype=np.float64).reshape(len(relevance), -1)
                                < -np.asarray(bound)))


def _same(addends: list[np.ndarray], tolerance: float) -> bool:
    scale = max(float(np.max(np.abs(a))) if a.size else 0.0 for a in addends)
    return scale > 0 and all(np.max(np.abs(a - addends[0])) <= max(tolerance, 1e-12) * scale for a in addends[1:])


def _over_bound(a: np.ndarray, b: np.ndarray, bound: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    gap = np.abs(a - np.asarray(b, dtype=np.float64).reshape(len(b), -1))
    ratio = np.divide(gap, bound, out=np.where(gap > 0, np.inf, 0.0), where=bound > 0)
    return float(ratio.max()) if ratio.size else 0.0


def node_bounds(graph, relevance: NodeRelevance, dtype, tolerance: float | None,
                model_error: float = 0.0) -> dict[str, np.ndarray]:
    """Tensor name -> the deviation (batch, n) counted as equal there: the rounding bound of
    ``dtype`` plus ``model_error`` x max |R_ref|, or ``tolerance`` x max |R_ref| when given
    (as :func:`lrp_num.audit.compare.layer_bounds` does for chains)."""
    from lrp_num.audit.tolerance import measured_forward_errors, rounding_bounds, unit_roundoff

    names = tensor_names(graph)
    derived = {}
    if tolerance is None:  # the forward pass's measured cancellation included, as in lrp_num.testing
        forward_errors = measured_forward_errors(graph, relevance.results, dtype)
        derived = {names.get(name, name): value for name, value in
                   rounding_bounds(graph, relevance.results, dtype, forward_errors).items()}
    bounds = {}
    for tensor, values in relevance.nodes.items():
        flat = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
        scale = float(np.max(np.abs(flat))) if flat.size else 0.0
        if tolerance is not None:
            bounds[tensor] = np.full(flat.shape, tolerance * scale)
            continue
        bound = derived.get(tensor)
        bound = np.zeros(flat.shape) if bound is None or bound.shape != flat.shape else bound
        bounds[tensor] = np.maximum(bound + model_error * scale, unit_roundoff(dtype) * scale)
    return bounds


def _node_audits(graph, plan, profile: Profile, lib: LibraryRun, own: NodeRelevance, dtd: NodeRelevance,
                 own_bounds, dtd_bounds, tolerance: float) -> list[NodeAudit]:
    names = tensor_names(graph)
    audits = []
    rows = [(graph.input_name, None, "input")] + [(node.name, k, repr(node.operation))
                                                  for k, node in enumerate(graph.nodes)]
    for name, k, operation in rows:
        tensor = names[name]
        if tensor not in lib.nodes:
            continue
        choice = plan.get(k) if k is not None else None
        library_rule = ""
        if choice is not None and k is not None:
            layer = graph.nodes[k].operation
            if isinstance(layer, (Dense, Conv2d)) and choice.rule in profile.rules:
                library_rule = profile.rules[choice.rule].library_rule
            elif isinstance(layer, Add) and profile.add is not None:
                library_rule = profile.add.library_rule
            else:
                library_rule = f"({choice.rule})"
        own_abs, own_rel = _deviation(lib.nodes[tensor], own.nodes[tensor])
        dtd_abs, dtd_rel = _deviation(lib.nodes[tensor], dtd.nodes[tensor])
        bound = own_bounds[tensor]
        scale = float(np.max(np.abs(own.nodes[tensor]))) if own.nodes[tensor].size else 0.0
        audit = NodeAudit(name if name == tensor else f"{name} (+{tensor})", tensor, operation,
                          choice.rule if choice else None, library_rule, own_abs, own_rel, dtd_abs, dtd_rel,
                          bound=float(bound.max()) if bound.size else 0.0,
                          bound_relative=float(bound.max()) / scale if scale > 0 and bound.size else 0.0,
                          own_over_bound=_over_bound(lib.nodes[tensor], own.nodes[tensor], bound),
                          dtd_over_bound=_over_bound(lib.nodes[tensor], dtd.nodes[tensor], dtd_bounds[tensor]))
        if k is not None and isinstance(graph.nodes[k].operation, Add) and name in lib.addends \
                and all(a is not None for a in lib.addends[name]):
            shares = lib.addends[name]
            ratio_lib = _addend_ratio(shares, lib.nodes[tensor])
            ratio_own = _addend_ratio(own.addends[name], own.nodes[tensor])
            ratio_dtd = _addend_ratio(dtd.addends[name], dtd.nodes[tensor])
            gap = np.nan_to_num(np.abs(ratio_lib - ratio_own), nan=0.0)
            s = int(np.argmax(gap))
            audit.addend_sum_library = float(ratio_lib[s])
            audit.addend_sum_profile = float(ratio_own[s])
            audit.addend_sum_dtd = float(ratio_dtd[s])
            total = np.abs(_sums(own.nodes[tensor]))
            # the ratio's rounding: the node's bound and the addends' (about as large), over |sum R|
            audit.addend_bound = float(np.max(np.divide(3 * bound.sum(axis=1), total, out=np.zeros_like(total),
                                                        where=total > 0))) + 1e-12
            audit.same_addends = _same(shares, tolerance) and not _same(own.addends[name], tolerance)
        audits.append(audit)
    return audits


def _domains_and_causes(graph, library_graph, x, plan, own_plan, dtd_plan, claimed_dtd, profile, lib, own, dtd,
                        own_bounds, f_c, input_domain) -> dict[str, dict]:
    """Per linear node (by name): its rule's domain, the inputs outside it and the relevance they
    carry, the generalisation the DTD reference used, whether the library applies a rule outside
    its domain, and the causes of its departure from DTD (:mod:`lrp_num.audit.findings`)."""
    from lrp_num.audit import findings as found

    activations = graph.forward_trace(np.asarray(x, dtype=np.float64))
    names = tensor_names(graph)
    own_rules = {library_graph.nodes[k].name: choice.rule for k, choice in own_plan.items()}
    own_terms = found.trace_terms(own.results, lambda trace: trace.name)
    dtd_terms = found.trace_terms(dtd.results, lambda trace: trace.name)
    scale = np.where(f_c != 0, np.abs(f_c), 1.0)
    linear = [k for k, node in enumerate(graph.nodes) if isinstance(node.operation, (Dense, Conv2d)) and k in plan]
    first = min(linear, default=None)
    result = {}
    for k in linear:
        node = graph.nodes[k]
        a = activations[node.inputs[0]].reshape(len(x), -1)
        claimed_rule = claimed_dtd[k].rule
        mask = found.outside_domain(claimed_rule, a, input_domain, k == first)
        own_rule = own_rules.get(node.name, claimed_rule)
        applied = found.outside_domain(own_rule, a, input_domain, k == first)
        relevance = np.asarray(lib.nodes.get(names[node.inputs[0]], np.zeros(a.shape)), dtype=np.float64)
        relevance = relevance.reshape(len(x), -1)
        carried = np.where(mask, np.abs(relevance), 0.0).sum(axis=1) / scale
        mine, theirs = own_terms.get(node.name), dtd_terms.get(node.name)
        output = names[node.name]
        threshold = float(np.max(own_bounds[output].sum(axis=1) / scale)) + 1e-12 if output in own_bounds else 1e-12
        causes = found.causes(profile.conventions, own_rule, dtd_plan[k].rule,
                              (mine["bias"], mine["stabiliser"]) if mine else None,
                              (theirs["bias"], theirs["stabiliser"]) if theirs else None,
                              mine["absorbed"] / scale if mine else None,
                              theirs["absorbed"] / scale if theirs else None,
                              mask, mine["relevance_in"] if mine else None, theirs["relevance_in"] if theirs else None,
                              f_c, threshold)
        result[node.name] = dict(domain=found.domain_of(claimed_rule), outside_domain=int(mask.sum()),
                                 outside_relevance=float(carried.max()) if carried.size else 0.0,
                                 generalisation=dtd_plan[k].rule if dtd_plan[k].rule != claimed_rule else None,
                                 applied_outside_domain=bool(applied.any()), causes=causes)
    return result


def _suspects(graph, twin_consumers: Mapping[str, list[str]], audits: list[NodeAudit]
              ) -> tuple[NodeAudit | None, NodeAudit | None, list[str]]:
    """(the deviating node output with the largest deviation relative to its relevance, the
    deviating output nearest the graph output, the nodes reading that one whose own output
    matches: where the deviation must start)."""
    by_tensor = {a.tensor: a for a in audits}
    order = [graph.input_name] + [node.name for node in graph.nodes]
    names = tensor_names(graph)
    deviating = [by_tensor[names[n]] for n in order if names[n] in by_tensor
                 and by_tensor[names[n]].own_over_bound > 1]
    if not deviating:
        return None, None, []
    worst, start = max(deviating, key=lambda a: a.own_relative), deviating[-1]
    readers = []
    for reader in twin_consumers.get(start.tensor, []):
        audit = by_tensor.get(reader) or by_tensor.get(names.get(reader, reader))
        if audit is None or audit.own_over_bound <= 1:
            readers.append(reader)
    return worst, start, readers


def _verdicts(name: str, profile: Profile, graph, consumers, audits: list[NodeAudit], lib: LibraryRun,
              own: NodeRelevance, dtd: NodeRelevance, own_bounds, dtd_bounds, f_c: np.ndarray
              ) -> tuple[list[str], list[str], bool]:
    """(lines, failures, whether the library departs from DTD anywhere)."""
    from lrp_num.audit.compare import _cause_lines, _domain_lines

    lines, failures = [], []
    first, start, readers = _suspects(graph, consumers, audits)
    if first is None:
        worst = max((a.own_relative for a in audits), default=0.0)
        lines.append(f"{name} agrees with its own convention ({profile.name}) at every node: max relative "
                     f"deviation {worst:.1e}, within the bound")
    else:
        failures.append("deviates-from-convention")
        where = f" (read by {', '.join(readers)}, whose output matches)" if readers else ""
        lines.append(f"{name} deviates from its own convention ({profile.name}) most at the output of node "
                     f"{first.node}: relative deviation {first.own_relative:.3g} of that node's relevance "
                     f"(max abs {first.own_deviation:.3g}, bound {first.bound:.3g}); it starts at the output of "
                     f"node {start.node}{where}, nodes nearer the output match")
    at = lambda a: f"node {a.node}"  # noqa: E731
    domain, outside = _domain_lines(name, list(reversed(audits)), at)
    lines += domain
    if outside:
        failures.append("outside-domain")
    at_input = next((a for a in audits if a.tensor == graph.input_name), None)
    dtd_bad = [a for a in audits if a.dtd_over_bound > 1]
    if not dtd_bad:
        lines.append(f"{name} agrees with the DTD derivation at every node (within the bound)")
    else:
        worst = max(dtd_bad, key=lambda a: a.dtd_relative)
        shown = at_input or worst
        lines.append(f"{name} departs from DTD by {shown.dtd_deviation:.3g} (relative {shown.dtd_relative:.3g}) "
                     f"at the input; most at the output of node {worst.node} (relative {worst.dtd_relative:.3g})")
        lines += _cause_lines(list(reversed(audits)), at)
    # the additions: conservation through each Add node, and equal shares
    adds = [a for a in audits if a.addend_sum_library is not None]
    for a in adds:
        if abs(a.addend_sum_library - a.addend_sum_profile) > a.addend_bound \
                or np.isnan(a.addend_sum_library) != np.isnan(a.addend_sum_profile):
            failures.append("conservation")
            lines.append(f"node {a.node}: sum of addend relevance {a.addend_sum_library:.2f} x the node's "
                         f"relevance (its convention {a.addend_sum_profile:.2f}, DTD {a.addend_sum_dtd:.2f})")
        if a.same_addends:
            failures.append("deviates-from-convention")
            lines.append(f"node {a.node}: every addend receives the same relevance, where its convention "
                         f"splits R_k = a_k / stab(sum a) R")
    missing = [node.name for node in graph.nodes if isinstance(node.operation, Add)
               and node.name not in {a.node for a in adds}]
    if adds and all(abs(a.addend_sum_library - a.addend_sum_profile) <= a.addend_bound
                    and not a.same_addends for a in adds):
        worst = max(adds, key=lambda a: abs(a.addend_sum_library - 1.0))
        lines.append(f"Add nodes conserve as its convention implies: sum_k R_k / R = "
                     f"{worst.addend_sum_library:.6g} at worst (node {worst.node})")
    if missing:
        lines.append(f"note: {name} exposes no per-addend relevance at node(s) {', '.join(missing)}")
    # conservation from the output to the input
    scale = np.where(f_c != 0, np.abs(f_c), 1.0)
    absorbed = {key: (f_c - _sums(values.nodes[graph.input_name])) / scale
                for key, values in (("library", lib), ("profile", own), ("dtd", dtd))}
    gap = np.abs(absorbed["library"] - absorbed["profile"])
    allowed = own_bounds[graph.input_name].sum(axis=1) / scale + 1e-12
    s = int(np.argmax(gap - allowed))
    if gap[s] > allowed[s]:
        failures.append("conservation")
        lines.append(f"conservation broken: {name} absorbs {absorbed['library'][s]:+.3g} f_c between output and "
                     f"input (sample {s}), its convention {absorbed['profile'][s]:+.3g}, DTD {absorbed['dtd'][s]:+.3g}")
    else:
        lines.append(f"conservation as its convention implies: absorbs {absorbed['library'][s]:+.3g} f_c "
                     f"(DTD {absorbed['dtd'][s]:+.3g})")
    n_lib = _negatives(lib.relevance, own_bounds[graph.input_name])
    n_own = _negatives(own.nodes[graph.input_name], own_bounds[graph.input_name])
    n_dtd = _negatives(dtd.nodes[graph.input_name], dtd_bounds[graph.input_name])
    if n_lib > n_own:
        failures.append("positivity")
        lines.append(f"positivity: {n_lib} negative input relevances, its convention {n_own} (DTD {n_dtd})")
    else:
        lines.append("positivity: no more negative input relevances than its convention")
    return lines, failures, bool(dtd_bad)


def audit_graph_library(graph, x: np.ndarray, library: str, profile: Profile, rule: str | None,
                        composite: str | Composite | None, targets: np.ndarray, parameters: Mapping,
                        input_domain, dps: int, tolerance: float | None,
                        overrides: Mapping[str, Callable] | None = None, addition: str | None = None,
                        dtype: str = "float64", strict: bool = False):
    """The graph half of :func:`lrp_num.audit.compare.audit_library` (same arguments).

    ``overrides`` maps node names to library rule factories; ``addition`` writes the twin's Add
    nodes another way than the library's users do (``"functional"``: the plain ``+`` that a model
    has before conversion).
    """
    from lrp_num.audit.compare import AuditReport, bounded_tolerance, conclude, generalised_plan, pointers
    from lrp_num.audit.findings import outside_domain
    from lrp_num.audit.tolerance import dtype_name, unit_roundoff
    from lrp_num.io.torch_bridge import to_torch

    plan = graph_plan(graph, rule, composite, dict(parameters or {}), input_domain is not None)
    library_graph = profile.library_graph(graph) if profile.library_graph else graph
    own_plan, claimed_dtd = mapped_graph_plans(profile, graph, library_graph, plan)
    activations = graph.forward_trace(np.asarray(x, dtype=np.float64))
    linear = [k for k, node in enumerate(graph.nodes) if isinstance(node.operation, (Dense, Conv2d)) and k in plan]
    masks = {k: outside_domain(claimed_dtd[k].rule, activations[graph.nodes[k].inputs[0]].reshape(len(x), -1),
                               input_domain, k == min(linear)) for k in linear}
    dtd_plan = generalised_plan(claimed_dtd, masks)
    top = top_relevance(graph.forward(x), targets)
    seconds = {}
    start = time.perf_counter()
    twin = to_torch(graph, addition=addition or profile.addition)
    if dtype == "float32":
        twin = twin.float()
    if library == "zennit":
        from lrp_num.audit.zennit_adapter import run_zennit_graph

        lib = run_zennit_graph(graph, twin, x, plan, top, input_domain, overrides)
    else:
        from lrp_num.audit.captum_adapter import run_captum_graph

        lib = run_captum_graph(graph, twin, x, plan, targets, overrides)
    seconds["library"] = time.perf_counter() - start
    run_dtype = np.asarray(lib.relevance).dtype
    run_dtype = run_dtype if np.issubdtype(run_dtype, np.floating) else np.dtype(np.float64)
    start = time.perf_counter()
    own = reference_nodes(library_graph, x, own_plan, top, profile.conventions, input_domain, dps)
    seconds["reference_profile"] = time.perf_counter() - start
    start = time.perf_counter()
    dtd = reference_nodes(graph, x, dtd_plan, top, DTD, input_domain, dps)
    seconds["reference_dtd"] = time.perf_counter() - start
    f_c = _sums(top)
    model_error = profile.model_error if library_graph is not graph else 0.0
    own_bounds = node_bounds(library_graph, own, run_dtype, tolerance, model_error)
    dtd_bounds = node_bounds(graph, dtd, run_dtype, tolerance)
    same_tolerance = tolerance if tolerance is not None else 64 * unit_roundoff(run_dtype)
    audits = _node_audits(graph, plan, profile, lib, own, dtd, own_bounds, dtd_bounds, same_tolerance)
    extra = _domains_and_causes(graph, library_graph, x, plan, own_plan, dtd_plan, claimed_dtd, profile, lib, own,
                                dtd, own_bounds, f_c, input_domain)
    for audit in audits:
        node_name = audit.node.split(" (+")[0]
        for key, value in extra.get(node_name, {}).items():
            setattr(audit, key, value)
    verdicts, failures, departs = _verdicts(lib.library, profile, graph, twin.consumers, audits, lib, own, dtd,
                                            own_bounds, dtd_bounds, f_c)
    method = f"rule {rule}" if rule else f"composite {composite if isinstance(composite, str) else composite.name}"
    report = AuditReport(lib.library, profile.name, method, len(x), [], verdicts, _sums(lib.relevance).tolist(),
                         f_c.tolist(), seconds, True, nodes=audits,
                         tolerance=bounded_tolerance(run_dtype, tolerance, model_error),
                         dtype=dtype_name(run_dtype), strict=strict, departs_from_dtd=departs)
    pointers(report, audits, lambda a: a.tensor)
    return conclude(report, failures)
