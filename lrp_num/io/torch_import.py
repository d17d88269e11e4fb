"""Import a PyTorch ``nn.Module`` as a :class:`~lrp_num.engine.graph.Graph`, through ``torch.fx``.

:func:`from_torch_module` traces the module symbolically (``torch.fx.symbolic_trace``): every
call of a leaf module (the modules of ``torch.nn``) and every tensor function or method becomes
an fx node, in execution order, with the modules named by their qualified names. Each node is
translated into a graph node of the engine:

* modules: ``nn.Conv2d`` (stride, zero padding, groups, with or without bias), ``nn.Linear``
  (weight transposed: Dense keeps w_ij as (n_in, n_out), torch (n_out, n_in)),
  ``nn.BatchNorm1d`` / ``nn.BatchNorm2d`` (running statistics; folded by the graph into the
  layer before it where possible), ``nn.ReLU``, ``nn.MaxPool2d`` (padding, ceil_mode),
  ``nn.AvgPool2d`` (padding, ceil_mode, count_include_pad; ``divisor_override=1`` is sum
  pooling), ``nn.AdaptiveAvgPool2d``, ``nn.Dropout`` / ``nn.Dropout2d`` (identity at inference),
  ``nn.Identity``, ``nn.Flatten`` (start_dim 1), ``nn.GELU`` (both forms), ``nn.SiLU``,
  ``nn.Tanh``, ``nn.Sigmoid``, ``nn.LayerNorm`` and ``nn.RMSNorm`` over the last axis;
  ``nn.Sequential`` and user modules are traced through;
* functions and methods: ``+`` / ``+=`` / ``torch.add`` / ``Tensor.add`` of two tensors (an Add
  node), ``torch.cat`` (a Concat node), ``torch.flatten(x, 1)`` / ``x.flatten(1)``,
  ``x.view(x.size(0), -1)`` / ``x.reshape(x.shape[0], -1)`` / ``view(-1, k)`` (Flatten),
  ``torch.relu`` / ``F.relu`` / ``x.relu()``, ``F.gelu``, ``F.silu``, ``torch.tanh`` /
  ``x.tanh()``, ``torch.sigmoid`` / ``x.sigmoid()``; ``x.size(...)`` and ``x.shape[...]`` are resolved
  from the input shape;
* attention (:mod:`lrp_num.io.torch_attention`): ``nn.MultiheadAttention`` (batch_first,
  self-attention), ``nn.Linear`` on tokens, softmax, ``a * b``, ``a @ b`` with
  ``k.transpose(-2, -1)`` and a constant scale, the head split and merge.

Node names are the modules' qualified names (``layer1.0.conv1``; a module called twice gets
``@1`` on its second call, ``layer1.0.relu@1``) and, for functions, the innermost module that
calls them and the function (``layer1.0.add``), so that relevance reports name torchvision's
modules. The graph computes the module's inference function, that of ``module.eval()``:
batch norms use their running statistics and dropout is the identity.

Anything else is a one-line :class:`~lrp_num.errors.UnsupportedLayerError` naming the fx node
and its target. torch is imported when a module is imported, not with this module.
"""

from __future__ import annotations

import math
import operator
import re
from typing import Any, Callable

import numpy as np

from lrp_num.errors import GraphError, LRPError, UnsupportedLayerError
from lrp_num.engine.graph import Graph
from lrp_num.io.graph_builder import GraphBuilder, Tensor
from lrp_num.layers import (GELU, AdaptiveAvgPool2d, Add, AvgPool2d, BatchNorm, Concat, Conv2d,
                            Dense, Dropout, Flatten, Identity, LayerNorm, MaxPool2d, ReLU, RMSNorm,
                            SiLU, Sigmoid, SumPool2d, Tanh)
from lrp_num.io.torch_bridge import require_torch


class _Batch:
    """The batch size: ``x.size(0)`` and ``x.shape[0]`` of a traced tensor, unknown at import."""

    def __repr__(self) -> str:
        return "N"


BATCH = _Batch()


def from_torch_module(module: Any, input_shape: tuple[int, ...]) -> Graph:
    """Translate a PyTorch module into a graph model of the engine.

    Parameters
    ----------
    module : torch.nn.Module
        Built from the supported modules and functions (see the module docstring); its
        parameters and buffers are copied (float64), the module is not changed.
    input_shape : tuple of int
        Per-sample input shape, e.g. (3, 224, 224).

    Returns
    -------
    Graph
        Nodes named after the modules; ``graph.forward(x)`` equals ``module.eval()(x)``.

    Raises
    ------
    MissingDependencyError
        torch is not installed.
    UnsupportedLayerError
        A module, function or method outside the supported set (naming the fx node and its
        target), or a module that torch.fx cannot trace.
    GraphError
        Shapes that do not fit (e.g. addends of different shapes), naming the node.
    """
    torch = require_torch()
    import torch.fx

    if not isinstance(module, torch.nn.Module):
        raise UnsupportedLayerError(f"expected a torch.nn.Module, got {type(module).__name__}")
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if not shape or min(shape) < 1:
        raise GraphError(f"input_shape must be a non-empty tuple of positive ints, got {input_shape!r}")
    try:
        traced = torch.fx.symbolic_trace(module)
    except Exception as error:  # tracing runs user code: any exception means "cannot trace"
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UnsupportedLayerError(f"torch.fx cannot trace {type(module).__name__}: {text}") from None
    return _FxReader(traced, torch, shape).graph()


def _target_name(target: Any) -> str:
    """``torch.cat``, ``operator.add``, a method name or a module path, for messages."""
    if isinstance(target, str):
        return target
    module = getattr(target, "__module__", None) or ("torch" if "torch" in repr(target) else "")
    name = getattr(target, "__name__", repr(target))
    return f"{module.replace('_operator', 'operator')}.{name}" if module else name


class _FxReader:
    """Translate the nodes of a traced module one by one."""

    def __init__(self, traced: Any, torch: Any, input_shape: tuple[int, ...]) -> None:
        self.traced = traced
        self.torch = torch
        self.builder = GraphBuilder(input_shape)
        self.values: dict[Any, Any] = {}
        nn, functional = torch.nn, torch.nn.functional
        self.modules: dict[type, Callable] = {
            nn.Conv2d: self._conv2d, nn.Linear: self._linear, nn.BatchNorm1d: self._batch_norm,
            nn.BatchNorm2d: self._batch_norm, nn.ReLU: self._relu_module, nn.MaxPool2d: self._max_pool,
            nn.AvgPool2d: self._avg_pool, nn.AdaptiveAvgPool2d: self._adaptive_avg_pool,
            nn.Dropout: self._dropout, nn.Dropout2d: self._dropout, nn.Identity: self._identity,
            nn.Flatten: self._flatten_module, nn.GELU: self._gelu, nn.SiLU: self._silu,
            nn.Tanh: self._tanh, nn.Sigmoid: self._sigmoid, nn.LayerNorm: self._layer_norm,
        }
        if hasattr(nn, "RMSNorm"):  # torch >= 2.4
            self.modules[nn.RMSNorm] = self._rms_norm
        self.functions: dict[Any, Callable] = {
            operator.add: self._add, operator.iadd: self._add, torch.add: self._add,
            torch.cat: self._cat, torch.concat: self._cat, torch.flatten: self._flatten,
            torch.relu: self._relu, functional.relu: self._relu,
            getattr: self._getattr, operator.getitem: self._getitem,
            functional.gelu: self._gelu_function, functional.silu: self._silu_function,
            torch.tanh: self._tanh_function, functional.tanh: self._tanh_function,
            torch.sigmoid: self._sigmoid_function, functional.sigmoid: self._sigmoid_function,
        }
        self.methods: dict[str, Callable] = {
            "add": self._add, "add_": self._add, "flatten": self._flatten, "view": self._reshape,
            "reshape": self._reshape, "size": self._size, "relu": self._relu, "relu_": self._relu,
            "view_as": self._view_as,
            "tanh": self._tanh_function, "sigmoid": self._sigmoid_function,
        }
        from lrp_num.io import torch_attention  # attention: Linear on tokens, softmax, products, heads

        torch_attention.register(self, torch)

    # ---- walking the fx graph ----

    def graph(self) -> Graph:
        output = None
        for node in self.traced.graph.nodes:
            if node.op == "placeholder":
                if self.values:
                    self._unsupported(node, "a second model input")
                self.values[node] = self.builder.input
            elif node.op == "output":
                output = self._tensor(node, node.args[0], "the model output")
            elif node.op == "get_attr":
                self._unsupported(node, "a parameter or buffer used outside its module")
            elif node.op == "call_module":
                module = self.traced.get_submodule(node.target)
                handler = self.modules.get(type(module))
                if handler is None:
                    supported = ", ".join(sorted(cls.__name__ for cls in self.modules))
                    raise UnsupportedLayerError(
                        f"fx node {node.name!r} calls module {node.target!r} ({type(module).__name__}), "
                        f"which is not supported; supported modules: {supported}")
                self.values[node] = handler(node, module)
            else:  # call_function, call_method
                table = self.functions if node.op == "call_function" else self.methods
                handler = table.get(node.target)
                if handler is None:
                    kind = "function" if node.op == "call_function" else "method"
                    raise UnsupportedLayerError(
                        f"fx node {node.name!r} calls the {kind} {_target_name(node.target)}, which is not "
                        "supported (supported: Conv2d, Linear, BatchNorm, LayerNorm, RMSNorm, ReLU, GELU, "
                        "SiLU, Tanh, Sigmoid, pooling, Dropout, Identity, Flatten modules; add, cat, "
                        "flatten, view/reshape to (N, -1), relu, gelu, silu, tanh, sigmoid)")
                self.values[node] = handler(node)
        return self.builder.graph(output, f"the {type(self.traced).__name__} model")

    # ---- helpers ----

    @staticmethod
    def _unsupported(node: Any, why: str) -> None:
        raise UnsupportedLayerError(f"fx node {node.name!r} ({_target_name(node.target)}): {why} is not supported")

    def _value(self, argument: Any) -> Any:
        """An fx argument with nodes replaced by what they stand for (tensors, sizes)."""
        if isinstance(argument, (list, tuple)):
            return type(argument)(self._value(a) for a in argument)
        return self.values[argument] if argument in self.values else argument

    def _tensor(self, node: Any, argument: Any, what: str) -> Tensor:
        value = self._value(argument)
        if not isinstance(value, Tensor):
            self._unsupported(node, f"{what} {value!r} that is not a tensor of the model")
        return value

    def _argument(self, node: Any, index: int, name: str, default: Any) -> Any:
        if index < len(node.args):
            return self._value(node.args[index])
        return self._value(node.kwargs.get(name, default))

    def _name(self, node: Any) -> str:
        """The module path for a module call; the calling module's path and the function else."""
        if node.op == "call_module":
            return node.target
        stack = node.meta.get("nn_module_stack") or {}
        scope = list(stack.values())[-1][0] if stack else ""
        base = re.sub(r"_\d+$", "", node.name)
        return f"{scope}.{base}" if scope else base

    def _add_node(self, node: Any, operation: Any, inputs: list[Tensor]) -> Tensor:
        return self.builder.add(self._name(node), operation, inputs,
                                f"fx node {node.name!r} ({_target_name(node.target)})")

    def _layer(self, node: Any, build: Callable[[], Any]) -> Any:
        """``build()``, with the engine's refusal of a parameter turned into a message naming the node."""
        try:
            return build()
        except LRPError as error:
            raise UnsupportedLayerError(f"fx node {node.name!r} ({_target_name(node.target)}): {error}") from None

    def _in_place(self, node: Any, source: Any, result: Tensor) -> Tensor:
        """An in-place operation on fx node ``source``: later readers of ``source`` see
        ``result``, as in torch. When ``source`` is a view of another tensor (a flatten, reshape,
        identity or inference dropout), that tensor changes too; refuse if it is read later."""
        current = source
        while _aliases_its_input(current, self.traced):
            origin = current.args[0]
            later = [user for user in origin.users if user is not current and _after(user, node)]
            if later:
                self._unsupported(node, f"changing {origin.name!r} in place through the view {current.name!r} "
                                        f"while {later[0].name!r} reads it later")
            current = origin
        self.values[source] = result
        return result

    def _array(self, tensor: Any) -> np.ndarray:
        return tensor.detach().to(device="cpu", dtype=self.torch.float64).contiguous().numpy()

    # ---- modules ----

    def _conv2d(self, node: Any, module: Any) -> Tensor:
        if module.padding_mode != "zeros":
            self._unsupported(node, f"Conv2d with padding_mode={module.padding_mode!r}")
        if tuple(module.dilation) != (1, 1):
            self._unsupported(node, f"Conv2d with dilation={tuple(module.dilation)}")
        padding = module.padding
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            if any(k % 2 == 0 for k in module.kernel_size):
                self._unsupported(node, f"Conv2d padding='same' with the even kernel {module.kernel_size}")
            padding = tuple((k - 1) // 2 for k in module.kernel_size)
        bias = None if module.bias is None else self._array(module.bias)
        layer = self._layer(node, lambda: Conv2d(self._array(module.weight), bias, tuple(module.stride),
                                                 tuple(padding), module.groups))
        return self._add_node(node, layer, [self._tensor(node, node.args[0], "an input")])

    def _linear(self, node: Any, module: Any) -> Tensor:
        bias = None if module.bias is None else self._array(module.bias)
        # torch's (out, in) -> w_ij (in, out), transposed by torch into C order (a large
        # classifier's transpose is slow in NumPy, and the engine wants C-contiguous weights)
        weight = self._array(module.weight.detach().t().contiguous())
        layer = self._layer(node, lambda: Dense(weight, bias))
        return self._add_node(node, layer, [self._tensor(node, node.args[0], "an input")])

    def _batch_norm(self, node: Any, module: Any) -> Tensor:
        if module.running_mean is None or module.running_var is None:
            self._unsupported(node, "a batch norm without running statistics (track_running_stats=False)")
        n = module.num_features
        gamma = np.ones(n) if module.weight is None else self._array(module.weight)
        beta = np.zeros(n) if module.bias is None else self._array(module.bias)
        layer = self._layer(node, lambda: BatchNorm(gamma, beta, self._array(module.running_mean),
                                                    self._array(module.running_var), module.eps))
        return self._add_node(node, layer, [self._tensor(node, node.args[0], "an input")])

    def _relu_module(self, node: Any, module: Any) -> Tensor:
        result = self._add_node(node, ReLU(), [self._tensor(node, node.args[0], "an input")])
        return self._in_place(node, node.args[0], result) if module.inplace else result

    def _max_pool(self, node: Any, module: Any) -> Tensor:
        if module.return_indices:
            self._unsupported(node, "MaxPool2d with return_indices=True")
        if _pair(module.dilation) != (1, 1):
            self._unsupported(node, f"MaxPool2d with dilation={module.dilation}")
        stride = module.stride or module.kernel_size  # torch's default stride is the kernel
        layer = self._layer(node, lambda: MaxPool2d(_pair(module.kernel_size), _pair(stride),
                                                    _pair(module.padding), bool(module.ceil_mode)))
        return self._add_node(node, layer, [self._tensor(node, node.args[0], "an input")])

    def _avg_pool(self, node: Any, module: Any) -> Tensor:
        stride = module.stride or module.kernel_size
        geometry = (_pair(module.kernel_size), _pair(stride), _pair(module.padding), bool(module.ceil_mode))
        if module.divisor_override == 1:
            layer = self._layer(node, lambda: SumPool2d(*geometry))
        elif module.divisor_override is None:
            layer = self._layer(node, lambda: AvgPool2d(*geometry, bool(module.count_include_pad)))
        else:
            self._unsupported(node, f"AvgPool2d with divisor_override={module.divisor_override}")
        return self._add_node(node, layer, [self._tensor(node, node.args[0], "an input")])

    def _adaptive_avg_pool(self, node: Any, module: Any) -> Tensor:
        source = self._tensor(node, node.args[0], "an input")
        size = module.output_size
        size = (size, size) if isinstance(size, int) or size is None else tuple(size)
        if None in size:  # None keeps the input's size along that axis
            if source.shape is None or len(source.shape) != 3:
                self._unsupported(node, f"AdaptiveAvgPool2d output_size {module.output_size} on this input")
            size = tuple(source.shape[1 + k] if s is None else s for k, s in enumerate(size))
        layer = self._layer(node, lambda: AdaptiveAvgPool2d(size))
        return self._add_node(node, layer, [source])

    def _dropout(self, node: Any, module: Any) -> Tensor:
        return self._add_node(node, self._layer(node, lambda: Dropout(module.p)),
                              [self._tensor(node, node.args[0], "an input")])

    def _elementwise(self, node: Any, layer: Any) -> Tensor:
        return self._add_node(node, layer, [self._tensor(node, node.args[0], "an input")])

    def _gelu(self, node: Any, module: Any) -> Tensor:
        return self._elementwise(node, self._layer(node, lambda: GELU(module.approximate)))

    def _silu(self, node: Any, module: Any) -> Tensor:
        return self._elementwise(node, SiLU())

    def _tanh(self, node: Any, module: Any) -> Tensor:
        return self._elementwise(node, Tanh())

    def _sigmoid(self, node: Any, module: Any) -> Tensor:
        return self._elementwise(node, Sigmoid())

    def _last_axis(self, node: Any, module: Any) -> int:
        shape = tuple(module.normalized_shape)
        if len(shape) != 1:
            self._unsupported(node, f"{type(module).__name__} over {shape}; only the last axis "
                                    f"(normalized_shape of one entry)")
        return shape[0]

    def _layer_norm(self, node: Any, module: Any) -> Tensor:
        features = self._last_axis(node, module)
        weight = self._array(module.weight) if module.weight is not None else np.ones(features)
        bias = self._array(module.bias) if module.bias is not None else np.zeros(features)
        return self._elementwise(node, self._layer(node, lambda: LayerNorm(weight, bias,
                                                                           module.eps)))

    def _rms_norm(self, node: Any, module: Any) -> Tensor:
        features = self._last_axis(node, module)
        weight = self._array(module.weight) if module.weight is not None else np.ones(features)
        # torch's eps=None means the dtype's machine epsilon
        eps = module.eps if module.eps is not None else float(np.finfo(np.float32).eps)
        return self._elementwise(node, self._layer(node, lambda: RMSNorm(weight, eps)))

    def _identity(self, node: Any, module: Any) -> Tensor:
        return self._add_node(node, Identity(), [self._tensor(node, node.args[0], "an input")])

    def _flatten_module(self, node: Any, module: Any) -> Tensor:
        if module.start_dim != 1 or module.end_dim != -1:
            self._unsupported(node, f"Flatten(start_dim={module.start_dim}, end_dim={module.end_dim}); "
                                    "only start_dim=1, end_dim=-1")
        return self._add_node(node, Flatten(), [self._tensor(node, node.args[0], "an input")])

    # ---- functions and methods ----

    def _add(self, node: Any) -> Tensor:
        alpha = node.kwargs.get("alpha", 1)
        if alpha != 1:
            self._unsupported(node, f"add with alpha={alpha}")
        addends = [self._tensor(node, node.args[k], "adding") for k in range(2)]
        result = self._add_node(node, Add(), addends)
        return self._in_place(node, node.args[0], result) if node.target in (operator.iadd, "add_") else result

    def _cat(self, node: Any) -> Tensor:
        tensors = self._argument(node, 0, "tensors", ())
        dim = self._argument(node, 1, "dim", 0)
        if not isinstance(tensors, (list, tuple)) or not all(isinstance(t, Tensor) for t in tensors):
            self._unsupported(node, "concatenating something other than tensors of the model")
        if dim == 0:
            self._unsupported(node, "concatenating along the batch axis (dim=0)")
        return self._add_node(node, self._layer(node, lambda: Concat(dim)), list(tensors))

    def _flatten(self, node: Any) -> Tensor:
        source = self._tensor(node, node.args[0], "flattening")
        start = self._argument(node, 1, "start_dim", 0)
        end = self._argument(node, 2, "end_dim", -1)
        if start != 1 or end != -1:
            self._unsupported(node, f"flatten(start_dim={start}, end_dim={end}); only start_dim=1, end_dim=-1")
        return self._add_node(node, Flatten(), [source])

    def _reshape(self, node: Any) -> Tensor:
        source = self._tensor(node, node.args[0], "reshaping")
        target = [self._value(a) for a in node.args[1:]]
        if len(target) == 1 and isinstance(target[0], (list, tuple)):
            target = list(target[0])
        size = math.prod(source.shape)
        per_sample = _per_sample_target(target, source.shape)
        if per_sample is None:
            self._unsupported(node, f"{node.target} to {tuple(target)} of samples of shape {source.shape} "
                                    "(only flattening to (N, -1))")
        if per_sample == source.shape:
            return source  # no change
        if per_sample != (size,):
            self._unsupported(node, f"{node.target} to {tuple(target)} of samples of shape {source.shape} "
                                    "(only flattening to (N, -1))")
        return self._add_node(node, Flatten(), [source])

    def _view_as(self, node: Any) -> Tensor:
        """``x.view_as(x)``: the same tensor (how :func:`lrp_num.io.torch_bridge.to_torch`'s graph
        twin marks each addend of a plain ``+``); a view as another tensor's shape is refused."""
        if node.args[1] is not node.args[0]:
            self._unsupported(node, "view_as another tensor's shape")
        return self._tensor(node, node.args[0], "viewing")

    def _size(self, node: Any) -> Any:
        source = self._tensor(node, node.args[0], "the size of")
        dim = self._argument(node, 1, "dim", None)
        sizes = (BATCH, *source.shape)
        return sizes if dim is None else sizes[dim]

    def _getattr(self, node: Any) -> Any:
        source, attribute = self._value(node.args[0]), node.args[1]
        if not isinstance(source, Tensor) or attribute != "shape":
            self._unsupported(node, f"getattr(..., {attribute!r})")
        return (BATCH, *source.shape)

    def _getitem(self, node: Any) -> Any:
        container, index = self._value(node.args[0]), self._value(node.args[1])
        if not isinstance(container, tuple):  # a size tuple; indexing a tensor is not supported
            self._unsupported(node, "indexing or slicing a tensor")
        return container[index]

    def _gelu_function(self, node: Any) -> Tensor:
        approximate = self._argument(node, 1, "approximate", "none")
        return self._elementwise(node, self._layer(node, lambda: GELU(approximate)))

    def _silu_function(self, node: Any) -> Tensor:
        if self._argument(node, 1, "inplace", False) is True:
            self._unsupported(node, "silu(inplace=True)")
        return self._elementwise(node, SiLU())

    def _tanh_function(self, node: Any) -> Tensor:
        return self._elementwise(node, Tanh())

    def _sigmoid_function(self, node: Any) -> Tensor:
        return self._elementwise(node, Sigmoid())

    def _relu(self, node: Any) -> Tensor:
        in_place = node.target == "relu_" or self._argument(node, 1, "inplace", False) is True
        result = self._add_node(node, ReLU(), [self._tensor(node, node.args[0], "an input")])
        return self._in_place(node, node.args[0], result) if in_place else result


def _after(node: Any, other: Any) -> bool:
    """Whether fx node ``node`` comes after ``other`` in the traced graph's order."""
    current = other.next
    while current.op != "root":
        if current is node:
            return True
        current = current.next
    return False


def _aliases_its_input(node: Any, traced: Any) -> bool:
    """Whether fx node ``node`` returns a view of (or the same tensor as) its first input."""
    if node.op == "call_method":
        return node.target in ("view", "reshape", "flatten", "view_as")
    if node.op == "call_function":
        return getattr(node.target, "__name__", "") == "flatten"  # torch.flatten
    if node.op == "call_module":
        return type(traced.get_submodule(node.target)).__name__ in ("Flatten", "Identity", "Dropout", "Dropout2d")
    return False


def _pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if np.ndim(value) == 0 else (int(value[0]), int(value[1]))


def _per_sample_target(target: list, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The per-sample shape of a view/reshape to ``target`` (batch axis included), or None when
    it would mix samples: the batch axis must stay (``x.size(0)``), or be -1 with the rest fixed."""
    if not target or not all(t is BATCH or isinstance(t, (int, np.integer)) for t in target):
        return None
    first, rest = target[0], [int(t) for t in target[1:] if t is not BATCH]
    if len(rest) != len(target) - 1 or sum(t == -1 for t in rest) > 1 or any(t < -1 or t == 0 for t in rest):
        return None
    size = math.prod(shape)
    known = math.prod(t for t in rest if t != -1)
    if first is BATCH:
        if -1 in rest:
            if size % known:
                return None
            rest = [size // known if t == -1 else t for t in rest]
        return tuple(rest) if math.prod(rest) == size else None
    if first == -1 and -1 not in rest and math.prod(rest) == size:
        return tuple(rest)
    return None
