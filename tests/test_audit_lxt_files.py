"""lrp audit --library lxt on a ViT weights file of any shape (lrp_num.io.torch_vit.save_vit_weights).

Needs torch and LXT (``pip install --no-deps lxt==2.1``); skipped cleanly without them. One small
random-weight ViT (3x8x8, patch 4, width 24, one block of 3 heads), one sample, the reference at
20 digits.
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lxt")

from lrp_num.cli import main  # noqa: E402
from lrp_num.errors import ModelFileError, ShapeError  # noqa: E402
from lrp_num.io.torch_vit import (CONFIG_KEY, DIGITS_VIT, DIGITS_VIT_WEIGHTS, ViTConfig, build_vit,  # noqa: E402
                                  load_vit_torch, save_vit_weights)

SMALL = ViTConfig(channels=3, image_size=8, patch=4, width=24, depth=1, heads=3, mlp_width=48, classes=4)
DPS = "20"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(model, weights file with one stored test image, weights file without images, an input .npy)."""
    folder = tmp_path_factory.mktemp("vit")
    model = build_vit(SMALL, seed=3)
    x = np.random.default_rng(1).random((2, 3, 8, 8))
    with_images = save_vit_weights(model, folder / "small.npz", x, np.array([2, 0]))
    bare = save_vit_weights(model, folder / "bare.npz")
    np.save(folder / "x.npy", x[1])
    return model, with_images, bare, folder / "x.npy"


def _rewrite(source, target, **changes):
    """Copy a weights file with some arrays replaced (None: removed)."""
    with np.load(source, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    np.savez(target, **arrays)
    return target


def test_weights_file_round_trip(small):
    model, with_images, bare, _ = small
    loaded, extras = load_vit_torch(with_images)
    assert loaded.config == SMALL and set(extras) == {"test_images", "test_labels"}
    x = torch.tensor(extras["test_images"])
    with torch.no_grad():
        np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    assert load_vit_torch(bare)[1] == {}
    # equal models give equal bytes (fixed timestamps)
    again = save_vit_weights(model, bare.with_name("again.npz"))
    assert again.read_bytes() == bare.read_bytes()


def test_shipped_file_without_config_is_digits_vit():
    with np.load(DIGITS_VIT_WEIGHTS, allow_pickle=False) as archive:
        assert CONFIG_KEY not in archive.files
    model, extras = load_vit_torch(DIGITS_VIT_WEIGHTS)
    assert model.config == DIGITS_VIT and extras["test_images"].shape == (8, 1, 8, 8)


def test_save_checks_the_test_images(small, tmp_path):
    model = small[0]
    with pytest.raises(ShapeError, match=r"\(N, 3, 8, 8\)"):
        save_vit_weights(model, tmp_path / "w.npz", np.zeros((2, 1, 8, 8)))
    with pytest.raises(ShapeError, match="one integer per test image"):
        save_vit_weights(model, tmp_path / "w.npz", np.zeros((2, 3, 8, 8)), np.array([1]))
    assert not (tmp_path / "w.npz").exists()


@pytest.mark.parametrize("variant", ["attnlrp", "attnlrp-efficient", "cplrp"])
def test_cli_audits_a_vit_of_another_shape(small, capsys, variant):
    _, _, bare, x = small
    assert main(["audit", "--library", "lxt", "--model", str(bare), "--input", str(x), "--rule", variant,
                 "--json", "--dps", DPS]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "matches" and report["reference"]["verdict"] == "matches"
    compared = {row["graph_tensor"] for row in report["reference"]["tensors"]}
    assert {"input", "tokens", "blocks.0.norm2", "blocks.0.mlp.act", "norm"} <= compared


def test_cli_names_a_corrupted_softmax_in_a_vit_of_another_shape(small, capsys, monkeypatch):
    """Softmax without AttnLRP Prop. 3.1's s_i sum_j R_j term: named at the block's softmax."""
    import lxt.explicit.functional as lf

    _, with_images, _, _ = small

    def no_bias_term(ctx, *out):
        inputs, _ = ctx.saved_tensors
        return (inputs * out[0], None, None, None, None)

    monkeypatch.setattr(lf.softmax_fn, "backward", staticmethod(no_bias_term))
    assert main(["audit", "--library", "lxt", "--model", str(with_images), "--sample", "1", "--rule", "attnlrp",
                 "--dps", DPS]) == 1
    out = capsys.readouterr().out
    assert "deviates-from-reference" in out and "first deviates at blocks.0.attn.scores" in out, out
    assert "produced by blocks.0.attn.softmax (softmax)" in out and "verdict: fails" in out


def _one_line_error(capsys, argv, *fragments):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and not captured.out, captured.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_bad_weights_files(small, capsys, tmp_path):
    _, with_images, bare, x = small
    audit = ["audit", "--library", "lxt", "--rule", "cplrp", "--no-reference", "--model"]
    not_vit = tmp_path / "other.npz"
    np.savez(not_vit, weights=np.zeros(3))
    _one_line_error(capsys, audit + [str(not_vit)], "not a ViT weights file")
    wide = json.dumps({**json.loads(str(np.load(bare)[CONFIG_KEY])), "width": 32, "heads": 4})
    mismatch = _rewrite(bare, tmp_path / "mismatch.npz", **{CONFIG_KEY: np.asarray(wide)})
    _one_line_error(capsys, audit + [str(mismatch), "--input", str(x)],
                    "ViT parameter 'pos_embed' has shape (1, 4, 24), expected (1, 4, 32)")
    # a config far larger than its arrays is refused from the shapes alone (nothing of its size is allocated)
    huge = json.dumps({**json.loads(str(np.load(bare)[CONFIG_KEY])), "width": 300_000, "heads": 1, "mlp_width": 300_000})
    too_big = _rewrite(bare, tmp_path / "huge.npz", **{CONFIG_KEY: np.asarray(huge)})
    _one_line_error(capsys, audit + [str(too_big), "--input", str(x)], "'pos_embed' has shape (1, 4, 24)")
    deeper = json.dumps({**json.loads(str(np.load(bare)[CONFIG_KEY])), "depth": 2})
    missing = _rewrite(bare, tmp_path / "deeper.npz", **{CONFIG_KEY: np.asarray(deeper)})
    _one_line_error(capsys, audit + [str(missing), "--input", str(x)], "blocks.1.attn.q.weight")
    uneven = json.dumps({**json.loads(str(np.load(bare)[CONFIG_KEY])), "heads": 5})
    bad_config = _rewrite(bare, tmp_path / "uneven.npz", **{CONFIG_KEY: np.asarray(uneven)})
    _one_line_error(capsys, audit + [str(bad_config), "--input", str(x)], "heads do not divide the width")
    nan = _rewrite(bare, tmp_path / "nan.npz", **{"param.head.bias": np.full(4, np.nan)})
    _one_line_error(capsys, audit + [str(nan), "--input", str(x)], "'head.bias'", "NaN")
    _one_line_error(capsys, audit + [str(bare)], "stores no test images", "--input")
    _one_line_error(capsys, audit + [str(with_images), "--target", "4"], "--target 4 out of range", "4 outputs")
    digits_shaped = tmp_path / "digit.npy"
    np.save(digits_shaped, np.zeros((1, 1, 8, 8)))
    _one_line_error(capsys, audit + [str(bare), "--input", str(digits_shaped)], "shape (3, 8, 8)")


def test_load_rejects_stored_images_of_another_shape(small, tmp_path):
    _, with_images, _, _ = small
    wrong = _rewrite(with_images, tmp_path / "wrong.npz", test_images=np.zeros((2, 1, 8, 8)))
    with pytest.raises(ModelFileError, match=r"test_images have shape \(2, 1, 8, 8\)"):
        load_vit_torch(wrong)
