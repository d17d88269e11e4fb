"""The torch backend: explain on torch tensors equals explain on NumPy arrays.

The torch operators (conv2d / conv_transpose2d, pooling through avg_pool2d and its backward,
max pooling through unfold / fold) are checked layer by layer against the NumPy layers, and
whole explanations on the built-in models within the float64 rounding bound of
:func:`lrp_num.verify.rounding_bound`: both engines lie within it of the exact value, so they lie
within twice it of each other. The device is a parameter of every torch operator, so the CPU
runs each code path the GPU runs; the GPU test runs where CUDA is present and skips elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest

import lrp_num
from lrp_num import backends, reference
from lrp_num.errors import NonFiniteError, ShapeError
from lrp_num.layers import (AdaptiveAvgPool2d, AvgPool2d, Conv2d, Dense, GlobalAvgPool, MaxPool2d,
                            SumPool2d)
from lrp_num.verify import DEFAULT_COMPOSITES, DEFAULT_RULES, rounding_bound

torch = pytest.importorskip("torch")

CPU = backends.get("torch", "cpu", torch.float64)


def _tensor(a: np.ndarray) -> "torch.Tensor":
    return torch.from_numpy(np.ascontiguousarray(a))


LINEAR_LAYERS = [
    Conv2d(np.random.default_rng(0).normal(size=(4, 3, 3, 3)), np.arange(4.0), stride=1, padding=1),
    Conv2d(np.random.default_rng(1).normal(size=(4, 3, 3, 2)), None, stride=(2, 3), padding=(1, 0)),
    Conv2d(np.random.default_rng(2).normal(size=(6, 1, 3, 3)), np.ones(6), stride=2, padding=1,
           groups=3),
    Conv2d(np.random.default_rng(3).normal(size=(2, 3, 1, 1)), None),
    SumPool2d(2),
    SumPool2d(3, 2, padding=1, ceil_mode=True),
    AvgPool2d(2, 1),
    AvgPool2d(3, 2, padding=1, ceil_mode=True),
    AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=False),
    AdaptiveAvgPool2d((3, 2)),
    GlobalAvgPool(),
    Dense(np.random.default_rng(4).normal(size=(3 * 7 * 8, 5)), np.ones(5)),
]


@pytest.mark.parametrize("layer", LINEAR_LAYERS, ids=repr)
@pytest.mark.parametrize("g", ["identity", "positive", "negative", "square", "ones"])
def test_torch_operator_equals_the_numpy_layer(layer, g):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 3, 7, 8))
    if isinstance(layer, Dense):
        x = x.reshape(2, -1)
    operator = CPU.operator(layer)
    z = layer.forward(x, g)
    z_torch = operator.forward(_tensor(x), g)
    np.testing.assert_allclose(z_torch.numpy(), z, rtol=1e-12, atol=1e-12)
    s = rng.normal(size=z.shape)
    np.testing.assert_allclose(operator.transpose(_tensor(s), g).numpy(), layer.transpose(s, g),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(operator.bias_like(z_torch, g).numpy(), layer.bias_like(z, g))
    np.testing.assert_allclose(operator(_tensor(x)).numpy(), layer(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pool", [MaxPool2d(2), MaxPool2d(3, 2, padding=1, ceil_mode=True),
                                  MaxPool2d((2, 3), 1)], ids=repr)
def test_torch_max_pooling_patches_and_scatter_equal_numpy(pool):
    x = np.random.default_rng(6).integers(0, 3, size=(2, 2, 7, 8)).astype(float)  # many ties
    operator = CPU.operator(pool)
    patches = operator.patches(_tensor(x))
    np.testing.assert_array_equal(patches.numpy(), pool.patches(x))
    r = np.random.default_rng(7).normal(size=patches.shape)
    np.testing.assert_allclose(operator.unpatch(_tensor(r)).numpy(), pool.unpatch(r), atol=1e-14)
    np.testing.assert_array_equal(operator(_tensor(x)).numpy(), pool(x))
    kernel = lrp_num.engine.kernels.load_module("maxpool")
    relevance_out = np.random.default_rng(8).uniform(size=pool(x).shape)
    np.testing.assert_allclose(kernel.relevance(operator, _tensor(x), _tensor(relevance_out)).numpy(),
                               kernel.relevance(pool, x, relevance_out), atol=1e-14)


def _methods():
    return ([{"rule": r} for r in DEFAULT_RULES + ("zplus_split", "gamma_split")]
            + [{"composite": c} for c in DEFAULT_COMPOSITES])


#: (model, methods) compared against the mpmath rounding bound: every rule and composite on the
#: MLP and the CNN; on the ResNet (whose reference takes about 20 s per method here) two
#: composites, which between them use z^B, z+, LRP-epsilon, gamma, global average pooling and
#: the Add rule; the test below covers every method there at a fixed tolerance
BOUND_CASES = ([("digits-mlp", m) for m in _methods()]
               + [("digits-cnn", m) for m in _methods()]
               + [("digits-resnet", {"composite": c}) for c in ("deep-taylor", "epsilon-gamma-box")])


def _explained(model: str, method: dict, n: int = 1):
    loaded = lrp_num.load_builtin(model)
    x = loaded.test_images[:n].astype(np.float64)
    target = loaded.network.forward(x).argmax(axis=1)
    options = dict(method, target=target, input_domain=loaded.input_domain)
    expected = lrp_num.explain(loaded.network, x, **options)
    result = lrp_num.explain(loaded.network, _tensor(x), **options)
    assert isinstance(result, torch.Tensor) and result.dtype == torch.float64
    assert result.shape == x.shape
    return loaded, x, target, expected, result.numpy()


@pytest.mark.parametrize("model, method", BOUND_CASES, ids=str)
def test_torch_cpu_equals_numpy_within_the_rounding_bound(model, method):
    """|R_torch - R_numpy| <= 2 bound: both lie within the bound of the exact relevance."""
    loaded, x, target, expected, result = _explained(model, method)
    prepared = reference.prepare(loaded.network, x.shape[1:], 20)
    trace = reference.explain_trace(loaded.network, x, dps=20, input_domain=loaded.input_domain,
                                    target=target, **method)[0]
    bound = rounding_bound(trace, prepared, x[0]).reshape(x.shape)
    error = np.abs(result - expected)
    assert (error <= 2 * bound).all(), float((error / bound).max())


@pytest.mark.parametrize("model", ["digits-mlp", "digits-cnn", "digits-resnet"])
@pytest.mark.parametrize("method", _methods(), ids=str)
def test_torch_cpu_equals_numpy_for_every_rule_and_composite(model, method):
    """The rest of the grid without the slow reference: agreement to 1e-10 of the largest |R|
    (the bound above is of that order or smaller on these models)."""
    _, _, _, expected, result = _explained(model, method, n=3)
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-10 * np.abs(expected).max())


def test_float32_tensor_gives_float32_relevance_close_to_numpy_float32():
    loaded = lrp_num.load_builtin("digits-cnn")
    x = loaded.test_images[:4].astype(np.float32)
    result = lrp_num.explain(loaded.network, _tensor(x), composite="deep-taylor",
                             input_domain=loaded.input_domain)
    expected = lrp_num.explain(loaded.network, x, composite="deep-taylor",
                               input_domain=loaded.input_domain)
    assert result.dtype == torch.float32 and expected.dtype == np.float32
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_diagnostics_and_layer_reports_on_torch_equal_numpy():
    loaded = lrp_num.load_builtin("digits-cnn")
    x = loaded.test_images[:3]
    on_torch = lrp_num.explain_details(loaded.network, _tensor(x), rule="zplus", target=[0, 1, 2])
    on_numpy = lrp_num.explain_details(loaded.network, x, rule="zplus", target=[0, 1, 2])
    for mine, theirs in zip(on_torch.layers, on_numpy.layers):
        assert mine.rule == theirs.rule
        np.testing.assert_allclose(mine.relevance_in.numpy(), theirs.relevance_in, rtol=1e-12)
        if theirs.root_point_valid is None:
            assert mine.root_point_valid is None
        else:
            np.testing.assert_array_equal(mine.root_point_valid.numpy(), theirs.root_point_valid)
    np.testing.assert_allclose(on_torch.relevance_top.numpy(), on_numpy.relevance_top)


def test_weights_move_to_the_device_once_and_are_cached(monkeypatch):
    loaded = lrp_num.load_builtin("digits-cnn")
    x = _tensor(loaded.test_images[:2])
    lrp_num.explain(loaded.network, x, composite="epsilon-plus")
    moves = []
    original = type(CPU).from_host
    monkeypatch.setattr(type(CPU), "from_host",
                        lambda self, *a, **k: moves.append(1) or original(self, *a, **k))
    again = lrp_num.explain(loaded.network, x, composite="epsilon-plus")
    assert moves == []  # no weight (nor anything else) copied on the second call
    first_layer = loaded.network.layers[0]
    assert CPU.operator(first_layer) is CPU.operator(first_layer)
    assert again.shape == x.shape


def test_integer_tensor_is_explained_in_float64_and_mistakes_are_lrp_errors():
    loaded = lrp_num.load_builtin("digits-mlp")
    x = (loaded.test_images[:2] * 16).round().astype(np.int64)
    relevance = lrp_num.explain(loaded.network, _tensor(x), rule="zplus")
    assert relevance.dtype == torch.float64
    bad = _tensor(loaded.test_images[:2].copy())
    bad[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="NaN"):
        lrp_num.explain(loaded.network, bad, rule="zplus")
    with pytest.raises(ShapeError, match="shape"):
        lrp_num.explain(loaded.network, torch.zeros((2, 63), dtype=torch.float64), rule="zplus")
    with pytest.raises(ShapeError, match="empty"):
        lrp_num.explain(loaded.network, torch.zeros((0, 64), dtype=torch.float64), rule="zplus")


def test_a_tensor_that_requires_grad_gives_relevance_without_an_autograd_graph():
    loaded = lrp_num.load_builtin("digits-mlp")
    x = _tensor(loaded.test_images[:2].copy()).requires_grad_(True)
    relevance = lrp_num.explain(loaded.network, x, rule="zplus")
    assert not relevance.requires_grad and relevance.grad_fn is None
    np.testing.assert_allclose(relevance.numpy(), lrp_num.explain(loaded.network, loaded.test_images[:2],
                                                                  rule="zplus"), rtol=1e-13)


def test_torch_input_outside_the_orthant_is_a_domain_error():
    from lrp_num.errors import DomainError
    loaded = lrp_num.load_builtin("digits-mlp")
    x = _tensor(loaded.test_images[:2] - 1.0)
    with pytest.raises(DomainError, match="negative"):
        lrp_num.explain(loaded.network, x, rule="zplus")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_tensor_stays_on_the_gpu_and_equals_cpu():
    loaded = lrp_num.load_builtin("digits-resnet")
    x = _tensor(loaded.test_images[:4])
    for method in _methods():
        on_cpu = lrp_num.explain(loaded.network, x, input_domain=loaded.input_domain, **method)
        on_gpu = lrp_num.explain(loaded.network, x.cuda(), input_domain=loaded.input_domain, **method)
        assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.float64
        np.testing.assert_allclose(on_gpu.cpu().numpy(), on_cpu.numpy(), rtol=1e-9,
                                   atol=1e-12 * float(on_cpu.abs().max()))


def test_dlpack_bridge_runs_a_torch_operator_on_another_librarys_arrays():
    """The bridge the CuPy backend puts in front of torch's convolutions, here NumPy <-> torch:
    the kernel sees only the outer library's arrays and gives what the layer gives."""
    from lrp_num.backends.common import DLPackBridge
    layer = LINEAR_LAYERS[2]  # a grouped, strided, padded convolution
    bridge = DLPackBridge(CPU.operator(layer), torch.from_dlpack, np.from_dlpack)
    x = np.random.default_rng(9).uniform(size=(2, 3, 7, 8))
    relevance_out = np.random.default_rng(10).uniform(size=layer(x).shape)
    zplus = lrp_num.engine.kernels.load_module("zplus")
    result = zplus.relevance(bridge, x, relevance_out)
    assert isinstance(result, np.ndarray)
    np.testing.assert_allclose(result, zplus.relevance(layer, x, relevance_out), rtol=1e-12)
    pool = MaxPool2d(3, 2, padding=1)
    maxpool = lrp_num.engine.kernels.load_module("maxpool")
    relevance_out = np.ones(pool(x).shape)
    pooled = DLPackBridge(CPU.operator(pool), torch.from_dlpack, np.from_dlpack)
    np.testing.assert_allclose(maxpool.relevance(pooled, x, relevance_out),
                               maxpool.relevance(pool, x, relevance_out), atol=1e-15)


def test_graph_with_concat_add_affine_and_pools_on_torch_equals_numpy():
    """The graph operations the built-in models lack: Concat (and its routing back), a
    ChannelAffine from an unfolded batch norm, sum and adaptive pooling, three addends."""
    from lrp_num import Graph, Node
    from lrp_num.layers import Add, BatchNorm, Concat, Flatten, ReLU
    rng = np.random.default_rng(11)
    graph = Graph([
        Node("a", Conv2d(rng.normal(size=(3, 2, 3, 3)), -rng.random(3), padding=1), "input"),
        Node("ra", ReLU(), "a"),
        Node("b", Conv2d(rng.normal(size=(2, 2, 1, 1)), -rng.random(2)), "input"),
        Node("rb", ReLU(), "b"),
        Node("cat", Concat(axis=1), ("ra", "rb")),
        Node("bn", BatchNorm(rng.random(5) + 0.5, rng.normal(size=5), rng.normal(size=5),
                             rng.random(5) + 0.5), "cat"),
        Node("sum", Add(), ("bn", "cat", "cat")),
        Node("r", ReLU(), "sum"),
        Node("pool", SumPool2d(2), "r"),
        Node("adapt", AdaptiveAvgPool2d((2, 3)), "pool"),
        Node("flat", Flatten(), "adapt"),
        Node("fc", Dense(rng.normal(size=(30, 4)), np.zeros(4)), "flat"),
    ], input_shape=(2, 8, 9))
    x = rng.random((3, 2, 8, 9))
    for method in ({"rule": "epsilon"}, {"composite": "epsilon-plus"}, {"rule": "w2"}):
        expected = lrp_num.explain_details(graph, x, **method)
        result = lrp_num.explain_details(graph, _tensor(x), **method)
        np.testing.assert_allclose(result.relevance.numpy(), expected.relevance,
                                   rtol=0, atol=1e-12 * np.abs(expected.relevance).max())
        for mine, theirs in zip(result.layers, expected.layers):
            np.testing.assert_allclose(mine.relevance_in.numpy(), theirs.relevance_in, rtol=1e-10)
