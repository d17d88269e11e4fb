"""lrp audit --library lxt on imported transformer graphs: LXT on the ops twin of the graph
(lrp_num.io.torch_ops_twin), compared with the reference at the graph's own node names.

Two models: the torch encoder of lrp_num.io.torch_encoder (nn.MultiheadAttention, imported with
torch.fx) and a pre-norm attention block written as ONNX (LayerNormalization, MatMul, Softmax,
the head split and merge, a skip connection). Needs torch, onnx and LXT; one sample at 20 digits.
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lxt")

from lrp_num.cli import main  # noqa: E402
from lrp_num.io.torch_encoder import EncoderConfig, architecture_json, build_encoder  # noqa: E402

TOKENS, WIDTH, HEADS, CLASSES = 4, 12, 3, 3
DPS = "20"


def _onnx_block(path, gate=False):
    """x -> LayerNormalization -> attention (q, k, v, 3 heads, softmax(q k^T / sqrt d) v, out) -> + x
    -> flatten -> Gemm head; ``gate``: the attention output times q (a Multiply node) before the skip."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    d = WIDTH // HEADS
    initializers = []

    def constant(name, value):
        initializers.append(numpy_helper.from_array(np.asarray(value), name))

    constant("gamma", 1 + 0.1 * rng.normal(size=WIDTH))
    constant("beta", 0.1 * rng.normal(size=WIDTH))
    for p in "qkvo":
        constant(f"W{p}", rng.normal(size=(WIDTH, WIDTH)) / np.sqrt(WIDTH))
        constant(f"b{p}", rng.normal(size=WIDTH) * 0.1)
    constant("Wh", rng.normal(size=(CLASSES, TOKENS * WIDTH)) / np.sqrt(TOKENS * WIDTH))
    constant("bh", rng.normal(size=CLASSES) * 0.1)
    constant("split", np.array([0, TOKENS, HEADS, d], np.int64))
    constant("merge", np.array([0, TOKENS, WIDTH], np.int64))
    constant("flat", np.array([0, -1], np.int64))
    constant("root", np.array(np.sqrt(d)))
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["n"], axis=-1, epsilon=1e-5,
                              name="norm1")]
    for p in "qkv":
        nodes += [helper.make_node("MatMul", ["n", f"W{p}"], [f"{p}m"], name=f"{p}.matmul"),
                  helper.make_node("Add", [f"{p}m", f"b{p}"], [p], name=f"{p}.add"),
                  helper.make_node("Reshape", [p, "split"], [f"{p}r"], name=f"{p}.view"),
                  helper.make_node("Transpose", [f"{p}r"], [f"{p}h"], perm=[0, 2, 1, 3], name=f"{p}.heads")]
    nodes += [helper.make_node("Transpose", ["kh"], ["kt"], perm=[0, 1, 3, 2], name="k.t"),
              helper.make_node("MatMul", ["qh", "kt"], ["s0"], name="scores"),
              helper.make_node("Div", ["s0", "root"], ["s"], name="scale"),
              helper.make_node("Softmax", ["s"], ["a"], axis=-1, name="softmax"),
              helper.make_node("MatMul", ["a", "vh"], ["c"], name="context"),
              helper.make_node("Transpose", ["c"], ["ct"], perm=[0, 2, 1, 3], name="merge.t"),
              helper.make_node("Reshape", ["ct", "merge"], ["m"], name="merge"),
              helper.make_node("MatMul", ["m", "Wo"], ["om"], name="o.matmul"),
              # the bias first, as torch.onnx.export writes it (Add(bias, MatMul))
              helper.make_node("Add", ["bo", "om"], ["o"], name="o.add")]
    if gate:
        nodes.append(helper.make_node("Mul", ["o", "q"], ["g"], name="gate"))
    nodes += [helper.make_node("Add", ["x", "g" if gate else "o"], ["r"], name="skip"),
              helper.make_node("Reshape", ["r", "flat"], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "Wh", "bh"], ["y"], transB=1, name="head")]
    graph = helper.make_graph(
        nodes, "block", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", TOKENS, WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["N", CLASSES])], initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("graphs")
    config = EncoderConfig(tokens=TOKENS, width=WIDTH, heads=HEADS, mlp_width=24, depth=1, classes=CLASSES)
    torch.save(build_encoder(config, seed=1).state_dict(), folder / "w.pt")
    (folder / "arch.json").write_text(architecture_json(config))
    np.save(folder / "x.npy", np.random.default_rng(0).normal(size=(TOKENS, WIDTH)))
    return {"weights": folder / "w.pt", "architecture": folder / "arch.json", "x": folder / "x.npy",
            "onnx": _onnx_block(folder / "block.onnx"), "gated": _onnx_block(folder / "gated.onnx", gate=True)}


def _encoder(files, rule, *extra):
    return ["audit", "--library", "lxt", "--model", str(files["weights"]), "--architecture",
            str(files["architecture"]), "--input", str(files["x"]), "--rule", rule, "--dps", DPS, *extra]


def _onnx(files, rule, *extra, model="onnx"):
    return ["audit", "--library", "lxt", "--model", str(files[model]), "--input", str(files["x"]), "--rule", rule,
            "--dps", DPS, *extra]


@pytest.mark.parametrize("rule", ["attnlrp", "attnlrp-efficient"])
def test_attnlrp_on_an_nn_multihead_attention_encoder(files, capsys, rule):
    """LXT's AttnLRP cannot reach inside nn.MultiheadAttention; on the twin of its import it runs
    op by op and matches the reference at every node, the softmax and both products included."""
    assert main(_encoder(files, rule, "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "matches" and report["reference"]["verdict"] == "matches"
    compared = {row["graph_tensor"] for row in report["reference"]["tensors"]}
    assert {"blocks.0.attn.scores", "blocks.0.attn.attention", "blocks.0.attn.q_heads", "blocks.0.attn.k_heads",
            "blocks.0.attn.v_heads", "blocks.0.norm1", "blocks.0.act", "input"} <= compared
    if rule == "attnlrp":
        assert report["worst_by_kind"]["softmax"] == "blocks.0.attn.attention"


def test_a_corrupted_softmax_is_named_in_the_encoder(files, capsys, monkeypatch):
    import lxt.explicit.functional as lf

    def no_bias_term(ctx, *out):  # R_i = x_i R_i^out: AttnLRP Prop. 3.1's s_i sum_j R_j^out term left out
        inputs, _ = ctx.saved_tensors
        return (inputs * out[0], None, None, None, None)

    monkeypatch.setattr(lf.softmax_fn, "backward", staticmethod(no_bias_term))
    assert main(_encoder(files, "attnlrp")) == 1
    out = capsys.readouterr().out
    assert "first deviates at blocks.0.attn.scores" in out and "produced by blocks.0.attn.attention (softmax)" in out


def test_onnx_block_attnlrp(files, capsys):
    assert main(_onnx(files, "attnlrp", "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["reference"]["verdict"] == "matches" and report["verdict"] == "matches"
    kinds = {op["kind"] for op in report["ops"]}
    assert {"layer_norm", "linear", "matmul", "scale", "softmax", "add"} <= kinds
    compared = {row["graph_tensor"] for row in report["reference"]["tensors"]}
    # at the ONNX nodes' own names: the softmax's input, both products' inputs (k read transposed)
    assert {"scores", "softmax", "q.heads", "k.heads", "v.heads", "norm1", "flatten", "input"} <= compared


def test_onnx_block_product_split_corrupted(files, capsys, monkeypatch):
    """A V splitting 0.7 / 0.3 instead of halves: named at the attention weights, from A V."""
    import lxt.explicit.functional as lf

    original = lf.matmul_fn.backward

    def skewed(ctx, *out):
        ra, rb, *rest = original(ctx, *out)
        return (1.4 * ra, 0.6 * rb, *rest)

    monkeypatch.setattr(lf.matmul_fn, "backward", staticmethod(skewed))
    assert main(_onnx(files, "attnlrp", "--json")) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["reference"]["first_deviating"] == "softmax"  # the ONNX node names: A is "softmax"
    first = next(row for row in report["reference"]["tensors"] if row["deviates"])
    assert first["rule_of"] == ["context (matmul)"]


def _one_line_error(capsys, argv, *fragments):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and not captured.out, captured.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_graph_refusals(files, capsys):
    _one_line_error(capsys, _onnx(files, "attnlrp", model="gated"), "no op for node", "(Multiply)")
    _one_line_error(capsys, _onnx(files, "cplrp"), "patches attention by its q, k, v projections", "--rule attnlrp")
    _one_line_error(capsys, ["audit", "--library", "lxt", "--model", str(files["onnx"]), "--rule", "attnlrp"],
                    "pass --input")
    _one_line_error(capsys, _onnx(files, "attnlrp", "--architecture", str(files["architecture"])),
                    "an ONNX or model file carries its graph")


def test_engine_model_file_of_a_vit(capsys, tmp_path):
    """A ViT saved as the engine's graph (lrp_num.io.model_io.save_npz of vit_graph, the format of
    lrp_num/models/digits_vit.npz): LXT on its ops twin matches the reference at the graph's nodes;
    a model file without attention is refused."""
    from lrp_num.io.model_io import save_npz
    from lrp_num.io.torch_vit import DIGITS_VIT_WEIGHTS, ViTConfig, build_vit, vit_graph

    config = ViTConfig(channels=3, image_size=8, patch=4, width=12, depth=1, heads=3, mlp_width=24, classes=4)
    images = np.random.default_rng(2).random((2, 3, 8, 8))
    graph_file = tmp_path / "vit_graph.npz"
    save_npz(vit_graph(build_vit(config, seed=4)), graph_file, extra={"test_images": images})
    for rule in ("attnlrp", "cplrp"):
        assert main(["audit", "--library", "lxt", "--model", str(graph_file), "--sample", "1", "--rule", rule,
                     "--json", "--dps", DPS]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["reference"]["verdict"] == "matches"
        compared = {row["graph_tensor"] for row in report["reference"]["tensors"]}
        assert {"blocks.0.attn.scores", "blocks.0.attn.attention", "blocks.0.norm1", "tokens", "input"} <= compared
    cnn = DIGITS_VIT_WEIGHTS.with_name("digits_cnn.npz")
    _one_line_error(capsys, ["audit", "--library", "lxt", "--model", str(cnn), "--sample", "0", "--rule", "attnlrp"],
                    "--library lxt audits transformer graphs")
