"""Sliding windows over NCHW batches: geometry, gathering, reduction and scatter-add.

Shared by convolution and pooling. A window layer with kernel (kh, kw), stride (sh, sw) and
padding (ph, pw) reads, for output position (p, q), the input pixels
(p sh + u - ph, q sw + v - pw) for 0 <= u < kh, 0 <= v < kw. Pooling may also round the number of
windows up (``ceil_mode``, as PyTorch and ONNX); the windows then read a padded array of extent
(Ho - 1) sh + kh (:func:`pad_to_windows`) whose extra cells hold the padding value.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def window_output_size(size: int, kernel: int, stride: int, padding: int = 0,
                       ceil_mode: bool = False) -> int:
    """Number of window positions along one axis: floor((size + 2 padding - kernel) / stride) + 1.

    With ``ceil_mode`` the division rounds up, as PyTorch's and ONNX's pooling do, except that a
    last window starting beyond the input and its leading padding is dropped.
    """
    if not ceil_mode:
        return (size + 2 * padding - kernel) // stride + 1
    out = -(-(size + 2 * padding - kernel) // stride) + 1
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def padded_extent(output: int, kernel: int, stride: int) -> int:
    """Length of the padded axis that ``output`` windows read: (output - 1) stride + kernel."""
    return (output - 1) * stride + kernel


def pad_to_windows(x: np.ndarray, padding: tuple[int, int], extent: tuple[int, int],
                   fill: float) -> np.ndarray:
    """Place an NCHW batch at offset ``padding`` in an array of spatial ``extent`` filled with
    ``fill``; input rows or columns beyond the extent (never read by a window) are dropped."""
    (ph, pw), (eh, ew) = padding, extent
    n, c, h, w = x.shape
    out = np.full((n, c, eh, ew), fill, dtype=x.dtype)
    hh, ww = min(h, eh - ph), min(w, ew - pw)
    out[:, :, ph:ph + hh, pw:pw + ww] = x[:, :, :hh, :ww]
    return out


def crop_from_windows(padded: np.ndarray, padding: tuple[int, int],
                      input_hw: tuple[int, int]) -> np.ndarray:
    """Adjoint of :func:`pad_to_windows` (for fill 0): the input part of a padded array; input
    pixels outside the padded extent get zero."""
    (ph, pw), (h, w) = padding, input_hw
    n, c, eh, ew = padded.shape
    out = np.zeros((n, c, h, w), dtype=padded.dtype)
    hh, ww = min(h, eh - ph), min(w, ew - pw)
    out[:, :, :hh, :ww] = padded[:, :, ph:ph + hh, pw:pw + ww]
    return out


def receptive_fields(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """Return the view (N, C, Ho, Wo, kh, kw) of every kernel window of an NCHW batch."""
    windows = sliding_window_view(x, kernel, axis=(2, 3))
    return windows[:, :, :: stride[0], :: stride[1]]


def reduce_windows(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], ufunc: np.ufunc) -> np.ndarray:
    """Reduce every kernel window of an NCHW batch with a binary ufunc (np.add, np.maximum).

    Returns shape (N, C, Ho, Wo). One vectorised ufunc call per kernel offset, which is much
    faster than reducing the last axes of the strided window view.
    """
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = window_output_size(x.shape[2], kh, sh), window_output_size(x.shape[3], kw, sw)
    out = None
    for di in range(kh):
        for dj in range(kw):
            part = x[:, :, di : di + sh * (ho - 1) + 1 : sh, dj : dj + sw * (wo - 1) + 1 : sw]
            if out is None:
                out = part.copy()
            else:
                ufunc(out, part, out=out)
    return out


def scatter_windows(
    fields: np.ndarray, input_hw: tuple[int, int], stride: tuple[int, int]
) -> np.ndarray:
    """Adjoint of :func:`receptive_fields`: add each window value back onto its input pixel.

    Parameters
    ----------
    fields : ndarray, shape (N, C, kh, kw, Ho, Wo)
        A value for every (kernel offset, window position) pair.
    input_hw : (int, int)
        Height and width of the input the windows were taken from.
    stride : (int, int)
        The window stride.

    Returns
    -------
    ndarray, shape (N, C, H, W)
        x_i = sum over (offset, window) pairs that read pixel i of the field value;
        overlapping windows accumulate. One vectorised add per kernel offset.
    """
    n, c, kh, kw, ho, wo = fields.shape
    sh, sw = stride
    out = np.zeros((n, c, *input_hw), dtype=fields.dtype)
    for di in range(kh):
        for dj in range(kw):
            out[:, :, di : di + sh * (ho - 1) + 1 : sh, dj : dj + sw * (wo - 1) + 1 : sw] += fields[:, :, di, dj]
    return out


class WindowGeometry:
    """Kernel, stride and padding of a windowed layer, and which input sizes map to which outputs.

    With a stride above 1 several input sizes give the same output size, so an adjoint cannot
    tell the input size from its argument alone. Each layer therefore remembers, per output
    (Ho, Wo), the input (H, W) it last saw in a forward pass; LRP always runs the forward pass
    before the backward one. Without a remembered size the smallest input is assumed, which is
    exact for stride 1.
    """

    def __init__(self, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                 ceil_mode: bool = False) -> None:
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.ceil_mode = bool(ceil_mode)
        self._input_hw: dict[tuple[int, int], tuple[int, int]] = {}

    def output_hw(self, input_hw: tuple[int, int]) -> tuple[int, int]:
        """(Ho, Wo) = floor((H + 2 p - k) / s) + 1 per axis (or ceil, see
        :func:`window_output_size`); remembered for :meth:`input_hw`."""
        input_hw = (int(input_hw[0]), int(input_hw[1]))
        out = tuple(window_output_size(*args, self.ceil_mode)
                    for args in zip(input_hw, self.kernel, self.stride, self.padding))
        if out[0] >= 1 and out[1] >= 1:
            self._input_hw[out] = input_hw
        return out

    def input_hw(self, output_hw: tuple[int, int]) -> tuple[int, int]:
        """The input (H, W) last seen for this output (Ho, Wo), else the smallest one."""
        output_hw = (int(output_hw[0]), int(output_hw[1]))
        if output_hw in self._input_hw:
            return self._input_hw[output_hw]
        if self.ceil_mode:  # the smallest input with this output: search upwards from 1
            return tuple(next(h for h in range(1, o * s + k + 1)
                              if window_output_size(h, k, s, p, True) >= o)
                         for o, k, s, p in zip(output_hw, self.kernel, self.stride, self.padding))
        return tuple((o - 1) * s + k - 2 * p for o, k, s, p in zip(output_hw, self.kernel, self.stride, self.padding))
