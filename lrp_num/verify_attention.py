"""First-order rounding bounds of the attention nodes, for :func:`lrp_num.verify.rounding_bound`.

With u = 2^-53 and, per sample, the exact values (float64 roundings of the reference's mpf
values) of a node's inputs a, their forward error bounds e (from the float64 engine's forward
pass) and the error bound E of the relevance arriving at the node's output, these bound the
float64 engine's error of the node's output (forward) and of the relevance it passes down
(backward), to first order in u:

* SplitHeads / MergeHeads move values: errors move with them;
* Multiply y = a b: e_y = |b| e_a + |a| e_b + u |y|; the uniform rule halves R exactly, so each
  factor's relevance carries E / 2;
* MatMul C = s A B over q products: e_C = |s| sum_k (|B| e_A + |A| e_B) + u (q + 3) |s| sum_k |A B|;
  with rho = R / (C + eps sign C), the error of rho is E / |d| + |rho| e_C / |d| + u |rho|, and
  R_A = s A (rho B^T) / 2 (r terms) carries |s A| / 2 (|d rho| |B|^T + |rho| e_B^T) + |s| e_A / 2
  |rho| |B|^T + u (r + 4) |s A| / 2 |rho| |B|^T (and so R_B); under matmul_cp (the trace's
  ``held_input``) the held factor's relevance is exactly 0 and the free one's carries twice
  that bound (its share is 1, not 1/2);
* Softmax s = softmax(x) over n entries (computed as exp(x - max) / sum): e_s = s (e_x + sum_k
  s_k e_x_k) + u s (n + 4 + |x - max| + max |x - max|); R_i = x_i (R_i - s_i T), T = sum_j R_j,
  carries |x_i| (E_i + s_i sum_j E_j) + e_x_i |R_i - s_i T| + |x_i T| e_s_i
  + u (n + 3) |x_i| (|R_i| + s_i sum_j |R_j|).

Every bound is per entry, on one sample's flattened values; verify doubles the total for safety.
"""

from __future__ import annotations

import numpy as np

from lrp_num.layers import MatMul, MergeHeads, Multiply, Softmax, SplitHeads
from lrp_num.reference.attention import _index_map

U = 2.0 ** -53
OPERATIONS = (Softmax, Multiply, MatMul, SplitHeads, MergeHeads)


def _rows(values: np.ndarray, shape, axis: int) -> np.ndarray:
    return np.moveaxis(np.asarray(values, float).reshape(shape), axis, -1).reshape(-1, shape[axis])


def _unrows(rows: np.ndarray, shape, axis: int) -> np.ndarray:
    moved = list(shape)
    moved.append(moved.pop(axis))
    return np.moveaxis(rows.reshape(moved), -1, axis).ravel()


def _softmax_parts(x: np.ndarray, e: np.ndarray, shape, axis: int):
    xs, es = _rows(x, shape, axis), _rows(e, shape, axis)
    n = xs.shape[1]
    spread = np.abs(xs - xs.max(axis=1, keepdims=True))
    shifted = np.exp(xs - xs.max(axis=1, keepdims=True))
    s = shifted / shifted.sum(axis=1, keepdims=True)
    e_s = s * (es + (s * es).sum(axis=1, keepdims=True)) \
        + U * s * (n + 4 + spread + spread.max(axis=1, keepdims=True))
    return xs, es, s, e_s


def _matrices(values, shape) -> np.ndarray:
    return np.asarray(values, float).reshape((-1,) + tuple(shape[-2:]))


def _right(operation: MatMul, b: np.ndarray) -> np.ndarray:
    return np.swapaxes(b, -1, -2) if operation.transpose_b else b


def forward_error(operation, a: list[np.ndarray], e: list[np.ndarray], shapes: list[tuple]) -> np.ndarray:
    """Bound on the float64 output error of one attention node (flattened)."""
    if isinstance(operation, (SplitHeads, MergeHeads)):
        return np.asarray(e[0])[_index_map(operation, shapes[0])]
    if isinstance(operation, Multiply):
        return np.abs(a[1]) * e[0] + np.abs(a[0]) * e[1] + U * np.abs(a[0] * a[1])
    if isinstance(operation, Softmax):
        axis = operation.sample_axis(len(shapes[0]))
        return _unrows(_softmax_parts(a[0], e[0], shapes[0], axis)[3], shapes[0], axis)
    scale = abs(operation.scale)
    am, ea = _matrices(a[0], shapes[0]), _matrices(e[0], shapes[0])
    bm, eb = _right(operation, _matrices(a[1], shapes[1])), _right(operation, _matrices(e[1], shapes[1]))
    q = am.shape[-1]
    return (scale * (ea @ np.abs(bm) + np.abs(am) @ eb) + U * (q + 3) * scale * (np.abs(am) @ np.abs(bm))).ravel()


def relevance_error(operation, parameters, a: list[np.ndarray], e: list[np.ndarray], shapes: list[tuple],
                    upper: np.ndarray, error: np.ndarray) -> list[np.ndarray]:
    """Bound on the float64 error of the relevance passed to each input (flattened)."""
    if isinstance(operation, SplitHeads):
        moved = np.zeros(len(error))
        moved[_index_map(operation, shapes[0])] = error
        return [moved]
    if isinstance(operation, MergeHeads):
        moved = np.zeros(len(error))
        moved[_index_map(operation, shapes[0])] = error
        return [moved]
    if isinstance(operation, Multiply):
        return [error / 2, error / 2]
    if isinstance(operation, Softmax):
        shape = shapes[0]
        axis = operation.sample_axis(len(shape))
        xs, es, s, e_s = _softmax_parts(a[0], e[0], shape, axis)
        r, big_e = _rows(upper, shape, axis), _rows(error, shape, axis)
        n = xs.shape[1]
        total = r.sum(axis=1, keepdims=True)
        bound = np.abs(xs) * (big_e + s * big_e.sum(axis=1, keepdims=True)) \
            + es * np.abs(r - s * total) + np.abs(xs * total) * e_s \
            + U * (n + 3) * np.abs(xs) * (np.abs(r) + s * np.abs(r).sum(axis=1, keepdims=True))
        return [_unrows(bound, shape, axis)]
    scale = abs(operation.scale)
    epsilon = float(parameters["epsilon"])
    am = scale * np.abs(_matrices(a[0], shapes[0]))
    ea = scale * _matrices(e[0], shapes[0]) + U * am
    bm = np.abs(_right(operation, _matrices(a[1], shapes[1])))
    eb = _right(operation, _matrices(e[1], shapes[1]))
    signed_a = scale * np.sign(operation.scale) * _matrices(a[0], shapes[0])
    c = signed_a @ _right(operation, _matrices(a[1], shapes[1]))
    out_shape = c.shape
    r, big_e = np.asarray(upper, float).reshape(out_shape), np.asarray(error, float).reshape(out_shape)
    q = am.shape[-1]
    e_c = ea @ bm + am @ eb + U * (q + 3) * (am @ bm)
    d = np.abs(c + epsilon * np.where(c >= 0, 1.0, -1.0))
    rho = np.divide(np.abs(r), d, out=np.zeros_like(d), where=d != 0)
    e_rho = np.divide(big_e + rho * e_c, d, out=np.zeros_like(d), where=d != 0) + U * rho
    columns = out_shape[-1]
    held = parameters.get("held_input")  # matmul_cp: shares (0, 1) or (1, 0) instead of (1/2, 1/2)
    weight_a, weight_b = (1.0, 1.0) if held is None else (float(held == 1) * 2, float(held == 0) * 2)
    bound_a = am / 2 * (e_rho @ np.swapaxes(bm, -1, -2) + rho @ np.swapaxes(eb, -1, -2)) \
        + ea / 2 * (rho @ np.swapaxes(bm, -1, -2)) + U * (columns + 4) * am / 2 * (rho @ np.swapaxes(bm, -1, -2))
    rows = out_shape[-2]
    bound_b = bm / 2 * (np.swapaxes(am, -1, -2) @ e_rho + np.swapaxes(ea, -1, -2) @ rho) \
        + eb / 2 * (np.swapaxes(am, -1, -2) @ rho) + U * (rows + 4) * bm / 2 * (np.swapaxes(am, -1, -2) @ rho)
    return [(weight_a * bound_a).ravel(), _right(operation, weight_b * bound_b).ravel()]


__all__ = ["OPERATIONS", "forward_error", "relevance_error"]
