"""``lrp audit --library lxt``: where LXT's relevance leaks in a vision transformer, op by op.

For every op of the model (:class:`~lrp_num.io.torch_vit.ViT`) the LXT run
(:func:`~lrp_num.audit.lxt_adapter.run_lxt`) gives the relevance at the op's output and what the
op passes to each data input. What an op absorbs is A = sum R_out - sum_k sum R_in,k (per
sample); relative to |f_c(x)| it is the op's leak. The profile of the variant
(:data:`lrp_num.audit.profiles.LXT_PROFILES`) says which ops conserve by their rule and which
absorb (a bias, LayerNorm's shift, the softmax's bias term of AttnLRP Prop. 3.1).

Checks:

* the bookkeeping closes: sum_i R_i(input) + sum over ops of A = f_c(x) (relative to |f_c|, within
  ``tolerance``): what the recording misses would show here;
* LXT leaves the forward pass alone: its logits equal the plain model's;
* no op whose rule conserves absorbs more than ``tolerance`` |f_c(x)|.

The report names every op that leaks beyond ``tolerance`` and, per kind (softmax, matmul,
layer_norm, ...), the op that leaks most.

Against the mpmath reference (:mod:`lrp_num.audit.lxt_reference`, ``reference=True``): LXT's
relevance at every tensor (the input, each softmax, product, norm, GELU and linear op's input)
against the reference's on the model's graph twin, under the composite the profile names with
LXT's conventions restated, within the rounding bound of the dtype LXT ran in; the first tensor
from the output down that deviates is a finding ("deviates-from-reference"). With ``strict`` the
reference also runs as derived, without LXT's conventions, and a departure there is a finding
too ("departs-from-derivation").

Exit status 0 when every check holds ("verdict: matches"), 1 when one fails ("verdict: fails").
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from lrp_num.audit.lxt_adapter import LXTRun, run_lxt
from lrp_num.audit.lxt_reference import ReferenceComparison, compare_with_reference, render_comparison
from lrp_num.audit.profiles import LXT_PROFILES, TransformerProfile
from lrp_num.errors import UnknownRuleError

#: relative leak (of |f_c(x)|) counted as a leak by default: above LXT's stabilisers (1e-6, 1e-8)
DEFAULT_TOLERANCE = 1e-4


@dataclass
class OpAudit:
    """One op: its largest leak over the samples, relative to |f_c(x)|, and what its rule says."""

    name: str
    kind: str
    inputs: list[str]
    absorbed: list[float]
    relative: float
    conserves: bool
    expected: str
    leaks: bool
    unexpected: bool


@dataclass
class LXTAudit:
    """The audit of one LXT variant on a batch."""

    library: str
    variant: str
    paper: str
    tolerance: float
    f_c: list[float]
    input_sum: list[float]
    closure: float
    forward_deviation: float
    ops: list[OpAudit] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    #: LXT against the reference with its conventions (None: not run)
    reference: ReferenceComparison | None = None
    #: with ``strict``: against our derivation as it stands
    derivation: ReferenceComparison | None = None

    @property
    def leaking(self) -> list[OpAudit]:
        return [op for op in self.ops if op.leaks]

    def worst_by_kind(self) -> dict[str, OpAudit]:
        worst: dict[str, OpAudit] = {}
        for op in self.leaking:
            if op.kind not in worst or op.relative > worst[op.kind].relative:
                worst[op.kind] = op
        return worst

    @property
    def exit_status(self) -> int:
        return 1 if self.findings else 0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["worst_by_kind"] = {kind: op.name for kind, op in self.worst_by_kind().items()}
        data["verdict"] = "fails" if self.findings else "matches"
        data["exit_status"] = self.exit_status
        for key in ("reference", "derivation"):
            value = getattr(self, key)
            data[key] = None if value is None else value.to_dict()
        return data


def lxt_profile(variant: str) -> TransformerProfile:
    try:
        return LXT_PROFILES[variant]
    except KeyError:
        raise UnknownRuleError(f"LXT 2.1 has no variant {variant!r}; --rule takes one of "
                               f"{', '.join(LXT_PROFILES)}") from None


def audit_lxt(model, x: np.ndarray, targets: np.ndarray | None = None, variant: str = "attnlrp",
              tolerance: float = DEFAULT_TOLERANCE, reference: bool = True, strict: bool = False,
              dps: int = 30) -> LXTAudit:
    """Run LXT's ``variant`` on the torch ViT ``model`` and audit every op (see the module docstring).

    ``targets`` default to the model's predictions; ``reference``: compare with the mpmath
    reference at ``dps`` digits (node by node); ``strict``: also against our derivation without
    LXT's conventions.
    """
    import torch

    profile = lxt_profile(variant)
    x = np.asarray(x)
    with torch.no_grad():
        plain = model(torch.tensor(x, dtype=next(model.parameters()).dtype)).double().numpy()
    targets = plain.argmax(axis=1) if targets is None else np.asarray(targets, dtype=np.int64)
    run: LXTRun = run_lxt(model, x, targets, variant)
    f_c = run.top.sum(axis=1)
    scale = np.maximum(np.abs(f_c), np.finfo(float).tiny)
    input_sum = run.relevance.reshape(len(x), -1).sum(axis=1)
    ops, total_absorbed = [], np.zeros(len(x))
    for record in run.ops:
        absorbed = record.absorbed()
        total_absorbed += absorbed
        relative = float(np.max(np.abs(absorbed) / scale))
        rule = profile.ops[record.kind]
        leaks = relative > tolerance
        ops.append(OpAudit(record.name, record.kind, record.inputs, [float(a) for a in absorbed], relative,
                           rule.conserves, rule.absorbed or "nothing", leaks, leaks and rule.conserves))
    closure = float(np.max(np.abs(input_sum + total_absorbed - f_c) / scale))
    forward = float(np.max(np.abs(run.logits - plain)) / max(np.max(np.abs(plain)), np.finfo(float).tiny))
    audit = LXTAudit(run.library, variant, profile.paper, tolerance, [float(v) for v in f_c],
                     [float(v) for v in input_sum], closure, forward, ops)
    if closure > tolerance:
        audit.findings.append(f"the recorded relevance does not add up: input + absorbed differs from f_c(x) "
                              f"by {closure:.2e} |f_c|")
    if forward > tolerance:
        audit.findings.append(f"{run.library} {variant} changes the forward pass: logits differ by {forward:.2e}")
    for op in ops:
        if op.unexpected:
            audit.findings.append(f"{op.name} ({op.kind}) absorbs {op.relative:.2e} |f_c| although its rule "
                                  f"conserves relevance")
    if reference or strict:
        dtype = np.dtype(str(next(model.parameters()).dtype).replace("torch.", ""))
        audit.reference = compare_with_reference(model, x, run, run.top, profile, dtype, dps)
        if strict:
            audit.derivation = compare_with_reference(model, x, run, run.top, profile, dtype, dps, conventions=False)
        for label, comparison in (("deviates-from-reference", audit.reference),
                                  ("departs-from-derivation", audit.derivation)):
            first = None if comparison is None else comparison.first_deviating
            if first is not None:
                audit.findings.append(deviation_finding(label, f"{run.library} {variant}", first))
    return audit


def deviation_finding(label: str, who: str, first) -> str:
    """The finding for the first tensor where ``who`` deviates from the reference (``first``, a
    row of a :class:`ReferenceComparison`): where, by how much, and which op produced it."""
    return (f"{label}: {who} first deviates at {first.graph_tensor} (relative {first.relative:.2e}, "
            f"{first.over_bound:.3g} x the bound), produced by {', '.join(first.rule_of) or 'the output'}")


def render_table(audit: LXTAudit) -> str:
    """A plain-text report: the ops that leak, the worst per kind, the checks, the verdict."""
    lines = [f"audit of {audit.library} {audit.variant} ({audit.paper})",
             f"tolerance {audit.tolerance:.1e} |f_c(x)|; per sample f_c(x) = "
             + ", ".join(f"{v:.6g}" for v in audit.f_c) + "; sum R(input) = "
             + ", ".join(f"{v:.6g}" for v in audit.input_sum),
             "", f"{'op':32s} {'kind':10s} {'max |absorbed| / |f_c|':>24s}  rule conserves  absorbed by the rule"]
    for op in audit.ops:
        if op.leaks:
            lines.append(f"{op.name:32s} {op.kind:10s} {op.relative:24.3e}  {'yes' if op.conserves else 'no ':14s} "
                         f"{op.expected}")
    quiet = len(audit.ops) - len(audit.leaking)
    lines.append(f"({quiet} other ops absorb at most {audit.tolerance:.1e} |f_c|)")
    worst = audit.worst_by_kind()
    if worst:
        lines.append("relevance leaks most at: " + "; ".join(f"{kind} {op.name} ({op.relative:.2e})"
                                                            for kind, op in sorted(worst.items())))
    lines.append(f"bookkeeping: input + absorbed = f_c(x) within {audit.closure:.1e}; "
                 f"forward unchanged within {audit.forward_deviation:.1e}")
    for comparison in (audit.reference, audit.derivation):
        if comparison is not None:
            lines.extend(render_comparison(comparison))
    lines.extend(f"finding: {text}" for text in audit.findings)
    lines.append(f"verdict: {'fails' if audit.findings else 'matches'}")
    return "\n".join(lines)


def render_json(audit: LXTAudit) -> str:
    return json.dumps(audit.to_dict(), indent=2)


def render_markdown(audit: LXTAudit) -> str:
    rows = [f"## {audit.library} {audit.variant}", "", "| op | kind | max abs(absorbed) / abs(f_c) | rule conserves |",
            "|---|---|---|---|"]
    rows += [f"| {op.name} | {op.kind} | {op.relative:.3e} | {'yes' if op.conserves else 'no'} |"
             for op in audit.ops if op.leaks]
    for comparison in (audit.reference, audit.derivation):
        if comparison is not None:
            rows += ["", "| graph tensor | LXT tensor | max abs(dR) | relative | / bound |", "|---|---|---|---|---|"]
            rows += [f"| {t.graph_tensor} | {t.lxt_tensor} | {t.deviation:.2e} | {t.relative:.2e} | "
                     f"{t.over_bound:.3g} |" for t in comparison.tensors]
            rows += [f"- convention: {text}" for text in comparison.conventions]
    rows += ["", *[f"- finding: {text}" for text in audit.findings],
             f"- verdict: {'fails' if audit.findings else 'matches'}", ""]
    return "\n".join(rows)


__all__ = ["DEFAULT_TOLERANCE", "LXTAudit", "OpAudit", "audit_lxt", "deviation_finding", "lxt_profile", "render_json",
           "render_markdown", "render_table"]
