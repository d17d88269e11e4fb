"""Torch twins of the graphs of :func:`lrp_num.testing.strategies.transformer_graphs`, for the
property tests: the same parameters as torch modules, attention either hand-written (view,
transpose, ``@``, ``torch.softmax``) or ``nn.MultiheadAttention``; and their ONNX export."""

from __future__ import annotations

import io

import numpy as np

from lrp_num.layers import GELU, Add, Dense, Flatten, LayerNorm, Multiply, RMSNorm, Sigmoid, SiLU, Tanh


def _attention_parts(graph, prefix: str) -> dict:
    """The nodes of one ``multi_head_attention`` block by their suffix (q, k, v, out, q_heads, ...)."""
    return {node.name[len(prefix) + 1:]: node for node in graph.nodes if node.name.startswith(prefix + ".")}


def torch_twin(graph, library_attention: bool, dtype=None):
    """An ``nn.Module`` computing what ``graph`` computes (eval mode, float64 unless ``dtype``)."""
    import torch
    from torch import nn

    dtype = dtype or torch.float64

    def linear(layer) -> nn.Linear:
        module = nn.Linear(layer.n_in, layer.n_out, dtype=dtype)
        with torch.no_grad():
            module.weight.copy_(torch.tensor(layer.weight.T))
            module.bias.copy_(torch.tensor(layer.bias))
        return module

    class Twin(nn.Module):
        def __init__(self):
            super().__init__()
            self.parts = nn.ModuleDict()
            self.steps = []  # (kind, key, output name, input names, extra)
            done = set()
            for node in graph.nodes:
                if node.name in done:
                    continue
                key = node.name.replace(".", "_")
                operation = node.operation
                if ".attn." in node.name:
                    prefix = node.name[:node.name.index(".attn.") + 5]
                    parts = _attention_parts(graph, prefix)
                    done.update(part.name for part in parts.values())
                    heads = parts["q_heads"].operation.heads
                    width = parts["q"].operation.n_in
                    key = prefix.replace(".", "_")
                    if library_attention:
                        mha = nn.MultiheadAttention(width, heads, batch_first=True, dtype=dtype)
                        with torch.no_grad():
                            mha.in_proj_weight.copy_(torch.tensor(np.concatenate(
                                [parts[p].operation.weight.T for p in "qkv"])))
                            mha.in_proj_bias.copy_(torch.tensor(np.concatenate(
                                [parts[p].operation.bias for p in "qkv"])))
                            mha.out_proj.weight.copy_(torch.tensor(parts["out"].operation.weight.T))
                            mha.out_proj.bias.copy_(torch.tensor(parts["out"].operation.bias))
                        self.parts[key] = mha
                        self.steps.append(("mha", key, prefix + ".out", parts["q"].inputs, heads))
                    else:
                        for p in ("q", "k", "v", "out"):
                            self.parts[f"{key}_{p}"] = linear(parts[p].operation)
                        self.steps.append(("attention", key, prefix + ".out", parts["q"].inputs,
                                           (heads, parts["scores"].operation.scale)))
                    continue
                if isinstance(operation, Dense):  # TokenDense too
                    self.parts[key] = linear(operation)
                elif isinstance(operation, LayerNorm):
                    module = nn.LayerNorm(len(operation.weight), eps=operation.eps, dtype=dtype)
                    with torch.no_grad():
                        module.weight.copy_(torch.tensor(operation.weight))
                        module.bias.copy_(torch.tensor(operation.bias))
                    self.parts[key] = module
                elif isinstance(operation, RMSNorm):
                    module = nn.RMSNorm(len(operation.weight), eps=operation.eps, dtype=dtype)
                    with torch.no_grad():
                        module.weight.copy_(torch.tensor(operation.weight))
                    self.parts[key] = module
                elif isinstance(operation, (GELU, SiLU, Tanh, Sigmoid)):
                    self.parts[key] = {GELU: nn.GELU, SiLU: nn.SiLU, Tanh: nn.Tanh,
                                       Sigmoid: nn.Sigmoid}[type(operation)]()
                elif not isinstance(operation, (Add, Multiply, Flatten)):
                    raise TypeError(f"no torch twin for {operation!r}")
                kind = type(operation).__name__.lower() if isinstance(operation, (Add, Multiply, Flatten)) \
                    else "module"
                self.steps.append((kind, key, node.name, node.inputs, None))

        def forward(self, x):
            values = {"input": x}
            for kind, key, name, inputs, extra in self.steps:
                a = [values[i] for i in inputs]
                if kind == "module":
                    values[name] = self.parts[key](a[0])
                elif kind == "add":
                    values[name] = a[0] + a[1]
                elif kind == "multiply":
                    values[name] = a[0] * a[1]
                elif kind == "flatten":
                    values[name] = a[0].flatten(1)
                elif kind == "mha":
                    values[name] = self.parts[key](a[0], a[0], a[0])[0]
                else:
                    values[name] = self._attention(key, a[0], *extra)
            return values[graph.output]

        def _attention(self, key, x, heads, scale):
            n, tokens, width = x.shape
            q = self.parts[f"{key}_q"](x).view(n, tokens, heads, width // heads).transpose(1, 2)
            k = self.parts[f"{key}_k"](x).view(n, tokens, heads, width // heads).transpose(1, 2)
            v = self.parts[f"{key}_v"](x).view(n, tokens, heads, width // heads).transpose(1, 2)
            attention = torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1)
            context = (attention @ v).transpose(1, 2).contiguous().view(n, tokens, width)
            return self.parts[f"{key}_out"](context)

    return Twin().eval()


def onnx_export(module, x) -> bytes:
    """The ONNX file (opset 17, TorchScript exporter, a dynamic batch axis) of a torch module."""
    import torch

    buffer = io.BytesIO()
    torch.onnx.export(module, (x,), buffer, dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return buffer.getvalue()


__all__ = ["onnx_export", "torch_twin"]
