"""Model files: round trip, byte reproducibility, every error path, and the built-in models."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from lrp_num.errors import ModelFileError, NonFiniteError, OutputPathError, ShapeError
from lrp_num.layers import (
    AvgPool2d, BatchNorm, Conv2d, Dense, Flatten, Identity, MaxPool2d, ReLU, SumPool2d,
)
from lrp_num.io.model_io import BUILTIN_MODELS, InputDomain, load_builtin, load_npz, save_npz
from lrp_num.engine.network import Sequential

RNG = np.random.default_rng(5)


def every_layer_network() -> Sequential:
    return Sequential(
        [Conv2d(RNG.standard_normal((3, 1, 3, 3)), RNG.standard_normal(3), (1, 2), (1, 0)),
         BatchNorm(RNG.random(3) + 0.5, RNG.standard_normal(3), RNG.standard_normal(3), RNG.random(3), eps=1e-3),
         ReLU(), SumPool2d(2, 1), AvgPool2d((2, 1)), MaxPool2d(2, 1), Identity(), Flatten(),
         Dense(RNG.standard_normal((6, 4)), RNG.standard_normal(4))],
        input_shape=(1, 8, 7),
    )


def test_round_trip_keeps_layers_domain_and_extra(tmp_path):
    network = every_layer_network()
    path = tmp_path / "net.npz"
    images, labels = RNG.random((2, 1, 8, 7)), np.array([3, 1])
    save_npz(network, path, input_domain=(np.zeros((1, 8, 7)), 1.0),
             extra={"test_images": images, "test_labels": labels})
    model = load_npz(path)
    assert [type(l) for l in model.network.source_layers] == [type(l) for l in network.source_layers]
    assert model.network.input_shape == (1, 8, 7)
    x = RNG.random((3, 1, 8, 7))
    np.testing.assert_array_equal(model.network(x), network(x))
    np.testing.assert_array_equal(model.test_images, images)
    np.testing.assert_array_equal(model.test_labels, labels)
    assert model.input_domain.low.shape == (1, 8, 7) and float(model.input_domain.high) == 1.0
    bn = model.network.source_layers[1]
    assert bn.eps == 1e-3
    assert model.network.source_layers[0].stride == (1, 2)


def test_same_network_gives_the_same_bytes(tmp_path):
    network = every_layer_network()
    save_npz(network, tmp_path / "a.npz")
    save_npz(network, tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_file_without_optional_entries(tmp_path):
    save_npz(Sequential([Dense(np.eye(2)), ReLU()]), tmp_path / "plain.npz")
    model = load_npz(tmp_path / "plain.npz")
    assert model.input_domain is None and model.extra == {} and model.test_images is None
    assert model.network.input_shape is None


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    path = tmp_path / "net.npz"
    save_npz(Sequential([ReLU()]), path)
    before = path.read_bytes()
    with pytest.raises(ShapeError, match="object dtype"):
        save_npz(Sequential([ReLU()]), path, extra={"bad": np.array([object()])})

    def broken_write_array(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", broken_write_array)
    with pytest.raises(OutputPathError, match="disk full"):  # one documented error, not OSError
        save_npz(every_layer_network(), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.npz"]


def test_load_npz_of_a_folder_says_it_is_a_folder(tmp_path):
    with pytest.raises(ModelFileError, match="is a folder, not a model file"):
        load_npz(tmp_path)


@pytest.mark.parametrize("where, message", [
    ("missing/net.npz", "its folder does not exist"),
    ("folder", "it is a folder"),
    ("file/net.npz", "is not a folder"),
])
def test_save_npz_to_a_path_that_cannot_be_a_file_is_output_path_error(tmp_path, where, message):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(OutputPathError, match=message):
        save_npz(Sequential([ReLU()]), tmp_path / where)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]
    assert list((tmp_path / "folder").iterdir()) == []


def test_save_npz_that_fails_at_write_time_is_output_path_error(tmp_path, monkeypatch):
    import tempfile

    def refused(*args, **kwargs):  # what a read-only file system does, even for root
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    with pytest.raises(OutputPathError, match="Permission denied"):
        save_npz(Sequential([ReLU()]), tmp_path / "net.npz")
    assert list(tmp_path.iterdir()) == []


def test_input_domain_validation():
    with pytest.raises(ShapeError, match="low <= high"):
        InputDomain(np.ones(3), np.zeros(3))
    with pytest.raises(NonFiniteError, match="NaN"):
        InputDomain(np.array([np.nan]), np.ones(1))
    with pytest.raises(ShapeError, match="do not broadcast"):
        InputDomain(np.zeros(2), np.ones(3))


@pytest.mark.parametrize(("low", "high"), [(0, np.inf), (-np.inf, np.inf), (np.array([0.0, -np.inf]), 1)])
def test_input_domain_rejects_unbounded_boxes(low, high):
    with pytest.raises(NonFiniteError, match="finite"):
        InputDomain(low, high)


def test_input_domain_rejects_non_numeric_bounds_and_other_tuples():
    with pytest.raises(ShapeError, match="numbers or numeric arrays"):
        InputDomain("a", "b")
    with pytest.raises(ShapeError, match="pair"):
        InputDomain.of((0, 1, 2))
    assert float(InputDomain.of([0, 1]).high) == 1.0


def test_saved_files_honour_the_umask(tmp_path):
    import os
    old = os.umask(0o022)
    try:
        save_npz(Sequential([Dense(np.eye(2))]), tmp_path / "m.npz")
        assert (tmp_path / "m.npz").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        save_npz(Sequential([Dense(np.eye(2))]), tmp_path / "p.npz")
        assert (tmp_path / "p.npz").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def write_arrays(path, **arrays):
    np.savez(path, **arrays)
    return path


def valid_arrays(tmp_path) -> dict[str, np.ndarray]:
    save_npz(Sequential([Dense(np.eye(2)), ReLU()]), tmp_path / "valid.npz")
    with np.load(tmp_path / "valid.npz") as archive:
        return {key: archive[key] for key in archive.files}


def test_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        load_npz(tmp_path / "absent.npz")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(ModelFileError, match="not a readable .npz archive"):
        load_npz(corrupt)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(write_arrays(tmp_path / "v.npz", a=np.ones(1000)).read_bytes()[:200])
    with pytest.raises(ModelFileError, match="not a readable .npz archive"):
        load_npz(truncated)
    single = tmp_path / "single.npy"
    np.save(single, np.ones(3))
    with pytest.raises(ModelFileError, match="single .npy array"):
        load_npz(single)
    with pytest.raises(ModelFileError, match="not an lrp-toolkit model"):
        load_npz(write_arrays(tmp_path / "foreign.npz", weights=np.ones(3)))
    pickled = tmp_path / "pickled.npz"
    arrays = valid_arrays(tmp_path)
    arrays["extra.evil"] = np.array([{"a": 1}], dtype=object)
    np.savez(pickled, **arrays)
    with pytest.raises(ModelFileError, match="not a readable .npz archive"):
        load_npz(pickled)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": np.int64(2)}, "format version 2, this lrp-toolkit reads version 1"),
        ({"layer_types": np.array(["Dense", "Transformer"])}, "layer 1 has unknown type 'Transformer'"),
        ({"layer_types": np.array(["Dense", "Dense"])}, "layer 1 (Dense) lacks the array 'layer1.weight'"),
        ({"layer0.weight": np.ones((2, 2, 2))}, "layer 0 (Dense) is invalid: Dense weight must have 2"),
        ({"layer0.weight": np.full((2, 2), np.nan)}, "layer 0 (Dense) is invalid: Dense weight holds 4 NaN"),
        ({"input_shape": np.array([3])}, "expects inputs of shape (2,), got (3,)"),
        ({"input_domain.low": np.ones(2), "input_domain.high": np.zeros(2)}, "low <= high"),
        ({"input_shape": np.int64(2)}, "input_shape must be a 1-d array of positive integers"),
        ({"input_shape": np.array([-1])}, "input_shape must be a 1-d array of positive integers"),
        ({"input_shape": np.array(["2"])}, "input_shape must be a 1-d array of positive integers"),
        ({"input_domain.low": np.array(["a"]), "input_domain.high": np.ones(2)}, "numbers or numeric arrays"),
        ({"input_domain.low": np.zeros(2), "input_domain.high": np.array(np.inf)}, "must be finite"),
        ({"extra.test_labels": np.array(["a", "b"])}, "extra.test_labels must be a 1-d array of integer"),
        ({"extra.test_labels": np.array([0.5])}, "extra.test_labels must be a 1-d array of integer"),
        ({"extra.test_images": np.ones((3, 5)), "input_shape": np.array([2])}, "extra.test_images have shape (5,)"),
        ({"extra.test_images": np.array([["x", "y"]])}, "extra.test_images must be a numeric batch"),
        ({"extra.test_images": np.ones((3, 2)), "extra.test_labels": np.array([1, 2])}, "2 labels for 3 test images"),
    ],
)
def test_invalid_contents(tmp_path, change, message):
    arrays = valid_arrays(tmp_path)
    arrays.update(change)
    with pytest.raises(ModelFileError) as info:
        load_npz(write_arrays(tmp_path / "changed.npz", **arrays))
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(("name", "accuracy", "input_shape"), [("digits-mlp", 0.95, (64,)), ("digits-cnn", 0.97, (1, 8, 8)),
                                                                   ("digits-resnet", 0.97, (1, 8, 8)),
                                                                   ("digits-paths", 0.93, (1, 8, 8)),
                                                                   ("digits-vit", 0.95, (1, 8, 8))])
def test_builtin_models(name, accuracy, input_shape):
    model = load_builtin(name)
    assert model.network.input_shape == input_shape and model.network.n_outputs == 10
    images, labels = model.test_images, model.test_labels
    assert images.shape == (8, *input_shape) and labels.shape == (8,)
    assert images.min() >= 0 and images.max() <= 1
    np.testing.assert_array_equal(model.input_domain.low, np.zeros(input_shape))
    np.testing.assert_array_equal(model.input_domain.high, np.ones(input_shape))
    predictions = model.network(images).argmax(axis=1)
    assert (predictions == labels).mean() >= 7 / 8
    assert float(model.extra["test_accuracy"]) >= accuracy  # on the 359 held-out images


def test_builtin_cnn_stores_a_batchnorm_that_folds():
    model = load_builtin("digits-cnn")
    assert any(isinstance(layer, BatchNorm) for layer in model.network.source_layers)
    assert not any(isinstance(layer, BatchNorm) for layer in model.network.layers)
    float32 = model.network(model.test_images.astype(np.float32))
    assert float32.dtype == np.float32
    np.testing.assert_allclose(float32, model.network(model.test_images), rtol=1e-4, atol=1e-4)


def test_unknown_builtin():
    assert set(BUILTIN_MODELS) == {"digits-mlp", "digits-cnn", "digits-resnet", "digits-paths", "digits-vit"}
    with pytest.raises(ModelFileError, match="no built-in model 'mnist'; available: digits-mlp, digits-cnn, "
                                             "digits-resnet, digits-paths, digits-vit"):
        load_builtin("mnist")


def test_layout_uses_documented_keys(tmp_path):
    save_npz(every_layer_network(), tmp_path / "net.npz", input_domain=(0.0, 1.0), extra={"note": np.arange(2)})
    with zipfile.ZipFile(tmp_path / "net.npz") as archive:
        keys = {name[: -len(".npy")] for name in archive.namelist()}
    assert {"format", "format_version", "layer_types", "layer0.weight", "layer0.bias", "layer0.stride",
            "layer0.padding", "layer1.gamma", "layer1.eps", "layer3.kernel", "layer3.stride", "layer8.weight",
            "input_shape", "input_domain.low", "input_domain.high", "extra.note"} <= keys
    with np.load(tmp_path / "net.npz", allow_pickle=False) as archive:
        assert str(archive["format"]) == "lrp-toolkit/sequential"
        assert archive["layer_types"].tolist() == ["Conv2d", "BatchNorm", "ReLU", "SumPool2d", "AvgPool2d",
                                                   "MaxPool2d", "Identity", "Flatten", "Dense"]


def test_every_layer_type_has_a_reader_and_a_writer():
    from lrp_num.io import model_io
    from lrp_num.layers import OPERATION_TYPES

    assert set(model_io._READERS) == set(OPERATION_TYPES)
    assert {cls.__name__ for cls in model_io._WRITERS} == set(OPERATION_TYPES)


def test_input_domain_must_fit_the_input_shape(tmp_path):
    network = Sequential([Dense(np.eye(2))], input_shape=(2,))
    with pytest.raises(ShapeError, match="input domain low of shape \\(3,\\) does not fit inputs of shape \\(2,\\)"):
        save_npz(network, tmp_path / "m.npz", input_domain=(np.zeros(3), np.ones(3)))
    arrays = valid_arrays(tmp_path)
    arrays.update({"input_shape": np.array([2]), "input_domain.low": np.zeros(5), "input_domain.high": np.ones(5)})
    with pytest.raises(ModelFileError, match="does not fit"):
        load_npz(write_arrays(tmp_path / "changed.npz", **arrays))
