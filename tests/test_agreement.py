"""Three-way agreement on single dense layers: definition (lrp_num.reference), derivation
(lrp_num.reference.symbolic) and the generated float64 kernel (lrp_num.engine.kernels).

Tolerance of the float64 kernel, from its operations (u = 2^-53; n inputs, m outputs):
it forms q_ij (a few roundings of pieces whose absolute values sum to A_ij), d_j = sum_i q_ij
(error <= (n + 2) u A_j, A_j = sum_i A_ij), s_j = R_j / d_j, and R_i = sum_j q_ij s_j
(error <= (m + 2) u sum_j |q_ij s_j|). To first order

    |R_i - R_i^ref| <= 4 (n + m + 6) u sum_j A_ij |R_j| / |d_j| (1 + A_j / |d_j|),

where the factor A_j / |d_j| is the cancellation in the denominator.
"""

import math

import mpmath
import numpy as np
import pytest
from hypothesis import assume, example, given, target
from hypothesis import strategies as st

from lrp_num import reference as ref
from lrp_num.reference import symbolic as sym
from lrp_num import testing
from lrp_num.engine.kernels import load_kernel
from lrp_num.layers import Dense
from lrp_num.engine.network import Sequential

U = 2.0 ** -53
RULES = ["w2", "zplus", "zbox", "lrp0", "gamma", "flat", "epsilon", "alphabeta", "bias_neuron"]
PARAMETERS = {"gamma": {"gamma": 0.25}, "epsilon": {"epsilon": 0.25}, "alphabeta": {"alpha": 2.0, "beta": 1.0}}


def _absolute_pieces(rule, layer, x, lower, upper):
    """A_ij >= the absolute values of the pieces the kernel adds to form q_ij, and d_j per group."""
    w, ax = layer.weight, np.abs(x)[:, None]
    if rule == "w2":
        groups = [(w * w, w * w)]
    elif rule == "flat":
        groups = [(np.ones_like(w), np.ones_like(w))]
    elif rule == "zbox":
        pieces = (ax + np.abs(lower)[:, None] + np.abs(upper)[:, None]) * np.abs(w)
        q = (x - lower)[:, None] * np.maximum(w, 0) + (x - upper)[:, None] * np.minimum(w, 0)
        groups = [(pieces, q)]
    elif rule == "zplus":
        groups = [(ax * np.maximum(w, 0), x[:, None] * np.maximum(w, 0))]
    elif rule == "gamma":
        groups = [(1.25 * ax * np.abs(w), x[:, None] * (w + 0.25 * np.maximum(w, 0)))]
    elif rule == "alphabeta":
        z = x[:, None] * w
        groups = [(np.abs(np.maximum(z, 0)), np.maximum(z, 0)), (np.abs(np.minimum(z, 0)), np.minimum(z, 0))]
    else:  # lrp0, epsilon, bias_neuron: q = x w with the bias in the denominator
        groups = [(ax * np.abs(w), x[:, None] * w)]
    return groups


def _denominators(rule, layer, q):
    d = q.sum(axis=0)
    if rule in ("epsilon", "bias_neuron"):
        d = d + layer.bias
    if rule == "epsilon":
        d = d + 0.25
    return d


def _tolerance(rule, layer, x, relevance_out, lower, upper):
    n, m = layer.weight.shape
    bound = np.zeros(n)
    for pieces, q in _absolute_pieces(rule, layer, x, lower, upper):
        d = _denominators(rule, layer, q)
        a_j = pieces.sum(axis=0) + (np.abs(layer.bias) if rule in ("epsilon", "bias_neuron") else 0)
        factor = np.abs(relevance_out) / np.abs(d) * (1 + a_j / np.abs(d))
        bound += 4 * (n + m + 6) * U * (pieces @ factor) * (3 if rule == "alphabeta" else 1)
    return bound


def _nonzero(low, high):
    magnitude = st.floats(low, high, allow_nan=False, allow_subnormal=False)
    return st.tuples(st.sampled_from([-1.0, 1.0]), magnitude).map(lambda p: p[0] * p[1])


@st.composite
def active_layers(draw, rule):
    """A dense layer, input and upper relevance with every neuron active and no zero denominator.

    Weights and inputs are non-zero (1e-3 <= |.| <= 2, 3): zero entries and the stabiliser have
    their own tests; here every denominator must be a sum of genuine terms.
    """
    n_in, n_out = draw(st.integers(2 if rule == "alphabeta" else 1, 6)), draw(st.integers(1, 4))
    weight = np.array(draw(st.lists(_nonzero(1e-3, 2.0), min_size=n_in * n_out, max_size=n_in * n_out))).reshape(n_in, n_out)
    lower = upper = None
    if rule == "zbox":
        lower, upper = draw(testing.boxes((n_in,)))
        x = draw(testing.inputs((n_in,), "box", lower, upper))
    elif rule in ("zplus", "gamma"):
        x = np.abs(np.array(draw(st.lists(_nonzero(1e-3, 3.0), min_size=n_in, max_size=n_in))))
    else:
        x = np.array(draw(st.lists(_nonzero(1e-3, 3.0), min_size=n_in, max_size=n_in)))
    relevance_out = draw(hnp_floats(n_out))
    # every neuron active: choose z_j > 0 and set b_j = z_j - sum_i x_i w_ij
    z = np.array(draw(st.lists(st.floats(0.01, 2.0), min_size=n_out, max_size=n_out)))
    layer = Dense(weight, z - x @ weight)
    return layer, x, relevance_out, lower, upper


def hnp_floats(size):
    return st.lists(st.floats(-2, 2, allow_nan=False, allow_subnormal=False), min_size=size, max_size=size).map(np.array)


def _usable(rule, layer, x, lower, upper):
    z = x @ layer.weight + layer.bias
    if not (z > 1e-6 * (1 + np.abs(x) @ np.abs(layer.weight))).all():
        return False  # the derived R_ij is that of an active neuron
    for pieces, q in _absolute_pieces(rule, layer, x, lower, upper):
        d = _denominators(rule, layer, q)
        if not (np.abs(d) > 1e-9 * (1 + pieces.sum(axis=0))).all():
            return False  # keep away from the stabiliser (its own tests cover it)
    return True


def _float_kernel(rule, layer, x, relevance_out, lower, upper):
    kwargs = dict(PARAMETERS.get(rule, {}))
    if rule == "zbox":
        kwargs.update(lower=lower[None], upper=upper[None])
    return load_kernel(rule)(layer, x[None], relevance_out[None], **kwargs)[0]


@pytest.mark.parametrize("rule", RULES)
@given(data=st.data())
def test_definition_derivation_and_kernel_agree(rule, data):
    layer, x, relevance_out, lower, upper = data.draw(active_layers(rule))
    assume(_usable(rule, layer, x, lower, upper))
    network = Sequential([layer], input_shape=(layer.n_in,))
    bounds = {"lower": lower, "upper": upper} if rule == "zbox" else {}
    definition = ref.explain(network, x, rule=rule, target=relevance_out, dps=50, **bounds)
    derivation = sym.dense_relevance(rule, layer.weight, layer.bias, x, relevance_out, dps=50, **bounds)
    scale = 1 + sum(abs(v) for v in definition)
    with mpmath.workdps(60):
        for a, b in zip(definition, derivation):
            assert abs(a - b) <= mpmath.mpf("1e-40") * scale  # definition == derivation
    kernel = _float_kernel(rule, layer, x, relevance_out, lower, upper)
    expected = ref.to_float(definition)
    tolerance = _tolerance(rule, layer, x, relevance_out, lower, upper) + 2 * U * np.abs(expected)
    error = np.abs(kernel - expected)
    target(float(np.max(error / np.maximum(tolerance, 1e-300))), label="error / tolerance")
    assert (error <= tolerance).all(), (error, tolerance)


@pytest.mark.parametrize("rule", ["w2", "zplus", "lrp0", "gamma", "flat"])
@example(seed=0)
@given(seed=st.integers(0, 2**32 - 1))
def test_kernel_error_in_ulps_on_well_conditioned_layers(rule, seed):
    """Away from cancellation (q_ij >= 0 or mild) the kernel is within a few ulps per term."""
    rng = np.random.default_rng(seed)
    n, m = 16, 8
    weight = rng.normal(size=(n, m))
    if rule in ("zplus", "gamma", "lrp0"):
        weight = np.abs(weight)  # all q_ij >= 0
    x = rng.uniform(0.1, 1.0, size=n)
    layer = Dense(weight, -rng.uniform(0, 0.1, size=m))
    relevance_out = rng.uniform(0.1, 1.0, size=m)
    network = Sequential([layer], input_shape=(n,))
    expected = ref.to_float(ref.explain(network, x, rule=rule, target=relevance_out))
    kernel = _float_kernel(rule, layer, x, relevance_out, None, None)
    ulps = np.abs(kernel - expected) / np.spacing(np.abs(expected))
    target(float(ulps.max()), label="ulps")
    assert ulps.max() <= 4 * (n + m), ulps.max()  # all terms >= 0: no cancellation
    assert math.isfinite(ulps.max())
