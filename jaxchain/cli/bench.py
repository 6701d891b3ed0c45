"""``jaxchain bench`` (the ``train`` and ``flax`` extras) and ``jaxchain audit`` (the
``flax`` extra)."""

import argparse
import pathlib
import sys

from jaxchain.cli import UsageError, message
from jaxchain.cli._runs import _writing


def flags(name: str, p: argparse.ArgumentParser) -> None:
    """The flags of ``bench`` or ``audit``."""
    if name == "audit":
        p.add_argument(
            "--only",
            nargs="*",
            default=[],
            metavar="NAME",
            help="just these recipes (jaxchain.cases.audit.RECIPES); writes nothing",
        )
        p.add_argument("--out", default="bench/AUDIT.md", help="the findings, as Markdown")
        p.set_defaults(run=_audit)
        return
    from jaxchain import benchmarks

    p.add_argument(
        "--preset",
        choices=list(benchmarks.PRESETS),
        default="full",
        help="full: the sizes of bench/RESULTS.md; quick: smaller; backends: the models "
        "and attention under each backend (jaxchain.train.backends)",
    )
    p.add_argument(
        "--only",
        nargs="*",
        default=[],
        metavar="NAME",
        help=", ".join(benchmarks.PRESETS["full"]),
    )
    p.add_argument(
        "--torch",
        metavar="PYTHON",
        default=None,
        help="an interpreter with torch (bench/torch_env.sh makes one): PyTorch's "
        "LSTM, GRU, MiniLM and Llama steps and scaled_dot_product_attention, "
        "interleaved with jaxchain's",
    )
    p.add_argument(
        "--out", default="bench/out", help="directory for bench.md, kernels.md, .json, .png"
    )
    p.set_defaults(run=_bench)


def _bench(args: argparse.Namespace) -> int:
    """Run the benchmarks; write bench.md, kernels.md, bench.json and attention.png under
    --out."""
    import json
    import pathlib

    from jaxchain import benchmarks

    unknown = sorted(set(args.only) - set(benchmarks.PRESETS[args.preset]))
    if unknown:
        known = ", ".join(benchmarks.PRESETS[args.preset])
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {known}", file=sys.stderr)
        return 2
    try:
        rows, peak = benchmarks.run(args.preset, tuple(args.only), torch=args.torch)
    except benchmarks.PeerError as e:
        print(f"jaxchain bench: error: {message(e)}", file=sys.stderr)
        return 2
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = benchmarks.header(peak, args.torch)
    table = benchmarks.table(rows, peak)
    (out / "bench.md").write_text(f"{header}\n\n{table}\n")
    (out / "kernels.md").write_text(
        f"# Products per step\n\n{header}\n\n{benchmarks.kernel_listing(rows)}"
    )
    (out / "bench.json").write_text(json.dumps(benchmarks.to_json(rows, peak), indent=1))
    benchmarks.plot(rows, out / "attention.png")
    print(f"\n{header}\n-> {out}/bench.md, kernels.md, bench.json, attention.png")  # rows: above
    return 0


def _audit(args: argparse.Namespace) -> int:
    """The audit's table on stdout; with every recipe, also written to --out."""
    from jaxchain.cases import audit

    try:
        audit.select(args.only)
    except ValueError as e:
        raise UsageError(message(e)) from None
    rows = audit.run(tuple(args.only))
    print(audit.table(rows))
    if not args.only:
        with _writing(pathlib.Path(args.out).parent):
            audit.write(rows, args.out)
        print(f"-> {args.out}")
    return 0
