"""Layers that graphs bring: padded and ceil-mode pooling, adaptive and global average pooling,
grouped convolution, the per-channel affine layer and the Add operator, against direct loops
written here (and PyTorch where installed), adjointness, and their relevance."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lrp_num import explain
from lrp_num.layers.affine import affine_from_batchnorm
from lrp_num.layers.branching import Add, StackedAddends
from lrp_num.errors import ShapeError
from lrp_num.layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm, ChannelAffine, Concat, Conv2d,
                            Flatten, GlobalAvgPool, MaxPool2d, SumPool2d)
from lrp_num.engine.network import Sequential
from lrp_num.layers.operators import WEIGHT_TRANSFORMS

RNG = np.random.default_rng(77)


# ---- direct loops, following PyTorch's definitions ------------------------------------------------

def out_size(size, k, s, p, ceil):
    if not ceil:
        return (size + 2 * p - k) // s + 1
    o = -(-(size + 2 * p - k) // s) + 1
    return o - 1 if (o - 1) * s >= size + p else o


def loop_pool(x, k, s, p, ceil, kind, count_include_pad=True):
    n, c, h, w = x.shape
    ho, wo = out_size(h, k, s, p, ceil), out_size(w, k, s, p, ceil)
    z = np.zeros((n, c, ho, wo))
    for i, j in itertools.product(range(ho), range(wo)):
        h0, w0 = i * s - p, j * s - p
        h1, w1 = min(h0 + k, h + p), min(w0 + k, w + p)
        size = (h1 - h0) * (w1 - w0)
        rows, cols = range(max(h0, 0), min(h1, h)), range(max(w0, 0), min(w1, w))
        window = x[:, :, rows.start:rows.stop, cols.start:cols.stop].reshape(n, c, -1)
        if kind == "max":
            z[:, :, i, j] = window.max(axis=2)
        elif kind == "sum":
            z[:, :, i, j] = window.sum(axis=2)
        else:
            z[:, :, i, j] = window.sum(axis=2) / (size if count_include_pad else len(rows) * len(cols))
    return z


def loop_adaptive(x, out):
    n, c, h, w = x.shape
    z = np.zeros((n, c, *out))
    for i, j in itertools.product(range(out[0]), range(out[1])):
        h0, h1 = (i * h) // out[0], -(-((i + 1) * h) // out[0])
        w0, w1 = (j * w) // out[1], -(-((j + 1) * w) // out[1])
        z[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return z


pool_cases = st.tuples(st.integers(1, 4), st.integers(1, 3), st.booleans(), st.integers(3, 8),
                       st.integers(3, 8)).flatmap(
    lambda t: st.tuples(st.just(t), st.integers(0, t[0] // 2)))


@given(pool_cases, st.sampled_from(["max", "sum", "avg", "avg_exclude"]))
def test_padded_and_ceil_mode_pooling_equal_the_direct_loop(case, kind):
    (k, s, ceil, h, w), p = case
    if out_size(min(h, w), k, s, p, ceil) < 1:
        return
    x = RNG.standard_normal((2, 2, h, w))
    layer = {"max": MaxPool2d, "sum": SumPool2d}.get(kind, AvgPool2d)
    options = {"count_include_pad": False} if kind == "avg_exclude" else {}
    pool = layer(k, s, padding=p, ceil_mode=ceil, **options)
    expected = loop_pool(x, k, s, p, ceil, kind.split("_")[0], kind != "avg_exclude")
    np.testing.assert_allclose(pool(x), expected, rtol=1e-12, atol=1e-12)
    assert pool.output_shape(x.shape[1:]) == expected.shape[1:]
    if kind != "max":  # linear: the transpose is the exact adjoint, for every weight transform
        s_out = RNG.standard_normal(expected.shape)
        for g in WEIGHT_TRANSFORMS:
            np.testing.assert_allclose(np.sum(pool.forward(x, g) * s_out), np.sum(x * pool.transpose(s_out, g)),
                                       rtol=1e-10, atol=1e-10)




@pytest.mark.parametrize(("k", "s", "p", "ceil", "include"), [
    (3, 2, 1, False, True), (3, 2, 1, True, True), (2, 2, 0, True, True), (3, 2, 1, True, False),
    (2, 1, 1, False, False), (3, 3, 1, True, True)])
def test_pooling_equals_torch(k, s, p, ceil, include):
    torch = pytest.importorskip("torch")
    x = RNG.standard_normal((2, 3, 7, 6))
    t = torch.tensor(x)
    expected_max = torch.nn.functional.max_pool2d(t, k, s, p, ceil_mode=ceil).numpy()
    expected_avg = torch.nn.functional.avg_pool2d(t, k, s, p, ceil_mode=ceil, count_include_pad=include).numpy()
    np.testing.assert_allclose(MaxPool2d(k, s, padding=p, ceil_mode=ceil)(x), expected_max, rtol=1e-12)
    np.testing.assert_allclose(AvgPool2d(k, s, padding=p, ceil_mode=ceil, count_include_pad=include)(x),
                               expected_avg, rtol=1e-12)


def test_padded_max_pool_relevance_never_reaches_padding_and_conserves():
    pool = MaxPool2d(3, 2, padding=1, ceil_mode=True)
    x = -RNG.random((2, 1, 5, 5))  # all negative: the -inf padding must still lose
    network = Sequential([pool, Flatten()], input_shape=(1, 5, 5))
    top = RNG.random((2, 9))
    relevance = explain(network, x, rule="zplus", target=top)
    np.testing.assert_allclose(relevance.reshape(2, -1).sum(axis=1), top.sum(axis=1), rtol=1e-12)
    windows = pool.patches(x)
    assert np.isfinite(windows.max(axis=-1)).all()
    # every window's relevance goes to its own maximum, found here by the direct loop
    expected = np.zeros_like(x)
    for n, i, j in itertools.product(range(2), range(3), range(3)):
        h0, w0 = 2 * i - 1, 2 * j - 1
        rows, cols = slice(max(h0, 0), min(h0 + 3, 5)), slice(max(w0, 0), min(w0 + 3, 5))
        block = x[n, 0, rows, cols]
        winners = block == block.max()
        expected[n, 0, rows, cols] += winners / winners.sum() * top[n, 3 * i + j]
    np.testing.assert_allclose(relevance, expected, rtol=1e-12)


def test_padded_average_pool_relevance_is_the_z_rule():
    pool = AvgPool2d(3, 2, padding=1, count_include_pad=True)
    x = RNG.random((1, 1, 4, 4)) + 0.1
    top = RNG.random((1, 4))
    relevance = explain(Sequential([pool, Flatten()], input_shape=(1, 4, 4)), x, rule="zplus", target=top)
    expected = np.zeros_like(x)
    for i, j in itertools.product(range(2), range(2)):
        rows, cols = slice(max(2 * i - 1, 0), 2 * i + 2), slice(max(2 * j - 1, 0), 2 * j + 2)
        block = x[0, 0, rows, cols]
        expected[0, 0, rows, cols] += block / block.sum() * top[0, 2 * i + j]  # the weight cancels
    np.testing.assert_allclose(relevance, expected, rtol=1e-12)


def test_pooling_geometry_errors():
    with pytest.raises(ShapeError, match="at most half the kernel"):
        MaxPool2d(2, padding=2)
    with pytest.raises(ShapeError, match="ceil_mode must be True or False"):
        AvgPool2d(2, ceil_mode="yes")
    assert repr(MaxPool2d(3, 2, padding=1, ceil_mode=True)) == "MaxPool2d(3x3, stride (2, 2), padding (1, 1), ceil_mode)"
    assert repr(MaxPool2d(2)) == "MaxPool2d(2x2, stride (2, 2))"


@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 4), st.integers(1, 4))
def test_adaptive_pool_equals_the_direct_loop_and_is_adjoint(h, w, oh, ow):
    x = RNG.standard_normal((2, 3, h, w))
    pool = AdaptiveAvgPool2d((oh, ow))
    np.testing.assert_allclose(pool(x), loop_adaptive(x, (oh, ow)), rtol=1e-12, atol=1e-12)
    s_out = RNG.standard_normal((2, 3, oh, ow))
    for g in WEIGHT_TRANSFORMS:
        np.testing.assert_allclose(np.sum(pool.forward(x, g) * s_out), np.sum(x * pool.transpose(s_out, g)),
                                   rtol=1e-10, atol=1e-10)


def test_adaptive_and_global_pool_equal_torch():
    torch = pytest.importorskip("torch")
    x = RNG.standard_normal((2, 3, 7, 5))
    for size in ((1, 1), (2, 3), (7, 5), (4, 4)):
        expected = torch.nn.functional.adaptive_avg_pool2d(torch.tensor(x), size).numpy()
        np.testing.assert_allclose(AdaptiveAvgPool2d(size)(x), expected, rtol=1e-12)
    np.testing.assert_allclose(GlobalAvgPool()(x), x.mean(axis=(2, 3), keepdims=True), rtol=1e-12)


def test_global_pool_relevance_is_proportional_to_the_input():
    x = RNG.random((2, 3, 4, 4)) + 0.1
    top = RNG.random((2, 3))
    relevance = explain(Sequential([GlobalAvgPool(), Flatten()], input_shape=(3, 4, 4)), x, rule="zplus", target=top)
    np.testing.assert_allclose(relevance, x / x.sum(axis=(2, 3), keepdims=True) * top[:, :, None, None], rtol=1e-12)


# ---- grouped convolution ------------------------------------------------------------------------------

@given(st.sampled_from([(1, 1), (2, 2), (4, 2), (4, 4), (6, 3)]), st.integers(1, 2), st.integers(0, 1),
       st.integers(1, 3))
def test_grouped_conv_equals_per_group_convolutions(channels_groups, stride, padding, multiplier):
    c_in, groups = channels_groups
    c_out = groups * multiplier
    weight = RNG.standard_normal((c_out, c_in // groups, 3, 3))
    bias = RNG.standard_normal(c_out)
    grouped = Conv2d(weight, bias, stride, padding, groups=groups)
    x = RNG.standard_normal((2, c_in, 5, 6))
    per_group = [Conv2d(weight[g * multiplier:(g + 1) * multiplier], bias[g * multiplier:(g + 1) * multiplier],
                        stride, padding)(x[:, g * (c_in // groups):(g + 1) * (c_in // groups)])
                 for g in range(groups)]
    np.testing.assert_allclose(grouped(x), np.concatenate(per_group, axis=1), rtol=1e-12, atol=1e-12)
    # the dense equivalent: zeros off the groups
    full = np.zeros((c_out, c_in, 3, 3))
    for o in range(c_out):
        g = o // multiplier
        full[o, g * (c_in // groups):(g + 1) * (c_in // groups)] = weight[o]
    dense = Conv2d(full, bias, stride, padding)
    s_out = RNG.standard_normal(grouped(x).shape)
    for g in WEIGHT_TRANSFORMS:
        if g != "ones":  # "ones" marks connected pairs only: the zeros of `full` are no connections
            np.testing.assert_allclose(grouped.transpose_to(s_out, x.shape[2:], g),
                                       dense.transpose_to(s_out, x.shape[2:], g), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(np.sum(grouped.forward(x, g) * s_out), np.sum(x * grouped.transpose(s_out, g)),
                                   rtol=1e-10, atol=1e-10)
    x_pos = np.abs(x)
    for rule in ("zplus", "lrp0", "w2"):
        np.testing.assert_allclose(explain(Sequential([grouped, Flatten()]), x_pos, rule=rule, target=0),
                                   explain(Sequential([dense, Flatten()]), x_pos, rule=rule, target=0),
                                   rtol=1e-9, atol=1e-12)


def test_depthwise_conv_equals_torch_and_folds_batchnorm():
    torch = pytest.importorskip("torch")
    weight, bias = RNG.standard_normal((6, 1, 3, 3)), RNG.standard_normal(6)
    conv = Conv2d(weight, bias, 2, 1, groups=6)
    x = RNG.standard_normal((2, 6, 7, 7))
    expected = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(weight), torch.tensor(bias), 2, 1, groups=6)
    np.testing.assert_allclose(conv(x), expected.numpy(), rtol=1e-12, atol=1e-12)
    assert "groups 6" in repr(conv) and conv.in_channels == 6
    bn = BatchNorm(RNG.random(6) + 0.5, RNG.standard_normal(6), RNG.standard_normal(6), RNG.random(6) + 0.5)
    folded = Sequential([conv, bn])
    assert folded.layers[0].groups == 6
    np.testing.assert_allclose(folded(x), bn(conv(x)), rtol=1e-12, atol=1e-12)
    with pytest.raises(ShapeError, match="groups must be a positive int dividing C_out = 6"):
        Conv2d(weight, groups=4)


# ---- affine, Add, Concat --------------------------------------------------------------------------------

def test_channel_affine_is_the_batchnorm_and_a_diagonal_operator():
    bn = BatchNorm(RNG.random(3) + 0.5, RNG.standard_normal(3), RNG.standard_normal(3), RNG.random(3) + 0.5, eps=1e-3)
    affine = ChannelAffine.from_batchnorm(bn)
    x = RNG.standard_normal((2, 3, 4, 4))
    np.testing.assert_allclose(affine(x), bn(x), rtol=1e-12, atol=1e-12)
    scale, shift = affine_from_batchnorm(bn)
    np.testing.assert_allclose(scale, bn.gamma / np.sqrt(bn.var + bn.eps), rtol=1e-14)
    np.testing.assert_allclose(shift, bn.beta - bn.mean * scale, rtol=1e-12, atol=1e-14)
    s_out = RNG.standard_normal(x.shape)
    for g in WEIGHT_TRANSFORMS:
        np.testing.assert_allclose(np.sum(affine.forward(x, g) * s_out), np.sum(x * affine.transpose(s_out, g)),
                                   rtol=1e-10)
    np.testing.assert_allclose(affine.bias_like(x), np.broadcast_to(shift[None, :, None, None], x.shape))
    np.testing.assert_allclose(ChannelAffine.from_batchnorm(bn)(x[:, :, 0, 0]), bn(x[:, :, 0, 0]), rtol=1e-12)
    with pytest.raises(ShapeError, match="expects inputs of shape \\(3, ...\\)"):
        affine(np.ones((1, 2)))


def test_add_operator_is_the_unit_weight_sum_of_stacked_addends():
    a = [RNG.standard_normal((2, 3, 2)) for _ in range(3)]
    np.testing.assert_allclose(Add()(*a), a[0] + a[1] + a[2])
    operator = Add.operator(3)
    assert isinstance(operator, StackedAddends)
    stacked = Add.stack(a)
    assert stacked.shape == (2, 3, 3, 2)
    s_out = RNG.standard_normal((2, 3, 2))
    for g in WEIGHT_TRANSFORMS:
        np.testing.assert_allclose(np.sum(operator.forward(stacked, g) * s_out),
                                   np.sum(stacked * operator.transpose(s_out, g)), rtol=1e-10)
    np.testing.assert_array_equal(operator.bias_like(s_out), 0)
    with pytest.raises(ShapeError, match="addends of one shape"):
        Add()(np.ones((1, 2)), np.ones((1, 3)))
    with pytest.raises(ShapeError, match="different batch sizes"):
        Add()(np.ones((1, 2)), np.ones((2, 2)))


def test_concat_forward_and_split():
    a, b = RNG.standard_normal((2, 1, 3)), RNG.standard_normal((2, 2, 3))
    cat = Concat(1)
    np.testing.assert_array_equal(cat(a, b), np.concatenate([a, b], axis=1))
    parts = cat.split(cat(a, b), [a.shape[1:], b.shape[1:]])
    np.testing.assert_array_equal(parts[0], a)
    np.testing.assert_array_equal(parts[1], b)
    np.testing.assert_array_equal(Concat(-1)(a, a), np.concatenate([a, a], axis=2))
    with pytest.raises(ShapeError, match="non-zero int"):
        Concat(0)
