"""``lrp explain``: explain a model's prediction and report conservation and root points.

    lrp explain --sample 3 --composite deep-taylor --heatmap r.png
    lrp explain --model net.npz --input x.npy --rule zplus --target 7 --out r.npy
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lrp_num.commands.common import add_model_arguments, load_inputs, load_model, progress
from lrp_num.files import OutputPathError, check_output_path, npy_bytes, write_bytes_atomic

CHUNK = 64  # samples per backward pass; a progress bar shows for several chunks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--rule", help="one rule for every linear layer (see lrp derive --list)")
    how.add_argument("--composite", help="deep-taylor (default), epsilon-plus, epsilon-gamma-box, alpha2-beta1")
    parser.add_argument("--target", type=int, help="output index to explain (default: the prediction)")
    from lrp_num.conventions import BIAS_CONVENTIONS

    parser.add_argument("--bias", default="dtd", choices=BIAS_CONVENTIONS,
                        help="bias convention (default: dtd, the derivation)")
    parser.add_argument("--eps", type=float, default=1e-6, help="stabiliser (default 1e-6)")
    parser.add_argument("--stabilise", default="zero", choices=("zero", "everywhere"),
                        help="apply eps only at zero denominators (default) or everywhere")
    parser.add_argument("--out", metavar="R.npy", help="write the relevance here")
    parser.add_argument("--heatmap", metavar="OUT.png",
                        help="write input and relevance of the first sample; the format follows "
                             "the extension (png, pdf, svg, ...)")


def run(args: argparse.Namespace) -> int:
    from lrp_num.conventions import Conventions
    from lrp_num.explain import explain_details

    # check every output (folder, not a folder itself, format, matplotlib) before any work;
    # both files are written only at the very end, so a mistake never leaves one half-written
    if args.out:
        check_output_path(args.out, "the relevance")
    heatmap_format = None
    if args.heatmap:
        from lrp_num.heatmap import as_image, heatmap_format as format_of, render_heatmap

        check_output_path(args.heatmap, "the heatmap")
        heatmap_format = format_of(args.heatmap)
    if args.out and args.heatmap and Path(args.out).resolve() == Path(args.heatmap).resolve():
        raise OutputPathError(f"--out and --heatmap name the same file {args.out!r}")
    model = load_model(args.model)
    x = load_inputs(args, model)
    if args.heatmap:
        as_image(x[0])  # a sample that cannot be shown fails now, not after the work
    conventions = Conventions(bias=args.bias, eps=args.eps, stabilise=args.stabilise)
    method = dict(rule=args.rule) if args.rule else dict(composite=args.composite or "deep-taylor")
    explanations = []
    chunks = range(0, len(x), CHUNK)
    for start in progress(chunks, len(chunks), "explaining"):
        explanations.append(explain_details(
            model.network, x[start:start + CHUNK], target=args.target, conventions=conventions,
            input_domain=model.input_domain, **method))
    relevance = np.concatenate([e.relevance for e in explanations])
    output = np.concatenate([e.output for e in explanations])
    top = np.concatenate([e.relevance_top for e in explanations])

    name = args.rule or method["composite"]
    print(f"model {args.model}: {model.network.n_parameters} parameters; explaining {len(x)} "
          f"input(s) with {'rule' if args.rule else 'composite'} {name}")
    labels = model.test_labels
    targets = _explained_targets(args.target, output)
    for k in range(len(x)):
        predicted = int(output[k].argmax())
        explained = targets[k]
        line = f"  sample {k}: predicted {predicted}"
        if labels is not None and not args.input:
            line += f" (label {int(labels[(args.sample or [0])[k]])})"
        total = float(relevance[k].sum(dtype=np.float64))
        f_value = float(top[k].sum(dtype=np.float64))
        line += (f", explained output {explained} f = {f_value:.6g}, sum R = {total:.6g}, "
                 f"conservation error {abs(total - f_value):.2e}")
        print(line)
    print("  root points in the domain (fraction of active neurons, mean over samples):")
    for report in explanations[0].layers:
        if report.rule is None:
            continue
        fractions = np.concatenate([e.layers[report.index].root_point_valid for e in explanations]) \
            if report.root_point_valid is not None else None
        if fractions is not None:
            shown = f"{fractions.mean():.3f}"
        else:
            shown = "(no root point: pooling rule)" if report.rule == "maxpool" else "(no closed-form condition)"
        print(f"    layer {report.index:2d} {report.layer:40s} {report.rule:11s} {shown}")
    # everything that can fail is done: render in memory, then write
    picture = render_heatmap(x[0], relevance[0], heatmap_format,
                             title=f"{name}: output {targets[0]}") if args.heatmap else None
    if args.out:
        print(f"wrote relevance {relevance.shape} to {write_bytes_atomic(args.out, npy_bytes(relevance))}")
    if args.heatmap:
        print(f"wrote heatmap to {write_bytes_atomic(args.heatmap, picture)}")
    return 0


def _explained_targets(target: int | None, output: np.ndarray) -> list[int]:
    """The output index explained for each sample: ``--target``, else the prediction."""
    if target is not None:
        return [int(target)] * len(output)
    return [int(row.argmax()) for row in output.reshape(len(output), -1)]
