"""``lrp verify``: compare the float64 engine with the high-precision reference.

    lrp verify                                  # every built-in model, every rule and composite
    lrp verify --model net.npz --rules zplus deep-taylor --samples 4 --dps 60 --json
    lrp verify --model digits-cnn --certified    # proved bounds in ball arithmetic (python-flint)
    lrp verify --model digits-cnn --inputs x.npy --workers 2 --json   # one Dask task per sample

Prints a table per model (or JSON with ``--json``, Markdown with ``--markdown``) and exits 0
when every required check holds, 1 when one fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json

from lrp_num.checks import MAX_DPS, MIN_DPS, check_dps
from lrp_num.errors import LRPError, UnknownRuleError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", metavar="PATH|NAME",
                        help="a model file (.npz, .onnx; chains and graphs) or built-in model, "
                             "repeatable (default: every built-in model)")
    parser.add_argument("--rules", nargs="+", metavar="NAME",
                        help="rules and composites to check (default: all of them)")
    parser.add_argument("--samples", type=int, default=2, metavar="K",
                        help="stored test images to explain per model (default 2)")
    parser.add_argument("--dps", type=int, default=50, metavar="D",
                        help=f"reference precision in decimal digits, {MIN_DPS} to {MAX_DPS} (default 50)")
    parser.add_argument("--certified", action="store_true",
                        help="also prove per rule and node that every engine value lies within k ulps of the "
                             "exact result (ball arithmetic; needs the 'certified' extra, python-flint)")
    parser.add_argument("--inputs", metavar="X.npy",
                        help="verify on this batch, shape (N, *input_shape), instead of stored test images")
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument("--workers", type=int, metavar="N",
                         help="split the samples over a local Dask cluster of N worker processes "
                              "(needs the [distributed] extra); --json then lists per-sample results")
    cluster.add_argument("--scheduler", metavar="ADDRESS",
                         help="split the samples over the Dask cluster at ADDRESS (tcp://host:port)")
    parser.add_argument("--local", action="store_true",
                        help="verify each node locally on K sampled neurons (large models; also "
                             "--model resnet18 or vgg11: random weights, one random 3x224x224 image)")
    parser.add_argument("--neurons", type=int, default=None, metavar="K",
                        help="with --local: output neurons sampled per node (default 256)")
    parser.add_argument("--local-seed", type=int, default=0, metavar="S",
                        help="with --local: seed of the neuron sample (default 0)")
    parser.add_argument("--path", choices=["arb", "mpmath"], default=None,
                        help="with --local: the reference's arithmetic, arb (ball arithmetic with matrix "
                             "products, needs python-flint: the [certified] extra) or mpmath (default: arb "
                             "where python-flint is installed, else mpmath)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the report as JSON")
    output.add_argument("--markdown", action="store_true", help="print the report as Markdown tables")


def _split_methods(names: list[str] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    from lrp_num.engine.composites import COMPOSITES
    from lrp_num.reference import RULES
    from lrp_num.verify import DEFAULT_COMPOSITES, DEFAULT_RULES

    if not names:  # z^B is checked at the input of the composites (deep-taylor, epsilon-gamma-box)
        return DEFAULT_RULES, DEFAULT_COMPOSITES
    rules, composites = [], []
    for name in (part for item in names for part in item.split(",") if part):
        if name in RULES:
            rules.append(name)
        elif name in COMPOSITES:
            composites.append(name)
        else:
            raise UnknownRuleError(f"unknown rule or composite {name!r}; rules: {', '.join(RULES)}; "
                                   f"composites: {', '.join(COMPOSITES)}")
    return tuple(rules), tuple(composites)


def _check_box_rule(spec: str, model) -> None:
    from lrp_num.layers import Conv2d, Dense

    n_linear = sum(isinstance(layer, (Dense, Conv2d)) for layer in model.network.layers)
    if model.input_domain is None:
        raise LRPError(f"{spec}: rule zbox needs the model's input box (input_domain), and it has none")
    if n_linear > 1:
        raise LRPError(f"{spec}: rule zbox applies to the first linear layer only; check it with "
                       "--rules deep-taylor (z^B at the input, z+ above)")


#: built-in models whose default check (no ``--rules``) is their own (rules, composites), not every
#: rule: the transformer digits-vit gets the composite its layers were derived for, AttnLRP (the
#: ReLU networks' root-point rules assume inputs in an orthant or a box, which token activations
#: are not), and the reference takes about 25 s per sample and method on it
MODEL_DEFAULT_METHODS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "digits-vit": ((), ("attnlrp",)),
}


def default_models() -> list[str]:
    """The models ``lrp verify`` checks by default: every built-in model
    (:data:`lrp_num.io.model_io.BUILTIN_MODELS`), so a model added there is verified too."""
    from lrp_num.io.model_io import BUILTIN_MODELS

    return list(BUILTIN_MODELS)


def verify_batch(spec: str, model, samples: int, inputs: str | None = None):
    """The inputs and targets ``lrp verify`` checks on a model: the ``inputs`` file (targets:
    the predictions), or its first ``samples`` stored test images, each explained for its stored
    label (the largest output where it stores none).

    Returns
    -------
    x : ndarray
        The ``inputs`` batch, or the first ``samples`` of ``model.test_images``.
    targets : ndarray of int or None
        The matching ``model.test_labels``, or None.
    """
    if inputs is not None:
        from lrp_num.commands.common import as_batch, read_array

        return as_batch(read_array(inputs, "--inputs"), model.network.input_shape, inputs), None
    images = model.test_images
    if images is None:
        raise LRPError(f"{spec}: the model stores no test images to verify on: pass --inputs X.npy")
    x = images[:samples]
    labels = model.test_labels
    return x, None if labels is None else labels[: len(x)].astype(int)


def run(args: argparse.Namespace) -> int:
    import contextlib

    from lrp_num.commands.common import load_model
    from lrp_num.verify import format_markdown, format_table, verify

    check_dps(args.dps, "--dps")
    if args.samples < 1:
        raise LRPError(f"--samples must be at least 1, got {args.samples}")
    if args.local:
        if args.workers is not None or args.scheduler is not None or args.certified or args.inputs:
            raise LRPError("--local runs one input in one process: leave out --workers, --scheduler, "
                           "--certified and --inputs")
        from lrp_num.commands.verify_local import run_local

        return run_local(args)
    if args.neurons is not None:
        raise LRPError("--neurons applies to the local check only: add --local")
    if args.path is not None:
        raise LRPError("--path applies to the local check only: add --local")
    if args.workers is not None and args.workers < 1:
        raise LRPError(f"--workers must be at least 1, got {args.workers}")
    distributed = args.workers is not None or args.scheduler is not None
    if distributed:
        from lrp_num.distributed import open_client, require_dask

        require_dask("--workers/--scheduler")
    from lrp_num.progress import print_above, progress

    rules, composites = _split_methods(args.rules)
    if args.certified and distributed:
        raise LRPError("--certified runs in one process: leave out --workers/--scheduler")
    if args.certified:
        from lrp_num.certified import require_flint

        require_flint()  # a missing extra: one line naming it, exit 2
    specs = args.model or default_models()
    if not args.json and not args.markdown:  # the header at once: the reference takes a while (minutes: about 4 of them for digits-resnet)
        where = ("" if not distributed else f", on {args.workers} local worker(s)" if args.scheduler is None
                 else f", on the Dask cluster at {args.scheduler}")
        what = f"the {args.inputs} inputs" if args.inputs else f"{args.samples} sample(s) each"
        own = "" if args.rules else "".join(f" ({spec}: {', '.join(sum(MODEL_DEFAULT_METHODS[spec], ()))} only)"
                                            for spec in specs if spec in MODEL_DEFAULT_METHODS)
        print(f"lrp verify: {len(specs)} model(s), {len(rules) + len(composites)} rules and "
              f"composites{own}, {what}, reference at {args.dps} digits{where}\n", flush=True)
    reports, per_sample = [], []
    with open_client(args.workers, args.scheduler) if distributed else contextlib.nullcontext() as client:
        for spec in progress(specs, "models"):
            model = load_model(spec)
            x, targets = verify_batch(spec, model, args.samples, args.inputs)
            model_rules, model_composites = (MODEL_DEFAULT_METHODS[spec] if not args.rules and spec in MODEL_DEFAULT_METHODS
                                             else (rules, composites))
            if "zbox" in model_rules:
                _check_box_rule(spec, model)
            common = dict(rules=model_rules, composites=model_composites, targets=targets, input_domain=model.input_domain,
                          dps=args.dps, model_name=spec)
            if distributed:
                from lrp_num.distributed import verify_distributed

                report, samples = verify_distributed(client, model.network, x, **common)
                reports.append(report)
                per_sample.append(samples)
            else:
                reports.append(verify(model.network, x, certified=args.certified, **common))
            if args.markdown:
                print_above(format_markdown(reports[-1]))
            elif not args.json:  # each model's table as soon as it is done
                print_above(format_table(reports[-1]) + ("\n" if len(reports) < len(specs) else ""))
    if args.json:
        items = [report.as_dict() for report in reports]
        for item, samples in zip(items, per_sample):  # distributed: each sample's own report too
            item["per_sample"] = samples
        print(json.dumps(items, indent=2, default=float))
    return 0 if all(report.ok for report in reports) else 1
