"""Attention in the torch.fx import: nn.MultiheadAttention and hand-written attention modules.

:func:`register` adds to a :class:`lrp_num.io.torch_import._FxReader` what attention needs:

* ``nn.Linear`` on tokens (N, T, features) becomes a :class:`~lrp_num.layers.TokenDense` (on
  vectors it stays a Dense);
* ``nn.Softmax(dim)``, ``torch.softmax`` / ``F.softmax`` / ``x.softmax(dim)``: a Softmax node
  (not over the batch axis);
* ``a * b`` / ``torch.mul`` of two tensors: a Multiply node; a tensor times or divided by a
  number right after a matrix product: the product's ``scale`` (``q @ k.transpose(-2, -1) /
  math.sqrt(d)``);
* ``torch.matmul`` / ``a @ b`` / ``torch.bmm``: a MatMul node, with ``transpose_b`` when the
  second factor is ``k.transpose(-2, -1)`` (or ``.mT``-like ``transpose(2, 3)`` of a 4-d batch);
* the head split ``x.view(N, T, H, d).transpose(1, 2)`` (or ``reshape``, or
  ``permute(0, 2, 1, 3)``): a SplitHeads node; the merge ``x.transpose(1, 2).contiguous()
  .view(N, T, H * d)`` (or ``reshape``): a MergeHeads node;
* ``nn.MultiheadAttention(batch_first=True)`` called as self-attention ``mha(x, x, x)`` with no
  mask: the nodes of :func:`~lrp_num.layers.attention.multi_head_attention` (its packed
  in-projection split into q, k, v), and ``need_weights`` ignored (the weights output is refused
  if used).

A transposed or head-viewed tensor used in any other way is an UnsupportedLayerError.
"""

from __future__ import annotations

import operator
from typing import Any

from lrp_num.io.graph_builder import HeadsView, Swapped, Tensor, TransposedLast
from lrp_num.layers import MatMul, MergeHeads, Multiply, Softmax, SplitHeads, TokenDense
from lrp_num.layers.attention import multi_head_attention


class _AttentionWeights:
    """The attention weights output of nn.MultiheadAttention (not part of the graph)."""

    def __repr__(self) -> str:
        return "the attention weights of nn.MultiheadAttention"


def register(reader: Any, torch: Any) -> None:
    """Add the attention modules, functions and methods to ``reader``'s tables."""
    nn, functional = torch.nn, torch.nn.functional
    handlers = _Handlers(reader)
    reader.modules.update({nn.Linear: handlers.linear, nn.Softmax: handlers.softmax_module,
                           nn.MultiheadAttention: handlers.multihead})
    reader.functions.update({torch.softmax: handlers.softmax, functional.softmax: handlers.softmax,
                             operator.mul: handlers.mul, torch.mul: handlers.mul,
                             operator.truediv: handlers.div, torch.div: handlers.div,
                             operator.floordiv: handlers.floordiv,
                             operator.matmul: handlers.matmul, torch.matmul: handlers.matmul,
                             torch.bmm: handlers.matmul, torch.transpose: handlers.transpose})
    reader.methods.update({"softmax": handlers.softmax, "mul": handlers.mul, "div": handlers.div,
                           "matmul": handlers.matmul, "transpose": handlers.transpose,
                           "permute": handlers.permute, "contiguous": handlers.contiguous,
                           "view": handlers.reshape, "reshape": handlers.reshape})


class _Handlers:
    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.plain_linear = reader._linear
        self.plain_reshape = reader._reshape

    # ---- helpers ----

    def _source(self, node: Any, index: int = 0) -> Any:
        return self.reader._value(node.args[index])

    def _tensor(self, node: Any, value: Any, what: str) -> Tensor:
        if not isinstance(value, Tensor):
            self.reader._unsupported(node, f"{what} of {value!r}")
        return value

    def _dim(self, node: Any, value: Any, shape: tuple[int, ...]) -> int:
        rank = len(shape) + 1  # with the batch axis
        if not isinstance(value, int) or not -rank <= value < rank:
            self.reader._unsupported(node, f"dim={value!r} on a tensor of per-sample shape {shape}")
        return value % rank

    # ---- modules ----

    def linear(self, node: Any, module: Any) -> Tensor:
        source = self._tensor(node, self._source(node), "a Linear layer")
        if source.shape is None or len(source.shape) != 2:
            return self.plain_linear(node, module)
        bias = None if module.bias is None else self.reader._array(module.bias)
        weight = self.reader._array(module.weight.detach().t().contiguous())
        layer = self.reader._layer(node, lambda: TokenDense(weight, bias))
        return self.reader._add_node(node, layer, [source])

    def softmax_module(self, node: Any, module: Any) -> Tensor:
        return self._softmax(node, self._source(node), module.dim)

    def multihead(self, node: Any, module: Any) -> tuple:
        reader = self.reader
        args = [reader._value(a) for a in node.args]
        query = args[0] if args else reader._value(node.kwargs.get("query"))
        key = args[1] if len(args) > 1 else reader._value(node.kwargs.get("key"))
        value = args[2] if len(args) > 2 else reader._value(node.kwargs.get("value"))
        for name in ("key_padding_mask", "attn_mask"):
            if node.kwargs.get(name) is not None:
                reader._unsupported(node, f"MultiheadAttention with {name}")
        if node.kwargs.get("is_causal"):
            reader._unsupported(node, "MultiheadAttention with is_causal=True")
        if len(args) > 3:
            reader._unsupported(node, "MultiheadAttention with positional masks or options")
        if not (query is key is value) or not isinstance(query, Tensor):
            reader._unsupported(node, "MultiheadAttention other than self-attention mha(x, x, x)")
        if not module.batch_first:
            reader._unsupported(node, "MultiheadAttention with batch_first=False (use batch_first=True)")
        if not module._qkv_same_embed_dim or module.bias_k is not None or module.add_zero_attn:
            reader._unsupported(node, "MultiheadAttention with kdim/vdim, add_bias_kv or add_zero_attn")
        if query.shape is None or len(query.shape) != 2:
            reader._unsupported(node, f"MultiheadAttention on per-sample shape {query.shape}; expected (T, E)")
        width = module.embed_dim
        weight = reader._array(module.in_proj_weight)  # (3E, E), torch layout
        bias = reader._array(module.in_proj_bias) if module.in_proj_bias is not None else None
        pairs = []
        for k in range(3):
            part = weight[k * width:(k + 1) * width].T.copy()
            pairs.append((part, None if bias is None else bias[k * width:(k + 1) * width].copy()))
        out_bias = None if module.out_proj.bias is None else reader._array(module.out_proj.bias)
        pairs.append((reader._array(module.out_proj.weight).T.copy(), out_bias))
        name = reader._name(node)
        nodes, output = reader._layer(node, lambda: multi_head_attention(name, query.name, module.num_heads,
                                                                          *pairs))
        tensors = {query.name: query}
        for node_name, operation, inputs in nodes:
            tensors[node_name] = reader.builder.add(node_name, operation, [tensors[i] for i in inputs],
                                                    f"fx node {node.name!r} (MultiheadAttention)")
        return (tensors[output], _AttentionWeights())

    # ---- functions and methods ----

    def _softmax(self, node: Any, value: Any, dim: Any) -> Tensor:
        source = self._tensor(node, value, "softmax")
        if dim is None:
            self.reader._unsupported(node, "softmax without dim")
        axis = self._dim(node, dim, source.shape)
        if axis == 0:
            self.reader._unsupported(node, "softmax over the batch axis")
        return self.reader._add_node(node, self.reader._layer(node, lambda: Softmax(axis)), [source])

    def softmax(self, node: Any) -> Tensor:
        return self._softmax(node, self._source(node), self.reader._argument(node, 1, "dim", None))

    def floordiv(self, node: Any) -> int:
        a, b = self._source(node, 0), self._source(node, 1)
        if not isinstance(a, int) or not isinstance(b, int) or b == 0:
            self.reader._unsupported(node, "floor division other than of two sizes")
        return a // b

    def mul(self, node: Any) -> Tensor:
        a, b = self._source(node, 0), self._source(node, 1)
        if isinstance(a, int) and isinstance(b, int):  # sizes
            return a * b
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            return self.reader._add_node(node, Multiply(), [a, b])
        tensor, number = (a, b) if isinstance(a, Tensor) else (b, a)
        return self._scaled(node, tensor, number, divide=False)

    def div(self, node: Any) -> Tensor:
        return self._scaled(node, self._source(node, 0), self._source(node, 1), divide=True)

    def _scaled(self, node: Any, tensor: Any, number: Any, divide: bool) -> Tensor:
        reader = self.reader
        if not isinstance(tensor, Tensor) or isinstance(number, Tensor) or not isinstance(number, (int, float)):
            reader._unsupported(node, "a product or quotient other than a tensor by a number after a matmul")
        producer = reader.builder.producer(tensor)
        source_node = node.args[0] if isinstance(reader._value(node.args[0]), Tensor) else node.args[1]
        if producer is None or not isinstance(producer.operation, MatMul) or len(source_node.users) != 1:
            reader._unsupported(node, "scaling by a number anywhere but right after a matrix product it alone reads")
        operation = producer.operation
        factor = 1.0 / float(number) if divide else float(number)
        reader.builder.replace(tensor, reader._layer(node, lambda: MatMul(operation.transpose_b,
                                                                          operation.scale * factor)))
        return tensor

    def matmul(self, node: Any) -> Tensor:
        a, b = self._source(node, 0), self._source(node, 1)
        transpose_b = isinstance(b, TransposedLast)
        b = b.tensor if transpose_b else b
        a = self._tensor(node, a, "a matrix product")
        b = self._tensor(node, b, "a matrix product")
        return self.reader._add_node(node, MatMul(transpose_b=transpose_b), [a, b])

    def _swap(self, node: Any, value: Any, first: int, second: int) -> Any:
        if isinstance(value, HeadsView) and {first, second} == {1, 2}:
            return self.reader._add_node(node, SplitHeads(value.heads), [value.tensor])
        tensor = self._tensor(node, value, "transposing")
        rank = len(tensor.shape) + 1
        pair = {first % rank, second % rank}
        if pair == {rank - 2, rank - 1} and rank >= 3:
            return TransposedLast(tensor)
        if pair == {1, 2} and rank == 4:
            return Swapped(tensor)
        self.reader._unsupported(node, f"transposing axes {first} and {second} of a tensor of per-sample shape "
                                       f"{tensor.shape}")

    def transpose(self, node: Any) -> Any:
        return self._swap(node, self._source(node), self.reader._argument(node, 1, "dim0", None),
                          self.reader._argument(node, 2, "dim1", None))

    def permute(self, node: Any) -> Any:
        dims = [self.reader._value(a) for a in node.args[1:]]
        if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
            dims = list(dims[0])
        if list(dims) != [0, 2, 1, 3]:
            self.reader._unsupported(node, f"permute{tuple(dims)} (only (0, 2, 1, 3), the head split or merge)")
        return self._swap(node, self._source(node), 1, 2)

    def contiguous(self, node: Any) -> Any:
        return self._source(node)

    def reshape(self, node: Any) -> Any:
        from lrp_num.io.torch_import import BATCH

        source = self._source(node)
        target = [self.reader._value(a) for a in node.args[1:]]
        if len(target) == 1 and isinstance(target[0], (list, tuple)):
            target = list(target[0])
        if isinstance(source, Swapped):
            heads, tokens, d = source.tensor.shape
            if len(target) == 3 and target[0] is BATCH and tuple(target[1:]) in ((tokens, heads * d), (tokens, -1),
                                                                                 (-1, heads * d)):
                return self.reader._add_node(node, MergeHeads(), [source.tensor])
            self.reader._unsupported(node, f"{node.target} of swapped heads to {tuple(target)}")
        if isinstance(source, Tensor) and source.shape is not None and len(source.shape) == 2 and len(target) == 4:
            tokens, features = source.shape
            heads, d = target[2], target[3]
            if target[0] is BATCH and target[1] in (tokens, -1) and isinstance(heads, int) and isinstance(d, int) \
                    and heads > 0 and (d == -1 or heads * d == features) and features % heads == 0:
                return HeadsView(source, heads)
        return self.plain_reshape(node)


__all__ = ["register"]
