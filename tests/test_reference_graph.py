"""The mpmath reference on graph models: Add nodes by their definition, relevance summed over
consumers, Concat routing, the explicit matrices of grouped convolution and padded pooling,
batch norms folded in mpmath, and ``verify`` / ``lrp verify`` on graphs.

Tolerances: at ``dps`` digits (plus the reference's guard digits) a conserved sum is exact to
about 10^-dps times the magnitudes involved, so 1e-40 relative at 60 digits leaves twenty digits
for cancellation; the engine is held to verify's first-order rounding bound (the "agreement"
check, error / bound <= 1).
"""

import dataclasses

import mpmath
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lrp_num import explain_details
from lrp_num.engine import composites
from lrp_num import reference as ref
from lrp_num import testing
from lrp_num.errors import MissingBoundsError
from lrp_num.engine.graph import Graph, Node
from lrp_num.layers import (AdaptiveAvgPool2d, Add, AvgPool2d, BatchNorm, ChannelAffine, Concat,
                            Conv2d, Dense, Dropout, Flatten, GlobalAvgPool, MaxPool2d, ReLU, SumPool2d)
from lrp_num.engine.network import Sequential
from lrp_num.verify import DEFAULT_COMPOSITES, format_table, verify, verify_method

DPS = 60
CONSERVATION_TOL = mpmath.mpf("1e-40")
RNG = np.random.default_rng(7)
ENGINE_RULES = ("w2", "zplus", "lrp0", "gamma", "flat", "epsilon", "alphabeta", "bias_neuron",
                "zplus_split", "gamma_split")


@pytest.fixture(autouse=True)
def _high_precision():
    with mpmath.workdps(DPS + 20):
        yield


def _sum(values):
    with mpmath.workdps(DPS + 20):
        return mpmath.fsum(np.ravel(values))


def _conv(c_out, c_in, k, groups=1, padding=0, stride=1):
    return Conv2d(0.5 * RNG.standard_normal((c_out, c_in // groups, k, k)), 0.1 * RNG.standard_normal(c_out),
                  stride, padding, groups)


def _batchnorm(c):
    return BatchNorm(RNG.uniform(0.5, 1.5, c), 0.2 * RNG.standard_normal(c), 0.1 * RNG.standard_normal(c),
                     RNG.uniform(0.5, 2.0, c))


def branching_net():
    """A small convolutional graph with everything the reference follows: batch norms folded
    and as ChannelAffine (pre-activation), padded ceil-mode max pooling, grouped and depthwise
    convolution, a skip connection, padded average pooling without the padding in its count,
    adaptive and global average pooling, Concat and Dropout."""
    nodes = [
        Node("stem", _conv(4, 2, 3, padding=1), "input"), Node("stem_bn", _batchnorm(4), "stem"),
        Node("stem_relu", ReLU(), "stem_bn"),
        Node("pool", MaxPool2d(3, 2, padding=1, ceil_mode=True), "stem_relu"),
        Node("grouped", _conv(4, 4, 3, groups=2, padding=1), "pool"), Node("grouped_bn", _batchnorm(4), "grouped"),
        Node("grouped_relu", ReLU(), "grouped_bn"),
        Node("depthwise", _conv(4, 4, 3, groups=4, padding=1), "grouped_relu"),
        Node("sum", Add(), ("pool", "depthwise")),
        Node("pre_bn", _batchnorm(4), "sum"), Node("pre_relu", ReLU(), "pre_bn"),
        Node("avg", AvgPool2d(2, 1, padding=1, count_include_pad=False), "pre_relu"),
        Node("adaptive", AdaptiveAvgPool2d((2, 3)), "avg"), Node("global", GlobalAvgPool(), "pre_relu"),
        Node("flat_a", Flatten(), "adaptive"), Node("flat_g", Flatten(), "global"),
        Node("cat", Concat(1), ("flat_a", "flat_g")), Node("drop", Dropout(0.5), "cat"),
        Node("head", Dense(RNG.standard_normal((28, 3)), 0.1 * RNG.standard_normal(3)), "drop"),
    ]
    return Graph(nodes, input_shape=(2, 7, 7))


# -- engine and reference agree on graphs ---------------------------------------------------------

def test_branching_net_has_what_it_should():
    graph = branching_net()
    kinds = {type(node.operation) for node in graph.nodes}
    assert {Add, Concat, ChannelAffine, AdaptiveAvgPool2d, GlobalAvgPool, Dropout, MaxPool2d} <= kinds
    assert set(graph.folded) == {"stem_bn", "grouped_bn"}


def test_verify_passes_every_rule_and_composite_on_a_branching_net():
    """Engine vs reference within the rounding bound, and the high-precision balance, for every
    rule and composite; positivity is not promised where the Add's addends have mixed signs,
    and the table says which node that is."""
    graph = branching_net()
    x = RNG.uniform(0.0, 1.0, (2, 2, 7, 7))
    report = verify(graph, x, rules=ENGINE_RULES, composites=DEFAULT_COMPOSITES, input_domain=(0.0, 1.0),
                    dps=50, model_name="branching")
    assert [row.name for row in report.rows if not row.ok] == [], format_table(report)
    for row in report.rows:
        agreement = next(c for c in row.checks if c.name == "agreement")
        assert agreement.holds and row.max_error_over_bound <= 1.0
    mixed = [row for row in report.rows if row.mixed_sign_nodes]
    assert mixed and all(row.mixed_sign_nodes == ["sum"] for row in mixed)
    assert "'sum'" in format_table(report)


@settings(max_examples=15)
@given(case=testing.residual_networks(bias="mixed", branch_bias="mixed"), data=st.data())
def test_engine_matches_reference_on_residual_graphs(case, data):
    graph, _ = case
    x = data.draw(testing.inputs(graph.input_shape, "orthant"))
    name = data.draw(st.sampled_from(ENGINE_RULES + ("deep-taylor", "epsilon-plus", "alpha2-beta1")))
    kind = "rule" if name in ENGINE_RULES else "composite"
    row = verify_method(graph, x[None], name, kind, dps=50)
    assert row.error is None
    failed = [check for check in row.checks if check.name in ("agreement", "balance") and not check.holds]
    assert not failed, failed


# -- Add nodes by the definition ------------------------------------------------------------------

def _with_add_rule(rule: str, add_rule: str) -> composites.Composite:
    """``rule`` on every linear node and ``add_rule`` on every Add node."""
    return dataclasses.replace(composites.Composite.single(rule), add=composites.LayerRule(add_rule))


@pytest.mark.parametrize("add_rule", ["add_z", "add_zplus", "add_epsilon"])
@settings(max_examples=10)
@given(case=testing.residual_networks(bias="mixed", branch_bias="mixed"), data=st.data())
def test_engine_add_kernels_match_the_reference(add_rule, case, data):
    """The generated Add kernels against the reference's root-point (or formula) Add nodes."""
    graph, _ = case
    x = data.draw(testing.inputs(graph.input_shape, "orthant"))
    composite = _with_add_rule(data.draw(st.sampled_from(["zplus", "lrp0", "epsilon", "w2"])), add_rule)
    row = verify_method(graph, x[None], composite, "composite", dps=50)
    assert row.error is None
    failed = [check for check in row.checks if check.name in ("agreement", "balance") and not check.holds]
    assert not failed, failed


def _add_trace(result, name="sum"):
    return next(trace for trace in result.traces if trace.name == name)


@pytest.mark.parametrize("add_rule", ["add_z", "add_zplus", "add_epsilon"])
@given(case=testing.residual_networks(bias="mixed", branch_bias="mixed"), data=st.data())
def test_relevance_is_balanced_through_every_add_at_60_digits(add_rule, case, data):
    """sum_k R_k + what the stabiliser keeps = R at every neuron of the Add node, to 1e-40."""
    graph, _ = case
    x = data.draw(testing.inputs(graph.input_shape, "R^n"))
    result = ref.explain_trace(graph, x, composite=_with_add_rule("lrp0", add_rule), dps=DPS)[0]
    trace = _add_trace(result)
    assert trace.rule == add_rule
    scale = max(1, abs(_sum(result.top)))
    per_neuron = sum(trace.relevance_inputs) - trace.relevance_out
    assert abs(_sum(per_neuron) + trace.absorbed_stabiliser) <= CONSERVATION_TOL * scale
    if add_rule != "add_epsilon" and trace.absorbed_stabiliser == 0:
        assert all(abs(value) <= CONSERVATION_TOL * scale for value in per_neuron)


@pytest.mark.parametrize("add_rule", ["add_z", "add_zplus"])
@given(case=testing.residual_networks(bias="mixed", branch_bias="mixed"), data=st.data())
def test_whole_network_conservation_through_add_at_60_digits(add_rule, case, data):
    """w^2 on the dense layers (conservative at every neuron under the DTD bias convention) and
    a conservative Add rule: sum_p R_p = f_c(x) to 1e-40 wherever no stabiliser was needed, and
    sum R_p + what the stabilisers keep = f_c(x) always."""
    graph, _ = case
    x = data.draw(testing.inputs(graph.input_shape, "R^n"))
    result = ref.explain_trace(graph, x, composite=_with_add_rule("w2", add_rule), dps=DPS)[0]
    top = _sum(result.top)
    kept = _sum([trace.absorbed_stabiliser + trace.absorbed_bias for trace in result.traces])
    assert abs(_sum(result.relevance) + kept - top) <= CONSERVATION_TOL * max(1, abs(top))
    assume(kept == 0)
    assert abs(_sum(result.relevance) - top) <= CONSERVATION_TOL * max(1, abs(top))
    trace = _add_trace(result)
    assert abs(_sum(trace.relevance_in) - _sum(trace.relevance_out)) <= CONSERVATION_TOL * max(1, abs(top))


@pytest.mark.parametrize("add_rule", ["add_z", "add_zplus", "add_epsilon"])
@given(a=st.lists(st.floats(-3, 3, allow_nan=False, allow_subnormal=False), min_size=2, max_size=4),
       relevance=st.floats(-2, 2, allow_nan=False, allow_subnormal=False))
def test_add_rules_by_root_point_equal_their_closed_forms(add_rule, a, relevance):
    """The numeric root-point solution gives the derived split: a_k / y R (z), a_k^+ / sum a^+ R
    (positive parts), and the epsilon formula a_k / (y + 0.25 sign y) R; checked in float64."""
    a = np.array(a)
    y, positive = a.sum(), np.maximum(a, 0).sum()
    assume(abs(y) > 1e-3 and relevance != 0 and (add_rule != "add_zplus" or positive > 1e-3))
    nodes = [Node(f"a{k}", Dense(np.array([[value]]), np.zeros(1)), "input") for k, value in enumerate(a)]
    graph = Graph(nodes + [Node("sum", Add(), tuple(f"a{k}" for k in range(len(a))))], input_shape=(1,))
    result = ref.explain_trace(graph, np.ones(1), composite=_with_add_rule("lrp0", add_rule),
                               target=np.array([relevance]), dps=50)[0]
    got = np.array([float(r[0]) for r in _add_trace(result).relevance_inputs])
    if add_rule == "add_z":
        expected = a / y * relevance
    elif add_rule == "add_zplus":
        expected = np.maximum(a, 0) / positive * relevance
    else:
        expected = a / (y + 0.25 * np.sign(y)) * relevance
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14 * np.abs(a).sum() * abs(relevance) / abs(y))


def test_add_with_zero_sum_takes_the_stabiliser():
    """y = 0 with relevance arriving: the limit of the Taylor step with the convention's
    stabiliser, R_k = a_k / eps R, the stabiliser keeping the rest (here all of R)."""
    graph = Graph([Node("a", Dense(np.array([[1.0]]), np.zeros(1)), "input"),
                   Node("b", Dense(np.array([[-1.0]]), np.zeros(1)), "input"),
                   Node("sum", Add(), ("a", "b"))], input_shape=(1,))
    result = ref.explain_trace(graph, np.array([2.0]), rule="lrp0", target=np.array([1.0]), dps=50,
                               conventions={"eps": 0.5})[0]
    trace = _add_trace(result)
    assert [float(r[0]) for r in trace.relevance_inputs] == [4.0, -4.0]
    assert trace.absorbed_stabiliser == 1
    engine = explain_details(graph, np.array([[2.0]]), rule="lrp0", target=np.array([[1.0]]),
                             conventions=__import__("lrp_num").Conventions(eps=0.5))
    assert float(engine.relevance[0, 0]) == 0.0 == float(_sum(result.relevance))


# -- routing: several consumers, Concat -----------------------------------------------------------

@given(testing.residual_networks(), st.data())
def test_a_tensor_read_twice_gets_the_sum_of_both_relevances(case, data):
    graph, _ = case
    x = data.draw(testing.inputs(graph.input_shape, "orthant"))
    result = ref.explain_trace(graph, x, rule="lrp0", dps=50)[0]
    by_name = {trace.name: trace for trace in result.traces}
    both = by_name["branch"].relevance_inputs[0] + by_name["sum"].relevance_inputs[0]  # h -> branch, h -> sum
    # summed at the reference's working precision (50 + guard digits), compared here at 80
    assert all(abs(u - v) <= mpmath.mpf("1e-55") * (abs(u) + abs(v)) for u, v in zip(result.relevance_at["h"], both))
    # and the same through the engine, within float64
    engine = explain_details(graph, x[None], rule="lrp0", keep_layers=True)
    at_h = next(report for report in engine.layers if report.name == "h").relevance_above
    np.testing.assert_allclose(at_h[0], ref.to_float(both), rtol=1e-9, atol=1e-12 * (1 + np.abs(x).sum()))


def test_concat_routes_relevance_back_by_slicing():
    graph = Graph([Node("a", Dense(RNG.standard_normal((3, 2)), np.zeros(2)), "input"),
                   Node("b", Dense(RNG.standard_normal((3, 4)), np.zeros(4)), "input"),
                   Node("cat", Concat(-1), ("a", "b")),
                   Node("head", Dense(RNG.standard_normal((6, 2)), np.zeros(2)), "cat")], input_shape=(3,))
    result = ref.explain_trace(graph, RNG.uniform(0, 1, 3), rule="epsilon", dps=50)[0]
    at_cat = result.relevance_at["cat"]
    assert list(result.relevance_at["a"]) == list(at_cat[:2]) and list(result.relevance_at["b"]) == list(at_cat[2:])
    channels = Graph([Node("a", _conv(2, 1, 1), "input"), Node("b", _conv(3, 1, 1), "input"),
                      Node("cat", Concat(1), ("a", "b")), Node("flat", Flatten(), "cat")], input_shape=(1, 2, 2))
    prepared = ref.prepare(channels, (1, 2, 2))
    node = prepared.nodes[channels.index("cat")]
    parts = prepared.split(node, np.arange(20))
    assert [list(p) for p in parts] == [list(range(8)), list(range(8, 20))]


# -- the explicit matrices against the engine's forward, at high precision -------------------------

@st.composite
def _windows(draw):
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    height, width = draw(st.integers(kernel[0], 7)), draw(st.integers(kernel[1], 7))
    return kernel, stride, padding, draw(st.booleans()), (height, width)


@given(_windows(), st.sampled_from(["sum", "avg", "avg_no_pad", "max"]), st.data())
def test_padded_and_ceil_mode_pooling_equal_the_engine(window, kind, data):
    kernel, stride, padding, ceil_mode, hw = window
    if kind == "max":
        layer = MaxPool2d(kernel, stride, padding, ceil_mode)
    elif kind == "sum":
        layer = SumPool2d(kernel, stride, padding, ceil_mode)
    else:
        layer = AvgPool2d(kernel, stride, padding, ceil_mode, count_include_pad=kind == "avg")
    shape = (2, *hw)
    x = RNG.uniform(-1, 1, (1, *shape))
    high = ref.to_float(ref.forward(Sequential([layer], input_shape=shape), x, dps=DPS))[0]
    engine = layer(x)[0].ravel()
    assert high.shape == engine.shape  # the reference counts windows as the engine does
    if kind == "max":
        np.testing.assert_array_equal(engine, high)  # a maximum is exact; padding never wins
    else:
        np.testing.assert_allclose(engine, high, rtol=1e-14, atol=1e-15)
        prepared = ref.prepare(Sequential([layer], input_shape=shape), shape)
        eye = np.eye(int(np.prod(shape))).reshape(-1, *shape)
        np.testing.assert_array_equal(prepared.matrices[0].dense(), layer.forward(eye).reshape(len(eye), -1))


@given(st.sampled_from([(1, 1), (2, 1), (2, 2), (4, 4)]), st.integers(1, 3), st.integers(0, 1),
       st.integers(1, 2))
def test_grouped_convolution_equals_the_engine(channels_groups, kernel, padding, stride):
    c_in, groups = channels_groups
    layer = _conv(2 * groups, c_in, kernel, groups=groups, padding=min(padding, kernel - 1), stride=stride)
    shape = (c_in, 5, 4)
    x = RNG.uniform(-1, 1, (1, *shape))
    high = ref.to_float(ref.forward(Sequential([layer], input_shape=shape), x, dps=DPS))[0]
    np.testing.assert_allclose(layer(x)[0].ravel(), high, rtol=1e-13, atol=1e-14)
    prepared = ref.prepare(Sequential([layer], input_shape=shape), shape)
    eye = np.eye(int(np.prod(shape))).reshape(-1, *shape)
    np.testing.assert_array_equal(prepared.matrices[0].dense(), layer.forward(eye).reshape(len(eye), -1))


@pytest.mark.parametrize("layer", [AdaptiveAvgPool2d((2, 3)), AdaptiveAvgPool2d((4, 1)), GlobalAvgPool()],
                         ids=repr)
def test_adaptive_pooling_equals_the_engine(layer):
    shape = (3, 5, 7)
    x = RNG.uniform(-1, 1, (1, *shape))
    high = ref.to_float(ref.forward(Sequential([layer], input_shape=shape), x, dps=DPS))[0]
    np.testing.assert_allclose(layer(x)[0].ravel(), high, rtol=1e-14, atol=1e-15)


# -- batch norms: folded by the reference itself --------------------------------------------------

def _direct_batchnorm(z, bn):
    shape = (1, -1) + (1,) * (z.ndim - 2)
    return (z - bn.mean.reshape(shape)) / np.sqrt(bn.var.reshape(shape) + bn.eps) * bn.gamma.reshape(shape) \
        + bn.beta.reshape(shape)


def test_reference_forward_is_the_unfolded_network():
    conv, bn, pre = _conv(3, 2, 3, padding=1), _batchnorm(3), _batchnorm(3)
    graph = Graph([Node("conv", conv, "input"), Node("bn", bn, "conv"), Node("relu", ReLU(), "bn"),
                   Node("sum", Add(), ("relu", "bn")), Node("pre", pre, "sum")], output="pre", input_shape=(2, 4, 4))
    assert graph.folded == {"bn": "conv"} and isinstance(graph.node("pre").operation, ChannelAffine)
    x = RNG.uniform(-1, 1, (1, 2, 4, 4))
    z = _direct_batchnorm(conv(x), bn)
    direct = _direct_batchnorm(np.maximum(z, 0) + z, pre)
    np.testing.assert_allclose(ref.to_float(ref.forward(graph, x, dps=DPS))[0], direct.ravel(), rtol=1e-13, atol=1e-14)


def _fold_without_beta(layer, bn):
    """A broken fold: the batch norm's shift beta forgotten (the issue-11 worry)."""
    return BatchNorm(bn.gamma, np.zeros_like(bn.beta), bn.mean, bn.var, bn.eps).fold_into(layer)


@pytest.mark.parametrize("kind", ["graph", "sequential"])
def test_a_fold_that_forgets_beta_fails_verify(kind):
    """The reference folds from the BatchNorm parameters, so an engine whose folded layer lost
    beta disagrees with it; the intact model agrees."""
    conv, bn, head = _conv(3, 2, 3), _batchnorm(3), Dense(RNG.standard_normal((12, 2)), np.zeros(2))
    if kind == "graph":
        network = Graph([Node("conv", conv, "input"), Node("bn", bn, "conv"), Node("relu", ReLU(), "bn"),
                         Node("flat", Flatten(), "relu"), Node("head", head, "flat")], input_shape=(2, 4, 4))
    else:
        network = Sequential([conv, bn, ReLU(), Flatten(), head], input_shape=(2, 4, 4))
    x = RNG.uniform(0, 1, (1, 2, 4, 4))
    assert next(c for c in verify_method(network, x, "lrp0", "rule").checks if c.name == "agreement").holds
    broken = _fold_without_beta(conv, bn)
    if kind == "graph":
        network.nodes[0] = Node("conv", broken, ("input",))
    else:
        network.layers[0] = broken
    row = verify_method(network, x, "lrp0", "rule")
    assert not next(c for c in row.checks if c.name == "agreement").holds


# -- the input box on graphs ----------------------------------------------------------------------

def test_zbox_after_a_value_changing_node_is_refused_by_both():
    graph = Graph([Node("pool", SumPool2d(2), "input"), Node("flat", Flatten(), "pool"),
                   Node("fc", Dense(RNG.standard_normal((4, 2)), np.zeros(2)), "flat")], input_shape=(1, 4, 4))
    x = RNG.uniform(0, 1, (1, 1, 4, 4))
    with pytest.raises(MissingBoundsError):
        explain_details(graph, x, rule="zbox", input_domain=(0.0, 1.0))
    with pytest.raises(MissingBoundsError):
        ref.explain(graph, x, rule="zbox", input_domain=(0.0, 1.0))


# -- lrp verify on graph files --------------------------------------------------------------------

def test_lrp_verify_checks_a_graph_model_file(tmp_path, capsys):
    from lrp_num.cli import main
    from lrp_num.io.model_io import save_npz

    graph = branching_net()
    save_npz(graph, tmp_path / "graph.npz", input_domain=(0.0, 1.0),
             extra={"test_images": RNG.uniform(0, 1, (1, 2, 7, 7))})
    code = main(["verify", "--model", str(tmp_path / "graph.npz"), "--rules", "lrp0", "deep-taylor",
                 "--samples", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "verification passed" in out and "deep-taylor" in out


def test_lrp_verify_default_models_are_the_built_in_ones(monkeypatch):
    from lrp_num.io import model_io
    from lrp_num.commands.verify import default_models

    from lrp_num.commands.verify import MODEL_DEFAULT_METHODS

    assert default_models() == list(model_io.BUILTIN_MODELS)
    assert set(MODEL_DEFAULT_METHODS) <= set(model_io.BUILTIN_MODELS)
    monkeypatch.setitem(model_io.BUILTIN_MODELS, "digits-resnet", "digits_resnet.npz")
    assert "digits-resnet" in default_models()
