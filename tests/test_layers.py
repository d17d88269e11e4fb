"""Layers against slow loop replicas written here, adjointness of every linear operator, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from lrp_num.errors import NonFiniteError, ShapeError
from lrp_num.layers import (
    AvgPool2d, BatchNorm, Conv2d, Dense, Flatten, Identity, MaxPool2d, ReLU, SumPool2d,
)
from lrp_num.layers.operators import WEIGHT_TRANSFORMS

RNG = np.random.default_rng(2024)


# ---- slow replicas, following the definitions ---------------------------------------------------

def slow_dense(x, w, b):
    n_in, n_out = w.shape
    z = np.zeros((len(x), n_out))
    for n in range(len(x)):
        for j in range(n_out):
            z[n, j] = sum(x[n, i] * w[i, j] for i in range(n_in)) + b[j]
    return z


def slow_conv(x, k, b, stride, padding):
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, w = x.shape
    co, _, kh, kw = k.shape
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    z = np.zeros((n, co, ho, wo))
    for m, o, p, q in itertools.product(range(n), range(co), range(ho), range(wo)):
        total = b[o]
        for ci, u, v in itertools.product(range(c), range(kh), range(kw)):
            i, j = p * sh + u - ph, q * sw + v - pw
            if 0 <= i < h and 0 <= j < w:
                total += x[m, ci, i, j] * k[o, ci, u, v]
        z[m, o, p, q] = total
    return z


def slow_pool(x, kernel, stride, reduce):
    (kh, kw), (sh, sw) = kernel, stride
    n, c, h, w = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    z = np.zeros((n, c, ho, wo))
    for m, ch, p, q in itertools.product(range(n), range(c), range(ho), range(wo)):
        z[m, ch, p, q] = reduce([x[m, ch, p * sh + u, q * sw + v] for u in range(kh) for v in range(kw)])
    return z


# ---- forward maps --------------------------------------------------------------------------------

def test_dense_forward_matches_definition_and_torch_layout():
    w, b, x = RNG.standard_normal((5, 3)), RNG.standard_normal(3), RNG.standard_normal((4, 5))
    layer = Dense(w, b)
    np.testing.assert_allclose(layer(x), slow_dense(x, w, b), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(Dense.from_torch_layout(w.T, b)(x), layer(x))
    np.testing.assert_allclose(layer.forward(x) + layer.bias_like(layer.forward(x)), layer(x), atol=1e-14)
    assert layer.n_in == 5 and layer.n_out == 3


@pytest.mark.parametrize(
    ("shape", "kernel", "stride", "padding"),
    [((2, 3, 7, 6), (4, 3, 3, 3), 1, 0), ((1, 2, 8, 9), (3, 2, 3, 2), 2, 1),
     ((2, 1, 9, 7), (2, 1, 2, 3), (3, 2), (2, 1)), ((1, 2, 5, 5), (2, 2, 5, 5), 1, 2)],
)
def test_conv_forward_matches_definition(shape, kernel, stride, padding):
    x, k, b = RNG.standard_normal(shape), RNG.standard_normal(kernel), RNG.standard_normal(kernel[0])
    layer = Conv2d(k, b, stride, padding)
    expected = slow_conv(x, k, b, layer.stride, layer.padding)
    np.testing.assert_allclose(layer(x), expected, rtol=1e-12, atol=1e-12)
    assert layer.output_shape(shape[1:]) == expected.shape[1:]


@pytest.mark.parametrize(("kernel", "stride"), [(2, None), (3, 1), ((2, 3), (1, 2)), (3, 2)])
def test_pools_match_definition(kernel, stride):
    x = RNG.standard_normal((2, 3, 7, 8))
    for layer, reduce in [(SumPool2d(kernel, stride), sum), (AvgPool2d(kernel, stride), np.mean),
                          (MaxPool2d(kernel, stride), max)]:
        np.testing.assert_allclose(layer(x), slow_pool(x, layer.kernel, layer.stride, reduce), rtol=1e-12, atol=1e-12)
        assert not layer.bias_like(layer(x)).any() if not isinstance(layer, MaxPool2d) else True


def test_elementwise_layers():
    x = RNG.standard_normal((3, 2, 4, 5))
    np.testing.assert_array_equal(ReLU()(x), np.where(x > 0, x, 0))
    np.testing.assert_array_equal(Identity()(x), x)
    flat = Flatten()(x)
    assert flat.shape == (3, 40)
    assert flat[1, 2 * 5 + 3] == x[1, 0, 2, 3]  # C order, like torch.flatten(x, 1)
    assert Flatten().output_shape((2, 4, 5)) == (40,)


# ---- adjointness <forward(a, g), s> == <a, transpose(s, g)> --------------------------------------

def assert_adjoint(op, a, s, g):
    lhs = np.vdot(op.forward(a, g), s)
    rhs = np.vdot(a, op.transpose(s, g))
    scale = np.abs(op.forward(a, g)).ravel() @ np.abs(s).ravel() + 1.0
    assert abs(lhs - rhs) <= 1e-12 * scale, (g, lhs, rhs)


@pytest.mark.parametrize("g", sorted(WEIGHT_TRANSFORMS))
def test_dense_adjoint(g):
    layer = Dense(RNG.standard_normal((6, 4)), RNG.standard_normal(4))
    assert_adjoint(layer, RNG.standard_normal((3, 6)), RNG.standard_normal((3, 4)), g)


conv_cases = st.fixed_dictionaries({
    "n": st.integers(1, 2), "c_in": st.integers(1, 3), "c_out": st.integers(1, 3),
    "kh": st.integers(1, 4), "kw": st.integers(1, 4), "sh": st.integers(1, 3), "sw": st.integers(1, 3),
    "ph": st.integers(0, 2), "pw": st.integers(0, 2), "extra_h": st.integers(0, 4), "extra_w": st.integers(0, 4),
    "g": st.sampled_from(sorted(WEIGHT_TRANSFORMS)), "seed": st.integers(0, 2**16),
})


@given(conv_cases)
@example({"n": 1, "c_in": 2, "c_out": 2, "kh": 3, "kw": 3, "sh": 2, "sw": 2, "ph": 1, "pw": 1,
          "extra_h": 1, "extra_w": 0, "g": "identity", "seed": 0})  # rows no window reaches
def test_conv_adjoint_any_geometry(case):
    rng = np.random.default_rng(case["seed"])
    h, w = case["kh"] + case["extra_h"], case["kw"] + case["extra_w"]
    layer = Conv2d(rng.standard_normal((case["c_out"], case["c_in"], case["kh"], case["kw"])), None,
                   (case["sh"], case["sw"]), (case["ph"], case["pw"]))
    a = rng.standard_normal((case["n"], case["c_in"], h, w))
    s = rng.standard_normal(layer.forward(a).shape)
    assert layer.transpose(s, case["g"]).shape == a.shape
    assert_adjoint(layer, a, s, case["g"])


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(0, 3),
       st.sampled_from(sorted(WEIGHT_TRANSFORMS)), st.booleans())
def test_sum_and_avg_pool_adjoint(kh, kw, sh, sw, extra, g, average):
    layer = (AvgPool2d if average else SumPool2d)((kh, kw), (sh, sw))
    a = RNG.standard_normal((2, 2, kh + extra, kw + extra + 1))
    s = RNG.standard_normal(layer.forward(a).shape)
    assert_adjoint(layer, a, s, g)


def test_pool_weight_transform_applies_to_the_constant():
    x = np.abs(RNG.standard_normal((1, 1, 4, 4)))
    avg = AvgPool2d(2)
    np.testing.assert_allclose(avg.forward(x, "ones"), SumPool2d(2)(x))
    np.testing.assert_allclose(avg.forward(x, "square"), SumPool2d(2)(x) / 16)
    assert not avg.forward(x, "negative").any()


def test_conv_transpose_to_explicit_input_size():
    layer = Conv2d(RNG.standard_normal((2, 1, 3, 3)), None, stride=2)
    s = RNG.standard_normal((1, 2, 3, 3))
    assert layer.transpose(s).shape == (1, 1, 7, 7)  # no forward seen for this size yet: smallest input
    assert layer.transpose_to(s, (8, 8)).shape == (1, 1, 8, 8)  # row and column 7 unreached
    assert not layer.transpose_to(s, (8, 8))[..., 7, :].any()
    layer.forward(np.ones((1, 1, 8, 8)))
    assert layer.transpose(s).shape == (1, 1, 8, 8)  # the size seen in the forward pass
    with pytest.raises(ShapeError, match="does not come from input"):
        layer.transpose_to(s, (9, 9))


# ---- dtypes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype):
    x = RNG.standard_normal((2, 2, 6, 6)).astype(dtype)
    conv = Conv2d(RNG.standard_normal((3, 2, 3, 3)), RNG.standard_normal(3), 1, 1)
    for layer in [conv, SumPool2d(2), AvgPool2d(2), MaxPool2d(2), ReLU(), Identity(), Flatten(),
                  BatchNorm(*(RNG.random((4, 2)) + 0.5))]:
        assert layer(x).dtype == dtype, layer
    for g in WEIGHT_TRANSFORMS:
        assert conv.forward(x, g).dtype == dtype
        assert conv.transpose(conv(x), g).dtype == dtype
        assert conv.bias_like(conv(x)).dtype == dtype
    dense = Dense(RNG.standard_normal((4, 3)))
    v = RNG.standard_normal((2, 4)).astype(dtype)
    assert dense(v).dtype == dense.forward(v, "positive").dtype == dense.transpose(dense(v)).dtype == dtype


def test_integer_inputs_become_float64():
    assert Dense(np.eye(2))(np.array([[1, 2]])).dtype == np.float64
    assert MaxPool2d(2)(np.ones((1, 1, 2, 2), dtype=np.int32)).dtype == np.float64


# ---- max pooling patches ---------------------------------------------------------------------------

@pytest.mark.parametrize(("kernel", "stride", "hw"), [(2, None, (6, 6)), (3, 1, (5, 6)), ((3, 2), (2, 1), (7, 5))])
def test_maxpool_patches_and_unpatch(kernel, stride, hw):
    layer = MaxPool2d(kernel, stride)
    x = RNG.standard_normal((2, 3, *hw))
    patches = layer.patches(x)
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    ho, wo = (hw[0] - kh) // sh + 1, (hw[1] - kw) // sw + 1
    assert patches.shape == (2, 3, ho, wo, kh * kw)
    for p, q, u, v in itertools.product(range(ho), range(wo), range(kh), range(kw)):
        np.testing.assert_array_equal(patches[:, :, p, q, u * kw + v], x[:, :, p * sh + u, q * sw + v])
    np.testing.assert_array_equal(patches.max(axis=-1), layer(x))
    # unpatch is the scatter-add adjoint; overlapping windows accumulate
    r = RNG.standard_normal(patches.shape)
    back = layer.unpatch(r)
    assert back.shape == x.shape
    expected = np.zeros_like(x)
    for p, q, u, v in itertools.product(range(ho), range(wo), range(kh), range(kw)):
        expected[:, :, p * sh + u, q * sw + v] += r[:, :, p, q, u * kw + v]
    np.testing.assert_allclose(back, expected, atol=1e-12)
    np.testing.assert_allclose(layer.unpatch(r, x.shape), expected, atol=1e-12)


def test_maxpool_unpatch_counts_overlaps_and_conserves_sum():
    layer = MaxPool2d(3, 1)
    ones = np.ones((1, 1, 3, 3, 9))
    counts = layer.unpatch(ones, (1, 1, 5, 5))[0, 0]
    np.testing.assert_array_equal(counts, [[1, 2, 3, 2, 1], [2, 4, 6, 4, 2], [3, 6, 9, 6, 3], [2, 4, 6, 4, 2],
                                           [1, 2, 3, 2, 1]])
    r = RNG.random((2, 2, 3, 3, 9))
    assert np.isclose(layer.unpatch(r, (5, 5)).sum(), r.sum())


def test_maxpool_unpatch_uses_the_input_size_seen_in_forward():
    layer = MaxPool2d(2)
    x = RNG.standard_normal((1, 1, 7, 5))  # last row and column are in no window
    r = np.ones(layer.patches(x).shape)
    back = layer.unpatch(r)
    assert back.shape == x.shape and back[0, 0, 6].sum() == 0 and back[0, 0, :, 4].sum() == 0
    with pytest.raises(ShapeError, match="unpatch expects"):
        layer.unpatch(np.ones((1, 1, 3, 2, 3)))


# ---- batch normalisation ---------------------------------------------------------------------------

def test_batchnorm_forward_matches_definition():
    gamma, beta, mean, var = RNG.standard_normal(3), RNG.standard_normal(3), RNG.standard_normal(3), RNG.random(3)
    layer = BatchNorm(gamma, beta, mean, var, eps=1e-3)
    x = RNG.standard_normal((2, 3, 4, 4))
    expected = np.empty_like(x)
    for c in range(3):
        expected[:, c] = (x[:, c] - mean[c]) / np.sqrt(var[c] + 1e-3) * gamma[c] + beta[c]
    np.testing.assert_allclose(layer(x), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer(x[:, :, 0, 0]), expected[:, :, 0, 0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_batchnorm_fold_preserves_forward(kind):
    if kind == "dense":
        layer, x, n = Dense(RNG.standard_normal((5, 4)), RNG.standard_normal(4)), RNG.standard_normal((3, 5)), 4
    else:
        layer = Conv2d(RNG.standard_normal((4, 2, 3, 3)), RNG.standard_normal(4), 2, 1)
        x, n = RNG.standard_normal((3, 2, 7, 7)), 4
    bn = BatchNorm(RNG.standard_normal(n), RNG.standard_normal(n), RNG.standard_normal(n), RNG.random(n) + 0.1)
    folded = bn.fold_into(layer)
    assert type(folded) is type(layer)
    np.testing.assert_allclose(folded(x), bn(layer(x)), rtol=1e-12, atol=1e-12)


# ---- validation ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: Dense(np.ones(3)), ShapeError, "Dense weight must have 2 dimension"),
        (lambda: Dense(np.ones((3, 2)), np.ones(3)), ShapeError, "Dense bias must have shape (2,)"),
        (lambda: Dense(np.array([[1.0, np.nan]])), NonFiniteError, "Dense weight holds 1 NaN or Inf"),
        (lambda: Dense(np.ones((1, 2)), [0.0, np.inf]), NonFiniteError, "Dense bias"),
        (lambda: Dense(np.array([["a"]])), ShapeError, "numeric array"),
        (lambda: Conv2d(np.ones((2, 1, 3))), ShapeError, "Conv2d weight must have 4 dimension"),
        (lambda: Conv2d(np.ones((2, 1, 3, 3)), np.ones(3)), ShapeError, "Conv2d bias must have shape (2,)"),
        (lambda: Conv2d(np.full((1, 1, 1, 1), np.inf)), NonFiniteError, "Conv2d weight"),
        (lambda: Conv2d(np.ones((1, 1, 1, 1)), stride=0), ShapeError, "Conv2d stride must be an int >= 1"),
        (lambda: Conv2d(np.ones((1, 1, 1, 1)), padding=(1, 2, 3)), ShapeError, "Conv2d padding"),
        (lambda: MaxPool2d(0), ShapeError, "MaxPool2d kernel"),
        (lambda: MaxPool2d("2"), ShapeError, "MaxPool2d kernel must be an int >= 1 or a pair of them, got '2'"),
        (lambda: AvgPool2d(2, 1.5), ShapeError, "AvgPool2d stride"),
        (lambda: BatchNorm(np.ones(2), np.ones(3), np.ones(2), np.ones(2)), ShapeError, "share one shape"),
        (lambda: BatchNorm(*np.ones((3, 2)), [np.nan, 1.0]), NonFiniteError, "BatchNorm var"),
        (lambda: BatchNorm(*np.ones((3, 2)), np.zeros(2), eps=0), ShapeError, "var + eps > 0"),
    ],
)
def test_bad_parameters(make, error, message):
    with pytest.raises(error) as info:
        make()
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("layer", "x", "error", "message"),
    [
        (Dense(np.ones((3, 2))), np.ones((2, 4)), ShapeError, "Dense(3 -> 2) expects inputs of shape (N, 3), got (2, 4)"),
        (Dense(np.ones((3, 2))), np.ones(3), ShapeError, "expects a batch of rank 2"),
        (Dense(np.ones((3, 2))), np.array([[1.0, np.nan, 0.0]]), NonFiniteError, "input of Dense(3 -> 2)"),
        (Conv2d(np.ones((2, 3, 3, 3))), np.ones((1, 2, 5, 5)), ShapeError, "expects inputs of shape (3, H, W)"),
        (Conv2d(np.ones((2, 1, 3, 3))), np.ones((1, 1, 2, 5)), ShapeError, "smaller than the kernel"),
        (Conv2d(np.ones((2, 1, 3, 3))), np.full((1, 1, 3, 3), np.inf), NonFiniteError, "Inf"),
        (MaxPool2d(3), np.ones((1, 1, 2, 2)), ShapeError, "smaller than the window"),
        (SumPool2d(2), np.ones((2, 2)), ShapeError, "SumPool2d(2x2"),
        (ReLU(), np.array([np.nan]), NonFiniteError, "input of ReLU()"),
        (BatchNorm(*np.ones((4, 3))), np.ones((2, 4)), ShapeError, "BatchNorm(3"),
    ],
)
def test_bad_inputs(layer, x, error, message):
    with pytest.raises(error) as info:
        layer(x)
    assert message in str(info.value)


def test_operator_shape_errors():
    dense = Dense(np.ones((3, 2)))
    with pytest.raises(ShapeError, match="transpose expects \\(N, 2\\)"):
        dense.transpose(np.ones((1, 3)))
    conv = Conv2d(np.ones((2, 1, 3, 3)))
    with pytest.raises(ShapeError, match="transpose expects \\(N, 2, Ho, Wo\\)"):
        conv.transpose(np.ones((1, 3, 2, 2)))
    with pytest.raises(KeyError, match="unknown weight transform"):
        conv.forward(np.ones((1, 1, 3, 3)), "cube")


def test_conv_reusing_columns_gives_the_same_results_and_forgets_after_the_block():
    rng = np.random.default_rng(11)
    conv = Conv2d(rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4), stride=2, padding=1)
    x = rng.normal(size=(2, 3, 7, 7))
    expected = {g: conv.forward(x, g) for g in ("identity", "positive", "negative")}
    with conv.reusing_columns():
        for g, value in expected.items():
            np.testing.assert_array_equal(conv.forward(x, g), value)
        other = rng.normal(size=x.shape)  # a different array is never confused with x
        np.testing.assert_array_equal(conv.forward(other), Conv2d(conv.weight, conv.bias, 2, 1).forward(other))
    assert conv._columns is None
    x[0, 0, 0, 0] += 1.0  # outside the block an in-place change is always seen
    assert not np.array_equal(conv.forward(x), expected["identity"])


def test_transformed_weights_copy_only_when_needed():
    """g(W) is cached per (transform, dtype); the identity in the weight's dtype is the weight
    itself (parameters are float64 and read-only), other transforms and casts are new arrays."""
    from lrp_num.layers.operators import TransformedWeights

    weight = Conv2d(np.arange(-4.0, 4.0).reshape(2, 1, 2, 2)).weight
    weights = TransformedWeights(weight)
    assert weights.get("identity", np.float64) is weight
    cast = weights.get("identity", np.float32)
    assert cast.dtype == np.float32 and cast.flags.c_contiguous
    np.testing.assert_array_equal(cast, weight.astype(np.float32))
    np.testing.assert_array_equal(weights.get("positive", np.float64), np.maximum(weight, 0))
    assert weights.get("positive", np.float32) is weights.get("positive", np.float32)
