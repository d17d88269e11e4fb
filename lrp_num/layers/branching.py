"""Operations with several inputs: the sum of tensors (skip connections) and concatenation.

:class:`Add` y = sum_k a_k is a neuron without activation and unit weights; its relevance
rules act on the addends stacked on a new axis 1, (N, K, *shape), through the linear operator
:class:`StackedAddends` (``forward(a, g)`` = sum_k g(1) a_k, ``transpose(s, g)`` = g(1) s for
every k, no bias). :class:`Concat` only routes: relevance is sliced back onto its inputs.
"""

from __future__ import annotations

import numpy as np

from lrp_num.checks import as_float_array, require_finite
from lrp_num.errors import ShapeError
from lrp_num.layers.operators import weight_transform


def _unit_weight(g: str, dtype: np.dtype) -> np.ndarray:
    return weight_transform(g)(np.ones((), dtype=np.float64)).astype(dtype)


class _MultiInput:
    n_parameters = 0

    def _checked(self, inputs: tuple, check_finite: bool) -> list[np.ndarray]:
        arrays = [as_float_array(a, f"input of {self!r}") for a in inputs]
        if not arrays:
            raise ShapeError(f"{self!r} needs at least one input")
        if any(a.ndim < 2 for a in arrays):
            raise ShapeError(f"{self!r} expects batches (N, ...), got shapes {[a.shape for a in arrays]}")
        if check_finite:
            for a in arrays:
                require_finite(a, f"input of {self!r}")
        self.output_shape(*(a.shape[1:] for a in arrays))
        if len({a.shape[0] for a in arrays}) != 1:
            raise ShapeError(f"{self!r}: inputs have different batch sizes {[a.shape[0] for a in arrays]}")
        dtype = np.result_type(*arrays)
        return [a.astype(dtype, copy=False) for a in arrays]


class Add(_MultiInput):
    """The sum y = sum_k a_k of two or more tensors of one shape (a residual connection).

    Call it with the addends, ``Add()(a_1, ..., a_K)``. Its relevance rules take the addends
    stacked on axis 1 and :meth:`operator` (K) as their linear operator.
    """

    def __repr__(self) -> str:
        return "Add()"

    def output_shape(self, *input_shapes: tuple[int, ...]) -> tuple[int, ...]:
        shapes = {tuple(shape) for shape in input_shapes}
        if len(input_shapes) < 2:
            raise ShapeError(f"Add needs at least two addends, got {len(input_shapes)}")
        if len(shapes) != 1:
            raise ShapeError(f"Add needs addends of one shape, got {', '.join(map(str, map(tuple, input_shapes)))}")
        return tuple(input_shapes[0])

    def __call__(self, *inputs: np.ndarray, check_finite: bool = True) -> np.ndarray:
        arrays = self._checked(inputs, check_finite)
        out = arrays[0].copy()
        for a in arrays[1:]:
            out += a
        return out

    @staticmethod
    def stack(inputs: list[np.ndarray]) -> np.ndarray:
        """The addends stacked on axis 1, (N, K, *shape): the input of the Add rules."""
        return np.stack(inputs, axis=1)

    @staticmethod
    def operator(n_addends: int) -> "StackedAddends":
        """The linear operator of a sum of ``n_addends`` stacked inputs."""
        return StackedAddends(n_addends)


class StackedAddends:
    """y = sum_k w a_k with the unit weight w = 1 on addends stacked as (N, K, *shape).

    A :class:`~lrp_num.layers.operators.LinearOperator`: ``forward(a, g)`` = g(1) sum_k a[:, k],
    ``transpose(s, g)`` = g(1) s repeated K times on axis 1, ``bias_like`` = zeros.
    """

    def __init__(self, n_addends: int) -> None:
        self.n_addends = int(n_addends)

    def __repr__(self) -> str:
        return f"StackedAddends({self.n_addends})"

    def forward(self, a: np.ndarray, g: str = "identity") -> np.ndarray:
        a = np.asarray(a)
        if a.ndim < 2 or a.shape[1] != self.n_addends:
            raise ShapeError(f"{self!r} expects addends stacked as (N, {self.n_addends}, ...), got {a.shape}")
        return a.sum(axis=1) * _unit_weight(g, a.dtype)

    def transpose(self, s: np.ndarray, g: str = "identity") -> np.ndarray:
        s = np.asarray(s)
        weighted = s * _unit_weight(g, s.dtype)
        return np.broadcast_to(weighted[:, None], (s.shape[0], self.n_addends, *s.shape[1:]))

    def bias_like(self, z: np.ndarray, g: str = "identity") -> np.ndarray:
        return np.zeros(np.shape(z), dtype=np.asarray(z).dtype)


class Concat(_MultiInput):
    """Concatenation of tensors along ``axis`` (the batch axis is 0, so channels of NCHW are 1).

    Relevance is routing: each input receives its slice of the output's relevance.

    Parameters
    ----------
    axis : int
        A non-batch axis, >= 1, or negative counted from the end.
    """

    def __init__(self, axis: int = 1) -> None:
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis == 0:
            raise ShapeError(f"Concat axis must be a non-zero int (axis 0 is the batch), got {axis!r}")
        self.axis = int(axis)

    def __repr__(self) -> str:
        return f"Concat(axis={self.axis})"

    def sample_axis(self, ndim: int) -> int:
        """The concatenation axis within one sample of rank ``ndim``."""
        axis = self.axis - 1 if self.axis > 0 else ndim + self.axis
        if not 0 <= axis < ndim:
            raise ShapeError(f"{self!r} does not fit inputs of rank {ndim} per sample")
        return axis

    def output_shape(self, *input_shapes: tuple[int, ...]) -> tuple[int, ...]:
        if not input_shapes:
            raise ShapeError("Concat needs at least one input")
        ranks = {len(shape) for shape in input_shapes}
        if len(ranks) != 1:
            raise ShapeError(f"Concat needs inputs of one rank, got {', '.join(map(str, map(tuple, input_shapes)))}")
        axis = self.sample_axis(ranks.pop())
        rest = {tuple(shape[:axis]) + tuple(shape[axis + 1:]) for shape in input_shapes}
        if len(rest) != 1:
            raise ShapeError(f"{self!r} needs inputs that agree off the axis, got "
                             f"{', '.join(map(str, map(tuple, input_shapes)))}")
        shape = list(input_shapes[0])
        shape[axis] = sum(s[axis] for s in input_shapes)
        return tuple(shape)

    def __call__(self, *inputs: np.ndarray, check_finite: bool = True) -> np.ndarray:
        arrays = self._checked(inputs, check_finite)
        return np.concatenate(arrays, axis=self.sample_axis(arrays[0].ndim - 1) + 1)

    def split(self, relevance: np.ndarray, input_shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
        """Slice ``relevance`` (N, *output shape) back onto inputs of the given per-sample shapes."""
        axis = self.sample_axis(len(input_shapes[0]))
        edges = np.cumsum([shape[axis] for shape in input_shapes])[:-1]
        return np.split(relevance, edges, axis=axis + 1)
