"""The relevance one node passes to its inputs, by its rule's definition, in balls (one sample).

The same definitions as the mpmath reference (:mod:`lrp_num.reference.node_rules`), evaluated in
Arb's ball arithmetic so that every result provably contains the exact real number:

* a linear node under a root-point rule (:func:`root_point_contributions`): neuron j is expanded
  at its root point x~_ij = x_i - t* v_ij on the search direction v_ij of the rule, where the
  root condition sum_i (x_i - t v_ij) w_ij + (1 - t v_0j) b_j - t a_j = 0 gives
  t* = z_j / (sum_i v_ij w_ij + v_0j b_j + a_j); with the relevance model R_j = c_j z_j,
  c_j = R_j / z_j, R_ij = c_j w_ij (x_i - x~_ij) (Montavon et al. 2017, Pattern Recognition 65,
  Sec. 3-4). Where z_j = 0 exactly, the limit R_ij = R_j w_ij v_ij / slope_j;
* a linear node under a formula rule (:func:`formula_contributions`; Bach et al. 2015, PLOS ONE
  10(7) e0130140): epsilon, alpha-beta, bias-as-a-neuron and zennit's input-split rules;
* max pooling (:func:`maxpool_relevance`): winner-take-all, exact ties split equally (or all to the first, the convention ``maxpool_ties="first"``);
* an Add node (:func:`add_relevance`): a neuron with unit weights and no bias.

Every decision the definition makes (a weight's or contribution's sign, which max-pool cell
wins, z_j = 0 or not, whether a stabiliser applies) is taken only where the ball decides it.
Otherwise the neuron is *undecided*: it is counted, and its contributions are NaN balls, so that
nothing computed from them claims a bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from lrp_num.certified.balls import lrp_sign, require_flint, sign, undecided, zeros
from lrp_num.errors import UnknownRuleError, ZeroDenominatorError

ROOT_POINT_RULES = ("w2", "zplus", "zbox", "lrp0", "gamma", "flat")
FORMULA_RULES = ("epsilon", "alphabeta", "bias_neuron", "zplus_split", "gamma_split")


@dataclass
class BallMatrix:
    """A linear node as a matrix stored by rows, in balls: z_j = sum_k x[index[j, k]] w[j, k] + b_j.

    ``index`` / ``connected`` as in :class:`lrp_num.reference.linear.LinearMatrix` (unconnected
    slots point at an extra zero input ``n_in``), ``weight`` (n_out, fan_in) and ``bias`` (n_out,)
    object arrays of balls: exact for float64 parameters, enclosures for a folded batch norm.
    """

    n_in: int
    n_out: int
    index: np.ndarray
    connected: np.ndarray
    weight: np.ndarray
    bias: np.ndarray


@dataclass
class NodeRecord:
    """What the certified pass records about one node (one sample): its rule, the neurons it
    could not decide (``undecided``, output neuron indices) and why (``reasons``: counts)."""

    name: str
    rule: str
    undecided: list[int] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)

    def mark(self, neuron: int, reason: str) -> None:
        self.undecided.append(int(neuron))
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


def _indicator(values: np.ndarray, positive: bool):
    """1[value > 0] (``positive``) or 1[value < 0] per ball as exact 0/1 balls; NaN where undecided."""
    arb = require_flint().arb
    wanted = 1 if positive else -1
    out = np.empty(values.shape, dtype=object)
    flat, target = values.ravel(), out.reshape(-1)
    for k, value in enumerate(flat):
        s = sign(value)
        target[k] = undecided() if s is None else arb(1 if s == wanted else 0)
    return out


def _part(values: np.ndarray, positive: bool) -> np.ndarray:
    """value^+ (``positive``) or value^- per ball; NaN where the sign is undecided."""
    return values * _indicator(values, positive)


def _unit_weights(connected: np.ndarray) -> np.ndarray:
    """Exact balls 1 on the connections, 0 elsewhere (the flat rule's unit-weight neuron)."""
    arb = require_flint().arb
    out = np.empty(connected.shape, dtype=object)
    out[connected] = arb(1)
    out[~connected] = arb(0)
    return out


def search_direction(rule: str, x, w, connected, lower, upper, parameters: Mapping[str, Any]) -> np.ndarray:
    """v_ij of every connection (rows = output neurons), by the rule's definition."""
    arb = require_flint().arb
    if rule == "w2":  # steepest descent in R^n: along the weight vector
        return w
    if rule == "zplus":  # shrink only the excitatory inputs, stay in the orthant
        return x * _indicator(w, True)
    if rule == "zbox":  # towards the box corner that minimises z_j
        return (x - lower) * _indicator(w, True) + (x - upper) * _indicator(w, False)
    if rule == "lrp0":  # towards the origin
        return x
    if rule == "gamma":  # excitatory inputs weighted by 1 + gamma
        return x * (1 + arb(parameters["gamma"]) * _indicator(w, True))
    if rule == "flat":  # w2 on the unit-weight neuron
        return _unit_weights(connected)
    raise UnknownRuleError(f"{rule!r} is not a root-point rule")


def bias_direction(rule: str, bias: str, b) -> Any:
    """v_0j of the bias input under a bias convention (see :mod:`lrp_num.reference.directions`)."""
    arb = require_flint().arb
    if bias == "dtd":
        return arb(0)
    if bias in ("neuron", "captum"):
        return arb(1)
    if bias == "zennit":
        if rule == "zplus":
            s = sign(b)
            return undecided() if s is None else arb(1 if s > 0 else 0)
        return {"w2": b, "lrp0": arb(1), "gamma": arb(1), "zbox": arb(0), "flat": arb(0)}[rule]
    raise UnknownRuleError(f"unknown bias convention {bias!r}")


def stabiliser_ball(d, r, eps: float, stabilise: str, rule: str):
    """a_j = eps sign(d_j) where it applies (every neuron, or d_j == 0); None where undecided."""
    arb = require_flint().arb
    if stabilise == "everywhere" or d.is_zero():
        s = lrp_sign(d)
        if s is None:
            return None
        absorber = arb(eps) * s
    elif sign(d) is None:  # a ball around 0: whether the stabiliser applies is undecided
        return None
    else:
        absorber = arb(0)
    if (d + absorber).is_zero() and not r.is_zero():
        raise ZeroDenominatorError(f"rule {rule!r}: a denominator is 0 where the upper relevance is not, and "
                                   "eps = 0; pass eps > 0 to stabilise it")
    return absorber


def root_point_contributions(rule: str, matrix: BallMatrix, x_ext: np.ndarray, relevance: np.ndarray,
                             rows: np.ndarray, parameters: Mapping[str, Any], conventions: Mapping[str, Any],
                             bounds, record: NodeRecord) -> np.ndarray:
    """R_ij (len(rows), fan_in) of the neurons ``rows`` under a root-point rule, as balls.

    x~_ij = x_i - t* v_ij with t* = z_j / slope_j solving the root condition; R_ij = c_j w_ij
    (x_i - x~_ij), c_j = R_j / z_j. Undecided neurons get NaN rows.
    """
    x = x_ext[matrix.index[rows]]
    if rule == "flat":
        w = _unit_weights(matrix.connected[rows])
    else:
        w = matrix.weight[rows]
    b, r = matrix.bias[rows], relevance[rows]
    lower = upper = None
    if rule == "zbox":
        lower, upper = (bound[matrix.index[rows]] for bound in bounds)
    v = search_direction(rule, x, w, matrix.connected[rows], lower, upper, parameters)
    v0 = np.array([bias_direction(rule, conventions["bias"], bj) for bj in b], dtype=object)
    z = (x * w).sum(axis=1) + b
    slope = (v * w).sum(axis=1) + v0 * b
    out = np.empty(x.shape, dtype=object)
    for k in range(len(rows)):
        absorber = stabiliser_ball(slope[k], r[k], conventions["eps"], conventions["stabilise"], rule)
        if absorber is None:
            record.mark(rows[k], "slope contains 0")
            out[k] = undecided()
            continue
        s = slope[k] + absorber
        if sign(s) is None or not all(value.is_finite() for value in v[k]):
            record.mark(rows[k], "slope contains 0" if sign(s) is None else "weight sign")
            out[k] = undecided()
            continue
        z_sign = sign(z[k])
        if z_sign is None:  # a ReLU input too close to its hinge: which side holds is undecided
            record.mark(rows[k], "z_j contains 0")
            out[k] = undecided()
        elif z_sign == 0:  # x is its own root point: the limit of the Taylor step
            out[k] = (r[k] / s) * w[k] * v[k]
        else:
            t = z[k] / s  # the root of g(t), affine in t
            root_point = x[k] - t * v[k]
            c = r[k] / z[k]  # relevance model R_j = c_j z_j
            out[k] = (c * w[k]) * (x[k] - root_point)  # gradient at x~ times x - x~
    return out


def _split_group(rule: str, x, w, b, parameters, bias: str):
    arb = require_flint().arb
    w_plus, w_minus = _part(w, True), _part(w, False)
    x_plus, x_minus = _part(x, True), _part(x, False)
    if rule == "zplus_split":
        q = x_plus * w_plus + x_minus * w_minus
        if bias == "dtd":
            share = zeros(len(b))
        elif bias == "zennit":
            share = _part(b, True)
        else:
            share = b
        return q, share
    g = arb(parameters["gamma"])
    q = x_plus * (w + g * w_plus) + x_minus * (w + g * w_minus)
    return q, b + g * _part(b, True)


def formula_contributions(rule: str, matrix: BallMatrix, x_ext: np.ndarray, relevance: np.ndarray,
                          rows: np.ndarray, parameters: Mapping[str, Any], conventions: Mapping[str, Any],
                          record: NodeRecord) -> np.ndarray:
    """R_ij (len(rows), fan_in) under epsilon, alphabeta, bias_neuron, zplus_split or gamma_split."""
    arb = require_flint().arb
    x = x_ext[matrix.index[rows]]
    w, b, r = matrix.weight[rows], matrix.bias[rows], relevance[rows]
    contributions = x * w  # z_ij = x_i w_ij (Bach et al. 2015, Eq. 50)
    bias = conventions["bias"]
    if rule in ("epsilon", "bias_neuron"):
        groups = [(arb(1), contributions, b)]
    elif rule in ("zplus_split", "gamma_split"):
        groups = [(arb(1), *_split_group(rule, x, w, b, parameters, bias))]
    elif rule == "alphabeta":  # Eq. (60): positive and negative contributions separately
        if bias == "captum":
            share_plus, share_minus = b, zeros(len(b))
        elif bias == "dtd":
            share_plus = share_minus = zeros(len(b))
        else:
            share_plus, share_minus = _part(b, True), _part(b, False)
        groups = [(arb(parameters["alpha"]), _part(contributions, True), share_plus),
                  (-arb(parameters["beta"]), _part(contributions, False), share_minus)]
    else:
        raise UnknownRuleError(f"{rule!r} is not a formula rule")
    out = np.empty(x.shape, dtype=object)
    out.fill(arb(0))
    for coefficient, q, share in groups:
        d = q.sum(axis=1) + share
        for k in range(len(rows)):
            if not out[k, 0].is_finite():
                continue
            dk = d[k]
            if rule == "epsilon":  # the rule's own stabiliser, everywhere, sign(0) = +1
                s = lrp_sign(dk)
                if s is None:
                    record.mark(rows[k], "denominator contains 0")
                    out[k] = undecided()
                    continue
                dk = dk + arb(parameters["epsilon"]) * s
            numerator = coefficient * r[k]
            absorber = stabiliser_ball(dk, numerator, conventions["eps"], conventions["stabilise"], rule)
            if absorber is None or sign(dk + absorber) is None and not numerator.is_zero():
                record.mark(rows[k], "denominator contains 0")
                out[k] = undecided()
                continue
            if numerator.is_zero():
                continue
            out[k] = out[k] + q[k] * (numerator / (dk + absorber))
    return out


def maxpool_relevance(window_rows: np.ndarray, connected: np.ndarray, x: np.ndarray, relevance: np.ndarray,
                      record: NodeRecord, ties: str = "split") -> np.ndarray:
    """Winner-take-all: R_j to the maximal cell of window j, exact ties split equally (``ties=
    "split"``) or whole to the first in window order (``"first"``, PyTorch's convention); a window
    whose maximum the balls cannot single out (overlapping, not exactly equal) is undecided."""
    arb = require_flint().arb
    relevance_in = zeros(len(x) + 1)
    for j, (window, inside) in enumerate(zip(window_rows, connected)):
        if relevance[j].is_zero():
            continue
        cells = window[np.flatnonzero(inside)]
        values = x[cells]
        # candidates: cells not certainly below another cell
        candidates = [c for c, value in zip(cells, values) if not any(value < other for other in values)]
        decided = len(candidates) == 1 or (all(x[c].is_exact() for c in candidates)
                                           and all(x[c] == x[candidates[0]] for c in candidates))
        if not decided:  # balls that overlap without being one exact value: no winner certified
            record.mark(j, "max-pool winner")
            for c in candidates:
                relevance_in[c] = undecided()
            continue
        if ties == "first":
            candidates = candidates[:1]
        share = relevance[j] / arb(len(candidates))
        for c in candidates:
            relevance_in[c] = relevance_in[c] + share
    return relevance_in[: len(x)]


def add_relevance(rule: str, addends: list[np.ndarray], relevance: np.ndarray, parameters, conventions,
                  record: NodeRecord) -> list[np.ndarray]:
    """Relevance of each addend of y = sum_k a_k: add_z / add_zplus by the root along v_k
    (a_k, or a_k^+), R_k = c (a_k - a~_k) with c = R / y; add_epsilon by its formula."""
    arb = require_flint().arb
    a = np.stack(addends, axis=1)
    n, n_addends = a.shape
    lower = np.empty((n, n_addends), dtype=object)
    lower[:] = arb(0)
    ones = np.full(n_addends, arb(1), dtype=object)
    for j in range(n):
        r = relevance[j]
        if r.is_zero():
            continue
        row = a[j]
        y = row.sum()
        if rule == "add_epsilon":
            s = lrp_sign(y)
            d = None if s is None else y + arb(parameters["epsilon"]) * s
            absorber = None if d is None else stabiliser_ball(d, r, conventions["eps"], conventions["stabilise"], rule)
            if absorber is None or sign(d + absorber) is None:
                record.mark(j, "denominator contains 0")
                lower[j] = undecided()
                continue
            lower[j] = row * (r / (d + absorber))
            continue
        if rule == "add_z":
            v = row
        elif rule == "add_zplus":
            v = _part(row, True)
        else:
            raise UnknownRuleError(f"{rule!r} is not a rule of the Add node")
        slope = v.sum()
        absorber = stabiliser_ball(slope, r, conventions["eps"], conventions["stabilise"], rule)
        y_sign = sign(y)
        if absorber is None or sign(slope + absorber) is None or y_sign is None:
            record.mark(j, "z_j contains 0" if y_sign is None else "slope contains 0")
            lower[j] = undecided()
            continue
        s = slope + absorber
        if y_sign == 0:
            lower[j] = (r / s) * v * ones
            continue
        t = y / s
        root_point = row - t * v
        lower[j] = (r / y) * (row - root_point)
    return [lower[:, k] for k in range(n_addends)]


__all__ = ["BallMatrix", "FORMULA_RULES", "NodeRecord", "ROOT_POINT_RULES", "add_relevance", "bias_direction",
           "formula_contributions", "maxpool_relevance", "root_point_contributions", "search_direction"]
