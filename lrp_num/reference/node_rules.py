"""The relevance one node passes to its inputs, by its rule's definition (one sample, mpmath).

* a linear node under a root-point rule (:func:`root_point_layer`): each neuron j with upper
  relevance R_j is expanded at its root point x~_i = x_i - t* v_ij (search direction from
  :mod:`lrp_num.reference.directions`, t* from :mod:`lrp_num.reference.roots`); the relevance
  model is R_j = c_j max(0, z_j) with c_j = R_j / z_j, its one-sided gradient on the active side
  c_j w_ij, and R_ij = c_j w_ij (x_i - x~_i);
* a linear node under a rule defined by a formula (:func:`formula_layer`: epsilon, alphabeta,
  bias_neuron and zennit's input-split rules) follows the published definition (Bach et al.
  2015, PLOS ONE 10(7) e0130140, Eqs. 56-60);
* max pooling (:func:`maxpool_layer`) is winner-take-all with ties split equally, or all to the
  first maximum under the convention ``maxpool_ties="first"`` (a padding cell is no candidate);
* an Add node y = sum_k a_k (:func:`add_node`) is a neuron with unit weights, no bias and no
  activation: its rule's search direction v_k (add_z: a_k; add_zplus: a_k^+) gives the root
  condition sum_k (a_k - t v_k) = 0, solved like a linear neuron's, and with the relevance
  model R = c y, R_k = c t v_k; add_epsilon follows its formula R_k = a_k / (y + eps sign(y)) R.

Each records what it did in a :class:`LayerTrace`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mpmath
import numpy as np

from lrp_num.reference.directions import (ROOT_POINT_RULES, add_search_direction, bias_direction, indicator,
                                          search_direction)
from lrp_num.reference.linear import LinearMatrix, exact_products, row_dot, row_sum, to_float
from lrp_num.reference.roots import (GUARD_DIGITS, cancellation_digits, displacement_digits, lrp_sign,
                                     solve_root_condition, stabiliser)

#: relative distance of a root point to its domain's boundary below which float64 cannot decide
#: membership (the derived condition is a sum of n terms rounded to ~n 2^-53 of their magnitudes)
AMBIGUOUS_MARGIN = 1e-9


@dataclass
class LayerTrace:
    """What the reference records about one layer's backward step (one sample).

    ``absorbed_bias`` and ``absorbed_stabiliser`` are the relevance kept by the bias input and
    by the stabiliser; ``hinge_residual`` the largest |g_j(t*)| / (|z_j| + sum |x_i w_ij|) over
    the neurons expanded; ``extra_digits`` the precision added for cancellation near a hinge;
    ``n_active`` / ``n_inside`` count active neurons (z_j > 0) and those whose root point is
    reached with a positive step t* > 0 and lies in the rule's domain (root-point rules only).
    ``index`` is the node's position in the network's (topologically sorted) nodes, ``name``
    its name; ``relevance_out`` is the relevance arriving at its output (summed over its
    consumers), ``relevance_inputs`` the relevance it passes to each input and ``relevance_in``
    their concatenation (the stacked addends of an Add node). ``mixed_signs`` counts the
    neurons of an Add node under add_z with relevance and an addend of the other sign than their
    sum, where the z-rule's positivity does not hold. ``n_ambiguous`` counts the active neurons
    whose root point lies within :data:`AMBIGUOUS_MARGIN` (relative to 1 + max_i |x_i|) of the
    domain's boundary, where a float64 evaluation of the derived condition may decide either way.
    """

    index: int
    layer: str
    rule: str
    relevance_in: Any = None
    relevance_out: Any = None
    absorbed_bias: Any = 0
    absorbed_stabiliser: Any = 0
    hinge_residual: Any = 0
    extra_digits: int = 0
    n_active: int = 0
    n_inside: int = 0
    flow_rows: Any = None
    flow_index: Any = None
    flow: Any = None
    flow_upper: Any = None
    name: str | None = None
    relevance_inputs: Any = None
    mixed_signs: int = 0
    n_ambiguous: int = 0
    parameters: Any = None

    def record_flow(self, rows: np.ndarray, index: np.ndarray, relevance_ij: np.ndarray,
                    upper: np.ndarray) -> None:
        """Keep |R_ij| and |R_j| (float64) of the neurons ``rows`` for rounding-error bounds."""
        self.flow_rows = rows
        self.flow_index = index
        self.flow = np.abs(to_float(relevance_ij)) if relevance_ij.size else np.zeros(index.shape)
        self.flow_upper = np.abs(to_float(upper)) if len(upper) else np.zeros(0)


def root_point_layer(rule, matrix: LinearMatrix, x_ext, relevance, parameters, conventions,
                     bounds, trace: LayerTrace, solver: str, diagnostics: bool):
    """Relevance of a linear layer's inputs under a root-point rule (one sample)."""
    rows = np.flatnonzero(np.array([r != 0 for r in relevance], dtype=bool))
    x_all = x_ext[matrix.index]
    z_all = row_dot(x_all, matrix.weight_mp, matrix.bias_mp)
    if rule == "flat":
        # the unit-weight neuron: weight 1 on every connection, same bias
        w_all = indicator(matrix.connected) * mpmath.mpf(1)
        w_float = matrix.connected.astype(np.float64)
        z_model = row_dot(x_all, w_all, matrix.bias_mp)
    else:
        w_all, w_float, z_model = matrix.weight_mp, matrix.weight, z_all
    lower = upper = None
    if rule == "zbox":
        lower, upper = (bound[matrix.index] for bound in bounds)
    v_all = search_direction(rule, x_all, w_all, w_float, matrix.connected, lower, upper, parameters)
    v0_all = np.array([bias_direction(rule, conventions["bias"], b, parameters) for b in matrix.bias_mp],
                      dtype=object)
    if diagnostics:  # root-point membership over the active neurons
        _membership(rule, matrix, x_all, w_all, v_all, v0_all, z_all, z_model, bounds, trace)
    relevance_in = np.zeros(matrix.n_in + 1, dtype=object)
    relevance_in[:] = mpmath.mpf(0)
    if len(rows) == 0:
        trace.record_flow(rows, matrix.index[rows], np.zeros((0, matrix.index.shape[1]), dtype=object),
                          relevance[rows])
        return relevance_in[: matrix.n_in]
    x, w, v, v0 = x_all[rows], w_all[rows], v_all[rows], v0_all[rows]
    b, r = matrix.bias_mp[rows], relevance[rows]
    # x_i - x~_i = t* v_ij cancels about log10(sum |x w| / |z_j|) digits: raise the precision by
    # that much, so the step computed by the definition keeps the digits the caller asked for
    extra = cancellation_digits(z_model[rows], x, w, b)
    with mpmath.workdps(mpmath.mp.dps + extra):
        z = row_dot(x, w, b)  # the same neurons, rounded at the raised precision
        slope = row_dot(np.column_stack([v, v0]), np.column_stack([w, b]))
        absorber = stabiliser(slope, r, conventions["eps"], conventions["stabilise"], rule)
        slope = slope + absorber
        moving = np.array([value != 0 for value in z], dtype=bool)
        rel = np.empty(x.shape, dtype=object)
        if moving.any():
            m = np.flatnonzero(moving)
            t, residual = solve_root_condition(x[m], v[m], w[m], b[m], v0[m], absorber[m], z[m], slope[m], solver)
            # x_i - x~_i loses log10(|x_i| / |t v_ij|) digits to cancellation: add them
            shift = displacement_digits(x[m], t[:, None] * v[m])
            with mpmath.workdps(mpmath.mp.dps + shift):
                root_point = x[m] - t[:, None] * v[m]
                displacement = x[m] - root_point
            c = r[m] / z[m]  # relevance model R_j = c_j z_j on the neuron's side of the hinge
            rel[m] = (c[:, None] * w[m]) * displacement  # gradient at x~ times displacement
            extra += shift
            trace.absorbed_bias += (c * b[m] * t * v0[m]).sum()
            trace.absorbed_stabiliser += (c * t * absorber[m]).sum()
            scale = np.abs(z[m]) + np.abs(x[m] * w[m]).sum(axis=1) + np.abs(b[m])
            trace.hinge_residual = max([trace.hinge_residual] + [abs(g) / s for g, s in zip(residual, scale) if s != 0])
        if not moving.all():
            # z_j = 0: x is its own root point; the decomposition is the limit z_j -> 0 of the
            # Taylor step, which splits R_j in proportion to w_ij times the unit-step displacement
            s = np.flatnonzero(~moving)
            per_step = r[s] / slope[s]
            rel[s] = per_step[:, None] * w[s] * v[s]
            trace.absorbed_bias += (per_step * b[s] * v0[s]).sum()
            trace.absorbed_stabiliser += (per_step * absorber[s]).sum()
        trace.extra_digits = max(trace.extra_digits, extra)
        trace.record_flow(rows, matrix.index[rows], rel, r)
        np.add.at(relevance_in, matrix.index[rows], rel)
    return relevance_in[: matrix.n_in]


def _membership(rule, matrix, x_all, w_all, v_all, v0_all, z_all, z_model, bounds, trace):
    """Count active neurons and those whose root point lies in the rule's domain (direct check)."""
    domain = ROOT_POINT_RULES[rule]
    active = np.flatnonzero(np.array([value > 0 for value in z_all], dtype=bool))
    trace.n_active += len(active)
    if len(active) == 0:
        return
    tolerance = mpmath.mpf(10) ** (-(mpmath.mp.dps - GUARD_DIGITS - 5))
    for j in active:
        slope = (v_all[j] * w_all[j]).sum() + v0_all[j] * matrix.bias_mp[j]
        if slope == 0:
            continue  # no root point along the direction
        t = z_model[j] / slope
        if t <= 0:
            continue  # the direction increases z_j: x~ is behind x, every R_ij flips sign
        root_point = x_all[j] - t * v_all[j]
        connected = matrix.connected[j]
        moved = [c and step != 0 for c, step in zip(connected, v_all[j])]  # coordinates the search moves
        size = 1 + max(abs(value) for value in x_all[j])
        scale = tolerance * size
        if domain == "orthant":  # signed distances of the coordinates to the orthant's boundary
            distances = list(root_point)
        elif domain == "box":
            low, high = bounds[0][matrix.index[j]], bounds[1][matrix.index[j]]
            distances = [min(p - lo, hi - p) for p, lo, hi in zip(root_point, low, high)]
        else:
            distances = [mpmath.inf] * len(root_point)
        inside = all(d >= -scale for d, c in zip(distances, connected) if c)
        trace.n_inside += int(inside)
        # a moved coordinate within AMBIGUOUS_MARGIN of the boundary: float64 (the engine's derived
        # condition) may decide either way
        margin = min((abs(d) for d, m in zip(distances, moved) if m), default=mpmath.inf)
        trace.n_ambiguous += int(margin <= AMBIGUOUS_MARGIN * size)


def formula_layer(rule, matrix: LinearMatrix, x_ext, relevance, parameters, conventions,
                  trace: LayerTrace):
    """Relevance of a linear layer's inputs under epsilon, alphabeta, bias_neuron, zplus_split
    or gamma_split."""
    x = x_ext[matrix.index]
    contributions = exact_products(x, matrix.weight_mp)  # z_ij = x_i w_ij (Bach et al. 2015, Eq. 50)
    b = matrix.bias_mp
    zero = mpmath.mpf(0)
    masks = None
    if rule in ("epsilon", "bias_neuron"):
        groups = [(mpmath.mpf(1), contributions, b)]
    elif rule in ("zplus_split", "gamma_split", "gamma_split_negative"):
        groups = [_split_group(rule, x, matrix, parameters, conventions["bias"])]
        if rule == "gamma_split" and conventions.get("by_sign"):
            # zennit's Gamma: the group of z_j's sign (z_j with its bias); z_j = 0 passes nothing
            z = row_sum(contributions, b)
            groups.append(_split_group("gamma_split_negative", x, matrix, parameters, conventions["bias"]))
            masks = [np.array([1 if v > 0 else 0 for v in z]), np.array([1 if v < 0 else 0 for v in z])]
    else:  # alpha-beta, Eq. (60): positive and negative contributions separately
        bias = conventions["bias"]
        positive = np.vectorize(lambda q: q if q > 0 else zero, otypes=[object])(contributions)
        negative = np.vectorize(lambda q: q if q < 0 else zero, otypes=[object])(contributions)
        if bias == "captum":  # the unmodified b_j in the one modified z' (the positive term)
            share_plus = np.array(list(b), dtype=object)
            share_minus = np.array([zero] * len(b), dtype=object)
        else:  # "neuron", "zennit": b^+ and b^- join their groups; "dtd": no bias
            kept = bias not in ("dtd", "magnitude")
            share_plus = np.array([(bv if bv > 0 else zero) if kept else zero for bv in b], dtype=object)
            share_minus = np.array([(bv if bv < 0 else zero) if kept else zero for bv in b], dtype=object)
        groups = [(mpmath.mpf(parameters["alpha"]), positive, share_plus),
                  (-mpmath.mpf(parameters["beta"]), negative, share_minus)]
    relevance_in = np.zeros(matrix.n_in + 1, dtype=object)
    relevance_in[:] = zero
    flow = np.zeros(matrix.index.shape)
    for n, (coefficient, q, share) in enumerate(groups):
        d = row_sum(q, share)
        if rule == "epsilon":  # the rule's own stabiliser, everywhere, sign(0) = +1
            epsilon = mpmath.mpf(parameters["epsilon"])
            # "signed" 0: d + eps whatever d's sign (LXT 2.1, restated for its audit)
            signed = bool(parameters.get("signed", 1.0))
            own = np.array([epsilon * (lrp_sign(value) if signed else 1) for value in d], dtype=object)
            d = d + own
        else:
            own = np.zeros(len(d), dtype=object)
        numerator = coefficient * relevance if masks is None else coefficient * relevance * masks[n]
        absorber = stabiliser(d, numerator, conventions["eps"], conventions["stabilise"], rule)
        d = d + absorber
        ratio = np.array([n / dv if n != 0 else zero for n, dv in zip(numerator, d)], dtype=object)
        np.add.at(relevance_in, matrix.index, q * ratio[:, None])
        flow += np.abs(to_float(q * ratio[:, None]))
        trace.absorbed_bias += (share * ratio).sum() if rule != "epsilon" and rule != "bias_neuron" \
            else (b * ratio).sum()
        trace.absorbed_stabiliser += ((own + absorber) * ratio).sum()
    trace.flow_rows, trace.flow_index = np.arange(matrix.n_out), matrix.index
    trace.flow, trace.flow_upper = flow, np.abs(to_float(relevance))
    return relevance_in[: matrix.n_in]


def magnitude_bias_split(matrix: LinearMatrix, x_ext, relevance, eps):
    """R_j times |z_j - b_j| / (|z_j - b_j| + |b_j| + eps): the share of R_j the bias does not keep
    under the "magnitude" convention (autoLRP 0.2.0, ``apply_bias_split``); 0 where the
    denominator is 0."""
    linear = row_dot(x_ext[matrix.index], matrix.weight_mp)
    e = mpmath.mpf(eps)
    scaled = np.empty(len(relevance), dtype=object)
    for j, (r, z, bv) in enumerate(zip(relevance, linear, matrix.bias_mp)):
        denominator = abs(z) + abs(bv) + e
        scaled[j] = r * abs(z) / denominator if denominator != 0 else mpmath.mpf(0)
    return scaled


def _split_group(rule, x, matrix: LinearMatrix, parameters, bias: str):
    """(1, q, bias share) of zennit's input-split rules, by their definition (zennit/rules.py).

    zplus_split (zennit ZPlus): q_ij = x_i^+ w_ij^+ + x_i^- w_ij^-, the bias b_j^+ under the
    "zennit" convention, b_j under "neuron" / "captum", none under "dtd".
    gamma_split (zennit Gamma, neurons with z_j > 0): q_ij = x_i^+ (w_ij + gamma w_ij^+)
    + x_i^- (w_ij + gamma w_ij^-), and the rule itself puts b_j + gamma b_j^+ in the denominator.
    gamma_split_negative (zennit Gamma, z_j < 0): q_ij = x_i^+ (w_ij + gamma w_ij^-)
    + x_i^- (w_ij + gamma w_ij^+), with b_j + gamma b_j^- in the denominator.
    """
    zero = mpmath.mpf(0)
    w = matrix.weight_mp
    w_plus = np.vectorize(lambda v: v if v > 0 else zero, otypes=[object])(w)
    w_minus = np.vectorize(lambda v: v if v < 0 else zero, otypes=[object])(w)
    x_plus = np.vectorize(lambda v: v if v > 0 else zero, otypes=[object])(x)
    x_minus = np.vectorize(lambda v: v if v < 0 else zero, otypes=[object])(x)
    b = matrix.bias_mp
    if rule == "zplus_split":
        q = x_plus * w_plus + x_minus * w_minus
        if bias in ("dtd", "magnitude"):
            share = np.array([zero] * len(b), dtype=object)
        elif bias == "zennit":
            share = np.array([bv if bv > 0 else zero for bv in b], dtype=object)
        else:
            share = b
        return mpmath.mpf(1), q, share
    g = mpmath.mpf(parameters["gamma"])
    if rule == "gamma_split_negative":  # z_j < 0: the weight parts swap, gamma on b^-
        q = x_plus * (w + g * w_minus) + x_minus * (w + g * w_plus)
        share = np.array([bv + g * (bv if bv < 0 else zero) for bv in b], dtype=object)
        return mpmath.mpf(1), q, share
    q = x_plus * (w + g * w_plus) + x_minus * (w + g * w_minus)
    share = np.array([bv + g * (bv if bv > 0 else zero) for bv in b], dtype=object)
    return mpmath.mpf(1), q, share


def maxpool_layer(index_rows, connected, x, relevance, n_in, trace: LayerTrace | None = None,
                  ties: str = "split"):
    """Winner-take-all: R_j goes to the maximal inputs of window j, split equally between ties
    (``ties="split"``, the p -> infinity limit of L_p pooling), or whole to the first of them in
    window order (``ties="first"``, row-major: the convention of PyTorch's gradient).

    Only connected cells are candidates: a padding cell (-inf in PyTorch) never wins.
    """
    relevance_in = np.zeros(n_in + 1, dtype=object)
    relevance_in[:] = mpmath.mpf(0)
    flow = np.zeros(index_rows.shape)
    for j, (window, inside) in enumerate(zip(index_rows, connected)):
        if relevance[j] == 0:
            continue
        cells = np.flatnonzero(inside)
        values = x[window[cells]]
        top = max(values)
        winners = [k for k, value in zip(cells, values) if value == top]
        if ties == "first":
            winners = winners[:1]
        share = relevance[j] / len(winners)
        for k in winners:
            relevance_in[window[k]] += share
            flow[j, k] = abs(float(share))
    if trace is not None:
        trace.flow_rows, trace.flow_index = np.arange(len(index_rows)), index_rows
        trace.flow, trace.flow_upper = flow, np.abs(to_float(relevance))
    return relevance_in[:n_in]


def add_node(rule: str, addends: list[np.ndarray], relevance: np.ndarray, parameters, conventions,
             trace: LayerTrace, solver: str) -> list[np.ndarray]:
    """Relevance of each addend of y = sum_k a_k (one sample), by the rule's definition.

    Root-point rules (add_z, add_zplus): the relevance model R = c y, c = R / y, is expanded at
    the root a~_k = a_k - t v_k of sum_k (a_k - t v_k) = 0 along the search direction v_k, solved
    numerically (:func:`solve_root_condition` with unit weights and no bias); the gradient of
    R is c for every addend, so R_k = c (a_k - a~_k) = c t v_k. Where y = 0 the limit splits R in
    proportion to v_k. A zero slope sum_k v_k with relevance arriving takes the stabiliser of
    the conventions (eps sign(slope), sign(0) = +1), which keeps c t eps.
    add_epsilon, a formula rule: R_k = a_k / (y + epsilon sign(y)) R, the stabiliser keeping the rest.
    """
    a = np.stack(addends, axis=1)  # (n, K): row j holds the addends of output neuron j
    n, k_addends = a.shape
    zero = mpmath.mpf(0)
    lower = np.empty((n, k_addends), dtype=object)
    lower[:] = zero
    stacked_index = np.arange(k_addends)[None, :] * n + np.arange(n)[:, None]
    rows = np.flatnonzero(np.array([r != 0 for r in relevance], dtype=bool))
    x, r = a[rows], relevance[rows]
    ones = np.full(x.shape, mpmath.mpf(1), dtype=object)
    nothing = np.full(len(rows), zero, dtype=object)
    rel = np.empty(x.shape, dtype=object)
    rel[:] = zero
    if len(rows):
        y_rows = row_sum(x)
        extra = cancellation_digits(y_rows, x, ones, nothing)  # a_1 + a_2 may cancel
        with mpmath.workdps(mpmath.mp.dps + extra):
            y = row_sum(x)
            if rule == "add_epsilon":
                epsilon = mpmath.mpf(parameters["epsilon"])
                signed = bool(parameters.get("signed", 1.0))  # 0: y + eps whatever y's sign (LXT)
                own = np.array([epsilon * (lrp_sign(value) if signed else 1) for value in y], dtype=object)
                d = y + own
                absorber = stabiliser(d, r, conventions["eps"], conventions["stabilise"], rule)
                d = d + absorber
                ratio = np.array([rv / dv for rv, dv in zip(r, d)], dtype=object)
                rel = x * ratio[:, None]
                trace.absorbed_stabiliser += ((own + absorber) * ratio).sum()
            else:
                v = add_search_direction(rule, x)
                if rule == "add_z":  # R_k has the sign of R only where every a_k has the sign of y
                    trace.mixed_signs += sum(1 for row, yv in zip(x, y) if any(ak * yv < 0 for ak in row))
                slope = row_sum(v)  # -g'(t) of g(t) = sum_k (a_k - t v_k)
                absorber = stabiliser(slope, r, conventions["eps"], conventions["stabilise"], rule)
                slope = slope + absorber
                moving = np.array([value != 0 for value in y], dtype=bool)
                if moving.any():
                    m = np.flatnonzero(moving)
                    t, residual = solve_root_condition(x[m], v[m], ones[m], nothing[m], nothing[m],
                                                       absorber[m], y[m], slope[m], solver)
                    shift = displacement_digits(x[m], t[:, None] * v[m])
                    with mpmath.workdps(mpmath.mp.dps + shift):
                        root_point = x[m] - t[:, None] * v[m]
                        displacement = x[m] - root_point
                    c = r[m] / y[m]  # relevance model R = c y
                    rel[m] = c[:, None] * displacement  # dR/da_k = c, times a_k - a~_k
                    extra += shift
                    trace.absorbed_stabiliser += (c * t * absorber[m]).sum()
                    scale = np.abs(y[m]) + np.abs(x[m]).sum(axis=1)
                    trace.hinge_residual = max([trace.hinge_residual] + [abs(g) / s for g, s in zip(residual, scale) if s != 0])
                if not moving.all():  # y = 0: the limit of the step, R in proportion to v_k
                    s = np.flatnonzero(~moving)
                    per_step = r[s] / slope[s]
                    rel[s] = per_step[:, None] * v[s]
                    trace.absorbed_stabiliser += (per_step * absorber[s]).sum()
            trace.extra_digits = max(trace.extra_digits, extra)
        lower[rows] = rel
    trace.record_flow(rows, stacked_index[rows], rel, r)
    return [lower[:, k] for k in range(k_addends)]


__all__ = ["LayerTrace", "add_node", "formula_layer", "magnitude_bias_split", "maxpool_layer", "root_point_layer"]
