"""LayerNorm / RMSNorm fully linearised: the Jacobian with sigma's dependence on x, the
first-order term at x (gradient x input with c_j = R_j / y_j held).

The normalised output is invariant under scaling x - mu, so the input receives only e / sigma^2
of sum_j c_j (y_j - beta_j): not conservative, which CP-LRP (Ali et al. 2022, ICML) avoids by
detaching sigma. Montavon et al. 2017, Pattern Recognition 65 (Taylor expansion at x).
"""

from lrp_sym import Status
from lrp_sym.normalization import NormalizationRule

RULE = NormalizationRule(
    name="norm_full",
    title="LayerNorm and RMSNorm, full linearisation (normaliser not detached)",
    paper="Ali et al. 2022, ICML (why detach); Montavon et al. 2017, Pattern Recognition 65",
    detached=False,
    expected={"conservation_layernorm": Status.REFUTED, "conservation_rmsnorm": Status.REFUTED},
)
