"""Rendering a derivation as a Markdown page with LaTeX math that GitHub displays.

One page per derivation (``docs/rules/<rule>.md``): title, paper, domain, every derivation row
(search direction, step t*, root point, R_ij, q_ij, domain condition ...), the propagation rule
as the generator reads it, each proof's status, method and counterexample, and the signature of
the generated kernel. Plus an index page. Math is ``$...$`` inline and ``$$...$$`` in display,
printed by ``sympy.latex``; the output depends only on the derivation (no timestamps).
"""

from __future__ import annotations

from sympy import Basic, Expr, S, latex, sympify

from lrp_sym.derivation import Derivation
from lrp_sym.proofs import Proof
from lrp_sym.sums import over_inputs
from lrp_sym.symbols import R, j

_LAYER_SIGNATURES = {
    "batchnorm_fold": "fold_batchnorm(weight, bias, gamma, beta, mean, var, eps) -> (weight, bias)",
    "maxpool": "relevance(pool, x, relevance_out) -> numpy.ndarray",
    "affine_channel": "affine_from_batchnorm(gamma, beta, mean, var, eps) -> (scale, shift)",
    "softmax": "relevance(x, relevance_out, *, axis=-1) -> array  # and softmax(x, axis)",
    "product_uniform": "relevance(a, b, relevance_out) -> (array, array)",
    "matmul_epsilon": "relevance(a, b, relevance_out, *, epsilon=1e-06, transpose_b=False) -> (array, array)",
    "matmul_cp": "relevance(a, b, relevance_out, *, epsilon=1e-06, transpose_b=False) -> (array, array)  "
                 "# HELD: the factor held constant",
}
#: the kernel signature of the rules of one node type, by the neuron they are derived for
_NODE_RULE_SIGNATURES = {
    "pointwise": "relevance(op, x, relevance_out) -> array  # op.activation: gelu, gelu_tanh, "
                 "silu, tanh, sigmoid",
    "norm": "relevance(op, x, relevance_out, eps=0.0, stabilise='zero') -> array  # op.norm: "
            "layernorm, rmsnorm",
}
_STATUS_MARK = {"proved": "proved", "checked": "checked", "refuted": "refuted",
                "assumed": "assumed", "undecided": "undecided"}


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("*", "\\*").replace("\n", " ")


def display_math(expr: Expr | str) -> str:
    """A ``$$...$$`` block (blank-line separated) for an expression, or plain text for a str."""
    if isinstance(expr, str):
        return f"`{expr}`"
    return f"$$\n{latex(sympify(expr))}\n$$"


def rule_expression(derivation: Derivation) -> Expr:
    """R_ij = sum_k a_k q^(k)_ij / (sum_i q^(k)_ij + s_k [+ eps]) R_j, as one expression."""
    stabiliser = sympify(derivation.stabiliser)
    total = S.Zero
    for term in derivation.terms:
        q = sympify(term.q)
        total += sympify(term.coefficient) * q / (over_inputs(q) + sympify(term.bias_share)
                                                  + stabiliser)
    return total * R[j]


def _separated_latex(q: Expr) -> str:
    from lrp_sym.codegen.separation import separate
    names = {"identity": "w_{ij}", "positive": "w_{ij}^{+}", "negative": "w_{ij}^{-}",
             "square": "w_{ij}^{2}", "ones": "1"}
    parts = []
    for part in separate(q):
        factor = latex(part.factor)
        if part.transform == "ones":
            parts.append(factor)
        elif part.factor == 1:
            parts.append(names[part.transform])
        elif part.factor.is_Add:
            parts.append(f"\\left({factor}\\right) {names[part.transform]}")
        else:
            parts.append(f"{factor} {names[part.transform]}")
    return " + ".join(parts) if parts else "0"


def _proof_rows(proofs: list[Proof]) -> list[str]:
    lines = ["| proof | statement | status | expected | method |", "|---|---|---|---|---|"]
    for proof in proofs:
        mark = _STATUS_MARK[proof.status.value] + ("" if proof.as_expected else " (unexpected)")
        lines.append(f"| `{proof.name}` | {_cell(proof.statement)} | {mark} | "
                     f"{proof.expected.value} | {_cell(_method(proof))} |")
    examples = [p for p in proofs if p.counterexample]
    if examples:
        lines += ["", "Counterexamples (values of the symbols, 6 digits):", ""]
        for proof in examples:
            # keys stay text: sympifying them would turn "Q" into SymPy's assumption object
            values = ", ".join(f"`{key} = {value}`" for key, value in proof.counterexample.items())
            lines.append(f"- `{proof.name}`: {values}")
    return lines


def _method(proof: Proof) -> str:
    """The proof's method, with its sampling (samples, seed, digits) where the method omits it."""
    if proof.sampling is not None and "seed" not in proof.method:
        return f"{proof.method} ({proof.sampling.describe()})"
    return proof.method


def kernel_section(derivation: Derivation, module: str | None,
                   served_by: str | None = None) -> list[str]:
    """The 'Generated kernel' section: module, signature, separated q."""
    if module is None:
        note = (f"None of its own: on this layer's operator the rule is computed by the "
                f"[`{served_by}`]({served_by}.md) kernel." if served_by else
                "None: this analysis yields no kernel of its own (documentation only).")
        return ["## Generated kernel", "", note]
    if module in _LAYER_SIGNATURES:
        signature = _LAYER_SIGNATURES[module]
    elif derivation.neuron in _NODE_RULE_SIGNATURES:
        return ["## Generated kernel", "", f"`lrp_num/_generated/{module}.py`:", "", "```python",
                _NODE_RULE_SIGNATURES[derivation.neuron], "```"]
    else:
        from lrp_sym.codegen.ratio_kernel import kernel_signature
        signature = kernel_signature(derivation) + " -> numpy.ndarray"
    lines = ["## Generated kernel", "", f"`lrp_num/_generated/{module}.py`:", "", "```python",
             signature, "```"]
    if module not in _LAYER_SIGNATURES:
        lines += ["", "Each $q$ separated into input factors times weight transforms "
                  "($w^{+} = \\max(0, w)$, $w^{-} = \\min(0, w)$), one matrix product each:", ""]
        for k, term in enumerate(derivation.terms, 1):
            lines += [f"$$\nq^{{({k})}}_{{ij}} = {_separated_latex(sympify(term.q))}\n$$", ""]
        lines += ["Denominators: `stabilise=\"zero\"` (default) replaces only $d = 0$ by "
                  "$+\\varepsilon$; `stabilise=\"everywhere\"` uses "
                  "$d + \\varepsilon\\,\\mathrm{sign}(d)$ with $\\mathrm{sign}(0) = +1$. "
                  "With `eps=0` a zero denominator raises `ZeroDenominatorError` where the upper "
                  "relevance is non-zero."]
    from lrp_sym.codegen.root_point_condition import condition_signature, has_root_point_condition
    if module not in _LAYER_SIGNATURES and has_root_point_condition(derivation):
        lines += ["", "Root-point diagnostic: the derived domain condition per output neuron "
                  "(`inside`), and whether the rule applies, $z_j > 0$ and "
                  "$\\sum_i q_{ij} > 0$ (`active`):", "", "```python",
                  condition_signature(derivation) + " -> tuple[numpy.ndarray, numpy.ndarray]",
                  "```"]
    return lines


#: Derivation.z_sign -> the neurons a rule is derived for, in words
_NEURON_SIGNS = {"positive": "z_j > 0", "negative": "z_j < 0", "any": "z_j of either sign"}


def render_rule_page(derivation: Derivation, source: str, module: str | None,
                     header: str = "", served_by: str | None = None) -> str:
    """The Markdown page of one derivation."""
    domain = f"${derivation.domain.latex}$ ({derivation.domain.name})" if derivation.domain \
        else "-"
    lines = [header.rstrip("\n"), f"# {derivation.title}", "",
             "| | |", "|---|---|",
             f"| rule | `{derivation.name}` |",
             f"| paper | {_cell(derivation.paper)} |",
             f"| domain | {domain} |",
             f"| derivation file | `{source}` |"]
    if derivation.terms:
        lines.append(f"| derived for neurons with | {_NEURON_SIGNS[derivation.z_sign]} |")
    if derivation.parameters:
        defaults = ", ".join(f"${latex(p)} = {float(derivation.defaults.get(p, float('nan')))!r}$"
                             for p in derivation.parameters)
        lines.append(f"| parameters (defaults) | {defaults} |")
    for note in derivation.notes:
        lines += ["", note]
    lines += ["", "## Derivation", ""]
    for label, value in derivation.rows:
        lines += [f"**{_cell(label)}**", "", display_math(value), ""]
    if derivation.terms:
        lines += ["## Propagation rule", "",
                  "For an active neuron $j$ the generated kernel computes", "",
                  f"$$\nR_i = \\sum_j {latex(rule_expression(derivation))}\n$$", ""]
    if derivation.proofs:
        lines += ["## Proofs", "", *_proof_rows(derivation.proofs), ""]
    lines += kernel_section(derivation, module, served_by)
    return "\n".join(lines) + "\n"


def render_index(pages: list[tuple[Derivation, str, str | None]], header: str = "") -> str:
    """The index ``docs/rules/README.md``: one row per derivation."""
    lines = [header.rstrip("\n"), "# Rules and layer analyses", "",
             "Each page is generated from a file in `derivations/` by `lrp regenerate`.", "",
             "Proof statuses: `proved` (a symbolic argument, valid for any number n of inputs "
             "and symbolic parameters), `checked` (no counterexample on random layers; the "
             "samples, seed and digits are given), `refuted` (with a counterexample), `assumed` "
             "(taken from the literature, not checked), `undecided`. `lrp derive RULE --proof "
             "NAME` prints a proof's argument step by step.", "",
             "| rule | title | domain | proofs as expected | kernel |", "|---|---|---|---|---|"]
    for derivation, _source, module in sorted(pages, key=lambda page: page[0].name):
        expected = sum(p.as_expected for p in derivation.proofs)
        domain = f"${derivation.domain.latex}$" if derivation.domain else "-"
        kernel = f"`{module}.py`" if module else "-"
        lines.append(f"| [`{derivation.name}`]({derivation.name}.md) | {_cell(derivation.title)} "
                     f"| {domain} | {expected}/{len(derivation.proofs)} | {kernel} |")
    return "\n".join(lines) + "\n"


# -- plain text for the terminal (lrp derive) ---------------------------------------------

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
    if derivation.terms:
        lines.append(f"   derived for neurons with: {_NEURON_SIGNS[derivation.z_sign]}")
    if derivation.parameters:
        parameters = ", ".join(f"{p} (default {derivation.defaults.get(p, '-')})"
                               for p in derivation.parameters)
        lines.append(f"   parameters: {parameters}")
    for note in derivation.notes:
        lines.append(f"   note: {note}")
    for label, value in derivation.rows:
        lines.append(f"   {label}:")
        lines.append(f"       {render_expression(value, latex)}")
    lines.append("   proofs:")
    for proof in derivation.proofs:
        mark = "" if proof.as_expected else f"  <-- expected {proof.expected.value}"
        lines.append(f"     [{proof.status.value:9s}] {proof.statement}{mark}")
        if proof.method:
            lines.append(f"                 {_method(proof)}")
        if proof.counterexample:
            witness = ", ".join(f"{k} = {v}" for k, v in proof.counterexample.items())
            lines.append(f"                 counterexample: {witness}")
    return "\n".join(lines)
