"""Normalisation over the last axis: LayerNorm and RMSNorm (placeholder until the norm rules land)."""

NORMALIZATION: tuple = ()
