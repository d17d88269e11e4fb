"""CP-LRP's matrix product with one factor held constant (matmul_cp): its derivation, its kernel
against the mpmath reference, how the engine finds the constant factor in a graph, and the cplrp
composite on digits-vit against the reference."""

from __future__ import annotations

import dataclasses

import mpmath
import numpy as np
import pytest

from lrp_num import reference
from lrp_num._generated import matmul_cp, matmul_epsilon
from lrp_num.engine import attention_rules
from lrp_num.engine.composites import LayerRule, get_composite
from lrp_num.engine.explain import explain, explain_details
from lrp_num.engine.graph import Graph
from lrp_num.errors import GraphError
from lrp_num.layers import Dense, Flatten, MatMul, Softmax, TokenDense
from lrp_num.reference import attention as ref_attention
from lrp_num.reference.linear import to_mpf
from lrp_num.reference.node_rules import LayerTrace
from lrp_sym.proofs import Status

DIGITS = 50


def test_derivation_statuses_and_derived_shares():
    from lrp_sym.registry import load_declarations

    derivation = load_declarations()["matmul_cp"].derive()
    assert {proof.name: proof.status for proof in derivation.proofs} == {
        "absorbed": Status.PROVED, "conservation_eps_zero": Status.PROVED, "conservation": Status.REFUTED,
        "held_receives_nothing": Status.PROVED, "same_total_as_uniform": Status.PROVED}
    assert derivation.as_expected
    assert derivation.proof("conservation").counterexample
    # the shares come out of the Taylor expansion in the free factor, (0, 1) with A held, (1, 0) with B
    assert (derivation.results["share_first"], derivation.results["share_second"]) == (0, 1)
    held_second = dataclasses.replace(load_declarations()["matmul_cp"], held="second").derive()
    assert (held_second.results["share_first"], held_second.results["share_second"]) == (1, 0)
    assert held_second.as_expected
    with pytest.raises(ValueError, match="held"):
        dataclasses.replace(load_declarations()["matmul_cp"], held="both").derive()


def _reference(operation, inputs, upper, epsilon, softmax_inputs):
    trace = LayerTrace(0, repr(operation), "matmul_cp")
    with mpmath.workdps(DIGITS):
        lower = ref_attention.relevance(operation, "matmul_cp", {"epsilon": epsilon},
                                        [to_mpf(a.ravel()) for a in inputs], [a.shape for a in inputs],
                                        to_mpf(upper.ravel()), trace, softmax_inputs)
    return [np.array([float(v) for v in r]).reshape(a.shape) for r, a in zip(lower, inputs)], trace


@pytest.mark.parametrize("transpose_b, scale", [(False, 1.0), (True, 0.5)])
def test_kernel_matches_reference_and_gives_the_constant_nothing(transpose_b, scale):
    rng = np.random.default_rng(4)
    a = rng.normal(size=(2, 3, 4))
    b = rng.normal(size=(2, 5, 4) if transpose_b else (2, 4, 5))
    layer = MatMul(transpose_b=transpose_b, scale=scale)
    upper = rng.normal(size=(2, 3, 5))
    epsilon = 0.1
    ra, rb = matmul_cp.relevance(a[None] * scale, b[None], upper[None], epsilon=epsilon, transpose_b=transpose_b)
    (ea, eb), trace = _reference(layer, [a, b], upper, epsilon, (0,))
    assert not ra.any() and not ea.any()
    np.testing.assert_allclose(rb[0], eb, rtol=1e-11, atol=1e-13)
    # the stabiliser absorbs what matmul_epsilon's does: the same total passes, split otherwise
    c = layer(a[None], b[None])[0]
    absorbed = (epsilon * np.where(c >= 0, 1, -1) / (c + epsilon * np.where(c >= 0, 1, -1)) * upper).sum()
    np.testing.assert_allclose(rb.sum() + absorbed, upper.sum(), rtol=1e-12)
    assert abs(float(trace.absorbed_stabiliser) - absorbed) < 1e-12
    uniform = matmul_epsilon.relevance(a[None] * scale, b[None], upper[None], epsilon=epsilon, transpose_b=transpose_b)
    np.testing.assert_allclose(sum(r.sum() for r in uniform), rb.sum(), rtol=1e-12)
    assert np.abs(uniform[1] - rb).max() > 1e-3


@pytest.mark.parametrize("transpose_b", [False, True])
def test_engine_holds_the_second_factor_through_the_transposed_product(transpose_b):
    """C = V^T A^T style: the constant factor second; apply() runs the kernel on C^T."""
    rng = np.random.default_rng(7)
    a = rng.normal(size=(2, 3, 4))
    b = rng.normal(size=(2, 5, 4) if transpose_b else (2, 4, 5))
    upper = rng.normal(size=(2, 3, 5))
    layer = MatMul(transpose_b=transpose_b, scale=0.5)
    ra, rb = attention_rules.apply(layer, [a[None], b[None]], upper[None], matmul_cp.relevance,
                                   {"epsilon": 0.1}, (1,), matmul_cp.HELD)
    (ea, eb), _ = _reference(layer, [a, b], upper, 0.1, (1,))
    assert not rb.any() and not eb.any()
    np.testing.assert_allclose(ra[0], ea, rtol=1e-11, atol=1e-13)


def _attention(order=("attention", "v")):
    """tokens (4, 6) -> q, k -> A = softmax(q k^T / 2); the context A v (A the first factor), or
    u A^T with u = tokens W (4, 4) (A the second factor) -> a dense head."""
    rng = np.random.default_rng(0)
    pair = lambda n, m: (rng.normal(size=(n, m)) * 0.5, rng.normal(size=m) * 0.1)  # noqa: E731
    nodes = [(name, TokenDense(*pair(6, 6)), ("input",)) for name in ("q", "k")]
    nodes += [("scores", MatMul(transpose_b=True, scale=0.5), ("q", "k")),
              ("attention", Softmax(axis=-1), ("scores",))]
    if order == ("attention", "v"):
        nodes += [("v", TokenDense(*pair(6, 6)), ("input",)), ("context", MatMul(), ("attention", "v"))]
        width = 24
    else:
        nodes += [("u", TokenDense(*pair(6, 4)), ("input",)),
                  ("context", MatMul(transpose_b=True), ("u", "attention"))]
        width = 16
    nodes += [("flat", Flatten(), ("context",)), ("head", Dense(*pair(width, 3)), ("flat",))]
    return Graph(nodes, input_shape=(4, 6)), rng.normal(size=(2, 4, 6))


@pytest.mark.parametrize("order", [("attention", "v"), ("v", "attention")])
def test_cplrp_finds_the_attention_weights_from_the_graph(order):
    graph, x = _attention(order)
    explanation = explain_details(graph, x, composite="cplrp", target=0)
    expected = np.asarray(reference.explain(graph, x, composite="cplrp", target=0, dps=30), float)
    np.testing.assert_allclose(explanation.relevance, expected, rtol=1e-10, atol=1e-13)
    by_name = {report.name: report for report in explanation.layers}
    for name in ("q", "k", "scores", "attention"):  # everything computing A receives nothing
        assert not by_name[name].relevance_in.any(), name
    assert by_name["context"].rule == "matmul_cp"
    # conservative at eps -> 0 up to the stabiliser: the context passes all but eps / (|C| + eps)
    np.testing.assert_allclose(by_name["context"].relevance_in, by_name["context"].relevance_out, rtol=1e-5)
    plan = attention_rules.hold_constants(graph, get_composite("cplrp").plan_graph(graph, False),
                                          lambda choice: "first" if choice.rule == "matmul_cp" else None)
    constant = {graph.nodes[k].name: rule.constant_inputs for k, rule in plan.items() if rule.constant_inputs}
    assert constant == {"scores": (0, 1), "context": (0,) if order == ("attention", "v") else (1,)}


def test_a_product_without_attention_weights_is_ambiguous():
    rng = np.random.default_rng(1)
    graph = Graph([("a", TokenDense(rng.normal(size=(3, 3)), None), ("input",)),
                   ("product", MatMul(transpose_b=True), ("a", "input")),
                   ("flat", Flatten(), ("product",)), ("head", Dense(rng.normal(size=(4, 2)), None), ("flat",))],
                  input_shape=(2, 3))
    x = rng.normal(size=(1, 2, 3))
    with pytest.raises(GraphError, match="neither input .* Softmax"):
        explain(graph, x, composite="cplrp", target=0)
    with pytest.raises(GraphError, match="neither input is produced by a Softmax"):
        reference.explain(graph, x, composite="cplrp", target=0, dps=20)
    # a node rule resolves it
    chosen = dataclasses.replace(get_composite("cplrp"), node_rules={"product": LayerRule("matmul_epsilon")})
    assert np.isfinite(explain(graph, x, composite=chosen, target=0)).all()


def test_cplrp_on_digits_vit_matches_the_reference():
    import lrp_num

    model = lrp_num.load_builtin("digits-vit")
    x = model.test_images[:1].astype(np.float64)
    ours = explain_details(model.network, x, composite="cplrp")
    expected = np.asarray(reference.explain(model.network, x, composite="cplrp", dps=20,
                                            input_domain=model.input_domain), float)
    np.testing.assert_allclose(ours.relevance, expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())
    attnlrp = explain(model.network, x, composite="attnlrp")
    assert np.abs(attnlrp - ours.relevance).max() > 1e-3  # a different composite, not attnlrp renamed
    by_name = {report.name: report for report in ours.layers}
    assert not by_name["blocks.0.attn.q"].relevance_in.any()
    assert by_name["blocks.0.attn.context"].relevance_in.sum() > 0


@pytest.mark.parametrize("order", [("attention", "v"), ("v", "attention")])
def test_torch_backend_holds_the_same_factor(order):
    torch = pytest.importorskip("torch")
    graph, x = _attention(order)
    expected = explain(graph, x, composite="cplrp", target=1)
    got = explain(graph, torch.tensor(x), composite="cplrp", target=1)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-14)


def test_verify_passes_and_catches_a_mutated_kernel(monkeypatch):
    """lrp verify's rounding bound through matmul_cp (share 1 to the free factor) holds, and is
    tight enough to see the kernel off by 1e-9 (relative)."""
    from lrp_num.engine import explain as engine_explain
    from lrp_num.verify import verify

    graph, x = _attention()
    report = verify(graph, x, rules=(), composites=("cplrp",))
    assert all(row.ok for row in report.rows), report
    original = matmul_cp.relevance
    engine_explain._kernel_of.cache_clear()
    monkeypatch.setattr(matmul_cp, "relevance",
                        lambda *args, **kwargs: tuple(r * (1 + 1e-9) for r in original(*args, **kwargs)))
    try:
        report = verify(graph, x, rules=(), composites=("cplrp",))
    finally:
        monkeypatch.undo()
        engine_explain._kernel_of.cache_clear()
    failed = {check.name for check in report.rows[0].checks if check.required and not check.holds}
    assert "agreement" in failed, report.rows[0]
