"""LXT against the mpmath reference, node by node (``lrp audit --library lxt``).

The torch :class:`~lrp_num.io.torch_vit.ViT` and its graph twin (:func:`~lrp_num.io.torch_vit.vit_graph`)
compute the same function. The reference (:func:`lrp_num.audit.graph_compare.reference_nodes`, the
rules by their definitions in mpmath) explains the graph under the plan the variant's profile
states (:func:`reference_plan`); the LXT run (:func:`~lrp_num.audit.lxt_adapter.run_lxt`) gives
the relevance arriving at every op's inputs. The relevance at a tensor is what all the ops
reading it pass back, summed; :data:`TENSOR_MAP` pairs LXT's tensors with the graph's:

=========================  ==============================  =====================================
LXT op whose output        graph node                      layout
=========================  ==============================  =====================================
``input``                  the input                       (C, H, W)
``pos_add``                ``tokens``                      (T, D)
``blocks.k.norm1``, ...    the same name                   (T, D) or (T, hidden)
``blocks.k.attn.q``        ``blocks.k.attn.q_heads``       (heads, T, d), as read by ``q_scaled``
``blocks.k.attn.k``        ``blocks.k.attn.k_heads``       LXT reads k^T: the last two axes swapped
``blocks.k.attn.v``        ``blocks.k.attn.v_heads``       (heads, T, d)
``blocks.k.attn.scores``   ``blocks.k.attn.scores``        (heads, T, T), the softmax's input
``blocks.k.attn.softmax``  ``blocks.k.attn.attention``     (heads, T, T), the product A V's input
``blocks.k.attn.mix``      ``blocks.k.attn.merged``        (T, D), the projection's input
``blocks.k.attn.proj``     ``blocks.k.attn.out``           (T, D)
=========================  ==============================  =====================================

A deviation max |R_LXT - R_ref| counts where it exceeds the rounding bound of the dtype LXT ran
in (:func:`lrp_num.audit.graph_compare.node_bounds`, the zennit and captum audits' bound) plus
``profile.model_error`` max |R_ref| for the stabilisers LXT places where the graph has no node
(the mean pooling's epsilon, which the graph folds into the head). The verdict names the first
tensor from the output down whose relevance deviates and the op(s) whose rule produced it (the
ops reading that tensor): their output still matched, so the deviation starts in their rule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping

import numpy as np

from lrp_num.engine.composites import LayerRule
from lrp_num.errors import LRPError

#: LXT op name suffix -> (graph node suffix, swap the last two axes)
_ATTENTION_MAP = {"q": ("q_heads", False), "k": ("k_heads", True), "v": ("v_heads", False),
                  "scores": ("scores", False), "softmax": ("attention", False), "mix": ("merged", False),
                  "proj": ("out", False)}


@dataclass
class TensorComparison:
    """One tensor: LXT's relevance there against the reference's.

    ``lxt_tensor``: the LXT op whose output it is; ``graph_tensor``: the graph node; ``rule_of``:
    the LXT ops (with their kind) reading it, whose rules produce its relevance; ``deviation``
    max |R_LXT - R_ref|, ``relative`` that over max |R_ref|, ``over_bound`` the largest ratio of
    the deviation to its bound (> 1: deviates).
    """

    lxt_tensor: str
    graph_tensor: str
    rule_of: list[str]
    deviation: float
    relative: float
    over_bound: float
    deviates: bool


@dataclass
class ReferenceComparison:
    """LXT against the reference on one batch, from the output down."""

    reference_plan: str
    dtype: str
    model_error: float
    conventions: list[str]
    tensors: list[TensorComparison] = field(default_factory=list)
    #: compared with LXT's conventions restated (False: against our derivation as it stands)
    with_conventions: bool = True
    #: the tensor where the comparison stopped (``profile.reference_stops_at``), None if it reached the input
    stopped_at: str | None = None

    @property
    def first_deviating(self) -> TensorComparison | None:
        return next((row for row in self.tensors if row.deviates), None)

    @property
    def verdict(self) -> str:
        return "deviates" if self.first_deviating is not None else "matches"

    def to_dict(self) -> dict:
        data = asdict(self)
        first = self.first_deviating
        data["with_conventions"] = self.with_conventions
        data["verdict"] = self.verdict
        data["first_deviating"] = None if first is None else first.graph_tensor
        return data


def tensor_map(graph) -> dict[str, tuple[str, bool]]:
    """LXT tensor (the op producing it) -> (graph node, swap the last two axes); see the module docstring."""
    names = {node.name for node in graph.nodes}
    mapping = {"input": (graph.input_name, False), "pos_add": ("tokens", False)}
    for name in names:
        parts = name.split(".")
        if len(parts) == 4 and parts[2] == "attn":
            continue
        if name not in ("flatten", "patch_embed", "tokens", "pooled", "head"):
            mapping[name] = (name, False)
    for name in names:
        if name.endswith(".attn.q"):
            block = name[: -len(".q")]
            for lxt, (graph_name, swap) in _ATTENTION_MAP.items():
                mapping[f"{block}.{lxt}"] = (f"{block}.{graph_name}", swap)
    return mapping


def lxt_tensor_relevance(run, mapping: Mapping[str, tuple[str, bool]]) -> tuple[dict[str, np.ndarray],
                                                                              dict[str, list[str]]]:
    """Per mapped LXT tensor: the relevance all its readers pass back (in the graph's layout),
    and the readers as ``name (kind)``."""
    relevance: dict[str, np.ndarray] = {"input": np.asarray(run.relevance, dtype=np.float64)}
    readers: dict[str, list[str]] = {"input": []}
    for record in run.ops:
        for source, value in zip(record.inputs, record.input_relevance):
            if source not in mapping:
                continue
            readers.setdefault(source, []).append(f"{record.name} ({record.kind})")
            if source == "input":
                continue
            value = np.swapaxes(value, -1, -2) if mapping[source][1] else value
            relevance[source] = relevance[source] + value if source in relevance else np.array(value, dtype=np.float64)
    return relevance, readers


def reference_plan(graph, profile) -> dict[int, LayerRule]:
    """Node index -> the reference's rule under ``profile.reference`` (a registered composite's
    definition, :data:`lrp_num.reference.composites.COMPOSITE_DEFINITIONS`) with the profile's
    per-kind conventions (``profile.reference_rules``: "linear", "matmul", "add", "norm", "patch_embed")."""
    from dataclasses import replace

    from lrp_num.reference.composites import COMPOSITE_DEFINITIONS, plan_nodes

    if profile.reference is None:
        raise LRPError(f"the reference has no composite for LXT {profile.name}")
    definition = COMPOSITE_DEFINITIONS[profile.reference]
    rules = dict(profile.reference_rules)
    if "linear" in rules:
        definition = replace(definition, dense=rules["linear"], conv=rules["linear"])
    if "matmul" in rules:
        definition = replace(definition, attention={**definition.attention, "matmul": rules["matmul"]})
    if "add" in rules:
        definition = replace(definition, add=rules["add"])
    if "norm" in rules:
        definition = replace(definition, norm=rules["norm"])
    if "patch_embed" in rules:
        definition = replace(definition, node_rules={**definition.node_rules, "patch_embed": rules["patch_embed"]})

    class _Node:
        def __init__(self, index, node):
            self.index, self.name, self.operation, self.inputs = index, node.name, node.operation, node.inputs

    nodes = [_Node(k, node) for k, node in enumerate(graph.nodes)]
    plan = plan_nodes(nodes, graph.input_name, definition, False)
    return {k: LayerRule(rule, dict(parameters)) for k, (rule, parameters) in plan.items()}


def compare_with_reference(model, x: np.ndarray, run, top: np.ndarray, profile, dtype, dps: int = 30,
                           tolerance: float | None = None, conventions: bool = True) -> ReferenceComparison:
    """LXT's ``run`` on ``model`` at ``x`` against the reference on the graph twin (module docstring).

    ``top``: the output relevance LXT started from, (batch, classes); ``dtype``: the dtype LXT ran
    in (its rounding bound); ``tolerance``: a fixed relative bound instead (x max |R_ref|);
    ``conventions``: the reference with LXT's conventions restated (``profile.reference_rules``,
    ``profile.model_error``), or False: our derivation as it stands (the composite
    ``profile.reference``, no model error; ``lrp audit --strict``).
    """
    from dataclasses import replace

    if not conventions:
        profile = replace(profile, reference_rules={}, model_error=0.0,
                          conventions=(f"our derivation: the {profile.reference} composite as defined, without "
                                       "LXT's conventions",))
    from lrp_num.audit.graph_compare import node_bounds, reference_nodes
    from lrp_num.audit.tolerance import dtype_name
    from lrp_num.engine.conventions import DTD
    from lrp_num.io.torch_vit import vit_graph

    graph = getattr(model, "graph", None)  # a graph's ops twin (lrp_num.io.torch_ops_twin) carries its graph
    if graph is None:
        graph, mapping = vit_graph(model), None
    else:
        from lrp_num.io.torch_ops_twin import ops_tensor_map

        mapping = ops_tensor_map(graph)
        # the twin runs every Dense as a linear op (LXT's linear eps), a node named patch_embed included:
        # the ViT's convolution convention does not apply
        profile = replace(profile, reference_rules={kind: rule for kind, rule in profile.reference_rules.items()
                                                    if kind != "patch_embed"})
    plan = reference_plan(graph, profile)
    reference = reference_nodes(graph, np.asarray(x, dtype=np.float64), plan, np.asarray(top, dtype=np.float64),
                                DTD, dps=dps)
    bounds = node_bounds(graph, reference, dtype, tolerance, profile.model_error)
    mapping = tensor_map(graph) if mapping is None else mapping
    relevance, readers = lxt_tensor_relevance(run, mapping)
    order = [node.name for node in reversed(graph.nodes)] + [graph.input_name]
    back = {graph_name: lxt for lxt, (graph_name, _) in mapping.items()}
    comparison = ReferenceComparison(profile.reference, dtype_name(dtype), profile.model_error,
                                     list(profile.conventions), with_conventions=conventions)
    for graph_name in order:
        lxt = back.get(graph_name)
        if lxt is None or lxt not in relevance:
            continue
        if any(reader.endswith(f"({kind})") for kind in profile.reference_stops_at for reader in readers.get(lxt, [])):
            comparison.stopped_at = graph_name
            break
        ours = np.asarray(reference.nodes[graph_name], dtype=np.float64)
        theirs = relevance[lxt].reshape(ours.shape)
        factor = next((value for suffix, value in profile.relevance_scale.items() if graph_name.endswith(suffix)), 1.0)
        theirs = theirs / factor
        flat_gap = np.abs(theirs - ours).reshape(len(ours), -1)
        deviation = float(flat_gap.max())
        scale = float(np.max(np.abs(ours)))
        bound = bounds[graph_name]
        ratio = np.divide(flat_gap, bound, out=np.where(flat_gap > 0, np.inf, 0.0), where=bound > 0)
        over = float(ratio.max())
        comparison.tensors.append(TensorComparison(lxt, graph_name, readers.get(lxt, []), deviation,
                                                   deviation / scale if scale > 0 else deviation, over, over > 1.0))
    return comparison


def render_comparison(comparison: ReferenceComparison) -> list[str]:
    """Report lines: the tensors from the output down, the convention notes, the first deviation."""
    how = "with LXT's conventions" if comparison.with_conventions else "as derived, without LXT's conventions"
    lines = ["", f"against the mpmath reference (composite {comparison.reference_plan} {how}; "
                 f"bound: {comparison.dtype} rounding + {comparison.model_error:.0e} max|R_ref|)",
             f"{'graph tensor':28s} {'LXT tensor':24s} {'max|dR|':>10s} {'relative':>10s} {'/bound':>9s}"]
    for row in comparison.tensors:
        lines.append(f"{row.graph_tensor:28s} {row.lxt_tensor:24s} {row.deviation:10.2e} {row.relative:10.2e} "
                     f"{row.over_bound:9.2g}{'  DEVIATES' if row.deviates else ''}")
    lines.extend(f"convention: {text}" for text in comparison.conventions)
    if comparison.stopped_at is not None:
        lines.append(f"reference: not compared from {comparison.stopped_at} down (no reference rule there)")
    first = comparison.first_deviating
    label = "reference" if comparison.with_conventions else "derivation"
    if first is None:
        lines.append(f"{label}: LXT matches at every node compared")
    else:
        lines.append(f"{label}: LXT first deviates at {first.graph_tensor} (relative {first.relative:.2e}, "
                     f"{first.over_bound:.3g} x the bound), produced by "
                     f"{', '.join(first.rule_of) or 'the output'}")
    return lines


__all__ = ["ReferenceComparison", "TensorComparison", "compare_with_reference", "lxt_tensor_relevance",
           "reference_plan", "render_comparison", "tensor_map"]
