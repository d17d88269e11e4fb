"""``lrp verify``'s default run reaches every layer path of the engine (issue 11).

The default run (every built-in model, its first ``--samples`` stored images, every default
rule and composite) is replayed through the float64 engine with instruments on the layers and
on the one stabiliser, and each path the issue names must be reached at least once:

* a convolution with stride > 1, one with padding, one that narrows (C_out < C_in) and one
  that widens, each of them given relevance by the engine's backward pass;
* a target logit f_c(x) <= 0 (the top relevance is negative);
* a denominator that carries relevance and is <= 0 (the kernel divides relevance by it);
* an active neuron exactly on the boundary of the z+ domain condition,
  b_j + sum_i x_i w_ij^- = 0, in a layer the default run explains with z+.

A later change of the built-in models, their stored samples or the defaults that drops one of
them fails here. The engine's path through each is checked against the reference by
``lrp verify`` itself (``test_digits_paths_verifies`` runs it on digits-paths).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field

import numpy as np
import pytest

import lrp_num
from lrp_num.cli import main
from lrp_num.commands import verify as verify_command
from lrp_num.commands.common import load_model
from lrp_num.engine import kernel_runtime
from lrp_num.engine.graph import as_graph
from lrp_num.layers import Conv2d, Dense
from lrp_num.verify import DEFAULT_COMPOSITES, DEFAULT_RULES


@dataclass
class ReachedPaths:
    """What the default run's engine passes went through."""

    conv_transposes: list[tuple[tuple[int, int], tuple[int, int], int, int]] = field(default_factory=list)
    denominators_carrying: int = 0
    non_positive_denominators_carrying: int = 0
    target_logits: list[float] = field(default_factory=list)
    boundary_neurons: int = 0
    active_neurons: int = 0


def _default_samples() -> int:
    parser = argparse.ArgumentParser()
    verify_command.add_arguments(parser)
    return parser.parse_args([]).samples


def _boundary_neurons(network, x: np.ndarray) -> tuple[int, int]:
    """(active neurons with b_j + sum_i x_i w_ij^- == 0 exactly, active neurons) over every
    Dense and Conv2d node: the z+ condition of Montavon et al. 2017, Sec. 4.2, at equality."""
    graph = as_graph(network)
    values = graph.forward_trace(x)
    on_boundary = active = 0
    for node in graph.nodes:
        layer = node.operation
        if not isinstance(layer, (Dense, Conv2d)):
            continue
        a = values[node.inputs[0]]
        linear = layer.forward(a)
        z = linear + layer.bias_like(linear)
        condition = layer.bias_like(linear) + layer.forward(a, "negative")
        on = (z > 0) & (condition == 0)
        on_boundary += int(np.count_nonzero(on))
        active += int(np.count_nonzero(z > 0))
    return on_boundary, active


@pytest.fixture(scope="module")
def reached() -> ReachedPaths:
    paths = ReachedPaths()
    monkeypatch = pytest.MonkeyPatch()
    transpose_to = Conv2d.transpose_to
    stabilised_ratio = kernel_runtime.stabilised_ratio

    def recording_transpose_to(self, s, input_hw, g="identity"):
        if np.any(s != 0):
            paths.conv_transposes.append((self.stride, self.padding, self.in_channels, self.out_channels))
        return transpose_to(self, s, input_hw, g)

    def recording_ratio(numerator, d, eps, stabilise, rule, term):
        carrying = np.asarray(numerator) != 0
        paths.denominators_carrying += int(np.count_nonzero(carrying))
        paths.non_positive_denominators_carrying += int(np.count_nonzero(carrying & (np.asarray(d) <= 0)))
        return stabilised_ratio(numerator, d, eps, stabilise, rule, term)

    monkeypatch.setattr(Conv2d, "transpose_to", recording_transpose_to)
    monkeypatch.setattr(kernel_runtime, "stabilised_ratio", recording_ratio)
    try:
        samples = _default_samples()
        for spec in verify_command.default_models():
            model = load_model(spec)
            x, targets = verify_command.verify_batch(spec, model, samples)
            output = model.network.forward(x)
            if targets is None:
                targets = output.argmax(axis=1)
            paths.target_logits += [float(v) for v in output[np.arange(len(x)), targets]]
            on_boundary, active = _boundary_neurons(model.network, x)
            paths.boundary_neurons += on_boundary
            paths.active_neurons += active
            methods = [{"rule": name} for name in DEFAULT_RULES] + [{"composite": name} for name in DEFAULT_COMPOSITES]
            for method in methods:
                try:
                    lrp_num.explain(model.network, x, target=targets, input_domain=model.input_domain, **method)
                except lrp_num.errors.DomainError:  # verify reports such a rule as not applicable
                    pass
    finally:
        monkeypatch.undo()
    return paths


def test_the_default_run_reaches_a_stride_2_convolution(reached):
    assert any(max(stride) > 1 for stride, _, _, _ in reached.conv_transposes)


def test_the_default_run_reaches_a_padded_convolution(reached):
    assert any(max(padding) > 0 for _, padding, _, _ in reached.conv_transposes)


def test_the_default_run_reaches_a_narrowing_and_a_widening_convolution(reached):
    assert any(c_out < c_in for _, _, c_in, c_out in reached.conv_transposes)
    assert any(c_out > c_in for _, _, c_in, c_out in reached.conv_transposes)


def test_the_default_run_explains_a_non_positive_target_logit(reached):
    assert min(reached.target_logits) <= 0
    assert max(reached.target_logits) > 0


def test_the_default_run_divides_relevance_by_a_non_positive_denominator(reached):
    assert reached.denominators_carrying > 0
    assert reached.non_positive_denominators_carrying > 0


def test_the_default_run_has_a_neuron_exactly_on_its_zplus_domain_boundary(reached):
    assert "zplus" in DEFAULT_RULES
    assert 0 < reached.boundary_neurons < reached.active_neurons


def test_digits_paths_is_a_default_model_and_reaches_the_paths_itself():
    """The model made for these paths: its first default samples hold the negative target
    logit (sample 0) and the constructed boundary neuron (sample 1, conv0, bias 0)."""
    assert "digits-paths" in verify_command.default_models()
    model = load_model("digits-paths")
    x, targets = verify_command.verify_batch("digits-paths", model, _default_samples())
    logits = model.network.forward(x)[np.arange(len(x)), targets]
    assert logits[0] <= -0.25 and (logits[1:] > 0).all()
    conv0 = model.network.layers[0]
    assert isinstance(conv0, Conv2d) and conv0.stride == (2, 2) and conv0.padding == (1, 1)
    assert not conv0.bias.any()
    z = conv0.forward(x[1:2])
    on_boundary = (z > 0) & (conv0.forward(x[1:2], "negative") == 0)
    assert on_boundary.any()
    narrowing = [layer for layer in model.network.layers if isinstance(layer, Conv2d)
                 and layer.out_channels < layer.in_channels]
    assert narrowing


def test_digits_paths_verifies(capsys):
    """Engine and reference agree on every path digits-paths reaches (the default run on it),
    and the derived root-point condition agrees with the direct check, boundary neuron included."""
    assert main(["verify", "--model", "digits-paths", "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report["ok"] and len(report["rows"]) == len(DEFAULT_RULES) + len(DEFAULT_COMPOSITES)
    assert all(row["root_point_mismatches"] == 0 for row in report["rows"])
