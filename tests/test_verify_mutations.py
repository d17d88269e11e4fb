"""``verify`` fails when the engine is wrong: mutations of the engine that the reference, planned
and folded by its own code, must not follow (issue 11)."""

import dataclasses

import numpy as np
import pytest

import lrp_num._generated.zplus as zplus_module
import lrp_num.layers.batchnorm as batchnorm_module
from lrp_num import reference as ref
from lrp_num.engine import composites, explain as engine_explain, kernel_runtime
from lrp_num.errors import MissingBoundsError
from lrp_num.io.model_io import BUILTIN_MODELS, load_builtin
from lrp_num.verify import verify

ORIGINAL_FOLD = batchnorm_module.fold_batchnorm


def _verify(model, rules=("zplus",), composites_=("deep-taylor",), samples=1):
    x = model.test_images[:samples]
    return verify(model.network, x, rules=rules, composites=composites_,
                  targets=model.test_labels[:samples].astype(int), input_domain=model.input_domain,
                  model_name="digits-cnn")


def _failed(report):
    return {row.name: [c.name for c in row.checks if c.required and not c.holds] for row in report.rows}


def test_unmutated_engine_passes_on_a_model_with_batch_norm():
    model = load_builtin("digits-cnn")  # Conv2d + BatchNorm at the input
    report = _verify(model)
    assert report.ok, _failed(report)
    assert {c.name for c in report.rows[0].checks} >= {"agreement", "balance", "conservation", "root points"}


@pytest.mark.parametrize("mutation", [
    lambda w, b, g, beta, m, v, eps: ORIGINAL_FOLD(w, b, g, 0 * beta, m, v, eps),  # beta dropped
    lambda w, b, g, beta, m, v, eps: ORIGINAL_FOLD(w, b, g, beta, m, v * v, eps),  # sqrt(var^2 + eps)
], ids=["fold-without-beta", "fold-with-var-squared"])
def test_a_wrong_batch_norm_fold_fails_verify(monkeypatch, mutation):
    """The engine folds with the mutated fold; the reference folds the BatchNorm itself in mpmath."""
    monkeypatch.setattr(batchnorm_module, "fold_batchnorm", mutation)
    model = load_builtin("digits-cnn")  # folded at load time, with the mutation
    report = _verify(model)
    assert not report.ok
    assert all({"agreement", "forward"} <= set(failed) for failed in _failed(report).values())


def test_a_wrong_composite_plan_fails_verify(monkeypatch):
    """The engine's planner gives z+ at the input instead of z^B; the reference plans deep-taylor
    from its own restatement of the composite's definition."""
    original = composites.Composite.plan_graph

    def zplus_at_the_input(self, graph, input_is_box):
        return {index: composites.LayerRule("zplus") if choice.rule == "zbox" else choice
                for index, choice in original(self, graph, input_is_box).items()}

    monkeypatch.setattr(composites.Composite, "plan_graph", zplus_at_the_input)
    report = _verify(load_builtin("digits-cnn"))
    failed = _failed(report)
    assert failed["zplus"] == [] and "agreement" in failed["deep-taylor"]


def test_a_dropped_clamp_fails_the_conservation_check(monkeypatch):
    """z+ with the clamp w^+ dropped from its denominator no longer conserves: the float64
    conservation check fails (not only the agreement)."""
    def relevance(op, x, relevance_out, **keywords):
        x = kernel_runtime.as_float(x)
        d = op.forward(x)  # the mutation: sum_i x_i w_ij instead of sum_i x_i w_ij^+
        ratio = kernel_runtime.stabilised_ratio(np.asarray(relevance_out, dtype=x.dtype), d,
                                                keywords.get("eps", 1e-6), keywords.get("stabilise", "zero"),
                                                "zplus", 1)
        return x * op.transpose(ratio, "positive")

    monkeypatch.setattr(zplus_module, "relevance", relevance)
    engine_explain._kernel_of.cache_clear()
    try:
        report = _verify(load_builtin("digits-cnn"))
    finally:
        engine_explain._kernel_of.cache_clear()
    failed = _failed(report)
    assert "conservation" in failed["deep-taylor"] and "conservation" in failed["zplus"]


@pytest.mark.parametrize("name", list(BUILTIN_MODELS))
@pytest.mark.parametrize("composite", list(composites.COMPOSITES))
@pytest.mark.parametrize("box", [True, False])
def test_the_reference_plan_restates_the_engine_composites(name, composite, box):
    """The reference's own planning (reference/composites.py) chooses what the unmutated
    engine's planner chooses, on every built-in model, with and without the input box."""
    network = load_builtin(name).network
    graph = engine_explain.as_graph(network)
    try:
        engine = composites.get_composite(composite).plan_graph(graph, box)
    except MissingBoundsError:
        with pytest.raises(MissingBoundsError):
            ref.layer_plan(network, composite=composite, input_is_box=box)
        return
    expected = {index: (choice.rule,
                        {**ref.RULE_DEFAULTS.get(choice.rule, {}), **choice.parameters})
                for index, choice in engine.items() if choice.rule != "maxpool"}
    assert ref.layer_plan(network, composite=composite, input_is_box=box) == expected


def test_a_composite_object_is_read_through_its_choose_and_add():
    composite = dataclasses.replace(composites.get_composite("epsilon-plus"),
                                    add=composites.LayerRule("add_zplus"))
    network = load_builtin("digits-resnet").network
    plan = ref.layer_plan(network, composite=composite)
    graph = engine_explain.as_graph(network)
    adds = [k for k, node in enumerate(graph.nodes) if type(node.operation).__name__ == "Add"]
    assert adds and all(plan[k] == ("add_zplus", {}) for k in adds)


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn"])
def test_a_relative_bias_of_1e_12_in_every_ratio_fails_verify(monkeypatch, name):
    """Every ratio R_j / d_j of the engine 1e-12 too large (about 9e3 ulps a layer): within the
    old bound (about 3e-11 relative on the MLP, 1e-9 on the CNN), outside the per-neuron one."""
    original = kernel_runtime.stabilised_ratio
    monkeypatch.setattr(kernel_runtime, "stabilised_ratio", lambda *args, **kwargs: original(*args, **kwargs) * (1 + 1e-12))
    report = _verify(load_builtin(name))
    failed = _failed(report)
    assert "agreement" in failed["zplus"] and "agreement" in failed["deep-taylor"], failed


def test_a_wrong_batch_norm_placement_fails_verify(monkeypatch):
    """The engine keeps every BatchNorm as a ChannelAffine node instead of folding it; the
    reference decides where each batch norm folds from the nodes as given and refuses."""
    from lrp_num.engine import graph as graph_module
    from lrp_num.layers import BatchNorm, ChannelAffine

    def never_fold(nodes, output):
        return ([graph_module.Node(n.name, ChannelAffine.from_batchnorm(n.operation), n.inputs)
                 if isinstance(n.operation, BatchNorm) else n for n in nodes], {}, output)

    monkeypatch.setattr(graph_module, "_resolve_batch_norms", never_fold)
    model = load_builtin("digits-resnet")
    report = verify(model.network, model.test_images[:1], rules=("zplus",), composites=(),
                    targets=model.test_labels[:1].astype(int), input_domain=model.input_domain)
    assert not report.ok and "the engine folds batch norms as {}" in report.rows[0].error


def test_the_reference_folds_batch_norms_where_the_engine_does():
    from lrp_num.reference.backward import folds_by_definition

    network = load_builtin("digits-resnet").network
    assert folds_by_definition(network.source_nodes, network.input_name, network.source_output) \
        == dict(network.folded) != {}


@pytest.mark.parametrize("mutation", [
    lambda condition, layer, a, keywords: None,  # no fraction reported
    lambda condition, layer, a, keywords: np.ones(a.shape[0]),  # every root point "in the domain"
], ids=["not-reported", "always-inside"])
def test_a_wrong_root_point_report_fails_verify(monkeypatch, mutation):
    """The root-point comparison is required: a missing or wrong derived-condition fraction fails
    (z+ on the CNN has root points outside the orthant: the direct fraction is below 1)."""
    monkeypatch.setattr(engine_explain, "_root_point_validity", mutation)
    report = _verify(load_builtin("digits-cnn"), composites_=())
    assert _failed(report)["zplus"] == ["root points"]
