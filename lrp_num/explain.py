"""Relevance propagation over a whole network with the generated kernels.

``explain`` walks a :class:`~lrp_num.network.Sequential` backwards from the chosen output: every
Dense and Conv2d layer applies the kernel its composite assigns, pooling layers their derived
rule, ReLU and Identity pass relevance through (a neuron is its linear map and its ReLU), and
Flatten reshapes it. The top relevance is the chosen output's value f_c(x) (deep Taylor
decomposition assumes f_c(x) >= 0), or an explicit array.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from lrp_num.checks import as_float_array, require_finite
from lrp_num.composites import Composite, LayerRule, get_composite
from lrp_num.conventions import DTD, Conventions
from lrp_num.errors import LRPError, ShapeError, TargetError
from lrp_num.kernels import load_module
from lrp_num.layers import Conv2d, Dense, Flatten
from lrp_num.model_io import InputDomain
from lrp_num.network import Sequential


class MissingBoundsError(LRPError, ValueError):
    """A rule needs the input box (lower, upper) and none was given."""


@dataclass
class LayerReport:
    """What happened at one layer of the backward pass.

    Attributes
    ----------
    index : int
        Position in ``network.layers``.
    layer : str
        The layer's repr.
    rule : str or None
        The rule applied (None for pass-through layers).
    relevance_in, relevance_out : ndarray, shape (batch,)
        Sum of relevance below and above the layer, per sample (conservation per layer).
    root_point_valid : ndarray or None, shape (batch,)
        Fraction of active neurons whose root point lies in the rule's domain by the derived
        condition; None when the rule has no domain condition.
    relevance_above : ndarray or None
        The relevance arriving at the layer's output (kept with ``keep_layers=True``).
    """

    index: int
    layer: str
    rule: str | None
    relevance_in: np.ndarray
    relevance_out: np.ndarray
    root_point_valid: np.ndarray | None = None
    relevance_above: np.ndarray | None = None


@dataclass
class Explanation:
    """Relevance and everything measured on the way.

    Attributes
    ----------
    relevance : ndarray
        Input relevance, the shape of x.
    output : ndarray
        The network output f(x).
    relevance_top : ndarray
        The output relevance the backward pass started from.
    layers : list of LayerReport
        One report per layer, input side first.
    """

    relevance: np.ndarray
    output: np.ndarray
    relevance_top: np.ndarray
    layers: list[LayerReport] = field(default_factory=list)


def top_relevance(output: np.ndarray, target: object) -> np.ndarray:
    """Output relevance: f_c(x) at the target index per sample, or an explicit array.

    ``target`` is None (each sample's largest output), an int (one index for all), a sequence
    of one index per sample, or an array of the output's shape used as given.
    """
    batch, n_outputs = output.shape[0], int(np.prod(output.shape[1:]))
    if target is None:
        target = output.reshape(batch, -1).argmax(axis=1)
    array = np.asarray(target)
    if array.shape == output.shape and array.dtype.kind == "f":
        return require_finite(array.astype(output.dtype), "target relevance")
    if array.dtype.kind not in "iu":
        raise TargetError(f"target must be output indices or a relevance array of shape {output.shape}, "
                          f"got {array.dtype} of shape {array.shape}")
    indices = np.broadcast_to(array, (batch,)) if array.ndim == 0 else array
    if indices.shape != (batch,):
        raise TargetError(f"target has {indices.size} indices for a batch of {batch}")
    if np.any(indices < 0) or np.any(indices >= n_outputs):
        raise TargetError(f"target index out of range for {n_outputs} outputs: {indices.tolist()}")
    flat = np.zeros((batch, n_outputs), dtype=output.dtype)
    rows = np.arange(batch)
    flat[rows, indices] = output.reshape(batch, -1)[rows, indices]
    return flat.reshape(output.shape)


@functools.lru_cache(maxsize=None)
def _kernel(rule: str, folder: str | None = None) -> tuple[Callable, frozenset[str], bool]:
    """The rule's kernel, the keywords it accepts, and whether it needs box bounds."""
    module = load_module(rule, folder)
    kernel = module.relevance
    return kernel, frozenset(inspect.signature(kernel).parameters), bool(getattr(module, "BOUNDS", ()))


def _resolve_composite(rule: str | None, composite: str | Composite | None,
                       parameters: dict) -> Composite:
    if (rule is None) == (composite is None):
        raise LRPError("give exactly one of rule= or composite=")
    if rule is not None:
        return Composite.single(rule, **parameters)
    return get_composite(composite) if isinstance(composite, str) else composite


def explain_details(
    network: Sequential,
    x: np.ndarray,
    rule: str | None = None,
    composite: str | Composite | None = None,
    target: object = None,
    *,
    conventions: Conventions = DTD,
    input_domain: InputDomain | tuple | None = None,
    diagnostics: bool = True,
    kernel_folder: str | None = None,
    keep_layers: bool = False,
    layer_reports: bool = True,
    **parameters: float,
) -> Explanation:
    """Explain ``network`` at ``x`` and report per layer; see :func:`explain`.

    ``diagnostics`` adds the root-point validity per layer, ``keep_layers`` keeps the relevance
    arriving at every layer's output, ``kernel_folder`` loads kernels generated into a folder;
    ``layer_reports=False`` skips the per-layer reports altogether (what :func:`explain` does).
    """
    x = require_finite(as_float_array(x, "input"), "input")
    if isinstance(input_domain, tuple):
        input_domain = InputDomain(*input_domain)
    plan = _resolve_composite(rule, composite, parameters).plan(network.layers, input_domain is not None)
    with contextlib.ExitStack() as stack:
        for layer in network.layers:  # convolutions reuse the im2col columns of the forward pass
            if hasattr(layer, "reusing_columns"):
                stack.enter_context(layer.reusing_columns())
        return _backward(network, x, plan, target, conventions, input_domain,
                         diagnostics and layer_reports, kernel_folder, keep_layers, layer_reports)


def _backward(network, x, plan, target, conventions, input_domain, diagnostics, kernel_folder,
              keep_layers, layer_reports) -> Explanation:
    """The forward trace, then every layer's rule from the output down to the input."""
    activations = network.forward_trace(x)
    output = activations[-1]
    relevance = top_relevance(output, target)
    top = relevance
    reports: list[LayerReport] = []
    first_linear = _first_linear(plan, network.layers)
    for index in reversed(range(len(network.layers))):
        layer, a = network.layers[index], activations[index]
        above = relevance
        choice = plan.get(index)
        valid = None
        if choice is not None:
            relevance, valid = _apply_rule(layer, a, relevance, choice, conventions, input_domain,
                                           index == first_linear,
                                           diagnostics, kernel_folder)
        elif isinstance(layer, Flatten):
            relevance = relevance.reshape(a.shape)
        if layer_reports:
            reports.append(LayerReport(index, repr(layer), choice.rule if choice else None,
                                       _per_sample_sum(relevance), _per_sample_sum(above), valid,
                                       above if keep_layers else None))
    if relevance.shape != x.shape:  # pragma: no cover - every layer keeps shapes consistent
        raise ShapeError(f"relevance shape {relevance.shape} differs from input shape {x.shape}")
    return Explanation(relevance, output, top, reports[::-1])


def explain(
    network: Sequential,
    x: np.ndarray,
    rule: str | None = None,
    composite: str | Composite | None = None,
    target: object = None,
    *,
    conventions: Conventions = DTD,
    input_domain: InputDomain | tuple | None = None,
    kernel_folder: str | None = None,
    **parameters: float,
) -> np.ndarray:
    """Layer-wise relevance of ``x`` for a batch, with the shape of ``x``.

    Parameters
    ----------
    network : Sequential
    x : ndarray
        A batch of inputs (float32 or float64; relevance comes back in the same dtype).
    rule : str, optional
        One rule for every Dense/Conv2d layer (``"zplus"``, ``"w2"``, ``"zbox"``, ``"lrp0"``,
        ``"gamma"``, ``"flat"``, ``"epsilon"``, ``"alphabeta"``, ``"bias_neuron"``).
    composite : str or Composite, optional
        A per-layer mapping (``"deep-taylor"``, ``"epsilon-plus"``, ``"epsilon-gamma-box"``,
        ``"alpha2-beta1"`` or your own :class:`~lrp_num.composites.Composite`).
    target : None, int, sequence of int, or ndarray
        Output index per sample (default: the largest output) or an explicit output relevance.
    conventions : Conventions
        Bias placement and stabiliser (default: the DTD derivation).
    input_domain : InputDomain or (low, high), optional
        The input box, needed by z^B at the input.
    kernel_folder : str, optional
        Load kernels from a folder written by ``lrp regenerate --out`` (your own rules).
    **parameters
        Rule parameters (gamma, alpha, beta, epsilon) when ``rule`` is given.

    Returns
    -------
    ndarray
        R_p for every input p; sum_p R_p = f_c(x) for conservative rules (Montavon et al. 2017).
    """
    return explain_details(network, x, rule, composite, target, conventions=conventions,
                           input_domain=input_domain, diagnostics=False, kernel_folder=kernel_folder,
                           layer_reports=False,
                           **parameters).relevance


def _first_linear(plan: dict[int, LayerRule], layers: Sequence) -> int | None:
    return next((i for i in sorted(plan) if isinstance(layers[i], (Dense, Conv2d))), None)


def _per_sample_sum(r: np.ndarray) -> np.ndarray:
    return r.reshape(r.shape[0], -1).sum(axis=1, dtype=np.float64)


def _apply_rule(layer, a, relevance, choice: LayerRule, conventions: Conventions,
                input_domain: InputDomain | None, is_first: bool, diagnostics: bool,
                kernel_folder: str | None):
    kernel, accepted, needs_bounds = _kernel(choice.rule, kernel_folder)
    keywords = dict(choice.parameters)
    if "eps" in accepted:
        keywords["eps"] = conventions.eps
    if "stabilise" in accepted:
        keywords["stabilise"] = conventions.stabilise
    shares = conventions.bias_shares(choice.rule)
    if shares is not None and "bias_shares" in accepted and isinstance(layer, (Dense, Conv2d)):
        keywords["bias_shares"] = shares
    if needs_bounds:
        keywords.update(_bounds(choice.rule, a, input_domain, is_first))
    unknown = set(keywords) - accepted
    if unknown:
        raise LRPError(f"rule {choice.rule} takes no parameter(s) {', '.join(sorted(unknown))}")
    lower_relevance = kernel(layer, a, relevance, **keywords)
    valid = None
    if diagnostics:
        valid = _root_point_validity(choice.rule, layer, a, keywords, kernel_folder)
    return lower_relevance, valid


def _bounds(rule: str, a: np.ndarray, input_domain: InputDomain | None, is_first: bool) -> dict:
    if not is_first:
        raise MissingBoundsError(f"rule {rule} needs box bounds, which only the network input has; "
                                 "use it on the first linear layer only")
    if input_domain is None:
        raise MissingBoundsError(f"rule {rule} needs the input box: pass input_domain=(low, high)")
    return {"lower": np.broadcast_to(input_domain.low.astype(a.dtype), a.shape[1:])[None],
            "upper": np.broadcast_to(input_domain.high.astype(a.dtype), a.shape[1:])[None]}


def _root_point_validity(rule: str, layer, a: np.ndarray, keywords: dict, folder: str | None):
    """Fraction of active neurons whose root point is in the rule's domain (derived condition)."""
    from lrp_num.kernels import load_condition

    condition = load_condition(rule, folder) if folder else load_condition(rule)
    if condition is None:
        return None
    accepted = inspect.signature(condition).parameters
    arguments = {k: v for k, v in keywords.items() if k in accepted}
    inside, active = condition(layer, a, **arguments)
    batch = a.shape[0]
    inside = inside.reshape(batch, -1)
    active = active.reshape(batch, -1)
    n_active = active.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(n_active > 0, (inside & active).sum(axis=1) / np.maximum(n_active, 1), 1.0)
    return fraction
