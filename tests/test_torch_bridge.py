"""The torch bridge: our Sequential <-> nn.Sequential, and state dict + JSON architecture files."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lrp_num.errors import ModelFileError, UnsupportedLayerError  # noqa: E402
from lrp_num.layers import AvgPool2d, BatchNorm, Conv2d, Dense, Flatten, MaxPool2d, ReLU, SumPool2d  # noqa: E402
from lrp_num.io.model_io import load_builtin  # noqa: E402
from lrp_num.engine.network import Sequential  # noqa: E402
from lrp_num.io.torch_bridge import from_torch, load_torch_model, to_torch  # noqa: E402


def network():
    rng = np.random.default_rng(0)
    layers = [Conv2d(rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3), stride=1, padding=1),
              BatchNorm(rng.uniform(0.5, 1.5, 3), rng.normal(size=3), rng.normal(size=3), rng.uniform(0.5, 2, 3)),
              ReLU(), SumPool2d(2), AvgPool2d(1), MaxPool2d(1), Flatten(),
              Dense(rng.normal(size=(12, 5)), rng.normal(size=5)),
              BatchNorm(rng.uniform(0.5, 1.5, 5), rng.normal(size=5), rng.normal(size=5), rng.uniform(0.5, 2, 5)),
              ReLU(), Dense(rng.normal(size=(5, 2)), rng.normal(size=2))]
    return Sequential(layers, input_shape=(2, 4, 4)), rng.normal(size=(3, 2, 4, 4))


def test_round_trip_keeps_the_function_and_batch_norm():
    net, x = network()
    model = to_torch(net)
    assert isinstance(model[1], torch.nn.BatchNorm2d) and isinstance(model[8], torch.nn.BatchNorm1d)
    assert not model.training
    y = model(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(y, net.forward(x), rtol=1e-12, atol=1e-12)
    back = from_torch(model, net.input_shape)
    np.testing.assert_allclose(back.forward(x), y, rtol=1e-12, atol=1e-12)
    assert isinstance(back.source_layers[3], SumPool2d) and not isinstance(back.source_layers[3], AvgPool2d)


def test_dense_weight_is_transposed_to_torch_layout():
    dense = Dense(np.arange(6.0).reshape(2, 3), np.zeros(3))
    model = to_torch([dense])
    np.testing.assert_array_equal(model[0].weight.detach().numpy(), dense.weight.T)


def test_state_dict_and_architecture(tmp_path):
    net = load_builtin("digits-cnn").network
    model = to_torch(net)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    architecture = {"input_shape": [1, 8, 8], "modules": [
        {"type": "Conv2d", "in_channels": 1, "out_channels": 8, "kernel_size": 3, "padding": 1},
        {"type": "BatchNorm2d", "num_features": 8}, {"type": "ReLU"},
        {"type": "Conv2d", "in_channels": 8, "out_channels": 16, "kernel_size": 3, "padding": 1},
        {"type": "ReLU"}, {"type": "MaxPool2d", "kernel_size": 2}, {"type": "Flatten"},
        {"type": "Linear", "in_features": 256, "out_features": 10}]}
    (tmp_path / "a.json").write_text(json.dumps(architecture))
    loaded, ours = load_torch_model(tmp_path / "w.pt", tmp_path / "a.json")
    x = load_builtin("digits-cnn").test_images[:2].astype(float)
    np.testing.assert_allclose(ours.forward(x), net.forward(x), rtol=1e-12, atol=1e-12)
    architecture["modules"][0]["out_channels"] = 4
    with pytest.raises(ModelFileError, match="does not fit"):
        load_torch_model(tmp_path / "w.pt", architecture)
    with pytest.raises(ModelFileError, match="not one of"):
        load_torch_model(tmp_path / "w.pt", {"modules": [{"type": "LSTM"}]})


def test_unsupported_module_is_a_documented_error():
    with pytest.raises(UnsupportedLayerError, match="Tanh"):
        from_torch(torch.nn.Sequential(torch.nn.Tanh()))
