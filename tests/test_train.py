"""Training: optimizers, freezing, accumulation, skipped steps, manual = autodiff, exact resume,
data parallelism, the command's outputs."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxchain import data, train
from jaxchain.check import tolerance

F32 = jnp.float32
SMALL = dict(model="mlp", data="digits", steps=12, batch_size=32, hidden=16, layers=1,
             eval_every=6, checkpoint_every=4)  # fmt: skip


@pytest.fixture(autouse=True)
def _standard_promotion():
    """optax's Adam raises a float to an int32 count, which strict promotion refuses."""
    with jax.numpy_dtype_promotion("standard"):
        yield


def _quadratic(params, batch):
    return jnp.sum((params["w"] - batch) ** 2) + jnp.sum(params["b"] ** 2)


def _params():
    return {"w": jnp.ones(3, F32), "b": jnp.ones(2, F32)}


@pytest.mark.parametrize("name", sorted(train.OPTIMIZERS))
def test_every_optimizer_descends(name):
    tx = train.make_optimizer(name, 0.05, steps=50)
    step, params = train.make_step(_quadratic, tx), _params()
    state, target = tx.init(params), jnp.zeros(3, F32)
    first = _quadratic(params, target)
    for _ in range(50):
        params, state, metrics = step(params, state, target)
    assert metrics["loss"] < 0.5 * first
    assert step._cache_size() == 1  # one compilation for every step


def test_freezing_keeps_frozen_leaves():
    tx = train.make_optimizer("adam", 0.1, trainable=lambda p: {"w": True, "b": False})
    step, params = train.make_step(_quadratic, tx), _params()
    state = tx.init(params)
    for _ in range(3):
        params, state, _ = step(params, state, jnp.zeros(3, F32))
    np.testing.assert_array_equal(params["b"], 1.0)
    assert np.all(params["w"] < 1.0)


def test_accumulation_equals_the_larger_batch():
    def loss(p, batch):
        return jnp.mean((batch @ p["w"]) ** 2)

    p0 = {"w": jnp.array([1.0, -2.0, 0.5], F32)}
    batch = jax.random.normal(jax.random.key(0), (8, 3), F32)
    big = train.make_optimizer("sgd", 0.1)
    params, _, _ = train.make_step(loss, big)(p0, big.init(p0), batch)
    acc = train.make_optimizer("sgd", 0.1, accumulate=2)
    step, p, s = train.make_step(loss, acc), p0, acc.init(p0)
    p, s, _ = step(p, s, batch[:4])
    np.testing.assert_array_equal(p["w"], p0["w"])  # nothing applied after one micro-batch
    p, s, _ = step(p, s, batch[4:])
    np.testing.assert_allclose(p["w"], params["w"], rtol=tolerance(F32))


def test_non_finite_step_is_skipped_and_counted():
    tx = train.make_optimizer("adam", 0.1)
    step, params = (
        train.make_step(lambda p, b: jnp.sum(p["w"] * b) + 0 * p["b"].sum(), tx),
        _params(),
    )
    state = tx.init(params)
    params, state, _ = step(params, state, jnp.array([1.0, jnp.nan, 1.0], F32))
    np.testing.assert_array_equal(params["w"], 1.0)
    params, state, _ = step(params, state, jnp.ones(3, F32))
    assert int(state.total_notfinite) == 1 and np.all(params["w"] < 1.0)


@pytest.mark.parametrize("model", ["mlp", "lstm"])
def test_manual_and_autodiff_backward_give_the_same_curve(model, tmp_path):
    curves = []
    for backward in ("manual", "autodiff"):
        config = train.Config(**{**SMALL, "model": model, "backward": backward})
        metrics, _ = train.train(config, tmp_path / backward, log=lambda _: None)
        curves.append(np.array(metrics["train_loss"])[:, 1])
    assert len(curves[0]) == SMALL["steps"]
    np.testing.assert_allclose(curves[0], curves[1], rtol=1e-4)
    assert curves[0][-1] < curves[0][0]


def _cli(*args, env=None):
    command = [sys.executable, "-m", "jaxchain.cli", "train", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _final_params(out):
    config = train.Config(**SMALL)
    task = config.task()
    params = task.init(jax.random.key(0))
    tx = train.make_optimizer("adam", 1e-3, clip=1.0)
    checkpoints = train.Checkpoints(out / "checkpoints")
    state, meta = checkpoints.restore({"params": params, "opt_state": tx.init(params)})
    checkpoints.close()
    return state, meta


def test_interrupted_and_resumed_run_ends_bit_identical(tmp_path):
    flags = ["--model", "mlp", "--steps", "12", "--batch-size", "32", "--hidden", "16",
             "--layers", "1", "--eval-every", "6", "--checkpoint-every", "4"]  # fmt: skip
    _cli(*flags, "--out", str(tmp_path / "whole"))
    _cli(*flags, "--out", str(tmp_path / "split"), "--stop-at", "6")  # interrupted at 6
    resumed = _cli(*flags, "--out", str(tmp_path / "split"), "--resume")  # a new process
    assert "resumed at step 6" in resumed.stdout
    (whole, meta_whole), (split, meta_split) = (
        _final_params(tmp_path / d) for d in ("whole", "split")
    )
    assert meta_whole["step"] == meta_split["step"] == 12
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(split), strict=True):
        np.testing.assert_array_equal(a, b)
    assert meta_whole["history"]["train_loss"] == meta_split["history"]["train_loss"]


def test_command_writes_metrics_plot_and_checkpoints(tmp_path):
    _cli("--model", "mlp", "--steps", "10", "--eval-every", "5", "--out", str(tmp_path))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"test_accuracy", "train_loss", "steps", "seconds"} <= set(metrics)
    assert metrics["steps"] == 10 and len(metrics["train_loss"]) == 10
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert any((tmp_path / "checkpoints").iterdir())


def test_two_devices_give_the_same_curve(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    flags = ["--model", "mlp", "--steps", "6", "--batch-size", "32", "--eval-every", "6"]
    for n in ("1", "2"):
        _cli(*flags, "--devices", n, "--out", str(tmp_path / n), env=env)
    one, two = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("1", "2"))
    np.testing.assert_allclose(np.array(one["train_loss"]), np.array(two["train_loss"]), rtol=1e-5)


def test_bad_configuration_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="optimizer must be one of"):
        train.make_optimizer("lion", 0.1)
    with pytest.raises(ValueError, match="cannot model language"):
        train.Config(model="mlp", data="shakespeare").task()
    with pytest.raises(ValueError, match="--devices 64"):
        train.train(train.Config(**{**SMALL, "devices": 64}), tmp_path, log=lambda _: None)
    config = train.Config(**SMALL)
    train.train(dataclasses.replace(config, steps=4), tmp_path / "a", log=lambda _: None)
    with pytest.raises(ValueError, match="different configuration"):
        train.train(config, tmp_path / "a", resume=True, log=lambda _: None)


def test_data_sets_are_fixed_and_disjoint():
    d = data.digits()
    assert (len(d.train), len(d.val), len(d.test)) == (1257, 269, 271)
    assert d.train.x.shape == (1257, 64) and data.digits(sequence=True).test.x.shape == (271, 8, 8)
    rows = {tuple(r) for r in d.test.x.round(3)}
    assert len(rows & {tuple(r) for r in d.train.x.round(3)}) < 5  # a few duplicate images exist
    c = data.shakespeare()
    assert c.decode(c.encode("To be, or not to be")) == "To be, or not to be"
    assert len(c.val) > 0.09 * (len(c.train) + len(c.val))
    assert "**" not in c.decode(c.train[:5000])


def test_early_stopping_on_the_validation_metric(tmp_path):
    """With a zero learning rate the validation accuracy never improves: patience 2 stops the
    run at the third evaluation."""
    config = train.Config(**{**SMALL, "optimizer": "sgd", "lr": 0.0, "eval_every": 1,
                             "patience": 2, "steps": 50})  # fmt: skip
    metrics, _ = train.train(config, tmp_path, log=lambda _: None)
    assert metrics["steps"] == 3 and len(metrics["val"]) == 3
