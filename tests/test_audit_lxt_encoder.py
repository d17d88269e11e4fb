"""lrp audit --library lxt --rule cplrp on a plain PyTorch transformer encoder (nn.MultiheadAttention),
given as a state dict and a JSON architecture (lrp_num.io.torch_encoder): LXT's CP-LRP patches on
the torch module itself (AttnLRP on it runs on the graph twin: tests/test_audit_lxt_graph_twin.py).

Needs torch and LXT (``pip install --no-deps lxt==2.1``); skipped cleanly without them. One small
random-weight encoder (4 tokens of width 12, 3 heads, one block), one sample, the reference at 20 digits.
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lxt")

from lrp_num.cli import main  # noqa: E402
from lrp_num.errors import ModelFileError  # noqa: E402
from lrp_num.io.torch_encoder import EncoderConfig, architecture_json, build_encoder, load_encoder  # noqa: E402

SMALL = EncoderConfig(tokens=4, width=12, heads=3, mlp_width=24, depth=1, classes=3)
DPS = "20"


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """(model, state dict .pt, architecture .json, one input sample .npy)."""
    folder = tmp_path_factory.mktemp("encoder")
    model = build_encoder(SMALL, seed=1)
    torch.save(model.state_dict(), folder / "w.pt")
    (folder / "arch.json").write_text(architecture_json(SMALL))
    np.save(folder / "x.npy", np.random.default_rng(0).normal(size=(4, 12)))
    return model, folder / "w.pt", folder / "arch.json", folder / "x.npy"


def _audit(weights, architecture, x, *extra):
    return ["audit", "--library", "lxt", "--model", str(weights), "--architecture", str(architecture),
            "--input", str(x), *extra]


def test_load_encoder_computes_what_was_saved(encoder):
    model, weights, architecture, x = encoder
    loaded = load_encoder(weights, architecture)
    sample = torch.tensor(np.load(x)[None])
    with torch.no_grad():
        np.testing.assert_array_equal(loaded(sample).numpy(), model(sample).numpy())


def test_cli_cplrp_matches_the_reference_down_to_the_input(encoder, capsys):
    _, weights, architecture, x = encoder
    assert main(_audit(weights, architecture, x, "--rule", "cplrp", "--json", "--dps", DPS)) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "matches" and report["forward_deviation"] < 1e-12
    assert [row["graph_tensor"] for row in report["reference"]["tensors"]] == [
        "norm", "blocks.0.fc2", "blocks.0.act", "blocks.0.fc1", "blocks.0.norm2", "blocks.0.attn.out",
        "blocks.0.norm1", "input"]


def test_cli_names_a_corrupted_gelu_rule(encoder, capsys, monkeypatch):
    """GELU by the plain gradient instead of LXT's identity rule: named at GELU's input."""
    from lrp_num.audit.lxt_adapter import import_lxt_efficient_rules

    _, weights, architecture, x = encoder
    monkeypatch.setattr(import_lxt_efficient_rules(), "identity_rule_implicit", lambda fn, h: fn(h))
    assert main(_audit(weights, architecture, x, "--rule", "cplrp", "--dps", DPS)) == 1
    out = capsys.readouterr().out
    assert "first deviates at blocks.0.fc1" in out and "produced by blocks.0.act (GELU)" in out, out
    assert "verdict: fails" in out


def _one_line_error(capsys, argv, *fragments):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and not captured.out, captured.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_bad_encoder_input(encoder, capsys, tmp_path):
    model, weights, architecture, x = encoder
    _one_line_error(capsys, _audit(weights, architecture, x, "--rule", "cplrp", "--strict"), "--strict")
    _one_line_error(capsys, ["audit", "--library", "lxt", "--model", str(weights), "--architecture",
                             str(architecture), "--rule", "cplrp"], "--input")
    not_encoder = tmp_path / "seq.json"
    not_encoder.write_text(json.dumps({"input_shape": [4], "modules": [{"type": "Linear", "in_features": 4,
                                                                        "out_features": 2}]}))
    _one_line_error(capsys, _audit(weights, not_encoder, x, "--rule", "cplrp"), "not a transformer encoder")
    wider = tmp_path / "wider.json"
    wider.write_text(json.dumps({**json.loads(architecture.read_text()), "mlp_width": 32}))
    _one_line_error(capsys, _audit(weights, wider, x, "--rule", "cplrp"), "'blocks.0.fc1.weight' has shape (24, 12)")
    huge = tmp_path / "huge.json"  # refused from the shapes alone: nothing of this size is allocated
    huge.write_text(json.dumps({**json.loads(architecture.read_text()), "width": 300_000, "heads": 1,
                                "mlp_width": 300_000}))
    _one_line_error(capsys, _audit(weights, huge, x, "--rule", "cplrp"), "has shape (12,), expected (300000,)")
    uneven = tmp_path / "uneven.json"
    uneven.write_text(json.dumps({**json.loads(architecture.read_text()), "heads": 5}))
    _one_line_error(capsys, _audit(weights, uneven, x, "--rule", "cplrp"), "heads do not divide the width")
    pickled = tmp_path / "module.pt"
    torch.save(model, pickled)  # a whole pickled module, not a state dict: refused by weights_only
    _one_line_error(capsys, _audit(pickled, architecture, x, "--rule", "cplrp"), "cannot read state dict")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((1, 4, 8)))
    _one_line_error(capsys, _audit(weights, architecture, wrong, "--rule", "cplrp"), "shape (4, 12)")
    with pytest.raises(ModelFileError, match="missing"):
        torch.save({"head.weight": torch.zeros(3, 48, dtype=torch.float64)}, tmp_path / "part.pt")
        load_encoder(tmp_path / "part.pt", architecture)
