"""Certified enclosures in ball arithmetic (issue 13): the mpmath reference lies inside every ball,
undecided neurons are counted instead of guessed, and ``verify --certified`` proves the engine's
bound and catches a wrong engine value."""

from __future__ import annotations

import json

import numpy as np
import pytest

flint = pytest.importorskip("flint")

from lrp_num import reference as ref  # noqa: E402
from lrp_num.certified import explain_balls  # noqa: E402
from lrp_num.certified.balls import from_mpf, working_precision  # noqa: E402
from lrp_num.certified.local import layer_contributions  # noqa: E402
from lrp_num.cli import main  # noqa: E402
from lrp_num.engine.graph import Graph, Node  # noqa: E402
from lrp_num.engine.network import Sequential  # noqa: E402
from lrp_num.io.model_io import load_builtin  # noqa: E402
from lrp_num.layers import (Add, AvgPool2d, BatchNorm, Concat, Conv2d, Dense, Flatten, GlobalAvgPool,  # noqa: E402
                            MaxPool2d, ReLU, SumPool2d)
from lrp_num.verify import DEFAULT_COMPOSITES, DEFAULT_RULES, verify  # noqa: E402

RULES = DEFAULT_RULES + ("zplus_split", "gamma_split")
METHODS = [("rule", r) for r in RULES] + [("composite", c) for c in DEFAULT_COMPOSITES]
BOX = (0.0, 1.0)


def _small_net(pool) -> Sequential:
    """Conv + batch norm + ReLU, sum or average pooling, conv + ReLU, max pooling, two dense layers."""
    rng = np.random.default_rng(7)
    layers = [
        Conv2d(rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3) * 0.1, padding=1),
        BatchNorm(rng.uniform(0.5, 2, 3), rng.normal(size=3) * 0.1, rng.normal(size=3) * 0.1,
                  rng.uniform(0.5, 2, 3)),
        ReLU(), pool(2),
        Conv2d(rng.normal(size=(4, 3, 2, 2)), -np.abs(rng.normal(size=4)) * 0.1), ReLU(),
        MaxPool2d(2), Flatten(),
        Dense(rng.normal(size=(4, 5)), -np.abs(rng.normal(size=5)) * 0.1), ReLU(),
        Dense(rng.normal(size=(5, 3)), rng.normal(size=3) * 0.1),
    ]
    return Sequential(layers, input_shape=(2, 6, 6))


def _inside(balls, values) -> list[int]:
    """Indices where the mpmath value is not inside the ball."""
    with working_precision(400):
        return [k for k, (ball, value) in enumerate(zip(balls, values)) if not ball.contains(from_mpf(value))]


def _assert_reference_inside(network, x, kind, name, conventions=None):
    targets = np.zeros(len(x), dtype=int)
    method = {kind: name}
    balls = explain_balls(network, x, target=targets, dps=30, input_domain=BOX, conventions=conventions, **method)
    exact = ref.explain_trace(network, x, target=targets, dps=70, input_domain=BOX, diagnostics=False,
                              conventions=conventions, **method)
    for ball_result, exact_result in zip(balls, exact):
        assert not ball_result.undecided
        for node, values in exact_result.relevance_at.items():
            assert _inside(ball_result.relevance_at[node], values) == [], (name, node)
        scale = max(abs(float(b.mid())) for b in ball_result.relevance)
        assert max(float(b.rad()) for b in ball_result.relevance) <= 1e-30 * scale


@pytest.mark.parametrize("pool", [SumPool2d, AvgPool2d])
@pytest.mark.parametrize("kind, name", METHODS)
def test_the_mpmath_reference_lies_inside_every_ball_on_a_conv_pool_dense_net(pool, kind, name):
    x = np.random.default_rng(3).uniform(0, 1, size=(1, 2, 6, 6))
    _assert_reference_inside(_small_net(pool), x, kind, name)


@pytest.mark.parametrize("conventions", [{"bias": "neuron"}, {"bias": "zennit"}, {"bias": "captum"},
                                         {"bias": "zennit", "stabilise": "everywhere", "eps": 1e-6}])
@pytest.mark.parametrize("rule", ["w2", "zplus", "lrp0", "alphabeta", "zplus_split", "gamma_split"])
def test_the_reference_lies_inside_the_balls_under_other_conventions(rule, conventions):
    x = np.random.default_rng(4).uniform(0, 1, size=(1, 2, 6, 6))
    _assert_reference_inside(_small_net(SumPool2d), x, "rule", rule, conventions)


@pytest.mark.parametrize("kind, name", METHODS)
def test_the_mpmath_reference_lies_inside_every_ball_on_digits_mlp(kind, name):
    model = load_builtin("digits-mlp")
    _assert_reference_inside(model.network, model.test_images[:2], kind, name)


def _graph_net() -> Graph:
    """A graph with a folded and an unfolded batch norm (ChannelAffine), a skip connection (Add),
    global average pooling and a Concat of two branches."""
    rng = np.random.default_rng(11)

    def batchnorm(c):
        return BatchNorm(rng.uniform(0.5, 1.5, c), 0.2 * rng.normal(size=c), 0.1 * rng.normal(size=c),
                         rng.uniform(0.5, 2.0, c))

    nodes = [
        Node("stem", Conv2d(0.5 * rng.normal(size=(3, 1, 3, 3)), 0.1 * rng.normal(size=3), padding=1), "input"),
        Node("stem_bn", batchnorm(3), "stem"), Node("stem_relu", ReLU(), "stem_bn"),
        Node("branch", Conv2d(0.5 * rng.normal(size=(3, 3, 3, 3)), 0.1 * rng.normal(size=3), padding=1), "stem_relu"),
        Node("sum", Add(), ("branch", "stem_relu")), Node("pre_bn", batchnorm(3), "sum"),
        Node("relu", ReLU(), "pre_bn"), Node("pool", GlobalAvgPool(), "relu"),
        Node("flat_pool", Flatten(), "pool"), Node("flat_stem", Flatten(), "stem_relu"),
        Node("cat", Concat(1), ("flat_pool", "flat_stem")),
        Node("head", Dense(rng.normal(size=(3 + 3 * 16, 3)), 0.1 * rng.normal(size=3)), "cat"),
    ]
    return Graph(nodes, input_shape=(1, 4, 4))


@pytest.mark.parametrize("kind, name", METHODS)
def test_the_mpmath_reference_lies_inside_every_ball_on_a_graph_with_add_and_concat(kind, name):
    x = np.random.default_rng(5).uniform(0, 1, size=(1, 1, 4, 4))
    _assert_reference_inside(_graph_net(), x, kind, name)


def _hinge_net() -> tuple[Sequential, np.ndarray]:
    """A ReLU input z = 2^-120 exactly: 1 + 2^-120 - 1, which ~100-bit balls cannot tell from 0."""
    first = Dense(np.array([[1.0, 1.0], [1.0, 0.5]]), np.array([-1.0, 0.25]))
    second = Dense(np.array([[1.0], [2.0]]), np.array([0.0]))
    return Sequential([first, ReLU(), second], input_shape=(2,)), np.array([[1.0, 2.0 ** -120]])


def test_a_relu_too_close_to_its_hinge_is_counted_undecided_not_guessed():
    network, x = _hinge_net()
    result = explain_balls(network, x, target=[0], rule="w2", dps=20)[0]
    assert result.records["layer1"].reasons == {"ReLU input contains 0": 1}
    assert result.records["layer0"].reasons == {"z_j contains 0": 1}  # neuron 0 of the first layer
    assert not all(ball.is_finite() for ball in result.relevance)  # its inputs carry no claimed bound
    # at a precision that resolves 2^-120 the same neuron is decided, and the reference lies inside
    precise = explain_balls(network, x, target=[0], rule="w2", dps=50)[0]
    assert not precise.undecided
    exact = ref.explain(network, x, target=[0], rule="w2", dps=80)
    assert _inside(precise.relevance, exact.ravel()) == []


def test_a_max_pool_window_too_close_to_a_tie_is_counted_undecided():
    # cells 1 + 2^-120 (a sum that ~100-bit balls cannot tell from 1) and exactly 1
    conv = Conv2d(np.array([[[[1.0, 1.0]]]]), np.zeros(1), stride=(1, 2))
    network = Sequential([conv, MaxPool2d((1, 2)), Flatten(), Dense(np.array([[2.0]]), np.zeros(1))],
                         input_shape=(1, 1, 4))
    x = np.array([[[[1.0, 2.0 ** -120, 1.0, 0.0]]]])
    result = explain_balls(network, x, target=[0], rule="lrp0", dps=20)[0]
    assert result.records["layer1"].reasons == {"max-pool winner": 1}
    assert not result.relevance[0].is_finite()  # no bound claimed below the undecided window
    precise = explain_balls(network, x, target=[0], rule="lrp0", dps=50)[0]
    assert not precise.undecided
    exact = ref.explain(network, x, target=[0], rule="lrp0", dps=80)
    assert _inside(precise.relevance, exact.ravel()) == []
    assert float(precise.relevance[2].mid()) == 0.0  # the winner is the cell 1 + 2^-120


def test_an_exact_max_pool_tie_is_decided_and_split():
    network = Sequential([MaxPool2d(2), Flatten()], input_shape=(1, 2, 2))
    x = np.array([[[[0.5, 0.5], [0.25, 0.125]]]])
    result = explain_balls(network, x, target=[0], rule="zplus", dps=20)[0]
    assert not result.undecided
    assert [float(b.mid()) for b in result.relevance] == [0.25, 0.25, 0.0, 0.0]


def _mutated(monkeypatch, factor):
    """The engine's input relevance with one value scaled by ``factor``."""
    import lrp_num.engine.explain as engine_explain

    original = engine_explain.explain_details

    def wrong(*args, **kwargs):
        explanation = original(*args, **kwargs)
        flat = explanation.relevance.reshape(len(explanation.relevance), -1)
        k = int(np.argmax(np.abs(flat[0])))
        flat[0, k] *= factor
        return explanation

    monkeypatch.setattr(engine_explain, "explain_details", wrong)


def test_verify_certified_proves_the_bound_and_catches_a_mutated_engine_value(monkeypatch):
    model = load_builtin("digits-mlp")
    x, targets = model.test_images[:1], model.test_labels[:1].astype(int)
    kwargs = dict(rules=("lrp0",), composites=("deep-taylor",), targets=targets, input_domain=model.input_domain,
                  certified=True)
    report = verify(model.network, x, **kwargs)
    assert report.ok
    for row in report.rows:
        check = next(c for c in row.checks if c.name == "certified")
        assert check.holds and check.required
        assert row.certified[-1]["node"] == "input" and row.certified[-1]["ulps"] < 64
        assert row.certified[-1]["relative_radius"] <= 1e-30
    _mutated(monkeypatch, 1 + 1e-9)
    report = verify(model.network, x, **kwargs)
    for row in report.rows:
        check = next(c for c in row.checks if c.name == "certified")
        assert not check.holds, check.detail
        assert row.certified_over_bound > 1


def test_layer_contributions_of_sampled_neurons_conserve_the_relevance_above():
    model = load_builtin("digits-mlp")
    x = model.test_images[0]
    from lrp_num.engine.explain import explain_details

    explanation = explain_details(model.network, x[None], rule="zplus", target=[int(model.test_labels[0])],
                                  keep_layers=True)
    above = next(layer.relevance_above[0] for layer in explanation.layers if layer.name == "layer2")
    dense = model.network.layers[0]
    below = np.maximum(x @ dense.weight + dense.bias, 0.0)  # the input of layer2 (after the ReLU)
    neurons = np.flatnonzero(above)[:4]
    assert len(neurons)
    contributions = layer_contributions(model.network, "layer2", below, above, neurons, "zplus", input_shape=(64,))
    assert not contributions.undecided.any()
    with working_precision(200):
        for k, j in enumerate(neurons):  # z+ under the DTD convention: sum_i R_ij = R_j exactly
            assert contributions.relevance[k].sum().contains(flint.arb(float(above[j])))


def test_cli_verify_certified_reports_per_node_bounds_as_json(capsys):
    code = main(["verify", "--model", "digits-mlp", "--rules", "epsilon", "--samples", "1", "--certified", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    row = out[0]["rows"][0]
    assert {b["node"] for b in row["certified"]} >= {"layer0", "layer2", "layer4", "input"}
    assert any(c["name"] == "certified" and c["status"] == "pass" for c in row["checks"])
    assert main(["verify", "--model", "digits-mlp", "--rules", "epsilon", "--samples", "1", "--certified"]) == 0
    table = capsys.readouterr().out
    assert "every engine value lies within k ulps" in table and "certified: the proved" in table


def test_a_sample_with_a_near_tie_max_pool_window_is_excluded_from_the_certified_check_as_from_agreement():
    # cells 1 + 2^-60 (float64 rounds it to 1: the engine splits a tie) and 1; exactly, the first wins
    conv = Conv2d(np.array([[[[1.0, 1.0]]]]), np.zeros(1), stride=(1, 2))
    network = Sequential([conv, MaxPool2d((1, 2)), Flatten(), Dense(np.array([[2.0]]), np.zeros(1))],
                         input_shape=(1, 1, 4))
    x = np.array([[[[1.0, 2.0 ** -60, 1.0, 0.0]]]])
    row = verify(network, x, rules=("lrp0",), composites=(), targets=[0], certified=True).rows[0]
    assert row.near_ties == 1
    check = next(c for c in row.checks if c.name == "certified")
    assert check.holds and "1 sample(s) with a near-tie max-pool window excluded" in check.detail
    assert row.certified[-1]["ulps"] > 1e15  # the O(1) difference of the other winner is stated, not hidden
