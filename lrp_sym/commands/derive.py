"""``lrp derive``: print a rule's derivation and the status of each proof.

    lrp derive zplus                 readable derivation of one rule
    lrp derive zplus --latex         the same as LaTeX
    lrp derive zplus --proof domain  the argument of one proof, step by step
    lrp derive --all                 every rule (and the cross-rule identities), then a summary
                                     line of the statuses; exit 1 if any proof is not what the
                                     literature (or, for a sampling check, its method) says
    lrp derive --list                the rule names
"""

from __future__ import annotations

import argparse
import sys

from lrp_num.errors import LRPError


class DeriveError(LRPError):
    """Bad input to ``lrp derive``: no derivations folder, a derivation file that does not load,
    or a rule whose derivation fails (named with its file; one line, exit 2)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rule", nargs="?", help="rule name (see --list)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="derive every rule and check every proof")
    which.add_argument("--list", action="store_true", help="list the rule names and exit")
    parser.add_argument("--latex", action="store_true", help="print expressions as LaTeX")
    parser.add_argument("--proof", metavar="NAME", help="print the argument of the rule's proof "
                        "NAME step by step (with a rule)")
    parser.add_argument("--derivations", metavar="DIR", help="folder of derivation files "
                        "(default: the toolkit's derivations/)")


def run(args: argparse.Namespace) -> int:
    from lrp_num.errors import UnknownRuleError
    from lrp_sym.registry import DerivationFileError, load_declarations
    from lrp_sym.render import render_text

    if args.rule and (args.all or args.list):
        raise DeriveError(f"name a rule ({args.rule!r}) or use --{'all' if args.all else 'list'}, "
                          f"not both")
    if args.proof is not None and not args.rule:
        raise DeriveError("--proof NAME needs a rule: lrp derive RULE --proof NAME")
    try:
        declarations = load_declarations(args.derivations)
    except DerivationFileError as error:
        raise DeriveError(str(error)) from None
    if args.list:
        for name, declaration in declarations.items():
            print(f"{name:14s} {declaration.title}")
        return 0
    if args.all:
        names = list(declarations)
    elif args.rule:
        if args.rule not in declarations:
            raise UnknownRuleError(
                f"unknown rule {args.rule!r}; known rules: {', '.join(declarations)}")
        names = [args.rule]
    else:
        print("lrp derive: error: name a rule, or use --all or --list", file=sys.stderr)
        return 2

    from lrp_num.progress import print_above, progress

    if args.proof is not None:
        return _print_proof(_derive(names[0], declarations), args.proof)

    unexpected = []
    statements = []
    for name in progress(names, "deriving"):
        derivation = _derive(name, declarations)
        statements += derivation.proofs
        print_above(render_text(_latex_rule_row(derivation) if args.latex else derivation,
                                latex=args.latex))
        unexpected += [f"{name}: {p.name} is {p.status.value}, expected {p.expected.value}"
                       for p in derivation.proofs if not p.as_expected]
    if args.all:
        from lrp_sym.identities import prove_identities

        identities = prove_identities()
        if identities:
            print("== cross-rule identities")
            for proof in identities:
                print(f"  [{proof.status.value:9s}] {proof.name}: {proof.statement}")
                if proof.method:
                    print(f"               {proof.method}")
            unexpected += [f"identity {p.name} is {p.status.value}, expected {p.expected.value}"
                           for p in identities if not p.as_expected]
        statements += identities
        print(f"\n{summary_line(statements)}")
    if unexpected:
        print("\nproofs that are not as expected:", file=sys.stderr)
        for line in unexpected:
            print(f"  {line}", file=sys.stderr)
        return 1
    if args.all:
        print(f"\nall proofs of {len(names)} rules as expected")
    return 0


def _derive(name, declarations):
    from lrp_sym.registry import DerivationFileError, derive_declaration

    try:
        return derive_declaration(name, declarations[name])
    except DerivationFileError as error:
        raise DeriveError(str(error)) from None


def _print_proof(derivation, name: str) -> int:
    """The named proof's statement, status and argument, one step a line."""
    names = [proof.name for proof in derivation.proofs]
    if name not in names:
        raise DeriveError(f"{derivation.name} has no proof {name!r}; its proofs: "
                          f"{', '.join(names)}")
    proof = derivation.proof(name)
    print(f"== {derivation.name}: proof {proof.name}")
    print(f"   statement: {proof.statement}")
    expected = "" if proof.as_expected else f" (expected {proof.expected.value})"
    print(f"   status:    {proof.status.value}{expected}")
    for number, step in enumerate(proof.argument(), 1):
        print(f"   {number:2d}. {step}")
    if proof.counterexample:
        witness = ", ".join(f"{k} = {v}" for k, v in proof.counterexample.items())
        print(f"   counterexample: {witness}")
    return 0


def summary_line(proofs) -> str:
    """``N statements: a proved, b checked, c refuted (as expected), d assumed, e undecided``.

    Refuted statements that were expected to hold are counted apart: ``(k not expected)``.
    """
    from lrp_sym.proofs import Status

    counts = {status: sum(proof.status is status for proof in proofs) for status in Status}
    wrong = sum(proof.status is Status.REFUTED and not proof.as_expected for proof in proofs)
    refuted = "as expected" if wrong == 0 else f"{wrong} not expected"
    return (f"{len(proofs)} statements: {counts[Status.PROVED]} proved, "
            f"{counts[Status.CHECKED]} checked, {counts[Status.REFUTED]} refuted ({refuted}), "
            f"{counts[Status.ASSUMED]} assumed, {counts[Status.UNDECIDED]} undecided")


def _latex_rule_row(derivation):
    """The derivation with its plain-text "rule R_i" row as LaTeX (R_i = sum_j ... R_j)."""
    import dataclasses

    from sympy import latex

    from lrp_sym.render import rule_expression

    if not derivation.terms:
        return derivation
    rule = f"R_i = \\sum_j {latex(rule_expression(derivation))}"
    rows = [(label, rule if label == "rule R_i" else value) for label, value in derivation.rows]
    return dataclasses.replace(derivation, rows=rows)
