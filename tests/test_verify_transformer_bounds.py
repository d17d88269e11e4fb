"""lrp verify's rounding bounds through a vision transformer are tight enough to fail.

The relevance bound of :func:`lrp_num.verify.rounding_bound` starts from the forward errors the
engine actually made (each checked against its local first-order bound) and the agreement check
compares every node's relevance with the reference, so that an error of one part in 1e9 in any of
the transformer's kernels (LayerNorm's norm_cp / norm_full, GELU's identity / Taylor rule, softmax,
the attention's matrix products) makes ``lrp verify`` on digits-vit fail, while the unmutated
engine passes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lrp_num import reference
from lrp_num.reference import composites as reference_composites
from lrp_num._generated import (identity_nonlinear, matmul_epsilon, norm_cp, norm_full, product_uniform,
                                softmax, taylor_nonlinear)
from lrp_num.engine import composites
from lrp_num.engine import explain as engine_explain
from lrp_num.engine.composites import LayerRule
from lrp_num.engine.graph import Graph
from lrp_num.layers import Dense, Flatten, Multiply, TokenDense
from lrp_num.verify import _engine_activations, forward_error, verify

#: AttnLRP with the other rules of the element-wise and normalisation nodes: the Taylor rule at
#: GELU and the full linearisation of LayerNorm, so that their kernels are checked too
TAYLOR_FULL = dataclasses.replace(composites.COMPOSITES["attnlrp"], name="attnlrp-taylor-full",
                                  pointwise=LayerRule("taylor_nonlinear"), norm=LayerRule("norm_full"))
#: the same composite as the reference restates it
TAYLOR_FULL_DEFINITION = dataclasses.replace(reference_composites.COMPOSITE_DEFINITIONS["attnlrp"],
                                             name=TAYLOR_FULL.name, pointwise=("taylor_nonlinear", {}),
                                             norm=("norm_full", {}))


@pytest.fixture(scope="module")
def digits_vit():
    from lrp_num.commands.common import load_model
    from lrp_num.commands.verify import verify_batch

    model = load_model("digits-vit")
    x, targets = verify_batch("digits-vit", model, 1)
    return model.network, x, targets


def _verify(graph, x, targets, composite, monkeypatch, kernel=None):
    """lrp verify's row for ``composite``, with ``kernel``'s relevance off by 1e-9 (relative)."""
    monkeypatch.setitem(composites.COMPOSITES, TAYLOR_FULL.name, TAYLOR_FULL)
    monkeypatch.setitem(reference_composites.COMPOSITE_DEFINITIONS, TAYLOR_FULL.name, TAYLOR_FULL_DEFINITION)
    if kernel is not None:
        original = kernel.relevance

        def mutated(*args, **kwargs):
            out = original(*args, **kwargs)
            return tuple(r * (1 + 1e-9) for r in out) if isinstance(out, tuple) else out * (1 + 1e-9)

        monkeypatch.setattr(kernel, "relevance", mutated)
    engine_explain._kernel_of.cache_clear()
    try:
        report = verify(graph, x, targets=targets, rules=(), composites=(composite,), dps=30)
    finally:
        monkeypatch.undo()
        engine_explain._kernel_of.cache_clear()
    return report.rows[0]


def _failed(row) -> set[str]:
    return {check.name for check in row.checks if check.required and not check.holds}


@pytest.mark.parametrize("composite", ["attnlrp", TAYLOR_FULL.name])
def test_unmutated_digits_vit_passes_with_a_tight_bound(digits_vit, monkeypatch, composite):
    """The engine passes, and its error is a visible fraction of the bound (not 1e-18 of it)."""
    row = _verify(*digits_vit, composite, monkeypatch)
    assert row.error is None and not _failed(row), (row.error, row.checks)
    assert 1e-4 < row.max_error_over_bound <= 1.0
    assert 0.0 < row.forward_over_bound <= 1.0


@pytest.mark.parametrize("kernel, composite", [
    (norm_cp, "attnlrp"), (identity_nonlinear, "attnlrp"), (softmax, "attnlrp"), (matmul_epsilon, "attnlrp"),
    (norm_full, TAYLOR_FULL.name), (taylor_nonlinear, TAYLOR_FULL.name)],
    ids=lambda value: getattr(value, "__name__", str(value)).rsplit(".", 1)[-1])
def test_verify_catches_a_transformer_kernel_off_by_1e9(digits_vit, monkeypatch, kernel, composite):
    row = _verify(*digits_vit, composite, monkeypatch, kernel)
    assert row.error is None, row.error
    assert "agreement" in _failed(row), row.checks


def _gated_block(seed=3):
    """digits-vit has no element-wise product: a small token gate a * b feeding a head."""
    rng = np.random.default_rng(seed)
    pair = lambda n_in, n_out: (rng.normal(size=(n_in, n_out)) / np.sqrt(n_in), rng.normal(size=n_out) * 0.1)  # noqa: E731
    nodes = [("left", TokenDense(*pair(6, 6)), ("input",)), ("right", TokenDense(*pair(6, 6)), ("input",)),
             ("gated", Multiply(), ("left", "right")), ("flat", Flatten(), ("gated",)),
             ("head", Dense(*pair(24, 3)), ("flat",))]
    return Graph(nodes, input_shape=(4, 6)), rng.normal(size=(1, 4, 6))


def test_verify_catches_the_product_kernel_off_by_1e9(monkeypatch):
    graph, x = _gated_block()
    assert not _failed(_verify(graph, x, None, "attnlrp", monkeypatch))
    assert "agreement" in _failed(_verify(graph, x, None, "attnlrp", monkeypatch, product_uniform))


def test_forward_check_fails_for_a_wrong_forward_node(digits_vit):
    """Each node's measured forward error is checked against its local bound: a LayerNorm output off
    by 1e-12 (relative) in the engine's trace exceeds it."""
    graph, x, targets = digits_vit
    prepared = reference.prepare(graph, x.shape[1:], 30)
    result = reference.explain_trace(graph, x, target=targets, dps=30, composite="attnlrp")[0]
    exact = {name: reference.to_float(a) for name, a in result.activations.items()}
    engine = {name: values[0] for name, values in _engine_activations(graph, x, prepared).items()}
    over = []
    forward_error(prepared, exact, engine, over)
    assert 0.0 < max(over) <= 1.0
    engine["blocks.1.norm1"] = engine["blocks.1.norm1"] * (1 + 1e-12)
    over = []
    forward_error(prepared, exact, engine, over)
    assert max(over) > 1.0
