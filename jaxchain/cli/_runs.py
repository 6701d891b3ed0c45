"""What the commands that train share: the configuration and task of a run checked before
anything is written, the progress bar, the run directory's errors in one line, and the flags
of ``train`` and ``finetune``."""

import argparse
import contextlib
import pathlib
import sys
import time
import typing

from jaxchain.cli import UsageError, message

PRINT_EVERY = 5.0  # seconds between progress lines when the output is not a terminal


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
        runs.vet(out, dataclasses.asdict(config), resume=args.resume, overwrite=args.overwrite)
    except (ValueError, ModuleNotFoundError) as e:
        raise UsageError(message(e)) from None
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
        raise UsageError(message(e)) from None
    cluster.initialize()
    args.cluster = cluster


def _task(config):
    """``config.make_task()``, its errors (a model that does not fit the data, a missing
    package) as usage errors."""
    try:
        return config.make_task()
    except (ValueError, ModuleNotFoundError) as e:
        raise UsageError(message(e)) from None


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
        raise UsageError(message(e)) from None
    except OSError as e:
        raise UsageError(f"--out: cannot write in {out}: {e.strerror or e}") from None


def _read_run(run: pathlib.Path):
    """The configuration of the run in ``--run``, or a usage error."""
    from jaxchain import train
    from jaxchain.train import runs

    try:
        return train.read_config(run)
    except runs.RunError as e:
        raise UsageError(message(e)) from None


def _restore(run: pathlib.Path, config, like, trainable=None):
    """The latest params of the run in ``--run``, or a usage error when it has none."""
    from jaxchain import train

    params = train.restore_params(run, config, like, trainable)
    if params is None:
        raise UsageError(f"--run: {run} has no checkpoint yet")
    return params


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
