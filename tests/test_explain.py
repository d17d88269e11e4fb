"""explain over whole networks: conservation, targets, dtypes, composites and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from lrp_num import Composite, Conventions, LayerRule, Sequential, explain, explain_details, load_builtin
from lrp_num.errors import LRPError, NonFiniteError, TargetError, UnknownRuleError, ZeroDenominatorError
from lrp_num.engine.explain import MissingBoundsError, top_relevance
from lrp_num.layers import AvgPool2d, Dense, Flatten, MaxPool2d, ReLU, SumPool2d


@pytest.fixture(scope="module", params=["digits-mlp", "digits-cnn"])
def digits(request):
    return load_builtin(request.param)


def conservation_bound(network: Sequential, x: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Rounding bound for sum_p R_p - f: a few ulps per layer, scaled by the output value."""
    depth = len(network.layers)
    return 64 * depth * np.finfo(x.dtype).eps * (np.abs(f) + 1e-300)


def test_deep_taylor_conserves_on_builtin_models(digits):
    """Conservation up to rounding, except what neurons with sum_i q_ij = 0 absorb.

    A neuron that is active through a positive bias alone (here BatchNorm folded into the first
    convolution) has no root point in the box and the stabiliser absorbs its relevance; the test
    accounts for exactly that amount at the first layer.
    """
    x = digits.test_images.astype(np.float64)
    details = explain_details(digits.network, x, composite="deep-taylor", input_domain=digits.input_domain,
                              keep_layers=True)
    f = details.relevance_top.sum(axis=1)
    total = details.relevance.reshape(len(x), -1).sum(axis=1)
    first = digits.network.layers[0]
    low = np.broadcast_to(digits.input_domain.low, x.shape)
    high = np.broadcast_to(digits.input_domain.high, x.shape)
    denominator = first.forward(x) - first.forward(low, "positive") - first.forward(high, "negative")
    absorbed = np.where(denominator == 0, details.layers[0].relevance_above, 0).reshape(len(x), -1).sum(axis=1)
    assert np.all(f > 0)
    assert np.all(np.abs(total + absorbed - f) <= conservation_bound(digits.network, x, f))
    assert np.all(details.relevance >= 0)  # z^B and z+ are positive rules on their domains


def test_layer_reports_conserve_layer_by_layer(digits):
    x = digits.test_images[:3].astype(np.float64)
    details = explain_details(digits.network, x, composite="deep-taylor", input_domain=digits.input_domain)
    assert len(details.layers) == len(digits.network.layers)
    for report in details.layers[1:]:  # the first layer may absorb relevance, see above
        np.testing.assert_allclose(report.relevance_in, report.relevance_out, rtol=1e-12, atol=1e-12)


def test_float32_stays_float32(digits):
    x = digits.test_images.astype(np.float32)
    relevance = explain(digits.network, x, composite="deep-taylor", input_domain=digits.input_domain)
    assert relevance.dtype == np.float32 and relevance.shape == x.shape
    reference = explain(digits.network, x.astype(np.float64), composite="deep-taylor",
                        input_domain=digits.input_domain)
    np.testing.assert_allclose(relevance, reference, rtol=2e-3, atol=2e-4 * np.abs(reference).max())


@pytest.mark.parametrize("composite", ["deep-taylor", "epsilon-plus", "epsilon-gamma-box", "alpha2-beta1"])
def test_every_composite_runs_finite(digits, composite):
    x = digits.test_images[:4]
    relevance = explain(digits.network, x, composite=composite, input_domain=digits.input_domain)
    assert relevance.shape == x.shape and np.isfinite(relevance).all()


@pytest.mark.parametrize("rule", ["zplus", "w2", "lrp0", "gamma", "flat", "epsilon", "alphabeta", "bias_neuron"])
def test_every_rule_runs_finite(digits, rule):
    x = digits.test_images[:4]
    relevance = explain(digits.network, x, rule=rule)
    assert relevance.shape == x.shape and np.isfinite(relevance).all()


def test_lrp0_is_gradient_times_input_without_bias():
    rng = np.random.default_rng(1)
    w1, w2 = rng.normal(size=(6, 5)), rng.normal(size=(5, 3))
    network = Sequential([Dense(w1, np.zeros(5)), ReLU(), Dense(w2, np.zeros(3))])
    x = rng.normal(size=(4, 6))
    relevance = explain(network, x, rule="lrp0", target=1)
    active = (x @ w1) > 0
    gradient = (active * w2[:, 1]) @ w1.T
    np.testing.assert_allclose(relevance, gradient * x, rtol=1e-10, atol=1e-12)


def test_pooling_layers_follow_their_derived_rules():
    rng = np.random.default_rng(2)
    x = rng.random((2, 1, 4, 4))
    for pool in (SumPool2d(2), AvgPool2d(2)):
        network = Sequential([pool, Flatten()])
        top = rng.random((2, 4))
        relevance = explain(network, x, rule="zplus", target=top)
        windows = x.reshape(2, 1, 2, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 4, 4)
        expected = windows / windows.sum(axis=2, keepdims=True) * top[:, :, None]
        got = relevance.reshape(2, 1, 2, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 4, 4)
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    tied = np.array([[[[1.0, 1.0], [0.5, 0.2]]]])
    relevance = explain(Sequential([MaxPool2d(2), Flatten()]), tied, rule="zplus", target=np.array([[3.0]]))
    np.testing.assert_allclose(relevance, [[[[1.5, 1.5], [0.0, 0.0]]]])


def test_targets():
    output = np.array([[1.0, 3.0, 2.0], [4.0, 0.5, 0.1]])
    np.testing.assert_array_equal(top_relevance(output, None), [[0, 3, 0], [4, 0, 0]])
    np.testing.assert_array_equal(top_relevance(output, 2), [[0, 0, 2], [0, 0, 0.1]])
    np.testing.assert_array_equal(top_relevance(output, [0, 1]), [[1, 0, 0], [0, 0.5, 0]])
    explicit = np.ones_like(output)
    np.testing.assert_array_equal(top_relevance(output, explicit), explicit)
    with pytest.raises(TargetError, match="out of range"):
        top_relevance(output, 3)
    with pytest.raises(TargetError, match="indices for a batch"):
        top_relevance(output, [0, 1, 2])
    with pytest.raises(TargetError):
        top_relevance(output, np.ones((2, 4)))


def test_bad_input_is_a_documented_error(digits):
    x = digits.test_images[:2].copy()
    with pytest.raises(UnknownRuleError):
        explain(digits.network, x, rule="no-such-rule")
    with pytest.raises(UnknownRuleError):
        explain(digits.network, x, composite="no-such-composite")
    with pytest.raises(LRPError):
        explain(digits.network, x)
    with pytest.raises(MissingBoundsError):
        explain(digits.network, x, rule="zbox")
    with pytest.raises(LRPError, match="takes no parameter"):
        explain(digits.network, x, rule="zplus", gamma=0.5)
    x[0, ...] = np.nan
    with pytest.raises(NonFiniteError):
        explain(digits.network, x, rule="zplus")


def test_user_composite_and_conventions(digits):
    x = digits.test_images[:2]
    mine = Composite.from_types("mine", dense=LayerRule("epsilon", {"epsilon": 0.1}),
                                conv=LayerRule("gamma", {"gamma": 0.5}), first=LayerRule("flat"))
    assert np.isfinite(explain(digits.network, x, composite=mine)).all()
    dtd = explain(digits.network, x, rule="zplus")
    zennit_bias = explain(digits.network, x, rule="zplus", conventions=Conventions(bias="zennit"))
    assert np.all(zennit_bias.sum(axis=tuple(range(1, x.ndim))) <= dtd.sum(axis=tuple(range(1, x.ndim))) + 1e-9)
    with pytest.raises(UnknownRuleError):
        Conventions(bias="other")


def test_zero_denominators_never_give_nan():
    # the hidden neurons are active through their bias alone: sum_i x_i w_ij^+ = 0
    network = Sequential([Dense(-np.ones((3, 2)), np.full(2, 4.0)), ReLU(), Dense(np.ones((2, 1)), np.zeros(1))])
    x = np.ones((1, 3))
    relevance = explain(network, x, rule="zplus", target=0)
    assert np.isfinite(relevance).all()
    np.testing.assert_array_equal(relevance, 0.0)  # the relevance is absorbed, not invented
    with pytest.raises(ZeroDenominatorError):
        explain(network, x, rule="zplus", target=0, conventions=Conventions(eps=0.0))


def test_explain_reuses_forward_columns_and_releases_each_after_its_node(monkeypatch):
    """The im2col columns of the forward pass serve a convolution's rule, then are dropped: when
    the lower convolution's rule runs, the upper one holds no columns any more (otherwise every
    layer's columns stay alive through the whole backward pass)."""
    import importlib

    explain_module = importlib.import_module("lrp_num.engine.explain")  # lrp_num.explain is the function
    from lrp_num.layers import Conv2d

    rng = np.random.default_rng(5)
    lower, upper = Conv2d(rng.normal(size=(4, 2, 3, 3)), padding=1), Conv2d(rng.normal(size=(3, 4, 3, 3)))
    network = Sequential([lower, ReLU(), upper, ReLU(), Flatten(), Dense(rng.normal(size=(27, 2)))],
                         input_shape=(2, 5, 5))
    x = rng.random((2, 2, 5, 5))
    held: dict[str, tuple[bool, bool]] = {}
    original = explain_module._apply_node_rule

    def spy(layer, inputs, *args):
        if isinstance(layer, Conv2d):
            held["lower" if layer is lower else "upper"] = (lower._columns is not None,
                                                            upper._columns is not None)
        return original(layer, inputs, *args)

    monkeypatch.setattr(explain_module, "_apply_node_rule", spy)
    relevance = explain(network, x, rule="zplus")
    assert held == {"upper": (True, True), "lower": (True, False)}
    assert lower._columns is None and upper._columns is None
    monkeypatch.undo()
    np.testing.assert_allclose(relevance, explain(network, x, rule="zplus"), rtol=1e-12)
