"""``lrp derive``: print a rule's derivation and the status of each proof.

    lrp derive zplus          readable derivation of one rule
    lrp derive zplus --latex  the same as LaTeX
    lrp derive --all          every rule (and the cross-rule identities); exit 1 if any proof
                              is not what the literature says it is
    lrp derive --list         the rule names
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
    parser.add_argument("--derivations", metavar="DIR", help="folder of derivation files "
                        "(default: the toolkit's derivations/)")


def run(args: argparse.Namespace) -> int:
    from lrp_num.errors import UnknownRuleError
    from lrp_sym.registry import DerivationFileError, derive_declaration, load_declarations
    from lrp_sym.render import render_text

    if args.rule and (args.all or args.list):
        raise DeriveError(f"name a rule ({args.rule!r}) or use --{'all' if args.all else 'list'}, "
                          f"not both")
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

    unexpected = []
    for name in progress(names, "deriving"):
        try:
            derivation = derive_declaration(name, declarations[name])
        except DerivationFileError as error:
            raise DeriveError(str(error)) from None
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
    if unexpected:
        print("\nproofs that are not as expected:", file=sys.stderr)
        for line in unexpected:
            print(f"  {line}", file=sys.stderr)
        return 1
    if args.all:
        print(f"\nall proofs of {len(names)} rules as expected")
    return 0


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
