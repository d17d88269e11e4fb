"""The positivity prover of ratio rules samples only active neurons (z_j > 0)."""

from __future__ import annotations

import pytest

from lrp_sym.proofs import Status
from lrp_sym.registry import load_declarations


@pytest.mark.parametrize("name", ["epsilon", "bias_neuron", "gamma_split", "alphabeta"])
def test_positivity_counterexample_is_an_active_neuron(name):
    derivation = load_declarations()[name].derive()
    proof = next(p for p in derivation.proofs if p.name == "positivity")
    assert proof.status is Status.REFUTED and proof.as_expected
    values = {key: float(value) for key, value in proof.counterexample.items()}
    size = sum(key.startswith("w[") for key in values)
    z = sum(values[f"x[{m}]"] * values[f"w[{m}, j]"] for m in range(1, size + 1)) + values["b[j]"]
    assert z > 0, (name, values)
