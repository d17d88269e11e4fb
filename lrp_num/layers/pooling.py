"""Pooling layers on NCHW batches: sum, average and max pooling over kh x kw windows.

Sum and average pooling are linear, z_j = sum_{i in window j} c_j x_i with the weight c_j = 1
resp. 1 / (window size) and no bias, so they implement the
:class:`~lrp_num.layers.operators.LinearOperator` methods and the generic z-rule kernel explains them
(the constant cancels: R_i = x_i / sum_window x * R_j). Max pooling is not linear; it exposes
its windows (:meth:`MaxPool2d.patches`) and their adjoint (:meth:`MaxPool2d.unpatch`) for the
generated max-pool relevance kernel.

Padding and ``ceil_mode`` follow PyTorch's ``nn.MaxPool2d`` / ``nn.AvgPool2d`` (and ONNX):
the padding (at most half the kernel) is -inf for max pooling and 0 for sum and average
pooling; with ``ceil_mode`` the number of windows rounds up and the last windows may reach past
the padded input. Average pooling divides by the window's size clipped to the padded input
(``count_include_pad=True``, PyTorch's default) or by the number of input pixels it covers
(``count_include_pad=False``); c_j then depends on the window j. Padding cells are no inputs:
relevance never goes there.
"""

from __future__ import annotations

import numpy as np

from lrp_num.checks import batch_input, pair
from lrp_num.errors import ShapeError
from lrp_num.layers.operators import weight_transform
from lrp_num.layers.windows import (WindowGeometry, crop_from_windows, pad_to_windows, padded_extent,
                             reduce_windows, scatter_windows)


class _Pool2d:
    """Window geometry, padding and shape checks shared by the pooling layers."""

    name = "Pool2d"
    #: the value of padding cells (0 for the linear pools, -inf for max pooling)
    fill = 0.0

    def __init__(self, kernel: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0, ceil_mode: bool = False) -> None:
        kernel = pair(kernel, f"{self.name} kernel", minimum=1)
        stride = kernel if stride is None else pair(stride, f"{self.name} stride", minimum=1)
        padding = pair(padding, f"{self.name} padding", minimum=0)
        if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
            raise ShapeError(f"{self.name} padding {padding} must be at most half the kernel {kernel}, "
                             "as in PyTorch (a window would lie in the padding alone)")
        if not isinstance(ceil_mode, (bool, np.bool_)):
            raise ShapeError(f"{self.name} ceil_mode must be True or False, got {ceil_mode!r}")
        self.geometry = WindowGeometry(kernel, stride, padding, bool(ceil_mode))

    @property
    def kernel(self) -> tuple[int, int]:
        return self.geometry.kernel

    @property
    def stride(self) -> tuple[int, int]:
        return self.geometry.stride

    @property
    def padding(self) -> tuple[int, int]:
        return self.geometry.padding

    @property
    def ceil_mode(self) -> bool:
        return self.geometry.ceil_mode

    n_parameters = 0

    def _options(self) -> str:
        text = f", padding {self.padding}" if self.padding != (0, 0) else ""
        return text + (", ceil_mode" if self.ceil_mode else "")

    def __repr__(self) -> str:
        (kh, kw), stride = self.kernel, self.stride
        return f"{self.name}({kh}x{kw}, stride {stride}{self._options()})"

    @property
    def _padded(self) -> bool:
        return self.padding != (0, 0) or self.ceil_mode

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample output shape (C, Ho, Wo), Ho = floor((H + 2 ph - kh) / sh) + 1 (or ceil)."""
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

    def _extent(self, output_hw: tuple[int, int]) -> tuple[int, int]:
        return tuple(padded_extent(o, k, s) for o, k, s in zip(output_hw, self.kernel, self.stride))

    def _windowed(self, x: np.ndarray) -> np.ndarray:
        """The array the windows read: ``x`` itself, or ``x`` inside its padding."""
        if not self._padded:
            return x
        output_hw = self.geometry.output_hw(x.shape[2:])
        return pad_to_windows(x, self.padding, self._extent(output_hw), self.fill)

    def _scatter(self, fields: np.ndarray, output_hw: tuple[int, int],
                 input_hw: tuple[int, int] | None = None) -> np.ndarray:
        """Scatter-add fields (N, C, kh, kw, Ho, Wo) onto the input (by default the one
        remembered for (Ho, Wo)); what lands on padding is dropped."""
        input_hw = self.geometry.input_hw(output_hw) if input_hw is None else tuple(input_hw)
        if not self._padded:
            return scatter_windows(fields, input_hw, self.stride)
        padded = scatter_windows(fields, self._extent(output_hw), self.stride)
        return crop_from_windows(padded, self.padding, input_hw)


class SumPool2d(_Pool2d):
    """Sum pooling z_j = sum_{i in window j} x_i, a linear layer with unit weights, no bias.

    As a :class:`~lrp_num.layers.operators.LinearOperator` the weight transform g applies to the
    window weight c_j: ``forward(a, g)`` = g(c_j) sum_{i in window j} a_i, ``transpose(s, g)``
    adds g(c_j) s_j to every input of window j (overlapping windows accumulate).

    Parameters
    ----------
    kernel : int or (int, int)
        Window size (kh, kw).
    stride : int or (int, int), optional
        Window step; the kernel size when omitted (non-overlapping windows).
    padding : int or (int, int)
        Zeros on both sides of height and width, at most half the kernel.
    ceil_mode : bool
        Round the number of windows up (PyTorch's ``ceil_mode``).
    """

    name = "SumPool2d"

    def window_weights(self, input_hw: tuple[int, int]) -> np.ndarray:
        """c_j of every window (Ho, Wo) for an input of spatial size ``input_hw``: ones."""
        return np.ones(self.geometry.output_hw(input_hw))

    @property
    def window_weight(self) -> float:
        """The weight c of every (input, window) connection without padding or ceil mode."""
        return 1.0

    def __call__(self, x: np.ndarray, check_finite: bool = True) -> np.ndarray:
        return self._apply(self._checked(x, check_finite))

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def _transformed(self, g: str, input_hw: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        return weight_transform(g)(self.window_weights(input_hw)).astype(dtype)

    def forward(self, a: np.ndarray, g: str = "identity") -> np.ndarray:
        """Return g(c_j) sum_{i in window j} a_i, shape (N, C, Ho, Wo)."""
        a = self._checked(a, check_finite=False)
        out = reduce_windows(self._windowed(a), self.kernel, self.stride, np.add)
        out *= self._transformed(g, a.shape[2:], a.dtype)
        return out

    def transpose(self, s: np.ndarray, g: str = "identity") -> np.ndarray:
        """Return sum_{j: i in window j} g(c_j) s_j, the input-shaped adjoint of :meth:`forward`."""
        s = batch_input(s, f"{self!r} transpose", ndim=4, check_finite=False)
        input_hw = self.geometry.input_hw(s.shape[2:])
        kh, kw = self.kernel
        weighted = s * self._transformed(g, input_hw, s.dtype)
        fields = np.broadcast_to(weighted[:, :, None, None], (*s.shape[:2], kh, kw, *s.shape[2:]))
        return self._scatter(fields, s.shape[2:], input_hw)

    def bias_like(self, z: np.ndarray, g: str = "identity") -> np.ndarray:
        """Return zeros shaped like ``z``: pooling has no bias (g(0) = 0 for every transform)."""
        return np.zeros(np.shape(z), dtype=np.asarray(z).dtype)


class AvgPool2d(SumPool2d):
    """Average pooling z_j = c_j sum_{i in window j} x_i, c_j = 1 / (window size).

    Without padding or ceil mode c_j = 1/(kh kw) for every window. With them, the window size
    is that of the window clipped to the padded input (``count_include_pad=True``, PyTorch's
    default), or the number of input pixels in it (``count_include_pad=False``).

    Parameters
    ----------
    kernel : int or (int, int)
        Window size (kh, kw).
    stride : int or (int, int), optional
        Window step; the kernel size when omitted.
    padding : int or (int, int)
        Zeros on both sides, at most half the kernel.
    ceil_mode : bool
        Round the number of windows up.
    count_include_pad : bool
        Whether padding cells count in the divisor.
    """

    name = "AvgPool2d"

    def __init__(self, kernel: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True) -> None:
        super().__init__(kernel, stride, padding, ceil_mode)
        if not isinstance(count_include_pad, (bool, np.bool_)):
            raise ShapeError(f"AvgPool2d count_include_pad must be True or False, got {count_include_pad!r}")
        self.count_include_pad = bool(count_include_pad)

    def _options(self) -> str:
        text = super()._options()
        return text + (", count_include_pad=False" if not self.count_include_pad and self._padded else "")

    @property
    def window_weight(self) -> float:
        return 1.0 / (self.kernel[0] * self.kernel[1])

    def window_weights(self, input_hw: tuple[int, int]) -> np.ndarray:
        """c_j = 1 / (window size) for every window (Ho, Wo), as PyTorch's avg_pool2d divides."""
        sizes = []
        for size, o, k, s, p in zip(input_hw, self.geometry.output_hw(input_hw), self.kernel,
                                    self.stride, self.padding):
            start = np.arange(o) * s - p
            end = np.minimum(start + k, size + p)  # clipped to the padded input
            if not self.count_include_pad:
                start, end = np.maximum(start, 0), np.minimum(end, size)
            sizes.append(end - start)
        return 1.0 / np.outer(sizes[0], sizes[1]).astype(np.float64)


class MaxPool2d(_Pool2d):
    """Max pooling x_j = max_{i in window j} x_i on NCHW batches (padding is -inf).

    The relevance rule (winner-take-all) is a generated kernel; this layer gives it the windows
    as patches and scatters patch-shaped relevance back. A window holds at least one input
    (padding is at most half the kernel), so a padding cell never wins.

    Parameters
    ----------
    kernel : int or (int, int)
        Window size (kh, kw).
    stride : int or (int, int), optional
        Window step; the kernel size when omitted.
    padding : int or (int, int)
        -inf cells on both sides of height and width, at most half the kernel.
    ceil_mode : bool
        Round the number of windows up.
    """

    name = "MaxPool2d"
    fill = -np.inf

    def __call__(self, x: np.ndarray, check_finite: bool = True) -> np.ndarray:
        return self._apply(self._checked(x, check_finite))

    def _apply(self, x: np.ndarray) -> np.ndarray:
        return reduce_windows(self._windowed(x), self.kernel, self.stride, np.maximum)

    def patches(self, x: np.ndarray) -> np.ndarray:
        """Return the windows of ``x`` as shape (N, C, Ho, Wo, kh*kw), window entries in C order.

        patches(x)[n, c, p, q, u*kw + v] = x_pad[n, c, p*sh + u, q*sw + v] (x_pad: x inside its
        -inf padding). The entries are copied offset by offset into a (kh*kw, N, C, Ho, Wo)
        array and returned as a view with the offset axis last: reductions over it (max,
        count) then run over contiguous slabs, some 80 times faster than over the strided
        window view.
        """
        x = self._checked(x, check_finite=False)
        (kh, kw), (sh, sw) = self.kernel, self.stride
        n, c, ho, wo = (*x.shape[:2], *self.output_shape(x.shape[1:])[1:])
        windowed = self._windowed(x)
        slabs = np.empty((kh * kw, n, c, ho, wo), dtype=x.dtype)
        for u in range(kh):
            for v in range(kw):
                slabs[u * kw + v] = windowed[:, :, u : u + sh * (ho - 1) + 1 : sh, v : v + sw * (wo - 1) + 1 : sw]
        return np.moveaxis(slabs, 0, -1)

    def unpatch(self, r: np.ndarray, input_shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Scatter-add patch values back to the input: the adjoint of :meth:`patches`.

        R_i = sum over windows j containing i of r[j, offset of i in j]; overlapping windows
        (stride < kernel) accumulate; values on padding cells are dropped.

        Parameters
        ----------
        r : ndarray, shape (N, C, Ho, Wo, kh*kw)
            A value per (window, entry), e.g. relevance split among window entries.
        input_shape : tuple, optional
            Shape (N, C, H, W) or (C, H, W) of the pooled input. When omitted, the (H, W) last
            seen in a forward pass with this output size is used (exact; see
            :class:`~lrp_num.layers.windows.WindowGeometry`).

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
        return self._scatter(fields, r.shape[2:4], hw)
