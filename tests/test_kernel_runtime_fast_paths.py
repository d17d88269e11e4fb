"""The NumPy fast paths of the kernels' run time and of explain's checks (issue 15, speed).

They skip array_api_compat's lookups for plain NumPy arrays; each must answer what the general
path answers, and must not hide what the general path rejects.
"""

from __future__ import annotations

import array_api_compat
import numpy as np
import pytest

from lrp_num.engine import explain as explain_module
from lrp_num.engine import kernel_runtime
from lrp_num.engine.kernels import load_module
from lrp_num.errors import UnknownRuleError


def test_namespace_of_numpy_arrays_and_scalars_is_array_api_compat_numpy():
    a = np.ones(3, dtype=np.float32)
    assert kernel_runtime.namespace(a) is array_api_compat.array_namespace(a)
    assert kernel_runtime.namespace(a, 1.0, a) is array_api_compat.array_namespace(a)


def test_namespace_still_rejects_arrays_of_two_libraries():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError):
        kernel_runtime.namespace(np.ones(2), torch.ones(2))


def test_like_and_as_float_on_numpy():
    x = np.ones((2, 3), dtype=np.float32)
    same = np.zeros(3, dtype=np.float32)
    assert kernel_runtime.like(same, x) is same  # no copy when it is one already
    converted = kernel_runtime.like(np.zeros(3), x)
    assert converted.dtype == np.float32 and converted.shape == (3,)
    scalar = kernel_runtime.like(0.25, x)
    assert scalar.dtype == np.float32 and scalar.shape == ()
    assert kernel_runtime.as_float(x) is x
    assert kernel_runtime.as_float(np.arange(3)).dtype == np.float64
    assert kernel_runtime.as_float([1, 2]).dtype == np.float64


def test_all_finite_catches_nan_and_inf_but_not_an_overflowing_sum():
    big = np.full(4, 3e38, dtype=np.float32)  # finite entries whose float32 sum overflows
    with np.errstate(over="ignore"):
        assert not np.isfinite(big.sum())
    assert explain_module._all_finite(big)
    for bad in (np.nan, np.inf, -np.inf):
        a = np.ones(5, dtype=np.float32)
        a[2] = bad
        assert not explain_module._all_finite(a)
    a = np.ones(5)
    a[[1, 3]] = [np.inf, -np.inf]  # their sum is NaN: still caught
    assert not explain_module._all_finite(a)


def test_shipped_kernel_module_is_loaded_once_and_unknown_names_still_raise():
    assert load_module("epsilon") is load_module("epsilon")
    with pytest.raises(UnknownRuleError, match="no generated kernel"):
        load_module("no_such_rule")


def test_all_finite_warns_about_nothing():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert explain_module._all_finite(np.full(4, 3e38, dtype=np.float32))
        assert not explain_module._all_finite(np.array([np.inf, -np.inf]))


def test_sign_stabilised_on_numpy_is_d_plus_epsilon_sign_d_with_sign_zero_plus_one():
    d = np.array([-2.0, -0.0, 0.0, 3.0], dtype=np.float32)
    out = kernel_runtime.sign_stabilised(d, 0.5)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [-2.5, 0.5, 0.5, 3.5])
    assert out is not d and d[0] == -2.0  # the input is not changed in place


def test_stabilised_ratio_zero_mode_on_numpy_replaces_only_zeros_and_still_raises():
    from lrp_num.errors import ZeroDenominatorError

    numerator = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    d = np.array([2.0, 0.0, -4.0], dtype=np.float32)
    out = kernel_runtime.stabilised_ratio(numerator, d, 0.5, "zero", "r", 1)
    np.testing.assert_array_equal(out, [0.5, 4.0, -0.75])
    assert out.dtype == np.float32 and d[1] == 0.0
    no_zero = np.array([2.0, 1.0, -4.0])
    np.testing.assert_array_equal(kernel_runtime.stabilised_ratio(numerator, no_zero, 0.0, "zero", "r", 1),
                                  numerator / no_zero)
    # eps = 0: a zero denominator under zero relevance contributes 0; under relevance it raises
    np.testing.assert_array_equal(
        kernel_runtime.stabilised_ratio(np.array([1.0, 0.0]), np.array([2.0, 0.0]), 0.0, "zero", "r", 1),
        [0.5, 0.0])
    with pytest.raises(ZeroDenominatorError, match="1 denominator"):
        kernel_runtime.stabilised_ratio(numerator, d, 0.0, "zero", "r", 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sign_stabilised_on_numpy_equals_the_array_api_form_bit_for_bit(dtype):
    # the NumPy path takes the sign by copysign of d + 0; the array-API path selects by d >= 0
    rng = np.random.default_rng(3)
    d = np.concatenate([rng.standard_normal(200), [0.0, -0.0, np.inf, -np.inf, 1e-300, -1e-300,
                                                   5e-324, -5e-324]]).astype(dtype)
    for epsilon in (1e-6, 0.25, 0.0):
        e = np.asarray(epsilon, dtype=dtype)
        expected = d + np.where(d >= 0, e, -e)
        out = kernel_runtime.sign_stabilised(d, epsilon)
        assert out.dtype == dtype
        np.testing.assert_array_equal(out, expected)
        assert np.array_equal(np.signbit(out), np.signbit(expected))  # zeros of the same sign
