"""Input checks shared by the layers: float conversion, finiteness and shapes.

Every check raises a documented :mod:`lrp_num.errors` type whose message names the layer, so a
user reading one line knows which weight or input is wrong.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lrp_num.errors import NonFiniteError, ShapeError

#: dtypes that are computed in as they are; anything else numeric becomes float64.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_array(x: object, what: str) -> np.ndarray:
    """Return ``x`` as a float32 or float64 ndarray without copying when it already is one.

    Integers, booleans and other float widths become float64; anything else is a ShapeError.
    """
    array = np.asarray(x)
    if array.dtype in FLOAT_DTYPES:
        return array
    if array.dtype.kind in "biuf":
        return array.astype(np.float64)
    raise ShapeError(f"{what} must be a numeric array, got dtype {array.dtype}")


def require_finite(x: np.ndarray, what: str) -> np.ndarray:
    """Raise NonFiniteError if ``x`` holds NaN or Inf; return ``x`` unchanged."""
    if not np.isfinite(x).all():
        n_bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        raise NonFiniteError(f"{what} holds {n_bad} NaN or Inf value(s)")
    return x


def parameter(x: object, what: str, ndim: int) -> np.ndarray:
    """Return a float64 copy of a weight or bias, checked for rank and finiteness.

    Parameters are stored in float64 and cast to the input's dtype when used, so one layer
    serves float32 and float64 inputs alike.
    """
    array = np.array(as_float_array(x, what), dtype=np.float64)
    if array.ndim != ndim:
        raise ShapeError(f"{what} must have {ndim} dimension(s), got shape {array.shape}")
    array.setflags(write=False)
    return require_finite(array, what)


def pair(value: int | Sequence[int], what: str, minimum: int) -> tuple[int, int]:
    """Return an int or a pair of ints as a pair, each at least ``minimum``."""
    try:
        values = (value, value) if np.ndim(value) == 0 else tuple(value)
        valid = len(values) == 2 and all(int(v) == v and v >= minimum for v in values)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ShapeError(f"{what} must be an int >= {minimum} or a pair of them, got {value!r}")
    return int(values[0]), int(values[1])


def batch_input(x: object, layer: str, ndim: int, check_finite: bool = True) -> np.ndarray:
    """Return a batch of layer inputs as a float array of rank ``ndim``, checked.

    Parameters
    ----------
    x : array_like
        The batch; the first axis indexes samples.
    layer : str
        The layer's description, used in error messages.
    ndim : int
        Required rank including the batch axis (2 for dense, 4 for NCHW images).
    check_finite : bool
        Whether to reject NaN and Inf (operators called by kernels skip this).
    """
    array = as_float_array(x, f"input of {layer}")
    if array.ndim != ndim:
        raise ShapeError(
            f"{layer} expects a batch of rank {ndim} (batch axis first), got shape {array.shape}"
        )
    if check_finite:
        require_finite(array, f"input of {layer}")
    return array
