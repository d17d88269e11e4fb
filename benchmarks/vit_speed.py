"""Explain time against forward time on vision transformers: digits-vit and a ViT-Tiny-shaped model.

Models (:mod:`lrp_num.io.torch_vit`): the trained digits-vit (1x8x8, 16 tokens, width 32, two
blocks) and ViT-Tiny's shape with random weights (3x224x224, patch 16, 196 tokens, width 192,
12 blocks, 3 heads, MLP width 768). Batch 8, float32, torch on the CPU.

Measured per model, each the best of ``--repeat`` runs (wall clock, ``time.perf_counter``) and
the process CPU time of that run (``time.process_time``; above the wall time when NumPy's BLAS or
torch uses several threads):

* ``engine forward``: the engine's graph (:func:`lrp_num.io.torch_vit.vit_graph`) on the float32
  batch, ``graph.forward``;
* ``engine explain``: ``lrp_num.explain(graph, x, composite="attnlrp")`` for the predicted class
  (one forward pass, then the derived rules node by node), float32;
* ``torch forward`` and ``LXT <variant>``: the torch twin under ``torch.no_grad``, and LXT 2.1's
  relevance (:func:`lrp_num.audit.lxt_adapter.run_lxt`: forward with LXT's rules and the recording
  taps, then one backward), for comparison.

The ratio engine explain / engine forward is printed against the goal of issue 15 (at most 4x).
The load average (``os.getloadavg``) before and after is printed: on a shared machine it says how
far the figures can be trusted. ViT-Tiny's position embedding is zero: the engine's graph embeds
its patches by the convolution, and has no node that adds a constant (timing is unaffected).

    python benchmarks/vit_speed.py                      # both models; LXT attnlrp-efficient and cplrp
    python benchmarks/vit_speed.py --models digits-vit --variants attnlrp --repeat 5 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL = 4.0
MODELS = ("digits-vit", "vit-tiny")


def _model(name: str, torch):
    from lrp_num.io.torch_vit import VIT_TINY, build_vit, load_digits_vit_torch

    if name == "digits-vit":
        model, extras = load_digits_vit_torch(dtype=torch.float32)
        x = np.resize(extras["test_images"], (8, 1, 8, 8))
        return model, x
    model = build_vit(VIT_TINY, seed=0, dtype=torch.float32)
    with torch.no_grad():
        model.pos_embed.zero_()
    x = np.random.default_rng(0).standard_normal((8, 3, 224, 224))
    return model, x


def _timed(function, repeat: int) -> tuple[float, float]:
    """(best wall seconds, CPU seconds of that run) over ``repeat`` calls after one warm-up."""
    function()
    best = (float("inf"), 0.0)
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        best = min(best, (wall, cpu))
    return best


def measure(name: str, variants: tuple[str, ...], repeat: int) -> dict:
    """Forward and explain times of one model (see the module docstring)."""
    import torch

    from lrp_num.audit.lxt_adapter import run_lxt

    import lrp_num
    from lrp_num.io.torch_vit import vit_graph

    model, x = _model(name, torch)
    x = x.astype(np.float32)
    inputs = torch.tensor(x)
    with torch.no_grad():
        targets = model(inputs).argmax(dim=1).numpy()
    graph = vit_graph(model.double())
    model.float()

    def torch_forward():
        with torch.no_grad():
            model(inputs)

    row = {"model": name, "batch": len(x), "dtype": "float32", "threads": torch.get_num_threads()}
    row["engine_forward_s"], row["engine_forward_cpu_s"] = _timed(lambda: graph.forward(x), repeat)
    row["engine_explain_s"], row["engine_explain_cpu_s"] = _timed(
        lambda: lrp_num.explain(graph, x, composite="attnlrp", target=targets), repeat)
    row["ratio_engine"] = row["engine_explain_s"] / row["engine_forward_s"]
    row["torch_forward_s"], row["torch_forward_cpu_s"] = _timed(torch_forward, repeat)
    for variant in variants:
        wall, cpu = _timed(lambda: run_lxt(model, x, targets, variant), repeat)
        row[f"lxt_{variant}_s"], row[f"lxt_{variant}_cpu_s"] = wall, cpu
        row[f"ratio_lxt_{variant}"] = wall / row["torch_forward_s"]
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--variants", nargs="+", default=["attnlrp-efficient", "cplrp"],
                        choices=("attnlrp", "attnlrp-efficient", "cplrp"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    rows = [measure(name, tuple(args.variants), args.repeat) for name in args.models]
    load_after = os.getloadavg()
    if args.json:
        print(json.dumps({"load_before": load_before, "load_after": load_after, "rows": rows}, indent=2))
        return 0
    print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; cores {os.cpu_count()}")
    for row in rows:
        ratio = row["ratio_engine"]
        print(f"{row['model']}: batch {row['batch']} {row['dtype']}")
        print(f"  engine forward {row['engine_forward_s'] * 1e3:.1f} ms (CPU {row['engine_forward_cpu_s'] * 1e3:.1f} ms), "
              f"explain attnlrp {row['engine_explain_s'] * 1e3:.1f} ms (CPU {row['engine_explain_cpu_s'] * 1e3:.1f} ms): "
              f"{ratio:.2f}x forward ({'within' if ratio <= GOAL else 'above'} the {GOAL:g}x goal)")
        print(f"  torch forward {row['torch_forward_s'] * 1e3:.1f} ms (CPU {row['torch_forward_cpu_s'] * 1e3:.1f} ms, "
              f"{row['threads']} threads)" + "".join(
                  f"; LXT {v} {row[f'lxt_{v}_s'] * 1e3:.1f} ms ({row[f'ratio_lxt_{v}']:.2f}x torch forward)"
                  for v in args.variants))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
