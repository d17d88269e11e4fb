"""Attention in the ONNX import: MatMul of two tensors, Softmax, Mul/Div, Transpose, head Reshape.

:func:`register` adds to the ONNX reader (:mod:`lrp_num.io.onnx_import`):

* MatMul of a model tensor of tokens (T, features) by a constant -> :class:`~lrp_num.layers.TokenDense`
  (a following constant Add is its bias, as for Dense); MatMul of two model tensors -> MatMul,
  with ``transpose_b`` when the second is a Transpose of its last two axes;
* Softmax over the last axis (opset >= 13 any ``axis`` naming it; earlier opsets only an explicit
  last axis, where the flattening of opsets < 13 changes nothing) -> Softmax;
* Mul of two model tensors -> Multiply; Mul or Div of a MatMul's output by a scalar constant (the
  MatMul read by nothing else) -> that MatMul's ``scale``;
* the head split Reshape (N, T, H, d) + Transpose perm (0, 2, 1, 3) -> SplitHeads (perm (0, 2, 3, 1),
  the split keys transposed for Q K^T in one step as torch's exporter writes it, -> SplitHeads
  feeding a MatMul as its transposed second factor), and the merge
  Transpose perm (0, 2, 1, 3) + Reshape (N, T, H*d) -> MergeHeads; Transpose perm (0, 1, 3, 2) (or
  (0, 2, 1) on tokens) feeding a MatMul as its second factor.

Any other use of these operators is an UnsupportedLayerError naming the node.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lrp_num.io.graph_builder import HeadsView, Swapped, Tensor, TransposedLast
from lrp_num.io.onnx_import import _name
from lrp_num.layers import MatMul, MergeHeads, Multiply, Softmax, SplitHeads, TokenDense

OPS = ("Softmax", "Mul", "Div", "Transpose")


def register(reader: Any) -> None:
    """Install the attention handlers on ``reader`` (a ``_GraphReader``)."""
    handlers = _Handlers(reader)
    reader.handlers.update({"MatMul": handlers.matmul, "Softmax": handlers.softmax, "Mul": handlers.mul,
                            "Div": handlers.div, "Transpose": handlers.transpose, "Reshape": handlers.reshape})


def _is_batch(value: Any) -> bool:
    return repr(value) == "N" or value == 0 or value == -1


class _Handlers:
    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.plain_matmul = reader._op_MatMul
        self.plain_reshape = reader._op_Reshape
        self.plain = {op: reader.handlers.get(op) for op in ("Mul", "Div")}  # e.g. the exact GELU's steps

    def _value(self, node: Any, index: int) -> Any:
        return self.reader.values[node.input[index]] if index < len(node.input) and node.input[index] else None

    def _tensor(self, node: Any, value: Any, what: str) -> Tensor:
        if not isinstance(value, Tensor):
            self.reader._unsupported(node, f"{what} of {type(value).__name__}")
        return value

    def _set(self, node: Any, value: Any) -> None:
        self.reader._single_output(node)
        self.reader.values[node.output[0]] = value

    def matmul(self, node: Any, attrs: dict) -> None:
        a, b = self._value(node, 0), self._value(node, 1)
        if isinstance(a, Tensor) and isinstance(b, np.ndarray) and a.shape is not None and len(a.shape) == 2:
            weight = b
            self.reader._add(node, self.reader._layer(node, lambda: TokenDense(weight)), [a])
            return
        if isinstance(a, Tensor) and isinstance(b, (Tensor, TransposedLast)):
            transpose_b = isinstance(b, TransposedLast)
            b = b.tensor if transpose_b else b
            self.reader._add(node, MatMul(transpose_b=transpose_b), [a, b])
            return
        self.plain_matmul(node, attrs)

    def softmax(self, node: Any, attrs: dict) -> None:
        data = self._tensor(node, self._value(node, 0), "Softmax")
        rank = len(data.shape) + 1
        opset = getattr(self.reader, "opset", 13)
        axis = attrs.get("axis", -1 if opset >= 13 else 1)
        if axis % rank != rank - 1:
            self.reader._unsupported(node, f"Softmax over axis {axis} of a rank-{rank} tensor (only the last axis)")
        self.reader._add(node, Softmax(-1), [data])

    def _scale(self, node: Any, data: Tensor, number: Any, divide: bool) -> None:
        reader = self.reader
        value = np.asarray(number)
        producer = reader.builder.producer(data)
        source = node.input[0] if isinstance(self._value(node, 0), Tensor) else node.input[1]
        if value.size != 1 or producer is None or not isinstance(producer.operation, MatMul) \
                or len(reader.readers.get(source, [])) != 1:
            reader._unsupported(node, f"{node.op_type} other than of two model tensors or of a MatMul's output by "
                                      "a scalar")
        factor = float(value.ravel()[0])
        operation = producer.operation
        reader.builder.replace(data, reader._layer(node, lambda: MatMul(
            operation.transpose_b, operation.scale / factor if divide else operation.scale * factor)))
        self._set(node, data)

    def _after_matmul(self, value: Any) -> bool:
        producer = self.reader.builder.producer(value) if isinstance(value, Tensor) else None
        return producer is not None and isinstance(producer.operation, MatMul)

    def _otherwise(self, node: Any, attrs: dict, why: str) -> None:
        plain = self.plain.get(node.op_type)
        if plain is None:
            self.reader._unsupported(node, why)
        plain(node, attrs)

    def mul(self, node: Any, attrs: dict) -> None:
        a, b = self._value(node, 0), self._value(node, 1)
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            self.reader._add(node, Multiply(), [a, b])
        elif isinstance(a, Tensor) and isinstance(b, np.ndarray) and self._after_matmul(a):
            self._scale(node, a, b, divide=False)
        elif isinstance(b, Tensor) and isinstance(a, np.ndarray) and self._after_matmul(b):
            self._scale(node, b, a, divide=False)
        elif not isinstance(a, Tensor) and not isinstance(b, Tensor) and isinstance(a, np.ndarray) \
                and isinstance(b, np.ndarray):
            self.reader._folded(node, lambda arrays: arrays[0] * arrays[1])
        else:
            self._otherwise(node, attrs, "Mul other than of two model tensors or of a MatMul's output by a scalar")

    def div(self, node: Any, attrs: dict) -> None:
        a, b = self._value(node, 0), self._value(node, 1)
        if isinstance(a, Tensor) and isinstance(b, np.ndarray) and self._after_matmul(a):
            self._scale(node, a, b, divide=True)
        elif isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
            self.reader._folded(node, lambda arrays: arrays[0] // arrays[1] if arrays[0].dtype.kind in "iuO"
                                else arrays[0] / arrays[1])
        else:
            self._otherwise(node, attrs, "Div other than of a MatMul's output by a scalar")

    def transpose(self, node: Any, attrs: dict) -> None:
        value = self._value(node, 0)
        perm = list(attrs.get("perm", []))
        if isinstance(value, HeadsView) and perm == [0, 2, 1, 3]:
            self.reader._add(node, SplitHeads(value.heads), [value.tensor])
            return
        if isinstance(value, HeadsView) and perm == [0, 2, 3, 1]:
            # the keys' split and K^T in one: torch's exporter fuses view(N, T, H, d).transpose(1, 2)
            # .transpose(-2, -1) into this single Transpose
            self._set(node, TransposedLast(self.reader.builder.add(
                _name(node), SplitHeads(value.heads), [value.tensor], f"ONNX node {_name(node)!r} (Transpose)")))
            return
        data = self._tensor(node, value, "Transpose")
        rank = len(data.shape) + 1
        if rank >= 3 and perm == list(range(rank - 2)) + [rank - 1, rank - 2]:
            self._set(node, TransposedLast(data))
        elif rank == 4 and perm == [0, 2, 1, 3]:
            self._set(node, Swapped(data))
        else:
            self.reader._unsupported(node, f"Transpose perm={perm} of per-sample shape {data.shape} (only the "
                                           "head split/merge (0, 2, 1, 3) and the last two axes before a MatMul)")

    def reshape(self, node: Any, attrs: dict) -> None:
        value = self._value(node, 0)
        target = self._value(node, 1)
        if isinstance(target, np.ndarray):
            target = target.ravel().tolist()
        if isinstance(value, Swapped) and isinstance(target, list) and len(target) == 3 and _is_batch(target[0]):
            heads, tokens, d = value.tensor.shape
            if [int(t) for t in target[1:]] in ([tokens, heads * d], [tokens, -1], [-1, heads * d]):
                self.reader._add(node, MergeHeads(), [value.tensor])
                return
        if isinstance(value, Tensor) and value.shape is not None and len(value.shape) == 2 \
                and isinstance(target, list) and len(target) == 4 and _is_batch(target[0]):
            tokens, features = value.shape
            rest = [int(t) for t in target[1:]]
            heads = rest[1]
            if rest[0] in (tokens, 0, -1) and heads > 0 and features % heads == 0 \
                    and rest[2] in (features // heads, -1):
                self._set(node, HeadsView(value, heads))
                return
        if not isinstance(value, Tensor):
            self.reader._unsupported(node, f"Reshape of {type(value).__name__} to {target}")
        self.plain_reshape(node, attrs)


__all__ = ["OPS", "register"]
