"""Sequential: forward, trace, BatchNorm folding, shapes, dtypes and errors."""

from __future__ import annotations

import numpy as np
import pytest

from lrp_num.errors import NonFiniteError, ShapeError, UnsupportedLayerError
from lrp_num.layers import AvgPool2d, BatchNorm, Conv2d, Dense, Flatten, Identity, MaxPool2d, ReLU
from lrp_num.engine.network import Sequential

RNG = np.random.default_rng(11)


def batchnorm(n: int) -> BatchNorm:
    return BatchNorm(RNG.standard_normal(n), RNG.standard_normal(n), RNG.standard_normal(n), RNG.random(n) + 0.1)


def small_cnn() -> Sequential:
    return Sequential(
        [Conv2d(RNG.standard_normal((4, 2, 3, 3)), RNG.standard_normal(4), 1, 1), batchnorm(4), ReLU(),
         MaxPool2d(2), Conv2d(RNG.standard_normal((6, 4, 2, 2)), RNG.standard_normal(6)), ReLU(), AvgPool2d(2, 1),
         Flatten(), Dense(RNG.standard_normal((6, 5)), RNG.standard_normal(5)), batchnorm(5), Identity()],
        input_shape=(2, 6, 6),
    )


def test_forward_equals_layer_by_layer_and_folding_preserves_it():
    network = small_cnn()
    assert not any(isinstance(layer, BatchNorm) for layer in network.layers)
    assert len(network.layers) == len(network.source_layers) - 2
    x = RNG.standard_normal((3, 2, 6, 6))
    unfolded = x
    for layer in network.source_layers:
        unfolded = layer(unfolded)
    np.testing.assert_allclose(network.forward(x), unfolded, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(network(x), network.forward(x))


def test_forward_trace_holds_every_layer_input_and_the_output():
    network = small_cnn()
    x = RNG.standard_normal((2, 2, 6, 6))
    trace = network.forward_trace(x)
    assert len(trace) == len(network.layers) + 1
    np.testing.assert_array_equal(trace[0], x)
    for k, layer in enumerate(network.layers):
        np.testing.assert_array_equal(trace[k + 1], layer(trace[k]))
        assert trace[k].shape[1:] == network.shapes[k]
    np.testing.assert_array_equal(trace[-1], network.forward(x))


def test_shapes_outputs_and_summary():
    network = small_cnn()
    assert network.input_shape == (2, 6, 6)
    assert network.output_shape == (5,) and network.n_outputs == 5
    assert network.shapes[3] == (4, 3, 3)  # input of the second conv
    text = repr(network)
    assert "2 BatchNorm folded" in text and "Conv2d(2 -> 4" in text and "-> (5,)" in text
    assert network.n_parameters == sum(layer.n_parameters for layer in network.layers)
    assert Sequential([Dense(np.ones((3, 7))), ReLU()]).n_outputs == 7
    with pytest.raises(ShapeError, match="n_outputs needs input_shape"):
        Sequential([Conv2d(np.ones((2, 1, 1, 1)))]).n_outputs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_in_is_dtype_out(dtype):
    network = small_cnn()
    x = RNG.standard_normal((2, 2, 6, 6)).astype(dtype)
    assert all(a.dtype == dtype for a in network.forward_trace(x))
    np.testing.assert_allclose(network(x), network(x.astype(np.float64)), rtol=1e-4, atol=1e-4)


def test_integer_input_is_converted():
    network = Sequential([Dense(np.eye(2)), ReLU()])
    out = network(np.array([[1, -2]]))
    assert out.dtype == np.float64 and out.tolist() == [[1.0, 0.0]]


def test_batchnorm_placement_errors():
    with pytest.raises(UnsupportedLayerError, match="layer 0 BatchNorm\\(2.*follows the network input"):
        Sequential([batchnorm(2), Dense(np.ones((2, 2)))])
    with pytest.raises(UnsupportedLayerError, match="layer 2 BatchNorm\\(2.*follows ReLU\\(\\)"):
        Sequential([Dense(np.ones((2, 2))), ReLU(), batchnorm(2)])
    with pytest.raises(ShapeError, match="cannot follow Dense\\(2 -> 3\\)"):
        Sequential([Dense(np.ones((2, 3))), batchnorm(2)])


def test_construction_errors():
    with pytest.raises(UnsupportedLayerError, match="layer 1 is a str"):
        Sequential([ReLU(), "softmax"])
    with pytest.raises(ShapeError, match="at least one layer"):
        Sequential([])
    with pytest.raises(ShapeError, match="layer 2: Dense\\(5 -> 2\\) expects inputs of shape \\(5,\\), got \\(4,\\)"):
        Sequential([Dense(np.ones((3, 4))), ReLU(), Dense(np.ones((5, 2)))], input_shape=(3,))


def test_input_errors():
    network = small_cnn()
    with pytest.raises(ShapeError, match="network input must have shape \\(N, 2, 6, 6\\), got \\(2, 6, 6\\)"):
        network(np.ones((2, 6, 6)))
    x = np.ones((1, 2, 6, 6))
    x[0, 1, 2, 3] = np.nan
    with pytest.raises(NonFiniteError, match="network input holds 1 NaN"):
        network(x)
    free = Sequential([Dense(np.ones((3, 2)))])
    with pytest.raises(ShapeError, match="layer 0: Dense\\(3 -> 2\\) expects inputs of shape \\(N, 3\\)"):
        free(np.ones((1, 4)))
    with pytest.raises(NonFiniteError, match="network output"), np.errstate(over="ignore"):
        Sequential([Dense(np.full((1, 1), 1e30)), Dense(np.full((1, 1), 1e30))])(np.ones((1, 1), np.float32))


def test_lrp_num_imports_numpy_only():
    import subprocess
    import sys

    code = ("import sys; import lrp_num.engine.network, lrp_num.io.model_io, lrp_num.io.onnx_import; "
            "print(sorted(m for m in ('sympy', 'torch', 'onnx', 'mpmath', 'sklearn') if m in sys.modules))")
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]"
