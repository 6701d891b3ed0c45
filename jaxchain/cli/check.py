"""``jaxchain check``: every registered rule against its reference and finite differences
(core: JAX and NumPy; ``--dtype bfloat16``/``float16`` compare with the jax.nn, optax and flax
counterparts, the ``flax`` extra)."""

import argparse
import sys

from jaxchain.cli import UsageError

LOW_PRECISION = ("bfloat16", "float16")


def flags(name: str, p: argparse.ArgumentParser) -> None:
    """``check``'s flags."""
    p.add_argument(
        "--dtype",
        default="float64",
        choices=["float64", "float32", *LOW_PRECISION],
        help="the dtype of the arguments; bfloat16 and float16 compare each "
        "rule's error against float64 with its jax.nn/optax/flax "
        "counterpart's",
    )
    p.add_argument(
        "--mode",
        choices=["reverse", "forward"],
        default="reverse",
        help="reverse: the rules' VJPs (jaxchain.rules); forward: the JVPs of "
        "jaxchain.tangents and the VJPs JAX derives from them",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the arguments")
    p.add_argument("--only", nargs="*", default=[], metavar="OP", help="check just these ops")
    p.add_argument("--models", action="store_true", help="also check every model's apply(ops=...)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Check every registered rule (``--mode reverse``: jaxchain.rules; ``forward``:
    jaxchain.tangents) against its reference and finite differences."""
    import jax

    jax.config.update("jax_enable_x64", True)
    from jaxchain.cases.registry import MODEL_CASES, RULES
    from jaxchain.check import check_jvp, check_vjp

    known = {**RULES, **MODEL_CASES} if args.models else RULES
    unknown = sorted(set(args.only) - set(known))
    if unknown:
        print(f"unknown rule(s): {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    cases = [c for name, c in known.items() if not args.only or name in args.only]
    if args.dtype in LOW_PRECISION:
        if args.mode == "forward":
            raise UsageError("--dtype bfloat16/float16 compares the reverse-mode rules only")
        return _check_precision(cases, args)
    forward = args.mode == "forward"
    check = check_jvp if forward else check_vjp
    width = max(len(c.name) for c in cases)
    transposed = f"  {'transposed':>10}" if forward else ""
    print(
        f"{'op':<{width}}  {'vs autodiff':>11}  {'vs fin.diff':>11}  {'2nd order':>9}"
        f"{transposed}  result"
    )
    failed = []
    for case in cases:
        report = check(
            case.of(args.mode), case.reference, *case.args(args.seed, args.dtype), name=case.name
        )
        autodiff = max(report.max_rel("jvp" if forward else "vjp"), report.max_rel("forward"))
        fd, second = report.max_rel("finite differences"), report.max_rel("second order")
        verdict = "ok" if report.ok else "FAIL"
        row = f"{case.name:<{width}}  {autodiff:>11.1e}  {fd:>11.1e}  {second:>9.1e}"
        if forward:
            row += f"  {report.max_rel('vjp (transposed)'):>10.1e}"
        print(f"{row}  {verdict}")
        if not report.ok:
            failed.append(report)
    for report in failed:
        print(f"\n{report}")
    print(f"\n{len(cases) - len(failed)} passed, {len(failed)} failed ({args.dtype}, {args.mode})")
    return 1 if failed else 0


def _check_precision(cases, args: argparse.Namespace) -> int:
    """Each rule's error against float64 at a low precision, next to its counterpart's."""

    from jaxchain.cases import peers

    width = max(len(c.name) for c in cases)
    print(f"{'op':<{width}}  {'vs float64':>10}  {'counterpart':<46} {'its error':>9}  result")
    results = [peers.compare(c, args.dtype, args.seed) for c in cases]
    for r in results:
        theirs = "-" if r.peer_error is None else f"{r.peer_error:.1e}"
        print(
            f"{r.name:<{width}}  {r.error:>10.1e}  {r.peer or '(none)':<46} {theirs:>9}  "
            f"{'ok' if r.ok else 'WORSE'}"
        )
    failed = [r for r in results if not r.ok]
    print(
        f"\n{len(results) - len(failed)} no worse than their counterpart, {len(failed)} worse "
        f"({args.dtype}; error: max |error| / max |float64 value|, output and gradients)"
    )
    return 1 if failed else 0
