"""Which rule each node of a network gets, planned by the reference itself.

The reference does not ask the engine's planner (:meth:`lrp_num.engine.composites.Composite.plan_graph`)
which rule a node uses: a planner bug there (say z+ instead of z^B at the input) would then be
copied into the reference and never seen. It reads each registered composite from its written
definition, restated here as data (:data:`COMPOSITE_DEFINITIONS`), and walks the network's nodes
with its own code:

* Dense and Conv2d nodes take the composite's rule for their position and type; the *first*
  linear nodes are those with no Dense or Conv2d node on any path from the input (one in a
  chain), where the input domain is known: a box [l, h] or R^n;
* sum, average, adaptive and global average pooling and ChannelAffine nodes (a batch norm that
  cannot be folded) take the z-rule ``lrp0``: a neuron with one input passes R_j on unchanged
  under any root-point rule, and pooling with unit weights splits in proportion to x_i;
* Add nodes take the composite's Add rule (``add_z``, the proportional split, by default);
* max pooling is winner-take-all (no entry in the plan).

The definitions (Montavon et al. 2017, Pattern Recognition 65, Sec. 5; Kohlbrenner et al. 2020
for epsilon-plus and epsilon-gamma-box; Bach et al. 2015 for alpha-beta):

=====================  =========================  ==================  ==================
composite              first linear node          other Dense         other Conv2d
=====================  =========================  ==================  ==================
``deep-taylor``        z^B on a box, w^2 on R^n   z+                  z+
``epsilon-plus``       (as the others)            epsilon 0.25        z+
``epsilon-gamma-box``  z^B (needs the box)        epsilon 0.25        gamma 0.25
``alpha2-beta1``       (as the others)            alpha 2, beta 1     alpha 2, beta 1
``attnlrp``            (as the others)            epsilon 1e-6        epsilon 1e-6
``cplrp``              (as the others)            epsilon 1e-6        epsilon 1e-6
=====================  =========================  ==================  ==================

``attnlrp`` and ``cplrp`` differ in their matrix products: AttnLRP's epsilon then uniform
(Achtibat et al. 2024, Prop. 3.3), CP-LRP's attention weights held constant (``matmul_cp``, Ali
et al. 2022, Sec. 3).

A composite passed as an object (not a name) is its own definition: its ``choose(index, layer,
is_first_linear, input_is_box)`` and ``add`` are read node by node with the walk above, and an
object that defines its plan outright (a ``plan_graph`` or ``plan`` of its own, as the audit's
fixed plans do) is taken as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from lrp_num.errors import MissingBoundsError, UnknownRuleError
from lrp_num.layers import (AdaptiveAvgPool2d, Add, AvgPool2d, ChannelAffine, Conv2d, Dense, MatMul,
                            MaxPool2d, Multiply, Softmax, SumPool2d)
from lrp_num.layers.nonlinear import NONLINEAR
from lrp_num.layers.normalization import NORMALIZATION

#: the rule of pooling and ChannelAffine nodes: the z-rule (see the module docstring)
Z_RULE = "lrp0"
#: the default rule of an Add node: the proportional split of the unit-weight neuron
ADD_RULE = "add_z"
#: the default rules of element-wise nonlinearities (the identity rule) and of LayerNorm /
#: RMSNorm (sigma held constant, CP-LRP), restated from their definitions
POINTWISE_RULE = "identity_nonlinear"
NORM_RULE = "norm_cp"

Choice = tuple[str, Mapping[str, float]]
#: the attention nodes' rules as AttnLRP defines them (Achtibat et al. 2024, ICML, Prop. 3.1 and
#: 3.3): softmax by its tangent at x with a bias, element-wise products uniform (Shapley),
#: matrix products LRP-epsilon (1e-6) on the sum over k, then uniform
ATTENTION_DEFINITION: Mapping[str, Choice] = {
    "softmax": ("softmax", {}), "product": ("product_uniform", {}),
    "matmul": ("matmul_epsilon", {"epsilon": 1e-6})}
_ATTENTION_KEYS = ((Softmax, "softmax"), (Multiply, "product"), (MatMul, "matmul"))


@dataclass(frozen=True)
class CompositeDefinition:
    """A composite as written: the rule of the first linear nodes and of the others, by type.

    ``first_on_box`` / ``first_on_rn``: the rule of the first linear nodes when the input
    domain is a box, or R^n (None: the same as any other node of its type; ``first_on_rn`` of
    "needs box" raises MissingBoundsError without a box).
    """

    name: str
    dense: Choice
    conv: Choice
    first_on_box: Choice | None = None
    first_on_rn: Choice | str | None = None
    add: Choice = (ADD_RULE, {})
    description: str = ""
    pointwise: Choice = (POINTWISE_RULE, {})
    norm: Choice = (NORM_RULE, {})
    attention: Mapping[str, Choice] = field(default_factory=lambda: dict(ATTENTION_DEFINITION))
    node_rules: Mapping[str, Choice] = field(default_factory=dict)

    def rule_of(self, layer: object, is_first: bool, input_is_box: bool) -> Choice:
        """The rule of one Dense or Conv2d node."""
        if is_first:
            first = self.first_on_box if input_is_box else self.first_on_rn
            if first == "needs box":
                raise MissingBoundsError(f"composite {self.name} needs a box input domain: pass "
                                         "input_domain=(low, high)")
            if first is not None:
                return first
        return self.conv if isinstance(layer, Conv2d) else self.dense


_ALPHA_BETA = ("alphabeta", {"alpha": 2.0, "beta": 1.0})

#: every registered composite, restated from its definition (see the module docstring)
COMPOSITE_DEFINITIONS: dict[str, CompositeDefinition] = {
    definition.name: definition for definition in (
        CompositeDefinition("deep-taylor", dense=("zplus", {}), conv=("zplus", {}),
                            first_on_box=("zbox", {}), first_on_rn=("w2", {}),
                            description="z^B at the input (w^2 on R^n), z+ above"),
        CompositeDefinition("epsilon-plus", dense=("epsilon", {"epsilon": 0.25}), conv=("zplus", {}),
                            description="z+ on convolutions, epsilon on dense layers"),
        CompositeDefinition("epsilon-gamma-box", dense=("epsilon", {"epsilon": 0.25}),
                            conv=("gamma", {"gamma": 0.25}), first_on_box=("zbox", {}),
                            first_on_rn="needs box",
                            description="z^B at the input, gamma on convolutions, epsilon on dense layers"),
        CompositeDefinition("alpha2-beta1", dense=_ALPHA_BETA, conv=_ALPHA_BETA,
                            description="alpha = 2, beta = 1 on every linear layer"),
        CompositeDefinition("attnlrp", dense=("epsilon", {"epsilon": 1e-6}), conv=("epsilon", {"epsilon": 1e-6}),
                            description="AttnLRP: epsilon on linear layers, softmax tangent with bias, "
                            "products uniform, matrix products epsilon then uniform"),
        # CP-LRP (Ali et al. 2022, ICML, Sec. 3): the attention weights are constants, so a matrix
        # product gives the factor a Softmax produces nothing and the other all (epsilon on the sum)
        CompositeDefinition("cplrp", dense=("epsilon", {"epsilon": 1e-6}), conv=("epsilon", {"epsilon": 1e-6}),
                            attention={**ATTENTION_DEFINITION, "matmul": ("matmul_cp", {"epsilon": 1e-6})},
                            description="CP-LRP: epsilon on linear layers, LayerNorm with sigma held constant, "
                            "the identity rule on nonlinearities, the attention weights held constant"),
    )
}


@dataclass(frozen=True)
class _ObjectDefinition:
    """A composite object read through its own ``choose`` and ``add``."""

    composite: Any
    add: Choice = field(default=(ADD_RULE, {}))
    pointwise: Choice = field(default=(POINTWISE_RULE, {}))
    norm: Choice = field(default=(NORM_RULE, {}))
    attention: Mapping[str, Choice] = field(default_factory=lambda: dict(ATTENTION_DEFINITION))
    node_rules: Mapping[str, Choice] = field(default_factory=dict)

    def rule_of(self, layer: object, is_first: bool, input_is_box: bool, index: int = 0) -> Choice:
        choice = self.composite.choose(index, layer, is_first, input_is_box)
        return choice.rule, dict(choice.parameters)


def first_linear_nodes(nodes, input_name: str) -> frozenset[int]:
    """Indices of the Dense and Conv2d nodes with no Dense or Conv2d node on any path from the
    input (``nodes`` in topological order, each with ``index``, ``name``, ``operation``, ``inputs``)."""
    behind_linear: dict[str, bool] = {input_name: False}  # is a Dense/Conv2d at or before this tensor
    first = set()
    for node in nodes:
        before = any(behind_linear[name] for name in node.inputs)
        is_linear = isinstance(node.operation, (Dense, Conv2d))
        if is_linear and not before:
            first.add(node.index)
        behind_linear[node.name] = before or is_linear
    return frozenset(first)


def _own_plan(composite) -> bool:
    """Does the object define its plan outright (a plan_graph or plan other than the engine's)?"""
    from lrp_num.engine.composites import Composite  # the class only, to see what a subclass overrides

    if not hasattr(composite, "choose"):
        return True
    return isinstance(composite, Composite) and type(composite).plan_graph is not Composite.plan_graph


def plan_nodes(nodes, input_name: str, definition, input_is_box: bool) -> dict[int, Choice]:
    """The rule of every node that needs one, by ``definition`` (see the module docstring)."""
    first = first_linear_nodes(nodes, input_name)
    plan: dict[int, Choice] = {}
    for node in nodes:
        layer = node.operation
        if isinstance(layer, (Dense, Conv2d)):
            if isinstance(definition, _ObjectDefinition):
                plan[node.index] = definition.rule_of(layer, node.index in first, input_is_box, node.index)
            else:
                plan[node.index] = definition.rule_of(layer, node.index in first, input_is_box)
        elif isinstance(layer, (SumPool2d, AvgPool2d, AdaptiveAvgPool2d, ChannelAffine)):
            plan[node.index] = (Z_RULE, {})
        elif isinstance(layer, Add):
            plan[node.index] = definition.add
        elif isinstance(layer, MaxPool2d):
            plan[node.index] = ("maxpool", {})
        elif isinstance(layer, NONLINEAR):
            plan[node.index] = definition.pointwise
        elif isinstance(layer, NORMALIZATION):
            plan[node.index] = definition.norm
        else:
            for kind, key in _ATTENTION_KEYS:
                if isinstance(layer, kind):
                    plan[node.index] = definition.attention.get(key, ATTENTION_DEFINITION[key])
        if node.name in definition.node_rules:
            plan[node.index] = definition.node_rules[node.name]
    return plan


def definition_of(composite) -> CompositeDefinition | _ObjectDefinition:
    """The definition the reference plans with: the restated one of a registered name, or the
    object's own ``choose`` and ``add``."""
    if isinstance(composite, str):
        if composite not in COMPOSITE_DEFINITIONS:
            raise UnknownRuleError(f"unknown composite {composite!r}; the reference knows: "
                                   f"{', '.join(COMPOSITE_DEFINITIONS)}")
        return COMPOSITE_DEFINITIONS[composite]
    def read(field_name: str, default: str) -> Choice:
        choice = getattr(composite, field_name, None)
        return (choice.rule, dict(choice.parameters)) if choice is not None else (default, {})
    choices = lambda rules: {key: (rule.rule, dict(rule.parameters)) for key, rule in rules.items()}  # noqa: E731
    return _ObjectDefinition(composite, read("add", ADD_RULE), read("pointwise", POINTWISE_RULE),
                             read("norm", NORM_RULE),
                             {**ATTENTION_DEFINITION, **choices(getattr(composite, "attention", {}))},
                             choices(getattr(composite, "node_rules", {})))


__all__ = ["ADD_RULE", "COMPOSITE_DEFINITIONS", "CompositeDefinition", "Z_RULE", "definition_of",
           "first_linear_nodes", "plan_nodes"]
