"""Input checks shared by the layers, the engine and the reference: float conversion,
finiteness, shapes, rule parameters, targets, the rules' input domains and the reference's
precision.

Every check raises a documented :mod:`lrp_num.errors` type whose message names what is wrong, so
a user reading one line knows which weight, input or argument to fix. :func:`lrp_num.explain`
and :mod:`lrp_num.reference` run the same checks from here, so both refuse the same mistakes
with the same error types; nothing here touches a relevance kernel.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import array_api_compat
import numpy as np

from lrp_num.errors import (DomainError, KernelArgumentError, NonFiniteError, PrecisionError,
                            ShapeError, TargetError)

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


def is_float_batch(x: object, ndim: int) -> bool:
    """Whether ``x`` is a float32 or float64 ndarray of rank ``ndim``: what :func:`batch_input`
    returns unchanged when it skips the finiteness check (callers test this first, on their hot
    path, so as to format no layer description for a message that is not raised)."""
    return type(x) is np.ndarray and x.dtype in FLOAT_DTYPES and x.ndim == ndim


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


# -- what explain and the reference both check ----------------------------------------------------

#: the precision range of the mpmath reference, in significant decimal digits. Below 20 the
#: checks built on the reference lose their meaning (``lrp verify`` requires the balance to
#: 10^-(dps - 10), root-point membership is tested to 10^-(dps - 5)); above 10000 one input of
#: the built-in CNN takes minutes, and the digits gained are far below float64's anyway.
MIN_DPS = 20
MAX_DPS = 10000
#: rule parameters that must be >= 0 (and, like every parameter, finite)
NON_NEGATIVE_PARAMETERS = ("gamma", "epsilon", "alpha", "beta")
#: rules that apply on inputs of either sign, named when an orthant rule meets a negative input
MIXED_SIGN_RULES = "w2, zbox (with an input box), zplus_split, epsilon or lrp0"


def check_dps(dps: object, what: str = "dps") -> int:
    """Return the reference precision ``dps`` as an int, checked to lie in [MIN_DPS, MAX_DPS].

    Parameters
    ----------
    dps : int
        Significant decimal digits of the mpmath reference: a Python or NumPy integer (not a
        bool, not a float such as 1.5 or 50.0).
    what : str
        The argument's name in messages (``"--dps"`` on the command line).

    Raises
    ------
    PrecisionError
        For anything else, or a value outside 20 .. 10000.
    """
    if isinstance(dps, (bool, np.bool_)) or not isinstance(dps, (int, np.integer)):
        raise PrecisionError(f"{what} must be an integer number of digits from {MIN_DPS} to "
                             f"{MAX_DPS}, got {dps!r}")
    if not MIN_DPS <= dps <= MAX_DPS:
        raise PrecisionError(f"{what} must be from {MIN_DPS} to {MAX_DPS} digits, got {int(dps)}")
    return int(dps)


def explanation_input(x: object) -> np.ndarray:
    """The batch to explain as a float32/float64 array: numeric, finite and not empty.

    Raises ShapeError (not numeric, a 0-d array, an empty batch) or NonFiniteError (NaN, Inf).
    """
    array = require_finite(as_float_array(x, "input"), "input")
    if array.ndim == 0:
        raise ShapeError("the input is a single number (a 0-d array), not a sample or a batch")
    if array.shape[0] == 0:
        raise ShapeError(f"the input batch is empty (shape {array.shape})")
    return array


def check_rule_parameters(rule: str, parameters: Mapping[str, object],
                          accepted: Iterable[str]) -> dict[str, float]:
    """Rule parameters as floats: each one the rule has, a finite number, and >= 0 for
    gamma, epsilon, alpha and beta.

    Parameters
    ----------
    rule : str
        The rule, for messages.
    parameters : mapping
        Parameter name -> value.
    accepted : iterable of str
        The parameters the rule has (the derivation's: e.g. ``("alpha", "beta")``).

    Raises
    ------
    KernelArgumentError
        For an unknown parameter, a value that is not a real number (a string, an array, a
        bool), NaN or Inf, or a negative gamma, epsilon, alpha or beta.
    """
    unknown = sorted(set(parameters) - set(accepted))
    if unknown:
        has = ", ".join(sorted(accepted)) or "none"
        raise KernelArgumentError(f"rule {rule} takes no parameter(s) {', '.join(unknown)} "
                                  f"(its parameters: {has})")
    checked = {}
    for name, value in parameters.items():
        if isinstance(value, (str, bytes, bool, np.bool_)):
            array = np.asarray(None)
        else:
            array = np.asarray(value)
        if array.ndim != 0 or array.dtype.kind not in "iuf":
            raise KernelArgumentError(f"rule {rule}: parameter {name} must be a number, got {value!r}")
        number = float(array)
        if not math.isfinite(number):
            raise KernelArgumentError(f"rule {rule}: parameter {name} must be finite, got {number}")
        if name in NON_NEGATIVE_PARAMETERS and number < 0:
            raise KernelArgumentError(f"rule {rule}: parameter {name} must be >= 0, got {number}")
        checked[name] = number
    return checked


def check_composite_parameters(parameters: Mapping[str, object]) -> None:
    """Raise KernelArgumentError if rule parameters come with a composite (it sets its own)."""
    if parameters:
        raise KernelArgumentError(
            f"rule parameters ({', '.join(sorted(parameters))}) apply with rule=...; a composite "
            "sets its own (build a lrp_num.Composite to change them)")


def check_target(target: object, output_shape: tuple[int, ...]) -> np.ndarray | None:
    """The target of an explanation, checked against the batch's output shape.

    Returns None (each sample's largest output), an int64 array of one output index per sample
    (from an int or a sequence of ints), or a float array of ``output_shape``: an explicit
    output relevance. Raises TargetError for anything else (a float index, an index out of
    range, the wrong number of indices) and NonFiniteError for an explicit relevance with NaN.
    """
    if target is None:
        return None
    batch, n_outputs = output_shape[0], int(np.prod(output_shape[1:]))
    array = np.asarray(target)
    if array.shape == tuple(output_shape) and array.dtype.kind == "f":
        return require_finite(array, "target relevance")
    if array.dtype.kind not in "iu":
        raise TargetError(f"target must be output indices or a relevance array of shape {tuple(output_shape)}, "
                          f"got {array.dtype} of shape {array.shape}")
    indices = np.broadcast_to(array, (batch,)) if array.ndim == 0 else array
    if indices.shape != (batch,):
        raise TargetError(f"target has {indices.size} indices for a batch of {batch}")
    if np.any(indices < 0) or np.any(indices >= n_outputs):
        raise TargetError(f"target index out of range for {n_outputs} outputs: {indices.tolist()}")
    return indices.astype(np.int64)


def check_orthant(x: np.ndarray, index: int, layer: object, rule: str) -> None:
    """Raise DomainError if a rule derived for the orthant x >= 0 meets a negative input.

    z+ and LRP-gamma are derived on x >= 0 (Montavon et al. 2017, Sec. 4.2; 2019, Sec. 10.2.3):
    only there does their root point lie in the domain and their relevance keep its sign. A
    hidden layer after a ReLU (or max pooling of one) always satisfies this; a network input or
    a layer after a linear one without ReLU may not. ``x`` is the layer's input batch (float
    or mpmath values).
    """
    if array_api_compat.is_array_api_obj(x) and not isinstance(x, np.ndarray):
        xp = array_api_compat.array_namespace(x)  # a device array (torch, CuPy): count there
        negative = x < 0
        n_negative = int(xp.sum(xp.astype(negative, xp.int64)))
        negative = np.empty(math.prod(x.shape), dtype=bool)  # only its size is reported
    else:
        negative = np.asarray(x) < 0
        n_negative = int(np.count_nonzero(negative))
    if n_negative:
        raise DomainError(
            f"layer {index} ({layer!r}): rule {rule} is derived for the orthant x >= 0, but "
            f"{n_negative} of its {negative.size} input value(s) are negative; on inputs of "
            f"either sign use {MIXED_SIGN_RULES}")
