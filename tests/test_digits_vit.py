"""digits-vit: the torch vision transformer, its stored weights (plain arrays, no pickle), the
held-out accuracy and the byte-reproducible training script.

Needs torch; the training checks also need scikit-learn (skipped cleanly without them).
"""

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lrp_num.errors import ModelFileError  # noqa: E402
from lrp_num.io.torch_vit import (DIGITS_VIT, DIGITS_VIT_WEIGHTS, VIT_TINY, TorchOps, ViTConfig,  # noqa: E402
                                  build_vit, load_digits_vit_torch, vit_arrays, vit_from_arrays)

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def test_stored_digits_vit_is_accurate_and_predicts_its_test_images():
    model, extras = load_digits_vit_torch()
    assert extras["test_accuracy"] >= 0.95
    assert extras["test_images"].shape == (8, 1, 8, 8) and list(extras["test_labels"]) == list(range(8))
    with torch.no_grad():
        predicted = model(torch.tensor(extras["test_images"])).argmax(dim=1).numpy()
    assert (predicted == extras["test_labels"]).mean() >= 7 / 8


def test_stored_accuracy_is_the_held_out_accuracy():
    pytest.importorskip("sklearn")
    sys.path.insert(0, str(SCRIPTS))
    from train_digits import load_digits_split

    _, _, x_test, y_test = load_digits_split()
    model, extras = load_digits_vit_torch()
    with torch.no_grad():
        predicted = model(torch.tensor(x_test.reshape(-1, 1, 8, 8))).argmax(dim=1).numpy()
    assert float((predicted == y_test).mean()) == pytest.approx(float(extras["test_accuracy"]), abs=0)


def test_architecture_shapes():
    model = build_vit(DIGITS_VIT, seed=0)
    assert model(torch.zeros(3, 1, 8, 8, dtype=torch.float64)).shape == (3, 10)
    assert model.pos_embed.shape == (1, 16, 32) and len(model.blocks) == 2
    assert VIT_TINY.tokens == 196 and VIT_TINY.head_width == 64
    small = ViTConfig(channels=3, image_size=8, patch=4, width=12, depth=1, heads=3, mlp_width=24, classes=5)
    assert build_vit(small, seed=1)(torch.ones(2, 3, 8, 8, dtype=torch.float64)).shape == (2, 5)


def test_ops_see_every_operation_and_keep_the_forward():
    class Counting(TorchOps):
        def __init__(self):
            self.names = []

        def observe(self, name, tensor):
            self.names.append(name)
            return tensor

    model = build_vit(DIGITS_VIT, seed=0)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        plain = model(x)
        model.ops = Counting()
        counted = model(x)
    assert torch.equal(plain, counted)
    names = model.ops.names
    for k in range(2):
        for op in ("norm1", "attn.scores", "attn.softmax", "attn.mix", "norm2", "mlp.act", "add1", "add2"):
            assert f"blocks.{k}.{op}" in names
    assert names[0] == "patch_embed" and names[-1] == "head"


def test_arrays_round_trip_and_mismatches_are_model_file_errors():
    model = build_vit(DIGITS_VIT, seed=3)
    arrays = vit_arrays(model)
    again = vit_from_arrays(arrays)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    missing = dict(arrays)
    del missing["head.bias"]
    with pytest.raises(ModelFileError, match="missing \\['head.bias'\\]"):
        vit_from_arrays(missing)
    wrong = {**arrays, "head.bias": np.zeros(3)}
    with pytest.raises(ModelFileError, match="head.bias"):
        vit_from_arrays(wrong)


def test_weights_file_is_read_without_pickle(tmp_path):
    bad = tmp_path / "w.npz"
    np.savez(bad, **{"param.head.bias": np.array([object()], dtype=object)})
    with pytest.raises(ModelFileError):
        load_digits_vit_torch(bad)
    with pytest.raises(ModelFileError, match="cannot read"):
        load_digits_vit_torch(tmp_path / "missing.npz")
    assert DIGITS_VIT_WEIGHTS.is_file()


def test_training_is_byte_reproducible(tmp_path):
    pytest.importorskip("sklearn")
    sys.path.insert(0, str(SCRIPTS))
    import train_digits_vit
    from train_digits import load_digits_split

    from lrp_num.io.model_io import _write_archive

    x, y, _, _ = load_digits_split()
    files = []
    for k in range(2):
        model = train_digits_vit.train_vit(x[:96].reshape(-1, 1, 8, 8), y[:96], epochs=1, log=lambda _: None)
        arrays = train_digits_vit.weights_arrays(model, x[:2].reshape(-1, 1, 8, 8), y[:2], 0.5)
        path = tmp_path / f"w{k}.npz"
        with open(path, "wb") as stream:
            _write_archive(stream, arrays)
        files.append(path.read_bytes())
    assert files[0] == files[1]
    untrained = vit_arrays(build_vit(DIGITS_VIT, seed=1))
    assert not np.array_equal(untrained["head.weight"], arrays["param.head.weight"])  # it did train


# ---- the engine's graph of digits-vit ------------------------------------------------------------

def test_reshape_layer_and_its_model_file_entry(tmp_path):
    from lrp_num.engine.graph import INPUT, Graph
    from lrp_num.errors import ShapeError
    from lrp_num.io.model_io import load_npz, save_npz
    from lrp_num.layers import Dense, Flatten, Reshape

    layer = Reshape((2, 3))
    assert layer(np.arange(12.0).reshape(2, 6)).shape == (2, 2, 3)
    with pytest.raises(ShapeError, match="cannot reshape"):
        layer(np.zeros((2, 5)))
    for bad in [(), (0, 3), (2.5,), "ab"]:
        with pytest.raises(ShapeError):
            Reshape(bad)
    rng = np.random.default_rng(0)
    graph = Graph([("tokens", Reshape((2, 3)), (INPUT,)), ("flat", Flatten(), ("tokens",)),
                   ("fc", Dense(rng.normal(size=(6, 4)), rng.normal(size=4)), ("flat",))], input_shape=(6,))
    save_npz(graph, tmp_path / "g.npz")
    again = load_npz(tmp_path / "g.npz").network
    assert repr(again.node("tokens").operation) == "Reshape((2, 3))"
    x = rng.normal(size=(3, 6))
    np.testing.assert_array_equal(again.forward(x), graph.forward(x))


def test_relevance_passes_a_reshape_unchanged():
    import lrp_num
    from lrp_num.engine.graph import INPUT, Graph
    from lrp_num.layers import Dense, Flatten, Reshape, TokenDense

    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(3, 2)), rng.normal(size=2)
    graph = Graph([("tokens", Reshape((2, 3)), (INPUT,)), ("mix", TokenDense(w, b), ("tokens",)),
                   ("flat", Flatten(), ("mix",)), ("fc", Dense(rng.normal(size=(4, 3)), np.zeros(3)), ("flat",))],
                  input_shape=(6,))
    x = rng.normal(size=(2, 6))
    explanation = lrp_num.explain(graph, x, rule="epsilon")
    assert explanation.shape == x.shape
    # the same as the tokens given directly to a graph without the Reshape
    direct = Graph([("mix", TokenDense(w, b), (INPUT,)), ("flat", Flatten(), ("mix",)),
                    ("fc", graph.node("fc").operation, ("flat",))], input_shape=(2, 3))
    np.testing.assert_allclose(explanation, lrp_num.explain(direct, x.reshape(2, 2, 3), rule="epsilon").reshape(2, 6),
                               rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("config", [DIGITS_VIT, ViTConfig(channels=3, image_size=8, patch=4, width=12, depth=2,
                                                          heads=3, mlp_width=24, classes=5)])
def test_graph_computes_what_the_torch_model_computes(config):
    from lrp_num.io.torch_vit import vit_graph

    model = build_vit(config, seed=4)
    with torch.no_grad():  # a position embedding and biases well away from 0
        model.pos_embed.normal_(0.0, 0.5)
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.bias.normal_(0.0, 0.3)
    x = np.random.default_rng(2).random((3, config.channels, config.image_size, config.image_size))
    graph = vit_graph(model)
    with torch.no_grad():
        expected = model(torch.tensor(x)).numpy()
    np.testing.assert_allclose(graph.forward(x), expected, rtol=1e-12, atol=1e-12)


def test_builtin_digits_vit_is_the_trained_model():
    import lrp_num

    model = lrp_num.load_builtin("digits-vit")
    twin, extras = load_digits_vit_torch()
    np.testing.assert_array_equal(model.test_images, extras["test_images"])
    assert float(model.extra["test_accuracy"]) == float(extras["test_accuracy"])
    with torch.no_grad():
        expected = twin(torch.tensor(model.test_images)).numpy()
    np.testing.assert_allclose(model.network.forward(model.test_images), expected, rtol=1e-12, atol=1e-12)


def test_engine_attnlrp_on_digits_vit_is_close_to_lxt():
    """The engine's derived AttnLRP (composite attnlrp) and LXT's explicit AttnLRP give the same
    input relevance up to their stabilisers (LXT adds 1e-6 to every linear denominator, 1e-8 elsewhere)."""
    pytest.importorskip("lxt")
    import lrp_num
    from lrp_num.audit.lxt_adapter import run_lxt

    model = lrp_num.load_builtin("digits-vit")
    twin, _ = load_digits_vit_torch()
    x, labels = model.test_images[:3], model.test_labels[:3]
    ours = lrp_num.explain(model.network, x, composite="attnlrp", target=labels)
    lxt = run_lxt(twin, x, labels, "attnlrp").relevance
    scale = np.abs(ours).max()
    assert np.abs(ours - lxt).max() < 1e-3 * scale


def test_large_models_embed_patches_by_convolution(monkeypatch):
    import lrp_num
    import lrp_num.io.torch_vit as torch_vit
    from lrp_num.errors import UnsupportedLayerError
    from lrp_num.layers import Conv2d, SplitHeads

    monkeypatch.setattr(torch_vit, "DENSE_EMBEDDING_LIMIT", 0)
    config = ViTConfig(channels=3, image_size=16, patch=4, width=12, depth=1, heads=3, mlp_width=24, classes=5)
    model = build_vit(config, seed=5)
    with pytest.raises(UnsupportedLayerError, match="zero position embedding"):
        torch_vit.vit_graph(model)
    with torch.no_grad():
        model.pos_embed.zero_()
    graph = torch_vit.vit_graph(model)
    assert isinstance(graph.node("patch_embed").operation, Conv2d)
    assert isinstance(graph.node("patch_tokens").operation, SplitHeads)
    x = np.random.default_rng(3).random((2, 3, 16, 16))
    with torch.no_grad():
        expected = model(torch.tensor(x)).numpy()
    np.testing.assert_allclose(graph.forward(x), expected, rtol=1e-12, atol=1e-13)
    # relevance comes back through the transposing nodes to the pixels: the same as with the Dense embedding
    monkeypatch.setattr(torch_vit, "DENSE_EMBEDDING_LIMIT", 10**9)
    dense = torch_vit.vit_graph(model)
    np.testing.assert_allclose(lrp_num.explain(graph, x, composite="attnlrp"),
                               lrp_num.explain(dense, x, composite="attnlrp"), rtol=1e-9, atol=1e-12)


def test_lrp_verify_checks_digits_vit_with_attnlrp_by_default(capsys):
    """The default run (no --rules) checks digits-vit with the composite its layers were derived
    for, against the mpmath reference, with conservation and the balance of absorbed amounts."""
    import json

    from lrp_num.cli import main
    from lrp_num.commands.verify import MODEL_DEFAULT_METHODS, default_models

    assert "digits-vit" in default_models() and MODEL_DEFAULT_METHODS["digits-vit"] == ((), ("attnlrp",))
    assert main(["verify", "--model", "digits-vit", "--samples", "1", "--dps", "30", "--json"]) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report["ok"] and [(row["name"], row["kind"]) for row in report["rows"]] == [("attnlrp", "composite")]
    checks = {check["name"]: check["status"] for check in report["rows"][0]["checks"]}
    assert checks["conservation"] == "pass" and checks["balance"] == "pass" and checks["agreement"] == "pass"
