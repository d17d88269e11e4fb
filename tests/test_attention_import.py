"""Attention imported from PyTorch (nn.MultiheadAttention, a hand-written module) and ONNX:
forward passes against torch / onnx's reference evaluator, relevance against the mpmath reference."""

from __future__ import annotations

import numpy as np
import pytest

from lrp_num import reference
from lrp_num.engine.explain import explain
from lrp_num.errors import UnsupportedLayerError
from lrp_num.layers import MatMul, MergeHeads, Multiply, Softmax, SplitHeads, TokenDense

TOKENS, WIDTH, HEADS, CLASSES = 5, 8, 2, 3


def _types(graph) -> list[type]:
    return [type(node.operation) for node in graph.nodes]


def _check_relevance(graph, x):
    got = explain(graph, x, composite="attnlrp", target=0)
    expected = np.asarray(reference.explain(graph, x, composite="attnlrp", target=0), float)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-13)


# -- torch -----------------------------------------------------------------------------------------

def _torch_modules():
    torch = pytest.importorskip("torch")
    from torch import nn

    class HandWritten(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads, self.scale = HEADS, (WIDTH // HEADS) ** -0.5
            self.q, self.k, self.v, self.o, self.gate = (nn.Linear(WIDTH, WIDTH) for _ in range(5))
            self.head = nn.Linear(TOKENS * WIDTH, CLASSES)

        def forward(self, x):
            n, tokens, width = x.shape
            q = self.q(x).view(n, tokens, self.heads, width // self.heads).transpose(1, 2)
            k = self.k(x).view(n, tokens, self.heads, width // self.heads).transpose(1, 2)
            v = self.v(x).reshape(n, tokens, self.heads, -1).permute(0, 2, 1, 3)
            attention = torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1)
            y = (attention @ v).transpose(1, 2).contiguous().view(n, tokens, width)
            return self.head((self.o(y) * self.gate(x)).flatten(1))

    class Library(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(WIDTH, HEADS, batch_first=True)
            self.head = nn.Linear(TOKENS * WIDTH, CLASSES)

        def forward(self, x):
            y, _ = self.attn(x, x, x)
            return self.head(y.flatten(1))

    return torch, HandWritten, Library


@pytest.mark.parametrize("which", ["hand-written", "nn.MultiheadAttention"])
def test_torch_attention_imports(which):
    torch, hand, library = _torch_modules()
    from lrp_num.io.torch_import import from_torch_module

    torch.manual_seed(0)
    module = (hand if which == "hand-written" else library)().double().eval()
    graph = from_torch_module(module, (TOKENS, WIDTH))
    types = _types(graph)
    assert types.count(TokenDense) >= 4 and types.count(SplitHeads) == 3 and MergeHeads in types
    assert types.count(MatMul) == 2 and Softmax in types
    scores = next(n.operation for n in graph.nodes if isinstance(n.operation, MatMul) and n.operation.transpose_b)
    assert scores.scale == pytest.approx((WIDTH // HEADS) ** -0.5)
    if which == "hand-written":
        assert Multiply in types
    x = torch.randn(3, TOKENS, WIDTH, dtype=torch.float64)
    with torch.no_grad():
        expected = module(x).numpy()
    np.testing.assert_allclose(graph.forward(x.numpy()), expected, rtol=1e-12, atol=1e-13)
    _check_relevance(graph, x.numpy()[:2])


def test_torch_attention_refusals():
    torch, _, _ = _torch_modules()
    from torch import nn
    from lrp_num.io.torch_import import from_torch_module

    class CrossAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(WIDTH, HEADS, batch_first=True)

        def forward(self, x):
            return self.attn(x, x.relu(), x)[0].flatten(1)

    class NotBatchFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(WIDTH, HEADS)

        def forward(self, x):
            return self.attn(x, x, x)[0].flatten(1)

    class BatchSoftmax(nn.Module):
        def forward(self, x):
            return torch.softmax(x, dim=0).flatten(1)

    for module, message in ((CrossAttention(), "self-attention"), (NotBatchFirst(), "batch_first"),
                            (BatchSoftmax(), "batch axis")):
        with pytest.raises(UnsupportedLayerError, match=message):
            from_torch_module(module.double().eval(), (TOKENS, WIDTH))


# -- ONNX ------------------------------------------------------------------------------------------

def _onnx_block(path, opset=17, softmax_axis=-1):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    d = WIDTH // HEADS
    initializers, nodes = [], []

    def constant(name, value):
        initializers.append(numpy_helper.from_array(np.asarray(value), name))

    for p in "qkvo":
        constant(f"W{p}", rng.normal(size=(WIDTH, WIDTH)) / np.sqrt(WIDTH))
        constant(f"b{p}", rng.normal(size=WIDTH) * 0.1)
    constant("Wh", rng.normal(size=(CLASSES, TOKENS * WIDTH)) / np.sqrt(TOKENS * WIDTH))
    constant("bh", rng.normal(size=CLASSES) * 0.1)
    constant("split", np.array([0, TOKENS, HEADS, d], np.int64))
    constant("merge", np.array([0, TOKENS, WIDTH], np.int64))
    constant("flat", np.array([0, -1], np.int64))
    constant("root", np.array(np.sqrt(d)))
    for p in "qkv":
        nodes += [helper.make_node("MatMul", ["x", f"W{p}"], [f"{p}m"], name=f"{p}.matmul"),
                  helper.make_node("Add", [f"{p}m", f"b{p}"], [p], name=f"{p}.add"),
                  helper.make_node("Reshape", [p, "split"], [f"{p}r"], name=f"{p}.view"),
                  helper.make_node("Transpose", [f"{p}r"], [f"{p}h"], perm=[0, 2, 1, 3], name=f"{p}.heads")]
    nodes += [helper.make_node("Transpose", ["kh"], ["kt"], perm=[0, 1, 3, 2], name="k.t"),
              helper.make_node("MatMul", ["qh", "kt"], ["s0"], name="scores"),
              helper.make_node("Div", ["s0", "root"], ["s"], name="scale"),
              helper.make_node("Softmax", ["s"], ["a"], axis=softmax_axis, name="softmax"),
              helper.make_node("MatMul", ["a", "vh"], ["c"], name="context"),
              helper.make_node("Transpose", ["c"], ["ct"], perm=[0, 2, 1, 3], name="merge.t"),
              helper.make_node("Reshape", ["ct", "merge"], ["m"], name="merge"),
              helper.make_node("MatMul", ["m", "Wo"], ["om"], name="o.matmul"),
              helper.make_node("Add", ["om", "bo"], ["o"], name="o.add"),
              helper.make_node("Mul", ["o", "q"], ["g"], name="gate"),
              helper.make_node("Reshape", ["g", "flat"], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "Wh", "bh"], ["y"], transB=1, name="head")]
    graph = helper.make_graph(
        nodes, "block", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["N", TOKENS, WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["N", CLASSES])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, str(path))
    return model


def test_onnx_attention_block(tmp_path):
    model = _onnx_block(tmp_path / "block.onnx")
    from onnx.reference import ReferenceEvaluator
    from lrp_num.io.onnx_import import load_onnx

    graph = load_onnx(tmp_path / "block.onnx")
    types = _types(graph)
    assert types.count(TokenDense) == 4 and types.count(SplitHeads) == 3 and MergeHeads in types
    assert Multiply in types and Softmax in types and types.count(MatMul) == 2
    x = np.random.default_rng(1).normal(size=(3, TOKENS, WIDTH))
    expected = ReferenceEvaluator(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(graph.forward(x), expected, rtol=1e-12, atol=1e-13)
    _check_relevance(graph, x[:2])


def test_onnx_softmax_not_over_the_last_axis_is_refused(tmp_path):
    _onnx_block(tmp_path / "block.onnx", softmax_axis=2)
    from lrp_num.io.onnx_import import load_onnx

    with pytest.raises(UnsupportedLayerError, match="Softmax over axis 2"):
        load_onnx(tmp_path / "block.onnx")


def test_transformer_block_builder_matches_torch():
    """The pre-norm block built from graph nodes (LayerNorm, attention, Add, GELU) computes what a
    torch block with the same weights computes, the import of that torch block gives the same
    graph function, and AttnLRP through it agrees with the mpmath reference (lrp verify passes,
    the absorbed amounts included)."""
    torch = pytest.importorskip("torch")
    from torch import nn
    from lrp_num.engine.graph import Graph
    from lrp_num.io.torch_import import from_torch_module
    from lrp_num.layers import Dense, Flatten
    from lrp_num.layers.attention import transformer_block

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
            self.attn = nn.MultiheadAttention(WIDTH, HEADS, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(WIDTH, 2 * WIDTH), nn.GELU(), nn.Linear(2 * WIDTH, WIDTH))
            self.head = nn.Linear(TOKENS * WIDTH, CLASSES)

        def forward(self, x):
            y = self.norm1(x)
            x = x + self.attn(y, y, y)[0]
            x = x + self.mlp(self.norm2(x))
            return self.head(x.flatten(1))

    torch.manual_seed(1)
    module = Block().double().eval()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    array = lambda t: t.detach().numpy().copy()  # noqa: E731
    linear = lambda layer: (array(layer.weight).T.copy(), array(layer.bias))  # noqa: E731
    packed, packed_bias = array(module.attn.in_proj_weight), array(module.attn.in_proj_bias)
    parts = [(packed[k * WIDTH:(k + 1) * WIDTH].T.copy(), packed_bias[k * WIDTH:(k + 1) * WIDTH])
             for k in range(3)]
    nodes, out = transformer_block(
        "block", "input", HEADS, dict(zip(("query", "key", "value"), parts), out=linear(module.attn.out_proj)),
        ((array(module.norm1.weight), array(module.norm1.bias)), (array(module.norm2.weight), array(module.norm2.bias))),
        (linear(module.mlp[0]), linear(module.mlp[2])))
    graph = Graph(nodes + [("flat", Flatten(), (out,)), ("head", Dense(*linear(module.head)), ("flat",))],
                  input_shape=(TOKENS, WIDTH))
    x = torch.randn(3, TOKENS, WIDTH, dtype=torch.float64)
    with torch.no_grad():
        expected = module(x).numpy()
    np.testing.assert_allclose(graph.forward(x.numpy()), expected, rtol=1e-12, atol=1e-13)
    imported = from_torch_module(module, (TOKENS, WIDTH))
    np.testing.assert_allclose(imported.forward(x.numpy()), expected, rtol=1e-12, atol=1e-13)
    built = explain(graph, x.numpy(), composite="attnlrp", target=0)
    np.testing.assert_allclose(explain(imported, x.numpy(), composite="attnlrp", target=0), built,
                               rtol=1e-10, atol=1e-13)
    expected = np.asarray(reference.explain(graph, x.numpy()[:2], composite="attnlrp", target=0), float)
    np.testing.assert_allclose(built[:2], expected, rtol=1e-10, atol=1e-13)
    from lrp_num.verify import verify

    report = verify(graph, x.numpy()[:2], rules=(), composites=("attnlrp",))
    assert report.ok, report
