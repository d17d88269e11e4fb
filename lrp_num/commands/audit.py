"""``lrp audit``: check another library's LRP, or a saved attribution, against the reference.

    lrp audit --library zennit --model digits-cnn --rule zplus --sample 3
    lrp audit --library captum --model net.pt --architecture net.json --input x.npy --rule epsilon --json
    lrp audit --attribution R.npy --model digits-mlp --sample 0 --rule zplus --markdown
    lrp audit --attribution R.npy --model net.npz --input x.npy --rule alphabeta --convention mine.toml
    lrp audit --attribution R.npy --model net.npz --input x.npy --rule zplus --layers relevance/ --plot audit.png
    lrp audit --library autolrp --model digits-mlp --rule epsilon --sample 0
    lrp audit --library zennit --model digits-cnn --input x.npy --rule zplus --workers 2   # one task per sample
    lrp audit --library lxt --model digits-vit --rule attnlrp --sample 0 --sample 1   # LXT 2.1 on a transformer

The library runs on the PyTorch twin of the model (float64, or float32 with ``--dtype``); the
mpmath reference runs under the library's profile (:mod:`lrp_num.audit.profiles`) and under the
deep Taylor derivation. A saved attribution is compared with every known convention (zennit,
captum, autoLRP, the bias-as-a-neuron convention of Bach et al. 2015), one library's
(``--for-library``) or one described in a file (``--convention``); ``--layers DIR`` adds its
per-layer relevance. A deviation counts when it exceeds the rounding bound of the dtype the
attribution was computed in (``--tolerance`` replaces it by a relative tolerance). Exit status:

0  the attribution is what the claimed convention produces and every check holds
   ("verdict: matches");
1  it matches no known convention, deviates from its library's convention (with ``--layers``:
   at some layer), applies a rule outside its domain, or conservation or positivity fail beyond
   what the convention implies; with ``--strict`` also any departure from DTD ("verdict: fails");
2  an error: bad input, or a missing torch, zennit, captum, autoLRP (``--library autolrp``) or
   matplotlib (``--plot``) is one line saying what to install.

``--library lxt`` (LXT 2.1, ``pip install --no-deps lxt==2.1``) audits a vision transformer op by op
(:mod:`lrp_num.audit.lxt_audit`): ``--model digits-vit`` or a ViT weights .npz of any shape
(:func:`lrp_num.io.torch_vit.save_vit_weights`: the parameters and the ``ViTConfig``; a file without
a config is digits-vit's shape; ``--input X.npy`` where it stores no test images),
``--rule attnlrp``, ``attnlrp-efficient`` or ``cplrp``; the report
names the ops (softmax, matmul, layer_norm, ...) where relevance leaks; exit 1 where an op whose
rule conserves relevance absorbs some, or where LXT's relevance at some node deviates from the
mpmath reference with LXT's conventions restated (:mod:`lrp_num.audit.lxt_reference`, at ``--dps``
digits; the report names the first deviating node from the output down; ``--no-reference`` skips
it); with ``--strict`` also where it departs from our ``attnlrp`` as derived.
``--model X.onnx --input X.npy`` (or the engine's model file of a transformer graph, .npz)
audits an imported transformer graph on its ops twin
(:mod:`lrp_num.io.torch_ops_twin`; ``attnlrp``, and the efficient variants where the attention is
named as :func:`lrp_num.layers.attention.multi_head_attention` names it). ``--model W.pt
--architecture ARCH.json --input X.npy`` audits a plain PyTorch transformer encoder
(nn.MultiheadAttention; :mod:`lrp_num.io.torch_encoder`, state dict read with ``weights_only=True``):
``cplrp`` with LXT's patch on the module itself (:func:`lrp_num.audit.lxt_module.audit_lxt_module`),
``attnlrp`` and ``attnlrp-efficient`` on the ops twin of its torch import.

    lrp audit --library lxt --model my_vit.npz --input x.npy --rule attnlrp
    lrp audit --library lxt --model block.onnx --input tokens.npy --rule attnlrp
    lrp audit --library lxt --model encoder.pt --architecture encoder.json --input tokens.npy --rule cplrp
"""

from __future__ import annotations

import argparse

import numpy as np

from lrp_num.checks import MAX_DPS, MIN_DPS, check_dps
from lrp_num.commands.common import add_model_arguments, load_inputs, load_model, read_array


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--architecture", metavar="ARCH.json",
                        help="with --model WEIGHTS.pt (a torch state dict): the module list (see "
                             "lrp_num.io.torch_bridge.ARCHITECTURE_HELP); with --library lxt: the sizes of a "
                             "transformer encoder (lrp_num.io.torch_encoder.ENCODER_HELP)")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--library", choices=("zennit", "captum", "autolrp", "lxt"),
                      help="run this library's LRP and audit it (lxt: on a transformer: --model digits-vit, a ViT "
                           "weights .npz from lrp_num.io.torch_vit.save_vit_weights, the engine's .npz model file "
                           "of a transformer graph, an .onnx file with --input, or a state dict W.pt of "
                           "lrp_num.io.torch_encoder's encoder with --architecture ENCODER.json and --input)")
    what.add_argument("--attribution", metavar="R.npy", help="audit a saved input relevance from any tool")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--rule", help="one of our rule names on every linear layer (zplus, epsilon, gamma, "
                                    "alphabeta, w2, flat)")
    how.add_argument("--composite", help="deep-taylor, epsilon-plus, epsilon-gamma-box, alpha2-beta1")
    parser.add_argument("--for-library", choices=("zennit", "captum", "autolrp", "bias-neuron"), dest="for_library",
                        help="with --attribution: compare with this library's (or convention's) profile only")
    parser.add_argument("--convention", metavar="FILE",
                        help="with --attribution: compare with the convention this JSON or TOML file describes "
                             "(bias placement, stabiliser, rule variants; see lrp_num.audit.convention_file)")
    parser.add_argument("--layers", metavar="DIR",
                        help="with --attribution: a folder of layer_<k>.npy files, the tool's relevance at the input "
                             "of folded layer k, to localise a deviation (see lrp_num.audit.layer_files)")
    parser.add_argument("--target", type=int, help="output index to explain (default: the prediction)")
    for name in ("epsilon", "gamma", "alpha", "beta"):
        parser.add_argument(f"--{name}", type=float, help=f"rule parameter {name} (default: the library's)")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="relative deviation counted as equal (default: the rounding bound of the "
                             "attribution's dtype, per layer)")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                        help="with --library: the type the library computes in (default float64)")
    parser.add_argument("--strict", action="store_true",
                        help="fail (exit 1) also where the attribution departs from DTD")
    parser.add_argument("--no-reference", action="store_true", dest="no_reference",
                        help="--library lxt: skip the node-by-node comparison with the mpmath reference "
                             "(only LXT's bookkeeping against its own profile)")
    parser.add_argument("--dps", type=int, default=50,
                        help=f"digits of the mpmath reference, {MIN_DPS} to {MAX_DPS} (default 50)")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also draw per-layer deviation and absorption bars and the library / reference / "
                             "difference input heatmaps of the first sample (needs matplotlib: the heatmap extra)")
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument("--workers", type=int, metavar="N",
                         help="audit each sample on its own, split over a local Dask cluster of N worker "
                              "processes (needs the [distributed] extra); one verdict for the batch")
    cluster.add_argument("--scheduler", metavar="ADDRESS",
                         help="as --workers, on the Dask cluster at ADDRESS (tcp://host:port)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the report as JSON")
    output.add_argument("--markdown", action="store_true", help="print the report as Markdown")


def _model(args):
    if args.model.endswith(".pt") or args.architecture:
        from lrp_num.errors import LRPError
        from lrp_num.io.model_io import ModelFile
        from lrp_num.io.torch_bridge import load_torch_model

        if not args.architecture:
            raise LRPError("--model WEIGHTS.pt needs --architecture ARCH.json")
        _, network = load_torch_model(args.model, args.architecture)
        return ModelFile(network)
    return load_model(args.model)


def run(args: argparse.Namespace) -> int:
    from lrp_num.audit.compare import audit_attribution, audit_library
    from lrp_num.audit.report import render_json, render_markdown, render_table

    check_dps(args.dps, "--dps")  # before loading anything (audit_library checks it again)
    if args.library == "lxt":
        return _run_lxt(args)
    if args.no_reference:
        from lrp_num.errors import LRPError

        raise LRPError("--no-reference belongs to --library lxt (the other audits always compare with the reference)")
    if args.workers is not None or args.scheduler is not None:
        return _run_distributed(args)
    if args.plot is not None:  # before the audit runs: a missing matplotlib or a bad path costs nothing
        from lrp_num.audit.plot import check_plot_path
        from lrp_num.io.files import check_distinct

        check_plot_path(args.plot)
        check_distinct({"--plot": args.plot}, {"--model": args.model, "--input": args.input,
                                               "--attribution": args.attribution, "--convention": args.convention,
                                               "--architecture": args.architecture})
    profiles = None
    if args.convention is not None:
        from lrp_num.audit.convention_file import load_convention
        from lrp_num.errors import LRPError

        if not args.attribution or args.for_library:
            raise LRPError("--convention describes the implementation that made --attribution R.npy; "
                           "use it with --attribution and without --for-library")
        profiles = [load_convention(args.convention)]
    model = _model(args)
    x = np.asarray(load_inputs(args, model), dtype=np.float64)
    parameters = {k: getattr(args, k) for k in ("epsilon", "gamma", "alpha", "beta") if getattr(args, k) is not None}
    common = dict(rule=args.rule, composite=args.composite, target=args.target, parameters=parameters,
                  input_domain=model.input_domain, dps=args.dps, tolerance=args.tolerance, strict=args.strict)
    if args.library and args.layers is not None:
        from lrp_num.errors import LRPError

        raise LRPError("--layers is for --attribution: with --library the audit records every layer itself")
    if args.library:
        report = audit_library(model.network, x, args.library, dtype=args.dtype, **common)
    else:
        attribution = read_array(args.attribution, "--attribution")
        if args.layers is not None:
            from lrp_num.audit.layer_files import read_layer_relevance

            common["layers"] = read_layer_relevance(args.layers, model.network, x)
        report = audit_attribution(model.network, x, attribution, library=args.for_library, profiles=profiles,
                                   **common)
    if args.plot is not None:
        from lrp_num.audit.plot import save_audit_plot

        save_audit_plot(report, args.plot, tolerance=args.tolerance)
    if args.json:
        print(render_json(report))
    elif args.markdown:
        print(render_markdown(report), end="")
    else:
        print(render_table(report))
    return report.exit_status


def _run_distributed(args: argparse.Namespace) -> int:
    """--workers/--scheduler: every sample audited on its own, one Dask task each (lrp_num.distributed)."""
    from lrp_num.distributed import audit_distributed, open_client, require_dask
    from lrp_num.errors import LRPError

    if args.workers is not None and args.workers < 1:
        raise LRPError(f"--workers must be at least 1, got {args.workers}")
    require_dask("--workers/--scheduler")
    model = _model(args)
    x = np.asarray(load_inputs(args, model), dtype=np.float64)
    parameters = {k: getattr(args, k) for k in ("epsilon", "gamma", "alpha", "beta") if getattr(args, k) is not None}
    common = dict(rule=args.rule, composite=args.composite, target=args.target, parameters=parameters,
                  input_domain=model.input_domain, dps=args.dps, tolerance=args.tolerance, strict=args.strict)
    attribution = None if args.library else read_array(args.attribution, "--attribution")
    with open_client(args.workers, args.scheduler) as client:
        batch = audit_distributed(client, model.network, x, library=args.library, attribution=attribution,
                                  for_library=args.for_library, dtype=args.dtype, **common)
    if args.json:
        print(batch.render_json())
    elif args.markdown:
        print(batch.render_markdown(), end="")
    else:
        print(batch.render_table())
    return batch.exit_status


def _run_lxt(args: argparse.Namespace) -> int:
    """--library lxt: LXT's AttnLRP / CP-LRP on a torch vision transformer, audited op by op."""
    from pathlib import Path

    from lrp_num.audit.lxt_audit import DEFAULT_TOLERANCE, audit_lxt, lxt_profile, render_json, render_markdown, render_table
    from lrp_num.commands.common import as_batch
    from lrp_num.errors import LRPError, ShapeError
    from lrp_num.io.torch_bridge import require_torch
    from lrp_num.io.torch_vit import DIGITS_VIT_WEIGHTS, load_vit_torch

    unsupported = [flag for flag, value in (("--composite", args.composite), ("--plot", args.plot),
                                            ("--layers", args.layers), ("--for-library", args.for_library),
                                            ("--convention", args.convention),
                                            ("--workers", args.workers), ("--scheduler", args.scheduler))
                   if value is not None]
    unsupported += [f"--{name}" for name in ("epsilon", "gamma", "alpha", "beta") if getattr(args, name) is not None]
    if unsupported:
        raise LRPError(f"--library lxt takes --rule attnlrp|attnlrp-efficient|cplrp, not {', '.join(unsupported)}")
    lxt_profile(args.rule)  # an unknown variant fails before torch or the model is loaded
    torch = require_torch()
    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    if not tolerance > 0:
        raise LRPError(f"--tolerance must be positive, got {args.tolerance}")
    if args.architecture is not None or args.model.endswith((".pt", ".onnx")) or _is_graph_model_file(args.model):
        return _run_lxt_graph(args, tolerance)
    from lrp_num.io.model_io import BUILTIN_MODELS

    if args.model != "digits-vit" and (args.model in BUILTIN_MODELS or not Path(args.model).is_file()
                                       or not args.model.endswith(".npz")):
        raise LRPError(f"--library lxt audits a vision transformer (--model digits-vit or a ViT weights .npz from "
                       f"lrp_num.io.torch_vit.save_vit_weights) or a transformer as an .onnx file or a state dict "
                       f".pt with --architecture, not {args.model!r}")
    weights = DIGITS_VIT_WEIGHTS if args.model == "digits-vit" else Path(args.model)
    model, extras = load_vit_torch(weights, dtype=torch.float32 if args.dtype == "float32" else torch.float64)
    config = model.config
    shape = (config.channels, config.image_size, config.image_size)
    if args.input is not None:
        x = as_batch(read_array(args.input, "--input"), shape, args.input)
    else:
        images = extras.get("test_images")
        if images is None:
            raise LRPError(f"{weights} stores no test images: pass --input X.npy (samples of shape {shape})")
        samples = args.sample or [0]
        for k in samples:
            if not 0 <= k < len(images):
                raise ShapeError(f"--sample {k} out of range: the model stores {len(images)} test images")
        x = images[samples]
    targets = None
    if args.target is not None:
        if not 0 <= args.target < config.classes:
            raise ShapeError(f"--target {args.target} out of range: the model has {config.classes} outputs")
        targets = np.full(len(x), args.target)
    report = audit_lxt(model, np.asarray(x, dtype=np.float64), targets, args.rule, tolerance,
                       reference=not args.no_reference, strict=args.strict, dps=args.dps)
    if args.json:
        print(render_json(report))
    elif args.markdown:
        print(render_markdown(report), end="")
    else:
        print(render_table(report))
    return report.exit_status


def _run_lxt_graph(args: argparse.Namespace, tolerance: float) -> int:
    """--library lxt on a transformer given as a graph: an ONNX file, or a state dict of the torch
    encoder (lrp_num.io.torch_encoder) with --architecture. cplrp on the encoder runs LXT on the
    torch module itself (its nn.MultiheadAttention patch, lrp_num.audit.lxt_module); every other
    case runs LXT on the ops twin of the imported graph (lrp_num.io.torch_ops_twin), audited op by
    op and compared with the reference at the graph's own node names."""
    from lrp_num.audit.lxt_audit import audit_lxt, render_json, render_markdown, render_table
    from lrp_num.audit.lxt_module import (audit_lxt_module, render_module_json, render_module_markdown,
                                          render_module_table)
    from lrp_num.commands.common import as_batch
    from lrp_num.errors import LRPError, ShapeError
    from lrp_num.io.torch_bridge import require_torch
    from lrp_num.io.torch_ops_twin import check_attention_names, graph_ops_twin

    torch = require_torch()
    dtype = torch.float32 if args.dtype == "float32" else torch.float64
    from lrp_num.engine.graph import Graph
    from lrp_num.errors import UnsupportedLayerError

    state_dict = args.model.endswith(".pt")
    if args.architecture and not state_dict:
        raise LRPError("--architecture describes a state dict (--model W.pt); an ONNX or model file carries its graph")
    if state_dict and not args.architecture:
        raise LRPError("--library lxt on a torch transformer takes --model WEIGHTS.pt (a state dict) with "
                       "--architecture ARCH.json (see lrp_num.io.torch_encoder.ENCODER_HELP)")
    module = None
    if state_dict:
        from lrp_num.io.torch_encoder import load_encoder
        from lrp_num.io.torch_import import from_torch_module

        if args.input is None:
            raise LRPError(f"{args.model} stores no samples: pass --input X.npy")
        module = load_encoder(args.model, args.architecture, dtype=dtype)
        graph = from_torch_module(module, module.config.input_shape)
        x = as_batch(read_array(args.input, "--input"), graph.input_shape, args.input)
    else:  # an ONNX file or the engine's model file (lrp_num.io.model_io.save_npz)
        model_file = load_model(args.model)
        graph = model_file.network
        if not isinstance(graph, Graph) or graph.input_shape is None:
            raise UnsupportedLayerError(f"{args.model} holds a {type(graph).__name__} without attention; "
                                        "--library lxt audits transformer graphs")
        x = load_inputs(args, model_file)
    classes = int(np.prod(graph.shapes[graph.output]))
    targets = None
    if args.target is not None:
        if not 0 <= args.target < classes:
            raise ShapeError(f"--target {args.target} out of range: the model has {classes} outputs")
        targets = np.full(len(x), args.target)
    x = np.asarray(x, dtype=np.float64)
    if module is not None and args.rule == "cplrp":
        if args.strict:
            raise LRPError("--strict is for the graph twin's variants (attnlrp, attnlrp-efficient): cplrp runs on "
                           "the torch encoder itself and is compared with the reference under LXT's conventions")
        report = audit_lxt_module(module, x, targets, args.rule, tolerance, reference=not args.no_reference,
                                  dps=args.dps)
        renderers = (render_module_json, render_module_markdown, render_module_table)
    else:
        check_attention_names(graph, args.rule)
        twin = graph_ops_twin(graph, dtype)
        report = audit_lxt(twin, x, targets, args.rule, tolerance, reference=not args.no_reference,
                           strict=args.strict, dps=args.dps)
        renderers = (render_json, render_markdown, render_table)
    if args.json:
        print(renderers[0](report))
    elif args.markdown:
        print(renderers[1](report), end="")
    else:
        print(renderers[2](report))
    return report.exit_status


def _is_graph_model_file(spec: str) -> bool:
    """Whether ``spec`` is an .npz in the engine's model format (it has a ``format`` array), not ViT weights."""
    from pathlib import Path

    if not spec.endswith(".npz") or not Path(spec).is_file():
        return False
    try:
        with np.load(spec, allow_pickle=False) as archive:
            return "format" in archive.files
    except (OSError, ValueError, EOFError):
        return False  # load_vit_torch reports the unreadable file
