"""Train digits-vit, a two-block vision transformer on the 8x8 digits, and save its weights as plain arrays.

Data and split as ``scripts/train_digits.py`` (scikit-learn's digits, pixels scaled to [0, 1], the
same 20 % held out). Model: :data:`lrp_num.io.torch_vit.DIGITS_VIT` (2x2 patches, 16 tokens,
width 32, 4 heads, MLP width 64, two pre-norm blocks, mean pooling, a linear head).

Training: AdamW (lr 2e-3, weight decay 1e-4) on the softmax cross-entropy, batches of 32, a
cosine learning-rate schedule, float64; deterministic: fixed seeds, ``torch.use_deterministic_algorithms``,
one thread, so two runs on one machine write byte-identical files (the last bits of the weights
may differ across torch builds and CPUs).

Two outputs. ``lrp_num/models/digits_vit.npz``: the model as the engine's graph
(:func:`lrp_num.io.torch_vit.vit_graph`: LayerNorm, attention, GELU and skip-connection nodes) in
the project's model format, the built-in model ``digits-vit``.
``lrp_num/models/digits_vit_weights.npz``, its torch twin for the LXT audit, holds every parameter as ``param.<state-dict
name>`` (float64), 8 held-out images (the first of each digit 0..7, shape (8, 1, 8, 8)) with their
labels, and the accuracy on the whole held-out set; it is read with ``allow_pickle=False`` by
:func:`lrp_num.io.torch_vit.load_digits_vit_torch`.

Regenerate (needs scikit-learn and torch)::

    python scripts/train_digits_vit.py              # writes lrp_num/models/digits_vit{,_weights}.npz
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's lrp_num, not an installed one
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_digits import load_digits_split, stored_test_indices  # noqa: E402

from lrp_num.io.files import write_atomic  # noqa: E402
from lrp_num.io.model_io import _write_archive  # noqa: E402  (fixed timestamps: equal arrays, equal bytes)
from lrp_num.io.model_io import save_npz  # noqa: E402
from lrp_num.io.torch_vit import (DIGITS_VIT, DIGITS_VIT_WEIGHTS, WEIGHT_PREFIX, build_vit, vit_arrays,  # noqa: E402
                                  vit_graph)

#: the engine's model file of digits-vit (lrp_num.load_builtin("digits-vit"))
DIGITS_VIT_GRAPH = DIGITS_VIT_WEIGHTS.with_name("digits_vit.npz")

EPOCHS = 60
BATCH = 32
LEARNING_RATE = 2e-3
WEIGHT_DECAY = 1e-4


def deterministic_torch(seed: int):
    """torch with one thread, deterministic algorithms and the given seed."""
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    return torch


def train_vit(x: np.ndarray, y: np.ndarray, epochs: int = EPOCHS, seed: int = 1, log=print):
    """The trained digits-vit (float64, eval mode) for images x (N, 1, 8, 8) in [0, 1], labels y."""
    torch = deterministic_torch(seed)
    model = build_vit(DIGITS_VIT, seed=seed, dtype=torch.float64).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    steps = epochs * ((len(y) + BATCH - 1) // BATCH)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps)
    images, labels = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.int64)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        order = rng.permutation(len(y))
        losses = []
        for start in range(0, len(y), BATCH):
            idx = torch.tensor(order[start : start + BATCH])
            loss = torch.nn.functional.cross_entropy(model(images[idx]), labels[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
        if epoch % 10 == 9 or epoch == epochs - 1:
            log(f"  vit epoch {epoch + 1:3d}: mean loss {np.mean(losses):.4f}")
    return model.eval()


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        predicted = model(torch.tensor(x, dtype=torch.float64)).argmax(dim=1).numpy()
    return float((predicted == y).mean())


def weights_arrays(model, images: np.ndarray, labels: np.ndarray, test_accuracy: float) -> dict[str, np.ndarray]:
    """Parameters under ``param.``, the stored test images, labels and the held-out accuracy."""
    arrays = {f"{WEIGHT_PREFIX}{name}": value for name, value in sorted(vit_arrays(model).items())}
    arrays.update(test_images=np.asarray(images, dtype=np.float64), test_labels=np.asarray(labels, dtype=np.int64),
                  test_accuracy=np.float64(test_accuracy))
    return arrays


def save_graph_model(model, images: np.ndarray, labels: np.ndarray, test_accuracy: float, path: Path) -> None:
    """digits-vit as the engine's graph (:func:`lrp_num.io.torch_vit.vit_graph`) in the project's
    model format, with the input box [0, 1] and the same stored test images."""
    shape = (DIGITS_VIT.channels, DIGITS_VIT.image_size, DIGITS_VIT.image_size)
    save_npz(vit_graph(model), path, input_domain=(np.zeros(shape), np.ones(shape)),
             extra={"test_images": np.asarray(images, dtype=np.float64), "test_labels": np.asarray(labels, dtype=np.int64),
                    "test_accuracy": np.float64(test_accuracy)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DIGITS_VIT_WEIGHTS, help="output .npz file of the torch weights")
    parser.add_argument("--graph-out", type=Path, default=DIGITS_VIT_GRAPH, help="output .npz model file of the graph")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args()
    x_train, y_train, x_test, y_test = load_digits_split()
    shape = (-1, 1, 8, 8)
    started = time.perf_counter()
    model = train_vit(x_train.reshape(shape), y_train, args.epochs)
    test_accuracy = accuracy(model, x_test.reshape(shape), y_test)
    print(f"digits-vit: held-out accuracy {test_accuracy:.4f} on {len(y_test)} images, "
          f"trained in {time.perf_counter() - started:.1f} s")
    keep = stored_test_indices(y_test)
    arrays = weights_arrays(model, x_test[keep].reshape(shape), y_test[keep], test_accuracy)
    write_atomic(args.out, lambda stream: _write_archive(stream, arrays))
    print(f"  wrote {args.out} ({args.out.stat().st_size} bytes)")
    save_graph_model(model, x_test[keep].reshape(shape), y_test[keep], test_accuracy, args.graph_out)
    print(f"  wrote {args.graph_out} ({args.graph_out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
