"""lrp_sym: derive LRP / deep Taylor decomposition rules with SymPy and prove their properties.

A rule is declared in ``derivations/`` as a search direction in an input domain
(:class:`RootPointRule`) or, for rules that are not one root-point step, as ratio terms
(:class:`RatioRule`); ``.derive()`` returns a :class:`Derivation` with every expression and proof.

Names are imported on first use (PEP 562), so ``lrp explain`` can load its command table from
``lrp_sym.commands`` without paying for SymPy.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "lrp_sym.derivation": ("Derivation", "DerivationError", "RatioTerm"),
    "lrp_sym.directions": ("h_i", "indicator_negative", "indicator_positive", "l_i", "negative_part",
                           "positive_part", "w_ij", "w_ij_minus", "w_ij_plus", "x_i"),
    "lrp_sym.domains": ("BOX", "DOMAINS", "ORTHANT", "REAL_SPACE", "Box", "Domain", "Orthant", "RealSpace"),
    "lrp_sym.proofs": ("EmptyCheckError", "Proof", "Sampling", "Status"),
    "lrp_sym.ratio_rules": ("RatioRule",),
    "lrp_sym.root_point": ("RootPointRule",),
    "lrp_sym.sums": ("over_inputs",),
    "lrp_sym.symbols": ("R", "alpha", "b", "beta", "c", "eps", "gamma", "h", "i", "j", "l", "n", "p",
                        "t", "w", "x"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted([*_MODULE_OF, "derive"])


def __getattr__(name: str):
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(_MODULE_OF[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lrp_sym' has no attribute {name!r}")


def derive(direction, domain, name: str = "custom", title: str = "", paper: str = "", **options):
    """Derive the rule of a search direction ``direction`` (v_ij) in ``domain``.

    Shorthand for ``RootPointRule(name, title, paper, direction, domain, **options).derive()``;
    returns a :class:`~lrp_sym.derivation.Derivation`.
    """
    from lrp_sym.root_point import RootPointRule

    return RootPointRule(name, title or name, paper, direction, domain, **options).derive()
