"""The built-in residual model digits-resnet: structure, folding, accuracy and explanations."""

from __future__ import annotations

import numpy as np
import pytest

from lrp_num import COMPOSITES, Graph, explain_details, load_builtin
from lrp_num.cli import main
from lrp_num.layers import Add, BatchNorm, Conv2d, Dense, Flatten, GlobalAvgPool, ReLU


@pytest.fixture(scope="module")
def resnet():
    return load_builtin("digits-resnet")


def source(graph: Graph, name: str):
    return next(node for node in graph.source_nodes if node.name == name)


def test_loads_as_a_graph_with_its_data(resnet):
    graph = resnet.network
    assert isinstance(graph, Graph)
    assert graph.input_shape == (1, 8, 8) and graph.n_outputs == 10
    assert resnet.test_images.shape == (8, 1, 8, 8) and resnet.test_labels.shape == (8,)
    np.testing.assert_array_equal(resnet.input_domain.low, np.zeros((1, 8, 8)))
    np.testing.assert_array_equal(resnet.input_domain.high, np.ones((1, 8, 8)))
    assert float(resnet.extra["test_accuracy"]) >= 0.97  # on the 359 held-out images
    predictions = graph(resnet.test_images).argmax(axis=1)
    assert (predictions == resnet.test_labels).mean() >= 7 / 8


def test_structure_stem_two_residual_blocks_pooling_classifier(resnet):
    graph = resnet.network
    stem = source(graph, "stem").operation
    assert isinstance(stem, Conv2d) and (stem.in_channels, stem.out_channels) == (1, 8)
    # block 1: two 3x3 convolutions; the skip is the identity (the stem's ReLU output)
    assert source(graph, "block1.add").inputs == ("block1.bn2", "stem.relu")
    for name in ("block1.conv1", "block1.conv2"):
        conv = source(graph, name).operation
        assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (8, 8, (3, 3))
    # block 2: 8 -> 16 channels at stride 2, shortcut a 1x1 projection with its BatchNorm
    assert source(graph, "block2.add").inputs == ("block2.bn2", "block2.shortcut_bn")
    assert source(graph, "block2.shortcut_bn").inputs == ("block2.shortcut",)
    shortcut = source(graph, "block2.shortcut")
    assert shortcut.inputs == ("block1.relu",) and source(graph, "block2.conv1").inputs == ("block1.relu",)
    assert (shortcut.operation.kernel_size, shortcut.operation.stride) == ((1, 1), (2, 2))
    assert graph.shapes["block2.add"] == (16, 4, 4)
    # global average pooling and the dense classifier
    assert isinstance(source(graph, "pool").operation, GlobalAvgPool)
    assert isinstance(source(graph, "flatten").operation, Flatten)
    assert isinstance(source(graph, "fc").operation, Dense) and graph.output == "fc"
    # every residual sum is followed by a ReLU
    for block in ("block1", "block2"):
        assert isinstance(source(graph, f"{block}.add").operation, Add)
        relu = source(graph, f"{block}.relu")
        assert isinstance(relu.operation, ReLU) and relu.inputs == (f"{block}.add",)


def test_every_batchnorm_is_stored_and_folds(resnet):
    graph = resnet.network
    stored = [node.name for node in graph.source_nodes if isinstance(node.operation, BatchNorm)]
    assert stored == ["stem.bn", "block1.bn1", "block1.bn2", "block2.bn1", "block2.bn2", "block2.shortcut_bn"]
    assert set(graph.folded) == set(stored)
    assert all(isinstance(graph.node(conv).operation, Conv2d) for conv in graph.folded.values())
    assert not any(isinstance(layer, BatchNorm) for layer in graph.layers)
    # folding changes nothing: the unfolded graph, evaluated node by node, gives the same output
    x = resnet.test_images
    values = {"input": x}
    for node in graph.source_nodes:  # stored in topological order
        values[node.name] = node.operation(*(values[i] for i in node.inputs))
    np.testing.assert_allclose(graph(x), values["fc"], rtol=1e-12, atol=1e-12)


def expected_sum_below(rule, layer, a, above, parameters, domain):
    """sum_i R_i that a rule gives one linear node, neuron by neuron, as its derivation states.

    z+, z^B, gamma (and every root-point rule) conserve R_j for a neuron whose denominator
    sum_i q_ij is non-zero and give nothing where it is zero (the stabiliser's
    zero-denominator case); alpha-beta gives alpha R_j [sum q+ > 0] - beta R_j [sum q- < 0];
    epsilon keeps (z_j - b_j) / (z_j + epsilon sign(z_j)) R_j (sign(0) = +1). Every input here
    is >= 0 (the image, or a ReLU's output), so q+ = x w+ and q- = x w-.
    """
    positive, negative = layer.forward(a, "positive"), layer.forward(a, "negative")
    if rule == "zplus":
        share = positive != 0
    elif rule == "gamma":
        share = (1 + parameters["gamma"]) * positive + negative != 0
    elif rule == "zbox":
        low, high = (np.broadcast_to(bound, a.shape) for bound in (domain.low, domain.high))
        share = layer.forward(a) - layer.forward(low, "positive") - layer.forward(high, "negative") != 0
    elif rule == "alphabeta":
        share = parameters["alpha"] * (positive > 0) - parameters["beta"] * (negative < 0)
    elif rule == "epsilon":
        z = layer.forward(a) + layer.bias_like(above)
        share = (z - layer.bias_like(above)) / (z + parameters["epsilon"] * np.where(z >= 0, 1.0, -1.0))
    else:
        raise AssertionError(f"no conservation statement for rule {rule!r} in this test")
    return (share * above).reshape(len(a), -1).sum(axis=1)


@pytest.mark.parametrize("composite", sorted(COMPOSITES))
def test_every_composite_explains_it_with_the_expected_conservation(resnet, composite):
    graph, x = resnet.network, resnet.test_images.astype(np.float64)
    details = explain_details(graph, x, composite=composite, input_domain=resnet.input_domain,
                              keep_layers=True)
    assert details.relevance.shape == x.shape and np.all(np.isfinite(details.relevance))
    values = graph.forward_trace(x)
    plan = COMPOSITES[composite].plan_graph(graph, input_is_box=True)
    for report, node in zip(details.layers, graph.nodes):
        below, above = np.asarray(report.relevance_in), report.relevance_above
        scale = 1e-9 * (1 + np.abs(above).reshape(len(x), -1).sum(axis=1))
        layer = node.operation
        if isinstance(layer, (Conv2d, Dense)):
            a = values[node.inputs[0]]
            expected = expected_sum_below(plan[report.index].rule, layer, a, above, plan[report.index].parameters,
                                          resnet.input_domain)
        else:  # ReLU, the residual sums, global average pooling and Flatten conserve
            expected = above.reshape(len(x), -1).sum(axis=1)
        assert np.all(np.abs(below - expected) <= scale), (composite, node.name, below, expected)


def test_residual_sums_split_relevance_in_proportion_to_their_addends(resnet):
    """R_k = a_k / sum_k' a_k' R at both Add nodes: the total is conserved, never doubled."""
    graph, x = resnet.network, resnet.test_images
    details = explain_details(graph, x, composite="deep-taylor", input_domain=resnet.input_domain,
                              keep_layers=True)
    values = graph.forward_trace(x)
    above = {node.name: report.relevance_above for report, node in zip(details.layers, graph.nodes)}
    for add, branch in (("block2.add", "block2.conv2"), ("block2.add", "block2.shortcut"),
                        ("block1.add", "block1.conv2")):
        # after folding the branch ends in a Conv2d that only the Add reads
        assert graph.consumers[branch] == [add]
        total = values[add]
        nonzero = total != 0
        expected = np.where(nonzero, values[branch] / np.where(nonzero, total, 1) * above[add], 0)
        np.testing.assert_allclose(above[branch], expected, rtol=1e-10, atol=1e-12)


def test_cli_explains_it_by_name(tmp_path, capsys, resnet):
    out = tmp_path / "r.npy"
    assert main(["explain", "--model", "digits-resnet", "--sample", "0", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "model digits-resnet" in text
    assert f"test image 0: predicted {resnet.test_labels[0]} (label {resnet.test_labels[0]})" in text
    assert text.count("Add()") == 2  # the per-node report lists both residual sums
    relevance = np.load(out, allow_pickle=False)
    assert relevance.shape == (1, 1, 8, 8) and np.all(np.isfinite(relevance))
