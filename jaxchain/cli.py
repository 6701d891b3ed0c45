"""The ``jaxchain`` command."""

import argparse
import sys
import time
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


def _run(config, out, args, *, sample: bool = False) -> dict:
    """Train ``config`` with a rich progress bar; write and return its metrics."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from jaxchain import train

    stats = TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.1f} steps/s")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), stats)
    what = config.strategy if config.data == "vader" else config.model
    with Progress(*columns, transient=True) as bar:
        job = bar.add_task(f"{what} on {config.data}", total=config.steps, loss=0.0, rate=0.0)
        started = {}

        def progress(step, metrics):
            started.setdefault("t", (time.perf_counter(), step))
            if step % 25:
                return  # reading the loss waits for the step: do it now and then
            t0, s0 = started["t"]
            rate = (step - s0) / max(time.perf_counter() - t0, 1e-9)
            bar.update(job, completed=step, loss=float(metrics["loss"]), rate=rate)

        task = config.task()
        options = dict(resume=args.resume, stop_at=args.stop_at, task=task)
        metrics, params = train.train(
            config, out, log=bar.console.print, progress=progress, **options
        )
    if sample:
        metrics["sample"] = train.sample(task, params, "ROMEO:\n", 300, config.seq_len)
        print(metrics["sample"])
    train.write_outputs(out, metrics, config)
    headline = {
        k: metrics[k] for k in ("test_accuracy", "val_loss", "steps", "seconds") if k in metrics
    }
    print(" ".join(f"{k}={v}" for k, v in headline.items()), f"-> {out}/metrics.json")
    return metrics


def _config(args: argparse.Namespace, **fixed):
    import dataclasses

    from jaxchain import train

    fields = {f.name for f in dataclasses.fields(train.Config)}
    given = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return train.Config(**{**given, **fixed})


def _train(args: argparse.Namespace) -> int:
    """Train a model on a packaged data set; write metrics.json, loss.png and checkpoints."""
    import pathlib

    config = _config(args)
    _run(config, pathlib.Path(args.out), args, sample=config.data == "shakespeare")
    return 0


# Fine-tuning defaults by strategy: a frozen encoder takes a larger step than a moving one.
FINETUNE_LR = {"probe": 3e-3, "top-k": 2e-4, "full": 1e-4, "scratch": 3e-4}


def _finetune(args: argparse.Namespace) -> int:
    """Fine-tune MiniLM-L6 on the VADER lexicon by one strategy, or all four (--compare)."""
    import json
    import pathlib

    from jaxchain.tasks import STRATEGIES

    out = pathlib.Path(args.out)
    strategies = STRATEGIES if args.compare else (args.strategy,)
    rows = []
    for strategy in strategies:
        lr = FINETUNE_LR[strategy] if args.lr is None else args.lr
        config = _config(args, model="minilm", data="vader", strategy=strategy, lr=lr)
        metrics = _run(config, out / strategy if args.compare else out, args)
        rows.append({"strategy": strategy, "lr": lr, **{k: metrics[k] for k in
                     ("test_accuracy", "val_accuracy", "steps", "seconds")}})  # fmt: skip
    if args.compare:
        lines = ["| strategy | lr | test accuracy | val accuracy | steps | seconds |",
                 "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        lines += [
            f"| {r['strategy']} | {r['lr']:g} | {r['test_accuracy']:.4f} | "
            f"{r['val_accuracy']:.4f} | {r['steps']} | {r['seconds']:.0f} |"
            for r in rows
        ]
        table = "\n".join(lines)
        (out / "compare.md").write_text(table + "\n")
        (out / "compare.json").write_text(json.dumps(rows, indent=1))
        print(table)
    return 0


def _bench(args: argparse.Namespace) -> int:
    """Run the benchmarks; write bench.md, bench.json and attention.png under --out."""
    import json
    import pathlib

    from jaxchain import benchmarks

    unknown = sorted(set(args.only) - set(benchmarks.PRESETS[args.preset]))
    if unknown:
        known = ", ".join(benchmarks.PRESETS[args.preset])
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {known}", file=sys.stderr)
        return 2
    rows, peak = benchmarks.run(args.preset, tuple(args.only))
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = benchmarks.machine()
    header = f"{machine['processor']}, {machine['device']}, jax {machine['jax']}; "
    header += f"float32 matmul {peak / 1e9:.1f} GFLOP/s"
    table = benchmarks.table(rows, peak)
    (out / "bench.md").write_text(f"{header}\n\n{table}\n")
    (out / "bench.json").write_text(json.dumps(benchmarks.to_json(rows, peak), indent=1))
    benchmarks.plot(rows, out / "attention.png")
    print(f"\n{header}\n\n{table}\n\n-> {out}/bench.md, bench.json, attention.png")
    return 0


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

    t = commands.add_parser("train", help="train a model on a packaged data set")
    t.add_argument("--model", choices=["mlp", "rnn", "lstm", "gru", "transformer"], default="mlp")
    t.add_argument("--data", choices=["digits", "shakespeare"], default="digits")
    t.add_argument("--out", required=True, help="directory for metrics, plot and checkpoints")
    t.add_argument("--backward", choices=["manual", "autodiff"], default="manual")
    t.add_argument("--optimizer", choices=["sgd", "momentum", "nesterov", "adagrad", "rmsprop",
                                           "adam", "adamw"])  # fmt: skip
    t.add_argument("--schedule", choices=["constant", "cosine"])
    for name, kind in (("lr", float), ("warmup", int), ("clip", float), ("accumulate", int),
                       ("steps", int), ("batch-size", int), ("seed", int), ("hidden", int),
                       ("layers", int), ("seq-len", int), ("eval-every", int),
                       ("checkpoint-every", int), ("patience", int), ("devices", int),
                       ("time-limit", float)):  # fmt: skip
        t.add_argument(f"--{name}", type=kind)
    t.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    t.add_argument("--stop-at", type=int, help="stop after this step as if interrupted")
    t.set_defaults(run=_train)

    f = commands.add_parser("finetune", help="fine-tune MiniLM-L6 on the VADER sentiment lexicon")
    f.add_argument("--strategy", choices=["probe", "top-k", "full", "scratch"], default="full",
                   help="probe: frozen encoder; top-k: the top K blocks; full; scratch: random "
                   "init")  # fmt: skip
    f.add_argument("--top-k", type=int, help="trainable blocks of --strategy top-k (default 2)")
    f.add_argument("--compare", action="store_true", help="run all four strategies; one table")
    f.add_argument("--out", required=True, help="directory for metrics, plot and checkpoints")
    f.add_argument("--backward", choices=["manual", "autodiff"], default="manual")
    f.add_argument(
        "--lr", type=float, help=f"peak learning rate (default by strategy: {FINETUNE_LR})"
    )
    for name, kind, default in (("steps", int, 600), ("batch-size", int, 32),
                                ("warmup", int, 60), ("accumulate", int, 1),
                                ("weight-decay", float, 0.01), ("seq-len", int, 16),
                                ("eval-every", int, 100), ("checkpoint-every", int, 200),
                                ("seed", int, 0), ("patience", int, None),
                                ("time-limit", float, None)):  # fmt: skip
        f.add_argument(f"--{name}", type=kind, default=default)
    f.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    f.add_argument("--stop-at", type=int, help="stop after this step as if interrupted")
    f.set_defaults(run=_finetune, optimizer="adamw", schedule="cosine")

    b = commands.add_parser("bench", help="time and memory: hand-written against autodiff")
    b.add_argument("--preset", choices=["full", "quick"], default="full",
                   help="full: the sizes of bench/RESULTS.md; quick: smaller")  # fmt: skip
    b.add_argument("--only", nargs="*", default=[], metavar="NAME",
                   help="attention, linear_cross_entropy, lstm, mlp")  # fmt: skip
    b.add_argument("--out", default="bench/out", help="directory for bench.md, .json, .png")
    b.set_defaults(run=_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
