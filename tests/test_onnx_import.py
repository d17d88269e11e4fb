"""ONNX import: graphs built with onnx.helper from random weights, compared with our forward."""

from __future__ import annotations

import numpy as np
import pytest

from lrp_num.errors import ModelFileError, UnsupportedLayerError
from lrp_num.layers import AvgPool2d, Conv2d, Dense, MaxPool2d

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from lrp_num.onnx_import import load_onnx  # noqa: E402

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
        (helper.make_node("Softmax", ["x"], ["y"], name="sm"), [], "'sm' has unsupported op type Softmax"),
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
        (helper.make_node("Sigmoid", ["x"], ["y"], name="s"), [], "'s' has unsupported op type Sigmoid"),
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
