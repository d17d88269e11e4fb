"""Composites: which rule each layer of a network uses.

Pooling layers always use their derived rule: sum and average pooling the z-rule (LRP-0 on the
pooling operator, relevance proportional to x_i), max pooling winner-take-all with ties split
equally (the p -> infinity limit of L_p pooling). A composite chooses the rule of every Dense and
Conv2d layer, by position (the first linear layer sees the input domain) and by type.

In a graph (:meth:`Composite.plan_graph`) the first linear layers are the Dense and Conv2d
nodes with no Dense or Conv2d node before them on any path from the input (in a chain, the one
first linear layer). Nodes outside the composite's choice:

* Add (a skip connection's sum) uses :data:`ADD_RULE`, the proportional split
  R_k = a_k / sum_k' a_k' R of a neuron with unit weights and no bias;
* ChannelAffine (a batch norm that cannot be folded) uses :data:`AFFINE_RULE`, the z-rule:
  each of its neurons has one input, so a root-point rule passes R_j on unchanged whatever its
  search direction (under the DTD bias convention that is exactly the z-rule), whereas
  epsilon would absorb part of it and alpha-beta scale it by alpha or -beta;
* global and adaptive average pooling use the z-rule, like sum and average pooling;
* element-wise nonlinearities (GELU, SiLU, Tanh, Sigmoid) use the composite's ``pointwise``
  rule, by default :data:`POINTWISE_RULE`, the identity rule R_in = R_out (AttnLRP), which
  conserves for every g; ``taylor_nonlinear`` is the first-order Taylor rule at the root point;
* LayerNorm and RMSNorm use the composite's ``norm`` rule, by default :data:`NORM_RULE`, the rule
  with the normaliser held constant (CP-LRP, Ali et al. 2022): LRP-0/epsilon on the linear map
  the layer becomes, its bias absorbing its share; ``norm_full`` linearises it fully;
* Concat, Flatten, Dropout, Identity and ReLU route relevance without a rule.

The ``cplrp`` composite (CP-LRP, Ali et al. 2022, ICML, Sec. 3, as LXT 2.1's ``cplrp`` applies
it) holds the attention weights constant: every MatMul node uses ``matmul_cp``, which gives the
operand produced by a Softmax node no relevance and the other one all of it (LRP-epsilon on the
sum over k); the softmax, Q K^T, q and k then receive none. Linear layers use LRP-epsilon,
LayerNorm ``norm_cp`` (sigma held constant), element-wise nonlinearities the identity rule, Add
nodes the proportional split ``add_z`` (the gradient x input of a sum, as LXT's cplrp does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from lrp_num.errors import MissingBoundsError, UnknownRuleError
from lrp_num.layers import (AdaptiveAvgPool2d, Add, AvgPool2d, ChannelAffine, Conv2d, Dense,
                            MatMul, MaxPool2d, Multiply, Softmax, SumPool2d)
from lrp_num.layers.nonlinear import NONLINEAR
from lrp_num.layers.normalization import NORMALIZATION

#: the default rule of Add nodes: the proportional split R_k = a_k / sum a R derived for the
#: addition (derivations/add_z.py); a composite's ``add`` field chooses another (add_zplus,
#: add_epsilon)
ADD_RULE = "add_z"
#: the rule of every ChannelAffine node (see the module docstring)
AFFINE_RULE = "lrp0"
#: the default rule of element-wise nonlinearities (derivations/identity_nonlinear.py)
POINTWISE_RULE = "identity_nonlinear"
#: the default rule of LayerNorm and RMSNorm (derivations/norm_cp.py)
NORM_RULE = "norm_cp"


@dataclass(frozen=True)
class LayerRule:
    """A rule name and its parameters for one layer.

    ``constant_inputs``: for a MatMul node under a rule that holds a factor constant
    (``matmul_cp``), the positions of the inputs held constant, read from the graph when the
    network is explained (:func:`lrp_num.engine.attention_rules.hold_constants`); () otherwise.
    """

    rule: str
    parameters: Mapping[str, float] = field(default_factory=dict)
    constant_inputs: tuple[int, ...] = ()


#: the default rules of attention nodes (AttnLRP, Achtibat et al. 2024, ICML): softmax by its
#: tangent at x with a bias (Prop. 3.1), element-wise products uniform, matrix products
#: epsilon on the sum over k then uniform (Prop. 3.3); keys "softmax", "product", "matmul"
ATTENTION_RULES: Mapping[str, LayerRule] = {
    "softmax": LayerRule("softmax"), "product": LayerRule("product_uniform"),
    "matmul": LayerRule("matmul_epsilon", {"epsilon": 1e-6})}  # the kernel's default, stated as the reference states it
#: the attention node types and their key in a composite's ``attention`` mapping
_ATTENTION_KEYS = ((Softmax, "softmax"), (Multiply, "product"), (MatMul, "matmul"))

#: chooser(index, layer, is_first_linear, input_is_box) -> LayerRule
Chooser = Callable[[int, object, bool, bool], LayerRule]


@dataclass(frozen=True)
class Composite:
    """A named mapping from linear layers to rules.

    Parameters
    ----------
    name : str
    choose : callable
        ``choose(index, layer, is_first_linear, input_is_box) -> LayerRule``.
    description : str
    add : LayerRule
        The rule of every Add node (default :data:`ADD_RULE`); a rule derived for the sum
        neuron (``add_z``, ``add_zplus``, ``add_epsilon``), e.g.
        ``dataclasses.replace(get_composite("epsilon-plus"), add=LayerRule("add_zplus"))``.
    pointwise : LayerRule
        The rule of every element-wise nonlinearity (default :data:`POINTWISE_RULE`), a rule
        derived for one-input neurons: ``identity_nonlinear`` or ``taylor_nonlinear``.
    norm : LayerRule
        The rule of every LayerNorm / RMSNorm (default :data:`NORM_RULE`): ``norm_cp`` or
        ``norm_full``.
    attention : mapping
        The rule of every Softmax, Multiply and MatMul node, by key ``"softmax"``,
        ``"product"``, ``"matmul"`` (default :data:`ATTENTION_RULES`, AttnLRP).
    node_rules : mapping
        Node name -> LayerRule: the rule of that node of a graph, over every other choice.
    """

    name: str
    choose: Chooser
    description: str = ""
    add: LayerRule = LayerRule(ADD_RULE)
    pointwise: LayerRule = LayerRule(POINTWISE_RULE)
    norm: LayerRule = LayerRule(NORM_RULE)
    attention: Mapping[str, LayerRule] = field(default_factory=lambda: dict(ATTENTION_RULES))
    node_rules: Mapping[str, LayerRule] = field(default_factory=dict)

    @classmethod
    def from_types(cls, name: str, dense: LayerRule, conv: LayerRule | None = None,
                   first: LayerRule | None = None, description: str = "") -> "Composite":
        """A composite by layer type, with an optional rule for the first linear layer."""
        def choose(index: int, layer: object, is_first: bool, input_is_box: bool) -> LayerRule:
            if is_first and first is not None:
                return first
            return conv if isinstance(layer, Conv2d) and conv is not None else dense
        return cls(name, choose, description)

    @classmethod
    def single(cls, rule: str, **parameters: float) -> "Composite":
        """Every linear layer uses ``rule``."""
        choice = LayerRule(rule, dict(parameters))
        return cls(rule, lambda *_: choice, f"{rule} on every linear layer")

    @classmethod
    def from_zennit(cls, composite: object) -> "Composite":
        """A zennit 0.5.1 composite object (``zennit.composites.EpsilonPlus()``, EpsilonGammaBox,
        EpsilonAlpha2Beta1, ...) in our rule names, with the parameters and stabiliser it holds
        (:func:`lrp_num.testing.library_rules.from_zennit`; needs torch and zennit)."""
        from lrp_num.testing.library_rules import from_zennit

        return from_zennit(composite)

    def plan(self, layers: list, input_is_box: bool) -> dict[int, LayerRule]:
        """The rule of every layer index that needs one."""
        plan: dict[int, LayerRule] = {}
        first = True
        for index, layer in enumerate(layers):
            if isinstance(layer, (Dense, Conv2d)):
                plan[index] = self.choose(index, layer, first, input_is_box)
                first = False
            elif isinstance(layer, (SumPool2d, AvgPool2d)):
                plan[index] = LayerRule("lrp0")
            elif isinstance(layer, MaxPool2d):
                plan[index] = LayerRule("maxpool")
        return plan

    def plan_graph(self, graph, input_is_box: bool) -> dict[int, LayerRule]:
        """The rule of every node index of a :class:`~lrp_num.engine.graph.Graph` that needs one."""
        first = graph.first_linear()
        plan: dict[int, LayerRule] = {}
        for index, node in enumerate(graph.nodes):
            layer = node.operation
            if isinstance(layer, (Dense, Conv2d)):
                plan[index] = self.choose(index, layer, index in first, input_is_box)
            elif isinstance(layer, (SumPool2d, AvgPool2d, AdaptiveAvgPool2d)):
                plan[index] = LayerRule("lrp0")
            elif isinstance(layer, MaxPool2d):
                plan[index] = LayerRule("maxpool")
            elif isinstance(layer, ChannelAffine):
                plan[index] = LayerRule(AFFINE_RULE)
            elif isinstance(layer, Add):
                plan[index] = self.add
            elif isinstance(layer, NONLINEAR):
                plan[index] = self.pointwise
            elif isinstance(layer, NORMALIZATION):
                plan[index] = self.norm
            else:
                for kind, key in _ATTENTION_KEYS:
                    if isinstance(layer, kind):
                        plan[index] = self.attention.get(key, ATTENTION_RULES[key])
            if node.name in self.node_rules:
                plan[index] = self.node_rules[node.name]
        return plan


def _deep_taylor(index: int, layer: object, is_first: bool, input_is_box: bool) -> LayerRule:
    if is_first:
        return LayerRule("zbox" if input_is_box else "w2")
    return LayerRule("zplus")


def _epsilon_gamma_box(index: int, layer: object, is_first: bool, input_is_box: bool) -> LayerRule:
    if is_first:
        if not input_is_box:
            raise MissingBoundsError("composite epsilon-gamma-box needs a box input domain: pass "
                                     "input_domain=(low, high)")
        return LayerRule("zbox")
    return LayerRule("gamma", {"gamma": 0.25}) if isinstance(layer, Conv2d) else LayerRule("epsilon", {"epsilon": 0.25})


COMPOSITES: dict[str, Composite] = {
    composite.name: composite
    for composite in (
        Composite("deep-taylor", _deep_taylor,
                  "z^B at the input (w^2 when the input domain is R^n), z+ above "
                  "(Montavon et al. 2017)"),
        Composite.from_types("epsilon-plus", dense=LayerRule("epsilon", {"epsilon": 0.25}),
                             conv=LayerRule("zplus"),
                             description="z+ on convolutions, epsilon on dense layers"),
        Composite("epsilon-gamma-box", _epsilon_gamma_box,
                  "z^B at the input, gamma on convolutions, epsilon on dense layers"),
        Composite.single("alphabeta", alpha=2.0, beta=1.0),
        Composite.from_types("attnlrp", dense=LayerRule("epsilon", {"epsilon": 1e-6}),
                             description="AttnLRP (Achtibat et al. 2024): epsilon on linear layers, "
                             "softmax by its tangent with a bias, products uniform, matrix "
                             "products epsilon then uniform"),
    )
}
COMPOSITES["cplrp"] = Composite(
    "cplrp", COMPOSITES["attnlrp"].choose,
    "CP-LRP (Ali et al. 2022): epsilon on linear layers, LayerNorm with sigma held constant, the "
    "identity rule on nonlinearities, the attention weights held constant (A V: all to V)",
    attention={**ATTENTION_RULES, "matmul": LayerRule("matmul_cp", {"epsilon": 1e-6})})
COMPOSITES["alpha2-beta1"] = Composite(
    "alpha2-beta1", COMPOSITES.pop("alphabeta").choose, "alpha = 2, beta = 1 on every linear layer")


def get_composite(name: str) -> Composite:
    """Return the registered composite ``name``."""
    try:
        return COMPOSITES[name]
    except KeyError:
        raise UnknownRuleError(f"unknown composite {name!r}; known: {', '.join(COMPOSITES)}") from None
