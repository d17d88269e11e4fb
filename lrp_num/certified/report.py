"""The certified rows of ``lrp verify --certified``: proved bounds per rule and node.

For one rule or composite on a batch, :func:`certify_row` runs the engine (keeping every node's
relevance), the certified enclosures (:func:`~lrp_num.certified.network.explain_balls`) and
states per node "every engine value lies within k ulps of the exact result"
(:mod:`~lrp_num.certified.bounds`). Its required check: at every input value the proved error
|engine - exact| is at most the rounding bound that ``lrp verify`` states there
(:func:`lrp_num.verify.rounding_bound`); values that depend on an undecided neuron are counted,
not guessed.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Sequence

import numpy as np

from lrp_num.certified.bounds import node_bounds, proved_errors
from lrp_num.certified.network import explain_balls


def certify_row(row, network, x: np.ndarray, method: dict[str, str], targets, input_domain, dps: int,
                conventions, stated_bounds: Sequence[np.ndarray | None]) -> None:
    """Add the certified measurements and the required "certified" check to a verify row.

    ``stated_bounds``: per sample, the rounding bound verify states for the input relevance, or
    None for a sample with a near-tie max-pool window (excluded as from the agreement check).
    """
    from lrp_num.engine.explain import explain_details
    from lrp_num.verify import Check

    explanation = explain_details(network, x, target=targets, conventions=conventions, input_domain=input_domain,
                                  diagnostics=False, keep_layers=True, **method)
    start = time.perf_counter()
    results = explain_balls(network, x, target=targets, dps=dps, conventions=conventions,
                            input_domain=input_domain, **method)
    row.time_certified = (time.perf_counter() - start) / len(x)
    input_name = results[0].input_name
    engine_at: list[dict[str, np.ndarray]] = []
    for k in range(len(x)):
        at = {layer.name: np.asarray(layer.relevance_above[k]).ravel() for layer in explanation.layers
              if layer.relevance_above is not None and layer.name is not None}
        at[input_name] = np.asarray(explanation.relevance[k]).ravel()
        engine_at.append(at)
    rules = {name: record.rule for name, record in results[0].records.items()}
    rules[input_name] = "input"
    bounds = node_bounds(results, engine_at, rules)
    worst, uncertified = 0.0, 0
    near_ties = sum(bound is None for bound in stated_bounds)
    for k, result in enumerate(results):
        if stated_bounds[k] is None:  # float64 may pick another max-pool winner: no rounding bound stated
            continue
        errors = proved_errors(engine_at[k][input_name], result.relevance, result.bits)
        finite = np.isfinite(errors)
        uncertified += int((~finite).sum())
        if finite.any():
            worst = max(worst, float((errors[finite] / np.asarray(stated_bounds[k])[finite]).max()))
    undecided = sum(b.undecided_neurons for b in bounds)
    row.certified = [asdict(b) for b in bounds]
    row.certified_over_bound = worst
    at_input = bounds[-1] if bounds and bounds[-1].node == input_name else None
    detail = (f"proved |engine - exact| over the stated rounding bound = {worst:.3g} (must be <= 1)"
              + (f"; every input relevance within {at_input.ulps:.3g} ulps of the exact result, "
                 f"radius / max|R| <= {at_input.relative_radius:.2g}" if at_input else "")
              + f"; {undecided} undecided neuron(s), {uncertified} input value(s) not certified"
              + (f"; {near_ties} sample(s) with a near-tie max-pool window excluded" if near_ties else ""))
    row.checks.append(Check("certified", worst <= 1.0, True, detail))


def format_certified(report) -> list[str]:
    """Lines of the proved bounds per rule and node, for the plain-text table."""
    lines: list[str] = []
    for row in report.rows:
        if not getattr(row, "certified", None):
            continue
        if not lines:
            lines += ["", "certified (ball arithmetic, python-flint arb): per rule and node, every engine value "
                      "lies within k ulps (of max |R| there) of the exact result",
                      "(the relevance arriving at each node's output, and the input relevance)",
                      f"{'rule / composite':<20} {'node (output)':<16} {'rule':<12} {'k ulps':>9} {'rad/max|R|':>10} "
                      f"{'undecided':>9} {'uncert.':>7}"]
        for bound in row.certified:
            lines.append(f"{row.name:<20} {bound['node']:<16} {bound['rule']:<12} {bound['ulps']:>9.3g} "
                         f"{bound['relative_radius']:>10.2g} {bound['undecided_neurons']:>9d} "
                         f"{bound['uncertified']:>7d}")
    if lines:
        lines.append("undecided: neurons whose ReLU, max-pool winner or denominator sign the enclosure cannot "
                     "decide (counted, not guessed); uncert.: values that depend on one (no bound claimed)")
    return lines


__all__ = ["certify_row", "format_certified"]
