"""Rendering an :class:`~lrp_num.audit.compare.AuditReport`: a terminal table, JSON, Markdown."""

from __future__ import annotations

import json

from lrp_num.audit.compare import AuditReport

_COLUMNS = ("layer", "rule", "own dev (rel)", "bound (rel)", "DTD dev (rel)", "absorbed lib", "absorbed own",
            "absorbed DTD", "neg lib/DTD", "outside domain")


def _outside(a) -> str:
    return f"{a.outside_domain} ({a.outside_relevance:.2g} f_c)" if a.outside_domain else ""


def _row(a) -> tuple[str, ...]:
    return (f"{a.index:2d} {a.layer}", a.rule, f"{a.own_deviation:.2e} ({a.own_relative:.1e})",
            f"{a.bound:.1e} ({a.bound_relative:.1e})",
            f"{a.dtd_deviation:.2e} ({a.dtd_relative:.1e})", f"{a.absorbed_library:+.3g}",
            f"{a.absorbed_profile:+.3g}", f"{a.absorbed_dtd:+.3g}", f"{a.negatives_library}/{a.negatives_dtd}",
            _outside(a))


def _header(report: AuditReport) -> str:
    return (f"audit of {report.library} against profile {report.profile} and DTD: {report.method}, "
            f"{report.n_samples} sample(s), {report.dtype}; equal within {report.tolerance}")


_NODE_COLUMNS = ("node", "rule", "own dev (rel)", "bound (rel)", "DTD dev (rel)", "addends/R lib", "addends/R own",
                 "addends/R DTD", "outside domain")


def _ratio(value) -> str:
    return "" if value is None else f"{value:.6g}"


def _node_row(a) -> tuple[str, ...]:
    return (a.node, a.rule or "", f"{a.own_deviation:.2e} ({a.own_relative:.1e})",
            f"{a.bound:.1e} ({a.bound_relative:.1e})",
            f"{a.dtd_deviation:.2e} ({a.dtd_relative:.1e})", _ratio(a.addend_sum_library),
            _ratio(a.addend_sum_profile), _ratio(a.addend_sum_dtd), _outside(a))


def _columns(report: AuditReport) -> tuple[tuple[str, ...], list[tuple[str, ...]], str]:
    """(header, rows, legend): per node for a graph, per layer otherwise."""
    if report.nodes:
        return (_NODE_COLUMNS, [_node_row(a) for a in report.nodes],
                "deviations: max |R_lib - R_ref| (relative to max |R_ref|) of the relevance arriving at the "
                "node's output; addends/R: sum_k R_k / R at an Add node")
    return (_COLUMNS, [_row(a) for a in report.layers],
            "deviations: max |R_lib - R_ref| (relative to max |R_ref|) at the layer's input; bound: the "
            "largest deviation counted as equal there; absorbed: (sum R_out - sum R_in) / f_c; outside "
            "domain: inputs outside the claimed rule's domain (the |relevance| they carry)")


def render_table(report: AuditReport) -> str:
    """Fixed-width table, one row per audited layer or graph node (input side first), then the verdicts."""
    columns, body, legend = _columns(report)
    rows = [columns] + body
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    lines = [_header(report), ""]
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    lines += ["", legend]
    lines += [""] + [f"- {verdict}" for verdict in report.verdicts]
    if report.seconds:
        lines.append("timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in report.seconds.items()))
    return "\n".join(lines)


def render_markdown(report: AuditReport) -> str:
    """A Markdown section with the same table and the verdicts as a list."""
    columns, body, _ = _columns(report)
    lines = [f"### {_header(report)}", "", "| " + " | ".join(columns) + " |",
             "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
    lines += [""] + [f"- {verdict}" for verdict in report.verdicts]
    return "\n".join(lines) + "\n"


def render_json(report: AuditReport) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=True, allow_nan=True)
