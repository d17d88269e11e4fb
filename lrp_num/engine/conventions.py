"""Conventions: the choices LRP implementations make beyond the rule itself.

The libraries disagree on three things (FIELD_NOTES section 3), so each is an explicit
parameter here, with the deep Taylor decomposition (DTD) derivation as the default:

* ``bias``: what the bias adds to a rule's denominator.
  ``"dtd"`` (default): what the derivation says: nothing for root-point rules (the bias sits in
  z_j and so in R_j, not in sum_i q_ij), b_j for LRP-epsilon. ``"neuron"``: the bias is an extra
  input neuron with q = b_j (b_j^+ / b_j^- in the two groups of alpha-beta). ``"zennit"``: what
  zennit 1.0 adds per rule (b^+ for z+, b^2 for w^2, b^+ / b^- for alpha-beta, nothing for flat
  and z^B; zennit's Gamma modifies the bias to b + gamma b^+, which is part of the rule
  ``gamma_split``, so under this convention rule ``gamma`` only adds b). ``"captum"``: what captum 0.8 / 0.9 adds: the full b_j for every rule (its rules only
  modify weights; ``set_bias_to_zero`` is off by default). captum has no two-term alpha-beta
  rule (only Alpha1_Beta0, a weight modification): for ``alphabeta`` the unmodified b_j goes to
  the first (positive) term and nothing to the second, i.e. the bias joins the one modified z'.
  A rule a convention does not list gets b_j in its first term and nothing in any further term.
  A rule whose derivation holds its bias gets nothing added under any convention: epsilon and
  bias_neuron (b_j), ``gamma_split`` (b_j + gamma b_j^+) and ``gamma_split_negative``
  (b_j + gamma b_j^-). Under ``"neuron"`` that share is the bias neuron's own q (activation 1 > 0,
  weight b_j, in the x^+ group); captum has no input-split gamma (its GammaRule is ``gamma``).
  ``"magnitude"``: what autoLRP 0.2.0 does (``autolrp/backward/lrp_utils.py``,
  ``apply_bias_split``): before the rule runs, the bias keeps the share
  |b_j| / (|z_j - b_j| + |b_j| + eps) of R_j, and the rule then sees the layer without its bias
  (nothing added to any denominator, as under ``"dtd"``).
* ``eps`` and ``stabilise``: a denominator d becomes d + eps sign(d) with sign(0) = +1, either
  only where d == 0 (``"zero"``, default: the exact rule everywhere else) or everywhere
  (``"everywhere"``, as zennit and captum do). With eps = 0 a zero denominator that carries
  relevance raises :class:`lrp_num.errors.ZeroDenominatorError`. LRP-epsilon's own stabiliser
  is its parameter ``epsilon`` and always applies everywhere.
* ``by_sign``: a rule derived for neurons with z_j > 0 that has a counterpart derived for z_j < 0
  (:data:`SIGN_COUNTERPARTS`: ``gamma_split`` -> ``gamma_split_negative``) applies each to the
  neurons of its sign, z_j the layer's output with its bias, and passes nothing through a neuron
  with z_j = 0, as zennit's Gamma does (``zennit/rules.py``: its gradient mapper masks the upper
  relevance by z_j > 0 and z_j < 0). False (default): the rule's own derivation for every neuron.
* ``maxpool_ties``: how a max-pooling window's tied maxima share its relevance. ``"split"``
  (default): 1/m to each of m tied maxima, the derived p -> infinity limit of L_p pooling
  (derivations/max_pool.py). ``"first"``: the first maximum in PyTorch's order (row-major within
  the window) takes it all, as torch's max-pooling gradient and so zennit and captum do. A
  convention, not a derivation: the limit is symmetric in tied maxima and picks none of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lrp_num.engine.kernel_runtime import MAXPOOL_TIES
from lrp_num.errors import KernelArgumentError, UnknownRuleError

#: convention name -> rule -> bias transform per ratio term (None: nothing added)
BIAS_SHARES: dict[str, dict[str, tuple[str | None, ...]]] = {
    "neuron": {
        "alphabeta": ("positive", "negative"),
        "epsilon": (None,), "bias_neuron": (None,),  # their derivation already holds b_j
        "gamma_split": (None,), "gamma_split_negative": (None,),  # b + gamma b^+-: the bias neuron's q
    },
    "zennit": {
        "zplus": ("positive",), "w2": ("square",), "alphabeta": ("positive", "negative"),
        "flat": (None,), "zbox": (None,), "lrp0": ("identity",), "gamma": ("identity",),
        "epsilon": (None,), "bias_neuron": (None,),
        "zplus_split": ("positive",), "gamma_split": (None,),  # gamma_split derives b + gamma b^+
        "gamma_split_negative": (None,),  # and its counterpart b + gamma b^-
    },
    "captum": {
        "zplus": ("identity",), "gamma": ("identity",), "lrp0": ("identity",),
        "alphabeta": ("identity", None),
        "epsilon": (None,), "bias_neuron": (None,), "gamma_split": (None,), "gamma_split_negative": (None,),
    },
}
BIAS_CONVENTIONS = ("dtd", "neuron", "zennit", "captum", "magnitude")
STABILISERS = ("zero", "everywhere")
#: rule derived for z_j > 0 -> its counterpart derived for z_j < 0 (used under ``by_sign``)
SIGN_COUNTERPARTS: dict[str, str] = {"gamma_split": "gamma_split_negative"}
#: rules whose derivation carries its own stabiliser epsilon (used under ``epsilon_stabilises``)
OWN_STABILISER_RULES = ("epsilon", "add_epsilon")


@dataclass(frozen=True)
class Conventions:
    """Bias placement and stabiliser, see the module docstring.

    Parameters
    ----------
    bias : {"dtd", "neuron", "zennit", "captum", "magnitude"}
    eps : float
        Stabiliser magnitude, finite and >= 0 (else KernelArgumentError).
    stabilise : {"zero", "everywhere"}
    by_sign : bool
        Select a rule's z_j > 0 / z_j < 0 derivation per neuron (:data:`SIGN_COUNTERPARTS`).
    epsilon_stabilises : bool
        LRP-epsilon's epsilon is its layers' only stabiliser (:data:`OWN_STABILISER_RULES`).
    maxpool_ties : {"split", "first"}
        Max-pooling ties split equally (derived) or all to the first maximum (torch's convention).
    """

    bias: str = "dtd"
    eps: float = 1e-6
    stabilise: str = "zero"
    by_sign: bool = False
    epsilon_stabilises: bool = False
    maxpool_ties: str = "split"

    def __post_init__(self) -> None:
        if self.bias not in BIAS_CONVENTIONS:
            raise UnknownRuleError(f"unknown bias convention {self.bias!r}; known: {', '.join(BIAS_CONVENTIONS)}")
        if self.stabilise not in STABILISERS:
            raise UnknownRuleError(f"unknown stabiliser mode {self.stabilise!r}; known: {', '.join(STABILISERS)}")
        try:
            valid = isinstance(self.eps, (int, float, np.floating, np.integer)) \
                and not isinstance(self.eps, bool) and math.isfinite(self.eps) and self.eps >= 0
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise KernelArgumentError(f"eps must be a finite number >= 0, got {self.eps!r}")
        if not isinstance(self.by_sign, bool):
            raise KernelArgumentError(f"by_sign must be True or False, got {self.by_sign!r}")
        if not isinstance(self.epsilon_stabilises, bool):
            raise KernelArgumentError(f"epsilon_stabilises must be True or False, got {self.epsilon_stabilises!r}")
        if self.maxpool_ties not in MAXPOOL_TIES:
            raise UnknownRuleError(f"unknown max-pool tie rule {self.maxpool_ties!r}; known: {', '.join(MAXPOOL_TIES)}")

    def eps_for(self, rule: str) -> float:
        """The stabiliser added to ``rule``'s denominators: 0 for a rule with its own epsilon
        under ``epsilon_stabilises``, ``eps`` otherwise."""
        return 0.0 if self.epsilon_stabilises and rule in OWN_STABILISER_RULES else self.eps

    def bias_shares(self, rule: str, n_terms: int = 1) -> tuple[str | None, ...] | None:
        """Bias transform per ratio term of ``rule`` under this convention (None: derived only).

        A rule the convention does not list gets the full bias (``"identity"``) in its first
        term and nothing in the other ``n_terms - 1``.
        """
        if self.bias in ("dtd", "magnitude"):  # "magnitude" splits the bias off before the rule
            return None
        return BIAS_SHARES[self.bias].get(rule, ("identity",) + (None,) * (n_terms - 1))


DTD = Conventions()
