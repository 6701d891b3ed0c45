"""jit-compiled training with optax: optimizers by name, schedules, clipping, accumulation,
freezing, skipped non-finite steps, orbax checkpoints that resume bit for bit, and data
parallelism over a device mesh.

>>> import jax.numpy as jnp
>>> tx = make_optimizer("adam", 1e-3, steps=100, clip=1.0, accumulate=2)
>>> state = tx.init({"w": jnp.ones(3)})
>>> int(state.total_notfinite)
0
"""

import dataclasses
import json
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxchain import reference, rules
from jaxchain.tasks import Task, make_task

OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": lambda lr, wd: optax.sgd(lr),
    "momentum": lambda lr, wd: optax.sgd(lr, momentum=0.9),
    "nesterov": lambda lr, wd: optax.sgd(lr, momentum=0.9, nesterov=True),
    "adagrad": lambda lr, wd: optax.adagrad(lr),
    "rmsprop": lambda lr, wd: optax.rmsprop(lr),
    "adam": lambda lr, wd: optax.adam(lr),
    "adamw": lambda lr, wd: optax.adamw(lr, weight_decay=wd),
}
BACKWARDS = {"manual": rules, "autodiff": reference}


def schedule(kind: str, lr: float, steps: int, warmup: int = 0) -> optax.Schedule:
    """``constant`` (after an optional linear warm-up) or ``cosine`` (warm-up, then cosine
    decay to 0 at ``steps``)."""
    if kind == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1))
    if kind == "constant":
        return optax.linear_schedule(0.0, lr, warmup) if warmup else optax.constant_schedule(lr)
    raise ValueError(f"train: schedule must be constant or cosine, got {kind!r}")


def make_optimizer(
    name: str,
    lr: float,
    *,
    steps: int = 1,
    schedule_kind: str = "constant",
    warmup: int = 0,
    clip: float | None = None,
    accumulate: int = 1,
    weight_decay: float = 1e-4,
    trainable: Callable[[Any], Any] | None = None,
    max_bad_steps: int = 100,
) -> optax.GradientTransformation:
    """An optax optimizer by name, composed as the options ask:

    ``apply_if_finite(MultiSteps(multi_transform(chain(clip_by_global_norm, OPT))))`` — a step
    whose gradients are not finite is skipped and counted (``state.total_notfinite``);
    ``accumulate`` > 1 averages that many micro-batches per update; ``trainable(params)``
    returns a pytree of bools, and the False leaves are frozen (``set_to_zero``).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"train: optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    tx = OPTIMIZERS[name](schedule(schedule_kind, lr, steps, warmup), weight_decay)
    if clip:
        tx = optax.chain(optax.clip_by_global_norm(clip), tx)
    if trainable is not None:
        labels = lambda params: jax.tree.map(  # noqa: E731
            lambda t: "train" if t else "frozen", trainable(params)
        )
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
    if accumulate > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accumulate)
    return optax.apply_if_finite(tx, max_consecutive_errors=max_bad_steps)


def make_step(loss: Callable, tx: optax.GradientTransformation) -> Callable:
    """The jitted step ``(params, opt_state, batch) -> (params, opt_state, metrics)``."""

    def step(params, opt_state, batch):
        value, grads = jax.value_and_grad(loss)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        metrics = {"loss": value, "grad_norm": optax.tree.norm(grads)}
        return optax.apply_updates(params, updates), opt_state, metrics

    return jax.jit(step)


# --- the run ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a run (saved with its checkpoints)."""

    model: str = "mlp"
    data: str = "digits"
    backward: str = "manual"
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "constant"
    warmup: int = 0
    clip: float | None = 1.0
    accumulate: int = 1
    steps: int = 2000
    batch_size: int = 64
    seed: int = 0
    hidden: int = 128
    layers: int = 2
    seq_len: int = 128
    eval_every: int = 200
    checkpoint_every: int = 500
    patience: int | None = None  # evaluations without improvement before stopping early
    devices: int = 1
    time_limit: float | None = None  # seconds; stop (and checkpoint) when exceeded
    weight_decay: float = 1e-4  # adamw only
    strategy: str = "full"  # fine-tuning (data vader) only: probe, top-k, full or scratch
    top_k: int = 2  # the number of trainable blocks of the top-k strategy

    def task(self) -> Task:
        if self.data == "vader":
            options = dict(strategy=self.strategy, top_k=self.top_k, seq_len=self.seq_len)
        else:
            options = dict(hidden=self.hidden, layers=self.layers, seq_len=self.seq_len)
        return make_task(
            self.model, self.data, batch_size=self.batch_size, seed=self.seed, **options
        )


def _shardings(devices: int, batch_size: int):
    """``(replicated, batch)`` shardings over a 1-D mesh of ``devices``, or None for one."""
    if devices == 1:
        return None
    if devices > jax.device_count():
        raise ValueError(f"train: --devices {devices} but only {jax.device_count()} available")
    if batch_size % devices:
        raise ValueError(f"train: --batch-size {batch_size} is not divisible by {devices}")
    # Auto axes: XLA's SPMD partitioner decides how the gradient reductions are sharded
    mesh = jax.make_mesh((devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    return NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))


class Checkpoints:
    """Atomic orbax checkpoints of ``{params, opt_state}`` plus JSON metadata (step, history,
    config) under ``directory``; orbax writes to a temporary path and renames it."""

    def __init__(self, directory: pathlib.Path, keep: int = 2):
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(directory.absolute(), options=options)

    def save(self, step: int, state: dict, meta: dict) -> None:
        if step in self.manager.all_steps():
            return  # already saved (the last step is saved once)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
        self.manager.save(step, args=args, force=True)
        self.manager.wait_until_finished()

    def restore(self, like: dict) -> tuple[dict, dict] | None:
        step = self.manager.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        args = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
        )
        restored = self.manager.restore(step, args=args)
        return restored["state"], restored["meta"]

    def close(self) -> None:
        self.manager.close()


def train(
    config: Config,
    out: pathlib.Path,
    *,
    resume: bool = False,
    stop_at: int | None = None,
    log: Callable[[str], None] = print,
    progress: Callable[[int, dict], None] | None = None,
    task: Task | None = None,
) -> tuple[dict, Any]:
    """Train as ``config`` says; write checkpoints under ``out/checkpoints``; return the
    metrics (which the command writes to ``out/metrics.json``) and the final params.

    Args:
      resume: continue from the latest checkpoint in ``out`` (same config required).
      stop_at: stop after this step as if interrupted (after checkpointing it).
      progress: called after every step with ``(step, metrics)`` (metrics still on device:
        reading them waits for the step).
      task: ``config.task()``, if the caller already has it.
    """
    task = task or config.task()
    ops = BACKWARDS[config.backward]
    tx = make_optimizer(config.optimizer, config.lr, steps=config.steps,
                        schedule_kind=config.schedule, warmup=config.warmup, clip=config.clip,
                        accumulate=config.accumulate, weight_decay=config.weight_decay,
                        trainable=task.trainable)  # fmt: skip
    params = task.init(jax.random.key(config.seed))
    state = {"params": params, "opt_state": tx.init(params)}
    history = {"train_loss": [], "val": [], "seconds": 0.0, "best": None, "since_best": 0}
    checkpoints = Checkpoints(out / "checkpoints")
    start = 0
    if resume and (restored := checkpoints.restore(state)) is not None:
        state, meta = restored
        if meta["config"] != dataclasses.asdict(config):
            raise ValueError("train: --resume with a different configuration than the checkpoint")
        start, history = meta["step"], meta["history"]
        log(f"resumed at step {start}")
    shardings = _shardings(config.devices, config.batch_size)
    if shardings:
        state = jax.device_put(state, shardings[0])
    step_fn = make_step(lambda p, b: task.loss(p, b, ops), tx)
    params, opt_state = state["params"], state["opt_state"]
    clock, seconds0 = time.perf_counter(), history["seconds"]

    pending = []  # (step, loss) still on device: reading each would stall the dispatch queue

    def flush():
        history["train_loss"].extend([s, float(loss)] for s, loss in pending)
        pending.clear()

    def save(step):
        flush()
        history["seconds"] = seconds0 + time.perf_counter() - clock
        meta = {"step": step, "history": history, "config": dataclasses.asdict(config)}
        checkpoints.save(step, {"params": params, "opt_state": opt_state}, meta)

    step = start
    for step in range(start + 1, config.steps + 1):
        batch = task.batch(step - 1)
        if shardings:
            batch = jax.device_put(batch, shardings[1])
        params, opt_state, metrics = step_fn(params, opt_state, batch)
        pending.append((step, metrics["loss"]))
        if progress:
            progress(step, metrics)
        elapsed = seconds0 + time.perf_counter() - clock
        out_of_time = config.time_limit is not None and elapsed > config.time_limit
        if step % config.eval_every == 0 or step == config.steps or out_of_time:
            flush()
            if _evaluate(task, params, step, elapsed, history, config.patience, log):
                log(f"early stop at step {step}: no improvement in {config.patience} evaluations")
                break
        if step % config.checkpoint_every == 0 or step == stop_at or out_of_time:
            save(step)
        if step == stop_at or out_of_time:
            break
    save(step)
    checkpoints.close()
    seconds = seconds0 + time.perf_counter() - clock
    return _summary(task, params, opt_state, step, history, seconds), params


def _evaluate(task, params, step, elapsed, history, patience, log) -> bool:
    """Record validation metrics; True when early stopping should stop the run."""
    metrics = task.evaluate(params, "val")
    history["val"].append({"step": step, "seconds": round(elapsed, 2), **metrics})
    score = metrics.get("accuracy", -metrics.get("loss", 0.0))
    if history["best"] is None or score > history["best"]:
        history["best"], history["since_best"] = score, 0
    else:
        history["since_best"] += 1
    log(f"step {step}: " + ", ".join(f"val {k} {v:.4f}" for k, v in metrics.items()))
    return patience is not None and history["since_best"] >= patience


def _summary(task, params, opt_state, step, history, seconds) -> dict:
    result = {"steps": step, "seconds": round(seconds, 2), "train_loss": history["train_loss"],
              "val": history["val"], "skipped_steps": int(opt_state.total_notfinite)}  # fmt: skip
    if task.kind == "classification":
        result["test_accuracy"] = task.evaluate(params, "test")["accuracy"]
        result["val_accuracy"] = history["val"][-1]["accuracy"] if history["val"] else None
    else:
        result["val_loss"] = task.evaluate(params, "val")["loss"]
    return result


def sample(task: Task, params, prompt: str, length: int, seq_len: int, seed: int = 0) -> str:
    """Text generated by a language task's model: ``length`` characters after ``prompt``,
    sampled from the softmax of the logits, with a context of at most ``seq_len``."""
    corpus = task.corpus
    ids = list(corpus.encode(prompt))
    logits_at = jax.jit(lambda p, x, i: task.logits(p, x[None], rules)[0, i])
    key = jax.random.key(seed)
    for _ in range(length):
        window = ids[-seq_len:]
        padded = np.zeros(seq_len, np.int32)
        padded[: len(window)] = window
        key, sub = jax.random.split(key)
        ids.append(int(jax.random.categorical(sub, logits_at(params, padded, len(window) - 1))))
    return corpus.decode(ids)


def write_outputs(out: pathlib.Path, metrics: dict, config: Config) -> None:
    """``metrics.json`` and ``loss.png`` (training loss and the validation metric by step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(
        json.dumps({**metrics, "config": dataclasses.asdict(config)}, indent=1)
    )
    fig, ax = plt.subplots(figsize=(7, 4))
    steps, losses = np.array(metrics["train_loss"]).T
    ax.plot(steps, losses, lw=0.6, alpha=0.6, label="train loss")
    key = "loss" if any("loss" in v for v in metrics["val"]) else "accuracy"
    if metrics["val"]:
        ax2 = ax if key == "loss" else ax.twinx()
        ax2.plot([v["step"] for v in metrics["val"]], [v[key] for v in metrics["val"]],
                 "o-", color="C1", label=f"val {key}")  # fmt: skip
        ax2.set_ylabel(f"val {key}")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title(f"{config.model} on {config.data} ({config.backward} backward)")
    fig.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=100)
    plt.close(fig)
