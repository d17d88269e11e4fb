"""The audit on graph models (residual and branching networks), node by node.

For every node of the (folded) graph the audit compares the relevance arriving at the node's
output, summed over the nodes that read it, as the library computed it, with the reference
under the library's own profile and under the deep Taylor derivation; the input relevance is
the row ``input``. A node's output is the torch tensor of its module (a folded BatchNorm's
output for a linear node it was folded into). For every Add node it also checks conservation
through the node, sum_k R_k against the node's relevance R, and whether every addend received
the same relevance where the convention splits R_k = a_k / stab(sum a) R. A library whose
sum is invisible to its rules (a functional ``+``) copies R to each addend: the ratio is K.

Deviations are max |R_lib - R_ref| and that divided by max |R_ref| at the node and over the batch.
A node's rule shows at its inputs: the verdict names the deviating tensor nearest the output
and the nodes reading it whose own output still matches.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
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
    addend the same relevance where its profile does not.
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

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class NodeRelevance:
    """Relevance at the output of every node (by torch tensor name), at the input, and per addend."""

    nodes: dict[str, np.ndarray]
    addends: dict[str, list[np.ndarray]]


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
    return NodeRelevance(nodes, addends)


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


def _negatives(relevance: np.ndarray, tolerance: float) -> int:
    scale = float(np.max(np.abs(relevance))) if relevance.size else 0.0
    return int(np.count_nonzero(relevance < -tolerance * scale))


def _same(addends: list[np.ndarray], tolerance: float) -> bool:
    scale = max(float(np.max(np.abs(a))) if a.size else 0.0 for a in addends)
    return scale > 0 and all(np.max(np.abs(a - addends[0])) <= max(tolerance, 1e-12) * scale for a in addends[1:])


def _node_audits(graph, plan, profile: Profile, lib: LibraryRun, own: NodeRelevance, dtd: NodeRelevance,
                 tolerance: float) -> list[NodeAudit]:
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
        audit = NodeAudit(name if name == tensor else f"{name} (+{tensor})", tensor, operation,
                          choice.rule if choice else None, library_rule, own_abs, own_rel, dtd_abs, dtd_rel)
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
            audit.same_addends = _same(shares, tolerance) and not _same(own.addends[name], tolerance)
        audits.append(audit)
    return audits


def _suspects(graph, twin_consumers: Mapping[str, list[str]], audits: list[NodeAudit], tolerance: float
              ) -> tuple[NodeAudit | None, list[str]]:
    """The deviating node output nearest the graph output, and the nodes reading it whose own
    output matches (where the deviation must start)."""
    by_tensor = {a.tensor: a for a in audits}
    order = [graph.input_name] + [node.name for node in graph.nodes]
    names = tensor_names(graph)
    deviating = [by_tensor[names[n]] for n in order if names[n] in by_tensor
                 and by_tensor[names[n]].own_relative > tolerance]
    if not deviating:
        return None, []
    first = deviating[-1]
    readers = []
    for reader in twin_consumers.get(first.tensor, []):
        audit = by_tensor.get(reader) or by_tensor.get(names.get(reader, reader))
        if audit is None or audit.own_relative <= tolerance:
            readers.append(reader)
    return first, readers


def _verdicts(name: str, profile: Profile, graph, consumers, audits: list[NodeAudit], lib: LibraryRun,
              own: NodeRelevance, dtd: NodeRelevance, f_c: np.ndarray, tolerance: float) -> tuple[list[str], bool]:
    lines, ok = [], True
    first, readers = _suspects(graph, consumers, audits, tolerance)
    if first is None:
        worst = max((a.own_relative for a in audits), default=0.0)
        lines.append(f"{name} matches its own convention ({profile.name}) at every node: max relative "
                     f"deviation {worst:.1e}")
    else:
        ok = False
        where = f" (read by {', '.join(readers)}, whose output matches)" if readers else ""
        lines.append(f"{name} deviates from its own convention ({profile.name}) at the output of node "
                     f"{first.node}{where}: relative deviation {first.own_relative:.3g} (max abs "
                     f"{first.own_deviation:.3g}); nodes nearer the output match")
    at_input = next((a for a in audits if a.tensor == graph.input_name), None)
    dtd_bad = [a for a in audits if a.dtd_relative > tolerance]
    if not dtd_bad:
        lines.append(f"{name} agrees with the DTD derivation within {tolerance:.0e} at every node")
    elif at_input is not None:
        lines.append(f"{name} deviates from DTD by {at_input.dtd_deviation:.3g} (relative "
                     f"{at_input.dtd_relative:.3g}) at the input")
    # the additions: conservation through each Add node, and equal shares
    adds = [a for a in audits if a.addend_sum_library is not None]
    for a in adds:
        if abs(a.addend_sum_library - a.addend_sum_profile) > max(tolerance, 1e-12) \
                or np.isnan(a.addend_sum_library) != np.isnan(a.addend_sum_profile):
            ok = False
            lines.append(f"node {a.node}: sum of addend relevance {a.addend_sum_library:.2f} x the node's "
                         f"relevance (its convention {a.addend_sum_profile:.2f}, DTD {a.addend_sum_dtd:.2f})")
        if a.same_addends:
            ok = False
            lines.append(f"node {a.node}: every addend receives the same relevance, where its convention "
                         f"splits R_k = a_k / stab(sum a) R")
    missing = [node.name for node in graph.nodes if isinstance(node.operation, Add)
               and node.name not in {a.node for a in adds}]
    if adds and all(abs(a.addend_sum_library - a.addend_sum_profile) <= max(tolerance, 1e-12)
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
    s = int(np.argmax(gap))
    if gap[s] > max(tolerance, 1e-12):
        ok = False
        lines.append(f"conservation broken: {name} absorbs {absorbed['library'][s]:+.3g} f_c between output and "
                     f"input (sample {s}), its convention {absorbed['profile'][s]:+.3g}, DTD {absorbed['dtd'][s]:+.3g}")
    else:
        lines.append(f"conservation as its convention implies: absorbs {absorbed['library'][s]:+.3g} f_c "
                     f"(DTD {absorbed['dtd'][s]:+.3g})")
    n_lib, n_dtd = _negatives(lib.relevance, tolerance), _negatives(dtd.nodes[graph.input_name], tolerance)
    lines.append(f"positivity: {n_lib} negative input relevances (DTD {n_dtd})" if n_lib > n_dtd
                 else "positivity: no more negative input relevances than DTD")
    return lines, ok


def _outside_domain_notes(graph, x: np.ndarray, plan: Mapping[int, LayerRule]) -> list[str]:
    """A note for every node where a rule derived for the orthant (zplus, gamma: the
    reference's table of domains) meets negative inputs: its reference values there evaluate
    the definition outside the domain it is derived for, where lrp_num.explain refuses it."""
    from lrp_num.reference import ROOT_POINT_RULES

    activations = graph.forward_trace(np.asarray(x, dtype=np.float64))
    notes = []
    for k in sorted(plan):
        node, rule = graph.nodes[k], plan[k].rule
        if ROOT_POINT_RULES.get(rule) == "orthant":
            n_negative = int(np.count_nonzero(activations[node.inputs[0]] < 0))
            if n_negative:
                notes.append(f"note: rule {rule} at node {node.name} is derived for x >= 0, but "
                             f"{n_negative} of its input values are negative: its reference values "
                             f"there evaluate the definition outside its domain (lrp_num.explain "
                             f"raises DomainError)")
    return notes


def audit_graph_library(graph, x: np.ndarray, library: str, profile: Profile, rule: str | None,
                        composite: str | Composite | None, targets: np.ndarray, parameters: Mapping,
                        input_domain, dps: int, tolerance: float,
                        overrides: Mapping[str, Callable] | None = None, addition: str | None = None):
    """The graph half of :func:`lrp_num.audit.compare.audit_library` (same arguments).

    ``overrides`` maps node names to library rule factories; ``addition`` writes the twin's Add
    nodes another way than the library's users do (``"functional"``: the plain ``+`` that a model
    has before conversion).
    """
    from lrp_num.audit.compare import AuditReport
    from lrp_num.io.torch_bridge import to_torch

    plan = graph_plan(graph, rule, composite, dict(parameters or {}), input_domain is not None)
    library_graph = profile.library_graph(graph) if profile.library_graph else graph
    own_plan, dtd_plan = mapped_graph_plans(profile, graph, library_graph, plan)
    top = top_relevance(graph.forward(x), targets)
    seconds = {}
    start = time.perf_counter()
    twin = to_torch(graph, addition=addition or profile.addition)
    if library == "zennit":
        from lrp_num.audit.zennit_adapter import run_zennit_graph

        lib = run_zennit_graph(graph, twin, x, plan, top, input_domain, overrides)
    else:
        from lrp_num.audit.captum_adapter import run_captum_graph

        lib = run_captum_graph(graph, twin, x, plan, targets, overrides)
    seconds["library"] = time.perf_counter() - start
    start = time.perf_counter()
    own = reference_nodes(library_graph, x, own_plan, top, profile.conventions, input_domain, dps)
    seconds["reference_profile"] = time.perf_counter() - start
    start = time.perf_counter()
    dtd = reference_nodes(graph, x, dtd_plan, top, DTD, input_domain, dps)
    seconds["reference_dtd"] = time.perf_counter() - start
    f_c = _sums(top)
    audits = _node_audits(graph, plan, profile, lib, own, dtd, tolerance)
    verdicts, ok = _verdicts(lib.library, profile, graph, twin.consumers, audits, lib, own, dtd, f_c, tolerance)
    verdicts += list(dict.fromkeys(_outside_domain_notes(library_graph, x, own_plan)
                                   + _outside_domain_notes(graph, x, dtd_plan)))
    method = f"rule {rule}" if rule else f"composite {composite if isinstance(composite, str) else composite.name}"
    return AuditReport(lib.library, profile.name, method, len(x), [], verdicts, _sums(lib.relevance).tolist(),
                       f_c.tolist(), seconds, ok, nodes=audits)
