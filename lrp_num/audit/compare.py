"""The audit: a library's per-layer relevance against the reference, under two conventions.

For every layer with a rule the audit measures, at that layer's input,

* the deviation from the mpmath reference under the library's own profile (does the library
  compute what its source says it computes?),
* the deviation from the reference under the deep Taylor derivation (how far is that from the
  derived rule?), where a rule meets inputs outside its domain under the generalisation that
  holds there (:mod:`lrp_num.audit.findings`),
* the relevance the layer absorbs, sum R_out - sum R_in as a fraction of f_c(x), for the
  library, its profile and DTD (conservation), and the terms of the convention that cause it,
* negative relevances (positivity), and inputs outside the domain of the rule applied.

Deviations are max |R_lib - R_ref| and that divided by max |R_ref| over the layer and the batch.
They are judged against the rounding bound of the dtype the library computed in
(:mod:`lrp_num.audit.tolerance`), or against an explicit relative ``tolerance``. A library that
errs at one layer deviates there and at every layer below it; the verdict names the layer where
the deviation is largest relative to that layer's relevance.

The report's ``verdict`` is "matches" (exit 0) or "fails" (exit 1), and ``findings`` lists
why: ``deviates-from-convention``, ``no-known-convention``, ``outside-domain``,
``conservation``, ``positivity``, and with ``strict`` ``departs-from-dtd``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping

import numpy as np

from lrp_num.audit import findings as found
from lrp_num.audit.graph_compare import chosen_composite
from lrp_num.audit.library_run import LibraryRun
from lrp_num.audit.tolerance import dtype_name, measured_forward_errors, rounding_bounds, unit_roundoff
from lrp_num.checks import check_dps, require_finite
from lrp_num.engine.composites import Composite, LayerRule
from lrp_num.engine.conventions import DTD, Conventions
from lrp_num.errors import KernelArgumentError, LRPError, ShapeError, UnsupportedLayerError
from lrp_num.engine.explain import top_relevance
from lrp_num.audit.profiles import ATTRIBUTION_PROFILES, Profile, get_profile
from lrp_num.progress import progress

#: the explicit relative tolerance the audit used before it derived rounding bounds (kept for callers)
DEFAULT_TOLERANCE = 1e-7
_POOLING = ("lrp0", "maxpool", "sumpool", "avgpool")
#: the kinds of finding that make an audit fail (exit status 1)
FINDINGS = ("deviates-from-convention", "no-known-convention", "outside-domain", "conservation", "positivity",
            "departs-from-dtd")


@dataclass
class LayerAudit:
    """The checks at the input of one layer (see the module docstring); fractions of f_c.

    ``bound``: the largest absolute deviation counted as rounding at this layer (the dtype's
    rounding bound, or tolerance x max |R_ref|), ``bound_relative`` that over max |R_ref|;
    ``own_over_bound`` / ``dtd_over_bound``: max |R_lib - R_ref| / bound, entry by entry
    (above 1: a deviation). ``domain``: the domain of the rule claimed here, ``outside_domain``
    the number of its inputs outside it (over the batch), ``outside_relevance`` the library's
    |relevance| on them (worst sample, fraction of f_c), ``generalisation`` the rule the DTD
    reference used there instead, ``applied_outside_domain`` whether the library evaluates a
    rule outside the domain it is derived for. ``causes``: the convention's terms that make the
    layer depart from DTD (:class:`lrp_num.audit.findings.Cause`). ``conservation_bound``: the
    rounding of the absorbed fraction (a larger gap to the convention breaks conservation).
    """

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
    negatives_profile: int = 0
    bound: float = 0.0
    bound_relative: float = 0.0
    own_over_bound: float = 0.0
    dtd_over_bound: float = 0.0
    domain: str = "R^n"
    outside_domain: int = 0
    outside_relevance: float = 0.0
    generalisation: str | None = None
    applied_outside_domain: bool = False
    causes: list = field(default_factory=list)
    conservation_bound: float = 0.0


@dataclass
class AuditReport:
    """Everything ``lrp audit`` reports, with the verdict lines.

    ``verdict`` is "matches" or "fails"; ``findings`` the kinds of failure (:data:`FINDINGS`);
    ``tolerance`` says what deviation counted as equal (the dtype's rounding bound or an
    explicit relative tolerance); ``dtype`` the type the attribution was computed in.
    """

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
    findings: list[str] = field(default_factory=list)
    verdict: str = "matches"
    tolerance: str = ""
    dtype: str = "float64"
    strict: bool = False
    departs_from_dtd: bool = False
    deviation_at: int | str | None = None
    """The layer index (graphs: node) where the library deviates from its own convention most,
    relative to that layer's relevance; None when it does not deviate."""
    deviation_starts_at: int | str | None = None
    """The deviating layer (node) nearest the output, where the deviation starts."""
    dtd_departure_at: int | str | None = None
    """Where the library departs from DTD most, relative to that layer's relevance."""
    matched: list[str] = field(default_factory=list)
    """Saved attributions: the conventions (profile names, "DTD") the attribution agrees with."""
    inputs: dict = field(default_factory=dict, repr=False)
    """Input relevance for pictures (:mod:`lrp_num.audit.plot`), not in :meth:`to_dict`:
    ``"x"``, ``"library"``, ``"reference"`` (arrays of the input's shape) and ``"reference_name"``."""

    @property
    def exit_status(self) -> int:
        """0 when the verdict is "matches", 1 when it is "fails" (``lrp audit``'s exit status)."""
        return 0 if self.ok else 1

    def to_dict(self) -> dict:
        values = asdict(self)
        del values["inputs"]
        return {**values, "exit_status": self.exit_status}


def pointers(report: AuditReport, audits: list, key) -> None:
    """Set the report's ``deviation_at``, ``deviation_starts_at`` and ``dtd_departure_at`` from
    ``audits`` (ordered input side first; ``key`` names an audit's layer or node)."""
    deviating = [a for a in audits if a.own_over_bound > 1]
    departing = [a for a in audits if a.dtd_over_bound > 1]
    if deviating:
        report.deviation_at = key(max(deviating, key=lambda a: a.own_relative))
        report.deviation_starts_at = key(deviating[-1])
    if departing:
        report.dtd_departure_at = key(max(departing, key=lambda a: a.dtd_relative))


def conclude(report: AuditReport, failures: list[str]) -> AuditReport:
    """Set ``findings``, ``ok`` and ``verdict`` from the failures found, and put the one-line
    verdict first: "matches" never goes with a non-zero exit status."""
    kinds = [kind for kind in FINDINGS if kind in failures]
    if report.strict and report.departs_from_dtd and "departs-from-dtd" not in kinds:
        kinds.append("departs-from-dtd")
    report.findings = kinds
    report.ok = not kinds
    report.verdict = "matches" if report.ok else "fails"
    if report.ok:
        line = (f"verdict: matches: {report.library} computes what its convention ({report.profile}) "
                f"produces and every check holds (within {report.tolerance})")
    else:
        line = f"verdict: fails: {', '.join(kinds)} (within {report.tolerance})"
    report.verdicts.insert(0, line)
    return report


def bounded_tolerance(dtype, tolerance: float | None, model_error: float = 0.0) -> str:
    """How the report states what counted as equal."""
    if tolerance is not None:
        return f"the relative tolerance {tolerance:.3g} (given)"
    extra = f" + the profile's model error {model_error:.0e} of max |R|" if model_error else ""
    return f"the {dtype_name(dtype)} rounding bound (u = {unit_roundoff(dtype):.3g}, per layer from sum |R_ij|){extra}"


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
    return reference_run(network, x, plan, target, conventions, input_domain, dps)[0]


def reference_run(network, x: np.ndarray, plan: Mapping[int, LayerRule], target, conventions: Conventions,
                  input_domain=None, dps: int = 50) -> tuple[dict[int, np.ndarray], list]:
    """(:func:`reference_layers`, the reference's per-sample results with their traces)."""
    from lrp_num import reference

    bounds = {}
    if input_domain is not None:
        bounds = {"lower": np.broadcast_to(input_domain.low, x.shape[1:]),
                  "upper": np.broadcast_to(input_domain.high, x.shape[1:])}
    rules_used = {choice.rule for choice in plan.values()}
    if "zbox" not in rules_used:
        bounds = {}
    # a library may apply z+ or gamma to negative inputs: evaluate the definition there too
    # (the report flags it as a rule outside its domain, see lrp_num.audit.findings)
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
    return {k: np.stack([sample[k] for sample in per_sample]) for k in range(n_layers + 1)}, results


def layer_bounds(network, results: list, dtype, tolerance: float | None,
                 layers: Mapping[int, np.ndarray], model_error: float = 0.0) -> dict[int, np.ndarray]:
    """Per folded layer k: the deviation (batch, n_k) counted as equal at its input: the rounding
    bound of ``dtype`` (:func:`lrp_num.audit.tolerance.rounding_bounds`) plus ``model_error`` x
    max |R_ref| (what a profile leaves unmodelled), or ``tolerance`` x max |R_ref| when given;
    never below u max |R_ref| (the last bit of the largest relevance)."""
    from lrp_num.engine.graph import as_graph

    graph = as_graph(network)
    names = [node.inputs[0] for node in graph.nodes] + [graph.output]
    derived = {}
    if tolerance is None:  # the forward pass's measured cancellation included, as in lrp_num.testing
        derived = rounding_bounds(network, results, dtype, measured_forward_errors(network, results, dtype))
    bounds = {}
    for k, values in layers.items():
        scale = float(np.max(np.abs(values))) if values.size else 0.0
        if tolerance is not None:
            bounds[k] = np.full(values.shape, tolerance * scale)
        else:
            bound = derived.get(names[k])
            bound = np.zeros(values.shape) if bound is None or bound.shape != values.shape else bound
            bounds[k] = np.maximum(bound + model_error * scale, unit_roundoff(dtype) * scale)
    return bounds


def generalised_plan(plan: Mapping[int, LayerRule], outside: Mapping[int, np.ndarray]) -> dict[int, LayerRule]:
    """``plan`` with each rule that meets inputs outside its domain replaced by the
    generalisation that holds there (z+ -> zplus_split, gamma -> gamma_split)."""
    result = dict(plan)
    for k, mask in outside.items():
        general = found.generalisation(plan[k].rule)
        if mask.any() and general is not None:
            result[k] = LayerRule(general, dict(plan[k].parameters))
    return result


def _outside_masks(network, x: np.ndarray, plan: Mapping[int, LayerRule], input_domain) -> dict[int, np.ndarray]:
    """Layer k -> mask (batch, n_k) of its inputs outside the domain of ``plan[k]``'s rule."""
    activations = network.forward_trace(np.asarray(x, dtype=np.float64))
    linear = [k for k, c in plan.items() if c.rule not in _POOLING]
    first = min(linear, default=None)
    return {k: found.outside_domain(plan[k].rule, activations[k].reshape(len(x), -1), input_domain, k == first)
            for k in plan if plan[k].rule not in _POOLING}


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


def _absorbed_samples(layers: Mapping[int, np.ndarray], k: int, f_c: np.ndarray) -> np.ndarray | None:
    """(sum R_out - sum R_in) / |f_c| per sample at layer k (None if not recorded)."""
    if k not in layers or k + 1 not in layers:
        return None
    return (layers[k + 1].sum(axis=1) - layers[k].sum(axis=1)) / np.where(f_c != 0, np.abs(f_c), 1.0)


def _worst(values: np.ndarray | None) -> float:
    if values is None:
        return float("nan")
    return float(values[np.argmax(np.abs(values))])


def _absorbed(layers: Mapping[int, np.ndarray], k: int, f_c: np.ndarray) -> float:
    """The largest (sum R_out - sum R_in) / |f_c| over the batch at layer k (nan if not recorded)."""
    return _worst(_absorbed_samples(layers, k, f_c))


def _negatives(r: np.ndarray, bound: np.ndarray | float) -> int:
    """Entries below -bound (a negative relevance beyond rounding)."""
    return int(np.count_nonzero(np.asarray(r) < -np.asarray(bound)))


def _over_bound(a: np.ndarray, b: np.ndarray, bound: np.ndarray) -> float:
    """max |a - b| / bound, entry by entry (0 / 0 counts 0)."""
    gap = np.abs(np.asarray(a, dtype=np.float64) - b)
    ratio = np.divide(gap, bound, out=np.where(gap > 0, np.inf, 0.0), where=bound > 0)
    return float(ratio.max()) if ratio.size else 0.0


def _conservation_bound(bounds: Mapping[int, np.ndarray], k: int, f_c: np.ndarray) -> np.ndarray:
    """The rounding of sum R_out - sum R_in at layer k, per sample, as a fraction of f_c."""
    total = bounds[k].sum(axis=1) + (bounds[k + 1].sum(axis=1) if k + 1 in bounds else 0.0)
    return total / np.where(f_c != 0, np.abs(f_c), 1.0) + 1e-12


def layer_causes(profile: Profile, own_plan, dtd_plan, own, dtd, own_results, dtd_results, f_c,
                 masks: Mapping[int, np.ndarray], bounds: Mapping[int, np.ndarray],
                 own_key: Callable | None = None) -> dict[int, list]:
    """Per layer with a rule: the terms of ``profile``'s convention that make the reference
    under it depart from the DTD reference there (:func:`lrp_num.audit.findings.causes`).
    ``own_key``: a trace of ``own_results`` -> our folded layer index (default its index; where
    the library explains more layers than ours, their terms add up at ours)."""
    own_terms = found.absorbed_terms(own_results, own_key or (lambda trace: trace.index))
    dtd_terms = found.absorbed_terms(dtd_results, lambda trace: trace.index)
    result = {}
    for k in sorted(own_plan):
        if own_plan[k].rule in _POOLING:
            continue
        threshold = float(np.max(_conservation_bound(bounds, k, f_c))) if k in bounds else 1e-12
        result[k] = found.causes(profile.conventions, own_plan[k].rule, dtd_plan[k].rule, own_terms.get(k),
                                 dtd_terms.get(k), _absorbed_samples(own, k, f_c), _absorbed_samples(dtd, k, f_c),
                                 masks.get(k), own.get(k), dtd.get(k), f_c, threshold)
    return result


def _outside_relevance(relevance: np.ndarray, mask: np.ndarray, f_c: np.ndarray) -> float:
    carried = np.where(mask, np.abs(relevance), 0.0).sum(axis=1) / np.where(f_c != 0, np.abs(f_c), 1.0)
    return float(carried.max()) if carried.size else 0.0


def _layer_audits(network, plan, profile: Profile, own_plan, dtd_plan, lib, own, dtd, f_c, own_bounds,
                  dtd_bounds, claimed: Mapping[int, np.ndarray], applied: Mapping[int, np.ndarray],
                  causes: Mapping[int, list]) -> list[LayerAudit]:
    audits = []
    for k in sorted(plan):
        if k not in lib:
            continue
        choice = plan[k]
        own_abs, own_rel = _deviation(lib[k], own[k])
        dtd_abs, dtd_rel = _deviation(lib[k], dtd[k])
        library_rule = (profile.rules[choice.rule].library_rule if choice.rule in profile.rules
                        else f"({choice.rule})")
        scale = float(np.max(np.abs(own[k]))) if own[k].size else 0.0
        bound = float(np.max(own_bounds[k])) if own_bounds[k].size else 0.0
        mask = claimed.get(k, np.zeros(lib[k].shape, dtype=bool))
        dtd_rule = plan_rule = choice.rule
        if choice.rule not in _POOLING:
            plan_rule = profile.rule(choice.rule).dtd_rule
            dtd_rule = dtd_plan[k].rule
        audits.append(LayerAudit(
            k, repr(network.layers[k]), choice.rule, library_rule, own_abs, own_rel, dtd_abs, dtd_rel,
            _absorbed(lib, k, f_c), _absorbed(own, k, f_c), _absorbed(dtd, k, f_c),
            _negatives(lib[k], own_bounds[k]), _negatives(dtd[k], dtd_bounds[k]),
            negatives_profile=_negatives(own[k], own_bounds[k]), bound=bound,
            bound_relative=bound / scale if scale > 0 else bound,
            own_over_bound=_over_bound(lib[k], own[k], own_bounds[k]),
            dtd_over_bound=_over_bound(lib[k], dtd[k], dtd_bounds[k]),
            domain=found.domain_of(plan_rule), outside_domain=int(mask.sum()),
            outside_relevance=_outside_relevance(lib[k], mask, f_c),
            generalisation=dtd_rule if dtd_rule != plan_rule else None,
            applied_outside_domain=bool(applied.get(k, np.zeros(1, dtype=bool)).any()),
            causes=list(causes.get(k, [])),
            conservation_bound=float(np.max(_conservation_bound(own_bounds, k, f_c)))))
    return audits


def _domain_lines(name: str, audits: list, where) -> tuple[list[str], bool]:
    """One line per layer (node) whose rule meets inputs outside its domain; True if the library
    evaluates a rule there outside the domain it is derived for (a failure)."""
    lines, failed = [], False
    for a in audits:
        if not a.outside_domain:
            continue
        domain = found.DOMAIN_TEXT.get(a.domain, a.domain)
        if a.applied_outside_domain:
            failed = True
            holds = (f"the generalisation that holds there, {a.generalisation}, from which {name} departs by "
                     f"relative {a.dtd_relative:.3g}" if a.generalisation else "no derived rule holds there")
            lines.append(f"rule {a.rule} applied outside its domain {domain} at {where(a)}: {a.outside_domain} "
                         f"inputs outside it carry {a.outside_relevance:.3g} f_c of {name}'s relevance; "
                         f"compared with {holds}")
        else:
            lines.append(f"note: rule {a.rule} is derived for {domain}, and at {where(a)} {a.outside_domain} inputs "
                         f"outside it carry {a.outside_relevance:.3g} f_c: {name} applies a rule defined there"
                         + (f", as the DTD reference's generalisation {a.generalisation} does" if a.generalisation
                            else ""))
    return lines, failed


def _cause_lines(audits: list, where) -> list[str]:
    lines = [f"cause at {where(a)}: {found.describe(a.causes)}" for a in audits if a.causes]
    return lines or ["cause: no term of the convention accounts for it at any layer (the relevance "
                     "arriving from above differs)"]


def _verdicts(name: str, profile: Profile, audits: list[LayerAudit]) -> tuple[list[str], list[str], bool]:
    """(lines, failures, whether the library departs from DTD anywhere)."""
    lines, failures = [], []
    by_top = sorted(audits, key=lambda a: -a.index)
    where = lambda a: f"layer {a.index} {a.layer}"  # noqa: E731
    deviating = [a for a in by_top if a.own_over_bound > 1]
    if not deviating:
        worst = max((a.own_relative for a in audits), default=0.0)
        lines.append(f"{name} agrees with its own convention ({profile.name}) at every layer: max relative "
                     f"deviation {worst:.1e}, within the bound")
    else:
        failures.append("deviates-from-convention")
        worst = max(deviating, key=lambda a: a.own_relative)
        nearest = deviating[0]
        start = ("" if nearest is worst else
                 f"; it starts at layer {nearest.index} (relative {nearest.own_relative:.3g})")
        lines.append(f"{name} deviates from its own convention ({profile.name}) most at layer {worst.index} "
                     f"{worst.layer} ({worst.library_rule}): relative deviation {worst.own_relative:.3g} of that "
                     f"layer's relevance (max abs {worst.own_deviation:.3g}, bound {worst.bound:.3g}){start}; "
                     f"layers above match")
    domain, outside = _domain_lines(name, by_top, where)
    lines += domain
    if outside:
        failures.append("outside-domain")
    at_input = next((a for a in audits if a.index == 0), None)
    departing = [a for a in by_top if a.dtd_over_bound > 1]
    if not departing:
        lines.append(f"{name} agrees with the DTD derivation at every layer (within the bound)")
    else:
        worst = max(departing, key=lambda a: a.dtd_relative)
        shown = at_input or worst
        lines.append(f"{name} departs from DTD by {shown.dtd_deviation:.3g} (relative {shown.dtd_relative:.3g}) "
                     f"at the input; most at layer {worst.index} {worst.layer} (relative {worst.dtd_relative:.3g})")
        lines += _cause_lines(by_top, where)
    # below the first deviating layer the upper relevance already differs: only the layers down
    # to that one can break conservation on their own
    lowest = deviating[0].index if deviating else -1
    broken = [a for a in by_top if a.index >= lowest and not np.isnan(a.absorbed_library)
              and abs(a.absorbed_library - a.absorbed_profile) > a.conservation_bound]
    if broken:
        failures.append("conservation")
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
    extra = [a for a in by_top if a.negatives_library > a.negatives_profile]
    if extra:
        failures.append("positivity")
        a = extra[0]
        lines.append(f"positivity: {a.negatives_library} negative relevances at the input of layer {a.index} "
                     f"{a.layer}, its convention has {a.negatives_profile}, DTD {a.negatives_dtd}")
    else:
        lines.append("positivity: no more negative relevances than its convention at any layer")
    return lines, failures, bool(departing)


def _notes(library: str, network, x: np.ndarray, run: LibraryRun, audits: list[LayerAudit]) -> list[str]:
    """Explanations of known causes next to the verdicts."""
    from lrp_num.layers import MaxPool2d

    notes = []
    model_output = network.forward(x)
    if run.output is not None:
        _, changed = _deviation(np.asarray(run.output, dtype=np.float64).reshape(model_output.shape), model_output)
        if changed > 1e-12:
            notes.append(f"note: {run.library} explains a model whose output differs from the given one by "
                         f"{changed:.2g} (relative){'; zennit SequentialMergeBatchNorm leaves x / sqrt(1 + eps_bn) per merged BatchNorm, which the profile reproduces' if library == 'zennit' else ''}")
    bad = [a for a in audits if a.own_over_bound > 1]
    if bad:
        first = max(bad, key=lambda a: a.own_relative)
        if isinstance(network.layers[first.index], MaxPool2d):
            notes.append(f"note: layer {first.index} is max pooling: {run.library} routes a window's relevance "
                         "to one maximum (torch's gradient); the profile gives tied maxima to the first "
                         "(maxpool_ties=\"first\"), so a deviation here is not an exact tie")
    return notes


def _targets(network, x: np.ndarray, target) -> np.ndarray:
    output = network.forward(np.asarray(x, dtype=np.float64))
    if target is None:
        return output.reshape(len(x), -1).argmax(axis=1)
    indices = np.broadcast_to(np.asarray(target, dtype=np.int64), (len(x),))
    if np.any(indices < 0) or np.any(indices >= output.reshape(len(x), -1).shape[1]):
        raise ShapeError(f"target out of range: {indices.tolist()}")
    return indices.copy()


DTYPES = ("float64", "float32")


def _check_dtype(dtype: object) -> str:
    if dtype not in DTYPES:
        raise KernelArgumentError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return str(dtype)


def run_library(library: str, network, x: np.ndarray, plan, targets: np.ndarray, input_domain=None,
                overrides: Mapping[int, Callable] | None = None, dtype: str = "float64") -> LibraryRun:
    """The library's own LRP on the torch twin of ``network``, computed in ``dtype``."""
    from lrp_num.io.torch_bridge import to_torch

    model = to_torch(network)
    if dtype == "float32":
        model = model.float()
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


def _run_dtype(run: LibraryRun) -> np.dtype:
    dtype = np.asarray(run.relevance).dtype
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def audit_library(network, x: np.ndarray, library: str, rule: str | None = None,
                  composite: str | Composite | None = None, target=None, *, parameters: Mapping | None = None,
                  input_domain=None, dps: int = 50, tolerance: float | None = None,
                  overrides: Mapping[int, Callable] | None = None, library_run: LibraryRun | None = None,
                  addition: str | None = None, dtype: str = "float64", strict: bool = False) -> AuditReport:
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
    tolerance : float, optional
        Relative deviation counted as equal, 0 <= tolerance < 1 (KernelArgumentError
        otherwise). By default the rounding bound of the dtype the library computed in
        (:mod:`lrp_num.audit.tolerance`), per layer.
    overrides : mapping, optional
        Folded layer index (graphs: node name) -> factory of a library rule object to use there
        (to test the audit).
    library_run : LibraryRun, optional
        A run recorded elsewhere, instead of running the library here (Sequential networks);
        its relevance's dtype sets the rounding bound.
    addition : {"functional", "zennit", "captum"}, optional
        Graphs: how the torch twin writes Add nodes (default: as the library's users do, the
        profile's ``addition``); ``"functional"`` is a plain ``+`` that no rule sees.
    dtype : {"float64", "float32"}
        The type the library computes in (its torch twin is converted to it).
    strict : bool
        Fail also where the library's convention departs from DTD.

    On a :class:`~lrp_num.engine.graph.Graph` the audit reports per node
    (:mod:`lrp_num.audit.graph_compare`): ``AuditReport.nodes`` instead of ``layers``.
    """
    dps = check_dps(dps)
    tolerance = None if tolerance is None else check_tolerance(tolerance)
    dtype = _check_dtype(dtype)
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
                                   parameters or {}, input_domain, dps, tolerance, overrides, addition,
                                   dtype=dtype, strict=strict)
    plan = layer_plan(network, rule, composite, dict(parameters or {}), input_domain is not None)
    _check_zbox(network, plan)
    own_plan, claimed_dtd_plan = mapped_plans(profile, plan)
    claimed = _outside_masks(network, x, claimed_dtd_plan, input_domain)
    applied = _outside_masks(network, x, own_plan, input_domain)
    dtd_plan = generalised_plan(claimed_dtd_plan, claimed)
    targets = _targets(network, x, target)
    seconds = {}
    start = time.perf_counter()
    lib_run = library_run or run_library(library, network, x, plan, targets, input_domain, overrides, dtype)
    seconds["library"] = time.perf_counter() - start
    run_dtype = _run_dtype(lib_run)
    top = top_relevance(network.forward(x), targets)  # f_c(x) of the model, as given to the library
    explained, explained_plan, index_of = profile.explained(network, own_plan)
    start = time.perf_counter()
    explained_own, own_results = reference_run(explained, x, explained_plan, top, profile.conventions,
                                               input_domain, dps)
    seconds["reference_profile"] = time.perf_counter() - start
    start = time.perf_counter()
    dtd, dtd_results = reference_run(network, x, dtd_plan, top, DTD, input_domain, dps)
    seconds["reference_dtd"] = time.perf_counter() - start
    batch = len(x)
    lib = _pass_through(network, {k: _flat(v, batch) for k, v in lib_run.layers.items()})
    f_c = explained_own[index_of[len(network.layers)]].sum(axis=1)
    model_error = profile.model_error if explained is not network else 0.0
    explained_bounds = layer_bounds(explained, own_results, run_dtype, tolerance, explained_own, model_error)
    # at our layers' inputs: a layer the library explains on its own (captum's batch norm) joins ours
    own = {k: explained_own[index_of[k]] for k in index_of}
    own_bounds = {k: explained_bounds[index_of[k]] for k in index_of}
    dtd_bounds = layer_bounds(network, dtd_results, run_dtype, tolerance, dtd)
    ours = _folded_index(index_of)
    causes = layer_causes(profile, own_plan, dtd_plan, own, dtd, own_results, dtd_results, f_c, claimed, own_bounds,
                          own_key=lambda trace: ours[trace.index])
    audits = _layer_audits(network, plan, profile, own_plan, dtd_plan, lib, own, dtd, f_c, own_bounds, dtd_bounds,
                           claimed, applied, causes)
    verdicts, failures, departs = _verdicts(lib_run.library, profile, audits)
    verdicts += _notes(library, network, x, lib_run, audits)
    method = f"rule {rule}" if rule else f"composite {composite if isinstance(composite, str) else composite.name}"
    inputs = {"x": x, "library": lib[0].reshape(x.shape), "reference": own[0].reshape(x.shape),
              "reference_name": profile.name}
    report = AuditReport(lib_run.library, profile.name, method, batch, audits, verdicts,
                         lib[0].sum(axis=1).tolist(), f_c.tolist(), seconds, True,
                         tolerance=bounded_tolerance(run_dtype, tolerance, model_error),
                         dtype=dtype_name(run_dtype),
                         strict=strict, departs_from_dtd=departs, inputs=inputs)
    pointers(report, audits, lambda a: a.index)
    return conclude(report, failures)


def _folded_index(index_of: Mapping[int, int]) -> dict[int, int]:
    """The library's layer index -> our folded layer index it belongs to, from ``index_of``
    (ours -> its, increasing): its layers from ours k up to ours k + 1 belong to k."""
    result = {}
    for k in sorted(index_of):
        for j in range(index_of[k], index_of.get(k + 1, index_of[k] + 1)):
            result[j] = k
    return result


def _dtd_profile(profile: Profile) -> Profile:
    """DTD as a profile (its rules the derivations ``profile`` maps ours to), for comparing a
    saved attribution's layers with the DTD reference when DTD is the closest convention."""
    import dataclasses

    rules = {name: dataclasses.replace(mapping, library_rule=mapping.dtd_rule, reference_rule=mapping.dtd_rule)
             for name, mapping in profile.rules.items()}
    return dataclasses.replace(profile, name="DTD", library="DTD", conventions=DTD, rules=rules)


def _localise(network, plan, closest: tuple, dtd_plan, dtd, dtd_bounds, claimed, given: np.ndarray,
              layers: Mapping[int, np.ndarray], f_c: np.ndarray) -> tuple[list[LayerAudit], list[str], list[str]]:
    """A saved attribution's per-layer relevance (``layers``: k >= 1 -> (batch, ...)) against the
    convention closest at the input (``closest``: profile, its plan, reference layers, bounds,
    masks of the inputs it evaluates outside a rule's domain, causes), with library mode's
    per-layer audits and verdicts. Returns (audits, lines, failures); whether a rule is applied
    outside its domain is decided at the input, by every convention the attribution matches."""
    profile, own_plan, own, bounds, applied, causes = closest
    batch = len(given)
    for k, value in layers.items():
        if not 1 <= k <= len(network.layers):
            raise ShapeError(f"per-layer relevance for layer {k}: the network has layers 1 to {len(network.layers)} "
                             "above the input")
        value = require_finite(np.asarray(value, dtype=np.float64), f"the relevance at layer {k}")
        if value.size != dtd[k].size:
            raise ShapeError(f"the relevance at layer {k} has {value.size} values; the layer's input has "
                             f"{dtd[k].size} for this batch")
    lib = _pass_through(network, {0: given, **{k: _flat(v, batch) for k, v in layers.items()}})
    audits = _layer_audits(network, plan, profile, own_plan, dtd_plan, lib, own, dtd, f_c, bounds, dtd_bounds,
                           claimed, applied, causes)
    lines, failures, _ = _verdicts("the saved relevance", profile, audits)
    failures = [kind for kind in failures if kind != "outside-domain"]
    return audits, [f"per layer (closest convention {profile.name}): {line}" for line in lines], failures


def audit_attribution(network, x: np.ndarray, attribution: np.ndarray, rule: str | None = None,
                      composite: str | Composite | None = None, target=None, *, library: str | None = None,
                      parameters: Mapping | None = None, input_domain=None, dps: int = 50,
                      tolerance: float | None = None, strict: bool = False,
                      profiles: list[Profile] | None = None,
                      layers: Mapping[int, np.ndarray] | None = None) -> AuditReport:
    """Audit a saved input relevance from any tool (nothing of that tool is imported).

    It is compared with the reference under DTD and under every profile offering the rules (or
    only ``library``'s), at the input: deviation, conservation sum_p R_p against f_c(x) and what
    each convention absorbs, and positivity. The verdict names the convention it matches; the
    rounding bound is that of the attribution's dtype (float32 or float64) unless ``tolerance``
    is given. ``dps`` (20 to 10000), ``tolerance`` and ``strict`` as in :func:`audit_library`.
    Where a rule meets inputs outside its domain, the DTD reference uses the generalisation that
    holds there, and a match only with a convention that evaluates a rule outside its domain
    fails ("outside-domain").
    ``profiles``: compare with these profiles only (e.g. one from
    :func:`lrp_num.audit.convention_file.load_convention`) instead of the built-in ones.
    ``layers``: the tool's relevance at the input of folded layers k >= 1 (as
    :func:`lrp_num.audit.layer_files.read_layer_relevance` reads them), compared layer by layer
    with the convention closest at the input (a profile or DTD), which localises a deviation as
    library mode does: a layer that deviates from it, breaks its conservation or adds negative
    relevance fails the audit.
    """
    if hasattr(network, "nodes"):
        raise UnsupportedLayerError("the audit of a saved attribution covers Sequential networks only; "
                                    "audit a graph model with --library zennit or captum")
    dps = check_dps(dps)
    tolerance = None if tolerance is None else check_tolerance(tolerance)
    x = np.asarray(x, dtype=np.float64)
    given_dtype = np.asarray(attribution).dtype
    given_dtype = given_dtype if np.issubdtype(given_dtype, np.floating) else np.dtype(np.float64)
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
    rows, lines, failures = [], [], []
    dtd = None
    claimed = None
    for profile in progress(candidates, "reference per convention"):
        try:
            own_plan, claimed_plan = mapped_plans(profile, plan)
        except LRPError:
            continue
        own, own_results = reference_run(network, x, own_plan, targets, profile.conventions, input_domain, dps)
        if dtd is None:
            claimed = _outside_masks(network, x, claimed_plan, input_domain)
            dtd_plan = generalised_plan(claimed_plan, claimed)
            dtd, dtd_results = reference_run(network, x, dtd_plan, targets, DTD, input_domain, dps)
            dtd_bounds = layer_bounds(network, dtd_results, given_dtype, tolerance, dtd)
        applied = _outside_masks(network, x, own_plan, input_domain)
        rows.append((profile, own_plan, own, own_results, applied))
    if dtd is None:
        raise LRPError("no profile offers these rules; nothing to compare with")
    f_c = dtd[len(network.layers)].sum(axis=1)
    scale = np.where(f_c != 0, np.abs(f_c), 1.0)
    dtd_abs, dtd_rel = _deviation(given, dtd[0])
    dtd_over = _over_bound(given, dtd[0], dtd_bounds[0])
    absorbed_given = (f_c - given.sum(axis=1)) / scale
    absorbed_dtd = (f_c - dtd[0].sum(axis=1)) / scale
    conservation_tol = dtd_bounds[0].sum(axis=1) / scale + 1e-12
    audits, matches, expected, negatives_allowed = [], [], [absorbed_dtd], [_negatives(dtd[0], dtd_bounds[0])]
    outside_matches, cause_lines, checked = [], {}, []
    for profile, own_plan, own, own_results, applied in rows:
        bounds = layer_bounds(network, own_results, given_dtype, tolerance, own)
        own_abs, own_rel = _deviation(given, own[0])
        absorbed_own = (f_c - own[0].sum(axis=1)) / scale
        expected.append(absorbed_own)
        conservation_tol = np.maximum(conservation_tol, bounds[0].sum(axis=1) / scale + 1e-12)
        negatives_allowed.append(_negatives(own[0], bounds[0]))
        mask = claimed.get(0, np.zeros(given.shape, dtype=bool))
        outside_applied = any(m.any() for m in applied.values())
        causes = layer_causes(profile, own_plan, dtd_plan, own, dtd, own_results, dtd_results, f_c, claimed, bounds)
        audit = LayerAudit(0, f"input, vs {profile.name}", rule or str(composite), profile.name, own_abs,
                           own_rel, dtd_abs, dtd_rel, _worst(absorbed_given), _worst(absorbed_own),
                           _worst(absorbed_dtd), _negatives(given, bounds[0]), _negatives(dtd[0], dtd_bounds[0]),
                           negatives_profile=_negatives(own[0], bounds[0]), bound=float(bounds[0].max()),
                           bound_relative=float(bounds[0].max() / max(np.abs(own[0]).max(), 1e-300)),
                           own_over_bound=_over_bound(given, own[0], bounds[0]), dtd_over_bound=dtd_over,
                           outside_domain=int(mask.sum()), outside_relevance=_outside_relevance(given, mask, f_c),
                           applied_outside_domain=outside_applied,
                           causes=[c for k in sorted(causes) for c in causes[k]],
                           conservation_bound=float(conservation_tol.max()))
        audits.append(audit)
        checked.append((profile, own_plan, own, bounds, applied, causes))
        if audit.own_over_bound <= 1:
            matches.append(profile.name)
            cause_lines[profile.name] = [f"{profile.name} departs from DTD: cause at layer {k} "
                                         f"{network.layers[k]!r}: {found.describe(c)}"
                                         for k, c in sorted(causes.items(), reverse=True) if c]
            if outside_applied:
                outside_matches.append(profile.name)
    if dtd_over <= 1:
        matches.append("DTD")
    if matches:
        lines.append(f"the attribution agrees with {', '.join(matches)} at the input (within the bound)")
        for name in matches:
            lines += cause_lines.get(name, [])
    else:
        failures.append("no-known-convention")
        best = min(audits, key=lambda a: a.own_relative)
        closest = (best.library_rule, best.own_relative) if best.own_relative < dtd_rel else ("DTD", dtd_rel)
        lines.append(f"the attribution matches no known convention at the input: closest {closest[0]} "
                     f"(relative deviation {closest[1]:.3g}); DTD deviation {dtd_abs:.3g}")
    outside_layers = {k: m for k, m in claimed.items() if m.any()}
    if outside_layers:
        k = min(outside_layers)
        what = (f"rule {plan[k].rule} meets {int(outside_layers[k].sum())} inputs outside its domain "
                f"{found.DOMAIN_TEXT[found.domain_of(claimed_plan[k].rule)]} at layer {k} {network.layers[k]!r}")
        if matches and len(outside_matches) == len(matches):
            failures.append("outside-domain")
            lines.append(f"{what}: the attribution agrees only with {', '.join(outside_matches)}, which evaluates the "
                         f"rule outside the domain it is derived for")
        else:
            lines.append(f"note: {what}; the DTD reference uses the generalisation {dtd_plan[k].rule} there")
    # per sample: the absorbed fraction must equal what one of the conventions absorbs
    gaps = np.min(np.abs(np.stack(expected) - absorbed_given[None]), axis=0)
    if np.any(gaps > conservation_tol):
        failures.append("conservation")
        s = int(np.argmax(gaps - conservation_tol))
        lines.append(f"conservation broken at the input (sample {s}): sum R = {given[s].sum():.6g}, f_c = {f_c[s]:.6g}; "
                     f"absorbs {absorbed_given[s]:+.3g} f_c where the conventions absorb "
                     f"{', '.join(f'{e[s]:+.3g}' for e in expected)}")
    else:
        lines.append(f"conservation at the input as a known convention implies (absorbs up to "
                     f"{_worst(absorbed_given):+.3g} f_c)")
    negatives = audits[0].negatives_library if audits else 0
    if negatives > max(negatives_allowed):
        failures.append("positivity")
    lines.append(f"positivity: {negatives} negative input relevances (conventions: "
                 f"{', '.join(str(n) for n in negatives_allowed[1:])}; DTD: {negatives_allowed[0]})")
    dtd_row = (_dtd_profile(checked[0][0]), dtd_plan, dtd, dtd_bounds, {}, {})
    closest = min(checked + [dtd_row], key=lambda row: _deviation(given, row[2][0])[1])
    layer_audits = []
    if layers:
        layer_audits, layer_lines, layer_failures = _localise(network, plan, closest, dtd_plan, dtd, dtd_bounds,
                                                              claimed, given, layers, f_c)
        audits += layer_audits
        lines += layer_lines
        failures += layer_failures
    method = f"rule {rule}" if rule else f"composite {composite}"
    inputs = {"x": x, "library": given.reshape(x.shape), "reference": closest[2][0].reshape(x.shape),
              "reference_name": closest[0].name}
    report = AuditReport("saved attribution", ", ".join(p.name for p, *_ in rows), method, batch, audits, lines,
                         given.sum(axis=1).tolist(), f_c.tolist(), {}, True,
                         tolerance=bounded_tolerance(given_dtype, tolerance), dtype=dtype_name(given_dtype),
                         strict=strict, departs_from_dtd=dtd_over > 1, matched=list(matches), inputs=inputs)
    pointers(report, layer_audits, lambda a: a.index)
    return conclude(report, failures)
