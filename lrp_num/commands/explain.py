"""``lrp explain``: explain a model's prediction and report conservation and root points.

    lrp explain --sample 3 --composite deep-taylor --heatmap r.png
    lrp explain --model net.npz --input x.npy --rule zplus --target 7 --out r.npy
    lrp explain --rule epsilon --epsilon 0.5 --stabiliser-eps 1e-9 --stabilise everywhere

Rule parameters (``--epsilon``, ``--gamma``, ``--alpha``, ``--beta``) go with ``--rule``; a
composite sets its own. ``--stabiliser-eps`` is the stabiliser of denominators (the
conventions' eps), not the epsilon rule's parameter; the old spelling ``--eps`` is an error
that says so. Every output is checked before the work and written all or none at the end.
"""

from __future__ import annotations

import argparse

import numpy as np

from lrp_num.commands.common import add_model_arguments, load_inputs, load_model, sample_names
from lrp_num.errors import LRPError
from lrp_num.io.files import check_distinct, check_output_path, npy_bytes, write_all_or_none
from lrp_num.progress import progress

CHUNK = 64  # samples per backward pass; a progress bar shows for several chunks
RULE_PARAMETERS = ("epsilon", "gamma", "alpha", "beta")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--rule", help="one rule for every linear layer (see lrp derive --list)")
    how.add_argument("--composite", help="deep-taylor (default), epsilon-plus, epsilon-gamma-box, alpha2-beta1")
    parser.add_argument("--target", type=int, help="output index to explain (default: the prediction)")
    from lrp_num.engine.conventions import BIAS_CONVENTIONS

    parser.add_argument("--bias", default="dtd", choices=BIAS_CONVENTIONS,
                        help="bias convention (default: dtd, the derivation)")
    for name in RULE_PARAMETERS:
        parser.add_argument(f"--{name}", type=float, metavar="VALUE",
                            help=f"rule parameter {name}, with --rule (default: the rule's own)")
    parser.add_argument("--stabiliser-eps", dest="stabiliser_eps", type=float, default=1e-6,
                        metavar="EPS", help="stabiliser added to denominators (default 1e-6); "
                                            "not the epsilon rule's parameter (--epsilon)")
    parser.add_argument("--stabilise", default="zero", choices=("zero", "everywhere"),
                        help="apply the stabiliser only at zero denominators (default) or everywhere")
    # the old name, kept so that it fails: argparse would otherwise read --eps as --epsilon
    parser.add_argument("--eps", dest="renamed_eps", metavar="EPS", help=argparse.SUPPRESS)
    parser.add_argument("--out", metavar="R.npy", help="write the relevance here")
    parser.add_argument("--heatmap", metavar="OUT.png",
                        help="write input and relevance of the first sample; the format follows "
                             "the extension (png, pdf, svg, ...)")


def _check_arguments(args: argparse.Namespace) -> dict[str, float]:
    """The rule parameters given; LRPError for the renamed --eps or parameters with a composite."""
    if args.renamed_eps is not None:
        raise LRPError("--eps was renamed: use --stabiliser-eps for the stabiliser of "
                       "denominators, or --epsilon for the epsilon rule's parameter")
    parameters = {name: getattr(args, name) for name in RULE_PARAMETERS
                  if getattr(args, name) is not None}
    if parameters and not args.rule:
        flags = ", ".join(f"--{name}" for name in parameters)
        verb = "goes" if len(parameters) == 1 else "go"
        raise LRPError(f"{flags} {verb} with --rule; a composite sets its own rule parameters")
    return parameters


def _method_text(args: argparse.Namespace, parameters: dict[str, float]) -> str:
    """The rule with every parameter it runs with (the kernel's defaults filled in), or the
    composite, and the stabiliser: what the header line prints."""
    from lrp_num.engine.kernels import kernel_parameters

    if args.rule:
        used = {**kernel_parameters(args.rule), **parameters}
        shown = ", ".join(f"{name}={value:g}" for name, value in used.items())
        method = f"rule {args.rule}" + (f" ({shown})" if shown else "")
    else:
        method = f"composite {args.composite or 'deep-taylor'} (its own rule parameters)"
    where = "at zero denominators" if args.stabilise == "zero" else "everywhere"
    return f"{method}; stabiliser eps={args.stabiliser_eps:g} {where}, bias {args.bias}"


def run(args: argparse.Namespace) -> int:
    from lrp_num.engine.conventions import Conventions
    from lrp_num.engine.explain import explain_details

    parameters = _check_arguments(args)
    # no output may overwrite an input (or another output), however the paths are spelled
    model_file = None if args.model in _builtin_names() else args.model
    check_distinct({"--out": args.out, "--heatmap": args.heatmap},
                   {"--input": args.input, "--model": model_file})
    # check every output (folder, not a folder itself, format, matplotlib) before any work;
    # the files are written all or none at the very end, so a mistake never leaves one
    if args.out is not None:
        check_output_path(args.out, "the relevance")
    heatmap_format = None
    if args.heatmap is not None:
        from lrp_num.io.heatmap import as_image, heatmap_format as format_of, render_heatmap

        check_output_path(args.heatmap, "the heatmap")
        heatmap_format = format_of(args.heatmap)
    model = load_model(args.model)
    x = load_inputs(args, model)
    if args.heatmap is not None:
        as_image(x[0])  # a sample that cannot be shown fails now, not after the work
    conventions = Conventions(bias=args.bias, eps=args.stabiliser_eps, stabilise=args.stabilise)
    method = dict(rule=args.rule, **parameters) if args.rule else \
        dict(composite=args.composite or "deep-taylor")
    method_text = _method_text(args, parameters)  # an unknown rule fails here, naming the known ones
    explanations = []
    chunks = range(0, len(x), CHUNK)
    for start in progress(chunks, "explaining"):
        explanations.append(explain_details(
            model.network, x[start:start + CHUNK], target=args.target, conventions=conventions,
            input_domain=model.input_domain, **method))
    relevance = np.concatenate([e.relevance for e in explanations])
    output = np.concatenate([e.output for e in explanations])
    top = np.concatenate([e.relevance_top for e in explanations])

    name = args.rule or method["composite"]
    print(f"model {args.model}: {model.network.n_parameters} parameters; explaining {len(x)} "
          f"input(s) with {method_text}")
    labels = model.test_labels
    targets = _explained_targets(args.target, output)
    names = sample_names(args, len(x))
    for k in range(len(x)):
        predicted = int(output[k].argmax())
        explained = targets[k]
        line = f"  {names[k]}: predicted {predicted}"
        if labels is not None and args.input is None:
            line += f" (label {int(labels[(args.sample or [0])[k]])})"
        total = float(relevance[k].sum(dtype=np.float64))
        f_value = float(top[k].sum(dtype=np.float64))
        line += (f", explained output {explained} f = {f_value:.6g}, sum R = {total:.6g}, "
                 f"conservation error {abs(total - f_value):.2e}")
        print(line)
    print("  root points in the domain (fraction of active neurons, mean over samples):")
    graph = hasattr(model.network, "nodes")  # a graph's reports name its nodes
    for position, report in enumerate(explanations[0].layers):
        if report.rule is None:
            continue
        fractions = np.concatenate([e.layers[position].root_point_valid for e in explanations]) \
            if report.root_point_valid is not None else None
        if fractions is not None:
            shown = f"{fractions.mean():.3f}"
        else:
            shown = "(no root point: pooling rule)" if report.rule == "maxpool" else "(no closed-form condition)"
        where = f"node {report.name:24s}" if graph and report.name else f"layer {report.index:2d}"
        print(f"    {where} {report.layer:40s} {report.rule:11s} {shown}")
    # everything that can fail is done: render in memory, then write all files or none
    files = {}
    if args.out is not None:
        files[args.out] = npy_bytes(relevance)
    if args.heatmap is not None:
        files[args.heatmap] = render_heatmap(x[0], relevance[0], heatmap_format,
                                             title=f"{name}: output {targets[0]}")
    written = write_all_or_none(files)
    if args.out is not None:
        print(f"wrote relevance {relevance.shape} to {written[0]}")
    if args.heatmap is not None:
        print(f"wrote heatmap to {written[-1]}")
    return 0


def _builtin_names() -> tuple[str, ...]:
    from lrp_num.io.model_io import BUILTIN_MODELS

    return tuple(BUILTIN_MODELS)


def _explained_targets(target: int | None, output: np.ndarray) -> list[int]:
    """The output index explained for each sample: ``--target``, else the prediction."""
    if target is not None:
        return [int(target)] * len(output)
    return [int(row.argmax()) for row in output.reshape(len(output), -1)]
