"""High-precision reference for LRP and deep Taylor decomposition, computed by the definition.

This module recomputes what :func:`lrp_num.explain` computes, in mpmath at ``dps`` significant
digits, along a code path that shares nothing with the engine's kernels:

* the forward pass is redone in mpmath;
* every linear layer (Dense, Conv2d, sum, average, adaptive and global average pooling,
  ChannelAffine) becomes an explicit matrix, stored
  row by row (the inputs each output neuron is connected to, and the weights w_ij), built from
  the layer's weights and window geometry by index arithmetic written here, not by the engine's
  convolution code;
* for a root-point rule (w2, zplus, zbox, lrp0, gamma, flat) each neuron j with upper relevance
  R_j is expanded as in Montavon et al. (2017), Pattern Recognition 65, Sec. 3-4: the rule's
  search direction v_ij (written below as its *definition*) gives the root condition

      g_j(t) = sum_i (x_i - t v_ij) w_ij + (1 - t v_0j) b_j - t a_j = 0,

  which is solved numerically (see :func:`_solve_root_condition`); the root point is
  x~_i = x_i - t* v_ij, the relevance model is R_j = c_j max(0, z_j) with c_j = R_j / z_j, its
  one-sided gradient on the active side is c_j w_ij, and R_ij = c_j w_ij (x_i - x~_i);
* rules defined by a formula rather than a root point (epsilon, alphabeta, bias_neuron) follow
  their published definitions (Bach et al. 2015, PLOS ONE 10(7) e0130140, Eqs. 56-60);
* max pooling is winner-take-all with ties split equally (a padding cell is no candidate);
  ReLU, Flatten, Identity and Dropout pass relevance through;
* graph models (:class:`lrp_num.engine.graph.Graph`; a Sequential is the chain of its layers) are
  walked node by node in reverse topological order, relevance arriving at a tensor from several
  consumers is summed, and Concat slices it back onto its inputs;
* an Add node y = sum_k a_k is a neuron with unit weights, no bias and no activation: its rule's
  search direction v_k (add_z: a_k; add_zplus: a_k^+) gives the root condition
  sum_k (a_k - t v_k) = 0, solved numerically like a linear neuron's, and with the relevance
  model R = c y, R_k = c t v_k; add_epsilon follows its formula R_k = a_k / (y + eps sign(y)) R;
* batch norms are folded here, in mpmath, from the BatchNorm parameters (or kept as a diagonal
  matrix where the engine made them a ChannelAffine), never taken from the engine's folded
  weights (:mod:`lrp_num.reference.linear`).

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

(alpha-beta, a formula rule, adds b^+ and b^- to its two groups under "neuron" and "zennit",
and under "captum" the unmodified b_j to its positive group only, as lrp_num.engine.conventions states.)
The step then has slope sum_i v_ij w_ij + v_0j b_j, the engine's denominator with its bias share.

Stabiliser in root-point terms
------------------------------
A stabiliser is one more input that the root point moves, with q = a_j = eps sign(d_j)
(sign(0) = +1, d_j the unstabilised slope), present where d_j == 0 (``stabilise="zero"``) or at
every neuron (``"everywhere"``). It keeps R_aj = c_j t* a_j: the relevance the stabiliser absorbs.

All arithmetic runs at ``dps + GUARD_DIGITS`` digits; results are rounded once to ``dps``.

Checks
------
Every public function checks its arguments with :mod:`lrp_num.checks`, as :func:`lrp_num.explain`
does: ``dps`` an integer from 20 to 10000 (PrecisionError), a finite, non-empty, numeric input
(NonFiniteError, ShapeError), rule parameters the rule has, finite and >= 0
(KernelArgumentError), no rule parameters with a composite, a valid target (TargetError), an
input box that is finite, fits the input and contains it where z^B uses it (DomainError), and
no negative input where a rule derived for the orthant (zplus, gamma) is applied (DomainError).
The domains come from :data:`ROOT_POINT_RULES`, this module's own table, not from the kernels.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Mapping

import mpmath
import numpy as np

from lrp_num.checks import (check_composite_parameters, check_dps, check_orthant,
                            check_rule_parameters, check_target, explanation_input)
from lrp_num.errors import (KernelArgumentError, LRPError, MissingBoundsError, ShapeError,
                            TargetError, UnknownRuleError, UnsupportedLayerError,
                            ZeroDenominatorError)
from lrp_num.layers import (Add, BatchNorm, ChannelAffine, Concat, Conv2d, Dense, Dropout, Flatten,
                            Identity, MaxPool2d, ReLU)
from lrp_num.progress import progress
from lrp_num.reference.linear import (LINEAR_LAYERS, LinearMatrix, batchnorm_matrix, fold_batchnorms,
                                      linear_matrix, pool_windows)
from lrp_num.reference.linear import to_mpf as _to_mpf

#: extra working digits beyond the requested ``dps``
GUARD_DIGITS = 10

#: rules expanded at a root point, and the input domain each is derived for
ROOT_POINT_RULES: dict[str, str] = {
    "w2": "R^n", "zplus": "orthant", "zbox": "box", "lrp0": "R^n", "gamma": "orthant", "flat": "R^n",
}
#: rules defined by their propagation formula (Bach et al. 2015)
FORMULA_RULES = ("epsilon", "alphabeta", "bias_neuron", "zplus_split", "gamma_split")
RULES = tuple(ROOT_POINT_RULES) + FORMULA_RULES
#: parameters of each rule and their defaults (those of the derivations in ``derivations/``)
RULE_DEFAULTS: dict[str, dict[str, float]] = {
    "gamma": {"gamma": 0.25}, "epsilon": {"epsilon": 0.25}, "alphabeta": {"alpha": 2.0, "beta": 1.0},
    "gamma_split": {"gamma": 0.25}, "add_epsilon": {"epsilon": 0.25},
}
BIAS_CONVENTIONS = ("dtd", "neuron", "zennit", "captum")
STABILISE_MODES = ("zero", "everywhere")


# -- search directions: the definition of each root-point rule ----------------------------------

def _indicator(condition: np.ndarray) -> np.ndarray:
    return condition.astype(np.int64)


def _direction(rule: str, x: np.ndarray, w: np.ndarray, w_float: np.ndarray, connected: np.ndarray,
               lower: np.ndarray | None, upper: np.ndarray | None, parameters: Mapping[str, Any]) -> np.ndarray:
    """v_ij for every connection of a layer, rows = output neurons (object arrays of mpf).

    ``x`` holds x_i gathered per row, ``w`` the weights w_ij (mpf), ``w_float`` the same weights
    in float64 (for their signs), ``connected`` the layer's connectivity.
    """
    if rule == "w2":  # steepest descent in R^n: along the weight vector
        return w
    if rule == "zplus":  # shrink only the excitatory inputs, stay in the orthant
        return x * _indicator(w_float > 0)
    if rule == "zbox":  # towards the box corner that minimises z_j; unconnected inputs stay
        return (x - lower) * _indicator(w_float > 0) + (x - upper) * _indicator(w_float < 0)
    if rule == "lrp0":  # towards the origin: x~ = (1 - t) x
        return x
    if rule == "gamma":  # excitatory inputs weighted by 1 + gamma
        return x * (1 + mpmath.mpf(parameters["gamma"]) * _indicator(w_float > 0))
    if rule == "flat":  # w2 on the neuron whose weights are all 1: only connectivity counts
        return _indicator(connected) * mpmath.mpf(1)
    raise UnknownRuleError(f"{rule!r} is not a root-point rule")


def bias_direction(rule: str, bias: str, b: float, parameters: Mapping[str, Any] | None = None) -> Any:
    """v_0j, the search direction of the bias input x_0 = 1 (weight b_j); see the module doc."""
    if bias == "dtd":
        return 0
    if bias in ("neuron", "captum"):  # captum's rules keep the full bias in z'
        return 1
    if bias == "zennit":
        table = {"zplus": 1 if b > 0 else 0, "w2": mpmath.mpf(b), "lrp0": 1, "gamma": 1,
                 "zbox": 0, "flat": 0}
        return table[rule]
    raise UnknownRuleError(f"unknown bias convention {bias!r}; known: {', '.join(BIAS_CONVENTIONS)}")


# -- per-layer relevance ------------------------------------------------------------------------

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
    sum, where the z-rule's positivity does not hold.
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

    def record_flow(self, rows: np.ndarray, index: np.ndarray, relevance_ij: np.ndarray,
                    upper: np.ndarray) -> None:
        """Keep |R_ij| and |R_j| (float64) of the neurons ``rows`` for rounding-error bounds."""
        self.flow_rows = rows
        self.flow_index = index
        self.flow = np.abs(to_float(relevance_ij)) if relevance_ij.size else np.zeros(index.shape)
        self.flow_upper = np.abs(to_float(upper)) if len(upper) else np.zeros(0)


def _sign(value) -> int:
    return 1 if value >= 0 else -1  # sign(0) = +1


def _stabilised(d: np.ndarray, relevance: np.ndarray, eps: float, stabilise: str,
                rule: str) -> np.ndarray:
    """The stabiliser a_j per row (0 where none applies); raise where a zero slope carries relevance."""
    if stabilise not in STABILISE_MODES:
        raise UnknownRuleError(f"unknown stabiliser mode {stabilise!r}; known: {', '.join(STABILISE_MODES)}")
    e = mpmath.mpf(eps)
    absorber = np.empty(len(d), dtype=object)
    for j, value in enumerate(d):
        absorber[j] = (e * _sign(value)) if (stabilise == "everywhere" or value == 0) else mpmath.mpf(0)
        if value + absorber[j] == 0 and relevance[j] != 0:
            raise ZeroDenominatorError(
                f"rule {rule!r}: a denominator is 0 where the upper relevance is not, and eps = 0; "
                "pass eps > 0 to stabilise it")
    return absorber


def _solve_root_condition(x, v, w, b, v0, absorber, z, slope, solver):
    """Solve g(t) = sum_i (x_i - t v_i) w_i + (1 - t v0) b - t a = 0 for t, row by row.

    g is affine in t, so Newton's method from t = 0 (the point x itself, g(0) = z_j) reaches the
    root in one step in exact arithmetic: t1 = z_j / s_j with the slope s_j = -g'(t). One more
    Newton step with the residual g(t1) re-evaluated by the definition removes the rounding of
    the first; the hinge residual |g(t*)| is returned as a check. ``solver="findroot"`` calls
    mpmath.findroot (secant) on g instead: slower, used by the tests to confirm the same root.
    """
    def condition(row, t):
        return (((x[row] - t * v[row]) * w[row]).sum() + (1 - t * v0[row]) * b[row]
                - t * absorber[row])

    steps = np.empty(len(z), dtype=object)
    residual = np.empty(len(z), dtype=object)
    for row in range(len(z)):
        if solver == "findroot":
            steps[row] = mpmath.findroot(lambda t: condition(row, t), (mpmath.mpf(0), z[row] / slope[row]))
        else:
            t = z[row] / slope[row]
            steps[row] = t + condition(row, t) / slope[row]
        residual[row] = condition(row, steps[row])
    return steps, residual


def _root_point_layer(rule, matrix: LinearMatrix, x_ext, relevance, parameters, conventions,
                      bounds, trace: LayerTrace, solver: str, diagnostics: bool):
    """Relevance of a linear layer's inputs under a root-point rule (one sample)."""
    rows = np.flatnonzero(np.array([r != 0 for r in relevance], dtype=bool))
    x_all = x_ext[matrix.index]
    z_all = (x_all * matrix.weight_mp).sum(axis=1) + matrix.bias_mp
    if rule == "flat":
        # the unit-weight neuron: weight 1 on every connection, same bias
        w_all = _indicator(matrix.connected) * mpmath.mpf(1)
        w_float = matrix.connected.astype(np.float64)
        z_model = (x_all * w_all).sum(axis=1) + matrix.bias_mp
    else:
        w_all, w_float, z_model = matrix.weight_mp, matrix.weight, z_all
    lower = upper = None
    if rule == "zbox":
        lower, upper = (bound[matrix.index] for bound in bounds)
    v_all = _direction(rule, x_all, w_all, w_float, matrix.connected, lower, upper, parameters)
    v0_all = np.array([bias_direction(rule, conventions["bias"], b, parameters) for b in matrix.bias],
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
    extra = _cancellation_digits(z_model[rows], x, w, b)
    with mpmath.workdps(mpmath.mp.dps + extra):
        z = (x * w).sum(axis=1) + b  # the same neurons, summed at the raised precision
        slope = (v * w).sum(axis=1) + v0 * b
        absorber = _stabilised(slope, r, conventions["eps"], conventions["stabilise"], rule)
        slope = slope + absorber
        moving = np.array([value != 0 for value in z], dtype=bool)
        rel = np.empty(x.shape, dtype=object)
        if moving.any():
            m = np.flatnonzero(moving)
            t, residual = _solve_root_condition(x[m], v[m], w[m], b[m], v0[m], absorber[m], z[m], slope[m], solver)
            # x_i - x~_i loses log10(|x_i| / |t v_ij|) digits to cancellation: add them
            shift = _displacement_digits(x[m], t[:, None] * v[m])
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


#: at most this many digits are added for cancellation near a hinge
MAX_EXTRA_DIGITS = 2000


def _displacement_digits(x: np.ndarray, step: np.ndarray) -> int:
    """ceil(log10(max |x_i| / |t v_ij|)) over connections with both non-zero, >= 0."""
    worst = mpmath.mpf(1)
    for xi, si in zip(x.ravel(), step.ravel()):
        if xi != 0 and si != 0:
            worst = max(worst, abs(xi) / abs(si))
    return min(MAX_EXTRA_DIGITS, int(mpmath.ceil(mpmath.log10(worst))))


def _cancellation_digits(z, x, w, b) -> int:
    """ceil(log10(max_j (sum_i |x_i w_ij| + |b_j|) / |z_j|)) over neurons with z_j != 0, >= 0."""
    worst = mpmath.mpf(1)
    for zj, xj, wj, bj in zip(z, x, w, b):
        if zj != 0:
            worst = max(worst, (sum(abs(xi * wi) for xi, wi in zip(xj, wj)) + abs(bj)) / abs(zj))
    return min(MAX_EXTRA_DIGITS, int(mpmath.ceil(mpmath.log10(worst))))


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
        scale = tolerance * (1 + max(abs(value) for value in x_all[j]))
        if domain == "orthant":
            inside = all(p >= -scale for p, c in zip(root_point, connected) if c)
        elif domain == "box":
            low, high = bounds[0][matrix.index[j]], bounds[1][matrix.index[j]]
            inside = all(lo - scale <= p <= hi + scale
                         for p, lo, hi, c in zip(root_point, low, high, connected) if c)
        else:
            inside = True
        trace.n_inside += int(inside)


def _formula_layer(rule, matrix: LinearMatrix, x_ext, relevance, parameters, conventions,
                   trace: LayerTrace):
    """Relevance of a linear layer's inputs under epsilon, alphabeta, bias_neuron, zplus_split
    or gamma_split."""
    x = x_ext[matrix.index]
    contributions = x * matrix.weight_mp  # z_ij = x_i w_ij (Bach et al. 2015, Eq. 50)
    b = matrix.bias_mp
    zero = mpmath.mpf(0)
    if rule in ("epsilon", "bias_neuron"):
        groups = [(mpmath.mpf(1), contributions, b)]
    elif rule in ("zplus_split", "gamma_split"):
        groups = [_split_group(rule, x, matrix, parameters, conventions["bias"])]
    else:  # alpha-beta, Eq. (60): positive and negative contributions separately
        bias = conventions["bias"]
        positive = np.vectorize(lambda q: q if q > 0 else zero, otypes=[object])(contributions)
        negative = np.vectorize(lambda q: q if q < 0 else zero, otypes=[object])(contributions)
        if bias == "captum":  # the unmodified b_j in the one modified z' (the positive term)
            share_plus = np.array(list(b), dtype=object)
            share_minus = np.array([zero] * len(b), dtype=object)
        else:  # "neuron", "zennit": b^+ and b^- join their groups; "dtd": no bias
            share_plus = np.array([(bv if bv > 0 else zero) if bias != "dtd" else zero for bv in b], dtype=object)
            share_minus = np.array([(bv if bv < 0 else zero) if bias != "dtd" else zero for bv in b], dtype=object)
        groups = [(mpmath.mpf(parameters["alpha"]), positive, share_plus),
                  (-mpmath.mpf(parameters["beta"]), negative, share_minus)]
    relevance_in = np.zeros(matrix.n_in + 1, dtype=object)
    relevance_in[:] = zero
    flow = np.zeros(matrix.index.shape)
    for coefficient, q, share in groups:
        d = q.sum(axis=1) + share
        if rule == "epsilon":  # the rule's own stabiliser, everywhere, sign(0) = +1
            epsilon = mpmath.mpf(parameters["epsilon"])
            own = np.array([epsilon * _sign(value) for value in d], dtype=object)
            d = d + own
        else:
            own = np.zeros(len(d), dtype=object)
        numerator = coefficient * relevance
        absorber = _stabilised(d, numerator, conventions["eps"], conventions["stabilise"], rule)
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


def _split_group(rule, x, matrix: LinearMatrix, parameters, bias: str):
    """(1, q, bias share) of zennit's input-split rules, by their definition (zennit/rules.py).

    zplus_split (zennit ZPlus): q_ij = x_i^+ w_ij^+ + x_i^- w_ij^-, the bias b_j^+ under the
    "zennit" convention, b_j under "neuron" / "captum", none under "dtd".
    gamma_split (zennit Gamma, neurons with z_j > 0): q_ij = x_i^+ (w_ij + gamma w_ij^+)
    + x_i^- (w_ij + gamma w_ij^-), and the rule itself puts b_j + gamma b_j^+ in the denominator.
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
        if bias == "dtd":
            share = np.array([zero] * len(b), dtype=object)
        elif bias == "zennit":
            share = np.array([bv if bv > 0 else zero for bv in b], dtype=object)
        else:
            share = b
        return mpmath.mpf(1), q, share
    g = mpmath.mpf(parameters["gamma"])
    q = x_plus * (w + g * w_plus) + x_minus * (w + g * w_minus)
    share = np.array([bv + g * (bv if bv > 0 else zero) for bv in b], dtype=object)
    return mpmath.mpf(1), q, share


def _maxpool_layer(index_rows, connected, x, relevance, n_in, trace: LayerTrace | None = None):
    """Winner-take-all: R_j goes to the maximal inputs of window j, split equally between ties.

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
        share = relevance[j] / len(winners)
        for k in winners:
            relevance_in[window[k]] += share
            flow[j, k] = abs(float(share))
    if trace is not None:
        trace.flow_rows, trace.flow_index = np.arange(len(index_rows)), index_rows
        trace.flow, trace.flow_upper = flow, np.abs(to_float(relevance))
    return relevance_in[:n_in]


# -- the Add node: a neuron y = sum_k a_k with unit weights, no bias, no activation ---------------

#: the rules of an Add node; "lrp0" (the z-rule on the stacked addends, as the engine plans it
#: before the derived kernels arrive) is the same mathematics as "add_z"
ADD_RULES = ("add_z", "add_zplus", "add_epsilon")
ADD_ALIASES = {"lrp0": "add_z"}


def _add_search_direction(rule: str, a: np.ndarray) -> np.ndarray:
    """v_k of each addend (rows = output neurons, columns = addends): the rule's definition."""
    if rule == "add_z":  # towards the origin: a~ = (1 - t) a
        return a
    if rule == "add_zplus":  # shrink only the positive addends
        zero = mpmath.mpf(0)
        return np.vectorize(lambda value: value if value > 0 else zero, otypes=[object])(a)
    raise UnknownRuleError(f"{rule!r} is not a root-point rule of the Add node")


def _add_node(rule: str, addends: list[np.ndarray], relevance: np.ndarray, parameters, conventions,
              trace: LayerTrace, solver: str) -> list[np.ndarray]:
    """Relevance of each addend of y = sum_k a_k (one sample), by the rule's definition.

    Root-point rules (add_z, add_zplus): the relevance model R = c y, c = R / y, is expanded at
    the root a~_k = a_k - t v_k of sum_k (a_k - t v_k) = 0 along the search direction v_k, solved
    numerically (:func:`_solve_root_condition` with unit weights and no bias); the gradient of
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
        y_rows = x.sum(axis=1)
        extra = _cancellation_digits(y_rows, x, ones, nothing)  # a_1 + a_2 may cancel
        with mpmath.workdps(mpmath.mp.dps + extra):
            y = x.sum(axis=1)
            if rule == "add_epsilon":
                epsilon = mpmath.mpf(parameters["epsilon"])
                own = np.array([epsilon * _sign(value) for value in y], dtype=object)
                d = y + own
                absorber = _stabilised(d, r, conventions["eps"], conventions["stabilise"], rule)
                d = d + absorber
                ratio = np.array([rv / dv for rv, dv in zip(r, d)], dtype=object)
                rel = x * ratio[:, None]
                trace.absorbed_stabiliser += ((own + absorber) * ratio).sum()
            else:
                v = _add_search_direction(rule, x)
                if rule == "add_z":  # R_k has the sign of R only where every a_k has the sign of y
                    trace.mixed_signs += sum(1 for row, yv in zip(x, y) if any(ak * yv < 0 for ak in row))
                slope = v.sum(axis=1)  # -g'(t) of g(t) = sum_k (a_k - t v_k)
                absorber = _stabilised(slope, r, conventions["eps"], conventions["stabilise"], rule)
                slope = slope + absorber
                moving = np.array([value != 0 for value in y], dtype=bool)
                if moving.any():
                    m = np.flatnonzero(moving)
                    t, residual = _solve_root_condition(x[m], v[m], ones[m], nothing[m], nothing[m],
                                                        absorber[m], y[m], slope[m], solver)
                    shift = _displacement_digits(x[m], t[:, None] * v[m])
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


# -- the network ---------------------------------------------------------------------------------

#: operations that pass values and relevance on unchanged (Flatten reshapes; every tensor of the
#: reference is flattened in C order, so it is the identity here too)
_PASS_THROUGH = (ReLU, Identity, Dropout, Flatten)
#: operations a z^B node may follow: they do not change values, so the input box still bounds them
_SHAPE_ONLY = (Identity, Dropout, Flatten)


@dataclass(frozen=True)
class ReferenceNode:
    """One node as the reference walks it.

    ``operation`` is the engine's resolved operation (its repr names the node in traces),
    ``source`` the operation as given (the unfolded Dense/Conv2d, or the BatchNorm that the
    engine made a ChannelAffine), ``batchnorms`` the batch norms folded into a linear node, in order.
    """

    index: int
    name: str
    operation: object
    inputs: tuple[str, ...]
    source: object
    batchnorms: tuple = ()


def _reference_nodes(network) -> tuple[list[ReferenceNode], str, str]:
    """(nodes in topological order, input name, output name) of a Graph or a Sequential.

    A Graph gives its resolved nodes (its order, names and which batch norm it folded where)
    and the operations as given (``source_nodes``); a Sequential is the chain of its source
    layers, each BatchNorm attached to the linear layer before it.
    """
    from lrp_num.engine.graph import Graph  # the structure only; the reference computes every value itself
    from lrp_num.engine.network import Sequential

    if isinstance(network, Graph):
        source = {node.name: node.operation for node in network.source_nodes}
        nodes = [ReferenceNode(index, node.name, node.operation, tuple(node.inputs), source[node.name],
                               tuple(source[bn] for bn, linear in network.folded.items() if linear == node.name))
                 for index, node in enumerate(network.nodes)]
        return nodes, network.input_name, network.output
    if isinstance(network, Sequential):
        groups: list[list] = []
        for layer in network.source_layers:
            if isinstance(layer, BatchNorm) and groups:
                groups[-1].append(layer)
            else:
                groups.append([layer])
        if len(groups) != len(network.layers):  # pragma: no cover - Sequential folds the same way
            raise UnsupportedLayerError("the reference cannot match the network's batch norms to its layers")
        nodes = [ReferenceNode(k, f"layer{k}", network.layers[k], ("input" if k == 0 else f"layer{k - 1}",),
                               group[0], tuple(group[1:])) for k, group in enumerate(groups)]
        return nodes, "input", nodes[-1].name
    raise UnsupportedLayerError(f"the reference follows Graph and Sequential networks, got {type(network).__name__}")


def _concat_axis(operation: Concat, ndim: int) -> int:
    """The concatenation axis within one sample (the operation's axis counts the batch as 0)."""
    axis = operation.axis - 1 if operation.axis > 0 else ndim + operation.axis
    if not 0 <= axis < ndim:
        raise ShapeError(f"{operation!r} does not fit inputs of rank {ndim} per sample")
    return axis


class ReferenceNetwork:
    """A :class:`~lrp_num.engine.graph.Graph` or :class:`~lrp_num.engine.network.Sequential` prepared for
    high-precision evaluation.

    Holds every linear node as a :class:`LinearMatrix` (built once per network, input shape and
    precision; batch norms folded in mpmath) and every max-pool node's windows, and runs the
    forward pass, the gradient and the relevance backward pass in mpmath over the nodes: values
    are dicts from node name (and the input's name) to flattened object arrays of mpf.
    """

    def __init__(self, network, input_shape: tuple[int, ...]) -> None:
        self.network = network
        self.nodes, self.input_name, self.output = _reference_nodes(network)
        self.layers = [node.operation for node in self.nodes]
        self.input_shape = tuple(input_shape)
        self.shapes: dict[str, tuple[int, ...]] = {self.input_name: self.input_shape}
        self.matrices: dict[int, LinearMatrix] = {}
        self.windows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.concat_axes: dict[int, int] = {}
        self.consumers: dict[str, int] = {self.input_name: 0}
        for node in self.nodes:
            for name in node.inputs:
                if name not in self.shapes:
                    raise ShapeError(f"node {node.name!r} reads {name!r} before it is computed")
                self.consumers[name] += 1
            try:
                out = self._prepare_node(node, [self.shapes[name] for name in node.inputs])
            except ShapeError as error:
                raise ShapeError(f"node {node.name!r} ({node.operation!r}): {error}") from None
            self.shapes[node.name] = tuple(int(d) for d in out)
            self.consumers[node.name] = 0

    def _prepare_node(self, node: ReferenceNode, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
        operation, shape = node.operation, shapes[0]
        if isinstance(operation, LINEAR_LAYERS):
            if isinstance(operation, ChannelAffine) and isinstance(node.source, BatchNorm):
                matrix, out = batchnorm_matrix(node.source, shape), shape
            else:
                matrix, out = linear_matrix(node.source, shape)
                if node.batchnorms:
                    matrix = fold_batchnorms(matrix, node.batchnorms)
            self.matrices[node.index] = matrix
            return out
        if isinstance(operation, MaxPool2d):
            index, connected, _, out = pool_windows(operation, shape)
            self.windows[node.index] = (index, connected)
            return out
        if isinstance(operation, Flatten):
            return (int(np.prod(shape)),)
        if isinstance(operation, _PASS_THROUGH):
            return shape
        if isinstance(operation, Add):
            if len(shapes) < 2 or len(set(shapes)) != 1:
                raise ShapeError(f"Add needs two or more addends of one shape, got {shapes}")
            return shape
        if isinstance(operation, Concat):
            axis = _concat_axis(operation, len(shape))
            rest = {s[:axis] + s[axis + 1:] for s in shapes}
            if len({len(s) for s in shapes}) != 1 or len(rest) != 1:
                raise ShapeError(f"Concat needs inputs that agree off axis {axis}, got {shapes}")
            self.concat_axes[node.index] = axis
            return shape[:axis] + (sum(s[axis] for s in shapes),) + shape[axis + 1:]
        raise UnsupportedLayerError(f"node {node.name!r}: the reference does not know {operation!r}")

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes[self.output]

    def input_shapes(self, node: ReferenceNode) -> list[tuple[int, ...]]:
        return [self.shapes[name] for name in node.inputs]

    def concatenate(self, node: ReferenceNode, parts: list[np.ndarray]) -> np.ndarray:
        """The flattened Concat of flattened ``parts`` (float or mpf arrays)."""
        axis = self.concat_axes[node.index]
        shaped = [np.asarray(p).reshape(s) for p, s in zip(parts, self.input_shapes(node))]
        return np.concatenate(shaped, axis=axis).ravel()

    def split(self, node: ReferenceNode, values: np.ndarray) -> list[np.ndarray]:
        """Slice a Concat node's flattened output values back onto its inputs (routing)."""
        axis = self.concat_axes[node.index]
        edges = np.cumsum([s[axis] for s in self.input_shapes(node)])[:-1]
        return [part.ravel() for part in np.split(np.asarray(values).reshape(self.shapes[node.name]), edges, axis=axis)]

    # forward and gradient

    def forward(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every node's output (and the input) for one sample, flattened, as object arrays of mpf.

        ``x`` is a float array (converted exactly) or an object array of mpf (taken as it is).
        """
        x = np.asarray(x)
        values = {self.input_name: x.ravel() if x.dtype == object else _to_mpf(x.astype(np.float64).ravel())}
        zero = mpmath.mpf(0)
        for node in self.nodes:
            inputs = [values[name] for name in node.inputs]
            a, operation = inputs[0], node.operation
            if node.index in self.matrices:
                matrix = self.matrices[node.index]
                out = (np.append(a, zero)[matrix.index] * matrix.weight_mp).sum(axis=1) + matrix.bias_mp
            elif node.index in self.windows:
                rows, connected = self.windows[node.index]
                out = np.array([max(a[window[inside]]) for window, inside in zip(rows, connected)], dtype=object)
            elif isinstance(operation, ReLU):
                out = np.array([value if value > 0 else zero for value in a], dtype=object)
            elif isinstance(operation, Add):
                out = a
                for addend in inputs[1:]:
                    out = out + addend
            elif isinstance(operation, Concat):
                out = self.concatenate(node, inputs)
            else:
                out = a
            values[node.name] = out
        return values

    def gradient(self, activations: dict[str, np.ndarray], output_gradient: np.ndarray) -> np.ndarray:
        """Backpropagate ``output_gradient`` (flattened): d(sum_c g_c f_c)/dx at the activations.

        ReLU derivative 1[z > 0]; max pooling routes the gradient to the winners split equally
        (the subgradient that matches winner-take-all relevance); a tensor read by several nodes
        gets the sum of their gradients.
        """
        arriving = {self.output: np.array(output_gradient, dtype=object)}
        for node in reversed(self.nodes):
            g = arriving.pop(node.name)
            a = activations[node.inputs[0]]
            if node.index in self.matrices:
                matrix = self.matrices[node.index]
                upstream = np.zeros(matrix.n_in + 1, dtype=object)
                upstream[:] = mpmath.mpf(0)
                np.add.at(upstream, matrix.index, matrix.weight_mp * g[:, None])
                lower = [upstream[: matrix.n_in]]
            elif node.index in self.windows:
                lower = [_maxpool_layer(*self.windows[node.index], a, g, len(a))]
            elif isinstance(node.operation, ReLU):
                lower = [np.array([gv if av > 0 else mpmath.mpf(0) for gv, av in zip(g, a)], dtype=object)]
            elif isinstance(node.operation, Add):
                lower = [g] * len(node.inputs)
            elif isinstance(node.operation, Concat):
                lower = self.split(node, g)
            else:
                lower = [g]
            _accumulate(arriving, node.inputs, lower)
        return arriving[self.input_name]

    # relevance

    def _box_allowed(self, node: ReferenceNode) -> bool:
        """z^B may use the input box at a Dense/Conv2d node before which only reshaping happens."""
        by_name = {n.name: n for n in self.nodes}
        stack, seen = list(node.inputs), set()
        while stack:
            name = stack.pop()
            if name == self.input_name or name in seen:
                continue
            seen.add(name)
            if not isinstance(by_name[name].operation, _SHAPE_ONLY):
                return False
            stack.extend(by_name[name].inputs)
        return isinstance(node.operation, (Dense, Conv2d))

    def backward(self, activations, relevance_top, plan, conventions, bounds, solver="newton",
                 diagnostics=True, check_domain=True):
        """Relevance of the input given the output relevance: (relevance, traces, relevance_at).

        Walks the nodes in reverse topological order; relevance arriving at a tensor from
        several nodes is summed. ``relevance_at`` maps every node (and the input) to the
        relevance arriving at its output. ``check_domain``: raise DomainError where a rule
        derived for the orthant meets a negative input (False evaluates the definition there
        all the same).
        """
        arriving = {self.output: relevance_top}
        relevance_at: dict[str, np.ndarray] = {}
        traces: list[LayerTrace] = []
        for node in reversed(self.nodes):
            index, layer = node.index, node.operation
            relevance = arriving.pop(node.name)
            relevance_at[node.name] = relevance
            inputs = [activations[name] for name in node.inputs]
            a = inputs[0]
            trace = None
            if index in self.matrices:
                rule, parameters = plan[index]
                trace = LayerTrace(index, repr(layer), rule, relevance_out=relevance, name=node.name)
                x_ext = np.append(a, mpmath.mpf(0))
                if rule in ROOT_POINT_RULES:
                    layer_bounds = None
                    if check_domain and ROOT_POINT_RULES[rule] == "orthant":
                        check_orthant(a, index, layer, rule)
                    if rule == "zbox":
                        if not self._box_allowed(node):
                            raise MissingBoundsError(
                                f"layer {index} ({node.name!r}): rule 'zbox' needs box bounds, which only the "
                                "network input has; use it on a first linear layer with only reshaping before it")
                        layer_bounds = _layer_bounds(bounds, self.matrices[index].n_in, index)
                    lower = [_root_point_layer(rule, self.matrices[index], x_ext, relevance, parameters,
                                               conventions, layer_bounds, trace, solver, diagnostics)]
                else:
                    lower = [_formula_layer(rule, self.matrices[index], x_ext, relevance, parameters,
                                            conventions, trace)]
            elif isinstance(layer, Add):
                rule, parameters = plan[index]
                trace = LayerTrace(index, repr(layer), rule, relevance_out=relevance, name=node.name)
                lower = _add_node(rule, inputs, relevance, parameters, conventions, trace, solver)
            elif index in self.windows:
                trace = LayerTrace(index, repr(layer), "maxpool", relevance_out=relevance, name=node.name)
                lower = [_maxpool_layer(*self.windows[index], a, relevance, len(a), trace)]
            elif isinstance(layer, Concat):
                lower = self.split(node, relevance)
            else:
                lower = [relevance]
            if trace is not None:
                trace.relevance_inputs = lower
                trace.relevance_in = lower[0] if len(lower) == 1 else np.concatenate(lower)
                traces.append(trace)
            _accumulate(arriving, node.inputs, lower)
        relevance = arriving.pop(self.input_name)
        relevance_at[self.input_name] = relevance
        return relevance, traces[::-1], relevance_at


def _accumulate(arriving: dict, names: tuple[str, ...], values: list[np.ndarray]) -> None:
    """Add each value to what has arrived at its tensor so far (several consumers sum)."""
    for name, value in zip(names, values):
        arriving[name] = arriving[name] + value if name in arriving else value


def _layer_bounds(bounds, n_in, index):
    if bounds is None:
        raise MissingBoundsError(f"layer {index}: rule 'zbox' needs the box bounds: pass lower= and upper=")
    lower, upper = bounds
    if len(lower) != n_in:
        raise ShapeError(f"layer {index}: the box bounds have {len(lower)} entries, the layer input {n_in}")
    ext = lambda values: np.append(values, mpmath.mpf(0))  # noqa: E731
    return ext(lower), ext(upper)


_PREPARED: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def prepare(network, input_shape: tuple[int, ...], dps: int = 50) -> ReferenceNetwork:
    """The :class:`ReferenceNetwork` of ``network`` for ``input_shape``, its batch norms folded
    at ``dps`` + guard digits; cached per network, input shape and precision."""
    cache = _PREPARED.setdefault(network, {})
    key = (tuple(input_shape), int(dps))
    if key not in cache:
        with mpmath.workdps(int(dps) + GUARD_DIGITS):
            cache[key] = ReferenceNetwork(network, key[0])
    return cache[key]

# -- the public API -----------------------------------------------------------------------------

def _conventions(conventions) -> dict[str, Any]:
    """The conventions as a dict, checked as :class:`lrp_num.engine.conventions.Conventions` checks them."""
    from lrp_num.engine.conventions import Conventions  # configuration and its checks, no numerics

    if conventions is None:
        conventions = Conventions()
    elif isinstance(conventions, Mapping):
        unknown = set(conventions) - {"bias", "eps", "stabilise"}
        if unknown:
            raise KernelArgumentError(f"unknown convention(s) {', '.join(sorted(unknown))}; "
                                      "known: bias, eps, stabilise")
        conventions = Conventions(**conventions)
    values = {"bias": conventions.bias, "eps": conventions.eps, "stabilise": conventions.stabilise}
    if values["bias"] not in BIAS_CONVENTIONS:
        raise UnknownRuleError(f"unknown bias convention {values['bias']!r}; known: {', '.join(BIAS_CONVENTIONS)}")
    if values["stabilise"] not in STABILISE_MODES:
        raise UnknownRuleError(f"unknown stabiliser mode {values['stabilise']!r}")
    return values


def layer_plan(network, rule: str | None = None, composite=None, input_is_box: bool = False,
               **parameters) -> dict[int, tuple[str, dict[str, Any]]]:
    """The rule and parameters of every node index that needs one, as the engine plans it.

    ``rule``: that rule on every Dense and Conv2d node; ``composite``: a name or object of
    :mod:`lrp_num.engine.composites`, which decides per node (:meth:`Composite.plan_graph`); neither:
    the ``"deep-taylor"`` composite. Either way sum, average, adaptive and global pooling and
    ChannelAffine nodes use the z-rule (lrp0), Add nodes the composites' Add rule (``"lrp0"``
    on the stacked addends is ``"add_z"``), and max pooling winner-take-all (no entry).
    """
    from lrp_num.engine.composites import Composite, get_composite  # which rule where, no numerics
    from lrp_num.engine.graph import as_graph  # the node order the engine's plan indexes

    parameters = {k: v for k, v in parameters.items() if k not in ("lower", "upper")}
    if rule is not None and composite is not None:
        raise LRPError("pass either rule= or composite=, not both")
    if rule is not None:
        if rule not in RULES:
            raise UnknownRuleError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
        composite = Composite.single(rule, **check_rule_parameters(rule, parameters, RULE_DEFAULTS.get(rule, {})))
    else:
        check_composite_parameters(parameters)
        if not hasattr(composite, "plan_graph") and not hasattr(composite, "plan"):
            composite = get_composite(composite or "deep-taylor")
    graph = as_graph(network)
    if hasattr(composite, "plan_graph"):
        choices = composite.plan_graph(graph, input_is_box)
    else:  # an object with only the list-based plan(layers, input_is_box)
        choices = composite.plan(list(graph.layers), input_is_box)
    plan: dict[int, tuple[str, dict[str, Any]]] = {}
    for index, node in enumerate(graph.nodes):
        if isinstance(node.operation, (Add, *LINEAR_LAYERS)) and index not in choices:
            raise UnknownRuleError(f"node {node.name!r}: the composite chooses no rule for {node.operation!r}")
    for index, choice in choices.items():
        if choice.rule == "maxpool":
            continue
        name = graph.nodes[index].name
        chosen = choice.rule
        if isinstance(graph.nodes[index].operation, Add):
            chosen = ADD_ALIASES.get(chosen, chosen)
            if chosen not in ADD_RULES:
                raise UnknownRuleError(f"node {name!r}: {choice.rule!r} is no rule of an Add node; "
                                       f"known: {', '.join(ADD_RULES)}")
        elif chosen not in RULES:
            raise UnknownRuleError(f"node {name!r}: unknown rule {chosen!r}; known: {', '.join(RULES)}")
        own = check_rule_parameters(chosen, choice.parameters, RULE_DEFAULTS.get(chosen, {}))
        plan[index] = (chosen, {**RULE_DEFAULTS.get(chosen, {}), **own})
    return plan


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


def _checked_target(reference: "ReferenceNetwork", target, n_samples: int, single: bool):
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
    (``target`` as returned by :func:`_checked_target`)."""
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
    from lrp_num.io.model_io import InputDomain  # the box and its checks, no numerics

    dps = check_dps(dps)
    batch, single = _as_batch(network, x)
    conv = _conventions(conventions)
    input_domain = rule_parameters.pop("input_domain", None)
    lower, upper = rule_parameters.pop("lower", None), rule_parameters.pop("upper", None)
    if lower is not None or upper is not None:
        if input_domain is not None:
            raise LRPError("give the box as input_domain=(low, high) or as lower= and upper=, not both")
        if lower is None or upper is None:
            raise MissingBoundsError("the box needs both lower= and upper=")
        input_domain = (lower, upper)
    input_shape = batch.shape[1:]
    domain = None
    if input_domain is not None:  # the engine's spelling: (low, high) or an InputDomain
        domain = InputDomain.of(input_domain)
        domain.check_fits(input_shape)
    plan = layer_plan(network, rule, composite, input_is_box=domain is not None, **rule_parameters)
    bounds = None
    if domain is not None:
        if any(chosen == "zbox" for chosen, _ in plan.values()):
            domain.check_contains(batch)  # where z^B uses the box, as the engine checks it
        bounds = tuple(_to_mpf(np.broadcast_to(bound, input_shape).ravel())
                       for bound in (domain.low, domain.high))
    reference = prepare(network, input_shape, dps)
    target = _checked_target(reference, target, len(batch), single)
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


def _rounded(values: np.ndarray, dps: int, shape: tuple[int, ...]) -> np.ndarray:
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
    out = np.stack([_rounded(result.relevance, dps, batch.shape[1:]) for result in results])
    return out[0] if single else out


def forward(network, x, *, dps: int = 50) -> np.ndarray:
    """f(x) in mpmath at ``dps`` digits, shape (N, n_outputs) or (n_outputs,) for one sample."""
    dps = check_dps(dps)
    batch, single = _as_batch(network, x)
    reference = prepare(network, batch.shape[1:], dps)
    with mpmath.workdps(dps + GUARD_DIGITS):
        outputs = [reference.forward(values)[reference.output] for values in batch]
    out = np.stack([_rounded(o, dps, o.shape) for o in outputs])
    return out[0] if single else out


def gradient(network, x, target=None, *, dps: int = 50) -> np.ndarray:
    """d f_c / dx at x, shape of ``x`` (ReLU derivative 1[z > 0]: 0 on the hinge).

    ``target`` as in :func:`explain`; an explicit output array g gives d(sum_c g_c f_c)/dx.
    """
    dps = check_dps(dps)
    batch, single = _as_batch(network, x)
    reference = prepare(network, batch.shape[1:], dps)
    target = _checked_target(reference, target, len(batch), single)
    grads = []
    with mpmath.workdps(dps + GUARD_DIGITS):  # a progress bar on a terminal for many samples
        for sample, values in enumerate(progress(batch, "reference")):
            activations = reference.forward(values)
            output = activations[reference.output]
            if target is not None and target.dtype.kind == "f":
                selector = _to_mpf(target[sample].reshape(-1))
            else:
                c = _target_index(output, target, sample)
                selector = np.array([mpmath.mpf(int(k == c)) for k in range(len(output))], dtype=object)
            grads.append(reference.gradient(activations, selector))
    out = np.stack([_rounded(g, dps, batch.shape[1:]) for g in grads])
    return out[0] if single else out


def _target_index(output, target, sample: int) -> int:
    """The output index of one sample; ``target`` None or checked indices (one per sample)."""
    if target is None:
        return max(range(len(output)), key=lambda k: output[k])
    return int(target[sample])


def sensitivity(network, x, target=None, *, dps: int = 50) -> np.ndarray:
    """Sensitivity analysis R_p = (df_c/dx_p)^2, so that sum_p R_p = ||grad f_c(x)||^2."""
    dps = check_dps(dps)
    g = gradient(network, x, target, dps=dps)
    with mpmath.workdps(dps):
        return np.vectorize(lambda v: +(v * v), otypes=[object])(g)


@dataclass
class TaylorDecomposition:
    """First-order Taylor decomposition of the whole function f_c at a root point x~.

    ``relevance`` R_p = (df_c/dx_p at x~, one-sided from x's side) (x_p - x~_p);
    ``residual`` = f_c(x) - f_c(x~) - sum_p R_p, zero when f_c is affine on the segment [x~, x],
    which ``same_active_set`` checks (the ReLU and max-pool pattern is the same at x and at the
    point of the segment next to x~).
    """

    root_point: np.ndarray
    step: Any
    value_at_root: Any
    relevance: np.ndarray
    residual: Any
    same_active_set: bool


def _first_root(phi, low, high, scale, digits: int, max_steps: int = 1000):
    """The smallest root of a continuous piecewise-linear phi in (low, high], phi(low) > 0 >= phi(high)."""
    tolerance = mpmath.mpf(10) ** (-digits + 3) * abs(scale)
    phi_low, phi_high = phi(low), phi(high)
    for _ in range(max_steps):
        # linear interpolation: exact when phi is linear on [low, high]
        guess = low + phi_low * (high - low) / (phi_low - phi_high)
        value = phi(guess)
        if abs(value) <= tolerance:
            return guess
        middle = (low + high) / 2
        phi_middle = phi(middle)
        if phi_middle > 0:
            low, phi_low = middle, phi_middle
        else:
            high, phi_high = middle, phi_middle
        if value > 0 and low < guess < high:
            low, phi_low = guess, value
        if high - low <= mpmath.mpf(10) ** (-digits) * high:
            return high
    raise LRPError("the root search along the gradient did not converge")


def _pattern(reference: ReferenceNetwork, activations) -> tuple:
    """The active set: which ReLU inputs are positive and which cells win each max-pool window."""
    keys = []
    for node in reference.nodes:
        a, out = activations[node.inputs[0]], activations[node.name]
        if isinstance(node.operation, ReLU):
            keys.append(tuple(value > 0 for value in a))
        elif node.index in reference.windows:
            rows, connected = reference.windows[node.index]
            keys.append(tuple(tuple(a[window[inside]] == top) for window, inside, top in zip(rows, connected, out)))
    return tuple(keys)


def whole_function_taylor(network, x, target=None, *, dps: int = 50,
                          max_doublings: int = 200) -> TaylorDecomposition:
    """Taylor-decompose f_c at a root point searched along the gradient: x~ = x - t grad f_c(x).

    The step t > 0 is bracketed by doubling until f_c(x - t g) <= 0, then narrowed by
    :func:`_first_root` (bisection with a linear-interpolation attempt per step, exact once the
    bracket lies on one linear piece of the ReLU network). One sample, f_c(x) > 0 expected;
    raises LRPError when no sign change is found.
    """
    dps = check_dps(dps)
    x = explanation_input(x).astype(np.float64)
    reference = prepare(network, x.shape, dps)
    indices = _checked_target(reference, target, 1, True)
    if indices is not None and indices.dtype.kind == "f":
        raise TargetError("the whole-function Taylor decomposition takes an output index as target, "
                          "not an explicit relevance")
    with mpmath.workdps(dps + GUARD_DIGITS):
        start = reference.forward(x)
        c = _target_index(start[reference.output], indices, 0)
        selector = np.array([mpmath.mpf(int(k == c)) for k in range(len(start[reference.output]))], dtype=object)
        x_mp = start[reference.input_name]
        direction = reference.gradient(start, selector)

        def along(t):
            return reference.forward(x_mp - t * direction)[reference.output][c]

        value = start[reference.output][c]
        if value <= 0 or all(g == 0 for g in direction):
            raise LRPError("the whole-function Taylor root search needs f_c(x) > 0 and a non-zero gradient")
        low, high = mpmath.mpf(0), mpmath.mpf(1) / max(abs(g) for g in direction)
        for _ in range(max_doublings):
            if along(high) <= 0:
                break
            low, high = high, 2 * high
        else:
            raise LRPError("no root of f_c along the gradient direction")
        step = _first_root(along, low, high, value, dps + GUARD_DIGITS)
        root = x_mp - step * direction
        at_root = reference.forward(root)
        # one-sided gradient at x~: the linear piece on the segment next to x~, towards x
        near = root + mpmath.mpf(10) ** (-(dps // 2)) * (x_mp - root)
        near_activations = reference.forward(near)
        root_gradient = reference.gradient(near_activations, selector)
        relevance = root_gradient * (x_mp - root)
        residual = value - at_root[reference.output][c] - mpmath.fsum(relevance)
        same = _pattern(reference, start) == _pattern(reference, near_activations)
    shape = x.shape
    return TaylorDecomposition(_rounded(root, dps, shape), +step, at_root[reference.output][c],
                               _rounded(relevance, dps, shape), residual, same)


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


def to_float(values: np.ndarray) -> np.ndarray:
    """Round an array of mpf to float64 (round to nearest)."""
    return np.vectorize(float, otypes=[np.float64])(values)


__all__ = [
    "ADD_RULES", "GUARD_DIGITS", "RULES", "ROOT_POINT_RULES", "FORMULA_RULES", "RULE_DEFAULTS", "LayerTrace",
    "LayerMembership", "LinearMatrix", "ReferenceNetwork", "ReferenceNode", "ReferenceResult", "bias_direction",
    "explain", "explain_trace", "forward", "gradient", "layer_plan", "linear_matrix", "prepare",
    "root_point_membership", "sensitivity", "to_float", "TaylorDecomposition", "whole_function_taylor",
]
