"""``lrp verify --local``: the layer-local check of :mod:`lrp_num.verify_local`.

    lrp verify --local --model resnet18 --neurons 256          # random ResNet-18, one 3x224x224 image
    lrp verify --local --model digits-cnn --rules deep-taylor epsilon-plus --samples 2 --json
    lrp verify --local --model vgg11 --path mpmath --neurons 8   # the mpmath reference instead of arb

Per model (default: every built-in model), method (rule or composite; default the deep-taylor
composite) and sample (``--samples``, default 2): one table
(or JSON with ``--json``). ``--path arb`` (the default where python-flint is installed) computes
the reference in ball arithmetic, ``--path mpmath`` in mpmath. Exit 0 when every node passes, 1
when one fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from lrp_num.errors import LRPError

#: architectures with random weights that ``--model`` names in the local check, with their input
ARCHITECTURES = {"resnet18": (3, 224, 224), "vgg11": (3, 224, 224)}


def architecture(name: str, seed: int = 0):
    """(graph, one input) of a random-weight ResNet-18 or VGG-11-BN (torch's initialisation,
    seeded) at 3x224x224, and a uniform random image in [0, 1) from the same seed."""
    from lrp_num.io.torch_architectures import resnet18, vgg11_bn
    from lrp_num.io.torch_import import from_torch_module

    shape = ARCHITECTURES[name]
    model = (resnet18 if name == "resnet18" else vgg11_bn)(seed=seed).double()
    graph = from_torch_module(model, shape)
    return graph, np.random.default_rng(seed).random(shape)


def _methods(names) -> list[tuple[str, str]]:
    from lrp_num.commands.verify import _split_methods

    if not names:
        return [("composite", "deep-taylor")]
    rules, composites = _split_methods(names)
    return [("rule", name) for name in rules] + [("composite", name) for name in composites]


def run_local(args: argparse.Namespace) -> int:
    from lrp_num.commands.common import load_model
    from lrp_num.commands.verify import default_models
    from lrp_num.progress import print_above, progress
    from lrp_num.verify_local import DEFAULT_NEURONS, default_path, format_local_table, verify_local

    neurons = DEFAULT_NEURONS if args.neurons is None else args.neurons
    if neurons < 1:
        raise LRPError(f"--neurons must be at least 1, got {neurons}")
    path = default_path() if args.path is None else args.path
    if path == "arb":  # before any model is built: one line naming the extra
        from lrp_num.certified.balls import require_flint

        require_flint()
    methods = _methods(args.rules)
    specs = args.model or default_models()
    reports = []
    for spec in progress(specs, "models"):
        if spec in ARCHITECTURES:
            graph, image = architecture(spec, args.local_seed)
            inputs, targets, domain = image[None], [None], None
        else:
            model = load_model(spec)
            if model.test_images is None:
                raise LRPError(f"{spec}: the model stores no test images to verify on")
            graph, domain = model.network, model.input_domain
            inputs = model.test_images[: args.samples]
            labels = model.test_labels
            targets = [None] * len(inputs) if labels is None else [int(t) for t in labels[: len(inputs)]]
        for kind, name in methods:
            for x, target in zip(inputs, targets):
                method = {"rule": name} if kind == "rule" else {"composite": name}
                report = verify_local(graph, x, target=target, input_domain=domain, neurons=neurons,
                                      seed=args.local_seed, dps=args.dps, path=path, model_name=spec,
                                      **method)
                reports.append(report)
                if args.markdown:
                    print_above("```\n" + format_local_table(report) + "\n```\n")
                elif not args.json:
                    print_above(format_local_table(report) + "\n")
    if args.json:
        print(json.dumps([report.as_dict() for report in reports], indent=2, default=float))
    return 0 if all(report.ok for report in reports) else 1
