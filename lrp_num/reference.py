"""High-precision reference for LRP and deep Taylor decomposition, computed by the definition.

This module recomputes what :func:`lrp_num.explain` computes, in mpmath at ``dps`` significant
digits, along a code path that shares nothing with the engine's kernels:

* the forward pass is redone in mpmath;
* every linear layer (Dense, Conv2d, SumPool2d, AvgPool2d) becomes an explicit matrix, stored
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
* max pooling is winner-take-all with ties split equally; ReLU, Flatten and Identity pass
  relevance through (BatchNorm is already folded into the network).

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
and under "captum" the unmodified b_j to its positive group only, as lrp_num.conventions states.)
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
from lrp_num.layers import (AvgPool2d, Conv2d, Dense, Flatten, Identity, MaxPool2d, ReLU,
                            SumPool2d)
from lrp_num.progress import progress

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
    "gamma_split": {"gamma": 0.25},
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


# -- linear layers as explicit matrices ---------------------------------------------------------

@dataclass
class LinearMatrix:
    """A linear layer as a matrix stored by rows: z_j = sum_k x[index[j, k]] weight[j, k] + bias[j].

    Rows are output neurons (flattened C order), ``index`` the connected inputs (flattened C
    order; unconnected slots point at an extra zero input ``n_in`` with weight 0), ``connected``
    the mask of real connections.
    """

    n_in: int
    n_out: int
    index: np.ndarray
    connected: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    weight_mp: np.ndarray = field(init=False)
    bias_mp: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        # float64 -> mpf is exact at any precision
        self.weight_mp = _to_mpf(self.weight)
        self.bias_mp = _to_mpf(self.bias)

    def dense(self) -> np.ndarray:
        """The float64 matrix W[i, j] (n_in, n_out), for tests."""
        matrix = np.zeros((self.n_in + 1, self.n_out))
        rows = np.broadcast_to(np.arange(self.n_out)[:, None], self.index.shape)
        np.add.at(matrix, (self.index, rows), np.where(self.connected, self.weight, 0.0))
        return matrix[: self.n_in]


def _to_mpf(array: np.ndarray) -> np.ndarray:
    flat = [mpmath.mpf(float(value)) for value in np.asarray(array, dtype=np.float64).ravel()]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(np.shape(array))


def _window_matrix(input_shape: tuple[int, int, int], out_channels: int, kernel: tuple[int, int],
                   stride: tuple[int, int], padding: tuple[int, int],
                   channel_weight) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
    """Index, connectivity and weight rows of a windowed layer over a (C, H, W) input.

    ``channel_weight(o, c, u, v)`` gives the weight (arrays broadcast); for pooling it is
    nonzero only for c == o.
    """
    c_in, height, width = input_shape
    kh, kw = kernel
    (sh, sw), (ph, pw) = stride, padding
    ho = (height + 2 * ph - kh) // sh + 1
    wo = (width + 2 * pw - kw) // sw + 1
    o, p, q, c, u, v = np.meshgrid(np.arange(out_channels), np.arange(ho), np.arange(wo),
                                   np.arange(c_in), np.arange(kh), np.arange(kw), indexing="ij")
    row = p * sh + u - ph
    col = q * sw + v - pw
    weight = np.broadcast_to(channel_weight(o, c, u, v), o.shape).astype(np.float64)
    inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)  # padding is not an input
    n_in = c_in * height * width
    index = np.where(inside, c * height * width + row * width + col, n_in)
    shape = (out_channels * ho * wo, c_in * kh * kw)
    return (index.reshape(shape), inside.reshape(shape), np.where(inside, weight, 0.0).reshape(shape),
            (out_channels, ho, wo))


def _pool_windows(input_shape, kernel, stride):
    """Index rows (one per window, channel by channel) of a pooling layer, no padding."""
    c_in, height, width = input_shape
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = (height - kh) // sh + 1, (width - kw) // sw + 1
    c, p, q, u, v = np.meshgrid(np.arange(c_in), np.arange(ho), np.arange(wo), np.arange(kh),
                                np.arange(kw), indexing="ij")
    index = c * height * width + (p * sh + u) * width + (q * sw + v)
    return index.reshape(c_in * ho * wo, kh * kw), (c_in, ho, wo)


def linear_matrix(layer: object, input_shape: tuple[int, ...]) -> tuple[LinearMatrix, tuple[int, ...]]:
    """The explicit matrix of a linear layer on per-sample inputs of ``input_shape``."""
    if isinstance(layer, Dense):
        n_in, n_out = layer.weight.shape
        index = np.broadcast_to(np.arange(n_in), (n_out, n_in))
        matrix = LinearMatrix(n_in, n_out, index, np.ones((n_out, n_in), bool),
                              np.ascontiguousarray(layer.weight.T), layer.bias)
        return matrix, (n_out,)
    if isinstance(layer, Conv2d):
        kernel = layer.weight

        def conv(o, c, u, v):
            return kernel[o, c, u, v]
        index, connected, weight, out_shape = _window_matrix(
            tuple(input_shape), layer.out_channels, layer.kernel_size, layer.stride, layer.padding, conv)
        bias = np.repeat(layer.bias, out_shape[1] * out_shape[2])
        return LinearMatrix(int(np.prod(input_shape)), int(np.prod(out_shape)), index, connected,
                            weight, bias), out_shape
    if isinstance(layer, (SumPool2d, AvgPool2d)):
        index, out_shape = _pool_windows(tuple(input_shape), layer.kernel, layer.stride)
        kh, kw = layer.kernel
        value = 1.0 if type(layer) is SumPool2d else 1.0 / (kh * kw)
        weight = np.full(index.shape, value)
        return LinearMatrix(int(np.prod(input_shape)), index.shape[0], index,
                            np.ones(index.shape, bool), weight, np.zeros(index.shape[0])), out_shape
    raise TypeError(f"{layer!r} is not a linear layer")


# -- per-layer relevance ------------------------------------------------------------------------

@dataclass
class LayerTrace:
    """What the reference records about one layer's backward step (one sample).

    ``absorbed_bias`` and ``absorbed_stabiliser`` are the relevance kept by the bias input and
    by the stabiliser; ``hinge_residual`` the largest |g_j(t*)| / (|z_j| + sum |x_i w_ij|) over
    the neurons expanded; ``extra_digits`` the precision added for cancellation near a hinge;
    ``n_active`` / ``n_inside`` count active neurons (z_j > 0) and those whose root point is
    reached with a positive step t* > 0 and lies in the rule's domain (root-point rules only).
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


def _maxpool_layer(index_rows, x, relevance, n_in, trace: LayerTrace | None = None):
    """Winner-take-all: R_j goes to the maximal inputs of window j, split equally between ties."""
    relevance_in = np.zeros(n_in, dtype=object)
    relevance_in[:] = mpmath.mpf(0)
    flow = np.zeros(index_rows.shape)
    for j, window in enumerate(index_rows):
        if relevance[j] == 0:
            continue
        values = x[window]
        top = max(values)
        winners = [k for k, value in enumerate(values) if value == top]
        share = relevance[j] / len(winners)
        for k in winners:
            relevance_in[window[k]] += share
            flow[j, k] = abs(float(share))
    if trace is not None:
        trace.flow_rows, trace.flow_index = np.arange(len(index_rows)), index_rows
        trace.flow, trace.flow_upper = flow, np.abs(to_float(relevance))
    return relevance_in


# -- the network ---------------------------------------------------------------------------------

class ReferenceNetwork:
    """A :class:`~lrp_num.network.Sequential` prepared for high-precision evaluation.

    Holds every linear layer as a :class:`LinearMatrix` (built once per network and input shape)
    and runs the forward pass, the gradient and the relevance backward pass in mpmath.
    """

    def __init__(self, network, input_shape: tuple[int, ...]) -> None:
        if hasattr(network, "nodes"):
            raise UnsupportedLayerError("the mpmath reference follows Sequential networks only; "
                                        "graph models are not covered yet")
        self.network = network
        self.input_shape = tuple(input_shape)
        self.layers = list(network.layers)
        for layer in self.layers:  # geometry the index arithmetic here does not model
            if getattr(layer, "groups", 1) != 1 or getattr(layer, "padding", (0, 0)) != (0, 0) \
                    and not isinstance(layer, Conv2d) or getattr(layer, "ceil_mode", False):
                raise UnsupportedLayerError(f"the mpmath reference does not cover {layer!r} "
                                            "(grouped convolution, padded or ceil-mode pooling) yet")
        self.shapes = [self.input_shape]
        self.matrices: dict[int, LinearMatrix] = {}
        self.windows: dict[int, np.ndarray] = {}
        for index, layer in enumerate(self.layers):
            shape = self.shapes[-1]
            if isinstance(layer, (Dense, Conv2d, SumPool2d, AvgPool2d)):
                if isinstance(layer, Dense) and shape != (layer.n_in,):
                    raise ShapeError(f"layer {index} {layer!r} expects ({layer.n_in},), gets {shape}")
                if not isinstance(layer, Dense) and len(shape) != 3:
                    raise ShapeError(f"layer {index} {layer!r} expects (C, H, W), gets {shape}")
                self.matrices[index], out = linear_matrix(layer, shape)
            elif isinstance(layer, MaxPool2d):
                self.windows[index], out = _pool_windows(shape, layer.kernel, layer.stride)
            elif isinstance(layer, Flatten):
                out = (int(np.prod(shape)),)
            elif isinstance(layer, (ReLU, Identity)):
                out = shape
            else:
                raise UnsupportedLayerError(f"the reference does not know layer {layer!r}")
            self.shapes.append(tuple(out))

    # forward and gradient

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """Activations a^(0) .. a^(L) of one sample, flattened, as object arrays of mpf.

        ``x`` is a float array (converted exactly) or an object array of mpf (taken as it is).
        """
        x = np.asarray(x)
        activations = [x.ravel() if x.dtype == object else _to_mpf(x.astype(np.float64).ravel())]
        zero = mpmath.mpf(0)
        for index, layer in enumerate(self.layers):
            a = activations[-1]
            if index in self.matrices:
                matrix = self.matrices[index]
                x_ext = np.append(a, zero)
                out = (x_ext[matrix.index] * matrix.weight_mp).sum(axis=1) + matrix.bias_mp
            elif index in self.windows:
                out = np.array([max(a[window]) for window in self.windows[index]], dtype=object)
            elif isinstance(layer, ReLU):
                out = np.array([value if value > 0 else zero for value in a], dtype=object)
            else:
                out = a
            activations.append(out)
        return activations

    def gradient(self, activations: list[np.ndarray], output_gradient: np.ndarray) -> np.ndarray:
        """Backpropagate ``output_gradient`` (flattened): d(sum_c g_c f_c)/dx at the activations.

        ReLU derivative 1[z > 0]; max pooling routes the gradient to the winners split equally
        (the subgradient that matches winner-take-all relevance).
        """
        g = np.array(output_gradient, dtype=object)
        for index in reversed(range(len(self.layers))):
            layer, a = self.layers[index], activations[index]
            if index in self.matrices:
                matrix = self.matrices[index]
                upstream = np.zeros(matrix.n_in + 1, dtype=object)
                upstream[:] = mpmath.mpf(0)
                np.add.at(upstream, matrix.index, matrix.weight_mp * g[:, None])
                g = upstream[: matrix.n_in]
            elif index in self.windows:
                g = _maxpool_layer(self.windows[index], a, g, len(a))
            elif isinstance(layer, ReLU):
                g = np.array([gv if av > 0 else mpmath.mpf(0) for gv, av in zip(g, a)], dtype=object)
        return g

    # relevance

    def backward(self, activations, relevance_top, plan, conventions, bounds, solver="newton",
                 diagnostics=True, check_domain=True):
        """Relevance of the input given the output relevance; returns (relevance, traces).

        ``check_domain``: raise DomainError where a rule derived for the orthant meets a
        negative input (False evaluates the definition there all the same).
        """
        relevance = relevance_top
        traces: list[LayerTrace] = []
        for index in reversed(range(len(self.layers))):
            layer, a = self.layers[index], activations[index]
            if index in self.matrices:
                rule, parameters = plan[index]
                trace = LayerTrace(index, repr(layer), rule, relevance_out=relevance)
                x_ext = np.append(a, mpmath.mpf(0))
                if rule in ROOT_POINT_RULES:
                    layer_bounds = None
                    if check_domain and ROOT_POINT_RULES[rule] == "orthant":
                        check_orthant(a, index, layer, rule)
                    if rule == "zbox":
                        first = min(i for i in self.matrices if isinstance(self.layers[i], (Dense, Conv2d)))
                        if index != first:
                            raise MissingBoundsError(f"layer {index}: rule 'zbox' needs box bounds, which only the "
                                           "network input has; use it on the first linear layer only")
                        layer_bounds = _layer_bounds(bounds, self.matrices[index].n_in, index)
                    relevance = _root_point_layer(rule, self.matrices[index], x_ext, relevance,
                                                  parameters, conventions, layer_bounds, trace, solver,
                                                  diagnostics)
                else:
                    relevance = _formula_layer(rule, self.matrices[index], x_ext, relevance,
                                               parameters, conventions, trace)
                trace.relevance_in = relevance
                traces.append(trace)
            elif index in self.windows:
                traces.append(LayerTrace(index, repr(layer), "maxpool", relevance_out=relevance))
                relevance = _maxpool_layer(self.windows[index], a, relevance, len(a), traces[-1])
                traces[-1].relevance_in = relevance
        return relevance, traces[::-1]


def _layer_bounds(bounds, n_in, index):
    if bounds is None:
        raise MissingBoundsError(f"layer {index}: rule 'zbox' needs the box bounds: pass lower= and upper=")
    lower, upper = bounds
    if len(lower) != n_in:
        raise ShapeError(f"layer {index}: the box bounds have {len(lower)} entries, the layer input {n_in}")
    ext = lambda values: np.append(values, mpmath.mpf(0))  # noqa: E731
    return ext(lower), ext(upper)


_PREPARED: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def prepare(network, input_shape: tuple[int, ...]) -> ReferenceNetwork:
    """The :class:`ReferenceNetwork` of ``network`` for ``input_shape``, cached per network."""
    cache = _PREPARED.setdefault(network, {})
    key = tuple(input_shape)
    if key not in cache:
        cache[key] = ReferenceNetwork(network, key)
    return cache[key]


# -- the public API -----------------------------------------------------------------------------

def _conventions(conventions) -> dict[str, Any]:
    """The conventions as a dict, checked as :class:`lrp_num.conventions.Conventions` checks them."""
    from lrp_num.conventions import Conventions  # configuration and its checks, no numerics

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
    """The rule and parameters of every layer index that needs one.

    ``rule``: that rule on every Dense and Conv2d layer; sum and average pooling use the z-rule
    (lrp0), max pooling winner-take-all. ``composite``: a name or object of
    :mod:`lrp_num.composites` (which decides per layer). Neither: the ``"deep-taylor"`` composite.
    """
    parameters = {k: v for k, v in parameters.items() if k not in ("lower", "upper")}
    if rule is not None and composite is not None:
        raise LRPError("pass either rule= or composite=, not both")
    plan: dict[int, tuple[str, dict[str, Any]]] = {}
    if rule is not None:
        if rule not in RULES:
            raise UnknownRuleError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
        chosen = {**RULE_DEFAULTS.get(rule, {}),
                  **check_rule_parameters(rule, parameters, RULE_DEFAULTS.get(rule, {}))}
        for index, layer in enumerate(network.layers):
            if isinstance(layer, (Dense, Conv2d)):
                plan[index] = (rule, chosen)
            elif isinstance(layer, (SumPool2d, AvgPool2d)):
                plan[index] = ("lrp0", {})
        return plan
    check_composite_parameters(parameters)
    if not hasattr(composite, "plan"):
        from lrp_num.composites import get_composite  # configuration (which rule where), no numerics

        composite = get_composite(composite or "deep-taylor")
    for index, choice in composite.plan(list(network.layers), input_is_box).items():
        if choice.rule == "maxpool":
            continue
        if choice.rule not in RULES:
            raise UnknownRuleError(f"layer {index}: unknown rule {choice.rule!r}; known: {', '.join(RULES)}")
        own = check_rule_parameters(choice.rule, choice.parameters, RULE_DEFAULTS.get(choice.rule, {}))
        plan[index] = (choice.rule, {**RULE_DEFAULTS.get(choice.rule, {}), **own})
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
    output_shape = (n_samples,) + tuple(reference.shapes[-1])
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
    """One sample's reference explanation with its per-layer traces."""

    relevance: np.ndarray
    top: np.ndarray
    activations: list
    traces: list[LayerTrace]


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
    from lrp_num.model_io import InputDomain  # the box and its checks, no numerics

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
    reference = prepare(network, input_shape)
    target = _checked_target(reference, target, len(batch), single)
    results = []
    with mpmath.workdps(dps + GUARD_DIGITS):  # a progress bar on a terminal for many samples
        for sample, values in enumerate(progress(batch, "reference")):
            activations = reference.forward(values)
            top = _top_relevance(activations[-1], target, sample)
            relevance, traces = reference.backward(activations, top, plan, conv, bounds, solver,
                                                   diagnostics, check_domain)
            results.append(ReferenceResult(relevance, top, activations, traces))
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
    ``composite`` chooses per layer; ``conventions`` (a :class:`lrp_num.conventions.Conventions`
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
    reference = prepare(network, batch.shape[1:])
    with mpmath.workdps(dps + GUARD_DIGITS):
        outputs = [reference.forward(values)[-1] for values in batch]
    out = np.stack([_rounded(o, dps, o.shape) for o in outputs])
    return out[0] if single else out


def gradient(network, x, target=None, *, dps: int = 50) -> np.ndarray:
    """d f_c / dx at x, shape of ``x`` (ReLU derivative 1[z > 0]: 0 on the hinge).

    ``target`` as in :func:`explain`; an explicit output array g gives d(sum_c g_c f_c)/dx.
    """
    dps = check_dps(dps)
    batch, single = _as_batch(network, x)
    reference = prepare(network, batch.shape[1:])
    target = _checked_target(reference, target, len(batch), single)
    grads = []
    with mpmath.workdps(dps + GUARD_DIGITS):  # a progress bar on a terminal for many samples
        for sample, values in enumerate(progress(batch, "reference")):
            activations = reference.forward(values)
            if target is not None and target.dtype.kind == "f":
                selector = _to_mpf(target[sample].reshape(-1))
            else:
                c = _target_index(activations[-1], target, sample)
                selector = np.array([mpmath.mpf(int(k == c)) for k in range(len(activations[-1]))],
                                    dtype=object)
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
    keys = []
    for index, layer in enumerate(reference.layers):
        a, out = activations[index], activations[index + 1]
        if isinstance(layer, ReLU):
            keys.append(tuple(value > 0 for value in a))
        elif index in reference.windows:
            keys.append(tuple(tuple(a[window] == top) for window, top in zip(reference.windows[index], out)))
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
    reference = prepare(network, x.shape)
    indices = _checked_target(reference, target, 1, True)
    if indices is not None and indices.dtype.kind == "f":
        raise TargetError("the whole-function Taylor decomposition takes an output index as target, "
                          "not an explicit relevance")
    with mpmath.workdps(dps + GUARD_DIGITS):
        start = reference.forward(x)
        c = _target_index(start[-1], indices, 0)
        selector = np.array([mpmath.mpf(int(k == c)) for k in range(len(start[-1]))], dtype=object)
        x_mp = start[0]
        direction = reference.gradient(start, selector)

        def along(t):
            return reference.forward(x_mp - t * direction)[-1][c]

        value = start[-1][c]
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
        residual = value - at_root[-1][c] - mpmath.fsum(relevance)
        same = _pattern(reference, start) == _pattern(reference, near_activations)
    shape = x.shape
    return TaylorDecomposition(_rounded(root, dps, shape), +step, at_root[-1][c],
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
    "GUARD_DIGITS", "RULES", "ROOT_POINT_RULES", "FORMULA_RULES", "RULE_DEFAULTS", "LayerTrace",
    "LayerMembership", "LinearMatrix", "ReferenceNetwork", "ReferenceResult", "bias_direction",
    "explain", "explain_trace", "forward", "gradient", "layer_plan", "linear_matrix", "prepare",
    "root_point_membership", "sensitivity", "to_float", "TaylorDecomposition", "whole_function_taylor",
]
