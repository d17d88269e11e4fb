"""Exact linear maps for the high-precision reference: every linear layer as an explicit matrix.

The reference (:mod:`lrp_num.reference`) never calls the engine's convolution, pooling or
folding code. It reads a layer's parameters (weights, window geometry) and builds here, by
index arithmetic of its own, the matrix z_j = sum_i x_i w_ij + b_j of

* Dense and Conv2d (with zero padding, stride and channel groups: output channel o of a
  convolution with G groups sees the input channels (o // (C_out / G)) C_in/G + c,
  c < C_in / G, as PyTorch's ``groups``);
* sum and average pooling with zero padding and ``ceil_mode`` (PyTorch's window count: the
  last window must start inside the input or its left padding); average pooling divides by the
  window clipped to the padded input (``count_include_pad``) or by its input pixels;
* adaptive and global average pooling: output cell (p, q) averages the rows
  floor(p H / Ho) .. ceil((p + 1) H / Ho) - 1 and the columns likewise;
* the per-channel affine layer y_c = s_c x_c + t_c, a diagonal matrix;
* a Dense or Conv2d followed by batch normalisations, folded here in mpmath from the
  BatchNorm parameters (s = gamma / sqrt(var + eps), w'_ij = s w_ij, b' = s (b - mu) + beta),
  not taken from the engine's folded weights.

Every sum over a row, z_j = sum_k x_k w_jk + b_j, is computed by :func:`row_dot` exactly and
rounded once to the working precision (float64 data are rationals; their products and sums
are exact in binary big-integer arithmetic), so no term is lost however far apart the exponents
of the inputs and weights are: w = (1, 1e-100, -1) at x = (1, 1, 1) gives 1e-100, not 0.

Padding cells are no inputs: a row's unconnected slots point at an extra zero input ``n_in``
with weight 0. Max pooling gets its windows here too (:func:`pool_windows`); a padding cell,
-inf in the engine, is simply not in the window, so it never wins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import mpmath
import numpy as np
from mpmath.libmp import mpf_mul, mpf_pos, mpf_sum

from lrp_num.errors import ShapeError
from lrp_num.layers import (AdaptiveAvgPool2d, AvgPool2d, BatchNorm, ChannelAffine, Conv2d, Dense,
                            SumPool2d, TokenDense)

#: the layers :func:`linear_matrix` turns into a matrix
LINEAR_LAYERS = (Dense, Conv2d, SumPool2d, AvgPool2d, AdaptiveAvgPool2d, ChannelAffine)


def to_mpf(array: np.ndarray) -> np.ndarray:
    """float64 values as an object array of mpf (exact at any precision)."""
    flat = [mpmath.mpf(float(value)) for value in np.asarray(array, dtype=np.float64).ravel()]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(np.shape(array))


def _raw(value) -> tuple:
    """The raw (sign, mantissa, exponent, bits) tuple of an mpf (an int or float converted)."""
    raw = getattr(value, "_mpf_", None)
    return raw if raw is not None else mpmath.mpf(value)._mpf_


def row_dot(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """sum_k x[j, k] w[j, k] (+ bias[j]) for every row j, rounded once to the working precision.

    Each product is exact (mantissas multiplied as integers), and so is their sum: mpmath's
    ``mpf_sum`` without a target precision adds the integer mantissas aligned to the smallest
    exponent, dropping nothing (a float64 product spans at most about 2,200 bits of exponent,
    far below its 10^6-bit cap). Only the result is rounded, to ``mpmath.mp.prec`` bits, so it is
    the correctly rounded value of the exact sum whatever the cancellation or exponent spread.
    Object arrays of mpf (two dimensional, rows by terms) in, a one-dimensional one out.
    """
    prec, rounding = mpmath.mp._prec_rounding
    make = mpmath.mp.make_mpf
    out = np.empty(len(x), dtype=object)
    for j, (xs, ws) in enumerate(zip(x, w)):
        terms = [mpf_mul(_raw(a), _raw(b)) for a, b in zip(xs, ws)]
        if bias is not None:
            terms.append(_raw(bias[j]))
        out[j] = make(mpf_pos(mpf_sum(terms), prec, rounding))
    return out


def exact_products(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x * w element by element, each product exact (an mpf holding every bit, whatever the
    working precision); arithmetic on them afterwards rounds as usual."""
    make = mpmath.mp.make_mpf
    flat = [make(mpf_mul(_raw(a), _raw(b))) for a, b in zip(np.ravel(x), np.ravel(w))]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(np.shape(x))


def row_sum(terms: np.ndarray, shift: np.ndarray | None = None) -> np.ndarray:
    """sum_k terms[j, k] (+ shift[j]) for every row j, exact and rounded once (see :func:`row_dot`)."""
    prec, rounding = mpmath.mp._prec_rounding
    make = mpmath.mp.make_mpf
    out = np.empty(len(terms), dtype=object)
    for j, row in enumerate(terms):
        raw = [_raw(t) for t in row]
        if shift is not None:
            raw.append(_raw(shift[j]))
        out[j] = make(mpf_pos(mpf_sum(raw), prec, rounding))
    return out


@dataclass
class LinearMatrix:
    """A linear layer as a matrix stored by rows: z_j = sum_k x[index[j, k]] weight[j, k] + bias[j].

    Rows are output neurons (flattened C order), ``index`` the connected inputs (flattened C
    order; unconnected slots point at an extra zero input ``n_in`` with weight 0), ``connected``
    the mask of real connections. ``weight_mp`` / ``bias_mp`` are the exact values the reference
    computes with: the float64 parameters converted exactly, or, for a folded batch norm, the
    fold computed in mpmath (``weight`` / ``bias`` are then its float64 rounding, used for signs
    and error bounds). ``parameter_error`` is the relative error, in units of 2^-53, of float64
    parameters derived from the layer's own (0 when they are the layer's own), and
    ``bias_scale`` a magnitude that bounds |b_j| and the rounding of a derived bias.
    """

    n_in: int
    n_out: int
    index: np.ndarray
    connected: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    weight_mp: np.ndarray | None = None
    bias_mp: np.ndarray | None = None
    parameter_error: float = 0.0
    bias_scale: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        if self.weight_mp is None:
            self.weight_mp = to_mpf(self.weight)
        if self.bias_mp is None:
            self.bias_mp = to_mpf(self.bias)
        if self.bias_scale is None:
            self.bias_scale = np.abs(self.bias)

    def dense(self) -> np.ndarray:
        """The float64 matrix W[i, j] (n_in, n_out), for tests."""
        matrix = np.zeros((self.n_in + 1, self.n_out))
        rows = np.broadcast_to(np.arange(self.n_out)[:, None], self.index.shape)
        np.add.at(matrix, (self.index, rows), np.where(self.connected, self.weight, 0.0))
        return matrix[: self.n_in]


# -- window geometry ------------------------------------------------------------------------------

def window_count(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool = False) -> int:
    """Number of windows along one axis: floor((size + 2 p - k) / s) + 1, or ceil in ceil mode,
    where a last window that would start in the right padding is dropped (PyTorch, ONNX)."""
    span = size + 2 * padding - kernel
    if span < 0:
        return 0
    count = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (count - 1) * stride >= size + padding:
        count -= 1
    return count


def _window_cells(input_hw, kernel, stride, padding, ceil_mode):
    """(row, col) of every window cell, shape (Ho, Wo, kh, kw), relative to the unpadded input."""
    (height, width), (kh, kw), (sh, sw), (ph, pw) = input_hw, kernel, stride, padding
    ho = window_count(height, kh, sh, ph, ceil_mode)
    wo = window_count(width, kw, sw, pw, ceil_mode)
    if ho < 1 or wo < 1:
        raise ShapeError(f"input {input_hw} is smaller than the window {kernel}")
    p, q, u, v = np.meshgrid(np.arange(ho), np.arange(wo), np.arange(kh), np.arange(kw), indexing="ij")
    return p * sh + u - ph, q * sw + v - pw, (ho, wo)


def _conv_matrix(layer: Conv2d, input_shape: tuple[int, int, int]) -> tuple[LinearMatrix, tuple[int, ...]]:
    c_in, height, width = input_shape
    kernel = layer.weight
    c_out, per_group, kh, kw = kernel.shape
    groups = layer.groups
    if per_group * groups != c_in:
        raise ShapeError(f"{layer!r} expects {per_group * groups} input channels, gets {c_in}")
    row, col, (ho, wo) = _window_cells((height, width), (kh, kw), layer.stride, layer.padding, False)
    o, p, q, c, u, v = np.meshgrid(np.arange(c_out), np.arange(ho), np.arange(wo), np.arange(per_group),
                                   np.arange(kh), np.arange(kw), indexing="ij")
    rows, cols = row[p, q, u, v], col[p, q, u, v]
    channel = (o // (c_out // groups)) * per_group + c  # the input channel of group member c
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)  # padding is no input
    n_in = c_in * height * width
    index = np.where(inside, channel * height * width + rows * width + cols, n_in)
    shape = (c_out * ho * wo, per_group * kh * kw)
    weight = np.where(inside, kernel[o, c, u, v], 0.0)
    matrix = LinearMatrix(n_in, shape[0], index.reshape(shape), inside.reshape(shape),
                          weight.reshape(shape), np.repeat(layer.bias, ho * wo))
    return matrix, (c_out, ho, wo)


def pool_windows(layer, input_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
    """(index, connected, divisor, output shape) of a pooling layer over (C, H, W).

    One row per window, channel by channel; ``divisor`` is the number of cells average pooling
    divides by (clipped to the padded input, or the input pixels when count_include_pad is
    False).
    """
    if len(input_shape) != 3:
        raise ShapeError(f"{layer!r} expects (C, H, W), gets {tuple(input_shape)}")
    channels, height, width = input_shape
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
    row, col, (ho, wo) = _window_cells((height, width), (kh, kw), (sh, sw), (ph, pw), layer.ceil_mode)
    inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
    # the window clipped to the padded input (what count_include_pad divides by)
    in_padded = (row < height + ph) & (col < width + pw)
    n_in = channels * height * width
    c = np.arange(channels)[:, None, None, None, None]
    index = np.where(inside, c * height * width + row * width + col, n_in)
    connected = np.broadcast_to(inside, index.shape)
    count_pad = getattr(layer, "count_include_pad", True)
    divisor = (in_padded if count_pad else inside).sum(axis=(2, 3))
    divisor = np.broadcast_to(divisor, (channels, ho, wo))
    if not inside.any(axis=(2, 3)).all():  # pragma: no cover - padding <= kernel / 2 prevents it
        raise ShapeError(f"{layer!r}: a window lies in the padding only")
    shape = (channels * ho * wo, kh * kw)
    return index.reshape(shape), connected.reshape(shape), divisor.reshape(-1), (channels, ho, wo)


def _adaptive_bins(size: int, output: int) -> list[tuple[int, int]]:
    """[floor(o size / output), ceil((o + 1) size / output)) for o < output."""
    return [((o * size) // output, -(-((o + 1) * size) // output)) for o in range(output)]


def _adaptive_matrix(layer: AdaptiveAvgPool2d, input_shape) -> tuple[LinearMatrix, tuple[int, ...]]:
    if len(input_shape) != 3:
        raise ShapeError(f"{layer!r} expects (C, H, W), gets {tuple(input_shape)}")
    channels, height, width = input_shape
    out_h, out_w = layer.output_size
    rows_of = _adaptive_bins(height, out_h)
    cols_of = _adaptive_bins(width, out_w)
    width_max = max(e - s for s, e in rows_of) * max(e - s for s, e in cols_of)
    n_in = channels * height * width
    index = np.full((channels * out_h * out_w, width_max), n_in)
    connected = np.zeros(index.shape, bool)
    weight = np.zeros(index.shape)
    j = 0
    for c in range(channels):
        for p, (r0, r1) in enumerate(rows_of):
            for q, (c0, c1) in enumerate(cols_of):
                cells = [c * height * width + r * width + s for r in range(r0, r1) for s in range(c0, c1)]
                index[j, : len(cells)] = cells
                connected[j, : len(cells)] = True
                weight[j, : len(cells)] = 1.0 / len(cells)
                j += 1
    return LinearMatrix(n_in, len(index), index, connected, weight, np.zeros(len(index))), (channels, out_h, out_w)


def _diagonal_matrix(scale, shift, input_shape, scale_mp=None, shift_mp=None, **extra) -> LinearMatrix:
    """y_c = s_c x_c + t_c per channel (axis 0 of a sample), as a matrix with one input per row."""
    channels = input_shape[0]
    if len(scale) != channels:
        raise ShapeError(f"a per-channel affine map of {len(scale)} channels gets inputs {tuple(input_shape)}")
    per_channel = int(np.prod(input_shape[1:], dtype=np.int64))
    n = channels * per_channel
    repeat = lambda values: np.repeat(np.asarray(values), per_channel)  # noqa: E731
    return LinearMatrix(n, n, np.arange(n)[:, None], np.ones((n, 1), bool), repeat(scale)[:, None],
                        repeat(shift), None if scale_mp is None else repeat(scale_mp)[:, None],
                        None if shift_mp is None else repeat(shift_mp), **extra)


def linear_matrix(layer: object, input_shape: tuple[int, ...]) -> tuple[LinearMatrix, tuple[int, ...]]:
    """The explicit matrix of a linear layer on per-sample inputs of ``input_shape``."""
    input_shape = tuple(input_shape)
    if isinstance(layer, TokenDense):  # one Dense per token: a block-diagonal matrix
        n_in, n_out = layer.weight.shape
        if len(input_shape) != 2 or input_shape[1] != n_in:
            raise ShapeError(f"{layer!r} expects (tokens, {n_in}), gets {input_shape}")
        tokens = input_shape[0]
        index = (np.arange(tokens)[:, None, None] * n_in + np.arange(n_in)[None, None, :]
                 ).repeat(n_out, axis=1).reshape(tokens * n_out, n_in)
        weight = np.tile(np.ascontiguousarray(layer.weight.T), (tokens, 1))
        matrix = LinearMatrix(tokens * n_in, tokens * n_out, index, np.ones(index.shape, bool), weight,
                              np.tile(layer.bias, tokens))
        return matrix, (tokens, n_out)
    if isinstance(layer, Dense):
        n_in, n_out = layer.weight.shape
        if input_shape != (n_in,):
            raise ShapeError(f"{layer!r} expects ({n_in},), gets {input_shape}")
        index = np.broadcast_to(np.arange(n_in), (n_out, n_in))
        matrix = LinearMatrix(n_in, n_out, index, np.ones((n_out, n_in), bool),
                              np.ascontiguousarray(layer.weight.T), layer.bias)
        return matrix, (n_out,)
    if isinstance(layer, ChannelAffine):
        return _diagonal_matrix(layer.scale, layer.shift, input_shape), input_shape
    if len(input_shape) != 3:
        raise ShapeError(f"{layer!r} expects (C, H, W), gets {input_shape}")
    if isinstance(layer, Conv2d):
        return _conv_matrix(layer, input_shape)
    if isinstance(layer, AdaptiveAvgPool2d):
        return _adaptive_matrix(layer, input_shape)
    if isinstance(layer, (SumPool2d, AvgPool2d)):
        index, connected, divisor, out_shape = pool_windows(layer, input_shape)
        value = np.ones(len(index)) if type(layer) is SumPool2d else 1.0 / divisor
        weight = np.where(connected, value[:, None], 0.0)
        return LinearMatrix(int(np.prod(input_shape)), len(index), index, connected, weight,
                            np.zeros(len(index))), out_shape
    raise TypeError(f"{layer!r} is not a linear layer")


# -- batch normalisation, in mpmath ---------------------------------------------------------------

#: relative error (units of 2^-53) of a float64 batch-norm fold: var + eps, sqrt, divide, multiply
FOLD_ROUNDINGS = 4


def _batchnorm_affine(batchnorm: BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    """(s, t) with s_c = gamma_c / sqrt(var_c + eps), t_c = beta_c - mu_c s_c, at the working precision."""
    eps = mpmath.mpf(batchnorm.eps)
    gamma, beta, mean, var = (to_mpf(a) for a in (batchnorm.gamma, batchnorm.beta, batchnorm.mean, batchnorm.var))
    scale = np.array([g / mpmath.sqrt(v + eps) for g, v in zip(gamma, var)], dtype=object)
    return scale, beta - mean * scale


def _channel_of_rows(n_out: int, channels: int) -> np.ndarray:
    return np.arange(n_out) // (n_out // channels)


def fold_batchnorms(matrix: LinearMatrix, batchnorms: Sequence[BatchNorm]) -> LinearMatrix:
    """``matrix`` followed by the batch norms, as one matrix computed in mpmath.

    Each BatchNorm y_c = s_c z_c + t_c acts on the output channel c of row j (row j // (Ho Wo)
    of a convolution, j of a dense layer): w'_ij = s_c w_ij, b'_j = s_c b_j + t_c. The float64
    ``weight`` / ``bias`` of the result are the rounded fold (for signs and bounds).
    """
    weight_mp, bias_mp = matrix.weight_mp.copy(), matrix.bias_mp.copy()
    bias_scale = np.abs(matrix.bias).astype(np.float64)
    for batchnorm in batchnorms:
        channels = batchnorm.gamma.shape[0]
        if matrix.n_out % channels:
            raise ShapeError(f"{batchnorm!r} does not fit a layer with {matrix.n_out} outputs")
        scale, shift = _batchnorm_affine(batchnorm)
        channel = _channel_of_rows(matrix.n_out, channels)
        weight_mp = weight_mp * scale[channel][:, None]
        bias_mp = bias_mp * scale[channel] + shift[channel]
        s = np.abs(np.array([float(v) for v in scale]))
        bias_scale = bias_scale * s[channel] + np.abs(batchnorm.mean)[channel] * s[channel] \
            + np.abs(batchnorm.beta)[channel]
    weight = np.vectorize(float, otypes=[np.float64])(weight_mp) if weight_mp.size else matrix.weight
    bias = np.vectorize(float, otypes=[np.float64])(bias_mp) if bias_mp.size else matrix.bias
    return LinearMatrix(matrix.n_in, matrix.n_out, matrix.index, matrix.connected, weight, bias,
                        weight_mp, bias_mp, parameter_error=FOLD_ROUNDINGS * len(batchnorms) + 2,
                        bias_scale=bias_scale)


def batchnorm_matrix(batchnorm: BatchNorm, input_shape: tuple[int, ...]) -> LinearMatrix:
    """An unfolded batch norm (the engine's ChannelAffine node) as a diagonal matrix in mpmath."""
    scale, shift = _batchnorm_affine(batchnorm)
    to_float = np.vectorize(float, otypes=[np.float64])
    s = np.abs(to_float(scale))
    bias_scale = np.abs(batchnorm.beta) + np.abs(batchnorm.mean) * s
    per_channel = int(np.prod(input_shape[1:], dtype=np.int64))
    return _diagonal_matrix(to_float(scale), to_float(shift), input_shape, scale, shift,
                            parameter_error=FOLD_ROUNDINGS + 2,
                            bias_scale=np.repeat(bias_scale, per_channel))


def to_float(values: np.ndarray) -> np.ndarray:
    """Round an array of mpf to float64 (round to nearest)."""
    return np.vectorize(float, otypes=[np.float64])(values)


__all__ = ["FOLD_ROUNDINGS", "LINEAR_LAYERS", "LinearMatrix", "batchnorm_matrix", "exact_products",
           "fold_batchnorms", "linear_matrix", "pool_windows", "row_dot", "row_sum", "to_float", "to_mpf",
           "window_count"]
