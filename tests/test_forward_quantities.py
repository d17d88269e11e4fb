"""Kernels given the forward pass's quantities (a linear layer's z, softmax s, a matrix product's
C, a norm's y) return the relevance they return without them, bit for bit; a quantity of the
wrong shape is a ShapeError; the engine hands the trace's outputs to the kernels that take them.
"""

from __future__ import annotations

import numpy as np
import pytest

from lrp_num import explain, load_builtin
from lrp_num.engine import attention_rules
from lrp_num.engine import explain as explain_module
from lrp_num.engine.kernels import load_kernel
from lrp_num.errors import ShapeError
from lrp_num.layers import Conv2d, Dense, LayerNorm, MatMul, RMSNorm, Softmax
from lrp_num.layers.attention import TokenDense

RNG = np.random.default_rng(15)


def _array(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("rule", ["epsilon", "bias_neuron"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ratio_kernel_given_z_equals_recomputing_it(rule, dtype):
    kernel = load_kernel(rule)
    layers = [(Dense(_array(6, 5), _array(5)), _array(4, 6, dtype=dtype)),
              (TokenDense(_array(6, 5), _array(5)), _array(3, 7, 6, dtype=dtype)),
              (Dense(_array(6, 5)), _array(4, 6, dtype=dtype)),  # no bias
              (Conv2d(_array(3, 2, 3, 3), _array(3), padding=1), _array(2, 2, 5, 5, dtype=dtype))]
    for layer, x in layers:
        z = layer(x)
        upper = _array(*z.shape, dtype=dtype)
        alone = kernel(layer, x, upper)
        given = kernel(layer, x, upper, z=z)
        assert given.dtype == alone.dtype
        np.testing.assert_array_equal(given, alone)
        assert np.array_equal(z, layer(x))  # the trace's array is not written to


def test_ratio_kernel_takes_z_only_where_it_is_the_denominator():
    import inspect

    assert "z" in inspect.signature(load_kernel("epsilon")).parameters
    for rule in ("zplus", "lrp0", "gamma", "w2", "alphabeta"):  # denominators without the bias, or other sums
        assert "z" not in inspect.signature(load_kernel(rule)).parameters


def test_softmax_kernel_given_s_equals_recomputing_it():
    kernel = load_kernel("softmax")
    x, upper = _array(2, 3, 5, 5), _array(2, 3, 5, 5)
    for axis in (-1, 2):
        layer = Softmax(axis=axis)
        batch_axis = layer.batch_axis(x.ndim - 1)
        np.testing.assert_array_equal(kernel(x, upper, axis=batch_axis, s=layer(x)),
                                      kernel(x, upper, axis=batch_axis))
    with pytest.raises(ShapeError, match="s has shape"):
        kernel(x, upper, s=x[:, :1])


@pytest.mark.parametrize("transpose_b", [False, True])
@pytest.mark.parametrize("scale", [1.0, 0.5, 1 / np.sqrt(8)])
def test_matmul_kernel_given_the_product_equals_recomputing_it(transpose_b, scale):
    kernel = load_kernel("matmul_epsilon")
    layer = MatMul(transpose_b=transpose_b, scale=scale)
    a, b = _array(2, 4, 6, 3), _array(2, 4, 6, 3) if transpose_b else _array(2, 4, 3, 6)
    c = layer(a, b)
    upper = _array(*c.shape)
    first = layer.scaled_first(a)
    alone = kernel(first, b, upper, transpose_b=transpose_b)
    given = kernel(first, b, upper, transpose_b=transpose_b, product=c)
    for one, other in zip(alone, given):
        np.testing.assert_array_equal(one, other)
    with pytest.raises(ShapeError, match="product has shape"):
        kernel(first, b, upper, transpose_b=transpose_b, product=c[..., :1])


@pytest.mark.parametrize("rule", ["norm_cp", "norm_full"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_norm_kernel_given_y_equals_recomputing_it(rule, dtype):
    kernel = load_kernel(rule)
    x = _array(2, 5, 8, dtype=dtype)
    upper = _array(2, 5, 8, dtype=dtype)
    for layer in (LayerNorm(_array(8), _array(8)), RMSNorm(_array(8))):
        y = layer(x)
        np.testing.assert_array_equal(kernel(layer, x, upper, y=y), kernel(layer, x, upper))
        with pytest.raises(ShapeError, match="y has shape"):
            kernel(layer, x, upper, y=y[..., :3])


def test_ratio_kernel_rejects_z_of_the_wrong_shape():
    layer, x = Dense(_array(6, 5), _array(5)), _array(4, 6)
    with pytest.raises(ShapeError, match="z"):
        load_kernel("epsilon")(layer, x, _array(4, 5), z=_array(4, 3))


def _without_forward_quantities(monkeypatch):
    """The engine with no kernel handed the trace's outputs (every one recomputed)."""
    monkeypatch.setattr(explain_module, "_OUTPUT_KEYWORDS", ())
    monkeypatch.setattr(attention_rules, "FORWARD_QUANTITIES", {})


def test_explain_of_digits_vit_is_unchanged_by_the_trace_quantities(monkeypatch):
    torch = pytest.importorskip("torch")
    from lrp_num.io.torch_vit import load_digits_vit_torch, vit_graph

    model, extras = load_digits_vit_torch(dtype=torch.float32)
    graph = vit_graph(model)
    x = extras["test_images"].astype(np.float32)
    handed = []
    original = explain_module._kernel

    def spying(rule, folder, layer):
        kernel = original(rule, folder, layer)

        def relevance(*arguments, **keywords):
            handed.extend(name for name in ("z", "y", "s", "product") if name in keywords)
            return kernel.relevance(*arguments, **keywords)

        return kernel._replace(relevance=relevance)

    monkeypatch.setattr(explain_module, "_kernel", spying)
    given = explain(graph, x, composite="attnlrp")
    # 2 blocks: q, k, v, out, fc1, fc2 (and the patch embedding and the head), 2 norms each and
    # the final one, a softmax and two matrix products each
    assert (handed.count("z"), handed.count("y"), handed.count("s"), handed.count("product")) \
        == (14, 5, 2, 4)
    monkeypatch.setattr(explain_module, "_kernel", original)
    _without_forward_quantities(monkeypatch)
    alone = explain(graph, x, composite="attnlrp")
    np.testing.assert_array_equal(given, alone)


@pytest.mark.parametrize("rule", ["epsilon", "bias_neuron", "zplus"])
def test_explain_of_a_relu_cnn_is_unchanged_by_the_trace_quantities(monkeypatch, rule):
    model = load_builtin("digits-cnn")
    x = model.extra["test_images"].astype(np.float64)
    given = explain(model.network, x, rule=rule)
    _without_forward_quantities(monkeypatch)
    np.testing.assert_array_equal(given, explain(model.network, x, rule=rule))
