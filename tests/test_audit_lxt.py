"""lrp audit --library lxt: LXT 2.1's AttnLRP and CP-LRP on digits-vit and a small transformer, op by op.

Needs torch and LXT (``pip install --no-deps lxt==2.1``); skipped cleanly without them.
"""

import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lxt")

from lrp_num.audit.lxt_adapter import import_lxt_efficient_rules, run_lxt  # noqa: E402
from lrp_num.audit.lxt_audit import audit_lxt  # noqa: E402
from lrp_num.errors import UnknownRuleError  # noqa: E402
from lrp_num.io.torch_vit import ViTConfig, build_vit, load_digits_vit_torch  # noqa: E402

SMALL = ViTConfig(channels=3, image_size=8, patch=4, width=12, depth=2, heads=3, mlp_width=24, classes=5)


@pytest.fixture(scope="module")
def digits():
    model, extras = load_digits_vit_torch()
    return model, extras["test_images"][:3]


def test_efficient_rules_load_without_transformers():
    rules = import_lxt_efficient_rules()
    assert callable(rules.divide_gradient) and callable(rules.stop_gradient)
    assert "transformers" not in sys.modules


@pytest.mark.parametrize("variant", ["attnlrp", "attnlrp-efficient", "cplrp"])
def test_bookkeeping_closes_and_forward_is_kept(digits, variant):
    model, x = digits
    audit = audit_lxt(model, x, variant=variant, reference=False)
    assert audit.closure < 1e-12 and audit.forward_deviation < 1e-12
    assert audit.exit_status == 0, audit.findings


def test_attnlrp_leaks_at_softmax_and_cplrp_does_not(digits):
    model, x = digits
    attn = audit_lxt(model, x, variant="attnlrp", reference=False)
    cp = audit_lxt(model, x, variant="cplrp", reference=False)
    assert attn.worst_by_kind()["softmax"].name.endswith("attn.softmax")
    assert "softmax" not in cp.worst_by_kind() and "matmul" not in cp.worst_by_kind()
    # explicit AttnLRP: the products (epsilon + uniform) and GELU (identity) conserve
    for op in attn.ops:
        if op.kind in ("matmul", "gelu", "mean", "add", "scale"):
            assert op.relative < 1e-4, op


def test_softmax_record_is_attnlrp_prop_3_1(digits):
    """At each softmax LXT gives R_i = x_i (R_i^out - s_i sum_j R_j^out); what it absorbs is
    sum_j R_j^out - sum_i R_i, nonzero (the bias term of the expansion at x)."""
    model, x = digits
    run = run_lxt(model, x, np.array([0, 1, 2]), "attnlrp")
    record = run.op("blocks.1.attn.softmax")
    with torch.no_grad():
        scores = []
        saved_observe = model.ops.observe
        model.ops.observe = lambda name, t: scores.append(t) or t if name == "blocks.1.attn.scores" else t
        model(torch.tensor(x))
        model.ops.observe = saved_observe
    s_in = scores[0].numpy()
    s = np.exp(s_in - s_in.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    expected = s_in * (record.output - s * record.output.sum(-1, keepdims=True))
    np.testing.assert_allclose(record.input_relevance[0], expected, rtol=1e-10, atol=1e-14)
    assert np.abs(record.absorbed()).max() > 1e-3 * np.abs(run.top).max()


def test_a_corrupted_product_is_named(digits, monkeypatch):
    """A matmul that gives each factor the whole relevance (no uniform halving) is flagged there."""
    import lxt.explicit.functional as lf

    model, x = digits
    original = lf.matmul_fn.backward

    def doubled(ctx, *out):
        return tuple(2 * r if r is not None else None for r in original(ctx, *out))

    monkeypatch.setattr(lf.matmul_fn, "backward", staticmethod(doubled))
    audit = audit_lxt(model, x, variant="attnlrp", reference=False)
    assert audit.exit_status == 1
    flagged = {op.name for op in audit.ops if op.unexpected}
    assert flagged and all(name.endswith(("attn.scores", "attn.mix")) for name in flagged)


@pytest.mark.parametrize("variant", ["attnlrp", "cplrp"])
def test_small_transformer(variant):
    model = build_vit(SMALL, seed=2)
    x = np.random.default_rng(0).random((2, 3, 8, 8))
    audit = audit_lxt(model, x, variant=variant, reference=False)
    assert audit.closure < 1e-12 and audit.exit_status == 0
    assert {op.kind for op in audit.ops} >= {"softmax", "matmul", "layer_norm", "gelu", "add", "add_constant"}


def test_unknown_variant():
    with pytest.raises(UnknownRuleError, match="attnlrp, attnlrp-efficient, cplrp"):
        audit_lxt(build_vit(SMALL, seed=0), np.zeros((1, 3, 8, 8)), variant="zplus", reference=False)


def test_cli(capsys, tmp_path):
    from lrp_num.cli import main

    assert main(["audit", "--library", "lxt", "--model", "digits-vit", "--rule", "attnlrp", "--sample", "1",
                 "--json", "--dps", "20"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "matches" and "softmax" in report["worst_by_kind"]
    assert report["reference"]["verdict"] == "matches" and report["exit_status"] == 0
    assert main(["audit", "--library", "lxt", "--model", "digits-vit", "--rule", "cplrp", "--no-reference"]) == 0
    out = capsys.readouterr().out
    assert "relevance leaks most at:" in out and "verdict: matches" in out
    assert main(["audit", "--library", "lxt", "--model", "digits-cnn", "--rule", "attnlrp"]) == 2
    assert "vision transformer" in capsys.readouterr().err
    assert main(["audit", "--library", "lxt", "--model", "digits-vit", "--rule", "zplus"]) == 2
    assert "attnlrp, attnlrp-efficient, cplrp" in capsys.readouterr().err
    assert main(["audit", "--library", "lxt", "--model", "digits-vit", "--composite", "deep-taylor"]) == 2
    assert "--composite" in capsys.readouterr().err
    bad = tmp_path / "x.npy"
    np.save(bad, np.zeros((2, 64)))
    assert main(["audit", "--library", "lxt", "--model", "digits-vit", "--rule", "attnlrp", "--input", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shape" in err[-1]
