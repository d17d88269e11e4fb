"""Rendering an :class:`~lrp_num.audit.compare.AuditReport`: a terminal table, JSON, Markdown."""

from __future__ import annotations

import json

from lrp_num.audit.compare import AuditReport

_COLUMNS = ("layer", "rule", "own dev (rel)", "DTD dev (rel)", "absorbed lib", "absorbed own",
            "absorbed DTD", "neg lib/DTD")


def _row(a) -> tuple[str, ...]:
    return (f"{a.index:2d} {a.layer}", a.rule, f"{a.own_deviation:.2e} ({a.own_relative:.1e})",
            f"{a.dtd_deviation:.2e} ({a.dtd_relative:.1e})", f"{a.absorbed_library:+.3g}",
            f"{a.absorbed_profile:+.3g}", f"{a.absorbed_dtd:+.3g}", f"{a.negatives_library}/{a.negatives_dtd}")


def _header(report: AuditReport) -> str:
    return (f"audit of {report.library} against profile {report.profile} and DTD: {report.method}, "
            f"{report.n_samples} sample(s)")


def render_table(report: AuditReport) -> str:
    """Fixed-width table, one row per audited layer (input side first), then the verdicts."""
    rows = [_COLUMNS] + [_row(a) for a in report.layers]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    lines = [_header(report), ""]
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * width for width in widths))
    lines += ["", "deviations: max |R_lib - R_ref| (relative to max |R_ref|) at the layer's input; "
              "absorbed: (sum R_out - sum R_in) / f_c"]
    lines += [""] + [f"- {verdict}" for verdict in report.verdicts]
    if report.seconds:
        lines.append("timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in report.seconds.items()))
    return "\n".join(lines)


def render_markdown(report: AuditReport) -> str:
    """A Markdown section with the same table and the verdicts as a list."""
    lines = [f"### {_header(report)}", "", "| " + " | ".join(_COLUMNS) + " |",
             "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in _row(a)) + " |" for a in report.layers]
    lines += [""] + [f"- {verdict}" for verdict in report.verdicts]
    return "\n".join(lines) + "\n"


def render_json(report: AuditReport) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=True, allow_nan=True)
