"""Explain time against forward time on vision transformers: digits-vit and a ViT-Tiny-shaped model.

Models (:mod:`lrp_num.io.torch_vit`): the trained digits-vit (1x8x8, 16 tokens, width 32, two
blocks) and ViT-Tiny's shape with random weights (3x224x224, patch 16, 196 tokens, width 192,
12 blocks, 3 heads, MLP width 768). Batch 8, float32, torch on the CPU.

Measured per model, each the best of ``--repeat`` runs (wall clock, ``time.perf_counter``) and
the process CPU time of that run (``time.process_time``; above the wall time when torch uses
several threads):

* ``forward``: the model's own forward pass under ``torch.no_grad``;
* ``explain <variant>``: LXT 2.1's relevance for the predicted class
  (:func:`lrp_num.audit.lxt_adapter.run_lxt`: forward with LXT's rules and the recording taps,
  then one backward), for each variant asked for.

The ratio explain / forward is printed against the goal of issue 15 (at most 4x). The load
average (``os.getloadavg``) before and after is printed: on a shared machine it says how far the
figures can be trusted. The engine's own (NumPy) forward and explain need digits-vit as a graph of
the engine's layers (LayerNorm, attention, GELU); they are not measured here.

    python benchmarks/vit_speed.py                      # both models, attnlrp-efficient and cplrp
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

    model, x = _model(name, torch)
    inputs = torch.tensor(x, dtype=torch.float32)
    with torch.no_grad():
        targets = model(inputs).argmax(dim=1).numpy()

    def forward():
        with torch.no_grad():
            model(inputs)

    row = {"model": name, "batch": len(x), "dtype": "float32", "threads": torch.get_num_threads()}
    row["forward_s"], row["forward_cpu_s"] = _timed(forward, repeat)
    for variant in variants:
        wall, cpu = _timed(lambda: run_lxt(model, x.astype(np.float32), targets, variant), repeat)
        row[f"explain_{variant}_s"], row[f"explain_{variant}_cpu_s"] = wall, cpu
        row[f"ratio_{variant}"] = wall / row["forward_s"]
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
        print(f"{row['model']}: batch {row['batch']} {row['dtype']}, {row['threads']} torch threads; forward "
              f"{row['forward_s'] * 1e3:.1f} ms (CPU {row['forward_cpu_s'] * 1e3:.1f} ms)")
        for variant in args.variants:
            ratio = row[f"ratio_{variant}"]
            print(f"  explain {variant}: {row[f'explain_{variant}_s'] * 1e3:.1f} ms (CPU "
                  f"{row[f'explain_{variant}_cpu_s'] * 1e3:.1f} ms), {ratio:.2f}x forward "
                  f"({'within' if ratio <= GOAL else 'above'} the {GOAL:g}x goal)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
