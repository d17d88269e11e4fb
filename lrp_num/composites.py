"""Composites: which rule each layer of a network uses.

Pooling layers always use their derived rule: sum and average pooling the z-rule (LRP-0 on the
pooling operator, relevance proportional to x_i), max pooling winner-take-all with ties split
equally (the p -> infinity limit of L_p pooling). A composite chooses the rule of every Dense and
Conv2d layer, by position (the first linear layer sees the input domain) and by type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from lrp_num.errors import MissingBoundsError, UnknownRuleError
from lrp_num.layers import AvgPool2d, Conv2d, Dense, MaxPool2d, SumPool2d


@dataclass(frozen=True)
class LayerRule:
    """A rule name and its parameters for one layer."""

    rule: str
    parameters: Mapping[str, float] = field(default_factory=dict)


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
    """

    name: str
    choose: Chooser
    description: str = ""

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
    )
}
COMPOSITES["alpha2-beta1"] = Composite(
    "alpha2-beta1", COMPOSITES.pop("alphabeta").choose, "alpha = 2, beta = 1 on every linear layer")


def get_composite(name: str) -> Composite:
    """Return the registered composite ``name``."""
    try:
        return COMPOSITES[name]
    except KeyError:
        raise UnknownRuleError(f"unknown composite {name!r}; known: {', '.join(COMPOSITES)}") from None
