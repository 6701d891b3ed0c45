"""jit-compiled training with optax: a configuration, the loop, evaluation and early
stopping, and the run's outputs.

The parts live apart: :mod:`jaxchain.train.optim` composes the optimizer and makes the jitted step;
:mod:`jaxchain.train.runs` keeps a run directory a unit (refusal, ``--overwrite``, ``--resume``
with a checked configuration) and its orbax checkpoints; this module runs the loop with a
typed :class:`History`: data parallelism over a 1-D device mesh, over several processes
(:mod:`jaxchain.train.distributed`) and with sharded parameters included.
"""

import contextlib
import dataclasses
import pathlib
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxchain import reference, rules
from jaxchain._arguments import literal
from jaxchain.train import backends, distributed, options, runs, tasks
from jaxchain.train.optim import Options as OptimizerOptions
from jaxchain.train.optim import finish_checks, make_step
from jaxchain.train.runs import Checkpoints
from jaxchain.train.tasks import Options as TaskOptions
from jaxchain.train.tasks import Task

#: The rule set of each ``backward``: hand-written (``manual``) or ``jax.grad`` (``autodiff``).
BACKWARDS = {"manual": rules, "autodiff": reference}


# --- the run ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a run (saved in ``run.json`` and with its checkpoints): the
    model and data set, the run's own fields, and the options grouped by what uses them — the
    task's (:class:`jaxchain.train.tasks.Options`, holding the architecture's, the decoder's
    and fine-tuning's) and the optimizer's (:class:`jaxchain.train.optim.Options`).

    Every leaf has one name, the flag's (``--top-k`` is ``top_k``): :meth:`of` makes a
    configuration from such names, :meth:`replace` changes some, :attr:`flags` reads them.
    Which may change on ``--resume`` is :data:`jaxchain.train.runs.MAY_CHANGE`.

    >>> config = Config.of(model="lstm", hidden=64, lr=3e-3)
    >>> config.task.architecture.hidden, config.optim.lr
    (64, 0.003)
    """

    model: str = "mlp"
    data: str = "digits"
    backward: str = "manual"  # one of BACKWARDS
    steps: int = 2000
    eval_every: int = 200
    checkpoint_every: int = 500
    patience: int | None = None  # evaluations without improvement before stopping early
    devices: int = 1
    time_limit: float | None = None  # seconds of training; then evaluate, checkpoint, stop
    shard: str = "none"  # "params": params and optimizer state split over the devices
    task: TaskOptions = dataclasses.field(default_factory=TaskOptions)
    optim: OptimizerOptions = dataclasses.field(default_factory=OptimizerOptions)

    def __post_init__(self):
        positive = ("steps", "eval_every", "checkpoint_every", "devices")
        options.at_least(self, 1, positive)
        options.at_least(self, 0, ("patience", "time_limit"))
        options.one_of(self, "backward", BACKWARDS)
        options.one_of(self, "shard", distributed.SHARDS)

    @classmethod
    def of(cls, **flags) -> "Config":
        """The configuration with these leaves (by their flags' names), defaults elsewhere."""
        return options.build(cls, flags)

    def replace(self, **flags) -> "Config":
        """This configuration with these leaves (by their flags' names) changed."""
        return options.replace(self, **flags)

    @property
    def flags(self) -> dict[str, Any]:
        """Every leaf by its flag's name."""
        return options.flat(self)

    def make_task(self) -> Task:
        """The run's task (:func:`jaxchain.train.tasks.make_task`)."""
        return tasks.make_task(self.model, self.data, self.task)

    def optimizer_for(self, trainable: Callable[[dict], dict] | None = None):
        """The run's optax optimizer; ``trainable`` as :func:`~jaxchain.train.optim.make_optimizer`
        takes it."""
        return self.optim.make(self.steps, trainable)


@dataclasses.dataclass
class History:
    """What a run has seen, saved with each checkpoint: ``train_loss`` as ``[step, loss]``
    pairs, ``val`` as one dict per evaluation, training ``seconds``, and early stopping's
    best score and evaluations since it."""

    train_loss: list = dataclasses.field(default_factory=list)
    val: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    best: float | None = None
    since_best: int = 0

    def record(self, step: int, seconds: float, metrics: dict) -> None:
        """A validation result; higher accuracy or lower loss is better."""
        self.val.append({"step": step, "seconds": round(seconds, 2), **metrics})
        score = metrics.get("accuracy", -metrics.get("loss", 0.0))
        if self.best is None or score > self.best:
            self.best, self.since_best = score, 0
        else:
            self.since_best += 1


#: The run directory's file of a text task's tokenizer.
TOKENIZER_FILE = "tokenizer.json"
#: The loop reads the losses (waiting for the device) at least this often, in seconds.
SYNC_SECONDS = 1.0


def dropout_key(seed: int, step: jax.Array) -> jax.Array:
    """The dropout key of training step ``step`` (counted from 0): a pure function of the
    seed and the step, so that a resumed run drops exactly what an uninterrupted one does."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 1), step)


class Interrupts:
    """SIGINT and SIGTERM while a run trains: the first is noted (``signal``), and the
    loop stops after the step it is in, as at ``stop_at``; the handlers are then put back to
    the system's, so a second signal ends the process at once. Only in the main thread
    (where Python can take signals); elsewhere nothing is installed."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signal: int | None = None
        self.saved = {}

    def _note(self, signum, frame) -> None:
        self.signal = signum
        for s in self.SIGNALS:
            signal.signal(s, signal.SIG_DFL)

    def __enter__(self) -> "Interrupts":
        if threading.current_thread() is threading.main_thread():
            self.saved = {s: signal.signal(s, self._note) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.saved.items():
            signal.signal(s, handler)


def train(
    config: Config,
    out: pathlib.Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    stop_at: int | None = None,
    checks: bool = False,
    log: Callable[[str], None] = print,
    progress: Callable[[int, float], None] | None = None,
    task: Task | None = None,
) -> tuple[dict, Any]:
    """Train as ``config`` says in the run directory ``out`` (see :mod:`jaxchain.train.runs`):
    checkpoints under ``out/checkpoints``; return the metrics (which the command writes to
    ``out/metrics.json``) and the final params.

    Args:
      resume: continue from the latest checkpoint in ``out``; the configuration must agree.
      overwrite: replace a run already in ``out``.
      stop_at: stop after this step as if interrupted (after checkpointing it).
      checks: run every step checked (:func:`jaxchain.train.optim.make_step`).
      progress: called about every second with ``(step, latest loss)``.
      task: ``config.make_task()``, if the caller already has it.

    The run directory is locked for the whole call (:class:`jaxchain.train.runs.Lock`, by process
    0): a second run into it is refused with :class:`jaxchain.train.runs.RunError`. A SIGINT or
    SIGTERM stops the run after the current step, as ``stop_at`` does (evaluated,
    checkpointed); the metrics then hold ``interrupted`` (the signal's name). On resume, a
    checkpoint that cannot be read is set aside and the newest readable one is used
    (:meth:`jaxchain.train.runs.Checkpoints.restore`); if none is, nothing in ``out`` changes.

    In a multi-process run (:mod:`jaxchain.train.distributed`; every process calls this alike)
    process 0 writes the run directory, logs and evaluates; the checkpoints are written by
    all together (each its own shards).
    """
    runs.vet(out, dataclasses.asdict(config), resume=resume, overwrite=overwrite)
    lock = runs.Lock(out) if distributed.is_main() else contextlib.nullcontext()
    with lock, Interrupts() as interrupts:  # the directory checked again, now held
        return _train(
            config,
            out,
            interrupts,
            resume=resume,
            overwrite=overwrite,
            stop_at=stop_at,
            checks=checks,
            log=log,
            progress=progress,
            task=task,
        )


def _train(config, out, interrupts, *, resume, overwrite, stop_at, checks, log, progress, task):
    task = task or config.make_task()
    mesh = distributed.mesh_shardings(config.devices, config.task.batch_size, config.shard)
    fields = dataclasses.asdict(config)
    runs.vet(out, fields, resume=resume, overwrite=overwrite)  # every process, then one writes
    main = distributed.is_main()
    if not main:  # one process writes and logs
        log, progress = (lambda _: None), None
    tx = config.optimizer_for(task.trainable)
    params = task.init(jax.random.key(config.task.seed))
    state, history, start = {"params": params, "opt_state": tx.init(params)}, History(), 0
    if mesh:  # placed before a restore, which then reads each shard where it belongs
        state = jax.device_put(state, mesh[0](state))
    restored = None
    if resume:  # before anything is written: a run none of whose checkpoints reads is kept
        checkpoints = Checkpoints(out / "checkpoints")
        restored = checkpoints.restore(state, log if main else None)
    distributed.barrier("jaxchain: run directory checked")
    if main:
        runs.prepare(out, fields, resume=resume, overwrite=overwrite)
        if task.tokenizer is not None:  # the run's own tokens, for `jaxchain generate`
            task.tokenizer.save(str(out / TOKENIZER_FILE))
    distributed.barrier("jaxchain: run directory ready")
    if resume:
        checkpoints.manager.reload()  # what process 0 set aside
    else:
        checkpoints = Checkpoints(out / "checkpoints")
    if restored is not None:
        state, meta = restored
        start, history = meta["step"], History(**meta["history"])
        log(f"resumed at step {start}")
    ops = BACKWARDS[config.backward]

    def loss(p, batch):
        data, step = batch
        key = dropout_key(config.task.seed, step) if config.task.dropout else None
        return task.loss(p, data, ops, key)

    backend = backends.compiler_options(backends.backend_of(config.model))
    step_fn = make_step(loss, tx, checks=checks, compiler_options=backend)
    loop = _Loop(config, task, step_fn, checkpoints, history, log, progress, interrupts)
    params, opt_state, step = loop.run(state, start, stop_at, mesh and mesh[1])
    finish_checks(step_fn)
    checkpoints.close()
    summary = _summary(task, params, opt_state, step, history)
    if interrupts.signal is not None:
        summary["interrupted"] = signal.Signals(interrupts.signal).name
    return summary, params


def read_config(run: pathlib.Path) -> Config:
    """The configuration of the run in ``run``; :class:`jaxchain.train.runs.RunError` if it is
    not a run."""
    if not (run / runs.RUN_FILE).is_file():
        raise runs.RunError(f"{{run}}: {literal(run)} is not a jaxchain run (no {runs.RUN_FILE})")
    saved = options.flatten(runs.read_record(run))
    try:
        return Config.of(**saved)
    except (TypeError, ValueError) as e:
        raise runs.RunError(f"{literal(run / runs.RUN_FILE)}: {literal(e)}") from None


def restore_params(
    run: pathlib.Path, config: Config, like, trainable: Callable[[dict], dict] | None = None
):
    """The params of the latest checkpoint of the run in ``run`` (``like``: their structure,
    e.g. from :func:`jax.eval_shape`; ``trainable`` as the run's task has it); None when the
    run has no checkpoint yet."""
    tx = config.optimizer_for(trainable)
    here = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # however the run was sharded
    like = {"params": like, "opt_state": jax.eval_shape(tx.init, like)}
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=here), like)
    checkpoints = Checkpoints(run / "checkpoints")
    try:
        restored = checkpoints.restore(like)
    finally:
        checkpoints.close()
    return None if restored is None else restored[0]["params"]


def evaluate(task: Task, params, split: str, *, merged: bool = False) -> dict[str, float]:
    """``task.evaluate`` run once, by process 0 on its own copy of ``params`` (the task's
    ``merge`` of them, with ``merged``); every process returns its result."""
    mine = distributed.local(params)  # a collective when params are sharded over processes
    values = np.zeros(len(task.metric_names), np.float64)
    if distributed.is_main():
        metrics = task.evaluate(task.merge(mine) if merged else mine, split)
        values = np.array([metrics[k] for k in task.metric_names], np.float64)
    values = distributed.broadcast(values)
    return {k: float(v) for k, v in zip(task.metric_names, values, strict=True)}


#: In a multi-process run, process 0 decides on the time limit every this many steps.
TIME_CHECK_STEPS = 8


class _Loop:
    """The steps of one run: losses read now and then (reading each would stall the dispatch
    queue), evaluation, early stopping, the time limit and checkpoints."""

    def __init__(self, config, task, step_fn, checkpoints, history, log, progress, interrupts):
        self.config, self.task, self.step_fn, self.interrupts = config, task, step_fn, interrupts
        self.checkpoints, self.history, self.log, self.progress = (
            checkpoints,
            history,
            log,
            progress,
        )
        self.pending = []  # (step, loss) still on device
        self.clock, self.seconds0 = time.perf_counter(), history.seconds

    def elapsed(self) -> float:
        return self.seconds0 + time.perf_counter() - self.clock

    def flush(self) -> None:
        """Read the pending losses, after the checked steps' checks (``--checks``)."""
        getattr(self.step_fn, "wait_checks", lambda: None)()
        self.history.train_loss.extend([s, float(loss)] for s, loss in self.pending)
        if self.pending and self.progress:
            self.progress(*self.history.train_loss[-1])
        self.pending.clear()

    def save(self, step, params, opt_state) -> None:
        self.flush()
        self.history.seconds = self.elapsed()
        meta = {
            "step": step,
            "history": dataclasses.asdict(self.history),
            "config": dataclasses.asdict(self.config),
        }
        self.checkpoints.save(step, {"params": params, "opt_state": opt_state}, meta)

    def evaluate(self, step, params) -> bool:
        """Record validation metrics; True when early stopping should stop the run."""
        self.flush()
        metrics = evaluate(self.task, params, "val")
        self.history.record(step, self.elapsed(), metrics)
        self.log(f"step {step}: " + ", ".join(f"val {k} {v:.4f}" for k, v in metrics.items()))
        patience = self.config.patience
        if patience is not None and self.history.since_best >= patience:
            self.log(f"early stop at step {step}: no improvement in {patience} evaluations")
            return True
        return False

    def out_of_time(self, step: int, step_seconds: float) -> bool:
        """Whether to stop now: a signal came, or one more step would run past the time
        limit; over several processes, process 0's answer every :data:`TIME_CHECK_STEPS`
        steps."""
        limit = self.config.time_limit
        late = limit is not None and self.elapsed() + step_seconds > limit
        stop = late or self.interrupts.signal is not None
        if jax.process_count() == 1:
            return stop
        if step % TIME_CHECK_STEPS:
            return False
        return bool(distributed.broadcast(np.array(stop)))

    def run(self, state, start: int, stop_at: int | None, batch_sharding):
        c = self.config
        params, opt_state, step = state["params"], state["opt_state"], start
        synced, step_seconds = (time.perf_counter(), start), 0.0
        out_of_time = self.out_of_time(step, 0.0)
        while step < c.steps and not out_of_time:
            batch = distributed.shard_batch(self.task.batch(step), batch_sharding)
            batch = (batch, np.uint32(step))  # the step: its dropout key
            params, opt_state, metrics = self.step_fn(params, opt_state, batch)
            step += 1
            self.pending.append((step, metrics["loss"]))
            if time.perf_counter() - synced[0] > SYNC_SECONDS:  # wait for the device
                self.flush()
                now = time.perf_counter()
                step_seconds = (now - synced[0]) / (step - synced[1])
                synced = (now, step)
            out_of_time = self.out_of_time(step, step_seconds)
            last = step == c.steps or step == stop_at or out_of_time
            if (step % c.eval_every == 0 or last) and self.evaluate(step, params):
                break
            if step % c.checkpoint_every == 0 or last:
                self.save(step, params, opt_state)
            if step == stop_at:
                break
        self.save(step, params, opt_state)
        return params, opt_state, step


def _summary(task, params, opt_state, step, history: History) -> dict:
    trainable = task.trainable(params) if task.trainable else jax.tree.map(lambda _: True, params)
    counts = [
        (x.size, t)
        for x, t in zip(jax.tree.leaves(params), jax.tree.leaves(trainable), strict=True)
    ]
    whole, per_device = distributed.device_bytes({"params": params, "opt_state": opt_state})
    result = {
        "parameters": sum(n for n, _ in counts),
        "trainable_parameters": sum(n for n, t in counts if t),
        "optimizer_bytes": sum(x.nbytes for x in jax.tree.leaves(opt_state)),
        "state_bytes": whole,
        "state_bytes_per_device": per_device,
        "steps": step,
        "seconds": round(history.seconds, 2),
        "train_loss": history.train_loss,
        "val": history.val,
        "skipped_steps": int(opt_state.total_notfinite),
    }
    if task.kind == "classification":
        result["test_accuracy"] = evaluate(task, params, "test")["accuracy"]
        result["val_accuracy"] = history.val[-1]["accuracy"] if history.val else None
        if task.merge is not None:  # the adapters folded into the weights: the same model
            result["merged_test_accuracy"] = evaluate(task, params, "test", merged=True)["accuracy"]
    else:
        result["val_loss"] = evaluate(task, params, "val")["loss"]
        if task.merge is not None:  # what the run exports: the adapters folded in
            result["merged_val_loss"] = evaluate(task, params, "val", merged=True)["loss"]
    return result


def write_outputs(out: pathlib.Path, metrics: dict, config: Config) -> None:
    """``metrics.json`` and ``loss.png`` (training loss and the validation metric by step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    runs.write_json(out / "metrics.json", {**metrics, "config": dataclasses.asdict(config)})
    fig, ax = plt.subplots(figsize=(7, 4))
    steps, losses = np.array(metrics["train_loss"], np.float64).reshape(-1, 2).T
    ax.plot(steps, losses, lw=0.6, alpha=0.6, label="train loss")
    key = "loss" if any("loss" in v for v in metrics["val"]) else "accuracy"
    if metrics["val"]:
        ax2 = ax if key == "loss" else ax.twinx()
        ax2.plot(
            [v["step"] for v in metrics["val"]],
            [v[key] for v in metrics["val"]],
            "o-",
            color="C1",
            label=f"val {key}",
        )
        ax2.set_ylabel(f"val {key}")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title(f"{config.model} on {config.data} ({config.backward} backward)")
    fig.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out / ".loss.png", dpi=100)
    (out / ".loss.png").replace(out / "loss.png")  # whole, or not at all
    plt.close(fig)
