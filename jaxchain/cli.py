"""The ``jaxchain`` command."""

import argparse
import sys
from collections.abc import Sequence


def _check(args: argparse.Namespace) -> int:
    """Check every registered rule against its reference and finite differences."""
    import jax

    jax.config.update("jax_enable_x64", True)
    from jaxchain.check import check_vjp
    from jaxchain.registry import MODELS, RULES

    known = {**RULES, **MODELS} if args.models else RULES
    unknown = sorted(set(args.only) - set(known))
    if unknown:
        print(f"unknown rule(s): {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    cases = [c for name, c in known.items() if not args.only or name in args.only]
    width = max(len(c.name) for c in cases)
    print(f"{'op':<{width}}  {'vs autodiff':>11}  {'vs fin.diff':>11}  {'2nd order':>9}  result")
    failed = []
    for case in cases:
        key = jax.random.key(args.seed)
        report = check_vjp(case.rule, case.reference, *case.args(key, args.dtype), name=case.name)
        autodiff = max(report.max_rel("vjp"), report.max_rel("forward"))
        fd, second = report.max_rel("finite differences"), report.max_rel("second order")
        verdict = "ok" if report.ok else "FAIL"
        print(f"{case.name:<{width}}  {autodiff:>11.1e}  {fd:>11.1e}  {second:>9.1e}  {verdict}")
        if not report.ok:
            failed.append(report)
    for report in failed:
        print(f"\n{report}")
    print(f"\n{len(cases) - len(failed)} passed, {len(failed)} failed ({args.dtype})")
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxchain", description="The chain rule written by hand, checked against autodiff."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="check every rule against autodiff and finite diffs")
    check.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    check.add_argument("--seed", type=int, default=0)
    check.add_argument("--only", nargs="*", default=[], metavar="OP", help="check just these ops")
    check.add_argument(
        "--models", action="store_true", help="also check every model's apply(ops=rules)"
    )
    check.set_defaults(run=_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
