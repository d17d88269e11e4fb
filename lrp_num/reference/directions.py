"""The definition of each root-point rule: its search direction v_ij and bias direction v_0j.

A root-point rule expands neuron j at x~ = x - t v_j, where the root condition
g_j(t) = sum_i (x_i - t v_ij) w_ij + (1 - t v_0j) b_j - t a_j = 0 holds (Montavon et al. 2017,
Pattern Recognition 65, Sec. 3-4; solved in :mod:`lrp_num.reference.roots`). This module states
v_ij and v_0j for every rule as written in its definition, and the tables of rules the
reference knows.

Bias conventions in root-point terms
------------------------------------
The bias is an input x_0 = 1 with weight w_0j = b_j. Its search-direction component v_0j says
how much of the bias the root point removes, and the bias keeps R_0j = c_j b_j t* v_0j:

=================  =============================================================  ===========
convention         v_0j                                                           q_0j = v_0j b_j
=================  =============================================================  ===========
``"dtd"``          0: x_0 stays 1, the bias only shifts the hinge                 0
``"neuron"``       1 (the bias input moves like an input of LRP-0)                b_j
``"zennit"``       z+: 1[b_j > 0]; w2: b_j; lrp0, gamma: 1; zbox, flat: 0         b^+, b^2, b, 0
=================  =============================================================  ===========

``"magnitude"`` (autoLRP) is ``"dtd"`` here, after R_j is scaled by |z_j - b_j| / (|z_j - b_j| + |b_j| + eps).
(alpha-beta, a formula rule, adds b^+ and b^- to its two groups under "neuron" and "zennit",
and under "captum" the unmodified b_j to its positive group only, as lrp_num.engine.conventions states.)
The step then has slope sum_i v_ij w_ij + v_0j b_j, the engine's denominator with its bias share.
"""

from __future__ import annotations

from typing import Any, Mapping

import mpmath
import numpy as np

from lrp_num.errors import UnknownRuleError

#: rules expanded at a root point, and the input domain each is derived for
ROOT_POINT_RULES: dict[str, str] = {
    "w2": "R^n", "zplus": "orthant", "zbox": "box", "lrp0": "R^n", "gamma": "orthant", "flat": "R^n",
}
#: rules defined by their propagation formula (Bach et al. 2015)
FORMULA_RULES = ("epsilon", "alphabeta", "bias_neuron", "zplus_split", "gamma_split", "gamma_split_negative")
RULES = tuple(ROOT_POINT_RULES) + FORMULA_RULES
#: parameters of each rule and their defaults (those of the derivations in ``derivations/``)
RULE_DEFAULTS: dict[str, dict[str, float]] = {
    "gamma": {"gamma": 0.25}, "epsilon": {"epsilon": 0.25}, "alphabeta": {"alpha": 2.0, "beta": 1.0},
    "gamma_split": {"gamma": 0.25}, "gamma_split_negative": {"gamma": 0.25}, "add_epsilon": {"epsilon": 0.25},
}
BIAS_CONVENTIONS = ("dtd", "neuron", "zennit", "captum", "magnitude")


def indicator(condition: np.ndarray) -> np.ndarray:
    """1 where ``condition`` holds, else 0 (integers: products with mpf stay exact)."""
    return condition.astype(np.int64)


def search_direction(rule: str, x: np.ndarray, w: np.ndarray, w_float: np.ndarray, connected: np.ndarray,
                     lower: np.ndarray | None, upper: np.ndarray | None, parameters: Mapping[str, Any]) -> np.ndarray:
    """v_ij for every connection of a layer, rows = output neurons (object arrays of mpf).

    ``x`` holds x_i gathered per row, ``w`` the weights w_ij (mpf), ``w_float`` the same weights
    in float64 (for their signs), ``connected`` the layer's connectivity.
    """
    if rule == "w2":  # steepest descent in R^n: along the weight vector
        return w
    if rule == "zplus":  # shrink only the excitatory inputs, stay in the orthant
        return x * indicator(w_float > 0)
    if rule == "zbox":  # towards the box corner that minimises z_j; unconnected inputs stay
        return (x - lower) * indicator(w_float > 0) + (x - upper) * indicator(w_float < 0)
    if rule == "lrp0":  # towards the origin: x~ = (1 - t) x
        return x
    if rule == "gamma":  # excitatory inputs weighted by 1 + gamma
        return x * (1 + mpmath.mpf(parameters["gamma"]) * indicator(w_float > 0))
    if rule == "flat":  # w2 on the neuron whose weights are all 1: only connectivity counts
        return indicator(connected) * mpmath.mpf(1)
    raise UnknownRuleError(f"{rule!r} is not a root-point rule")


def bias_direction(rule: str, bias: str, b: float, parameters: Mapping[str, Any] | None = None) -> Any:
    """v_0j, the search direction of the bias input x_0 = 1 (weight b_j); see the module doc."""
    if bias in ("dtd", "magnitude"):  # "magnitude": the bias's share is split off before the rule
        return 0
    if bias in ("neuron", "captum"):  # captum's rules keep the full bias in z'
        return 1
    if bias == "zennit":
        table = {"zplus": 1 if b > 0 else 0, "w2": mpmath.mpf(b), "lrp0": 1, "gamma": 1,
                 "zbox": 0, "flat": 0}
        return table[rule]
    raise UnknownRuleError(f"unknown bias convention {bias!r}; known: {', '.join(BIAS_CONVENTIONS)}")


# -- the Add node: a neuron y = sum_k a_k with unit weights, no bias, no activation ---------------

#: the rules of an Add node; "lrp0" (the z-rule on the stacked addends, as the engine plans it
#: before the derived kernels arrive) is the same mathematics as "add_z"
ADD_RULES = ("add_z", "add_zplus", "add_epsilon")
ADD_ALIASES = {"lrp0": "add_z"}


def add_search_direction(rule: str, a: np.ndarray) -> np.ndarray:
    """v_k of each addend (rows = output neurons, columns = addends): the rule's definition."""
    if rule == "add_z":  # towards the origin: a~ = (1 - t) a
        return a
    if rule == "add_zplus":  # shrink only the positive addends
        zero = mpmath.mpf(0)
        return np.vectorize(lambda value: value if value > 0 else zero, otypes=[object])(a)
    raise UnknownRuleError(f"{rule!r} is not a root-point rule of the Add node")


__all__ = [
    "ADD_ALIASES", "ADD_RULES", "BIAS_CONVENTIONS", "FORMULA_RULES", "RULES", "RULE_DEFAULTS",
    "ROOT_POINT_RULES", "add_search_direction", "bias_direction", "indicator", "search_direction",
]
