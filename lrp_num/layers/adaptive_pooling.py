"""Adaptive and global average pooling: average pooling onto a fixed output size.

Output cell (p, q) averages the input rows floor(p H / Ho) .. ceil((p + 1) H / Ho) - 1 and the
columns likewise (PyTorch's ``nn.AdaptiveAvgPool2d``; ONNX GlobalAveragePool is the 1 x 1
case). It is linear, z_pq = c_pq sum_{i in bin pq} x_i with c_pq = 1 / (bin size) and no bias,
so it is an average-pooling layer for the derivations: the z-rule (LRP-0 on this operator)
redistributes R_pq in proportion to x_i (Montavon et al. 2017, Pattern Recognition 65, Sec. 5).
"""

from __future__ import annotations

import numpy as np

from lrp_num.checks import batch_input, pair
from lrp_num.errors import ShapeError
from lrp_num.layers.operators import weight_transform


def adaptive_bins(size: int, output: int) -> list[tuple[int, int]]:
    """[start, end) of each of ``output`` bins over ``size`` cells, as PyTorch's adaptive pooling."""
    return [((o * size) // output, -(-((o + 1) * size) // output)) for o in range(output)]


class AdaptiveAvgPool2d:
    """Average pooling of NCHW batches onto the spatial size ``output_size`` (Ho, Wo).

    A :class:`~lrp_num.layers.operators.LinearOperator`: ``forward(a, g)`` = g(c_pq) sum_{bin pq} a_i,
    ``transpose(s, g)`` adds g(c_pq) s_pq to every input of bin pq, ``bias_like`` is zero.

    Parameters
    ----------
    output_size : int or (int, int)
        (Ho, Wo), each >= 1.
    """

    name = "AdaptiveAvgPool2d"
    n_parameters = 0

    def __init__(self, output_size: int | tuple[int, int]) -> None:
        self.output_size = pair(output_size, f"{self.name} output_size", minimum=1)
        self._input_hw: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"{self.name}({self.output_size})"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """(C, Ho, Wo) for an input (C, H, W)."""
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise ShapeError(f"{self!r} expects inputs of shape (C, H, W), got {input_shape}")
        self._input_hw = input_shape[1:]
        return (input_shape[0], *self.output_size)

    def window_weights(self, input_hw: tuple[int, int]) -> np.ndarray:
        """c_pq = 1 / (bin size), shape (Ho, Wo)."""
        sizes = [np.array([end - start for start, end in adaptive_bins(size, out)])
                 for size, out in zip(input_hw, self.output_size)]
        return 1.0 / np.outer(sizes[0], sizes[1]).astype(np.float64)

    def _checked(self, x: object, check_finite: bool) -> np.ndarray:
        x = batch_input(x, repr(self), ndim=4, check_finite=check_finite)
        self.output_shape(x.shape[1:])
        return x

    def __call__(self, x: np.ndarray, check_finite: bool = True) -> np.ndarray:
        return self.forward(self._checked(x, check_finite))

    def _transformed(self, g: str, input_hw: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        return weight_transform(g)(self.window_weights(input_hw)).astype(dtype)

    def forward(self, a: np.ndarray, g: str = "identity") -> np.ndarray:
        """Return g(c_pq) sum_{i in bin pq} a_i, shape (N, C, Ho, Wo)."""
        a = self._checked(a, check_finite=False)
        h, w = a.shape[2:]
        rows = np.stack([a[:, :, start:end].sum(axis=2) for start, end in adaptive_bins(h, self.output_size[0])], axis=2)
        out = np.stack([rows[..., start:end].sum(axis=3) for start, end in adaptive_bins(w, self.output_size[1])], axis=3)
        return out * self._transformed(g, (h, w), a.dtype)

    def transpose(self, s: np.ndarray, g: str = "identity", input_hw: tuple[int, int] | None = None) -> np.ndarray:
        """Return sum_{pq: i in bin pq} g(c_pq) s_pq onto the input last seen (or ``input_hw``)."""
        s = batch_input(s, f"{self!r} transpose", ndim=4, check_finite=False)
        if s.shape[2:] != self.output_size:
            raise ShapeError(f"{self!r} transpose expects (N, C, {self.output_size[0]}, "
                             f"{self.output_size[1]}), got {s.shape}")
        input_hw = self._input_hw if input_hw is None else tuple(input_hw)
        if input_hw is None:
            raise ShapeError(f"{self!r}: transpose needs the input size; run forward first")
        h, w = input_hw
        weighted = s * self._transformed(g, input_hw, s.dtype)
        columns = np.zeros((*s.shape[:3], w), dtype=s.dtype)
        for q, (start, end) in enumerate(adaptive_bins(w, self.output_size[1])):
            columns[..., start:end] += weighted[..., q:q + 1]
        out = np.zeros((*s.shape[:2], h, w), dtype=s.dtype)
        for p, (start, end) in enumerate(adaptive_bins(h, self.output_size[0])):
            out[:, :, start:end] += columns[:, :, p:p + 1]
        return out

    def bias_like(self, z: np.ndarray, g: str = "identity") -> np.ndarray:
        """Zeros shaped like ``z``: no bias."""
        return np.zeros(np.shape(z), dtype=np.asarray(z).dtype)


class GlobalAvgPool(AdaptiveAvgPool2d):
    """Global average pooling (C, H, W) -> (C, 1, 1): the mean of every channel (ONNX
    GlobalAveragePool, PyTorch ``AdaptiveAvgPool2d(1)``)."""

    name = "GlobalAvgPool"

    def __init__(self) -> None:
        super().__init__((1, 1))

    def __repr__(self) -> str:
        return "GlobalAvgPool()"
