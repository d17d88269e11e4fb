"""Pooling layers on NCHW batches: sum, average and max pooling over kh x kw windows.

Sum and average pooling are linear, z_j = sum_{i in window j} c x_i with the constant weight
c = 1 resp. 1 / (kh kw) and no bias, so they implement the
:class:`~lrp_num.operators.LinearOperator` methods and the generic z-rule kernel explains them
(the constant cancels: R_i = x_i / sum_window x * R_j). Max pooling is not linear; it exposes
its windows (:meth:`MaxPool2d.patches`) and their adjoint (:meth:`MaxPool2d.unpatch`) for the
generated max-pool relevance kernel. No padding: windows lie inside the input.
"""

from __future__ import annotations

import numpy as np

from lrp_num.checks import batch_input, pair
from lrp_num.errors import ShapeError
from lrp_num.operators import TransformedWeights
from lrp_num.windows import WindowGeometry, receptive_fields, reduce_windows, scatter_windows


class _Pool2d:
    """Window geometry and shape checks shared by the pooling layers."""

    name = "Pool2d"

    def __init__(self, kernel: int | tuple[int, int], stride: int | tuple[int, int] | None = None) -> None:
        kernel = pair(kernel, f"{self.name} kernel", minimum=1)
        stride = kernel if stride is None else pair(stride, f"{self.name} stride", minimum=1)
        self.geometry = WindowGeometry(kernel, stride, (0, 0))

    @property
    def kernel(self) -> tuple[int, int]:
        return self.geometry.kernel

    @property
    def stride(self) -> tuple[int, int]:
        return self.geometry.stride

    n_parameters = 0

    def __repr__(self) -> str:
        (kh, kw), stride = self.kernel, self.stride
        return f"{self.name}({kh}x{kw}, stride {stride})"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample output shape (C, Ho, Wo), Ho = floor((H - kh) / sh) + 1."""
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ShapeError(f"{self!r} expects inputs of shape (C, H, W), got {input_shape}")
        ho, wo = self.geometry.output_hw(input_shape[1:])
        if ho < 1 or wo < 1:
            raise ShapeError(f"{self!r}: input {input_shape} is smaller than the window")
        return (input_shape[0], ho, wo)

    def _checked(self, x: object, check_finite: bool) -> np.ndarray:
        x = batch_input(x, repr(self), ndim=4, check_finite=check_finite)
        self.output_shape(x.shape[1:])
        return x

    def _windows(self, x: np.ndarray) -> np.ndarray:
        return receptive_fields(x, self.kernel, self.stride)

    def _scatter(self, fields: np.ndarray, output_hw: tuple[int, int]) -> np.ndarray:
        """Scatter-add fields (N, C, kh, kw, Ho, Wo) onto the input remembered for (Ho, Wo)."""
        return scatter_windows(fields, self.geometry.input_hw(output_hw), self.stride)


class SumPool2d(_Pool2d):
    """Sum pooling z_j = sum_{i in window j} x_i, a linear layer with unit weights, no bias.

    As a :class:`~lrp_num.operators.LinearOperator` the weight transform g applies to the
    constant weight: ``forward(a, g)`` = g(c) * sum_{window} a_i, ``transpose(s, g)`` adds
    g(c) s_j to every input of window j (overlapping windows accumulate).

    Parameters
    ----------
    kernel : int or (int, int)
        Window size (kh, kw).
    stride : int or (int, int), optional
        Window step; the kernel size when omitted (non-overlapping windows).
    """

    name = "SumPool2d"

    def __init__(self, kernel: int | tuple[int, int], stride: int | tuple[int, int] | None = None) -> None:
        super().__init__(kernel, stride)
        self._weights = TransformedWeights(np.array(self.window_weight))

    @property
    def window_weight(self) -> float:
        """The constant weight c of every (input, window) connection."""
        return 1.0

    def __call__(self, x: np.ndarray, check_finite: bool = True) -> np.ndarray:
        return self._apply(self._checked(x, check_finite))

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def forward(self, a: np.ndarray, g: str = "identity") -> np.ndarray:
        """Return sum_{i in window j} g(c) a_i, shape (N, C, Ho, Wo)."""
        a = self._checked(a, check_finite=False)
        weight = self._weights.get(g, a.dtype)
        out = reduce_windows(a, self.kernel, self.stride, np.add)
        out *= weight
        return out

    def transpose(self, s: np.ndarray, g: str = "identity") -> np.ndarray:
        """Return sum_{j: i in window j} g(c) s_j, the input-shaped adjoint of :meth:`forward`."""
        s = batch_input(s, f"{self!r} transpose", ndim=4, check_finite=False)
        kh, kw = self.kernel
        fields = np.broadcast_to(s[:, :, None, None] * self._weights.get(g, s.dtype), (*s.shape[:2], kh, kw, *s.shape[2:]))
        return self._scatter(fields, s.shape[2:])

    def bias_like(self, z: np.ndarray, g: str = "identity") -> np.ndarray:
        """Return zeros shaped like ``z``: pooling has no bias (g(0) = 0 for every transform)."""
        return np.zeros(np.shape(z), dtype=np.asarray(z).dtype)


class AvgPool2d(SumPool2d):
    """Average pooling z_j = 1/(kh kw) sum_{i in window j} x_i: sum pooling with c = 1/(kh kw).

    Parameters
    ----------
    kernel : int or (int, int)
        Window size (kh, kw).
    stride : int or (int, int), optional
        Window step; the kernel size when omitted.
    """

    name = "AvgPool2d"

    @property
    def window_weight(self) -> float:
        return 1.0 / (self.kernel[0] * self.kernel[1])


class MaxPool2d(_Pool2d):
    """Max pooling x_j = max_{i in window j} x_i on NCHW batches, no padding.

    The relevance rule (winner-take-all) is a generated kernel; this layer gives it the windows
    as patches and scatters patch-shaped relevance back.

    Parameters
    ----------
    kernel : int or (int, int)
        Window size (kh, kw).
    stride : int or (int, int), optional
        Window step; the kernel size when omitted.
    """

    name = "MaxPool2d"

    def __call__(self, x: np.ndarray, check_finite: bool = True) -> np.ndarray:
        return self._apply(self._checked(x, check_finite))

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return reduce_windows(x, self.kernel, self.stride, np.maximum)

    def patches(self, x: np.ndarray) -> np.ndarray:
        """Return the windows of ``x`` as shape (N, C, Ho, Wo, kh*kw), window entries in C order.

        patches(x)[n, c, p, q, u*kw + v] = x[n, c, p*sh + u, q*sw + v]. A read-only view when
        the strides allow it, otherwise a copy; do not write to it.
        """
        x = self._checked(x, check_finite=False)
        windows = self._windows(x)
        return windows.reshape(*windows.shape[:4], -1)

    def unpatch(self, r: np.ndarray, input_shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Scatter-add patch values back to the input: the adjoint of :meth:`patches`.

        R_i = sum over windows j containing i of r[j, offset of i in j]; overlapping windows
        (stride < kernel) accumulate.

        Parameters
        ----------
        r : ndarray, shape (N, C, Ho, Wo, kh*kw)
            A value per (window, entry), e.g. relevance split among window entries.
        input_shape : tuple, optional
            Shape (N, C, H, W) or (C, H, W) of the pooled input. When omitted, the (H, W) last
            seen in a forward pass with this output size is used (exact; see
            :class:`~lrp_num.windows.WindowGeometry`).

        Returns
        -------
        ndarray, shape (N, C, H, W)
        """
        r = np.asarray(r)
        kh, kw = self.kernel
        if r.ndim != 5 or r.shape[4] != kh * kw:
            raise ShapeError(f"{self!r} unpatch expects shape (N, C, Ho, Wo, {kh * kw}), got {r.shape}")
        fields = r.reshape(*r.shape[:4], kh, kw).transpose(0, 1, 4, 5, 2, 3)
        if input_shape is None:
            return self._scatter(fields, r.shape[2:4])
        hw = tuple(input_shape)[-2:]
        if self.geometry.output_hw(hw) != r.shape[2:4]:
            raise ShapeError(f"{self!r}: patches of spatial shape {r.shape[2:4]} do not come from input {hw}")
        return scatter_windows(fields, hw, self.stride)
