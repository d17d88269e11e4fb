"""Graph models: structure, batch norms, forward pass, relevance through Add and Concat, files
and every bad graph."""

from __future__ import annotations

import sys
import zipfile

import numpy as np
import pytest
from hypothesis import given

from lrp_num import explain, explain_details, load_npz, save_npz, testing
from lrp_num.engine.composites import ADD_RULE, AFFINE_RULE, COMPOSITES
from lrp_num.errors import (GraphError, LRPError, MissingBoundsError, ModelFileError, ShapeError,
                            UnknownRuleError, UnsupportedLayerError)
from lrp_num.engine.graph import Graph, Node, as_graph
from lrp_num.layers import (Add, BatchNorm, ChannelAffine, Concat, Conv2d, Dense, Dropout, Flatten,
                            GlobalAvgPool, MaxPool2d, ReLU)
from lrp_num.engine.network import Sequential

RNG = np.random.default_rng(10)


# ---- a direct NumPy computation of the residual net, written here ----------------------------

def direct_conv(x, w, b, stride=1, padding=0):
    """z[n, o, p, q] = sum_{c,u,v} x_pad[n, c, p s + u, q s + v] w[o, c, u, v] + b[o]."""
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    n, _, h, wd = xp.shape
    co, _, kh, kw = w.shape
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    z = np.zeros((n, co, ho, wo))
    for u in range(kh):
        for v in range(kw):
            patch = xp[:, :, u:u + stride * (ho - 1) + 1:stride, v:v + stride * (wo - 1) + 1:stride]
            z += np.einsum("nchw,oc->nohw", patch, w[:, :, u, v])
    return z + b[None, :, None, None]


def direct_bn(x, bn):
    shape = (1, -1, 1, 1)
    return (x - bn.mean.reshape(shape)) / np.sqrt(bn.var.reshape(shape) + bn.eps) * bn.gamma.reshape(shape) \
        + bn.beta.reshape(shape)


def batchnorm(c, shift=True):
    """Random statistics; ``shift=False``: beta = mean = 0, so the folded bias is 0."""
    beta, mean = (0.1 * RNG.standard_normal(c), 0.1 * RNG.standard_normal(c)) if shift else (np.zeros(c),) * 2
    return BatchNorm(RNG.random(c) + 0.5, beta, mean, RNG.random(c) + 0.5)


def conv(co, ci, k, bias=True, stride=1, padding=None):
    padding = k // 2 if padding is None else padding
    b = 0.1 * RNG.standard_normal(co) if bias else np.zeros(co)
    return Conv2d(RNG.standard_normal((co, ci, k, k)) / k, b, stride, padding)


def residual_net(bias=True):
    """stem conv -> relu -> block 1 (identity skip) -> relu -> block 2 (1x1 projection) -> relu
    -> global average pooling -> flatten -> dense."""
    nodes = [
        Node("stem", conv(4, 2, 3, bias), "input"), Node("stem_relu", ReLU(), "stem"),
        Node("b1_conv1", conv(4, 4, 3, bias), "stem_relu"), Node("b1_bn1", batchnorm(4, bias), "b1_conv1"),
        Node("b1_relu1", ReLU(), "b1_bn1"), Node("b1_conv2", conv(4, 4, 3, bias), "b1_relu1"),
        Node("b1_bn2", batchnorm(4, bias), "b1_conv2"), Node("b1_add", Add(), ("b1_bn2", "stem_relu")),
        Node("b1_out", ReLU(), "b1_add"),
        Node("b2_conv1", conv(6, 4, 3, bias, stride=2), "b1_out"), Node("b2_bn1", batchnorm(6, bias), "b2_conv1"),
        Node("b2_relu1", ReLU(), "b2_bn1"), Node("b2_conv2", conv(6, 6, 3, bias), "b2_relu1"),
        Node("b2_bn2", batchnorm(6, bias), "b2_conv2"),
        Node("b2_proj", conv(6, 4, 1, bias, stride=2, padding=0), "b1_out"),
        Node("b2_proj_bn", batchnorm(6, bias), "b2_proj"),
        Node("b2_add", Add(), ("b2_bn2", "b2_proj_bn")), Node("b2_out", ReLU(), "b2_add"),
        Node("pool", GlobalAvgPool(), "b2_out"), Node("flat", Flatten(), "pool"),
        Node("fc", Dense(RNG.standard_normal((6, 3)), 0.1 * RNG.standard_normal(3) if bias else np.zeros(3)), "flat"),
    ]
    return Graph(nodes, input_shape=(2, 6, 6))


def direct_forward(graph, x):
    op = {node.name: node.operation for node in graph.source_nodes}
    relu = lambda a: np.maximum(a, 0)  # noqa: E731

    def conv_of(name, a):
        c = op[name]
        return direct_conv(a, c.weight, c.bias, c.stride[0], c.padding[0])
    h = relu(conv_of("stem", x))
    r = relu(direct_bn(conv_of("b1_conv1", h), op["b1_bn1"]))
    h = relu(direct_bn(conv_of("b1_conv2", r), op["b1_bn2"]) + h)
    r = relu(direct_bn(conv_of("b2_conv1", h), op["b2_bn1"]))
    h = relu(direct_bn(conv_of("b2_conv2", r), op["b2_bn2"]) + direct_bn(conv_of("b2_proj", h), op["b2_proj_bn"]))
    return h.mean(axis=(2, 3)) @ op["fc"].weight + op["fc"].bias


# ---- structure and forward ---------------------------------------------------------------------

def test_residual_forward_equals_direct_numpy_and_folds_every_batchnorm():
    graph = residual_net()
    x = RNG.standard_normal((3, 2, 6, 6))
    np.testing.assert_allclose(graph(x), direct_forward(graph, x), rtol=1e-12, atol=1e-12)
    assert set(graph.folded) == {"b1_bn1", "b1_bn2", "b2_bn1", "b2_bn2", "b2_proj_bn"}
    assert not any(isinstance(op, (BatchNorm, ChannelAffine)) for op in graph.layers)
    assert graph.shapes["b2_add"] == (6, 3, 3) and graph.output_shape == (3,) and graph.n_outputs == 3
    trace = graph.forward_trace(x)
    assert set(trace) == {"input"} | {node.name for node in graph.nodes}
    np.testing.assert_array_equal(trace["fc"], graph(x))
    assert "b1_add = Add()(b1_conv2, stem_relu)" in repr(graph) and "5 BatchNorm folded" in repr(graph)
    assert graph.consumers["stem_relu"] == ["b1_conv1", "b1_add"]


def test_float32_stays_float32():
    graph = residual_net()
    x = RNG.standard_normal((2, 2, 6, 6))
    out = graph(x.astype(np.float32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, graph(x), rtol=1e-4, atol=1e-4)


def test_batchnorm_becomes_channel_affine_where_it_cannot_fold():
    bn_in, bn_add, bn_shared = batchnorm(2), batchnorm(2), batchnorm(2)
    c1, c2 = conv(2, 2, 3), conv(2, 2, 3)
    graph = Graph([
        Node("bn_in", bn_in, "input"),                       # at the network input
        Node("c1", c1, "bn_in"), Node("bn_shared", bn_shared, "c1"),
        Node("c2", c2, "c1"),                                # c1 has a second consumer
        Node("add", Add(), ("bn_shared", "c2")),
        Node("bn_add", bn_add, "add"),                       # after an Add (pre-activation)
        Node("out", ReLU(), "bn_add")], input_shape=(2, 5, 5))
    kinds = {node.name: type(node.operation) for node in graph.nodes}
    assert kinds["bn_in"] is ChannelAffine and kinds["bn_shared"] is ChannelAffine and kinds["bn_add"] is ChannelAffine
    assert graph.folded == {}
    x = RNG.standard_normal((2, 2, 5, 5))
    a = direct_bn(x, bn_in)
    z1 = direct_conv(a, c1.weight, c1.bias, 1, 1)
    expected = np.maximum(direct_bn(direct_bn(z1, bn_shared) + direct_conv(z1, c2.weight, c2.bias, 1, 1), bn_add), 0)
    np.testing.assert_allclose(graph(x), expected, rtol=1e-12, atol=1e-12)
    # a batch norm on the output node's linear layer, and one after a folded one, still fold
    d = Dense(RNG.standard_normal((3, 2)))
    chained = Graph([Node("d", d, "input"), Node("bn", batchnorm(2), "d")], input_shape=(3,))
    assert chained.folded == {"bn": "d"} and chained.output == "d" and chained.source_output == "bn"


def test_sequential_is_the_chain_graph():
    network = Sequential([Dense(RNG.standard_normal((4, 3))), ReLU(), Dense(RNG.standard_normal((3, 2)))],
                         input_shape=(4,))
    graph = as_graph(network)
    assert [node.name for node in graph.nodes] == ["layer0", "layer1", "layer2"]
    assert graph.layers == network.layers and as_graph(network) is graph
    x = RNG.random((2, 4))  # non-negative: the domain of z+
    np.testing.assert_array_equal(graph(x), network(x))
    details = explain_details(network, x, rule="zplus")
    assert [report.name for report in details.layers] == ["layer0", "layer1", "layer2"]
    np.testing.assert_array_equal(details.relevance, explain(graph, x, rule="zplus"))


def test_dropout_is_the_identity():
    d1, d2 = Dense(RNG.standard_normal((4, 3))), Dense(RNG.standard_normal((3, 2)))
    with_dropout = Graph([Node("a", d1, "input"), Node("r", ReLU(), "a"), Node("drop", Dropout(0.3), "r"),
                          Node("b", d2, "drop")], input_shape=(4,))
    plain = Sequential([d1, ReLU(), d2], input_shape=(4,))
    x = RNG.random((3, 4))  # non-negative: the domain of z+
    np.testing.assert_array_equal(with_dropout(x), plain(x))
    np.testing.assert_array_equal(explain(with_dropout, x, rule="zplus"), explain(plain, x, rule="zplus"))
    # Dropout only passes values on: the input box still reaches a Dense behind it
    box = Graph([Node("drop", Dropout(), "input"), Node("a", Dense(np.abs(RNG.standard_normal((4, 2)))), "drop")],
                input_shape=(4,))
    relevance = explain(box, np.full((1, 4), 0.5), composite="deep-taylor", input_domain=(0.0, 1.0))
    assert np.isfinite(relevance).all()
    with pytest.raises(ShapeError, match="Dropout p"):
        Dropout(1.0)


# ---- relevance ------------------------------------------------------------------------------------

@given(testing.residual_networks())
def test_skip_connection_relevance_is_summed_like_the_explicit_chain(case):
    """h feeds the branch and the Add: its relevance is the sum of both; with the z-rule this
    equals the chain whose middle layer has weight W + I (the skip made explicit)."""
    graph, chain = case
    x = np.asarray(np.linspace(-1.0, 2.0, graph.input_shape[0]))[None] + RNG.standard_normal((3, graph.input_shape[0]))
    np.testing.assert_allclose(graph(x), chain(x), rtol=1e-10, atol=1e-10)
    got, expected = explain(graph, x, rule="lrp0"), explain(chain, x, rule="lrp0")
    scale = np.abs(expected).max() + np.abs(chain(x)).max() + 1.0
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-9 * scale)


def test_summing_over_consumers_is_what_makes_the_chain_agree():
    """Without summation (the skip's share dropped) the relevance would differ from the chain."""
    graph, chain = _fixed_residual()
    x = RNG.random((2, 3))
    details = explain_details(graph, x, rule="lrp0", keep_layers=True)
    h = next(r for r in details.layers if r.name == "h")
    add = next(r for r in details.layers if r.name == "sum")
    branch = next(r for r in details.layers if r.name == "branch")
    # relevance arriving at h = what the Add gives its first addend + what the branch passes down
    assert np.all(np.abs(add.relevance_in - add.relevance_out) <= 1e-12 * np.abs(add.relevance_out).max())
    np.testing.assert_allclose(h.relevance_out, add.relevance_in - branch.relevance_out + branch.relevance_in,
                               rtol=1e-12)
    np.testing.assert_allclose(details.relevance, explain(chain, x, rule="lrp0"), rtol=1e-10)


def _fixed_residual():
    stem, branch, head = Dense(np.abs(RNG.standard_normal((3, 4)))), Dense(RNG.standard_normal((4, 4))), \
        Dense(RNG.standard_normal((4, 2)))
    graph = Graph([Node("stem", stem, "input"), Node("h", ReLU(), "stem"), Node("branch", branch, "h"),
                   Node("sum", Add(), ("h", "branch")), Node("y", ReLU(), "sum"), Node("head", head, "y")],
                  input_shape=(3,))
    chain = Sequential([stem, ReLU(), Dense(branch.weight + np.eye(4)), ReLU(), head], input_shape=(3,))
    return graph, chain


@pytest.mark.parametrize("rule", ["lrp0", "zplus"])
def test_conservation_through_add_nodes_without_biases(rule, monkeypatch):
    """Without biases, sum_p R_p = f_c(x), except what z+ absorbs where a neuron receives
    relevance but has no positive contribution (sum_i x_i w_ij^+ = 0): after an Add, a branch's
    share can sit on a neuron with z_j < 0 (here the 1x1 projection, which no ReLU follows).
    (An Add would absorb where its addends sum to 0, but with these rules no relevance arrives
    there: it comes through a ReLU from rules proportional to x.)"""
    # its own random state, so the absorbing case below does not depend on which tests ran before
    monkeypatch.setattr(sys.modules[__name__], "RNG", np.random.default_rng(10))
    graph = residual_net(bias=False)
    x = RNG.random((4, 2, 6, 6))  # non-negative: the domain of z+
    details = explain_details(graph, x, rule=rule, target=0, keep_layers=True)
    trace = graph.forward_trace(x)
    absorbed = np.zeros(len(x))
    for report in details.layers:
        node = graph.nodes[report.index]
        lost = np.zeros(len(x))
        if rule == "zplus" and isinstance(node.operation, (Dense, Conv2d)):
            stuck = node.operation.forward(trace[node.inputs[0]], "positive") == 0
            lost = np.where(stuck, report.relevance_above, 0).reshape(len(x), -1).sum(axis=1)
        absorbed += lost
        np.testing.assert_allclose(report.relevance_in + lost, report.relevance_out, rtol=1e-10, atol=1e-12)
    f = details.relevance_top.sum(axis=1)
    total = details.relevance.reshape(len(x), -1).sum(axis=1)
    np.testing.assert_allclose(total + absorbed, f, rtol=1e-10)
    assert (rule == "zplus") == bool(np.any(absorbed != 0))  # the case above does occur here
    adds = [r for r in details.layers if r.layer == "Add()"]
    assert len(adds) == 2 and all(r.rule == ADD_RULE for r in adds)


def test_with_biases_each_node_absorbs_its_known_share():
    """LRP-epsilon: sum_i R_ij = (z_j - b_j) / (z_j + epsilon sign(z_j)) R_j at every linear node;
    Add and routing nodes conserve exactly."""
    graph = residual_net(bias=True)
    x = RNG.random((2, 2, 6, 6))
    epsilon = 0.1
    details = explain_details(graph, x, rule="epsilon", epsilon=epsilon, keep_layers=True)
    trace = graph.forward_trace(x)
    for report in details.layers:
        node = graph.nodes[report.index]
        if isinstance(node.operation, (Dense, Conv2d)):
            z = trace[node.name]
            b = node.operation.bias_like(z)
            sign = np.where(z >= 0, 1.0, -1.0)
            expected = ((z - b) / (z + epsilon * sign) * report.relevance_above).reshape(len(x), -1).sum(axis=1)
            np.testing.assert_allclose(report.relevance_in, expected, rtol=1e-10)
        else:
            np.testing.assert_allclose(report.relevance_in, report.relevance_out, rtol=1e-10, atol=1e-12)


def test_channel_affine_passes_relevance_through():
    bn = batchnorm(3)
    dense = Dense(np.abs(RNG.standard_normal((3, 2))))
    graph = Graph([Node("r", ReLU(), "input"), Node("bn", bn, "r"), Node("d", dense, "bn")], input_shape=(3,))
    x = RNG.random((2, 3)) + 0.1
    details = explain_details(graph, x, composite="epsilon-plus", keep_layers=True)
    affine = details.layers[1]
    assert affine.rule == AFFINE_RULE and affine.layer == "ChannelAffine(3)"
    np.testing.assert_allclose(details.relevance, affine.relevance_above, rtol=1e-12)


def test_concat_routes_relevance_back():
    """Two Dense nodes on x concatenated, then a head: the same as one Dense with the columns
    side by side (every rule is per output neuron), with x's relevance summed over both."""
    a, b = Dense(RNG.standard_normal((4, 3)), RNG.standard_normal(3)), Dense(RNG.standard_normal((4, 2)), RNG.standard_normal(2))
    head = Dense(RNG.standard_normal((5, 2)), RNG.standard_normal(2))
    graph = Graph([Node("a", a, "input"), Node("b", b, "input"), Node("cat", Concat(1), ("a", "b")),
                   Node("r", ReLU(), "cat"), Node("head", head, "r")], input_shape=(4,))
    both = Dense(np.concatenate([a.weight, b.weight], axis=1), np.concatenate([a.bias, b.bias]))
    chain = Sequential([both, ReLU(), head], input_shape=(4,))
    x = RNG.random((3, 4))  # non-negative: the domain of z+
    np.testing.assert_allclose(graph(x), chain(x), rtol=1e-12)
    for rule in ("zplus", "epsilon", "w2"):
        np.testing.assert_allclose(explain(graph, x, rule=rule), explain(chain, x, rule=rule), rtol=1e-10, atol=1e-12)
    details = explain_details(graph, x, rule="w2", keep_layers=True)
    cat = details.layers[graph.index("cat")]
    np.testing.assert_array_equal(details.layers[graph.index("a")].relevance_above, cat.relevance_above[:, :3])
    np.testing.assert_array_equal(details.layers[graph.index("b")].relevance_above, cat.relevance_above[:, 3:])


def test_concat_of_channels_equals_one_wider_convolution():
    c1, c2 = conv(2, 1, 3), conv(3, 1, 3)
    graph = Graph([Node("c1", c1, "input"), Node("c2", c2, "input"), Node("cat", Concat(axis=1), ("c1", "c2")),
                   Node("r", ReLU(), "cat"), Node("f", Flatten(), "r"),
                   Node("d", Dense(RNG.standard_normal((5 * 16, 2))), "f")], input_shape=(1, 4, 4))
    wide = Conv2d(np.concatenate([c1.weight, c2.weight]), np.concatenate([c1.bias, c2.bias]), 1, 1)
    chain = Sequential([wide, ReLU(), Flatten(), graph.node("d").operation], input_shape=(1, 4, 4))
    x = RNG.random((2, 1, 4, 4))
    np.testing.assert_allclose(explain(graph, x, composite="epsilon-plus"), explain(chain, x, composite="epsilon-plus"),
                               rtol=1e-10, atol=1e-12)


def test_composite_plan_and_the_input_box_on_a_graph():
    graph = residual_net()
    plan = COMPOSITES["deep-taylor"].plan_graph(graph, True)
    rules = {graph.nodes[k].name: choice.rule for k, choice in plan.items()}
    assert rules["stem"] == "zbox" and rules["b1_conv1"] == "zplus" and rules["fc"] == "zplus"
    assert rules["b1_add"] == ADD_RULE and rules["pool"] == "lrp0"
    x = RNG.random((2, 2, 6, 6))
    details = explain_details(graph, x, composite="deep-taylor", input_domain=(0.0, 1.0))
    assert details.layers[0].rule == "zbox" and details.layers[0].root_point_valid is not None
    assert np.isfinite(details.relevance).all()
    # two convolutions read the input: both are first linear nodes and get z^B
    two = Graph([Node("c1", conv(2, 1, 3), "input"), Node("c2", conv(2, 1, 3), "input"),
                 Node("add", Add(), ("c1", "c2")), Node("f", Flatten(), "add"),
                 Node("d", Dense(RNG.standard_normal((32, 2))), "f")], input_shape=(1, 4, 4))
    plan = COMPOSITES["deep-taylor"].plan_graph(two, True)
    assert [plan[two.index(n)].rule for n in ("c1", "c2", "d")] == ["zbox", "zbox", "zplus"]
    # a batch norm at the input changes the values: no box behind it
    affine_first = Graph([Node("bn", batchnorm(1), "input"), Node("c", conv(2, 1, 3), "bn"),
                          Node("r", ReLU(), "c"), Node("f", Flatten(), "r"),
                          Node("d", Dense(RNG.standard_normal((32, 2))), "f")],
                         input_shape=(1, 4, 4))
    with pytest.raises(MissingBoundsError, match="ChannelAffine"):
        explain(affine_first, RNG.random((1, 1, 4, 4)), composite="deep-taylor", input_domain=(0.0, 1.0))
    assert np.isfinite(explain(affine_first, RNG.random((1, 1, 4, 4)), composite="deep-taylor")).all()


def test_every_composite_runs_on_the_residual_net():
    graph = residual_net()
    x = RNG.random((2, 2, 6, 6))
    for name in COMPOSITES:
        relevance = explain(graph, x, composite=name, input_domain=(0.0, 1.0))
        assert relevance.shape == x.shape and np.isfinite(relevance).all()


def test_maxpool_in_a_graph_and_float32():
    graph = Graph([Node("c", conv(2, 1, 3), "input"), Node("r", ReLU(), "c"),
                   Node("p", MaxPool2d(3, 2, padding=1), "r"), Node("g", GlobalAvgPool(), "p"),
                   Node("f", Flatten(), "g"), Node("d", Dense(RNG.standard_normal((2, 2))), "f")],
                  input_shape=(1, 5, 5))
    x = RNG.random((2, 1, 5, 5))
    r64 = explain(graph, x, rule="zplus")
    r32 = explain(graph, x.astype(np.float32), rule="zplus")
    assert r32.dtype == np.float32
    np.testing.assert_allclose(r32, r64, rtol=1e-3, atol=1e-4 * np.abs(r64).max())


# ---- bad graphs ------------------------------------------------------------------------------------

def _d(n_in=2, n_out=2):
    return Dense(np.ones((n_in, n_out)))


@pytest.mark.parametrize(("nodes", "options", "error", "message"), [
    ([("a", _d(), "b"), ("b", _d(), "a")], {}, GraphError, "cycle through node(s) 'a', 'b'"),
    ([("a", _d(), "input"), ("b", _d(), "nowhere")], {}, GraphError, "node 'b' reads 'nowhere', which no node produces"),
    ([("a", _d(), "input"), ("a", _d(), "a")], {}, GraphError, "node 'a': duplicate name"),
    ([("input", _d(), "input")], {}, GraphError, "node 'input': duplicate name (also the graph input)"),
    ([("a", _d(2, 3), "input"), ("b", _d(2, 2), "input"), ("s", Add(), ("a", "b"))], {"input_shape": (2,)},
     GraphError, "node 's' (Add()): Add needs addends of one shape, got (3,), (2,)"),
    ([("a", Conv2d(np.ones((2, 1, 1, 1))), "input"), ("b", Conv2d(np.ones((2, 1, 2, 2))), "input"),
      ("c", Concat(1), ("a", "b"))], {"input_shape": (1, 3, 3)},
     GraphError, "node 'c' (Concat(axis=1)): Concat(axis=1) needs inputs that agree off the axis"),
    ([("a", "softmax", "input")], {}, UnsupportedLayerError, "node 'a' is a str"),
    ([("a", _d(), "input"), ("s", Add(), ("a",))], {}, GraphError, "node 's' (Add()) takes at least 2 input(s), got 1"),
    ([("a", _d(), ("input", "input"))], {}, GraphError, "node 'a' (Dense(2 -> 2)) takes 1 input(s), got 2"),
    ([("a", _d(), "input"), ("b", _d(), "input")], {"output": "b"}, GraphError, "node(s) 'a' do not lead to the output 'b'"),
    ([("a", _d(), "input"), ("b", _d(), "input")], {}, GraphError, "2 nodes that no node reads ('a', 'b'); name the output"),
    ([("a", _d(), "input")], {"output": "z"}, GraphError, "the output 'z' is not a node"),
    ([("a", _d(), "b"), ("b", _d(), "a"), ("c", _d(), "c")], {}, GraphError, "cycle"),
    ([("a", _d(3, 2), "input")], {"input_shape": (2,)}, GraphError, "node 'a' (Dense(3 -> 2)): Dense(3 -> 2) expects"),
    ([("bn", BatchNorm(np.ones(3), np.zeros(3), np.zeros(3), np.ones(3)), "a"), ("a", _d(), "input")], {},
     GraphError, "node 'bn': BatchNorm(3, eps=1e-05) cannot follow Dense(2 -> 2)"),
    ([], {}, GraphError, "at least one node"),
    ([("a", _d(), 7)], {}, GraphError, "node 'a': inputs must be node names"),
])
def test_bad_graphs_are_one_line_errors_naming_the_node(nodes, options, error, message):
    with pytest.raises(error) as info:
        Graph(nodes, **options)
    assert message in str(info.value), str(info.value)
    assert "\n" not in str(info.value) and isinstance(info.value, LRPError)


def test_shared_window_layers_are_rejected():
    shared = Conv2d(np.ones((1, 1, 1, 1)))
    with pytest.raises(GraphError, match="node 'b' reuses the Conv2d object of node 'a'"):
        Graph([("a", shared, "input"), ("b", shared, "a")])
    relu = ReLU()  # parameter-free layers may be shared
    Graph([("a", relu, "input"), ("b", relu, "a")])
    with pytest.raises(GraphError, match="node 'a' reads 'input', which no node produces \\(the graph input is 'x'\\)"):
        Graph([("a", _d(), "input")], input_name="x")


def test_bad_inputs_at_run_time_name_the_node():
    graph = Graph([("a", _d(), "input"), ("b", _d(3, 1), "a")])  # no input_shape: checked when run
    with pytest.raises(ShapeError, match="node 'b': Dense\\(3 -> 1\\) expects inputs of shape \\(N, 3\\)"):
        graph(np.ones((1, 2)))
    with pytest.raises(ShapeError, match="must be a batch"):
        residual_net()(np.ones(3))


# ---- model files -------------------------------------------------------------------------------------

def test_graph_files_round_trip(tmp_path):
    graph = Graph([*residual_net().source_nodes[:-1], Node("drop", Dropout(0.2), "flat"),
                   Node("fc", Dense(RNG.standard_normal((6, 3))), "drop")], input_shape=(2, 6, 6))
    extra = {"test_images": RNG.random((2, 2, 6, 6)), "test_labels": np.array([0, 2])}
    save_npz(graph, tmp_path / "g.npz", input_domain=(0.0, 1.0), extra=extra)
    model = load_npz(tmp_path / "g.npz")
    loaded = model.network
    assert isinstance(loaded, Graph) and loaded.folded == graph.folded
    assert [(n.name, type(n.operation), n.inputs) for n in loaded.source_nodes] == \
        [(n.name, type(n.operation), n.inputs) for n in graph.source_nodes]
    x = RNG.random((2, 2, 6, 6))
    np.testing.assert_array_equal(loaded(x), graph(x))
    np.testing.assert_array_equal(explain(loaded, x, composite="deep-taylor", input_domain=model.input_domain),
                                  explain(graph, x, composite="deep-taylor", input_domain=(0.0, 1.0)))
    np.testing.assert_array_equal(model.test_labels, [0, 2])
    save_npz(graph, tmp_path / "h.npz", input_domain=(0.0, 1.0), extra=extra)
    assert (tmp_path / "g.npz").read_bytes() == (tmp_path / "h.npz").read_bytes()
    with np.load(tmp_path / "g.npz", allow_pickle=False) as archive:
        assert str(archive["format"]) == "lrp-toolkit/graph" and archive["graph"].dtype.kind == "U"
        assert "node0.weight" in archive.files and "layer_types" not in archive.files


def test_every_operation_survives_a_file(tmp_path):
    from lrp_num.layers import AdaptiveAvgPool2d, AvgPool2d, SumPool2d

    nodes = [
        Node("bn_in", batchnorm(2), "input"),
        Node("g", Conv2d(RNG.standard_normal((4, 1, 3, 3)), RNG.standard_normal(4), 1, 1, groups=2), "bn_in"),
        Node("m", MaxPool2d(3, 2, padding=1, ceil_mode=True), "g"),
        Node("s", SumPool2d(2, 1, padding=1), "m"),
        Node("a", AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=False), "s"),
        Node("aff", ChannelAffine(RNG.random(4) + 0.5, RNG.standard_normal(4)), "a"),
        Node("ad", AdaptiveAvgPool2d((2, 3)), "aff"), Node("gl", GlobalAvgPool(), "aff"),
        Node("f1", Flatten(), "ad"), Node("f2", Flatten(), "gl"), Node("cat", Concat(-1), ("f1", "f2")),
        Node("drop", Dropout(0.1), "cat"), Node("d", Dense(RNG.standard_normal((28, 2))), "drop"),
    ]
    graph = Graph(nodes, input_shape=(2, 7, 7))
    save_npz(graph, tmp_path / "all.npz")
    loaded = load_npz(tmp_path / "all.npz").network
    x = RNG.standard_normal((2, 2, 7, 7))
    np.testing.assert_array_equal(loaded(x), graph(x))
    ops = {n.name: n.operation for n in loaded.source_nodes}
    assert ops["g"].groups == 2 and ops["m"].ceil_mode and ops["m"].padding == (1, 1)
    assert ops["a"].count_include_pad is False and ops["ad"].output_size == (2, 3) and ops["cat"].axis == -1
    assert ops["drop"].p == 0.1


def _graph_arrays(tmp_path):
    save_npz(Graph([("a", _d(), "input"), ("r", ReLU(), "a")]), tmp_path / "valid.npz")
    with np.load(tmp_path / "valid.npz") as archive:
        return {key: archive[key] for key in archive.files}


@pytest.mark.parametrize(("change", "message"), [
    ({"graph": np.asarray("{not json")}, "the graph header is not valid"),
    ({"graph": np.asarray('{"input": "input", "output": "r"}')}, "the graph header is not valid"),
    ({"graph": np.asarray(['a', 'b'])}, "the graph header is not valid"),
    ({"graph": np.asarray('{"input": "input", "output": "r", "nodes": [{"name": "a", "type": "Transformer", '
                          '"inputs": ["input"]}]}')}, "node 0 'a' has unknown type 'Transformer'"),
    ({"graph": np.asarray('{"input": "input", "output": "r", "nodes": [{"name": "a", "type": "Dense", '
                          '"inputs": ["input"]}, {"name": "r", "type": "ReLU", "inputs": ["q"]}]}')},
     "node 'r' reads 'q', which no node produces"),
    ({"node0.weight": np.ones((2, 2, 2))}, "node 0 'a' (Dense) is invalid"),
    ({"format": np.asarray("lrp-toolkit/other")}, "not an lrp-toolkit model"),
])
def test_invalid_graph_files(tmp_path, change, message):
    arrays = _graph_arrays(tmp_path)
    arrays.update(change)
    np.savez(tmp_path / "changed.npz", **arrays)
    with pytest.raises(ModelFileError) as info:
        load_npz(tmp_path / "changed.npz")
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).count(str(tmp_path / "changed.npz")) == 1


def test_graph_header_is_json_text_without_pickle(tmp_path):
    save_npz(residual_net(), tmp_path / "r.npz")
    with zipfile.ZipFile(tmp_path / "r.npz") as archive:
        assert "graph.npy" in archive.namelist()
    with np.load(tmp_path / "r.npz", allow_pickle=False) as archive:
        import json
        header = json.loads(str(archive["graph"]))
    assert header["output"] == "fc" and header["nodes"][7] == {"name": "b1_add", "type": "Add",
                                                               "inputs": ["b1_bn2", "stem_relu"]}


def test_add_nodes_use_the_composites_add_rule():
    """The Add rule is the composite's ``add`` field (default add_z); add_zplus gives every
    addend a non-negative share where R >= 0, add_epsilon absorbs what its stabiliser holds."""
    import dataclasses

    from lrp_num.engine.composites import LayerRule

    graph = residual_net()
    x = RNG.random((2, 2, 6, 6))
    base = COMPOSITES["epsilon-plus"]
    assert ADD_RULE == "add_z" and base.add == LayerRule("add_z")
    for add in (LayerRule("add_zplus"), LayerRule("add_epsilon", {"epsilon": 0.5})):
        composite = dataclasses.replace(base, add=add)
        details = explain_details(graph, x, composite=composite, keep_layers=True)
        adds = [r for r in details.layers if r.layer == "Add()"]
        assert len(adds) == 2 and all(r.rule == add.rule for r in adds)
        if add.rule == "add_epsilon":  # R - sum_k R_k = eps / (y + eps sign y) R, not zero
            assert any(np.any(np.abs(r.relevance_out - r.relevance_in) > 1e-9) for r in adds)
    # a rule derived for the sum neuron is refused on a linear layer, and the other way round
    with pytest.raises(UnknownRuleError, match="Add node"):
        explain(graph, x, rule="add_z")
    wrong = dataclasses.replace(base, add=LayerRule("zplus"))
    with pytest.raises(UnknownRuleError, match="derived for a linear neuron"):
        explain(graph, x, composite=wrong)
