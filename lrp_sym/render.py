"""Plain-text and LaTeX rendering of a derivation for the terminal."""

from __future__ import annotations

from sympy import Basic, latex

from lrp_sym.derivation import Derivation


def render_expression(value: object, latex_output: bool = False) -> str:
    """A SymPy expression as one-line text or LaTeX; strings pass through."""
    if not isinstance(value, Basic):
        return str(value)
    return latex(value) if latex_output else str(value)


def render_text(derivation: Derivation, latex: bool = False) -> str:
    """The derivation as readable lines: header, each row, each proof with its status."""
    lines = [f"== {derivation.name}: {derivation.title}", f"   paper:  {derivation.paper}"]
    if derivation.domain is not None:
        lines.append(f"   domain: {derivation.domain.name}")
    if derivation.parameters:
        parameters = ", ".join(f"{p} (default {derivation.defaults.get(p, '-')})"
                               for p in derivation.parameters)
        lines.append(f"   parameters: {parameters}")
    for label, value in derivation.rows:
        lines.append(f"   {label}:")
        lines.append(f"       {render_expression(value, latex)}")
    lines.append("   proofs:")
    for proof in derivation.proofs:
        mark = "" if proof.as_expected else f"  <-- expected {proof.expected.value}"
        lines.append(f"     [{proof.status.value:9s}] {proof.statement}{mark}")
        if proof.method:
            lines.append(f"                 {proof.method}")
        if proof.counterexample:
            witness = ", ".join(f"{k} = {v}" for k, v in proof.counterexample.items())
            lines.append(f"                 counterexample: {witness}")
    return "\n".join(lines)
