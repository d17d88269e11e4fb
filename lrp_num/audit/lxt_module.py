"""LXT 2.1's CP-LRP on a plain PyTorch transformer (nn.MultiheadAttention, nn.LayerNorm, nn.GELU),
against the mpmath reference.

LXT explains torch's own attention only in its CP-LRP form: ``lxt/efficient/patches.py:
cp_multi_head_attention_forward`` detaches the query and the key before
``nn.MultiheadAttention.forward``, so no relevance passes through the softmax. AttnLRP needs the
softmax and the two products as separate functions, and nn.MultiheadAttention computes them
inside ``F.multi_head_attention_forward`` (``scaled_dot_product_attention``), where no LXT rule
reaches; ``lxt.explicit.modules`` replaces it only by ``MultiheadAttention_CP``. So AttnLRP on
such a model is refused here (:class:`~lrp_num.errors.UnsupportedLayerError`); the hand-written
attention of :class:`~lrp_num.io.torch_vit.ViT` carries it (:mod:`lrp_num.audit.lxt_audit`).

:func:`run_lxt_module` applies, for one call, the patches LXT's ``efficient`` mode applies to
these module types (restated, because importing ``lxt.efficient.patches`` imports the
``lxt.efficient`` package and with it transformers): the query and key detached in every
nn.MultiheadAttention, LayerNorm with its standard deviation detached
(``layer_norm_forward``), GELU through ``identity_rule_implicit`` (loaded from
``lxt/efficient/rules.py`` by path), and gradient x input. It records the relevance at every
named submodule's output (gradient x output) and at the input.

:func:`compare_module_with_reference` imports the module into a Graph
(:func:`lrp_num.io.torch_import.from_torch_module`, whose node names are the module paths),
runs the reference under the ``cplrp`` profile's plan (A V with the attention weights held
constant, ``matmul_cp``), and compares the submodules' outputs from the output down to the
input, within the dtype's rounding bound plus the profile's model error. Inside
nn.MultiheadAttention only its output is recorded: the products, the softmax and q, k, v run
inside ``F.multi_head_attention_forward``; their rules are compared through what reaches the
attention's input (its v path) and the network input.

:func:`audit_lxt_module` wraps both for ``lrp audit --library lxt --rule cplrp --model W.pt
--architecture ARCH.json`` (an encoder of :mod:`lrp_num.io.torch_encoder`): findings where LXT
changes the forward pass or where a submodule's relevance deviates from the reference (the first
from the output down, named with the submodule(s) reading it, whose rule produced it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lrp_num.audit.lxt_adapter import import_lxt_efficient_rules
from lrp_num.audit.lxt_reference import ReferenceComparison, TensorComparison, render_comparison
from lrp_num.errors import UnsupportedLayerError
from lrp_num.io.torch_bridge import require_torch


@dataclass
class ModuleRun:
    """LXT CP-LRP on a torch module: the input relevance, the logits, the output relevance it
    started from and the relevance at every named submodule's output."""

    relevance: np.ndarray
    logits: np.ndarray
    top: np.ndarray
    outputs: dict[str, np.ndarray]


def run_lxt_module(module, x: np.ndarray, targets: np.ndarray, variant: str = "cplrp") -> ModuleRun:
    """LXT's CP-LRP on ``module`` (see the module docstring) from R = f_c(x) at each target."""
    torch = require_torch()
    if variant != "cplrp":
        raise UnsupportedLayerError(f"LXT 2.1 cannot explain nn.MultiheadAttention with {variant}: its softmax and "
                                    "products run inside F.multi_head_attention_forward, out of reach of LXT's "
                                    "rules; LXT patches it for cplrp only (use the hand-written attention of "
                                    "lrp_num.io.torch_vit for attnlrp)")
    rules = import_lxt_efficient_rules()
    nn = torch.nn
    patched: list[tuple[Any, Any]] = []
    grads: dict[str, Any] = {}
    values: dict[str, Any] = {}

    def patch(instance, forward) -> None:
        patched.append((instance, instance.__dict__.get("forward")))
        instance.forward = forward

    for name, sub in module.named_modules():
        if isinstance(sub, nn.MultiheadAttention):
            original = sub.forward
            patch(sub, lambda q, k, v, *a, _f=original, **kw: _f(rules.stop_gradient(q), rules.stop_gradient(k),
                                                                  v, *a, **kw))
        elif isinstance(sub, nn.LayerNorm):
            def layer_norm(h, _m=sub):  # lxt/efficient/patches.py: layer_norm_forward
                mean = h.mean(dim=-1, keepdim=True)
                std = (((h - mean) ** 2).mean(dim=-1, keepdim=True) + _m.eps).sqrt()
                return (h - mean) / rules.stop_gradient(std) * _m.weight + _m.bias
            patch(sub, layer_norm)
        elif isinstance(sub, nn.GELU):
            patch(sub, lambda h, _m=sub: rules.identity_rule_implicit(nn.functional.gelu, h))

    def record(name):
        def hook(_module, _inputs, output):
            tensor = output[0] if isinstance(output, tuple) else output
            if tensor.requires_grad:
                values[name] = tensor.detach()
                tensor.register_hook(lambda grad: grads.__setitem__(name, grad.detach().clone()))
        return hook

    # an nn.MultiheadAttention's output is the graph's node <name>.out (its output projection)
    handles = [sub.register_forward_hook(record(f"{name}.out" if isinstance(sub, nn.MultiheadAttention) else name))
               for name, sub in module.named_modules() if name]
    dtype = next(module.parameters()).dtype
    inputs = torch.tensor(np.asarray(x), dtype=dtype, requires_grad=True)
    try:
        logits = module(inputs)
        rows = torch.arange(len(targets))
        seed = torch.zeros_like(logits)
        seed[rows, torch.tensor(np.asarray(targets, dtype=np.int64))] = 1.0
        logits.backward(seed)
    finally:
        for handle in handles:
            handle.remove()
        for instance, forward in patched:
            del instance.forward
            if forward is not None:
                instance.forward = forward
    top = (seed * logits.detach()).double().numpy()
    outputs = {name: (grads[name] * values[name]).double().numpy() for name in grads}
    return ModuleRun((inputs.grad * inputs.detach()).double().numpy(), logits.detach().double().numpy(), top,
                     outputs)


def compare_module_with_reference(module, x: np.ndarray, run: ModuleRun, dps: int = 30) -> ReferenceComparison:
    """The recorded submodule outputs against the reference under the ``cplrp`` profile's plan
    (see the module docstring), from the output down to the input."""
    from lrp_num.audit.graph_compare import node_bounds, reference_nodes
    from lrp_num.audit.lxt_reference import reference_plan
    from lrp_num.audit.profiles import LXT_CPLRP
    from lrp_num.audit.tolerance import dtype_name
    from lrp_num.engine.conventions import DTD
    from lrp_num.io.torch_import import from_torch_module

    x = np.asarray(x, dtype=np.float64)
    dtype = np.dtype(str(next(module.parameters()).dtype).replace("torch.", ""))
    graph = from_torch_module(module, x.shape[1:])
    reference = reference_nodes(graph, x, reference_plan(graph, LXT_CPLRP), run.top, DTD, dps=dps)
    bounds = node_bounds(graph, reference, dtype, None, LXT_CPLRP.model_error)
    comparison = ReferenceComparison(LXT_CPLRP.reference, dtype_name(dtype), LXT_CPLRP.model_error,
                                     list(LXT_CPLRP.conventions))
    recorded = {**run.outputs, graph.input_name: run.relevance}
    for name in [node.name for node in reversed(graph.nodes)] + [graph.input_name]:
        if name not in recorded or name == graph.nodes[-1].name:
            continue
        ours = np.asarray(reference.nodes[name], dtype=np.float64)
        theirs = recorded[name].reshape(ours.shape)
        gap = np.abs(theirs - ours).reshape(len(ours), -1)
        bound = bounds[name]
        ratio = np.divide(gap, bound, out=np.where(gap > 0, np.inf, 0.0), where=bound > 0)
        scale = float(np.max(np.abs(ours)))
        deviation = float(gap.max())
        readers = [f"{other.name} ({type(other.operation).__name__})" for other in graph.nodes
                   if name in other.inputs]
        comparison.tensors.append(TensorComparison(name, name, readers, deviation,
                                                   deviation / scale if scale > 0 else deviation,
                                                   float(ratio.max()), float(ratio.max()) > 1.0))
    return comparison


@dataclass
class ModuleAudit:
    """LXT's CP-LRP on a torch module (:func:`audit_lxt_module`): the per-sample f_c(x) and input
    relevance sums, how far LXT moved the logits, the reference comparison and the findings."""

    library: str
    variant: str
    paper: str
    tolerance: float
    f_c: list[float]
    input_sum: list[float]
    forward_deviation: float
    reference: ReferenceComparison | None = None
    findings: list[str] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        return 1 if self.findings else 0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["reference"] = None if self.reference is None else self.reference.to_dict()
        data["verdict"] = "fails" if self.findings else "matches"
        data["exit_status"] = self.exit_status
        return data


def audit_lxt_module(module, x: np.ndarray, targets: np.ndarray | None = None, variant: str = "cplrp",
                     tolerance: float = 1e-4, reference: bool = True, dps: int = 30) -> ModuleAudit:
    """Run LXT's CP-LRP on ``module`` (:func:`run_lxt_module`) and, with ``reference``, compare it
    with the mpmath reference at ``dps`` digits (:func:`compare_module_with_reference`).

    Findings: the logits LXT computes differ from the plain module's by more than ``tolerance``
    (relative to the largest logit); a recorded tensor deviates from the reference beyond its
    bound (the first from the output down). ``targets`` default to the predictions.
    """
    from lrp_num.audit.profiles import LXT_CPLRP

    torch = require_torch()
    x = np.asarray(x, dtype=np.float64)
    with torch.no_grad():
        plain = module(torch.tensor(x, dtype=next(module.parameters()).dtype)).double().numpy()
    targets = plain.argmax(axis=1) if targets is None else np.asarray(targets, dtype=np.int64)
    run = run_lxt_module(module, x, targets, variant)
    forward = float(np.max(np.abs(run.logits - plain)) / max(np.max(np.abs(plain)), np.finfo(float).tiny))
    audit = ModuleAudit(f"LXT {LXT_CPLRP.version}", variant, LXT_CPLRP.paper, tolerance,
                        [float(v) for v in run.top.sum(axis=1)],
                        [float(v) for v in run.relevance.reshape(len(x), -1).sum(axis=1)], forward)
    if forward > tolerance:
        audit.findings.append(f"LXT {variant} changes the forward pass: logits differ by {forward:.2e}")
    if reference:
        audit.reference = compare_module_with_reference(module, x, run, dps)
        first = audit.reference.first_deviating
        if first is not None:
            from lrp_num.audit.lxt_audit import deviation_finding

            audit.findings.append(deviation_finding("deviates-from-reference", f"LXT {variant}", first))
    return audit


def render_module_table(audit: ModuleAudit) -> str:
    """A plain-text report: f_c(x) and the input relevance, the reference comparison, the verdict."""
    lines = [f"audit of {audit.library} {audit.variant} ({audit.paper}) on a torch module",
             "per sample f_c(x) = " + ", ".join(f"{v:.6g}" for v in audit.f_c) + "; sum R(input) = "
             + ", ".join(f"{v:.6g}" for v in audit.input_sum) + " (CP-LRP: biases and norm shifts absorb the rest)",
             f"forward unchanged within {audit.forward_deviation:.1e}"]
    if audit.reference is not None:
        lines.extend(render_comparison(audit.reference))
    lines.extend(f"finding: {text}" for text in audit.findings)
    lines.append(f"verdict: {'fails' if audit.findings else 'matches'}")
    return "\n".join(lines)


def render_module_json(audit: ModuleAudit) -> str:
    return json.dumps(audit.to_dict(), indent=2)


def render_module_markdown(audit: ModuleAudit) -> str:
    rows = [f"## {audit.library} {audit.variant} (torch module)", ""]
    if audit.reference is not None:
        rows += ["| graph tensor | max abs(dR) | relative | / bound |", "|---|---|---|---|"]
        rows += [f"| {t.graph_tensor} | {t.deviation:.2e} | {t.relative:.2e} | {t.over_bound:.3g} |"
                 for t in audit.reference.tensors]
        rows += [f"- convention: {text}" for text in audit.reference.conventions]
    rows += ["", *[f"- finding: {text}" for text in audit.findings],
             f"- verdict: {'fails' if audit.findings else 'matches'}", ""]
    return "\n".join(rows)


__all__ = ["ModuleAudit", "ModuleRun", "audit_lxt_module", "compare_module_with_reference", "render_module_json",
           "render_module_markdown", "render_module_table", "run_lxt_module"]
