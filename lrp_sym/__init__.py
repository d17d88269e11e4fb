"""lrp_sym: derive LRP / deep Taylor decomposition rules with SymPy and prove their properties.

A rule is declared in ``derivations/`` as a search direction in an input domain
(:class:`RootPointRule`) or, for rules that are not one root-point step, as ratio terms
(:class:`RatioRule`); ``.derive()`` returns a :class:`Derivation` with every expression and proof.
"""

from lrp_sym.derivation import Derivation, RatioTerm
from lrp_sym.directions import (h_i, indicator_negative, indicator_positive, l_i, negative_part,
                                positive_part, w_ij, w_ij_minus, w_ij_plus, x_i)
from lrp_sym.domains import BOX, DOMAINS, ORTHANT, REAL_SPACE, Box, Domain, Orthant, RealSpace
from lrp_sym.proofs import Proof, Status
from lrp_sym.ratio_rules import RatioRule
from lrp_sym.root_point import RootPointRule
from lrp_sym.sums import over_inputs
from lrp_sym.symbols import R, alpha, b, beta, c, eps, gamma, h, i, j, l, n, p, t, w, x


def derive(direction, domain: Domain, name: str = "custom", title: str = "", paper: str = "",
           **options) -> Derivation:
    """Derive the rule of a search direction ``direction`` (v_ij) in ``domain``.

    Shorthand for ``RootPointRule(name, title, paper, direction, domain, **options).derive()``.
    """
    return RootPointRule(name, title or name, paper, direction, domain, **options).derive()


__all__ = [
    "BOX", "DOMAINS", "ORTHANT", "REAL_SPACE", "Box", "Derivation", "Domain", "Orthant", "Proof",
    "R", "RatioRule", "RatioTerm", "RealSpace", "RootPointRule", "Status", "alpha", "b", "beta",
    "c", "derive", "eps", "gamma", "h", "h_i", "i", "indicator_negative", "indicator_positive",
    "j", "l", "l_i", "n", "negative_part", "over_inputs", "p", "positive_part", "t", "w", "w_ij",
    "w_ij_minus", "w_ij_plus", "x", "x_i",
]
