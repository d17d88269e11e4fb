"""LayerNorm / RMSNorm with the normaliser held constant (CP-LRP): the layer becomes the linear
map y = gamma (x - mu) / sigma + beta (sigma detached), explained by LRP-0/epsilon over it.

Ali et al. 2022, "XAI for Transformers: better explanations through conservative propagation",
ICML; LayerNorm: Ba et al. 2016; RMSNorm: Zhang & Sennrich 2019, NeurIPS. The bias beta absorbs
sum_j c_j beta_j; RMSNorm (no bias) conserves exactly.
"""

from lrp_sym import Status
from lrp_sym.normalization import NormalizationRule

RULE = NormalizationRule(
    name="norm_cp",
    title="LayerNorm and RMSNorm, normaliser held constant (CP-LRP)",
    paper="Ali et al. 2022, ICML (CP-LRP); Ba et al. 2016; Zhang & Sennrich 2019, NeurIPS",
    detached=True,
    expected={"conservation_layernorm": Status.REFUTED},
)
