"""One node's relevance for sampled output neurons, in ball arithmetic (the arb path of ``lrp verify --local``).

Layer-local verification recomputes, for K sampled output neurons j of a node, the sum over j
of the contributions R_ij per input, by the rule's definition. The per-connection work of the
certified pass (:mod:`lrp_num.certified.layers`, one Python ball operation per connection) is
too slow at ImageNet scale (some 8 million connections for K = 256 on ResNet-18), so this
module does the sums that run over connections as products of python-flint ``arb_mat``
matrices, in C, with the float64 weights and inputs entering as exact balls:

* z_j = sum_i w_ij x_i + b_j, the slope s_j = sum_i w_ij v_ij (+ v_0j b_j + a_j) of the rule's
  search direction v_ij, are matrix-vector products over the rows that share their inputs
  (all rows of a Dense layer, the rows at one position of a convolution);
* the step to the root point x~_ij = x_i - t_j v_ij is t_j = z_j / s_j (the root condition
  is affine in t), and with the relevance model R_j = c_j z_j, c_j = R_j / z_j,
  R_ij = c_j w_ij (x_i - x~_ij) = w_ij v_ij (c_j t_j) (Montavon et al. 2017, Pattern
  Recognition 65, Sec. 3-4). For every root-point rule w_ij v_ij is a sum of a few terms
  P_k(w_ij) f_k(x_i) (z+: w_ij^+ x_i; z^B: w_ij^+ (x_i - l_i) + w_ij^- (x_i - h_i); w^2: w_ij^2;
  LRP-0: w_ij x_i; gamma: (w_ij + gamma w_ij^+) x_i; flat: 1), so the summed contributions are
  R_i = sum_k f_k(x_i) (P_k^T (c t))_i, transposed products over the same rows;
* the epsilon rule and bias-as-a-neuron (Bach et al. 2015, PLOS ONE 10(7) e0130140) are the
  same products with q_ij = x_i w_ij and the ratio R_j / (z_j + eps sign(z_j)); alpha-beta
  (Eq. 60) and zennit's z+ split q_ij by sign into groups (x^+ w^+ + x^- w^-, x^+ w^- + x^- w^+),
  each with its own denominator and ratio;
* a batch norm after the layer scales each row: w'_ij = s_j w_ij, b'_j = s_j b_j + t_j with
  s_j = gamma / sqrt(var + eps) in balls; a row with s_j < 0 swaps w^+ and w^-;
* max pooling (winner-take-all, exact ties split equally) and Add nodes (a neuron with unit
  weights, :func:`add_balls`) take one ball operation per sampled neuron.

Every decision (the sign of z_j, of a slope, whether a stabiliser applies) is taken where the
ball decides it; an undecided neuron makes the caller retry at twice the precision
(:func:`linear_balls` does so up to :data:`RETRIES` times) before it is reported undecided.
Each result is a ball [mid +- rad] that contains the exact value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from lrp_num.certified.balls import lrp_sign, require_flint, sign, working_precision
from lrp_num.certified.layers import stabiliser_ball
from lrp_num.errors import UnknownRuleError, ZeroDenominatorError

#: root-point rules and formula rules this module computes with matrix products
ROOT_POINT_RULES = ("w2", "zplus", "zbox", "lrp0", "gamma", "flat")
FORMULA_RULES = ("epsilon", "bias_neuron", "alphabeta", "zplus_split")
#: formula rules whose contributions split by sign into groups, each with its own denominator
SPLIT_RULES = ("alphabeta", "zplus_split")
#: bias conventions it follows (``"magnitude"`` rescales R_j first: not here)
BIAS_CONVENTIONS = ("dtd", "neuron", "captum", "zennit")
#: how often an undecided neuron doubles the working precision before it is reported
RETRIES = 3


@dataclass
class SampledRows:
    """K sampled output neurons of a linear node, on the inputs they touch.

    ``index`` (K, n): the touched input each slot reads (``n_touched`` marks a padding slot,
    ``connected`` False there); ``weight`` (K, n) and ``bias`` (K,): the layer's own float64
    parameters (exact); ``scale`` / ``shift`` (K,): balls of a folded batch norm or None, so that
    the node's weights are w'_ij = s_j w_ij and its bias b'_j = s_j b_j + t_j.
    """

    n_touched: int
    index: np.ndarray
    connected: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    scale: np.ndarray | None = None
    shift: np.ndarray | None = None


@dataclass
class BallRelevance:
    """The summed contributions of the sampled neurons, as balls, and what bounds need.

    ``relevance``: per touched input (per stacked addend of an Add node), the ball of
    sum_j R_ij; ``flow`` (K, n): |R_ij| in float64 (for rounding bounds), ``upper`` (K,): |R_j|;
    ``absorbed_bias`` / ``absorbed_stabiliser``: balls of the relevance the bias input and the
    stabiliser keep, summed over the sampled neurons; ``undecided``: neurons whose decisions no
    tried precision settled (their relevance is a NaN ball); ``bits``: the precision used.
    """

    relevance: list
    flow: np.ndarray
    upper: np.ndarray
    absorbed_bias: Any
    absorbed_stabiliser: Any
    undecided: int = 0
    bits: int = 0
    extra: dict = field(default_factory=dict)


def two_product(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p, e) with p + e = a b exactly, elementwise (Dekker 1971, "A floating-point technique for
    extending the available precision", Numer. Math. 18): p = fl(a b), e its rounding error.

    Exact where no product over- or underflows; :func:`_square_parts` checks the magnitudes.
    """
    split = 134217729.0  # 2^27 + 1
    p = a * b
    ca, cb = split * a, split * b
    a_hi = ca - (ca - a)
    b_hi = cb - (cb - b)
    a_lo, b_lo = a - a_hi, b - b_hi
    e = ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
    return p, e


def _square_parts(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    magnitude = np.abs(w[w != 0])
    if magnitude.size and (magnitude.min() < 2.0 ** -450 or magnitude.max() > 2.0 ** 450):
        raise UnknownRuleError("rule 'w2' on the arb path: a weight beyond 2^+-450, whose square float64 cannot "
                               "split exactly; use path='mpmath'")
    return two_product(w, w)


def _row_signs(scale) -> np.ndarray:
    """+1, -1 or 0 per row from the batch-norm scale balls (+1 without a scale)."""
    if scale is None:
        return None
    signs = np.empty(len(scale), dtype=np.int64)
    for j, s in enumerate(scale):
        decided = sign(s)
        if decided is None:  # gamma / sqrt(var + eps) has gamma's sign: never undecided
            raise ZeroDenominatorError("a batch-norm scale whose sign the balls cannot decide")
        signs[j] = decided
    return signs


def _parts(rule: str, rows: SampledRows, parameters: Mapping[str, Any]):
    """(weights of z_j, scale power of z, terms, group of each term) with terms
    [(P_k, factor_k, coefficient_k, power_k)]: w'_ij v_ij = sum_k coefficient_k s_j^power_k P_k[j, i]
    factor_k(x_i) (q_ij of a formula rule; of its group g for alpha-beta: g = 0 the positive
    contributions (x_i w'_ij)^+ = x^+ w'^+ + x^- w'^-, g = 1 the negative ones x^+ w'^- + x^- w'^+)."""
    arb = require_flint().arb
    w = np.where(rows.connected, rows.weight, 0.0)
    signs = _row_signs(rows.scale)
    plus, minus = np.maximum(w, 0.0), np.minimum(w, 0.0)
    if signs is not None:  # w'^+ = s w^+ where s > 0, s w^- where s < 0
        positive, negative = (signs > 0)[:, None], (signs < 0)[:, None]
        plus, minus = (np.where(positive, plus, np.where(negative, minus, 0.0)),
                       np.where(positive, minus, np.where(negative, plus, 0.0)))
    one = arb(1)
    if rule == "alphabeta":  # Bach et al. 2015, Eq. (60): q^+ and q^- of q_ij = x_i w_ij
        return w, 1, [(plus, "x_plus", one, 1), (minus, "x_minus", one, 1),
                      (minus, "x_plus", one, 1), (plus, "x_minus", one, 1)], [0, 0, 1, 1]
    if rule == "zplus_split":  # zennit's ZPlus: q_ij = x^+ w^+ + x^- w^-
        return w, 1, [(plus, "x_plus", one, 1), (minus, "x_minus", one, 1)], [0, 0]
    if rule == "zplus":  # v_ij = x_i 1[w_ij > 0]
        terms = [(plus, "x", one, 1)]
    elif rule in ("lrp0", "epsilon", "bias_neuron"):  # v_ij = x_i (q_ij = x_i w_ij)
        terms = [(w, "x", one, 1)]
    elif rule == "gamma":  # v_ij = x_i (1 + gamma 1[w_ij > 0])
        terms = [(w, "x", one, 1), (plus, "x", arb(parameters["gamma"]), 1)]
    elif rule == "zbox":  # v_ij = (x_i - l_i) 1[w_ij > 0] + (x_i - h_i) 1[w_ij < 0]
        terms = [(plus, "x_low", one, 1), (minus, "x_high", one, 1)]
    elif rule == "w2":  # v_ij = w_ij: w_ij^2 split exactly into two float64 parts
        high, low = _square_parts(w)
        terms = [(high, "one", one, 2), (low, "one", one, 2)]
    elif rule == "flat":  # w2 on the neuron with unit weights
        unit = rows.connected.astype(np.float64)
        return unit, 0, [(unit, "one", one, 0)], [0]
    else:
        raise UnknownRuleError(f"{rule!r} has no matrix form on the arb path")
    return w, 1, terms, [0] * len(terms)


def _bias_share(rule: str, bias: str, b):
    """v_0j b'_j, the bias input's term of the slope (see :mod:`lrp_num.reference.directions`);
    None where the bias's sign is undecided."""
    arb = require_flint().arb
    if bias == "dtd":
        return arb(0)
    if bias in ("neuron", "captum"):
        return b
    if bias == "zennit":
        if rule == "zplus":
            s = sign(b)
            return None if s is None else (b if s > 0 else arb(0))
        if rule == "w2":
            return b * b
        return b if rule in ("lrp0", "gamma") else arb(0)
    raise UnknownRuleError(f"bias convention {bias!r} has no matrix form on the arb path")


def _groups(index: np.ndarray) -> list[np.ndarray]:
    """Rows with identical input slots (all rows of a Dense layer, one position of a convolution)."""
    groups: dict[bytes, list[int]] = {}
    for j, row in enumerate(index):
        groups.setdefault(row.tobytes(), []).append(j)
    return [np.array(members) for members in groups.values()]


def _arb_matrix(values: np.ndarray):
    flint = require_flint()
    rows, columns = values.shape
    return flint.arb_mat(rows, columns, values.ravel().tolist())


def _row_coefficient(rule, z, slope_raw, bias, bias_share, r, parameters, conventions):
    """(a_j, absorbed by the bias, absorbed by the stabiliser) of one neuron, or None if undecided.

    Root-point rules: t_j = z_j / s_j, c_j = R_j / z_j, a_j = c_j t_j (z_j = 0: the limit R_j / s_j).
    epsilon, bias_neuron: a_j = R_j / (z_j + eps sign(z_j) + stabiliser)."""
    arb = require_flint().arb
    if rule in FORMULA_RULES:
        d = z
        own = arb(0)
        if rule == "epsilon":  # the rule's own stabiliser, everywhere, sign(0) = +1
            s = lrp_sign(d)
            if s is None:
                return None
            own = arb(parameters["epsilon"]) * s
            d = d + own
        absorber = stabiliser_ball(d, r, conventions["eps"], conventions["stabilise"], rule)
        if absorber is None or sign(d + absorber) is None:
            return None
        ratio = r / (d + absorber)
        return ratio, bias * ratio, (own + absorber) * ratio
    if bias_share is None:
        return None
    absorber = stabiliser_ball(slope_raw, r, conventions["eps"], conventions["stabilise"], rule)
    if absorber is None:
        return None
    slope = slope_raw + absorber
    z_sign = sign(z)
    if sign(slope) is None or z_sign is None:
        return None
    if z_sign == 0:  # x is its own root point: the limit of the Taylor step
        per_step = r / slope
        return per_step, per_step * bias_share, per_step * absorber
    t = z / slope  # the root of the affine root condition
    c = r / z  # relevance model R_j = c_j z_j
    return c * t, c * t * bias_share, c * t * absorber


def _split_coefficients(rule, d, bias, r, parameters, conventions):
    """([ratio_g per group], absorbed by the bias, by the stabiliser) of one neuron under a split
    formula rule, or None if undecided: ratio_g = c_g R_j / (d_g + stabiliser), d_g = sum_i q_ij
    of group g + its bias share (alpha-beta: c = alpha, -beta; zplus_split: c = 1)."""
    arb = require_flint().arb
    zero = arb(0)
    convention = conventions["bias"]
    if rule == "alphabeta":
        coefficients = [arb(parameters["alpha"]), -arb(parameters["beta"])]
        if convention == "captum":  # the unmodified b_j in the one modified z' (the positive group)
            shares = [bias, zero]
        elif convention in ("dtd", "magnitude"):
            shares = [zero, zero]
        else:  # "neuron", "zennit": b^+ and b^- join their groups
            s = sign(bias)
            if s is None:
                return None
            shares = [bias if s > 0 else zero, bias if s < 0 else zero]
    else:
        coefficients = [arb(1)]
        if convention in ("dtd", "magnitude"):
            shares = [zero]
        elif convention == "zennit":
            s = sign(bias)
            if s is None:
                return None
            shares = [bias if s > 0 else zero]
        else:
            shares = [bias]
    ratios, kept_bias, kept_stabiliser = [], zero, zero
    for coefficient, share, total in zip(coefficients, shares, d):
        total = total + share
        numerator = coefficient * r
        absorber = stabiliser_ball(total, numerator, conventions["eps"], conventions["stabilise"], rule)
        if absorber is None or (sign(total + absorber) is None and not numerator.is_zero()):
            return None
        ratio = zero if numerator.is_zero() else numerator / (total + absorber)
        ratios.append(ratio)
        kept_bias += share * ratio
        kept_stabiliser += absorber * ratio
    return ratios, kept_bias, kept_stabiliser


def _factor_values(factor: str, x: np.ndarray, low, high) -> np.ndarray | None:
    """factor(x_i) in float64: x, x^+, x^-, x - l, x - h, or None for 1."""
    if factor == "x":
        return x
    if factor == "x_plus":
        return np.maximum(x, 0.0)
    if factor == "x_minus":
        return np.minimum(x, 0.0)
    if factor == "x_low":
        return x - low
    if factor == "x_high":
        return x - high
    return None


def linear_balls(rule: str, rows: SampledRows, x: np.ndarray, relevance: np.ndarray, parameters: Mapping[str, Any],
                 conventions: Mapping[str, Any], bounds=None, *, bits: int) -> BallRelevance:
    """sum_j R_ij per touched input of a linear node's sampled neurons, by the rule's definition.

    Parameters
    ----------
    rule : str
        A root-point rule (w2, zplus, zbox, lrp0, gamma, flat) or epsilon, bias_neuron, alphabeta,
        zplus_split.
    rows : SampledRows
    x : ndarray
        The touched inputs (float64, exact).
    relevance : ndarray
        R_j of the K sampled neurons (float64, exact).
    bounds : (ndarray, ndarray), optional
        l and h on the touched inputs (z^B).
    bits : int
        Working precision; doubled up to :data:`RETRIES` times while a neuron is undecided.
    """
    require_flint()
    if conventions["bias"] not in BIAS_CONVENTIONS and rule not in FORMULA_RULES:
        raise UnknownRuleError(f"bias convention {conventions['bias']!r} has no matrix form on the arb path")
    if rule == "zbox" and bounds is None:
        raise UnknownRuleError("rule 'zbox' needs the input box")
    result = None
    for attempt in range(RETRIES + 1):
        with working_precision(bits << attempt):
            result = _linear_balls(rule, rows, x, relevance, parameters, conventions, bounds)
        result.bits = bits << attempt
        if not result.undecided:
            break
    return result


def _linear_balls(rule, rows: SampledRows, x, relevance, parameters, conventions, bounds) -> BallRelevance:
    flint = require_flint()
    arb = flint.arb
    n_rows, n_slots = rows.index.shape
    x_ext = np.append(np.asarray(x, dtype=np.float64), 0.0)
    low = high = None
    if bounds is not None:
        low, high = (np.append(np.asarray(b, dtype=np.float64), 0.0) for b in bounds)
    z_weight, z_power, terms, term_groups = _parts(rule, rows, parameters)
    n_groups = max(term_groups) + 1
    ones = arb(1)
    scale = rows.scale if rows.scale is not None else np.full(n_rows, ones, dtype=object)
    bias = np.array([arb(float(b)) for b in rows.bias], dtype=object)
    if rows.shift is not None:
        bias = bias * scale + rows.shift
    accumulated = [[None] * (rows.n_touched + 1) for _ in terms]
    coefficients = np.zeros((n_groups, n_rows))
    absorbed_bias, absorbed_stabiliser = arb(0), arb(0)
    undecided = 0
    # where every term reads x_i (z+, LRP-0, gamma, epsilon), an input with x_i = 0 adds nothing to z_j
    # or the slope, and its R_i = x_i (...) is exactly 0: its columns are left out of the products
    sparse = z_power == 1 and all(factor in ("x", "x_plus", "x_minus") for _, factor, _, _ in terms)
    for members in _groups(rows.index):
        slots = rows.index[members[0]]
        column = x_ext[slots]
        kept = np.flatnonzero(column != 0) if sparse else np.arange(n_slots)
        slots, column, width = slots[kept], column[kept], len(kept)
        columns = {"x": flint.arb_mat(width, 1, column.tolist())}
        for factor in ("x_plus", "x_minus"):
            if any(used == factor for _, used, _, _ in terms):
                columns[factor] = flint.arb_mat(width, 1, _factor_values(factor, column, None, None).tolist())
        if any(factor == "one" for _, factor, _, _ in terms):
            columns["one"] = flint.arb_mat(width, 1, [1.0] * width)
        if low is not None:
            columns["x_low"] = columns["x"] - flint.arb_mat(width, 1, low[slots].tolist())
            columns["x_high"] = columns["x"] - flint.arb_mat(width, 1, high[slots].tolist())
        built = {id(z_weight): _arb_matrix(z_weight[np.ix_(members, kept)])}
        for matrix, _, _, _ in terms:
            if id(matrix) not in built:
                built[id(matrix)] = _arb_matrix(matrix[np.ix_(members, kept)])
        linear = (built[id(z_weight)] * columns["x"]).entries()
        slopes = [(built[id(matrix)] * columns[factor]).entries() for matrix, factor, _, _ in terms]
        row_coefficients = [[] for _ in terms]
        for k, j in enumerate(members):
            s, b, r = scale[j], bias[j], arb(float(relevance[j]))
            sums = [arb(0)] * n_groups  # the slope, or sum_i q_ij of each group
            for (_, _, coefficient, power), slope, group in zip(terms, slopes, term_groups):
                sums[group] = sums[group] + coefficient * s ** power * slope[k]
            if rule in SPLIT_RULES:
                found = _split_coefficients(rule, sums, b, r, parameters, conventions)
            else:
                z = linear[k] * s ** z_power + b
                share = _bias_share(rule, conventions["bias"], b) if rule not in FORMULA_RULES else arb(0)
                slope_raw = sums[0] + share if share is not None else sums[0]
                found = _row_coefficient(rule, z, slope_raw, b, share, r, parameters, conventions)
                if found is not None:
                    found = ([found[0]], found[1], found[2])
            if found is None:
                undecided += 1
                a = [arb.nan()] * n_groups
            else:
                a, kept_bias, kept_stabiliser = found
                absorbed_bias += kept_bias
                absorbed_stabiliser += kept_stabiliser
                coefficients[:, j] = [float(value.mid()) for value in a]
            for n, (_, _, coefficient, power) in enumerate(terms):
                row_coefficients[n].append(a[term_groups[n]] * coefficient * s ** power)
        for n, (matrix, _, _, _) in enumerate(terms):
            summed = (flint.arb_mat(1, len(members), row_coefficients[n]) * built[id(matrix)]).entries()
            target = accumulated[n]
            for slot, value in zip(slots.tolist(), summed):
                previous = target[slot]
                target[slot] = value if previous is None else previous + value
    relevance_in: list = [None] * rows.n_touched
    x_touched = x_ext[: rows.n_touched].tolist()
    for n, (_, factor, _, _) in enumerate(terms):
        if factor in ("x", "x_plus", "x_minus"):
            multipliers = _factor_values(factor, x_ext[: rows.n_touched], None, None).tolist()
        elif factor == "one":
            multipliers = None
        else:  # x_i - l_i, x_i - h_i: exact balls of the difference of two float64 values
            bound = (low if factor == "x_low" else high).tolist()
            multipliers = [arb(value) - arb(b) for value, b in zip(x_touched, bound)]
        for i, part in enumerate(accumulated[n][: rows.n_touched]):
            if part is None:
                continue
            if multipliers is not None:
                part = part * multipliers[i]  # a float64 enters as an exact ball
            previous = relevance_in[i]
            relevance_in[i] = part if previous is None else previous + part
    zero = arb(0)
    relevance_in = [zero if value is None else value for value in relevance_in]
    flow = _flow(rows, terms, term_groups, x_ext, low, high, coefficients)
    return BallRelevance(relevance_in, flow, np.abs(np.asarray(relevance, dtype=np.float64)), absorbed_bias,
                         absorbed_stabiliser, undecided)


def _flow(rows: SampledRows, terms, term_groups, x_ext, low, high, coefficients) -> np.ndarray:
    """|R_ij| in float64 (rounding bounds only): per group g, |a_gj sum_k coefficient_k s_j^p P_k[j, i]
    f_k(x_i)| over its terms k, summed over the groups."""
    scale = np.ones(coefficients.shape[1]) if rows.scale is None else np.array([float(s.mid()) for s in rows.scale])
    flow = np.zeros(rows.index.shape)
    for group in range(coefficients.shape[0]):
        q = np.zeros(rows.index.shape)
        for (matrix, factor, coefficient, power), term_group in zip(terms, term_groups):
            if term_group != group:
                continue
            values = _factor_values(factor, x_ext, low, high)
            gathered = 1.0 if values is None else values[rows.index]
            q += float(coefficient.mid()) * (scale ** power)[:, None] * matrix * gathered
        flow += np.abs(q * coefficients[group][:, None])
    return flow


def maxpool_balls(index: np.ndarray, connected: np.ndarray, x: np.ndarray, relevance: np.ndarray,
                  n_touched: int) -> BallRelevance:
    """Winner-take-all: R_j to the maximal cells of window j, exact ties split equally (the float64
    inputs compare exactly; a padding cell is no candidate)."""
    arb = require_flint().arb
    x_ext = np.append(np.asarray(x, dtype=np.float64), -np.inf)
    values = np.where(connected, x_ext[index], -np.inf)
    winners = values == values.max(axis=1, keepdims=True)
    relevance_in = [arb(0)] * n_touched
    flow = np.zeros(index.shape)
    for j in range(len(index)):
        cells = np.flatnonzero(winners[j] & connected[j])
        share = arb(float(relevance[j])) / len(cells)
        for cell in cells:
            relevance_in[index[j, cell]] = relevance_in[index[j, cell]] + share
        flow[j, cells] = abs(float(relevance[j])) / len(cells)
    return BallRelevance(relevance_in, flow, np.abs(np.asarray(relevance, dtype=np.float64)), arb(0), arb(0))


def add_balls(rule: str, addends: list[np.ndarray], relevance: np.ndarray, parameters: Mapping[str, Any],
              conventions: Mapping[str, Any], *, bits: int) -> BallRelevance:
    """R_k of each addend of y = sum_k a_k for the sampled neurons (stacked: addend-major).

    add_z / add_zplus: root a~_k = a_k - t v_k along v_k (a_k, or a_k^+), t = y / sum_k v_k,
    R_k = c (a_k - a~_k) with c = R / y (y = 0: the limit R v_k / sum_k v_k); add_epsilon:
    R_k = a_k R / (y + eps sign(y)).
    """
    arb = require_flint().arb
    if rule not in ("add_z", "add_zplus", "add_epsilon"):
        raise UnknownRuleError(f"{rule!r} is not a rule of the Add node")
    stacked = np.stack([np.asarray(a, dtype=np.float64) for a in addends], axis=1)
    n, n_addends = stacked.shape
    out = np.empty((n, n_addends), dtype=object)
    flow = np.zeros((n, n_addends))
    absorbed = arb(0)
    undecided = 0
    with working_precision(bits):
        for j in range(n):
            r = arb(float(relevance[j]))
            row = [arb(float(value)) for value in stacked[j]]
            y = sum(row[1:], row[0])
            found = None
            if rule == "add_epsilon":
                s = lrp_sign(y)
                if s is not None:
                    own = arb(parameters["epsilon"]) * s
                    d = y + own
                    absorber = stabiliser_ball(d, r, conventions["eps"], conventions["stabilise"], rule)
                    if absorber is not None and sign(d + absorber) is not None:
                        ratio = r / (d + absorber)
                        found = ([value * ratio for value in row], (own + absorber) * ratio)
            else:
                v = row if rule == "add_z" else [value if value > 0 else arb(0) for value in row]
                slope_raw = sum(v[1:], v[0])
                absorber = stabiliser_ball(slope_raw, r, conventions["eps"], conventions["stabilise"], rule)
                y_sign = sign(y)
                if absorber is not None and y_sign is not None and sign(slope_raw + absorber) is not None:
                    slope = slope_raw + absorber
                    if y_sign == 0:  # the limit of the step: R in proportion to v_k
                        found = ([r / slope * vk for vk in v], r / slope * absorber)
                    else:
                        t = y / slope
                        c = r / y
                        found = ([c * (ak - (ak - t * vk)) for ak, vk in zip(row, v)], c * t * absorber)
            if found is None:
                undecided += 1
                out[j] = arb.nan()
                continue
            out[j] = found[0]
            absorbed += found[1]
            flow[j] = [abs(float(value.mid())) for value in found[0]]
    stacked_relevance = [out[j, k] for k in range(n_addends) for j in range(n)]
    result = BallRelevance(stacked_relevance, flow, np.abs(np.asarray(relevance, dtype=np.float64)), arb(0),
                           absorbed, undecided, bits)
    return result


__all__ = ["BIAS_CONVENTIONS", "BallRelevance", "FORMULA_RULES", "RETRIES", "ROOT_POINT_RULES", "SPLIT_RULES",
           "SampledRows", "add_balls", "linear_balls", "maxpool_balls", "two_product"]
