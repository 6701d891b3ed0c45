"""Optimizers by name and the jitted training step.

:func:`make_optimizer` composes optax transformations as the options ask; :func:`make_step`
turns a loss into a jitted ``(params, opt_state, batch) -> (params, opt_state, metrics)`` that
never applies a non-finite update, and that can run checked (``checks=True``, a
:class:`CheckedStep`): the rules' :mod:`~jax.experimental.checkify` checks (labels, ids and
lengths in range) and a finite loss and gradient then raise on the host.

>>> import jax.numpy as jnp
>>> tx = make_optimizer("adam", 1e-3, steps=100, clip=1.0, accumulate=2)
>>> state = tx.init({"w": jnp.ones(3)})
>>> int(state.total_notfinite)
0
"""

import atexit
import dataclasses
import functools
import sys
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.experimental import checkify

from jaxchain._arguments import ArgumentError, literal
from jaxchain.train import options

#: Each optimizer by name, made from a learning rate (or schedule) and a weight decay.
OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": lambda lr, wd: optax.sgd(lr),
    "momentum": lambda lr, wd: optax.sgd(lr, momentum=0.9),
    "nesterov": lambda lr, wd: optax.sgd(lr, momentum=0.9, nesterov=True),
    "adagrad": lambda lr, wd: optax.adagrad(lr),
    "rmsprop": lambda lr, wd: optax.rmsprop(lr),
    "adam": lambda lr, wd: optax.adam(lr),
    "adamw": lambda lr, wd: optax.adamw(lr, weight_decay=wd),
}
#: The learning-rate schedules.
SCHEDULES = ("constant", "cosine")


def schedule(kind: str, lr: float, steps: int, warmup: int = 0) -> optax.Schedule:
    """``constant`` (after an optional linear warm-up) or ``cosine`` (warm-up, then cosine
    decay to 0 at ``steps``)."""
    if kind == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1))
    if kind == "constant":
        return optax.linear_schedule(0.0, lr, warmup) if warmup else optax.constant_schedule(lr)
    raise ArgumentError(
        f"{{schedule}} must be one of {literal(SCHEDULES)}, got {literal(repr(kind))}"
    )


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
        raise ArgumentError(
            f"{{optimizer}} must be one of {literal(sorted(OPTIMIZERS))}, got {literal(repr(name))}"
        )
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


@dataclasses.dataclass(frozen=True)
class Options:
    """A run's optimizer, as :func:`make_optimizer` composes it."""

    optimizer: str = "adam"  # one of OPTIMIZERS
    lr: float = 1e-3  # the peak learning rate
    schedule: str = "constant"  # one of SCHEDULES
    warmup: int = 0  # steps of linear warm-up
    clip: float | None = 1.0  # the global gradient norm clipped to (0 or None: no clipping)
    accumulate: int = 1  # micro-batches averaged per update
    weight_decay: float = 1e-4  # decoupled weight decay (adamw only)

    def __post_init__(self):
        options.at_least(self, 1, ("accumulate",))
        options.at_least(self, 0, ("lr", "warmup", "weight_decay", "clip"))
        options.one_of(self, "optimizer", OPTIMIZERS)
        options.one_of(self, "schedule", SCHEDULES)

    def make(self, steps: int, trainable: Callable[[Any], Any] | None = None):
        """The optax optimizer of a run of ``steps`` steps; ``trainable`` as
        :func:`make_optimizer` takes it."""
        return make_optimizer(
            self.optimizer,
            self.lr,
            steps=steps,
            schedule_kind=self.schedule,
            warmup=self.warmup,
            clip=self.clip,
            accumulate=self.accumulate,
            weight_decay=self.weight_decay,
            trainable=trainable,
        )


def make_step(
    loss: Callable,
    tx: optax.GradientTransformation,
    *,
    has_aux: bool = False,
    checks: bool = False,
    donate: bool = True,
    compiler_options: Mapping[str, object] | None = None,
) -> Callable:
    """The jitted step ``(params, opt_state, batch) -> (params, opt_state, metrics)``.

    ``metrics`` holds ``loss``, ``grad_norm`` and, with ``has_aux``, ``aux`` (``loss`` then
    returns ``(value, aux)``). A loss that is not finite makes every gradient NaN, so that
    the optimizer's :func:`optax.apply_if_finite` skips and counts the step even where the
    gradients alone would have been finite.

    Args:
      loss: ``loss(params, batch)``, a scalar (or ``(scalar, aux)`` with ``has_aux``).
      tx: the optimizer (from :func:`make_optimizer`, or any optax transformation).
      has_aux: ``loss`` returns ``(value, aux)``.
      checks: return a :class:`CheckedStep`: a failed check in a rule (a label, id or
        length out of range) or a non-finite loss or gradient raises
        ``jax.experimental.checkify.JaxRuntimeError`` naming it, at the next call of the
        step or at ``step.wait_checks()``, whichever comes first (the training loop calls
        it before it reads the losses, evaluates or saves a checkpoint, so a failed step
        never reaches a checkpoint).
      donate: donate ``params`` and ``opt_state`` (their buffers are reused for the result;
        the arrays passed in must not be used afterwards).
      compiler_options: XLA's options for this step alone (``jax.jit``'s; e.g.
        :data:`jaxchain.train.backends.ONEDNN`).
    """

    with_aux = loss if has_aux else lambda p, b: (loss(p, b), None)

    def step(params, opt_state, batch):
        (value, aux), grads = jax.value_and_grad(with_aux, has_aux=True)(params, batch)
        finite = jnp.isfinite(value)
        grads = jax.tree.map(lambda g: jnp.where(finite, g, jnp.nan), grads)  # poison
        grad_norm = optax.tree.norm(grads)
        if checks:
            checkify.check(finite, "train: the loss is not finite")
            checkify.check(jnp.isfinite(grad_norm), "train: the gradients are not finite")
        updates, opt_state = tx.update(grads, opt_state, params)
        metrics = {"loss": value, "grad_norm": grad_norm}
        if has_aux:
            metrics["aux"] = aux
        return optax.apply_updates(params, updates), opt_state, metrics

    jit = functools.partial(
        jax.jit, donate_argnums=(0, 1) if donate else (), compiler_options=compiler_options
    )
    if not checks:
        return jit(step)
    return CheckedStep(jit(checkify.checkify(step, errors=checkify.user_checks)))


class CheckedStep:
    """A jitted, checkified step whose checks are read one call late: each call first waits
    for the previous call's checks (raising the failure, if any) and then dispatches its
    own, so the step runs ahead of the host by one call and a failure is raised by the very
    next call, or by :meth:`wait_checks`.

    A program that ends with a check not yet read is told in one line on stderr (the failure
    it missed, if there was one), never with a traceback.
    """

    def __init__(self, checked: Callable):
        self._checked = checked  # (*args) -> (checkify error, outputs)
        self._pending = None  # the last call's error, not read yet
        _UNREAD.add(self)

    def __call__(self, *args):
        self.wait_checks()
        error, out = self._checked(*args)
        self._pending = error
        return out

    def wait_checks(self) -> None:
        """Wait for the last call's checks; raise ``JaxRuntimeError`` if one failed."""
        error, self._pending = self._pending, None
        if error is not None:
            error.throw()


_UNREAD: "weakref.WeakSet[CheckedStep]" = weakref.WeakSet()


@atexit.register
def _read_at_exit() -> None:
    """The checks nobody read, read as the program ends: a failure is one line on stderr."""
    for step in list(_UNREAD):
        try:
            step.wait_checks()
        except checkify.JaxRuntimeError as e:
            what = str(e).strip().splitlines()[0]
            print(
                f"jaxchain: a checked step failed and the program ended before reading it "
                f"(call step.wait_checks()): {what}",
                file=sys.stderr,
            )


def finish_checks(step: Callable) -> None:
    """The last checks of a checked step (:func:`make_step` with ``checks=True``): raise the
    failure not yet raised. Nothing for an unchecked step."""
    getattr(step, "wait_checks", lambda: None)()
