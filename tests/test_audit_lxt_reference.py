"""lrp audit --library lxt against the mpmath reference, node by node (lrp_num.audit.lxt_reference).

Needs torch and LXT (``pip install --no-deps lxt==2.1``); skipped cleanly without them. One sample
of digits-vit at 20 digits keeps each reference run to a few seconds.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lxt")

from lrp_num.audit.lxt_audit import audit_lxt, render_table  # noqa: E402
from lrp_num.io.torch_vit import load_digits_vit_torch  # noqa: E402

DPS = 20


@pytest.fixture(scope="module")
def digits():
    model, extras = load_digits_vit_torch(dtype=torch.float64)
    return model, extras["test_images"][:1].astype(np.float64)


@pytest.mark.parametrize("variant", ["attnlrp", "attnlrp-efficient"])
def test_correct_lxt_matches_the_reference_at_every_node(digits, variant):
    model, x = digits
    audit = audit_lxt(model, x, variant=variant, dps=DPS)
    comparison = audit.reference
    assert comparison.verdict == "matches" and audit.exit_status == 0, render_table(audit)
    compared = {row.graph_tensor for row in comparison.tensors}
    # every kind of op's input: softmax, both products, norms, GELU, linear maps, the input
    assert {"input", "tokens", "blocks.0.attn.scores", "blocks.0.attn.attention", "blocks.0.attn.v_heads",
            "blocks.1.attn.q_heads", "blocks.1.attn.k_heads", "blocks.1.norm2", "blocks.1.mlp.fc1",
            "blocks.1.mlp.act", "norm"} <= compared
    assert comparison.conventions  # LXT's convention differences are stated in the report
    assert "convention: " in render_table(audit)


def test_cplrp_is_compared_at_every_node(digits):
    """With A V's attention weights held constant (matmul_cp) the reference follows CP-LRP to the
    input: q, k, the scores and the softmax receive nothing on both sides, v all of A V's."""
    model, x = digits
    audit = audit_lxt(model, x, variant="cplrp", dps=DPS)
    comparison = audit.reference
    assert comparison.verdict == "matches" and comparison.stopped_at is None, render_table(audit)
    rows = {row.graph_tensor: row for row in comparison.tensors}
    assert {"input", "tokens", "norm", "blocks.1.mlp.act", "blocks.1.attn.merged", "blocks.0.norm1"} <= set(rows)
    for block in ("blocks.0", "blocks.1"):
        assert {f"{block}.attn.{name}" for name in ("q_heads", "k_heads", "v_heads", "scores", "attention")} <= set(rows)
        for name in ("q_heads", "k_heads", "scores", "attention"):
            assert rows[f"{block}.attn.{name}"].deviation == 0.0  # nothing flows there, on either side
    assert "reference: LXT matches at every node compared" in render_table(audit)


def test_a_cplrp_product_that_loses_part_of_v_is_named_at_a_v(digits, monkeypatch):
    """A V handing v 0.9 R (forward unchanged): the first deviating tensor is v, from A V."""
    from lrp_num.audit.lxt_adapter import EfficientOps

    model, x = digits

    def lossy(self, name, a, b):
        a, b = self._enter(name, "matmul", a, b)
        if name.endswith(".mix"):
            b = 0.9 * b + 0.1 * b.detach()  # the same value, 0.9 of the gradient
        return self._leave(name, self.torch.matmul(a, b))

    monkeypatch.setattr(EfficientOps, "matmul", lossy)
    audit = audit_lxt(model, x, variant="cplrp", dps=DPS)
    first = audit.reference.first_deviating
    assert first is not None and first.graph_tensor == "blocks.1.attn.v_heads", render_table(audit)
    assert first.rule_of == ["blocks.1.attn.mix (matmul)"]
    assert audit.exit_status == 1 and any("deviates-from-reference" in f for f in audit.findings)


def test_a_corrupted_softmax_is_named_at_its_node(digits, monkeypatch):
    """Softmax without Prop. 3.1's s_i sum_j R_j term: LXT's own bookkeeping cannot see it (the
    softmax absorbs by its rule anyway); the reference names the softmax of the last block."""
    import lxt.explicit.functional as lf

    model, x = digits

    def no_bias_term(ctx, *out):  # R_i = x_i R_i^out: the s_i sum_j R_j^out term left out
        inputs, _ = ctx.saved_tensors
        return (inputs * out[0], None, None, None, None)

    monkeypatch.setattr(lf.softmax_fn, "backward", staticmethod(no_bias_term))
    audit = audit_lxt(model, x, variant="attnlrp", dps=DPS)
    first = audit.reference.first_deviating
    assert first is not None and first.graph_tensor == "blocks.1.attn.scores"
    assert first.rule_of == ["blocks.1.attn.softmax (softmax)"]
    assert audit.exit_status == 1 and any("deviates-from-reference" in f for f in audit.findings)
    assert not any(op.unexpected for op in audit.ops)  # the bookkeeping alone passes it


def test_a_corrupted_product_split_is_named_at_its_node(digits, monkeypatch):
    """A V splitting 0.7 / 0.3 instead of halves conserves relevance, so the bookkeeping passes
    it; against the reference the first deviating tensor is the attention weights, from A V."""
    import lxt.explicit.functional as lf

    model, x = digits
    original = lf.matmul_fn.backward

    def skewed(ctx, *out):
        ra, rb, *rest = original(ctx, *out)
        return (1.4 * ra, 0.6 * rb, *rest)

    monkeypatch.setattr(lf.matmul_fn, "backward", staticmethod(skewed))
    audit = audit_lxt(model, x, variant="attnlrp", dps=DPS)
    first = audit.reference.first_deviating
    assert first is not None and first.graph_tensor == "blocks.1.attn.attention"
    assert first.rule_of == ["blocks.1.attn.mix (matmul)"]
    assert audit.exit_status == 1


def test_strict_names_lxts_departure_from_our_derivation(digits):
    """Without LXT's conventions restated (its d + eps stabiliser, its epsilons) the reference is
    our attnlrp as derived: LXT departs from it beyond float64 rounding, a finding under strict."""
    model, x = digits
    audit = audit_lxt(model, x, variant="attnlrp", dps=DPS, strict=True)
    assert audit.reference.verdict == "matches"
    assert audit.derivation.verdict == "deviates" and not audit.derivation.with_conventions
    assert audit.exit_status == 1 and any("departs-from-derivation" in f for f in audit.findings)


def test_reference_only_parameters_are_checked_and_change_the_result():
    """signed = 0 places the stabiliser as d + eps (LXT's); stabiliser s divides a norm's
    relevance by y + s; either on another rule, or out of range, is a KernelArgumentError."""
    from lrp_num.engine.graph import INPUT, Graph
    from lrp_num.errors import KernelArgumentError
    from lrp_num.layers import Dense, LayerNorm
    from lrp_num.reference import explain
    from lrp_num.reference.api import layer_plan

    weight = np.array([[1.0, -2.0], [0.5, 1.0], [-1.0, 0.25]])
    graph = Graph([("dense", Dense(weight, np.array([0.0, -0.5])), (INPUT,)),
                   ("norm", LayerNorm(np.array([1.0, 2.0]), np.array([0.1, -0.2]), 1e-5), ("dense",))],
                  input_shape=(3,))
    x = np.array([[0.3, -0.2, 0.4]])

    def planned(dense, norm):
        from lrp_num.audit.graph_compare import PlannedComposite
        from lrp_num.engine.composites import LayerRule

        return PlannedComposite("test", {0: LayerRule(*dense), 1: LayerRule(*norm)})

    plain = explain(graph, x, composite=planned(("epsilon", {"epsilon": 0.5}), ("norm_cp", {})), target=0, dps=20)
    signed = explain(graph, x, composite=planned(("epsilon", {"epsilon": 0.5, "signed": 1}), ("norm_cp", {})),
                     target=0, dps=20)
    unsigned = explain(graph, x, composite=planned(("epsilon", {"epsilon": 0.5, "signed": 0}), ("norm_cp", {})),
                       target=0, dps=20)
    held = explain(graph, x, composite=planned(("epsilon", {"epsilon": 0.5}), ("norm_cp", {"stabiliser": 0.3})),
                   target=0, dps=20)
    assert np.array_equal(plain, signed)
    assert not np.allclose(np.asarray(plain, float), np.asarray(unsigned, float))
    assert not np.allclose(np.asarray(plain, float), np.asarray(held, float))
    for dense, norm in ((("epsilon", {"epsilon": 0.5, "signed": 0.5}), ("norm_cp", {})),
                        (("zplus", {"signed": 0}), ("norm_cp", {})),
                        (("epsilon", {"epsilon": 0.5}), ("norm_cp", {"stabiliser": -1.0})),
                        (("epsilon", {"epsilon": 0.5}), ("norm_cp", {"signed": 0}))):
        with pytest.raises(KernelArgumentError, match="reference's parameter"):
            layer_plan(graph, composite=planned(dense, norm))


def _mha_transformer():
    """A small PyTorch transformer block: nn.LayerNorm, nn.MultiheadAttention(batch_first=True),
    skip connections, an MLP with nn.GELU, a linear head on the flattened tokens."""
    from torch import nn

    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(8), nn.LayerNorm(8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.fc1, self.act, self.fc2 = nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8)
            self.head = nn.Linear(4 * 8, 3)

        def forward(self, x):
            h = self.norm1(x)
            x = x + self.attn(h, h, h)[0]
            x = x + self.fc2(self.act(self.fc1(self.norm2(x))))
            return self.head(x.flatten(1))

    torch.manual_seed(0)
    return Small().double().eval()


def test_nn_multihead_attention_transformer_cplrp_against_the_reference(monkeypatch):
    from lrp_num.audit.lxt_module import compare_module_with_reference, run_lxt_module
    from lrp_num.errors import UnsupportedLayerError

    module = _mha_transformer()
    x = np.random.default_rng(0).normal(size=(2, 4, 8))
    with torch.no_grad():
        plain = module(torch.tensor(x)).numpy()
    run = run_lxt_module(module, x, plain.argmax(axis=1))
    np.testing.assert_allclose(run.logits, plain, rtol=1e-12, atol=1e-14)
    assert "forward" not in module.attn.__dict__ and "forward" not in module.norm1.__dict__  # patches undone
    comparison = compare_module_with_reference(module, x, run, dps=DPS)
    assert comparison.verdict == "matches" and comparison.stopped_at is None
    # down to the input: through the attention's v path (matmul_cp) to norm1 and the input
    assert [row.graph_tensor for row in comparison.tensors] == ["fc2", "act", "fc1", "norm2", "attn.out", "norm1",
                                                              "input"]
    with pytest.raises(UnsupportedLayerError, match="cannot explain nn.MultiheadAttention with attnlrp"):
        run_lxt_module(module, x, plain.argmax(axis=1), "attnlrp")
    # LXT's GELU rule replaced by the plain gradient: named at GELU's input
    from lrp_num.audit.lxt_adapter import import_lxt_efficient_rules

    monkeypatch.setattr(import_lxt_efficient_rules(), "identity_rule_implicit", lambda fn, h: fn(h))
    first = compare_module_with_reference(module, x, run_lxt_module(module, x, plain.argmax(axis=1)),
                                          dps=DPS).first_deviating
    assert first is not None and first.graph_tensor == "fc1" and first.rule_of == ["act (GELU)"]
