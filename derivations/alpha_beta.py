"""LRP-alpha-beta: positive and negative contributions propagated separately.

Bach et al. (2015), PLOS ONE 10(7), e0130140, Eq. (60). Conservative exactly when
alpha - beta = 1 (with both sums non-zero); not positive for beta > 0.
"""

from lrp_sym import (REAL_SPACE, RatioRule, RatioTerm, Status, alpha, beta, negative_part,
                     positive_part, w_ij, x_i)

RULE = RatioRule(
    name="alphabeta",
    title="LRP-alpha-beta",
    paper="Bach et al. 2015, PLOS ONE 10(7) e0130140, Eq. (60)",
    terms=[RatioTerm(alpha, positive_part(x_i * w_ij)), RatioTerm(-beta, negative_part(x_i * w_ij))],
    domain=REAL_SPACE,
    parameters=(alpha, beta),
    defaults={alpha: 2.0, beta: 1.0},
    expected={"conservation": Status.REFUTED, "positivity": Status.REFUTED},
    solve_conservation_for=alpha,
)
