"""Running LXT 2.1 (LRP eXplains Transformers) on a torch vision transformer, node by node.

LXT declares transformers, accelerate, bitsandbytes, open_clip_torch and zennit as dependencies,
but the rules the audit runs need torch alone: install it with ``pip install --no-deps lxt==2.1``.

* ``lxt.explicit.functional`` and ``lxt.explicit.rules`` (torch only) carry AttnLRP's *explicit*
  rules as autograd functions whose backward returns relevance: ``softmax`` (AttnLRP Prop. 3.1,
  R_i = x_i (R_i^out - s_i sum_j R_j^out)), ``matmul`` (epsilon, then the uniform rule: each
  factor half, Prop. 3.3), ``layer_norm`` (the normaliser detached, epsilon on the rest),
  ``linear_epsilon``, ``add2`` (epsilon on a sum), ``mean``, ``mul2`` (a constant factor passes
  all relevance on), ``identity`` (the identity rule, Eq. 9, for GELU) and ``epsilon_lrp`` (for
  the patch convolution).
* ``lxt/efficient/rules.py`` (torch only) holds the *efficient* (gradient x input) rules:
  ``identity_rule_implicit`` (GELU), ``divide_gradient`` (the uniform rule on products) and
  ``stop_gradient`` (CP-LRP). Importing the ``lxt.efficient`` package would import its model maps
  and with them transformers, so :func:`import_lxt_efficient_rules` loads that one file by its
  path, outside the package (as :func:`~lrp_num.audit.zennit_adapter.import_zennit` avoids
  torchvision).

Three variants (:data:`VARIANTS`), each with the patches LXT itself applies
(``lxt/efficient/patches.py``):

``attnlrp``
    AttnLRP with LXT's explicit rules on every op of :class:`~lrp_num.io.torch_vit.ViT`.
``attnlrp-efficient``
    AttnLRP as ``lxt.efficient`` patches a transformer: gradient x input, the identity rule on
    GELU, LayerNorm with the standard deviation detached, the gradient at q and k divided by 4
    and at v by 2 (``wrap_attention_forward``).
``cplrp``
    CP-LRP (Ali et al. 2022) as ``lxt.efficient`` patches torch's ViT (``models/vit_torch.py``):
    gradient x input, q and k detached (no relevance through the softmax,
    ``cp_multi_head_attention_forward``), LayerNorm's standard deviation detached, the identity
    rule on GELU.

Every op's inputs pass through a recording identity (:class:`_Tap`) whose backward stores what
arrives there from *that* op; the relevance at a tensor is that value (explicit rules) or the
value times the tensor (gradient x input). :func:`run_lxt` returns, per op, the relevance at its
output and at each of its inputs, so that what an op absorbs is sum R_out - sum R_in.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lrp_num.errors import MissingDependencyError, UnsupportedLayerError
from lrp_num.io.torch_bridge import INSTALL_HINT, require_torch
from lrp_num.io.torch_vit import TorchOps

INSTALL_LXT = "pip install --no-deps lxt==2.1 (with torch: " + INSTALL_HINT + ")"
VARIANTS = ("attnlrp", "attnlrp-efficient", "cplrp")
#: the explicit rules' stabilisers, LXT 2.1's defaults (lxt/explicit/functional.py)
LINEAR_EPSILON = 1e-6
CONV_EPSILON = 1e-8
_EFFICIENT_RULES = "lrp_num_lxt_efficient_rules"


def _require_lxt():
    require_torch()
    if importlib.util.find_spec("lxt") is None:
        raise MissingDependencyError(f"LXT is not installed: {INSTALL_LXT}")


def import_lxt_explicit() -> tuple[Any, Any]:
    """(lxt.explicit.functional, lxt.explicit.rules): both import torch only."""
    _require_lxt()
    return importlib.import_module("lxt.explicit.functional"), importlib.import_module("lxt.explicit.rules")


def import_lxt_efficient_rules():
    """``lxt/efficient/rules.py`` loaded by path, without the ``lxt.efficient`` package (whose
    ``__init__`` imports transformers); it imports torch only."""
    _require_lxt()
    if _EFFICIENT_RULES in sys.modules:
        return sys.modules[_EFFICIENT_RULES]
    root = Path(importlib.util.find_spec("lxt").submodule_search_locations[0])
    path = root / "efficient" / "rules.py"
    if not path.is_file():
        raise MissingDependencyError(f"LXT has no efficient/rules.py at {path}: {INSTALL_LXT}")
    spec = importlib.util.spec_from_file_location(_EFFICIENT_RULES, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[_EFFICIENT_RULES] = module
    return module


@dataclass
class OpRecord:
    """One op of the model as the library ran it.

    Attributes
    ----------
    name : str
        Its place in the model, e.g. ``blocks.0.attn.softmax``.
    kind : str
        ``linear``, ``layer_norm``, ``gelu``, ``softmax``, ``matmul``, ``scale``, ``add``,
        ``add_constant`` (a parameter addend), ``mean``.
    inputs : list of str
        Names of the ops whose outputs it reads (``input`` for the image).
    output : ndarray
        Relevance at its output, (batch, ...).
    input_relevance : list of ndarray
        Relevance it gives each input (zeros where none flows: a detached input).
    """

    name: str
    kind: str
    inputs: list[str]
    output: np.ndarray | None = None
    input_relevance: list[np.ndarray] = field(default_factory=list)

    def absorbed(self) -> np.ndarray:
        """Per sample: sum R_out - sum_k sum R_in,k, what the op keeps (bias, detached inputs)."""
        total_in = sum(r.reshape(len(r), -1).sum(axis=1) for r in self.input_relevance)
        return self.output.reshape(len(self.output), -1).sum(axis=1) - total_in


@dataclass
class LXTRun:
    """Relevances recorded from one LXT run: ``relevance`` at the input, ``logits``, and ``ops``
    in forward order."""

    library: str
    variant: str
    relevance: np.ndarray
    logits: np.ndarray
    top: np.ndarray
    ops: list[OpRecord]

    def op(self, name: str) -> OpRecord:
        return next(record for record in self.ops if record.name == name)


class _RecordingOps(TorchOps):
    """Taps every op's inputs and output; subclasses compute the op with LXT's rules.

    ``self.sources`` maps a tensor's id to the op that produced it, so each op knows which ops it
    reads; ``times_input`` turns the recorded gradient into relevance (gradient x input).
    """

    times_input = False

    def __init__(self) -> None:
        torch = require_torch()
        self.torch = torch
        self.records: dict[str, OpRecord] = {}
        self.grads: dict[tuple[str, int], Any] = {}
        self.values: dict[tuple[str, int], Any] = {}
        self.sources: dict[int, str] = {}
        self.tap = _tap_function(torch, self.grads)

    def begin(self, x):
        self.sources[id(x)] = "input"

    def rearrange(self, x, reshape):
        out = reshape(x)
        self.sources[id(out)] = self.sources.get(id(x), "?")
        return out

    def observe(self, name: str, tensor):
        """A value-moving node of a graph twin (:mod:`lrp_num.io.torch_ops_twin`): its output is
        known by the node's name from here on."""
        self.sources[id(tensor)] = name
        return tensor

    def _enter(self, name: str, kind: str, *inputs):
        """The op's data inputs, each through its own recording identity."""
        tapped = []
        names = []
        for k, tensor in enumerate(inputs):
            names.append(self.sources.get(id(tensor), "?"))
            self.values[(name, k)] = tensor.detach()
            tapped.append(self.tap.apply(tensor, (name, k)) if tensor.requires_grad else tensor)
        self.records[name] = OpRecord(name, kind, names)
        return tapped

    def _enter_add(self, name: str, a, b):
        """A sum's data addends tapped; a parameter addend (the position embedding) is a constant
        whose share the op keeps (kind ``add_constant``)."""
        if isinstance(b, self.torch.nn.Parameter):
            (a,) = self._enter(name, "add_constant", a)
            return a, b
        return tuple(self._enter(name, "add", a, b))

    def _leave(self, name: str, output):
        self.sources[id(output)] = name
        self.values[(name, "out")] = output.detach()
        if output.requires_grad:
            output.register_hook(lambda grad: self.grads.__setitem__((name, "out"), grad.detach().clone()))
        return output

    def collect(self) -> list[OpRecord]:
        """Fill every record's relevance from the stored gradients (after backward)."""
        for name, record in self.records.items():
            record.output = self._relevance((name, "out"))
            record.input_relevance = [self._relevance((name, k)) for k in range(len(record.inputs))]
        return list(self.records.values())

    def _relevance(self, key) -> np.ndarray:
        value = self.values[key]
        grad = self.grads.get(key)
        if grad is None:
            return np.zeros(tuple(value.shape))
        relevance = grad * value if self.times_input else grad
        return relevance.double().numpy().copy()


def _tap_function(torch, store: dict):
    class _Tap(torch.autograd.Function):
        """Identity whose backward records what arrives at one op input."""

        @staticmethod
        def forward(ctx, x, key):
            ctx.key = key
            return x.view_as(x)

        @staticmethod
        def backward(ctx, grad):
            store[ctx.key] = grad.detach().clone()
            return grad, None

    return _Tap


class ExplicitAttnLRPOps(_RecordingOps):
    """AttnLRP with ``lxt.explicit`` (relevance flows as the gradient)."""

    def __init__(self) -> None:
        super().__init__()
        self.lf, self.lr = import_lxt_explicit()

    def linear(self, name, module, x):
        (x,) = self._enter(name, "linear", x)
        if isinstance(module, self.torch.nn.Linear):
            out = self.lf.linear_epsilon(x, module.weight, module.bias, LINEAR_EPSILON)
        elif isinstance(module, self.torch.nn.Conv2d):
            out = self.lr.epsilon_lrp(module, CONV_EPSILON, x)
        else:
            raise UnsupportedLayerError(f"no LXT rule for {type(module).__name__} at {name!r}")
        return self._leave(name, out)

    def layer_norm(self, name, module, x):
        (x,) = self._enter(name, "layer_norm", x)
        return self._leave(name, self.lf.layer_norm(x, module.weight, module.bias, module.eps))

    def gelu(self, name, x):
        (x,) = self._enter(name, "gelu", x)
        return self._leave(name, self.lr.identity(self.torch.nn.functional.gelu, x))

    def softmax(self, name, x):
        (x,) = self._enter(name, "softmax", x)
        return self._leave(name, self.lf.softmax(x, -1))

    def matmul(self, name, a, b):
        a, b = self._enter(name, "matmul", a, b)
        return self._leave(name, self.lf.matmul(a, b))

    def scale(self, name, x, factor):
        (x,) = self._enter(name, "scale", x)
        return self._leave(name, self.lf.mul2(x, factor))

    def add(self, name, a, b):
        a, b = self._enter_add(name, a, b)
        return self._leave(name, self.lf.add2(a, b))

    def mean(self, name, x):
        (x,) = self._enter(name, "mean", x)
        return self._leave(name, self.lf.mean(x, 1, False))


class EfficientOps(_RecordingOps):
    """Gradient x input with ``lxt/efficient/rules.py``: AttnLRP (``cp=False``) or CP-LRP (``cp=True``)."""

    times_input = True

    def __init__(self, cp: bool) -> None:
        super().__init__()
        self.rules = import_lxt_efficient_rules()
        self.cp = cp

    def linear(self, name, module, x):
        (x,) = self._enter(name, "linear", x)
        if name.endswith((".q", ".k", ".v")) and not self.cp:  # wrap_attention_forward
            factor = 2 if name.endswith(".v") else 4
            return self._leave(name, self.rules.divide_gradient(module(x), factor))
        if name.endswith((".q", ".k")) and self.cp:  # cp_multi_head_attention_forward
            return self._leave(name, self.rules.stop_gradient(module(x)))
        return self._leave(name, module(x))

    def layer_norm(self, name, module, x):  # patches.layer_norm_forward
        (x,) = self._enter(name, "layer_norm", x)
        mean = x.mean(dim=-1, keepdim=True)
        std = (((x - mean) ** 2).mean(dim=-1, keepdim=True) + module.eps).sqrt()
        return self._leave(name, (x - mean) / self.rules.stop_gradient(std) * module.weight + module.bias)

    def gelu(self, name, x):  # patches.non_linear_forward
        (x,) = self._enter(name, "gelu", x)
        return self._leave(name, self.rules.identity_rule_implicit(self.torch.nn.functional.gelu, x))

    def softmax(self, name, x):
        (x,) = self._enter(name, "softmax", x)
        return self._leave(name, x.softmax(dim=-1))

    def matmul(self, name, a, b):
        a, b = self._enter(name, "matmul", a, b)
        return self._leave(name, self.torch.matmul(a, b))

    def scale(self, name, x, factor):
        (x,) = self._enter(name, "scale", x)
        return self._leave(name, x * factor)

    def add(self, name, a, b):
        a, b = self._enter_add(name, a, b)
        return self._leave(name, a + b)

    def mean(self, name, x):
        (x,) = self._enter(name, "mean", x)
        return self._leave(name, x.mean(dim=1))


def lxt_ops(variant: str) -> _RecordingOps:
    """The recording ops of one variant (:data:`VARIANTS`)."""
    if variant == "attnlrp":
        return ExplicitAttnLRPOps()
    if variant == "attnlrp-efficient":
        return EfficientOps(cp=False)
    if variant == "cplrp":
        return EfficientOps(cp=True)
    raise UnsupportedLayerError(f"unknown LXT variant {variant!r}; choose one of {', '.join(VARIANTS)}")


def run_lxt(model, x: np.ndarray, targets: np.ndarray, variant: str = "attnlrp") -> LXTRun:
    """Explain ``x`` with LXT's ``variant`` on a :class:`~lrp_num.io.torch_vit.ViT`, starting from
    R = f_c(x) at each sample's target logit, and record every op's relevance.

    The model's ops are swapped for the recording ones for this call only (its weights are
    untouched) and restored afterwards.
    """
    torch = require_torch()
    ops = lxt_ops(variant)
    dtype = next(model.parameters()).dtype
    inputs = torch.tensor(np.asarray(x), dtype=dtype, requires_grad=True)
    saved = model.ops
    model.ops = ops
    try:
        ops.begin(inputs)
        logits = model(inputs)
        targets = np.asarray(targets, dtype=np.int64)
        top = torch.zeros_like(logits)
        rows = torch.arange(len(targets))
        top[rows, torch.tensor(targets)] = logits.detach()[rows, torch.tensor(targets)]
        # explicit rules: the output gradient is the relevance; gradient x input: the gradient
        # whose product with the logits is that relevance (1 at the target)
        seed = top if not ops.times_input else (top != 0).to(dtype)
        logits.backward(seed)
    finally:
        model.ops = saved
    records = ops.collect()
    grad = inputs.grad.detach()
    relevance = (grad * inputs.detach() if ops.times_input else grad).double().numpy()
    lxt_version = getattr(importlib.import_module("lxt"), "__version__", "2.1")
    return LXTRun(f"LXT {lxt_version}", variant, relevance, logits.detach().double().numpy(),
                  top.detach().double().numpy(), records)


__all__ = ["INSTALL_LXT", "LXTRun", "OpRecord", "VARIANTS", "import_lxt_efficient_rules", "import_lxt_explicit",
           "lxt_ops", "run_lxt"]
