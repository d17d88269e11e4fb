"""lrp audit on residual networks: the torch twin of a graph, zennit and captum audited per node,
broken twins flagged naming the node and the amount.

Needs torch, zennit and captum; skipped cleanly without them.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("captum")

from lrp_num import Graph, Node  # noqa: E402
from lrp_num.audit import audit_library  # noqa: E402
from lrp_num.audit.graph_compare import reference_nodes, tensor_names  # noqa: E402
from lrp_num.audit.report import render_json, render_markdown, render_table  # noqa: E402
from lrp_num.audit.zennit_adapter import import_zennit  # noqa: E402
from lrp_num.engine.composites import Composite  # noqa: E402
from lrp_num.errors import GraphError, UnsupportedLayerError  # noqa: E402
from lrp_num.engine.explain import explain, top_relevance  # noqa: E402
from lrp_num.layers import (Add, AdaptiveAvgPool2d, AvgPool2d, BatchNorm, ChannelAffine, Concat,  # noqa: E402
                            Conv2d, Dense, Dropout, Flatten, GlobalAvgPool, MaxPool2d, ReLU)
from lrp_num.io.model_io import save_npz  # noqa: E402
from lrp_num.audit.profiles import ZENNIT, captum_unmerged_graph, zennit_merged_graph  # noqa: E402
from lrp_num.io.torch_bridge import to_torch  # noqa: E402

try:
    zennit = import_zennit()
except ImportError:  # pragma: no cover - zennit is installed separately
    pytest.skip("zennit is not installed", allow_module_level=True)

TOL = 1e-7  # the audit default: float64 rounding near small denominators reaches ~1e-9


def residual_graph(seed=0):
    """A stem (conv + BN + ReLU), block layer1.0 with an identity skip, block layer2.0 with a
    strided 1x1 projection shortcut (conv + BN), global average pooling and a dense head; node
    names as torchvision's ResNet. Inputs in [0, 1]."""
    rng = np.random.default_rng(seed)

    def conv(c_in, c_out, k=3, stride=1):
        return Conv2d(rng.normal(size=(c_out, c_in, k, k)) * 0.4, rng.normal(size=c_out) * 0.1,
                      stride=stride, padding=k // 2)

    def bn(c):
        return BatchNorm(rng.uniform(0.5, 1.5, c), rng.normal(size=c) * 0.1, rng.normal(size=c) * 0.1,
                         rng.uniform(0.5, 2.0, c))

    nodes = [Node("conv1", conv(2, 3), "input"), Node("bn1", bn(3), "conv1"), Node("relu", ReLU(), "bn1")]
    for block, c_in, c_out, stride in (("layer1.0", 3, 3, 1), ("layer2.0", 3, 4, 2)):
        source = nodes[-1].name
        nodes += [Node(f"{block}.conv1", conv(c_in, c_out, stride=stride), source),
                  Node(f"{block}.bn1", bn(c_out), f"{block}.conv1"),
                  Node(f"{block}.relu", ReLU(), f"{block}.bn1"),
                  Node(f"{block}.conv2", conv(c_out, c_out), f"{block}.relu"),
                  Node(f"{block}.bn2", bn(c_out), f"{block}.conv2")]
        skip = source
        if stride != 1 or c_in != c_out:
            nodes += [Node(f"{block}.downsample.0", conv(c_in, c_out, k=1, stride=stride), source),
                      Node(f"{block}.downsample.1", bn(c_out), f"{block}.downsample.0")]
            skip = f"{block}.downsample.1"
        nodes += [Node(f"{block}.add", Add(), (f"{block}.bn2", skip)),
                  Node(f"{block}.relu2", ReLU(), f"{block}.add")]
    nodes += [Node("avgpool", GlobalAvgPool(), nodes[-1].name), Node("flatten", Flatten(), "avgpool"),
              Node("fc", Dense(rng.normal(size=(4, 3)), rng.normal(size=3) + 1.0), "flatten")]
    graph = Graph(nodes, input_shape=(2, 6, 6))
    return graph, rng.uniform(0.0, 1.0, size=(2, 2, 6, 6))


@pytest.fixture(scope="module")
def model():
    return residual_graph()


# -- the torch twin ------------------------------------------------------------------------

@pytest.mark.parametrize("addition", ["functional", "zennit", "captum"])
def test_twin_computes_the_graph_and_names_modules_after_nodes(model, addition):
    graph, x = model
    twin = to_torch(graph, addition=addition)
    out = twin(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(out, graph.forward(x), rtol=1e-12, atol=1e-12)
    names = dict(twin.named_modules())
    assert isinstance(names["layer2.0.downsample.1"], torch.nn.BatchNorm2d)  # kept, not folded
    assert not names["layer2.0.downsample.1"].training
    assert isinstance(names["layer1.0.conv2"], torch.nn.Conv2d)
    add = {"functional": None, "zennit": zennit.layer.Sum, "captum": None}[addition]
    if add is not None:
        assert isinstance(names["layer1.0.add"], add)
    if addition == "captum":
        from captum.attr._utils.custom_modules import Addition_Module

        assert isinstance(names["layer2.0.add"], Addition_Module)
    if addition == "functional":
        assert "layer1.0.add" not in names


def test_twin_of_every_graph_operation():
    """Concat, adaptive pooling, Dropout, grouped convolution, padded/ceil pooling, ChannelAffine
    (a batch norm that cannot be folded) and names that cannot be module paths."""
    rng = np.random.default_rng(3)
    graph = Graph([
        Node("stem", Conv2d(rng.normal(size=(4, 2, 3, 3)), rng.normal(size=4), padding=1), "input"),
        Node("pre", BatchNorm(rng.uniform(0.5, 1.5, 4), rng.normal(size=4), rng.normal(size=4),
                              rng.uniform(0.5, 2, 4)), "input_relu"),
        Node("input_relu", ReLU(), "stem"),
        Node("depthwise", Conv2d(rng.normal(size=(4, 1, 3, 3)), rng.normal(size=4), padding=1, groups=4), "pre"),
        Node("affine", ChannelAffine(rng.uniform(0.5, 1.5, 4), rng.normal(size=4)), "stem"),
        Node("cat", Concat(axis=1), ("depthwise", "affine")),
        Node("max", MaxPool2d(3, stride=2, padding=1, ceil_mode=True), "cat"),
        Node("avg", AvgPool2d(2, padding=1, count_include_pad=False), "max"),
        Node("drop", Dropout(0.3), "avg"),
        Node("adaptive", AdaptiveAvgPool2d((2, 1)), "drop"),
        Node("a.b", Flatten(), "adaptive"), Node("a", Dense(rng.normal(size=(16, 2)), rng.normal(size=2)), "a.b"),
    ], input_shape=(2, 7, 7))
    x = rng.normal(size=(3, 2, 7, 7))
    twin = to_torch(graph)
    np.testing.assert_allclose(twin(torch.tensor(x)).detach().numpy(), graph.forward(x), rtol=1e-12, atol=1e-12)
    assert set(twin.module_paths) >= {"a", "a.b", "pre", "affine"}
    # "a.b" comes first and makes "a" a container, so the leaf "a" is placed as "a_"
    assert twin.module_paths["a.b"] == "a.b" and twin.module_paths["a"] == "a_"
    assert dict(twin.named_modules())["a_"] is twin.node_modules["a"]


def test_twin_refusals():
    rng = np.random.default_rng(4)
    three = Graph([Node("d", Dense(rng.normal(size=(2, 2)), np.zeros(2)), "input"), Node("r", ReLU(), "d"),
                   Node("s", Add(), ("input", "d", "r"))], input_shape=(2,))
    with pytest.raises(UnsupportedLayerError, match="'s' adds 3 tensors"):
        to_torch(three, addition="captum")
    with pytest.raises(UnsupportedLayerError, match="unknown addition"):
        to_torch(three, addition="plus")
    with pytest.raises(GraphError, match="input_shape"):
        to_torch(Graph([Node("d", Dense(np.eye(2), np.zeros(2)), "input")]))


# -- profiles of what the libraries explain --------------------------------------------------

def test_zennit_graph_keeps_names_and_scales_merged_batch_norms(model):
    graph, x = model
    merged = zennit_merged_graph(graph)
    assert [n.name for n in merged.nodes] == [n.name for n in graph.nodes]
    ratio = merged.forward(x) / graph.forward(x)
    assert 0 < np.max(np.abs(ratio - 1)) < 1e-4  # 1 / sqrt(1 + eps_bn) per merged batch norm


def test_captum_graph_unmerges_batch_norms(model):
    graph, x = model
    unmerged = captum_unmerged_graph(graph)
    assert not unmerged.folded and "layer1.0.bn2" in [n.name for n in unmerged.nodes]
    np.testing.assert_allclose(unmerged.forward(x), graph.forward(x), rtol=1e-12)


def test_engine_reference_splits_additions_as_the_libraries_say(model):
    """The addends' relevance is R_k = a_k / stab(sum a) R with the profile's stabiliser."""
    graph, x = model
    plan = Composite.single("zplus").plan_graph(graph, False)
    top = top_relevance(graph.forward(x), None)
    values = reference_nodes(graph, x, plan, top, ZENNIT.conventions)
    trace = graph.forward_trace(x)
    node = graph.node("layer1.0.add")
    above = values.nodes["layer1.0.add"]
    total = sum(trace[i] for i in node.inputs)
    stabilised = total + 1e-6 * np.where(total >= 0, 1.0, -1.0)
    for k, name in enumerate(node.inputs):
        np.testing.assert_allclose(values.addends["layer1.0.add"][k], trace[name] / stabilised * above,
                                   rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(values.nodes["input"], explain(graph, x, rule="zplus", target=top,
                                                              conventions=ZENNIT.conventions), rtol=1e-12)
    assert tensor_names(graph)["layer1.0.conv2"] == "layer1.0.bn2"


# -- the audit --------------------------------------------------------------------------------

@pytest.mark.parametrize("library, rule", [("zennit", "zplus"), ("zennit", "epsilon"), ("captum", "epsilon"),
                                           ("captum", "zplus")])
def test_correct_runs_match_their_convention_at_every_node(model, library, rule):
    graph, x = model
    report = audit_library(graph, x, library, rule=rule, tolerance=TOL)
    assert report.ok and report.verdict == "matches" and report.deviation_at is None, report.verdicts
    assert not report.layers and {a.tensor for a in report.nodes} >= {"input", "layer1.0.add", "layer2.0.bn2",
                                                                       "layer2.0.downsample.1"}
    adds = [a for a in report.nodes if a.addend_sum_library is not None]
    assert [a.node for a in adds] == ["layer1.0.add", "layer2.0.add"]
    for a in adds:
        assert abs(a.addend_sum_library - a.addend_sum_profile) < TOL and not a.same_addends
        assert abs(a.addend_sum_library - 1) < 1e-4
    assert max(a.own_relative for a in report.nodes) < TOL
    assert any(line.startswith("Add nodes conserve") for line in report.verdicts)


@pytest.mark.parametrize("library", ["zennit", "captum"])
def test_a_composite_s_add_rule_is_the_dtd_reference_at_add_nodes(model, library):
    """A composite whose Add nodes use add_zplus: DTD follows it, the library still matches its
    own convention (its additions are the proportional split with a stabiliser)."""
    import dataclasses

    from lrp_num.engine.composites import LayerRule, get_composite

    graph, x = model
    composite = dataclasses.replace(get_composite("epsilon-plus"), add=LayerRule("add_zplus"))
    report = audit_library(graph, x, library, composite=composite, tolerance=TOL)
    assert report.ok, report.verdicts
    assert [a.rule for a in report.nodes if a.addend_sum_library is not None] == ["add_zplus", "add_zplus"]
    default = audit_library(graph, x, library, rule="epsilon", tolerance=TOL)
    assert [a.rule for a in default.nodes if a.addend_sum_library is not None] == ["add_z", "add_z"]


def test_zennit_merged_batch_norm_differs_from_dtd_by_its_bias_convention(model):
    graph, x = model
    report = audit_library(graph, x, "zennit", rule="zplus", tolerance=TOL)
    assert report.ok
    assert max(a.dtd_relative for a in report.nodes) > 1e-3  # b^+ and the input split in zennit's ZPlus


@pytest.mark.parametrize("library", ["zennit", "captum"])
def test_functional_sum_doubles_and_is_flagged_at_the_node(model, library):
    """A plain + (no Sum / Addition_Module) copies R to both addends."""
    graph, x = model
    report = audit_library(graph, x, library, rule="epsilon", addition="functional", tolerance=TOL)
    assert not report.ok
    assert "node layer2.0.add: sum of addend relevance 2.00 x the node's relevance (its convention 1.00, " \
           "DTD 1.00)" in report.verdicts
    add = next(a for a in report.nodes if a.node == "layer2.0.add")
    assert add.addend_sum_library == pytest.approx(2.0, rel=1e-12)
    assert add.same_addends
    assert report.deviation_starts_at in ("layer2.0.bn2", "layer2.0.downsample.1"), report.verdicts
    assert "conservation" in report.findings


def test_addends_given_the_first_share_are_flagged(model):
    """A Sum rule that gives every addend the first addend's share, at layer1.0.add only."""
    graph, x = model
    from zennit.core import BasicHook

    def first_share_for_all():
        rule = zennit.rules.Norm(stabilizer=ZENNIT.conventions.eps)
        assert isinstance(rule, BasicHook)
        rule.reducer = lambda inputs, gradients: (inputs[0] * gradients[0])[..., :1].expand_as(inputs[0])
        return rule

    report = audit_library(graph, x, "zennit", rule="zplus", tolerance=TOL,
                           overrides={"layer1.0.add": first_share_for_all})
    assert not report.ok
    add1 = next(a for a in report.nodes if a.node == "layer1.0.add")
    add2 = next(a for a in report.nodes if a.node == "layer2.0.add")
    assert add1.same_addends and not add2.same_addends
    assert abs(add2.addend_sum_library - add2.addend_sum_profile) < TOL
    lines = [line for line in report.verdicts if line.startswith("node ")]
    assert lines[0].startswith("node layer1.0.add: sum of addend relevance ")
    assert f"{add1.addend_sum_library:.2f}" in lines[0] and abs(add1.addend_sum_library - 1) > 1e-3
    assert "node layer1.0.add: every addend receives the same relevance" in lines[1]
    assert all("layer2.0.add" not in line for line in lines)


def test_a_wrong_rule_at_one_node_is_located(model):
    """captum's Alpha1_Beta0 where the plan says epsilon, at layer2.0.conv2 only: the deviation
    starts at its input, the output of layer2.0.relu, read by that node."""
    graph, x = model
    from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule

    report = audit_library(graph, x, "captum", rule="epsilon", tolerance=TOL,
                           overrides={"layer2.0.conv2": Alpha1_Beta0_Rule})
    assert not report.ok
    assert report.deviation_starts_at == "layer2.0.relu"
    assert any("(read by layer2.0.conv2, whose output matches)" in line for line in report.verdicts)
    by_node = {a.node: a for a in report.nodes}
    assert by_node["layer2.0.add"].own_relative < TOL and by_node["layer2.0.relu"].own_relative > 1e-3


def test_reports_render_node_rows(model):
    graph, x = model
    report = audit_library(graph, x, "zennit", rule="zplus", tolerance=TOL)
    table = render_table(report)
    assert "layer1.0.add" in table and "addends/R lib" in table
    assert "layer2.0.downsample.0 (+layer2.0.downsample.1)" in table
    assert "| layer2.0.add |" in render_markdown(report)
    assert '"node": "layer1.0.add"' in render_json(report)


def test_cli_audits_a_graph_model_file(model, tmp_path, capsys):
    from lrp_num.cli import main

    graph, x = model
    path = tmp_path / "graph.npz"
    save_npz(graph, path, extra={"test_images": x})
    code = main(["audit", "--library", "zennit", "--model", str(path), "--rule", "zplus", "--sample", "0"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "layer1.0.add" in out and "verdict: matches" in out
    code = main(["audit", "--library", "captum", "--model", str(path), "--rule", "epsilon", "--sample", "1"])
    assert code == 0
    np.save(tmp_path / "R.npy", x[0])
    capsys.readouterr()
    code = main(["audit", "--attribution", str(tmp_path / "R.npy"), "--model", str(path), "--rule", "zplus",
                 "--sample", "0"])
    assert code == 2
    assert "covers Sequential networks only" in capsys.readouterr().err


@pytest.mark.parametrize("library", ["zennit", "captum"])
def test_zplus_on_negative_graph_inputs_is_outside_its_domain(model, library):
    """z+ at the stem sees inputs of both signs: zennit applies the input-split generalisation
    that holds there (the DTD reference uses it too), captum x w^+ outside z+'s domain (exit 1)."""
    graph, x = model
    mixed = x - 0.5 * np.abs(x).max()
    assert (mixed < 0).any()
    report = audit_library(graph, mixed, library, rule="zplus", tolerance=TOL)
    stem = next(a for a in report.nodes if a.node.startswith(graph.nodes[0].name))
    assert stem.outside_domain == np.count_nonzero(mixed < 0) and stem.generalisation == "zplus_split"
    assert stem.applied_outside_domain == (library == "captum")
    assert all(a.outside_domain == 0 for a in report.nodes if a is not stem)
    assert ("outside-domain" in report.findings) == (library == "captum")
    assert "deviates-from-convention" not in report.findings, report.verdicts


# -- verdicts on graphs: dtype bounds, causes, the pointer, --strict -----------------------------

@pytest.mark.parametrize("library, dtype", [("zennit", "float64"), ("zennit", "float32"), ("captum", "float32")])
def test_correct_graph_runs_match_under_the_dtype_s_rounding_bound(model, library, dtype):
    graph, x = model
    report = audit_library(graph, x, library, rule="epsilon", dtype=dtype)
    assert report.ok and report.verdict == "matches" and report.dtype == dtype, report.verdicts
    assert all(a.own_over_bound <= 1 for a in report.nodes)
    if dtype == "float32":  # float32 rounding shows and the bound covers it
        assert max(a.own_relative for a in report.nodes) > 1e-10
        assert not audit_library(graph, x, library, rule="epsilon", dtype=dtype, tolerance=1e-12).ok


def test_graph_causes_name_zennit_s_bias_and_captum_s_missing_split(model):
    graph, x = model
    zennit_report = audit_library(graph, x, "zennit", rule="zplus", strict=True)
    kinds = {c.kind for a in zennit_report.nodes for c in a.causes}
    assert "bias" in kinds and zennit_report.findings == ["departs-from-dtd"], zennit_report.verdicts
    mixed = x - 0.5 * np.abs(x).max()
    captum_report = audit_library(graph, mixed, "captum", rule="zplus")
    stem = next(a for a in captum_report.nodes if a.node.startswith("conv1"))
    assert "missing-input-split" in {c.kind for c in stem.causes}, captum_report.verdicts
