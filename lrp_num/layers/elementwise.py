"""Layers without parameters that act per element or only reshape: ReLU, Flatten, Reshape,
Identity, Dropout (the identity at inference)."""

from __future__ import annotations

import math

import numpy as np

from lrp_num.checks import as_float_array, require_finite
from lrp_num.errors import ShapeError


class _ParameterFree:
    n_parameters = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __call__(self, x: np.ndarray, check_finite: bool = True) -> np.ndarray:
        x = as_float_array(x, f"input of {self!r}")
        if x.ndim < 1:
            raise ShapeError(f"{self!r} expects a batch (batch axis first), got a scalar")
        if check_finite:
            require_finite(x, f"input of {self!r}")
        return self._apply(x)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)


class ReLU(_ParameterFree):
    """Rectified linear unit x_j = max(0, z_j), elementwise."""

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0)


class Identity(_ParameterFree):
    """The identity map, x_j = z_j (e.g. an exported Dropout or Identity node)."""

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return x


class Dropout(_ParameterFree):
    """Dropout at inference: the identity map x_j = z_j (the drop probability is only recorded).

    Parameters
    ----------
    p : float
        The training-time drop probability, 0 <= p < 1; it does not act at inference.
    """

    def __init__(self, p: float = 0.5) -> None:
        try:
            valid = not isinstance(p, bool) and 0.0 <= float(p) < 1.0
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ShapeError(f"Dropout p must be a number in [0, 1), got {p!r}")
        self.p = float(p)

    def __repr__(self) -> str:
        return f"Dropout(p={self.p:g})"

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return x


class Flatten(_ParameterFree):
    """Flatten every sample to a vector in C order, keeping the batch axis: (N, ...) -> (N, -1).

    The order is that of ``torch.nn.Flatten`` and ONNX Flatten(axis=1).
    """

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return x.reshape(x.shape[0], -1)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(input_shape),)


class Reshape(_ParameterFree):
    """Reshape every sample to ``shape`` in C order, keeping the batch axis: (N, ...) -> (N, *shape).

    Relevance moves back by the inverse reshape (each value keeps its own relevance), as through
    :class:`Flatten`; e.g. (N, T D) -> (N, T, D) turns a vector into T tokens of width D.

    Parameters
    ----------
    shape : tuple of int
        The per-sample output shape (positive sizes; their product is the input's size).
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        try:
            sizes = tuple(int(n) for n in shape)
            valid = len(sizes) >= 1 and all(n >= 1 and n == s for n, s in zip(sizes, shape))
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ShapeError(f"Reshape shape must be a non-empty tuple of positive ints, got {shape!r}")
        self.shape = sizes

    def __repr__(self) -> str:
        return f"Reshape({self.shape})"

    def _apply(self, x: np.ndarray) -> np.ndarray:
        self.output_shape(tuple(x.shape[1:]))
        return x.reshape(x.shape[0], *self.shape)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if math.prod(input_shape) != math.prod(self.shape):
            raise ShapeError(f"{self!r} cannot reshape samples of shape {tuple(input_shape)} "
                             f"({math.prod(input_shape)} values) to {self.shape}")
        return self.shape
