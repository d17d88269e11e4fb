"""The result of analysing one rule or layer: expressions, proofs, and the canonical rule.

Every analysis in ``derivations/`` produces a :class:`Derivation`. Its ``rows`` are what the
command line and the docs show; its ``terms``, ``bias_share`` and ``stabiliser`` are the
canonical propagation rule that the code generator turns into a kernel:

    R_i = sum_j  sum_k  a_k q^(k)_ij / (sum_i' q^(k)_i'j + s_k) R_j,

with coefficients a_k, the bias share s_k of each denominator and, where the rule has one, a
stabiliser eps sign(denominator).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sympy import Expr, S

from lrp_sym.domains import Domain
from lrp_sym.proofs import Proof

#: the values of :attr:`Derivation.z_sign`
Z_SIGNS = ("positive", "negative", "any")


class DerivationError(ValueError):
    """A rule whose derivation cannot be carried out: no unique step t* (e.g. a direction with
    sum_i v_ij w_ij identically 0), or an R_ij that is not of the form q_ij / sum_i q_ij R_j."""


@dataclass(frozen=True)
class RatioTerm:
    """One term a q_ij / (sum_i q_ij + s) R_j of a propagation rule."""

    coefficient: Expr
    q: Expr
    bias_share: Expr = S.Zero


@dataclass
class Derivation:
    """Everything derived about one rule or layer.

    Attributes
    ----------
    name : str
        The rule's registry name (``"z+"``, ``"w2"``, ...).
    title : str
        A one-line human title.
    paper : str
        The reference the rule comes from.
    domain : Domain or None
        The input domain the rule is derived for.
    rows : list of (str, Expr or str)
        The derivation in reading order: direction, step, root point, R_ij, rule, condition...
    proofs : list of Proof
    terms : list of RatioTerm
        The canonical rule for code generation; empty for analyses that yield no kernel.
    stabiliser : Expr
        eps when the rule's denominators carry eps sign(d) by definition (LRP-epsilon), else 0.
    parameters : tuple of Symbol
        The rule's parameters (gamma, alpha, beta, eps ...), in signature order.
    defaults : dict
        Default value of each parameter (Symbol -> float) for generated kernels.
    results : dict
        Named expressions (``step``, ``root_point``, ``relevance``, ``q``, ...) for tests and tools.
    notes : list of str
        Paragraphs of prose for the docs page (what else the analysis covers, how a layer maps
        onto it), shown after the header.
    neuron : str
        The neuron the rule is derived for, and so the nodes its kernel applies to:
        ``"linear"`` (z_j = sum_i x_i w_ij + b_j: Dense, Conv2d, pooling, per-channel affine) or
        ``"sum"`` (y = sum_k a_k of addends stacked on axis 1: an Add node).
    z_sign : {"positive", "negative", "any"}
        The sign of the pre-activation z_j the rule is derived for: ``"positive"`` for a
        root-point rule on a ReLU neuron (the active branch of R_j = c_j max(0, z_j) is the one
        differentiated) and for a ratio rule declared for z_j > 0 (``gamma_split``),
        ``"negative"`` for one declared for z_j < 0, ``"any"`` for a rule defined for both
        signs (LRP-epsilon, alpha-beta, a neuron without activation). Generated as the kernel
        constant ``Z_SIGN``; the engine warns (:class:`lrp_num.errors.DerivationScopeWarning`)
        when relevance arrives at neurons of the other sign.
    """

    name: str
    title: str
    paper: str
    domain: Domain | None = None
    rows: list[tuple[str, Expr | str]] = field(default_factory=list)
    proofs: list[Proof] = field(default_factory=list)
    terms: list[RatioTerm] = field(default_factory=list)
    stabiliser: Expr = S.Zero
    parameters: tuple = ()
    defaults: dict = field(default_factory=dict)
    results: dict[str, Expr] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    neuron: str = "linear"
    z_sign: str = "any"

    @property
    def as_expected(self) -> bool:
        """True when every proof has the status the literature leads us to expect."""
        return all(proof.as_expected for proof in self.proofs)

    def proof(self, name: str) -> Proof:
        """Return the proof called ``name``."""
        for proof in self.proofs:
            if proof.name == name:
                return proof
        raise KeyError(f"{self.name} has no proof called {name!r}")
