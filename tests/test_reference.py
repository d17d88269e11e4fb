"""The high-precision reference on its own: construction, conservation, positivity, identities.

Tolerances are stated next to each check. At ``dps`` digits (plus the reference's guard digits)
a conserved sum is exact up to about 10^-(dps) times the sizes involved, so "within 1e-40" at
50 digits leaves ten digits for cancellation inside a neuron.
"""

import subprocess
import sys

import mpmath
import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from lrp_num import reference as ref
from lrp_num import testing
from lrp_num.errors import LRPError, ZeroDenominatorError
from lrp_num.layers import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, ReLU, SumPool2d
from lrp_num.io.model_io import load_builtin
from lrp_num.engine.network import Sequential

DPS = 50
CONSERVATION_TOL = mpmath.mpf("1e-40")


@pytest.fixture(autouse=True)
def _high_precision():
    """Comparisons in the tests themselves run at 70 digits (mpmath's default is 15)."""
    with mpmath.workdps(DPS + 20):
        yield


def _sum(values):
    with mpmath.workdps(DPS + 20):
        return mpmath.fsum(np.ravel(values))


def _top(network, x, target=None):
    out = ref.forward(network, x, dps=DPS)
    c = int(np.argmax([float(v) for v in out])) if target is None else target
    return out[c]


def _mlp(weights, biases):
    layers = []
    for k, (w, b) in enumerate(zip(weights, biases)):
        layers.append(Dense(np.array(w, float), np.array(b, float)))
        if k < len(weights) - 1:
            layers.append(ReLU())
    return Sequential(layers, input_shape=(len(weights[0]),))


# -- construction ---------------------------------------------------------------------------------

@given(testing.networks(kind="conv"))
def test_linear_matrices_equal_the_layers_jacobians(network):
    """The index-arithmetic matrix of every linear layer equals its Jacobian (one-hot inputs)."""
    prepared = ref.prepare(network, network.input_shape)
    for index, matrix in prepared.matrices.items():
        layer = network.layers[index]
        shape = prepared.input_shapes(prepared.nodes[index])[0]
        eye = np.eye(matrix.n_in).reshape(matrix.n_in, *shape)
        jacobian = layer.forward(eye).reshape(matrix.n_in, -1)  # exact: single-term sums
        np.testing.assert_array_equal(matrix.dense(), jacobian)


@given(testing.networks_with_inputs())
def test_forward_agrees_with_the_engine(case):
    network, x, _, _ = case
    high = ref.to_float(ref.forward(network, x, dps=DPS))
    engine = network.forward(x[None])[0].ravel()
    # float64 forward: a few ulps of the sum of |terms| per layer; generous 1e-12 relative
    np.testing.assert_allclose(engine, high, rtol=1e-12, atol=1e-12 * (1 + np.abs(high).max()))


def test_flat_counts_connectivity_not_weights():
    """A zero weight is still a connection for the flat rule (as the engine's "ones" transform)."""
    network = _mlp([[[0.0, 1.0], [1.0, 1.0]]], [[0.0, 0.0]])
    r = ref.explain(network, np.array([1.0, 2.0]), rule="flat", target=np.array([1.0, 0.0]))
    assert [float(v) for v in r] == [0.5, 0.5]


# -- conservation at 50 digits --------------------------------------------------------------------

CONSERVATIVE = ["w2", "zplus", "lrp0", "gamma", "flat"]


def _conservation_case(rule):
    # zplus / lrp0 / gamma conserve on active neurons with nonzero slope: non-positive biases and
    # non-negative inputs keep every relevance-carrying neuron's slope > 0
    if rule in ("w2", "flat"):
        return testing.networks_with_inputs(domain="R^n")
    return testing.networks_with_inputs(domain="orthant", bias="nonpositive")


@pytest.mark.parametrize("rule", CONSERVATIVE)
@given(data=st.data())
def test_conservation_at_50_digits(rule, data):
    network, x, _, _ = data.draw(_conservation_case(rule))
    result = ref.explain_trace(network, x, rule=rule, dps=DPS)[0]
    assume(all(t.absorbed_stabiliser == 0 for t in result.traces))
    top = _sum(result.top)
    assert abs(_sum(result.relevance) - top) <= CONSERVATION_TOL * max(1, abs(top))
    for trace in result.traces:  # layer by layer, too
        assert abs(_sum(trace.relevance_in) - _sum(trace.relevance_out)) <= CONSERVATION_TOL * max(1, abs(top))


@given(testing.networks_with_inputs(domain="box", bias="nonpositive"))
def test_conservation_deep_taylor_composite_with_zbox_at_the_input(case):
    network, x, lower, upper = case
    result = ref.explain_trace(network, x, composite=_deep_taylor(), dps=DPS, lower=lower, upper=upper)[0]
    assume(all(t.absorbed_stabiliser == 0 for t in result.traces))
    top = _sum(result.top)
    assert abs(_sum(result.relevance) - top) <= CONSERVATION_TOL * max(1, abs(top))


def _deep_taylor():
    """zbox on the first linear layer, zplus above (the "deep-taylor" composite), self-contained."""
    class Choice:
        def __init__(self, rule):
            self.rule, self.parameters = rule, {}

    class DeepTaylor:
        def plan(self, layers, input_is_box):
            plan, first = {}, True
            for index, layer in enumerate(layers):
                if isinstance(layer, (Dense, Conv2d)):
                    plan[index] = Choice("zbox" if first else "zplus")
                    first = False
                elif isinstance(layer, (SumPool2d, AvgPool2d)):
                    plan[index] = Choice("lrp0")
            return plan
    return DeepTaylor()


@pytest.mark.parametrize("rule", ["epsilon", "bias_neuron"])
@given(case=testing.networks_with_inputs(domain="orthant"), epsilon=st.sampled_from([0.0, 1e-3, 0.25]))
@example(case=(_mlp([[[1.0, -1.0], [2.0, 0.5]], [[1.0], [1.0]]], [[0.5, -0.5], [0.25]]), np.array([1.0, 1.0]), None, None), epsilon=0.0)
def test_epsilon_and_bias_neuron_absorb_the_derived_amount(rule, case, epsilon):
    """sum_i R_i + (relevance kept by biases and stabilisers) = R_top, layer by layer.

    The kept amounts are the derived ones: b_j / (z_j + eps sign z_j) R_j by the bias and
    eps sign(z_j) / (z_j + eps sign z_j) R_j by the stabiliser.
    """
    network, x, _, _ = case
    parameters = {"epsilon": epsilon} if rule == "epsilon" else {}
    try:
        result = ref.explain_trace(network, x, rule=rule, dps=DPS, **parameters)[0]
    except ZeroDenominatorError:
        assume(False)
    for trace in result.traces:
        passed, upper = _sum(trace.relevance_in), _sum(trace.relevance_out)
        kept = trace.absorbed_bias + trace.absorbed_stabiliser
        assert abs(passed + kept - upper) <= CONSERVATION_TOL * max(1, _sum(np.abs(trace.relevance_out)))


# -- positivity -----------------------------------------------------------------------------------

@pytest.mark.parametrize("rule,domain", [("w2", "R^n"), ("zplus", "orthant")])
@given(data=st.data())
def test_positivity_on_the_rule_domain(rule, domain, data):
    network, x, _, _ = data.draw(testing.networks_with_inputs(domain=domain))
    assume(_top(network, x) >= 0)
    relevance = ref.explain(network, x, rule=rule, dps=DPS)
    assert all(r >= 0 for r in relevance.ravel())


@given(testing.networks_with_inputs(domain="box"))
def test_positivity_zbox_then_zplus_on_a_box(case):
    network, x, lower, upper = case
    assume(_top(network, x) >= 0)
    relevance = ref.explain(network, x, composite=_deep_taylor(), dps=DPS, lower=lower, upper=upper)
    assert all(r >= 0 for r in relevance.ravel())


def test_lrp0_breaks_positivity():
    network = _mlp([[[2.0], [-1.0]]], [[0.0]])  # z = 2 x_1 - x_2
    r = ref.explain(network, np.array([1.0, 1.0]), rule="lrp0", target=0)
    assert [float(v) for v in r] == [2.0, -1.0]


def test_gamma_with_a_positive_bias_breaks_positivity_with_a_backward_step():
    """b > 0 lets z_j > 0 while sum_i x_i (w + gamma w^+) < 0: the step t* is negative (the
    direction raises z_j), every R_ij flips sign, and the derived condition fails."""
    network = _mlp([[[1.0], [-2.0]]], [[2.0]])  # z = x_1 - 2 x_2 + 2 = 1 at x = (1, 1)
    x = np.array([1.0, 1.0])
    r = ref.explain(network, x, rule="gamma", gamma=0.25, target=0)
    assert float(r[0]) < 0
    (membership,) = ref.root_point_membership(network, x, rule="gamma", gamma=0.25, target=0)
    assert membership[0].n_active == 1 and membership[0].n_inside == 0


def test_gamma_with_nonpositive_bias_can_still_give_negative_inputs_relevance():
    """Gamma keeps q_ij = x_i w_ij < 0 for inhibitory inputs: positive only at gamma -> infinity."""
    network = _mlp([[[2.0], [-1.0]]], [[-0.5]])
    r = ref.explain(network, np.array([1.0, 1.0]), rule="gamma", gamma=0.25, target=0)
    assert float(r[1]) < 0 < float(r[0])


def test_alphabeta_breaks_positivity():
    network = _mlp([[[2.0], [-1.0]]], [[0.0]])
    r = ref.explain(network, np.array([1.0, 1.0]), rule="alphabeta", target=0)
    assert float(r[1]) < 0  # -beta times the negative group


@given(testing.networks_with_inputs(domain="orthant", kind="mlp"))
def test_alphabeta_with_beta_zero_is_zplus_on_the_orthant(case):
    network, x, _, _ = case
    a = ref.explain(network, x, rule="alphabeta", alpha=1.0, beta=0.0, dps=DPS, conventions={"eps": 1.0})
    b = ref.explain(network, x, rule="zplus", dps=DPS, conventions={"eps": 1.0})
    assert all(abs(u - v) <= mpmath.mpf("1e-45") * (1 + abs(v)) for u, v in zip(a.ravel(), b.ravel()))


# -- conventions and the stabiliser ---------------------------------------------------------------

def test_bias_conventions_in_root_point_terms():
    """v_0j b_j is the engine's bias share: 0 (dtd), b (neuron), b^+ / b^2 / b / 0 (zennit)."""
    for b in (-1.5, 0.0, 2.0):
        for rule in ref.ROOT_POINT_RULES:
            assert ref.bias_direction(rule, "dtd", b) * b == 0
            assert ref.bias_direction(rule, "neuron", b) * b == b
        zennit = {"zplus": max(b, 0), "w2": b * b, "lrp0": b, "gamma": b, "zbox": 0, "flat": 0}
        for rule, share in zennit.items():
            assert ref.bias_direction(rule, "zennit", b) * b == share


def test_neuron_convention_is_bias_neuron_for_lrp0():
    network = _mlp([[[1.0, -1.0], [2.0, 0.5]], [[1.0], [1.5]]], [[0.5, 0.25], [-0.25]])
    x = np.array([0.5, 1.0])
    a = ref.explain(network, x, rule="lrp0", target=0, conventions={"bias": "neuron"})
    b = ref.explain(network, x, rule="bias_neuron", target=0)
    assert all(abs(u - v) < 1e-45 for u, v in zip(a, b))


def _gamma_split_layer(seed=5):
    """A dense layer with biases of both signs, inputs of both signs and upper relevance of both
    signs on every output (z_j of either sign, so by_sign uses both derivations)."""
    rng = np.random.default_rng(seed)
    weight, bias = rng.normal(size=(5, 4)), np.array([0.7, -0.4, 1.3, -1.1])
    return weight, bias, rng.normal(size=(3, 5)), rng.normal(size=(3, 4))


@pytest.mark.parametrize("by_sign", [False, True])
@pytest.mark.parametrize("bias", ["neuron", "captum"])
def test_gamma_split_engine_follows_the_reference_under_the_neuron_and_captum_conventions(bias, by_sign):
    """gamma_split's derivation holds its bias (b + gamma b^+, zennit's Gamma); no convention adds
    b_j again: the engine's kernel equals the mpmath reference and the rule's own (dtd) result."""
    from lrp_num import explain
    from lrp_num.engine.conventions import Conventions

    weight, bias_values, x, top = _gamma_split_layer()
    network = Sequential([Dense(weight, bias_values)], input_shape=(5,))
    chosen = Conventions(bias=bias, by_sign=by_sign)
    engine = explain(network, x, rule="gamma_split", target=top, conventions=chosen)
    exact = np.asarray(ref.explain(network, x, rule="gamma_split", target=top, conventions=chosen, dps=30),
                       dtype=np.float64).reshape(engine.shape)
    assert np.abs(engine - exact).max() <= 1e-12 * np.abs(exact).max()
    derived = explain(network, x, rule="gamma_split", target=top, conventions=Conventions(by_sign=by_sign))
    assert np.abs(engine - derived).max() <= 1e-12 * np.abs(derived).max()


def test_gamma_split_under_the_neuron_convention_is_the_bias_as_an_input_neuron():
    """Bach et al. 2015's bias neuron: an extra input with activation 1 and weight b_j, on a layer
    without bias. Under gamma_split it joins the x^+ group with q_0j = b_j + gamma b_j^+, the share
    the derivation already holds, so the layer with its bias under "neuron" equals the augmented
    layer without bias, and the bias neuron's relevance is what the bias keeps."""
    from lrp_num import explain
    from lrp_num.engine.conventions import Conventions

    weight, bias_values, x, top = _gamma_split_layer()
    network = Sequential([Dense(weight, bias_values)], input_shape=(5,))
    augmented = Sequential([Dense(np.vstack([weight, bias_values]), np.zeros(4))], input_shape=(6,))
    x_augmented = np.hstack([x, np.ones((len(x), 1))])
    as_input = np.asarray(ref.explain(augmented, x_augmented, rule="gamma_split", target=top, dps=30),
                          dtype=np.float64).reshape(x_augmented.shape)
    neuron = Conventions(bias="neuron")
    exact = np.asarray(ref.explain(network, x, rule="gamma_split", target=top, conventions=neuron, dps=30),
                       dtype=np.float64).reshape(x.shape)
    engine = explain(network, x, rule="gamma_split", target=top, conventions=neuron)
    scale = np.abs(as_input).max()
    assert np.abs(exact - as_input[:, :5]).max() <= 1e-25 * scale
    assert np.abs(engine - as_input[:, :5]).max() <= 1e-12 * scale
    kept = top.sum(axis=1) - engine.sum(axis=1)  # gamma_split conserves with its bias neuron
    assert np.abs(kept - as_input[:, 5]).max() <= 1e-12 * scale


def test_gamma_split_one_neuron_in_exact_arithmetic():
    """z = 1 * 1 + (-0.5)(-2) + 0.5 = 5/2; q = 1 (1 + gamma 1) = 5/4 and (-0.5)(-2 + gamma (-2)) = 5/4;
    d = 5/4 + 5/4 + b + gamma b^+ = 25/8, so R = q / d * z = (1, 1) and the bias keeps 1/2, as
    zennit 0.5.1's Gamma gives; adding b_j once more would give 25/29 each."""
    from fractions import Fraction

    from lrp_num import explain
    from lrp_num.engine.conventions import Conventions

    network = Sequential([Dense(np.array([[1.0], [-2.0]]), np.array([0.5]))], input_shape=(2,))
    x = np.array([1.0, -0.5])
    for bias in ("dtd", "zennit", "neuron", "captum"):
        chosen = Conventions(bias=bias)
        exact = ref.explain(network, x, rule="gamma_split", target=0, gamma=0.25, conventions=chosen, dps=30)
        assert [Fraction(float(v)) for v in exact] == [1, 1], bias
        engine = explain(network, x[None], rule="gamma_split", target=0, gamma=0.25, conventions=chosen)
        assert [Fraction(float(v)) for v in engine[0]] == [1, 1], bias


def test_zero_slope_with_relevance_and_eps_zero_raises():
    network = _mlp([[[1.0], [1.0]]], [[1.0]])  # z = 1 at x = 0, zplus slope 0
    with pytest.raises(ZeroDenominatorError):
        ref.explain(network, np.zeros(2), rule="zplus", target=0, conventions={"eps": 0.0})
    # with eps > 0 the stabiliser input absorbs all of R_j
    result = ref.explain_trace(network, np.zeros(2), rule="zplus", target=0)[0]
    assert _sum(result.relevance) == 0 and result.traces[0].absorbed_stabiliser == 1


@given(testing.near_zero_layers(3, 2), st.sampled_from(["zero", "everywhere"]))
def test_everywhere_stabiliser_absorbs_eps_over_slope(case, mode):
    layer, x = case
    network = Sequential([layer], input_shape=(3,))
    relevance_out = np.array([1.0, 0.0])
    try:
        result = ref.explain_trace(network, x, rule="lrp0", target=relevance_out,
                                   conventions={"stabilise": mode, "eps": 1e-3})[0]
    except ZeroDenominatorError:  # pragma: no cover - eps > 0
        raise
    trace = result.traces[0]
    assert abs(_sum(result.relevance) + trace.absorbed_stabiliser - 1) <= CONSERVATION_TOL


# -- the root-point solver ------------------------------------------------------------------------

@given(testing.networks_with_inputs(domain="orthant", kind="mlp", max_width=4, max_depth=2),
       st.sampled_from(["w2", "zplus", "gamma", "lrp0"]))
def test_findroot_finds_the_same_root_points(case, rule):
    network, x, _, _ = case
    newton = ref.explain_trace(network, x, rule=rule, dps=30)[0]
    try:
        secant = ref.explain_trace(network, x, rule=rule, dps=30, solver="findroot")[0]
    except ZeroDivisionError:  # findroot needs two distinct starting points (z_j = 0)
        assume(False)
    for a, b in zip(newton.relevance, secant.relevance):
        assert abs(a - b) <= mpmath.mpf("1e-25") * (1 + abs(a))
    assert all(t.hinge_residual < mpmath.mpf("1e-35") for t in newton.traces)


# -- whole-network identities ---------------------------------------------------------------------

@given(testing.networks_with_inputs(domain="R^n", bias="zero"))
@example(case=(_mlp([[[1.0], [-1.0]]], [[0.0]]), np.array([-1.0, -2.0]), None, None))  # all-negative input
@example(case=(_mlp([[[1.0, 2.0]], [[1.0], [1.0]]], [[0.0, 0.0], [0.0]]), np.array([0.0]), None, None))  # z = 0
def test_lrp0_is_gradient_times_input_without_biases(case):
    network, x, _, _ = case
    relevance = ref.explain(network, x, rule="lrp0", dps=DPS)
    grad = ref.gradient(network, x, dps=DPS)
    scale = max([1] + [abs(g * xi) for g, xi in zip(grad.ravel(), x.ravel())])
    for r, g, xi in zip(relevance.ravel(), grad.ravel(), x.ravel()):
        assert abs(r - g * mpmath.mpf(xi)) <= CONSERVATION_TOL * scale


@given(testing.networks_with_inputs(domain="R^n"))
def test_sensitivity_sums_to_squared_gradient_norm(case):
    network, x, _, _ = case
    sensitivity = ref.sensitivity(network, x, dps=DPS)
    grad = ref.gradient(network, x, dps=DPS)
    assert abs(_sum(sensitivity) - _sum([g * g for g in grad.ravel()])) <= CONSERVATION_TOL * (1 + _sum(sensitivity))
    assert all(s >= 0 for s in sensitivity.ravel())


@given(testing.networks_with_inputs(domain="R^n"))
def test_whole_function_taylor_residual(case):
    """f(x) = f(x~) + sum_p R_p exactly when f is affine on [x~, x] (same active set)."""
    network, x, _, _ = case
    assume(_top(network, x) > 1e-6)
    try:
        taylor = ref.whole_function_taylor(network, x, dps=DPS)
    except LRPError:
        assume(False)
    assert abs(taylor.value_at_root) <= CONSERVATION_TOL * (1 + abs(_top(network, x)))
    if taylor.same_active_set:
        assert abs(taylor.residual) <= CONSERVATION_TOL * (1 + abs(_top(network, x)))


def test_whole_function_taylor_reports_a_residual_on_the_digits_mlp():
    model = load_builtin("digits-mlp")
    residuals = []
    for image, label in zip(model.test_images[:3], model.test_labels[:3]):
        taylor = ref.whole_function_taylor(model.network, image, target=int(label))
        residuals.append((abs(taylor.residual), taylor.same_active_set))
        if taylor.same_active_set:
            assert abs(taylor.residual) < CONSERVATION_TOL
    assert any(not same and r > 1e-3 for r, same in residuals)  # the active set changes: a real residual


# -- root-point membership ------------------------------------------------------------------------

@pytest.mark.parametrize("rule", ["zplus", "gamma", "zbox", "w2", "lrp0"])
@given(data=st.data())
def test_membership_agrees_with_the_derived_condition(rule, data):
    """Direct check of x~ in the domain (reference) == the derived condition (lrp_sym), per layer.

    Counted over active neurons reached with a positive step (sum_i q_ij > 0), which the
    derivation assumes; cases within 1e-30 of the condition's boundary are undecidable at this
    precision and skipped.
    """
    from lrp_num.reference import symbolic as sym

    n_in, n_out = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    layer = data.draw(testing.dense_layers(n_in, n_out, "mixed"))
    lower = upper = None
    if rule == "zbox":
        lower, upper = data.draw(testing.boxes((n_in,)))
        x = data.draw(testing.inputs((n_in,), "box", lower, upper))
    else:
        x = data.draw(testing.inputs((n_in,), "orthant"))
    network = Sequential([layer], input_shape=(n_in,))
    bounds = {"lower": lower, "upper": upper} if rule == "zbox" else {}
    (membership,) = ref.root_point_membership(network, x, rule=rule, target=np.ones(n_out), **bounds)
    lhs = sym.domain_condition_values(rule, layer.weight, layer.bias, x, **bounds)
    mp = lambda v: mpmath.mpf(float(v))  # noqa: E731
    z = [mpmath.fsum(mp(a) * mp(w) for a, w in zip(x, column)) + mp(b)
         for column, b in zip(layer.weight.T, layer.bias)]
    slopes = _slopes(rule, layer, x, lower, upper)
    scale = 1 + sum(abs(mp(a)) for a in x) * sum(abs(mp(w)) for w in layer.weight.ravel()) + sum(abs(mp(b)) for b in layer.bias)
    if lhs is not None:
        assume(all(abs(value) > mpmath.mpf("1e-30") * scale for value in lhs))
    assume(all(abs(value) > mpmath.mpf("1e-30") * scale for value in z))
    holds = [True] * n_out if lhs is None else [value <= 0 for value in lhs]
    expected = sum(1 for zj, s, h in zip(z, slopes, holds) if zj > 0 and s > 0 and h)
    assert membership[0].n_active == sum(1 for zj in z if zj > 0)
    assert membership[0].n_inside == expected


def _slopes(rule, layer, x, lower, upper):
    """sum_i q_ij per neuron, exactly (mpmath) from the rule's q."""
    mp = lambda v: mpmath.mpf(float(v))  # noqa: E731
    out = []
    for column in layer.weight.T:
        q = []
        for i, w in enumerate(column):
            wp, wm = mp(max(w, 0.0)), mp(min(w, 0.0))
            if rule == "zplus":
                q.append(mp(x[i]) * wp)
            elif rule == "gamma":
                q.append(mp(x[i]) * (mp(w) + mpmath.mpf("0.25") * wp))
            elif rule == "zbox":
                q.append((mp(x[i]) - mp(lower[i])) * wp + (mp(x[i]) - mp(upper[i])) * wm)
            elif rule == "lrp0":
                q.append(mp(x[i]) * mp(w))
            else:
                q.append(mp(w) ** 2)
        out.append(mpmath.fsum(q))
    return out


# -- speed and the built-in models -----------------------------------------------------------------

def test_digits_mlp_reference_is_fast():
    import time

    model = load_builtin("digits-mlp")
    start = time.perf_counter()
    ref.explain(model.network, model.test_images[0], rule="zplus", target=0, dps=50)
    assert time.perf_counter() - start < 5.0


def test_import_lrp_num_reference_does_not_import_sympy():
    code = ("import sys, lrp_num, lrp_num.reference, lrp_num.testing, lrp_num.reference.symbolic; "
            "assert 'sympy' not in sys.modules, 'sympy imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rule_defaults_match_the_derivations():
    from lrp_num.reference import symbolic as sym
    from lrp_sym.registry import load_declarations

    for rule, defaults in ref.RULE_DEFAULTS.items():
        if rule in ref.ADD_RULES and rule not in load_declarations():
            continue  # the Add derivations arrive on their own branch; checked once they are here
        assert sym.derived_defaults(rule) == defaults
    for rule in ref.RULES:
        if rule not in ref.RULE_DEFAULTS:
            assert sym.derived_defaults(rule) == {}


def test_unknown_rule_and_missing_box_are_lrp_errors():
    network = _mlp([[[1.0], [1.0]]], [[0.0]])
    with pytest.raises(LRPError):
        ref.explain(network, np.ones(2), rule="nonsense")
    with pytest.raises(LRPError):
        ref.explain(network, np.ones(2), rule="zbox")
    with pytest.raises(LRPError):
        ref.explain(network, np.ones(2), rule="gamma", alpha=1.0)


def test_max_pooling_splits_ties_equally():
    network = Sequential([MaxPool2d(2), Flatten()], input_shape=(1, 2, 2))
    x = np.array([[[1.0, 3.0], [3.0, 0.0]]])
    r = ref.explain(network, x, rule="lrp0", target=np.array([6.0]))
    assert [float(v) for v in r.ravel()] == [0.0, 3.0, 3.0, 0.0]
