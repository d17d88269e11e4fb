"""ONNX import: graphs built with onnx.helper from random weights, compared with our forward."""

from __future__ import annotations

import numpy as np
import pytest

from lrp_num.errors import ModelFileError, UnsupportedLayerError
from lrp_num.layers import AvgPool2d, Conv2d, Dense, MaxPool2d

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from lrp_num.io.onnx_import import load_onnx  # noqa: E402

RNG = np.random.default_rng(7)


def tensor(name: str, array: np.ndarray) -> "onnx.TensorProto":
    return numpy_helper.from_array(np.asarray(array), name)


def save_graph(tmp_path, nodes, initializers, input_shape, output_rank=2, name="model.onnx"):
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"d{k}" for k in range(output_rank)])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def reference_forward(x: np.ndarray, ops: list) -> np.ndarray:
    """Independent forward of the ops list: (kind, params) in float64 with explicit loops for conv."""
    for kind, p in ops:
        if kind == "dense":
            x = x @ p["w"] + p["b"]
        elif kind == "relu":
            x = np.maximum(x, 0)
        elif kind == "flatten":
            x = x.reshape(len(x), -1)
        elif kind == "conv":
            k, b, s, pad = p["w"], p["b"], p["stride"], p["pad"]
            xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
            kh, kw = k.shape[2:]
            ho, wo = (xp.shape[2] - kh) // s + 1, (xp.shape[3] - kw) // s + 1
            out = np.empty((len(x), k.shape[0], ho, wo))
            for i in range(ho):
                for j in range(wo):
                    window = xp[:, :, i * s : i * s + kh, j * s : j * s + kw]
                    out[:, :, i, j] = np.tensordot(window, k, axes=([1, 2, 3], [1, 2, 3])) + b
            x = out
        elif kind in ("maxpool", "avgpool"):
            k, s = p["k"], p["s"]
            ho, wo = (x.shape[2] - k) // s + 1, (x.shape[3] - k) // s + 1
            out = np.empty((*x.shape[:2], ho, wo))
            for i in range(ho):
                for j in range(wo):
                    w = x[:, :, i * s : i * s + k, j * s : j * s + k]
                    out[:, :, i, j] = w.max(axis=(2, 3)) if kind == "maxpool" else w.mean(axis=(2, 3))
            x = out
        elif kind == "bn":
            sh = (1, -1) + (1,) * (x.ndim - 2)
            x = (x - p["mean"].reshape(sh)) / np.sqrt(p["var"].reshape(sh) + p["eps"]) * p["gamma"].reshape(sh) + p["beta"].reshape(sh)
    return x


def test_mlp_gemm_and_matmul_add(tmp_path):
    w0, b0, w1, b1, w2 = randn(6, 5), randn(5), randn(4, 5), randn(4), randn(4, 3)
    b2 = randn(3)
    nodes = [
        helper.make_node("Gemm", ["x", "w0", "b0"], ["h0"], name="fc0"),            # transB=0: (in, out)
        helper.make_node("Relu", ["h0"], ["a0"], name="relu0"),
        helper.make_node("Gemm", ["a0", "w1", "b1"], ["h1"], name="fc1", transB=1),  # torch layout
        helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
        helper.make_node("MatMul", ["a1", "w2"], ["m2"], name="mm2"),
        helper.make_node("Add", ["m2", "b2"], ["y"], name="add2"),
    ]
    inits = [tensor(n, v) for n, v in dict(w0=w0, b0=b0, w1=w1, b1=b1, w2=w2, b2=b2).items()]
    network = load_onnx(save_graph(tmp_path, nodes, inits, [6]))
    assert network.input_shape == (6,)
    assert [type(l) for l in network.layers][::2] == [Dense, Dense, Dense]
    x = RNG.standard_normal((5, 6))
    ops = [("dense", {"w": w0, "b": b0}), ("relu", {}), ("dense", {"w": w1.T, "b": b1}), ("relu", {}),
           ("dense", {"w": w2, "b": b2})]
    np.testing.assert_allclose(network.forward(x), reference_forward(x, ops), rtol=1e-10, atol=1e-10)


def test_cnn_with_batchnorm_pools_and_reshape(tmp_path):
    k0, c0, k1 = randn(4, 2, 3, 3), randn(4), randn(5, 4, 2, 2)
    gamma, beta, mean, var = randn(4), randn(4), randn(4), np.abs(randn(4)) + 0.1
    w, b = randn(3, 5 * 2 * 2), randn(3)
    nodes = [
        helper.make_node("Conv", ["x", "k0", "c0"], ["z0"], name="conv0", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["z0", "gamma", "beta", "mean", "var"], ["n0"], name="bn0", epsilon=1e-3),
        helper.make_node("Relu", ["n0"], ["a0"], name="relu0"),
        helper.make_node("MaxPool", ["a0"], ["p0"], name="pool0", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p0", "k1"], ["z1"], name="conv1", strides=[1, 1]),
        helper.make_node("Identity", ["z1"], ["i1"], name="id1"),
        helper.make_node("AveragePool", ["i1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[1, 1]),
        helper.make_node("Reshape", ["p1", "shape"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "w", "b"], ["y"], name="fc", transB=1),
    ]
    inits = [tensor(n, v) for n, v in dict(k0=k0, c0=c0, gamma=gamma, beta=beta, mean=mean, var=var, k1=k1,
                                             w=w, b=b).items()] + [tensor("shape", np.array([0, -1], np.int64))]
    network = load_onnx(save_graph(tmp_path, nodes, inits, [2, 8, 8]))
    assert network.output_shape == (3,)
    assert len(network.layers) == len(nodes) - 1  # BatchNorm folded into conv0
    x = RNG.standard_normal((3, 2, 8, 8))
    ops = [("conv", {"w": k0, "b": c0, "stride": 1, "pad": 1}),
           ("bn", {"gamma": gamma, "beta": beta, "mean": mean, "var": var, "eps": 1e-3}), ("relu", {}),
           ("maxpool", {"k": 2, "s": 2}), ("conv", {"w": k1, "b": np.zeros(5), "stride": 1, "pad": 0}),
           ("avgpool", {"k": 2, "s": 1}), ("flatten", {}), ("dense", {"w": w.T, "b": b})]
    np.testing.assert_allclose(network.forward(x), reference_forward(x, ops), rtol=1e-6, atol=1e-6)


def test_flatten_and_onnx_runtime_free_defaults(tmp_path):
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], name="pool", kernel_shape=[2, 2]),  # ONNX default stride 1
        helper.make_node("Flatten", ["p"], ["y"], name="flat"),
    ]
    network = load_onnx(save_graph(tmp_path, nodes, [], [1, 3, 3]))
    assert isinstance(network.layers[0], MaxPool2d) and network.layers[0].stride == (1, 1)
    assert network.output_shape == (4,)


@pytest.mark.parametrize(
    ("node", "inits", "message"),
    [
        (helper.make_node("Elu", ["x"], ["y"], name="sm"), [], "'sm' has unsupported op type Elu"),
        (helper.make_node("Conv", ["x", "k"], ["y"], name="c", group=3), [("k", randn(2, 1, 1, 1))], "groups"),
        (helper.make_node("Conv", ["x", "k"], ["y"], name="c", pads=[1, 0, 0, 0]), [("k", randn(2, 2, 1, 1))],
         "asymmetric pads"),
        (helper.make_node("Conv", ["x", "k"], ["y"], name="c", dilations=[2, 2]), [("k", randn(2, 2, 1, 1))],
         "dilations"),
        (helper.make_node("Gemm", ["x", "w"], ["y"], name="g", alpha=2.0), [("w", randn(8, 2))], "alpha=2.0"),
        (helper.make_node("AveragePool", ["x"], ["y"], name="ap", kernel_shape=[2, 2], pads=[1, 1, 0, 0]), [],
         "asymmetric pads"),
        (helper.make_node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[2, 2], dilations=[2, 2]), [],
         "dilations"),
        (helper.make_node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[1, 1], pads=[1, 1, 1, 1]), [],
         "at most half the kernel"),
        (helper.make_node("Reshape", ["x", "s"], ["y"], name="r"), [("s", np.array([2, 4, 4], np.int64))],
         "Reshape to (2, 4, 4)"),
        (helper.make_node("Reshape", ["x", "s"], ["y"], name="r"), [("s", np.array([0, 2, 4], np.int64))],
         "Reshape to (0, 2, 4)"),
        (helper.make_node("Concat", ["x", "x"], ["y"], name="cat", axis=0), [], "batch axis"),
        (helper.make_node("Dropout", ["x", "p", "t"], ["y"], name="d"), [("p", np.array(0.5, np.float32)),
                                                                        ("t", np.array(True))], "training mode"),
        (helper.make_node("Elu", ["x"], ["y"], name="s"), [], "'s' has unsupported op type Elu"),
        (helper.make_node("Add", ["x", "c"], ["y"], name="a"), [("c", randn(1))], "Add other than a constant bias"),
    ],
)
def test_unsupported_nodes_name_op_and_node(tmp_path, node, inits, message):
    path = save_graph(tmp_path, [node], [tensor(n, v) for n, v in inits], [2, 2, 2])
    with pytest.raises(UnsupportedLayerError) as info:
        load_onnx(path)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert repr(node.name) in text


def test_reshape_minus_one_k_checked_against_sample_size(tmp_path):
    def graph(k):
        nodes = [helper.make_node("Reshape", ["x", "s"], ["y"], name="r")]
        return save_graph(tmp_path, nodes, [tensor("s", np.array([-1, k], np.int64))], [2, 3], name=f"r{k}.onnx")

    assert load_onnx(graph(6)).output_shape == (6,)
    with pytest.raises(UnsupportedLayerError, match="Reshape to \\(-1, 3\\)"):
        load_onnx(graph(3))


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        load_onnx(tmp_path / "absent.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a protobuf at all\xff" * 3)
    with pytest.raises(ModelFileError, match="not a valid ONNX model"):
        load_onnx(bad)


def test_missing_onnx_package_message(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("no onnx")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    from lrp_num.errors import LRPError, MissingDependencyError

    with pytest.raises(MissingDependencyError) as info:
        load_onnx(tmp_path / "m.onnx")
    assert isinstance(info.value, LRPError)
    assert str(info.value) == "ONNX import needs the onnx package: pip install 'lrp-toolkit[onnx]'"


def test_conv_stride_padding_pair(tmp_path):
    k = randn(3, 2, 3, 2)
    nodes = [helper.make_node("Conv", ["x", "k"], ["y"], name="c", strides=[2, 1], pads=[1, 2, 1, 2])]
    network = load_onnx(save_graph(tmp_path, nodes, [tensor("k", k)], [2, 7, 6]))
    conv = network.layers[0]
    assert isinstance(conv, Conv2d) and conv.stride == (2, 1) and conv.padding == (1, 2)
    assert not isinstance(conv, AvgPool2d)


# ---- branching graphs, compared with onnx's own reference evaluator ----

from onnx.reference import ReferenceEvaluator  # noqa: E402

from lrp_num.engine.graph import Graph  # noqa: E402
from lrp_num.layers import Add, Concat, Dropout, Flatten, GlobalAvgPool  # noqa: E402


def onnx_forward(path, x: np.ndarray) -> np.ndarray:
    """The model's output by onnx.reference (independent of lrp_num), in float64."""
    return ReferenceEvaluator(onnx.load(str(path))).run(None, {"x": x.astype(np.float32)})[0].astype(np.float64)


def assert_same_forward(network, path, x, tol=1e-5):
    np.testing.assert_allclose(network.forward(x.astype(np.float32)), onnx_forward(path, x), rtol=tol, atol=tol)


def test_residual_graph_with_grouped_conv_global_pool_and_dropout(tmp_path):
    k0, c0, k1 = randn(4, 2, 3, 3), randn(4), randn(4, 2, 3, 3)  # k1: group=2, 2 input channels each
    w, b = randn(3, 4), randn(3)
    nodes = [
        helper.make_node("Conv", ["x", "k0", "c0"], ["z0"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["z0"], ["a0"], name="stem_relu"),
        helper.make_node("Conv", ["a0", "k1"], ["z1"], name="branch", pads=[1, 1, 1, 1], group=2),
        helper.make_node("Dropout", ["z1"], ["d1"], name="drop"),
        helper.make_node("Add", ["d1", "a0"], ["s"], name="residual"),
        helper.make_node("Relu", ["s"], ["a1"], name="relu"),
        helper.make_node("GlobalAveragePool", ["a1"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "w", "b"], ["y"], name="fc", transB=1),
    ]
    inits = [tensor(n, v) for n, v in dict(k0=k0, c0=c0, k1=k1, w=w, b=b).items()]
    path = save_graph(tmp_path, nodes, inits, [2, 6, 6])
    network = load_onnx(path)
    assert isinstance(network, Graph)
    assert [node.name for node in network.nodes] == [node.name for node in nodes]
    assert network.node("branch").operation.groups == 2
    assert isinstance(network.node("residual").operation, Add)
    assert network.node("residual").inputs == ("drop", "stem_relu")
    assert isinstance(network.node("drop").operation, Dropout)
    assert isinstance(network.node("gap").operation, GlobalAvgPool)
    assert_same_forward(network, path, RNG.standard_normal((3, 2, 6, 6)))


def test_concat_sum_and_unnamed_nodes(tmp_path):
    k0, k1 = randn(3, 2, 1, 1), randn(2, 2, 3, 3)
    nodes = [
        helper.make_node("Conv", ["x", "k0"], ["a"]),  # no name: named after its output
        helper.make_node("Conv", ["x", "k1"], ["b"], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["a", "b", "x"], ["c"], name="cat", axis=1),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Sum", ["c", "r", "c"], ["y"], name="sum3"),
    ]
    path = save_graph(tmp_path, nodes, [tensor("k0", k0), tensor("k1", k1)], [2, 4, 4], output_rank=4)
    network = load_onnx(path)
    assert [node.name for node in network.nodes] == ["a", "b", "cat", "relu", "sum3"]
    assert isinstance(network.node("cat").operation, Concat) and network.output_shape == (7, 4, 4)
    assert network.node("sum3").inputs == ("cat", "relu", "cat")
    assert_same_forward(network, path, RNG.standard_normal((2, 2, 4, 4)))


@pytest.mark.parametrize("ceil_mode", [0, 1])
@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_padded_and_ceil_mode_pools(tmp_path, ceil_mode, count_include_pad):
    nodes = [
        helper.make_node("MaxPool", ["x"], ["m"], name="max", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1], ceil_mode=ceil_mode),
        helper.make_node("AveragePool", ["x"], ["a"], name="avg", kernel_shape=[3, 2], strides=[2, 2],
                         pads=[1, 1, 1, 1], ceil_mode=ceil_mode, count_include_pad=count_include_pad),
        helper.make_node("Concat", ["m", "a"], ["y"], name="cat", axis=1),
    ]
    path = save_graph(tmp_path, nodes, [], [2, 6, 7], output_rank=4)
    network = load_onnx(path)
    avg = network.node("avg").operation
    assert avg.ceil_mode == bool(ceil_mode) and avg.count_include_pad == bool(count_include_pad)
    assert_same_forward(network, path, RNG.standard_normal((2, 2, 6, 7)))


def test_zero_pad_folds_into_conv_and_average_pool(tmp_path):
    k = randn(3, 2, 3, 3)
    pads = np.array([0, 0, 1, 2, 0, 0, 1, 2], np.int64)
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"], name="pad", mode="constant"),
        helper.make_node("Conv", ["p", "k"], ["c"], name="conv", pads=[1, 0, 1, 0]),
        helper.make_node("Pad", ["c", "pads"], ["q"], name="pad2"),
        helper.make_node("AveragePool", ["q"], ["y"], name="avg", kernel_shape=[3, 5], strides=[1, 1]),
    ]
    path = save_graph(tmp_path, nodes, [tensor("k", k), tensor("pads", pads)], [2, 5, 5], output_rank=4)
    network = load_onnx(path)
    assert [type(layer).__name__ for layer in network.layers] == ["Conv2d", "AvgPool2d"]  # a chain
    assert network.layers[0].padding == (2, 2)
    assert network.layers[1].padding == (1, 2) and network.layers[1].count_include_pad
    assert_same_forward(network, path, RNG.standard_normal((2, 2, 5, 5)))


def test_shape_gather_unsqueeze_concat_reshape_folds_away(tmp_path):
    """As torch.onnx.export writes x.view(x.size(0), -1): evaluated at import, one Flatten left."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Shape", ["r"], ["shape"], name="shape"),
        helper.make_node("Constant", [], ["zero"], name="zero", value=tensor("z", np.array(0, np.int64))),
        helper.make_node("Gather", ["shape", "zero"], ["n"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="unsqueeze"),
        helper.make_node("Cast", ["n1"], ["n2"], name="cast", to=TensorProto.INT64),
        helper.make_node("Concat", ["n2", "minus_one"], ["target"], name="target", axis=0),
        helper.make_node("Reshape", ["r", "target"], ["f"], name="view"),
        helper.make_node("Reshape", ["f", "target"], ["g"], name="view_again"),  # already flat: no node
        helper.make_node("Identity", ["g"], ["y"], name="id"),
    ]
    inits = [tensor("axes", np.array([0], np.int64)), tensor("minus_one", np.array([-1], np.int64))]
    path = save_graph(tmp_path, nodes, inits, [2, 3, 2])
    network = load_onnx(path)
    assert [type(layer) for layer in network.layers] == [type(network.layers[0]), Flatten, type(network.layers[2])]
    assert network.output_shape == (12,)
    assert_same_forward(network, path, RNG.standard_normal((4, 2, 3, 2)))


def test_matmul_bias_not_merged_when_the_product_is_read_twice(tmp_path):
    w, b = randn(4, 4), randn(4)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
        helper.make_node("Add", ["m", "b"], ["a"], name="bias"),
        helper.make_node("Add", ["a", "m"], ["y"], name="res"),
    ]
    path = save_graph(tmp_path, nodes, [tensor("w", w), tensor("b", b)], [4])
    with pytest.raises(UnsupportedLayerError, match="'bias' \\(Add\\): Add other than a constant bias"):
        load_onnx(path)


@pytest.mark.parametrize(
    ("pad", "consumer", "message"),
    [
        (dict(mode="reflect"), "Conv", "mode='reflect'"),
        (dict(), "MaxPool", "'pad' (Pad): a zero Pad feeding a MaxPool (it pads with -inf)"),
        (dict(), "Relu", "'pad' (Pad): a zero Pad feeding Relu 'next'"),
        (dict(pads=[0, 1, 0, 0, 0, 1, 0, 0]), "Conv", "only equal zero padding of height and width"),
        (dict(pads=[0, 0, 1, 0, 0, 0, 2, 0]), "Conv", "only equal zero padding of height and width"),
    ],
)
def test_pads_that_do_not_fold_are_one_line_errors(tmp_path, pad, consumer, message):
    pads = np.array(pad.pop("pads", [0, 0, 1, 1, 0, 0, 1, 1]), np.int64)
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], name="pad", **pad)]
    attributes = {"Conv": {}, "MaxPool": {"kernel_shape": [2, 2]}, "Relu": {}}[consumer]
    inputs = ["p", "k"] if consumer == "Conv" else ["p"]
    nodes.append(helper.make_node(consumer, inputs, ["y"], name="next", **attributes))
    path = save_graph(tmp_path, nodes, [tensor("pads", pads), tensor("k", randn(2, 2, 1, 1))], [2, 3, 3], 4)
    with pytest.raises(UnsupportedLayerError) as info:
        load_onnx(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_addends_of_different_shapes_name_the_node(tmp_path):
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Add", ["p", "x"], ["y"], name="bad_add"),
    ]
    from lrp_num.errors import GraphError

    with pytest.raises(GraphError, match="ONNX node 'bad_add' \\(Add\\): Add needs addends of one shape"):
        load_onnx(save_graph(tmp_path, nodes, [], [1, 4, 4], 4))
