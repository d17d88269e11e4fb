"""Properties over random small transformers (:func:`lrp_num.testing.strategies.transformer_graphs`).

* the engine agrees with the mpmath reference within verify's rounding bound, node by node and at
  the input, and its forward pass within the forward bound (``lrp verify``'s checks, as
  ``lrp verify --model digits-vit`` runs them: :func:`lrp_num.verify.verify_method`), for the
  composites ``attnlrp`` and ``cplrp`` and the ``epsilon`` rule;
* conservation: sum_p R_p = f_c(x) up to what the rules absorb (the reference's balance) in float64,
  and exactly at high precision;
* the torch twin of a graph (hand-written attention or ``nn.MultiheadAttention``) imported with
  :func:`lrp_num.io.from_torch`, and its ONNX export read by :func:`lrp_num.io.onnx_import.load_onnx`,
  compute the same forward pass and the same relevance as the graph.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lrp_num.engine.explain import explain
from lrp_num.testing.strategies import transformer_graphs
from lrp_num.verify import verify_method

#: (name, kind) of what is verified: both transformer composites and one plain rule (the default
#: attention, norm and pointwise rules with epsilon on every linear layer)
METHODS = (("attnlrp", "composite"), ("cplrp", "composite"), ("epsilon", "rule"))

#: the known limitation of verify's relevance bound (see _exact_zero_degeneracies)
EXACT_ZERO = ("verify's relevance bound scales the engine's errors by the reference's exact values (|R_ij| / "
              "|R_j| and e_i / |a_i|): where an exact activation or relevance is 0 by cancellation (a token of "
              "equal features through LayerNorm with beta = 0; R_j / y_j equal along a norm row; a softmax row "
              "of equal scores, whose relevance sums to 0, when all keys are equal) but float64's is ~1e-15, the "
              "bound there is 0")


def _failed_checks(graph, x, name: str, kind: str) -> list[str]:
    row = verify_method(graph, x, name, kind, dps=30)
    assert row.error is None, row.error
    return [f"{check.name}: {check.detail}" for check in row.checks if check.required and not check.holds]


def _exact_zero_degeneracies(graph, x, name: str, kind: str) -> bool:
    """Whether the reference has an exact 0, an activation or the relevance at a node's output,
    where the float64 engine's value is not 0: the known limitation of verify's bound (EXACT_ZERO,
    test_exact_zeros_by_cancellation_are_within_the_bound)."""
    from lrp_num import reference
    from lrp_num.engine.explain import explain_details

    method = {"rule": name} if kind == "rule" else {"composite": name}
    targets = graph.forward(x).reshape(len(x), -1).argmax(axis=1)
    explanation = explain_details(graph, x, target=targets, keep_layers=True, **method)
    results = reference.explain_trace(graph, x, target=targets, dps=30, **method)
    trace = graph.forward_trace(x)
    layers = {layer.name: layer for layer in explanation.layers}
    for k, result in enumerate(results):
        for node, exact in result.activations.items():
            if node in trace and np.any((reference.to_float(exact) == 0) & (trace[node][k].ravel() != 0)):
                return True
        for node, exact in result.relevance_at.items():
            layer = layers.get(node)
            if layer is not None and layer.relevance_above is not None and np.any(
                    (reference.to_float(np.asarray(exact)) == 0)
                    & (np.asarray(layer.relevance_above[k]).ravel() != 0)):
                return True
    return False


@settings(max_examples=12)
@given(transformer_graphs(with_inputs=True), st.sampled_from(METHODS))
def test_engine_matches_reference_and_conserves(graph_and_x, method):
    graph, x = graph_and_x
    failed = _failed_checks(graph, x, *method)
    if failed and all(check.startswith("agreement") for check in failed):
        assume(not _exact_zero_degeneracies(graph, x, *method))  # the known limitation EXACT_ZERO
    assert not failed, "\n".join(failed)


def test_strategy_draws_every_variant():
    """The strategy's options reach each architecture element (a check of the strategy itself)."""
    seen = set()

    @settings(max_examples=60, derandomize=True, database=None)
    @given(transformer_graphs())
    def collect(graph):
        names = {type(node.operation).__name__ for node in graph.nodes}
        heads = {node.operation.heads for node in graph.nodes if type(node.operation).__name__ == "SplitHeads"}
        seen.update(names | {f"heads{h}" for h in heads} | {f"blocks{sum('.attn.out' in n.name for n in graph.nodes)}"})
        assert graph.input_shape[0] in range(2, 6) and graph.input_shape[1] in range(2, 9)

    collect()
    expected = {"LayerNorm", "RMSNorm", "GELU", "SiLU", "Tanh", "Sigmoid", "Multiply", "Add", "Softmax",
                "heads1", "heads2", "blocks1", "blocks2"}
    assert expected <= seen, expected - seen


@pytest.mark.parametrize("options, absent, present", [
    ({"norm": None, "gating": False, "activation": "tanh"}, {"LayerNorm", "RMSNorm", "Multiply", "GELU"}, {"Tanh"}),
    ({"norm": "rmsnorm", "gating": True, "skip": False}, {"LayerNorm", "Add"}, {"RMSNorm", "Multiply"}),
])
def test_strategy_options_are_obeyed(options, absent, present):
    @settings(max_examples=10, derandomize=True, database=None)
    @given(transformer_graphs(**options))
    def check(graph):
        names = {type(node.operation).__name__ for node in graph.nodes}
        assert not names & absent and present <= names

    check()


def test_float32_graphs_hold_float32_numbers():
    @settings(max_examples=5, derandomize=True, database=None)
    @given(transformer_graphs(dtype="float32", with_inputs=True))
    def check(graph_and_x):
        graph, x = graph_and_x
        for node in graph.nodes:
            for value in (getattr(node.operation, "weight", None), getattr(node.operation, "bias", None)):
                if value is not None:
                    assert np.array_equal(value.astype(np.float32).astype(np.float64), value)
        assert np.array_equal(x.astype(np.float32).astype(np.float64), x)

    check()


def test_values_are_zero_or_tame():
    """Every parameter and input is 0 or of magnitude TRANSFORMER_MIN_MAGNITUDE to 2, and zeros occur."""
    from lrp_num.testing.strategies import TRANSFORMER_MIN_MAGNITUDE

    zeros = []

    @settings(max_examples=10, derandomize=True, database=None)
    @given(transformer_graphs(with_inputs=True))
    def check(graph_and_x):
        graph, x = graph_and_x
        values = [x.ravel()] + [np.ravel(getattr(node.operation, name)) for node in graph.nodes
                                for name in ("weight", "bias") if getattr(node.operation, name, None) is not None]
        values = np.abs(np.concatenate(values))
        assert np.all((values == 0) | ((values >= TRANSFORMER_MIN_MAGNITUDE) & (values <= 2)))
        zeros.append(bool((values == 0).any()))

    check()
    assert any(zeros)


def test_strategy_refuses_unknown_options():
    with pytest.raises(ValueError, match="norm"):
        transformer_graphs(norm="batchnorm")
    with pytest.raises(ValueError, match="activation"):
        transformer_graphs(activation="relu")
    with pytest.raises(ValueError, match="dtype"):
        transformer_graphs(dtype="float16")


# -- torch and ONNX ----------------------------------------------------------------------------------

def _same_relevance(graph, imported, x, composite):
    expected = explain(graph, x, composite=composite)
    got = explain(imported, x, composite=composite)
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9 * scale)


@settings(max_examples=8)
@given(transformer_graphs(with_inputs=True), st.booleans(), st.sampled_from(["attnlrp", "cplrp"]))
def test_torch_import_gives_the_same_forward_and_relevance(graph_and_x, library_attention, composite):
    torch = pytest.importorskip("torch")
    from lrp_num.io import from_torch
    from transformer_twins import torch_twin

    graph, x = graph_and_x
    twin = torch_twin(graph, library_attention)
    with torch.no_grad():
        expected = twin(torch.tensor(x)).numpy()
    np.testing.assert_allclose(graph.forward(x), expected, rtol=1e-10, atol=1e-12)
    imported = from_torch(twin, graph.input_shape)
    np.testing.assert_allclose(imported.forward(x), expected, rtol=1e-10, atol=1e-12)
    _same_relevance(graph, imported, x, composite)


# torch's TorchScript exporter has no RMSNorm at opset 17 (aten::rms_norm): LayerNorm or none here
@settings(max_examples=6)
@given(transformer_graphs(with_inputs=True, norm=("layernorm", None)), st.sampled_from(["attnlrp", "cplrp"]))
def test_onnx_export_gives_the_same_forward_and_relevance(tmp_path_factory, graph_and_x, composite):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from lrp_num.io.onnx_import import load_onnx
    from transformer_twins import onnx_export, torch_twin

    graph, x = graph_and_x
    twin = torch_twin(graph, library_attention=False)
    path = tmp_path_factory.mktemp("onnx") / "transformer.onnx"
    path.write_bytes(onnx_export(twin, torch.tensor(x)))
    imported = load_onnx(path)
    graph = _with_float32_norm_eps(graph)
    np.testing.assert_allclose(imported.forward(x), graph.forward(x), rtol=1e-10, atol=1e-12)
    _same_relevance(graph, imported, x, composite)


def _with_float32_norm_eps(graph):
    """``graph`` with every LayerNorm's eps rounded to float32, as an ONNX file stores it (the
    attribute ``epsilon`` of LayerNormalization is a float32: 1e-5 becomes 9.99999974737875e-06,
    which moves a nearly constant token's output by ~1e-10)."""
    from lrp_num.engine.graph import Graph
    from lrp_num.layers import LayerNorm

    def rounded(operation):
        if not isinstance(operation, LayerNorm):
            return operation
        return LayerNorm(operation.weight, operation.bias, eps=float(np.float32(operation.eps)))

    return Graph([(node.name, rounded(node.operation), node.inputs) for node in graph.nodes],
                 input_shape=graph.input_shape)


# -- regression examples ----------------------------------------------------------------------------

def _norm_graph(head_weight):
    from lrp_num.engine.graph import Graph
    from lrp_num.layers import Dense, Flatten, LayerNorm, TokenDense

    norm = LayerNorm(np.array([-0.43, 0.5, 0.82]), np.array([0.0, 0.1, -0.2]))
    return Graph([("norm", norm, ("input",)), ("q", TokenDense(np.eye(3) * 0.7, np.zeros(3)), ("norm",)),
                  ("flatten", Flatten(), ("q",)), ("head", Dense(head_weight, np.zeros(2)), ("flatten",))],
                 input_shape=(2, 3))


@pytest.mark.parametrize("method", METHODS)
def test_layernorm_of_a_constant_row_stays_within_the_forward_bound(method):
    """A token of equal features: x_j - mu is 0 exactly, but float64's mu of (0.7, 0.7, 0.7) is one
    ulp off, and 1 / sqrt(eps) makes that ~1e-14 at the norm's output. The forward bound left the
    mean's rounding out (so verify failed a correct engine, and passed the error on as 0)."""
    head = np.array([[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2], [0.25, 0.3], [0.6, -0.1], [-0.2, 0.35]])
    x = np.array([[[0.7, 0.7, 0.7], [0.5, -1.64, 2.0]]])
    assert np.mean(x[0, 0]) != 0.7  # the premise: float64's mean is off
    failed = _failed_checks(_norm_graph(head), x, *method)
    assert not [check for check in failed if not check.startswith("agreement")], "\n".join(failed)




@pytest.mark.xfail(strict=True, reason=EXACT_ZERO)
def test_exact_zero_activation_by_cancellation_is_within_the_bound():
    """Known limitation (see EXACT_ZERO): a token of equal features makes the norm's output beta_0
    = 0 exactly, float64's ~1e-14 (its mean is one ulp off), so the head's relevance there is
    ~1e-15 where the reference's is 0 and the bound, e_i / |a_i| times |R_ij| = 0, is 0."""
    head = np.array([[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2], [0.25, 0.3], [0.6, -0.1], [-0.2, 0.35]])
    x = np.array([[[0.7, 0.7, 0.7], [0.5, -1.64, 2.0]]])
    failed = _failed_checks(_norm_graph(head), x, "cplrp", "composite")
    assert not failed, "\n".join(failed)


def test_forward_check_counts_an_error_where_the_bound_is_zero():
    """An engine value that differs from an exact activation whose bound is 0 fails the forward
    check (it was skipped as 0 / 0)."""
    from lrp_num import reference
    from lrp_num.verify import forward_error

    graph = _norm_graph(np.full((6, 2), 0.3))
    x = np.array([[[0.0, 0.0, 0.0], [0.5, -1.64, 2.0]]])  # token 0: norm output beta, q = 0.7 beta
    prepared = reference.prepare(graph, x.shape[1:], 30)
    result = reference.explain_trace(graph, x, composite="attnlrp", dps=30)[0]
    exact = {name: reference.to_float(a) for name, a in result.activations.items()}
    engine = {name: values.copy() for name, values in exact.items() if name != "input"}
    engine["q"][0] = 1e-300  # exact 0.7 * beta_0 = 0, bound 0
    over: list = []
    forward_error(prepared, exact, engine, over, {})
    assert max(over) == np.inf
    over = []
    forward_error(prepared, exact, {name: values.copy() for name, values in exact.items() if name != "input"},
                  over, {})
    assert max(over) <= 1


def test_onnx_import_reads_torchs_attention_export():
    """torch.onnx.export of hand-written attention writes each bias as Add(bias, x @ W), the
    constant first (the import failed with NumPy's "truth value of an array" ValueError), and the
    keys' head split with K^T as one Transpose perm (0, 2, 3, 1) (refused)."""
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    from lrp_num.engine.graph import Graph
    from lrp_num.io.onnx_import import load_onnx
    from lrp_num.layers import Dense, Flatten
    from lrp_num.layers.attention import multi_head_attention
    from transformer_twins import onnx_export, torch_twin

    rng = np.random.default_rng(0)
    pairs = [(rng.uniform(-1, 1, (4, 4)), rng.uniform(-0.5, 0.5, 4)) for _ in range(4)]
    nodes, out = multi_head_attention("block0.attn", "input", 2, *pairs)
    graph = Graph(nodes + [("flatten", Flatten(), (out,)), ("head", Dense(rng.uniform(-1, 1, (12, 2))), ("flatten",))],
                  input_shape=(3, 4))
    x = rng.uniform(-2, 2, (2, 3, 4))
    data = onnx_export(torch_twin(graph, library_attention=False), torch.tensor(x))
    types = [node.op_type for node in onnx.load_from_string(data).graph.node]
    assert "Transpose" in types  # the premise: the exporter's own graph
    imported = load_onnx(_written(data))
    assert [type(node.operation).__name__ for node in imported.nodes].count("SplitHeads") == 3
    np.testing.assert_allclose(imported.forward(x), graph.forward(x), rtol=1e-12, atol=1e-13)
    _same_relevance(graph, imported, x, "attnlrp")


def _written(data: bytes):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "attention.onnx"
    path.write_bytes(data)
    return path


def test_conservation_threshold_counts_the_rounding_of_the_comparison():
    """cplrp on a random transformer: 7.9e-5 of relevance reaches the input, 0.70002 is kept, and
    |sum R - f_c(x)| in float64 is one ulp of 0.7 above |kept| while every other rounding term is
    ~1e-18: the threshold must count the float64 difference and |kept|'s own rounding."""
    import mpmath

    from lrp_num.verify import conservation_threshold

    with mpmath.workdps(40):
        kept = mpmath.mpf("0.700018970970434350123750477597094619195")
        top = mpmath.mpf("0.6999397416508187145290234117872840619969")
    engine, top_float64 = np.array([-7.922931961563558e-05]), 0.6999397416508187
    absorbed, rounding = conservation_threshold(kept, np.array([2.2799060711954103e-18]), engine,
                                                top_float64, top)
    violation = abs(engine.sum() - top_float64)
    assert violation > absorbed  # the premise: one ulp above
    assert violation - absorbed <= rounding
