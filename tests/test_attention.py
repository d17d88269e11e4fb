"""Attention: derivations (softmax, products, matrix products), kernels vs the mpmath reference,
conservation and what is absorbed, the layers, the multi-head block, model files, verify."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import mpmath
import numpy as np
import pytest

from lrp_num import reference
from lrp_num._generated import matmul_epsilon, product_uniform, softmax
from lrp_num.engine.composites import LayerRule, get_composite
from lrp_num.engine.explain import explain, explain_details
from lrp_num.engine.graph import Graph
from lrp_num.errors import GraphError, ShapeError, UnknownRuleError, ZeroDenominatorError
from lrp_num.io.model_io import load_npz, save_npz
from lrp_num.layers import (Dense, Flatten, MatMul, MergeHeads, Multiply, Softmax, SplitHeads,
                            TokenDense)
from lrp_num.layers.attention import multi_head_attention
from lrp_num.reference import attention as ref_attention
from lrp_num.reference.linear import to_mpf
from lrp_num.reference.node_rules import LayerTrace
from lrp_sym.proofs import Status

DIGITS = 50


# -- derivations ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def declarations():
    from lrp_sym.registry import load_declarations

    return load_declarations()


@pytest.mark.parametrize("name, statuses", [
    ("softmax", {"tangent_is_closed_form": Status.PROVED, "root_zero_is_closed_form": Status.REFUTED,
                 "gradient_sums_to_zero": Status.PROVED, "bias_absorbs": Status.PROVED,
                 "conservation": Status.REFUTED}),
    ("product_uniform", {"shapley_values": Status.PROVED, "conservation": Status.PROVED,
                         "uniform": Status.PROVED, "gradient_input_conserves": Status.REFUTED}),
    ("matmul_epsilon", {"absorbed": Status.PROVED, "conservation_eps_zero": Status.PROVED,
                        "conservation": Status.REFUTED}),
])
def test_derivation_statuses(declarations, name, statuses):
    derivation = declarations[name].derive()
    assert {proof.name: proof.status for proof in derivation.proofs} == statuses
    assert derivation.as_expected
    for proof in derivation.proofs:
        if proof.status is Status.REFUTED:
            assert proof.counterexample  # a refutation names its witness


def test_softmax_refutation_is_a_real_counterexample(declarations):
    """The witness of the refuted root-0 identity: the two rules differ there, at 50 digits."""
    proof = declarations["softmax"].derive().proof("root_zero_is_closed_form")
    witness = proof.counterexample
    with mpmath.workdps(DIGITS):
        exact = lambda text: mpmath.mpf(Fraction(text).numerator) / Fraction(text).denominator  # noqa: E731
        x = np.array([exact(witness[f"x[{k}]"]) for k in (1, 2)])
        relevance = np.array([exact(witness[f"R[{k}]"]) for k in (1, 2)])
        s = [mpmath.exp(v) / mpmath.fsum(mpmath.exp(u) for u in x) for v in x]
        c = relevance / np.array(s)
        tangent = [x[i] * (relevance[i] - s[i] * mpmath.fsum(relevance)) for i in range(2)]
        at_root = [x[i] * (c[i] / 2 - mpmath.fsum(c) / 4) for i in range(2)]  # gradient at 0, n = 2
    assert any(abs(a - b) > 1e-3 for a, b in zip(tangent, at_root))


# -- kernels against the mpmath reference ---------------------------------------------------------

def _reference(operation, rule, inputs, upper, parameters=None):
    trace = LayerTrace(0, repr(operation), rule)
    shapes = [a.shape for a in inputs]
    with mpmath.workdps(DIGITS):
        lower = ref_attention.relevance(operation, rule, parameters or {}, [to_mpf(a.ravel()) for a in inputs],
                                        shapes, to_mpf(upper.ravel()), trace)
    return [np.array([float(v) for v in r]).reshape(a.shape) for r, a in zip(lower, inputs)], trace


@pytest.mark.parametrize("axis", [-1, 1, 2])
def test_softmax_kernel_matches_reference(axis):
    rng = np.random.default_rng(1)
    x, upper = rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 4, 5))
    layer = Softmax(axis=axis)
    engine = softmax.relevance(x[None], upper[None], axis=layer.batch_axis(3))[0]
    (expected,), trace = _reference(layer, "softmax", [x], upper)
    np.testing.assert_allclose(engine, expected, rtol=1e-12, atol=1e-14)
    # what is passed plus the bias the reference records is everything that arrived
    assert abs(float(trace.absorbed_bias) + expected.sum() - upper.sum()) < 1e-12


def test_softmax_absorbs_the_derived_bias():
    """sum_i R_i + sum_j R_j (1 - x_j + sum_k s_k x_k) = sum_j R_j (bias_absorbs), per row."""
    rng = np.random.default_rng(2)
    x, upper = rng.normal(size=(2, 7)) * 3, rng.normal(size=(2, 7))
    lower = softmax.relevance(x, upper, axis=-1)
    s = softmax.softmax(x, -1)
    weighted = (s * x).sum(axis=-1, keepdims=True)
    bias = (upper * (1 - x + weighted)).sum(axis=-1)
    np.testing.assert_allclose(lower.sum(axis=-1) + bias, upper.sum(axis=-1), rtol=1e-13)
    assert np.all(np.abs(lower.sum(axis=-1) - upper.sum(axis=-1)) > 1e-3)  # not conservative
    # shifting every logit changes each R_i but not their sum (gradient_sums_to_zero)
    shifted = softmax.relevance(x + 5.0, upper, axis=-1)
    assert np.abs(shifted - lower).max() > 1e-3
    np.testing.assert_allclose(shifted.sum(axis=-1), lower.sum(axis=-1), rtol=1e-12, atol=1e-12)


def test_product_kernel_is_uniform_and_conservative():
    rng = np.random.default_rng(3)
    a, b, upper = (rng.normal(size=(4, 6)) for _ in range(3))
    ra, rb = product_uniform.relevance(a, b, upper)
    assert np.array_equal(ra + rb, upper)  # exact: R / 2 + R / 2
    (ea, eb), _ = _reference(Multiply(), "product_uniform", [a, b], upper)
    np.testing.assert_allclose(ra, ea, rtol=1e-15)
    np.testing.assert_allclose(rb, eb, rtol=1e-15)


@pytest.mark.parametrize("transpose_b, scale", [(False, 1.0), (True, 0.5)])
def test_matmul_kernel_matches_reference(transpose_b, scale):
    rng = np.random.default_rng(4)
    a = rng.normal(size=(2, 3, 4))
    b = rng.normal(size=(2, 5, 4) if transpose_b else (2, 4, 5))
    layer = MatMul(transpose_b=transpose_b, scale=scale)
    upper = rng.normal(size=(2, 3, 5))
    epsilon = 0.1
    ra, rb = matmul_epsilon.relevance(a[None] * scale, b[None], upper[None], epsilon=epsilon,
                                      transpose_b=transpose_b)
    (ea, eb), trace = _reference(layer, "matmul_epsilon", [a, b], upper, {"epsilon": epsilon})
    np.testing.assert_allclose(ra[0], ea, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(rb[0], eb, rtol=1e-11, atol=1e-13)
    # the stabiliser absorbs eps sign(C) / (C + eps sign(C)) R per entry, nothing else is lost
    c = layer(a[None], b[None])[0]
    d = c + epsilon * np.where(c >= 0, 1, -1)
    absorbed = (epsilon * np.where(c >= 0, 1, -1) / d * upper).sum()
    np.testing.assert_allclose(ra.sum() + rb.sum() + absorbed, upper.sum(), rtol=1e-12)
    assert abs(float(trace.absorbed_stabiliser) - absorbed) < 1e-12


def test_matmul_kernel_refuses_a_zero_entry_without_epsilon():
    a, b = np.zeros((1, 2, 2)), np.ones((1, 2, 2))
    with pytest.raises(ZeroDenominatorError):
        matmul_epsilon.relevance(a, b, np.ones((1, 2, 2)), epsilon=0.0)
    ra, rb = matmul_epsilon.relevance(a, b, np.zeros((1, 2, 2)), epsilon=0.0)
    assert not ra.any() and not rb.any()


# -- layers and the block ---------------------------------------------------------------------------

def _block(seed=0, tokens=4, width=6, heads=2, classes=3):
    rng = np.random.default_rng(seed)
    pair = lambda n_in, n_out: (rng.normal(size=(n_in, n_out)) / np.sqrt(n_in),  # noqa: E731
                                rng.normal(size=n_out) * 0.1)
    nodes, out = multi_head_attention("mha", "input", heads, pair(width, width), pair(width, width),
                                      pair(width, width), pair(width, width))
    gate = TokenDense(*pair(width, width))
    nodes += [("gate", gate, ("input",)), ("gated", Multiply(), (out, "gate")),
              ("flat", Flatten(), ("gated",)), ("head", Dense(*pair(tokens * width, classes)), ("flat",))]
    return Graph(nodes, input_shape=(tokens, width)), rng.normal(size=(3, tokens, width))


def test_layer_forward_passes():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 3, 4))
    s = Softmax(axis=-1)(x)
    np.testing.assert_allclose(s, np.exp(x) / np.exp(x).sum(axis=-1, keepdims=True), rtol=1e-14)
    q, k = rng.normal(size=(2, 2, 3, 4)), rng.normal(size=(2, 2, 5, 4))
    np.testing.assert_allclose(MatMul(transpose_b=True, scale=0.5)(q, k), 0.5 * q @ np.swapaxes(k, -1, -2))
    heads = SplitHeads(2)(rng.normal(size=(2, 3, 4)))
    assert heads.shape == (2, 2, 3, 2)
    np.testing.assert_array_equal(MergeHeads()(heads), MergeHeads()(SplitHeads(2)(MergeHeads()(heads))))
    dense = TokenDense(rng.normal(size=(4, 5)), rng.normal(size=5))
    np.testing.assert_allclose(dense(x), x @ dense.weight + dense.bias)


@pytest.mark.parametrize("make", [lambda: Softmax(axis=0), lambda: MatMul(scale=0.0),
                                  lambda: MatMul(scale=float("nan")), lambda: SplitHeads(0)])
def test_bad_layer_arguments(make):
    with pytest.raises(ShapeError):
        make()


def test_bad_graph_shapes():
    with pytest.raises(GraphError, match="inner sizes"):
        Graph([("m", MatMul(), ("input", "input"))], input_shape=(3, 4))
    with pytest.raises(GraphError, match="takes 2"):
        Graph([("m", Multiply(), ("input",))], input_shape=(3, 4))


def test_block_engine_matches_reference_and_absorbs_what_is_proved():
    graph, x = _block()
    explanation = explain_details(graph, x, composite="attnlrp", target=0)
    expected = np.asarray(reference.explain(graph, x, composite="attnlrp", target=0, dps=DIGITS), float)
    np.testing.assert_allclose(explanation.relevance, expected, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(graph.forward(x), np.asarray(reference.forward(graph, x, dps=DIGITS), float),
                               rtol=1e-13)
    by_name = {report.name: report for report in explanation.layers}
    assert by_name["gated"].rule == "product_uniform"
    np.testing.assert_allclose(by_name["gated"].relevance_in, by_name["gated"].relevance_out, rtol=1e-14)
    assert by_name["mha.attention"].rule == "softmax"
    assert by_name["mha.scores"].rule == by_name["mha.context"].rule == "matmul_epsilon"


def test_rules_chosen_per_node_and_per_composite():
    graph, x = _block()
    base = get_composite("attnlrp")
    chosen = dataclasses.replace(base, node_rules={"mha.context": LayerRule("matmul_epsilon", {"epsilon": 0.5})})
    plain, changed = explain(graph, x, composite=base, target=0), explain(graph, x, composite=chosen, target=0)
    assert np.abs(plain - changed).max() > 1e-6
    np.testing.assert_allclose(changed, np.asarray(reference.explain(graph, x, composite=chosen, target=0), float),
                               rtol=1e-10,
                               atol=1e-13)
    wrong = dataclasses.replace(base, node_rules={"mha.attention": LayerRule("product_uniform")})
    with pytest.raises(UnknownRuleError, match="softmax"):
        explain(graph, x, composite=wrong, target=0)
    with pytest.raises(UnknownRuleError):
        reference.explain(graph, x, composite=wrong, target=0)


def test_model_file_round_trip(tmp_path):
    graph, x = _block()
    path = tmp_path / "attention.npz"
    save_npz(graph, path)
    loaded = load_npz(path).network
    assert [type(n.operation) for n in loaded.nodes] == [type(n.operation) for n in graph.nodes]
    np.testing.assert_array_equal(loaded.forward(x), graph.forward(x))
    np.testing.assert_array_equal(explain(loaded, x, composite="attnlrp"), explain(graph, x, composite="attnlrp"))


def test_verify_passes_on_the_block():
    from lrp_num.verify import verify

    graph, x = _block()
    report = verify(graph, x[:2], rules=("epsilon", "lrp0"), composites=("attnlrp",))
    assert all(row.ok for row in report.rows), report


def test_torch_backend_runs_the_block():
    torch = pytest.importorskip("torch")
    graph, x = _block()
    expected = explain(graph, x, composite="attnlrp", target=1)
    got = explain(graph, torch.tensor(x), composite="attnlrp", target=1)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kernel, name", [(softmax, "softmax"), (matmul_epsilon, "matmul_epsilon"),
                                          (product_uniform, "product_uniform")])
def test_verify_catches_a_mutated_attention_kernel(monkeypatch, kernel, name):
    """A kernel off by 1e-9 (relative) fails lrp verify's agreement check: the rounding bounds
    through the attention nodes are tight enough to see it."""
    from lrp_num.engine import explain as engine_explain
    from lrp_num.verify import verify

    original = kernel.relevance

    def mutated(*args, **kwargs):
        out = original(*args, **kwargs)
        return tuple(r * (1 + 1e-9) for r in out) if isinstance(out, tuple) else out * (1 + 1e-9)

    graph, x = _block()
    engine_explain._kernel_of.cache_clear()
    monkeypatch.setattr(kernel, "relevance", mutated)
    try:
        report = verify(graph, x[:2], rules=(), composites=("attnlrp",))
    finally:
        monkeypatch.undo()
        engine_explain._kernel_of.cache_clear()
    failed = {check.name for check in report.rows[0].checks if check.required and not check.holds}
    assert "agreement" in failed, report.rows[0]
