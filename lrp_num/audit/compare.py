"""The audit: a library's per-layer relevance against the reference, under two conventions.

For every layer with a rule the audit measures, at that layer's input,

* the deviation from the mpmath reference under the library's own profile (does the library
  compute what its source says it computes?),
* the deviation from the reference under the deep Taylor derivation (how far is that from the
  derived rule?),
* the relevance the layer absorbs, sum R_out - sum R_in as a fraction of f_c(x), for the
  library, its profile and DTD (conservation), and
* negative relevances (positivity).

Deviations are max |R_lib - R_ref| and that divided by max |R_ref| over the layer and the batch.
A library that errs at one layer deviates there and at every layer below it; the verdict names
the layer closest to the output where the deviation starts.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping

import numpy as np

from lrp_num.audit.graph_compare import chosen_composite
from lrp_num.audit.library_run import LibraryRun
from lrp_num.checks import check_dps, require_finite
from lrp_num.engine.composites import Composite, LayerRule
from lrp_num.engine.conventions import DTD, Conventions
from lrp_num.errors import KernelArgumentError, LRPError, ShapeError, UnsupportedLayerError
from lrp_num.engine.explain import top_relevance
from lrp_num.audit.profiles import ATTRIBUTION_PROFILES, Profile, get_profile
from lrp_num.progress import progress

#: relative deviation below which two float64 relevances count as equal
DEFAULT_TOLERANCE = 1e-7
_POOLING = ("lrp0", "maxpool", "sumpool", "avgpool")


@dataclass
class LayerAudit:
    """The checks at the input of one layer (see the module docstring); fractions of f_c."""

    index: int
    layer: str
    rule: str
    library_rule: str
    own_deviation: float
    own_relative: float
    dtd_deviation: float
    dtd_relative: float
    absorbed_library: float
    absorbed_profile: float
    absorbed_dtd: float
    negatives_library: int
    negatives_dtd: int


@dataclass
class AuditReport:
    """Everything ``lrp audit`` reports, with the verdict lines."""

    library: str
    profile: str
    method: str
    n_samples: int
    layers: list[LayerAudit]
    verdicts: list[str]
    input_sum: list[float] = field(default_factory=list)
    f_c: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    ok: bool = True
    nodes: list = field(default_factory=list)
    """Graphs: one :class:`~lrp_num.audit.graph_compare.NodeAudit` per node (``layers`` is empty)."""
    inputs: dict = field(default_factory=dict, repr=False)
    """Input relevance for pictures (:mod:`lrp_num.audit.plot`), not in :meth:`to_dict`:
    ``"x"``, ``"library"``, ``"reference"`` (arrays of the input's shape) and ``"reference_name"``."""

    def to_dict(self) -> dict:
        values = asdict(self)
        del values["inputs"]
        return values


# -- plans: our rules -> the library's profile and the derivation ---------------------------

def check_tolerance(tolerance: object) -> float:
    """The audit's tolerance as a float: a finite relative deviation with 0 <= tolerance < 1.

    0 asks for bit-equal relevance; at 1 and above an attribution of the wrong sign or of
    zeros would count as equal to the reference, so the audit could not fail.

    Raises
    ------
    KernelArgumentError
        For anything else (NaN, Inf, a negative number, 1 or more, a string, a bool).
    """
    valid = isinstance(tolerance, (int, float, np.integer, np.floating)) \
        and not isinstance(tolerance, (bool, np.bool_)) and bool(np.isfinite(tolerance)) \
        and 0 <= tolerance < 1
    if not valid:
        raise KernelArgumentError(f"tolerance must be a relative deviation from 0 (inclusive) to 1 "
                                  f"(exclusive), got {tolerance!r}")
    return float(tolerance)


def layer_plan(network, rule: str | None, composite: str | Composite | None, parameters: Mapping,
               input_is_box: bool) -> dict[int, LayerRule]:
    """Folded layer index -> our LayerRule (one rule everywhere, or a composite).

    Rule parameters are checked as :func:`lrp_num.explain` checks them (the rule's own, finite,
    >= 0; none with a composite): KernelArgumentError otherwise.
    """
    return chosen_composite(rule, composite, parameters).plan(list(network.layers), input_is_box)


def _check_zbox(network, plan: Mapping[int, LayerRule]) -> None:
    first = min((k for k, c in plan.items() if c.rule not in _POOLING), default=None)
    for k, choice in plan.items():
        if choice.rule == "zbox" and k != first:
            raise LRPError(f"rule zbox needs the input box, which only the first linear layer has (layer {k} "
                           "is not); use a composite such as deep-taylor or epsilon-gamma-box")


def mapped_plans(profile: Profile, plan: Mapping[int, LayerRule]) -> tuple[dict, dict]:
    """(reference plan under the profile, reference plan under DTD) for our ``plan``."""
    own, dtd = {}, {}
    for k, choice in plan.items():
        if choice.rule in _POOLING:
            own[k] = dtd[k] = choice
            continue
        mapping = profile.rule(choice.rule)
        own[k] = LayerRule(mapping.reference_rule, profile.reference_parameters(mapping, choice.parameters))
        dtd[k] = LayerRule(mapping.dtd_rule, {**mapping.defaults, **dict(choice.parameters)})
    return own, dtd


def _composite(name: str, plan: Mapping[int, LayerRule]) -> Composite:
    return Composite(name, lambda index, layer, first, box: plan[index])


# -- the reference, per layer ----------------------------------------------------------------

def reference_layers(network, x: np.ndarray, plan: Mapping[int, LayerRule], target, conventions: Conventions,
                     input_domain=None, dps: int = 50) -> dict[int, np.ndarray]:
    """Relevance at the input of every folded layer by :func:`lrp_num.reference.explain_trace`.

    Returns {k: array (batch, n_k)} for k = 0 .. L (L: the output relevance), in float64.
    """
    from lrp_num import reference

    bounds = {}
    if input_domain is not None:
        bounds = {"lower": np.broadcast_to(input_domain.low, x.shape[1:]),
                  "upper": np.broadcast_to(input_domain.high, x.shape[1:])}
    rules_used = {choice.rule for choice in plan.values()}
    if "zbox" not in rules_used:
        bounds = {}
    # a library may apply z+ or gamma to negative inputs: evaluate the definition there too
    # (the report notes it, see _outside_domain_notes), rather than refuse the audit
    results = reference.explain_trace(network, x, composite=_composite("audit", plan), target=target,
                                      dps=dps, conventions=conventions, diagnostics=False,
                                      check_domain=False, **bounds)
    n_layers = len(network.layers)
    per_sample = []
    for result in results:
        traces = {trace.index: trace for trace in result.traces}
        layers = {n_layers: np.array(result.top, dtype=np.float64).ravel()}
        for k in reversed(range(n_layers)):
            layers[k] = (np.array(traces[k].relevance_in, dtype=np.float64) if k in traces
                         else layers[k + 1])
        per_sample.append(layers)
    return {k: np.stack([sample[k] for sample in per_sample]) for k in range(n_layers + 1)}


# -- comparing ---------------------------------------------------------------------------------

def _flat(array: np.ndarray, batch: int) -> np.ndarray:
    return np.asarray(array, dtype=np.float64).reshape(batch, -1)


def _pass_through(network, layers: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Fill boundaries a library does not record below ReLU, Flatten and Identity (relevance
    passes through them unchanged in every library audited)."""
    from lrp_num.layers import Flatten, Identity, ReLU

    for k in reversed(range(len(network.layers))):
        if k not in layers and k + 1 in layers and isinstance(network.layers[k], (ReLU, Flatten, Identity)):
            layers[k] = layers[k + 1]
    return layers


def _deviation(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    absolute = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return absolute, (absolute / scale if scale > 0 else absolute)


def _absorbed(layers: Mapping[int, np.ndarray], k: int, f_c: np.ndarray) -> float:
    """Largest |sum R_out - sum R_in| / |f_c| over the batch at layer k (0 if not recorded)."""
    if k not in layers or k + 1 not in layers:
        return float("nan")
    loss = layers[k + 1].sum(axis=1) - layers[k].sum(axis=1)
    fraction = loss / np.where(f_c != 0, np.abs(f_c), 1.0)
    return float(fraction[np.argmax(np.abs(fraction))])


def _negatives(r: np.ndarray, tolerance: float) -> int:
    scale = float(np.max(np.abs(r))) if r.size else 0.0
    return int(np.count_nonzero(r < -tolerance * scale))


def _layer_audits(network, plan, profile_rules, lib, own, dtd, f_c, tolerance) -> list[LayerAudit]:
    audits = []
    for k in sorted(plan):
        if k not in lib:
            continue
        choice = plan[k]
        own_abs, own_rel = _deviation(lib[k], own[k])
        dtd_abs, dtd_rel = _deviation(lib[k], dtd[k])
        library_rule = (profile_rules[choice.rule].library_rule if choice.rule in profile_rules
                        else f"({choice.rule})")
        audits.append(LayerAudit(
            k, repr(network.layers[k]), choice.rule, library_rule, own_abs, own_rel, dtd_abs, dtd_rel,
            _absorbed(lib, k, f_c), _absorbed(own, k, f_c), _absorbed(dtd, k, f_c),
            _negatives(lib[k], tolerance), _negatives(dtd[k], tolerance)))
    return audits


def _verdicts(name: str, profile: Profile, audits: list[LayerAudit], tolerance: float) -> tuple[list[str], bool]:
    lines, ok = [], True
    by_top = sorted(audits, key=lambda a: -a.index)
    first_own = next((a for a in by_top if a.own_relative > tolerance), None)
    if first_own is None:
        worst = max((a.own_relative for a in audits), default=0.0)
        lines.append(f"{name} matches its own convention ({profile.name}) at every layer: "
                     f"max relative deviation {worst:.1e}")
    else:
        ok = False
        lines.append(f"{name} deviates from its own convention ({profile.name}) starting at layer "
                     f"{first_own.index} {first_own.layer} ({first_own.library_rule}): relative deviation "
                     f"{first_own.own_relative:.3g} (max abs {first_own.own_deviation:.3g}); layers above match")
    at_input = next((a for a in audits if a.index == 0), None)
    first_dtd = next((a for a in by_top if a.dtd_relative > tolerance), None)
    if first_dtd is None:
        lines.append(f"{name} agrees with the DTD derivation within {tolerance:.0e} at every layer")
    else:
        shown = at_input or first_dtd
        lines.append(f"{name} deviates from DTD by {shown.dtd_deviation:.3g} (relative {shown.dtd_relative:.3g}) "
                     f"at the input; first at layer {first_dtd.index} {first_dtd.layer} "
                     f"(relative {first_dtd.dtd_relative:.3g})")
    # below the first deviating layer the upper relevance already differs: only the layers down
    # to that one can break conservation on their own
    lowest = first_own.index if first_own is not None else -1
    broken = [a for a in by_top if a.index >= lowest and not np.isnan(a.absorbed_library)
              and abs(a.absorbed_library - a.absorbed_profile) > max(tolerance, 1e-12)]
    if broken:
        ok = False
        a = broken[0]
        lines.append(f"conservation broken by {a.absorbed_profile - a.absorbed_library:+.3g} f_c at layer "
                     f"{a.index} {a.layer}: {name} absorbs {a.absorbed_library:+.3g} f_c, its convention "
                     f"{a.absorbed_profile:+.3g}, DTD {a.absorbed_dtd:+.3g}")
    else:
        finite = [a for a in audits if not np.isnan(a.absorbed_library)]
        if finite:
            a = max(finite, key=lambda a: abs(a.absorbed_library))
            lines.append(f"conservation as its convention implies: largest absorption {a.absorbed_library:+.3g} "
                         f"f_c at layer {a.index} {a.layer} (DTD {a.absorbed_dtd:+.3g})")
    extra = [a for a in by_top if a.negatives_library > a.negatives_dtd]
    if extra:
        a = extra[0]
        lines.append(f"positivity: {a.negatives_library} negative relevances at the input of layer {a.index} "
                     f"{a.layer}, DTD has {a.negatives_dtd}")
    else:
        lines.append("positivity: no more negative relevances than DTD at any layer")
    return lines, ok


def _notes(library: str, network, x: np.ndarray, run: LibraryRun, audits: list[LayerAudit],
           tolerance: float) -> list[str]:
    """Explanations of known causes next to the verdicts."""
    from lrp_num.layers import BatchNorm, MaxPool2d

    notes = []
    model_output = network.forward(x)
    if run.output is not None:
        _, changed = _deviation(np.asarray(run.output).reshape(model_output.shape), model_output)
        if changed > 1e-12:
            notes.append(f"note: {run.library} explains a model whose output differs from the given one by "
                         f"{changed:.2g} (relative){'; zennit SequentialMergeBatchNorm leaves x / sqrt(1 + eps_bn) per merged BatchNorm, which the profile reproduces' if library == 'zennit' else ''}")
    bad = [a for a in audits if a.own_relative > tolerance]
    if bad:
        first = max(bad, key=lambda a: a.index)
        if isinstance(network.layers[first.index], MaxPool2d):
            notes.append(f"note: layer {first.index} is max pooling: {run.library} routes a window's relevance "
                         "to one maximum (torch's gradient), the reference splits ties equally")
        if library == "captum" and any(isinstance(l, BatchNorm) for l in network.source_layers):
            notes.append("note: captum does not merge BatchNorm2d: it applies its EpsilonRule to the batch norm "
                         "as a layer of its own, so the layer before it deviates from any merged convention")
    return notes


def _outside_domain_notes(network, x: np.ndarray, plan: Mapping[int, LayerRule]) -> list[str]:
    """A note for every layer where a rule derived for the orthant (zplus, gamma: the
    reference's table of domains) meets negative inputs: its DTD values there evaluate the
    definition outside the domain it is derived for, where lrp_num.explain refuses it."""
    from lrp_num.reference import ROOT_POINT_RULES

    activations = network.forward_trace(np.asarray(x, dtype=np.float64))
    notes = []
    for k in sorted(plan):
        rule = plan[k].rule
        if ROOT_POINT_RULES.get(rule) == "orthant":
            n_negative = int(np.count_nonzero(activations[k] < 0))
            if n_negative:
                notes.append(f"note: rule {rule} at layer {k} is derived for x >= 0, but {n_negative} of "
                             f"its input values are negative: its reference values there evaluate the "
                             f"definition outside its domain (lrp_num.explain raises DomainError)")
    return notes


def _targets(network, x: np.ndarray, target) -> np.ndarray:
    output = network.forward(np.asarray(x, dtype=np.float64))
    if target is None:
        return output.reshape(len(x), -1).argmax(axis=1)
    indices = np.broadcast_to(np.asarray(target, dtype=np.int64), (len(x),))
    if np.any(indices < 0) or np.any(indices >= output.reshape(len(x), -1).shape[1]):
        raise ShapeError(f"target out of range: {indices.tolist()}")
    return indices.copy()


def run_library(library: str, network, x: np.ndarray, plan, targets: np.ndarray, input_domain=None,
                overrides: Mapping[int, Callable] | None = None) -> LibraryRun:
    """The library's own LRP on the torch twin of ``network`` (float64)."""
    from lrp_num.io.torch_bridge import to_torch

    model = to_torch(network)
    if library == "zennit":
        from lrp_num.audit.zennit_adapter import run_zennit

        output = network.forward(np.asarray(x, dtype=np.float64))
        top = top_relevance(output, targets)
        return run_zennit(network, model, x, plan, top, input_domain, overrides)
    if library == "autolrp":
        from lrp_num.audit.autolrp_adapter import run_autolrp

        return run_autolrp(network, model, x, plan, targets, overrides)
    from lrp_num.audit.captum_adapter import run_captum

    return run_captum(network, model, x, plan, targets, overrides)


def audit_library(network, x: np.ndarray, library: str, rule: str | None = None,
                  composite: str | Composite | None = None, target=None, *, parameters: Mapping | None = None,
                  input_domain=None, dps: int = 50, tolerance: float = DEFAULT_TOLERANCE,
                  overrides: Mapping[int, Callable] | None = None, library_run: LibraryRun | None = None,
                  addition: str | None = None) -> AuditReport:
    """Audit ``library`` ("zennit" or "captum") on ``network`` at the batch ``x``.

    Parameters
    ----------
    rule, composite : str
        Exactly one: our rule name on every linear layer, or a composite name.
    target : int or sequence, optional
        Output index per sample (default: the prediction).
    parameters : mapping, optional
        Rule parameters (gamma, epsilon, alpha, beta); the library's defaults otherwise.
    input_domain : InputDomain, optional
        The input box, for z^B.
    dps : int
        Digits of the mpmath reference, 20 to 10000 (PrecisionError otherwise).
    tolerance : float
        Relative deviation counted as equal, 0 <= tolerance < 1 (KernelArgumentError otherwise).
    overrides : mapping, optional
        Folded layer index (graphs: node name) -> factory of a library rule object to use there
        (to test the audit).
    library_run : LibraryRun, optional
        A run recorded elsewhere, instead of running the library here (Sequential networks).
    addition : {"functional", "zennit", "captum"}, optional
        Graphs: how the torch twin writes Add nodes (default: as the library's users do, the
        profile's ``addition``); ``"functional"`` is a plain ``+`` that no rule sees.

    On a :class:`~lrp_num.engine.graph.Graph` the audit reports per node
    (:mod:`lrp_num.audit.graph_compare`): ``AuditReport.nodes`` instead of ``layers``.
    """
    dps, tolerance = check_dps(dps), check_tolerance(tolerance)
    profile = get_profile(library, runnable=True)
    x = np.asarray(x, dtype=np.float64)
    if hasattr(network, "nodes"):
        from lrp_num.audit.graph_compare import audit_graph_library

        if library == "autolrp":
            raise UnsupportedLayerError("the audit runs autoLRP on Sequential models only")

        if library_run is not None:
            raise UnsupportedLayerError("library_run= is for Sequential networks; on a graph the audit "
                                        "runs the library itself")
        return audit_graph_library(network, x, library, profile, rule, composite, _targets(network, x, target),
                                   parameters or {}, input_domain, dps, tolerance, overrides, addition)
    plan = layer_plan(network, rule, composite, dict(parameters or {}), input_domain is not None)
    _check_zbox(network, plan)
    own_plan, dtd_plan = mapped_plans(profile, plan)
    targets = _targets(network, x, target)
    seconds = {}
    start = time.perf_counter()
    lib_run = library_run or run_library(library, network, x, plan, targets, input_domain, overrides)
    seconds["library"] = time.perf_counter() - start
    top = top_relevance(network.forward(x), targets)  # f_c(x) of the model, as given to the library
    explained, explained_plan, index_of = profile.explained(network, own_plan)
    start = time.perf_counter()
    own = reference_layers(explained, x, explained_plan, top, profile.conventions, input_domain, dps)
    own = {k: own[index_of[k]] for k in index_of}  # at our layers' inputs
    seconds["reference_profile"] = time.perf_counter() - start
    start = time.perf_counter()
    dtd = reference_layers(network, x, dtd_plan, top, DTD, input_domain, dps)
    seconds["reference_dtd"] = time.perf_counter() - start
    batch = len(x)
    lib = _pass_through(network, {k: _flat(v, batch) for k, v in lib_run.layers.items()})
    f_c = own[len(network.layers)].sum(axis=1)
    audits = _layer_audits(network, plan, profile.rules, lib, own, dtd, f_c, tolerance)
    verdicts, ok = _verdicts(lib_run.library, profile, audits, tolerance)
    verdicts += _notes(library, network, x, lib_run, audits, tolerance)
    verdicts += list(dict.fromkeys(_outside_domain_notes(network, x, own_plan)
                                   + _outside_domain_notes(network, x, dtd_plan)))
    method = f"rule {rule}" if rule else f"composite {composite if isinstance(composite, str) else composite.name}"
    inputs = {"x": x, "library": lib[0].reshape(x.shape), "reference": own[0].reshape(x.shape),
              "reference_name": profile.name}
    return AuditReport(lib_run.library, profile.name, method, batch, audits, verdicts,
                       lib[0].sum(axis=1).tolist(), f_c.tolist(), seconds, ok, inputs=inputs)


def _localise(network, plan, rows, dtd, given, layers, f_c, tolerance) -> tuple[list[LayerAudit], list[str], bool]:
    """A saved attribution's per-layer relevance against the profile closest at the input (rows:
    (profile, its reference layers)), with library mode's per-layer audits and verdicts."""
    for k, value in layers.items():
        if not 1 <= k <= len(network.layers):
            raise ShapeError(f"per-layer relevance for layer {k}: the network has layers 1 to {len(network.layers)} "
                             "above the input")
        value = require_finite(np.asarray(value, dtype=np.float64), f"the relevance at layer {k}")
        if value.size != dtd[k].size:
            raise ShapeError(f"the relevance at layer {k} has {value.size} values; the layer's input has "
                             f"{dtd[k].size} for this batch")
    batch = len(given)
    lib = _pass_through(network, {0: given, **{k: _flat(v, batch) for k, v in layers.items()}})
    profile, own = min(rows, key=lambda row: _deviation(given, row[1][0])[1])
    audits = _layer_audits(network, plan, profile.rules, lib, own, dtd, f_c, tolerance)
    lines, ok = _verdicts("the saved relevance", profile, audits, tolerance)
    return audits, [f"per layer (closest convention {profile.name}): {line}" for line in lines], ok


def audit_attribution(network, x: np.ndarray, attribution: np.ndarray, rule: str | None = None,
                      composite: str | Composite | None = None, target=None, *, library: str | None = None,
                      parameters: Mapping | None = None, input_domain=None, dps: int = 50,
                      tolerance: float = DEFAULT_TOLERANCE, profiles: list[Profile] | None = None,
                      layers: Mapping[int, np.ndarray] | None = None) -> AuditReport:
    """Audit a saved input relevance from any tool (nothing of that tool is imported).

    It is compared with the reference under DTD and under every profile offering the rules (or
    only ``library``'s), at the input: deviation, conservation sum_p R_p against f_c(x) and what
    each convention absorbs, and positivity. The verdict names the convention it matches.
    ``dps`` (20 to 10000) and ``tolerance`` (0 <= tolerance < 1) as in :func:`audit_library`.
    ``profiles``: compare with these profiles only (e.g. one from
    :func:`lrp_num.audit.convention_file.load_convention`) instead of the built-in ones.
    ``layers``: the tool's relevance at the input of folded layers k >= 1 (as
    :func:`lrp_num.audit.layer_files.read_layer_relevance` reads them), compared layer by layer
    with the profile closest at the input, which localises a deviation as library mode does.
    """
    if hasattr(network, "nodes"):
        raise UnsupportedLayerError("the audit of a saved attribution covers Sequential networks only; "
                                    "audit a graph model with --library zennit or captum")
    dps, tolerance = check_dps(dps), check_tolerance(tolerance)
    x = np.asarray(x, dtype=np.float64)
    attribution = require_finite(np.asarray(attribution, dtype=np.float64), "the attribution")
    if attribution.shape == x.shape[1:]:
        attribution = attribution[None]
    if attribution.shape != x.shape:
        raise ShapeError(f"attribution has shape {attribution.shape}, the input {x.shape}")
    plan = layer_plan(network, rule, composite, dict(parameters or {}), input_domain is not None)
    targets = _targets(network, x, target)
    batch = len(x)
    given = _flat(attribution, batch)
    candidates = list(profiles or ([get_profile(library)] if library else ATTRIBUTION_PROFILES.values()))
    rows, lines, ok = [], [], True
    dtd_layers = None
    for profile in progress(candidates, "reference per convention"):
        try:
            own_plan, dtd_plan = mapped_plans(profile, plan)
        except LRPError:
            continue
        own = reference_layers(network, x, own_plan, targets, profile.conventions, input_domain, dps)
        if dtd_layers is None:
            dtd_layers = reference_layers(network, x, dtd_plan, targets, DTD, input_domain, dps)
        rows.append((profile, own))
    if dtd_layers is None:
        raise LRPError("no profile offers these rules; nothing to compare with")
    f_c = dtd_layers[len(network.layers)].sum(axis=1)
    dtd_abs, dtd_rel = _deviation(given, dtd_layers[0])
    scale = np.where(f_c != 0, np.abs(f_c), 1.0)
    absorbed_given = (f_c - given.sum(axis=1)) / scale
    absorbed_dtd = (f_c - dtd_layers[0].sum(axis=1)) / scale
    audits, matches, expected = [], [], [absorbed_dtd]
    worst = lambda values: float(values[np.argmax(np.abs(values))])  # noqa: E731
    for profile, own in rows:
        own_abs, own_rel = _deviation(given, own[0])
        absorbed_own = (f_c - own[0].sum(axis=1)) / scale
        expected.append(absorbed_own)
        audits.append(LayerAudit(0, f"input, vs {profile.name}", rule or str(composite), profile.name, own_abs,
                                 own_rel, dtd_abs, dtd_rel, worst(absorbed_given), worst(absorbed_own),
                                 worst(absorbed_dtd), _negatives(given, tolerance),
                                 _negatives(dtd_layers[0], tolerance)))
        if own_rel <= tolerance:
            matches.append(profile.name)
    if dtd_rel <= tolerance:
        matches.append("DTD")
    if matches:
        lines.append(f"the attribution matches {', '.join(matches)} within {tolerance:.0e} at the input")
    else:
        ok = False
        best = min(audits, key=lambda a: a.own_relative)
        closest = (best.library_rule, best.own_relative) if best.own_relative < dtd_rel else ("DTD", dtd_rel)
        lines.append(f"the attribution matches no known convention at the input: closest {closest[0]} "
                     f"(relative deviation {closest[1]:.3g}); DTD deviation {dtd_abs:.3g}")
    # per sample: the absorbed fraction must equal what one of the conventions absorbs
    gaps = np.min(np.abs(np.stack(expected) - absorbed_given[None]), axis=0)
    if gaps.max() > max(tolerance, 1e-12):
        ok = False
        s = int(np.argmax(gaps))
        lines.append(f"conservation broken at the input (sample {s}): sum R = {given[s].sum():.6g}, f_c = {f_c[s]:.6g}; "
                     f"absorbs {absorbed_given[s]:+.3g} f_c where the conventions absorb "
                     f"{', '.join(f'{e[s]:+.3g}' for e in expected)}")
    else:
        lines.append(f"conservation at the input as a known convention implies (absorbs up to "
                     f"{worst(absorbed_given):+.3g} f_c)")
    if layers:
        layer_audits, layer_lines, layers_ok = _localise(network, plan, rows, dtd_layers, given, layers, f_c,
                                                         tolerance)
        audits += layer_audits
        lines += layer_lines
        ok = ok and layers_ok
    lines += _outside_domain_notes(network, x, plan)
    negatives = _negatives(given, tolerance)
    lines.append(f"positivity: {negatives} negative input relevances (DTD: {_negatives(dtd_layers[0], tolerance)})")
    method = f"rule {rule}" if rule else f"composite {composite}"
    closest, closest_layers = min(rows, key=lambda row: _deviation(given, row[1][0])[1])
    inputs = {"x": x, "library": given.reshape(x.shape), "reference": closest_layers[0].reshape(x.shape),
              "reference_name": closest.name}
    return AuditReport("saved attribution", ", ".join(p.name for p, _ in rows), method, batch, audits, lines,
                       given.sum(axis=1).tolist(), f_c.tolist(), {}, ok, inputs=inputs)
