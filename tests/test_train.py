"""Training: optimizers, freezing, accumulation, skipped steps, manual = autodiff, exact resume,
data parallelism, the command's outputs."""

import dataclasses
import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxchain import rules, train
from jaxchain.check import tolerance
from jaxchain.train import data, optim, runs

F32 = jnp.float32
SMALL = dict(
    model="mlp",
    data="digits",
    steps=12,
    batch_size=32,
    hidden=16,
    layers=1,
    eval_every=6,
    checkpoint_every=4,
)


@pytest.fixture(autouse=True)
def _standard_promotion():
    """optax's Adam raises a float to an int32 count, which strict promotion refuses."""
    with jax.numpy_dtype_promotion("standard"):
        yield


def _quadratic(params, batch):
    return jnp.sum((params["w"] - batch) ** 2) + jnp.sum(params["b"] ** 2)


def _params():
    return {"w": jnp.ones(3, F32), "b": jnp.ones(2, F32)}


@pytest.mark.parametrize("name", sorted(optim.OPTIMIZERS))
def test_every_optimizer_descends(name):
    tx = optim.make_optimizer(name, 0.05, steps=50)
    step, params = optim.make_step(_quadratic, tx), _params()
    state, target = tx.init(params), jnp.zeros(3, F32)
    first = _quadratic(params, target)
    for _ in range(50):
        params, state, metrics = step(params, state, target)
    assert metrics["loss"] < 0.5 * first
    assert step._cache_size() == 1  # one compilation for every step


def test_freezing_keeps_frozen_leaves():
    tx = optim.make_optimizer("adam", 0.1, trainable=lambda p: {"w": True, "b": False})
    step, params = optim.make_step(_quadratic, tx), _params()
    state = tx.init(params)
    for _ in range(3):
        params, state, _ = step(params, state, jnp.zeros(3, F32))
    np.testing.assert_array_equal(params["b"], 1.0)
    assert np.all(params["w"] < 1.0)


def test_accumulation_equals_the_larger_batch():
    def loss(p, batch):
        return jnp.mean((batch @ p["w"]) ** 2)

    def p0():  # a new copy each time: the step donates the params it is given
        return {"w": jnp.array([1.0, -2.0, 0.5], F32)}

    batch = jax.random.normal(jax.random.key(0), (8, 3), F32)
    big = optim.make_optimizer("sgd", 0.1)
    params, _, _ = optim.make_step(loss, big)(p0(), big.init(p0()), batch)
    acc = optim.make_optimizer("sgd", 0.1, accumulate=2)
    step, p, s = optim.make_step(loss, acc), p0(), acc.init(p0())
    p, s, _ = step(p, s, batch[:4])
    np.testing.assert_array_equal(p["w"], p0()["w"])  # nothing applied after one micro-batch
    p, s, _ = step(p, s, batch[4:])
    np.testing.assert_allclose(p["w"], params["w"], rtol=tolerance(F32))


def test_non_finite_step_is_skipped_and_counted():
    tx = optim.make_optimizer("adam", 0.1)
    step, params = (
        optim.make_step(lambda p, b: jnp.sum(p["w"] * b) + 0 * p["b"].sum(), tx),
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
        config = train.Config.of(**{**SMALL, "model": model, "backward": backward})
        metrics, _ = train.train(config, tmp_path / backward, log=lambda _: None)
        curves.append(np.array(metrics["train_loss"])[:, 1])
    assert len(curves[0]) == SMALL["steps"]
    np.testing.assert_allclose(curves[0], curves[1], rtol=1e-4)
    assert curves[0][-1] < curves[0][0]


def _cli(*args, env=None, status=0, command="train"):
    argv = [sys.executable, "-m", "jaxchain.cli", command, *args]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == status, done.stderr[-3000:]
    return done


def _final_params(out):
    config = train.Config.of(**SMALL)
    task = config.make_task()
    params = task.init(jax.random.key(0))
    tx = optim.make_optimizer("adam", 1e-3, clip=1.0)
    checkpoints = runs.Checkpoints(out / "checkpoints")
    state, meta = checkpoints.restore({"params": params, "opt_state": tx.init(params)})
    checkpoints.close()
    return state, meta


@pytest.mark.slow  # make test: the SIGKILL test below, and the two-process run's --resume
def test_interrupted_and_resumed_run_ends_bit_identical(tmp_path):
    flags = [
        "--model",
        "mlp",
        "--steps",
        "12",
        "--batch-size",
        "32",
        "--hidden",
        "16",
        "--layers",
        "1",
        "--eval-every",
        "6",
        "--checkpoint-every",
        "4",
    ]
    _cli(*flags, "--out", str(tmp_path / "whole"))
    _cli(*flags, "--out", str(tmp_path / "split"), "--stop-at", "6")  # interrupted at 6
    resumed = _cli(*flags, "--out", str(tmp_path / "split"), "--resume")  # a new process
    assert "resumed at step 6" in resumed.stdout
    (whole, meta_whole), (split, meta_split) = (
        _final_params(tmp_path / d) for d in ("whole", "split")
    )
    assert meta_whole["step"] == meta_split["step"] == 12
    chex.assert_trees_all_equal(whole, split)
    assert meta_whole["history"]["train_loss"] == meta_split["history"]["train_loss"]


def test_command_writes_metrics_plot_and_checkpoints(tmp_path):
    _cli("--model", "mlp", "--steps", "10", "--eval-every", "5", "--out", str(tmp_path))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"test_accuracy", "train_loss", "steps", "seconds"} <= set(metrics)
    assert metrics["steps"] == 10 and len(metrics["train_loss"]) == 10
    assert (tmp_path / "loss.png").stat().st_size > 1000
    assert any((tmp_path / "checkpoints").iterdir())


def test_two_devices_give_the_same_curve_replicated_or_sharded(tmp_path):
    """Replicated and sharded over two host devices, the MLP's curve is one device's (make
    test's check of --shard params; make thorough also shards MiniLM over 8 devices, in
    test_distributed.py)."""
    env = {
        **os.environ,
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2",
    }
    flags = ["--model", "mlp", "--steps", "6", "--batch-size", "32", "--eval-every", "6"]
    for n, shard in (("1", "none"), ("2", "none"), ("2s", "params")):
        _cli(*flags, "--devices", n[0], "--shard", shard, "--out", str(tmp_path / n), env=env)
    one, two, sharded = (
        json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("1", "2", "2s")
    )
    np.testing.assert_allclose(np.array(one["train_loss"]), np.array(two["train_loss"]), rtol=1e-5)
    np.testing.assert_allclose(
        np.array(sharded["train_loss"]), np.array(one["train_loss"]), rtol=1e-5
    )
    # the (128, 128) weight and its Adam moments split in two; the rest is too small to split
    assert two["state_bytes_per_device"] == two["state_bytes"]
    split = 3 * 128 * 128 * 4 // 2
    assert sharded["state_bytes_per_device"] == sharded["state_bytes"] - split


def test_bad_configuration_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="optimizer must be one of"):
        optim.make_optimizer("lion", 0.1)
    with pytest.raises(ValueError, match=r"^model mlp does not read data shakespeare"):
        train.Config.of(model="mlp", data="shakespeare").make_task()
    with pytest.raises(ValueError, match=r"^devices 64"):
        train.train(train.Config.of(**{**SMALL, "devices": 64}), tmp_path, log=lambda _: None)
    config = train.Config.of(**SMALL)
    train.train(config.replace(steps=4), tmp_path / "a", log=lambda _: None)
    with pytest.raises(ValueError, match=r"configuration differs .*: hidden: 16 -> 8$"):
        train.train(config.replace(hidden=8), tmp_path / "a", resume=True)
    with pytest.raises(ValueError, match=r"^steps must be at least 1, got 0"):
        train.Config.of(steps=0)


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
    config = train.Config.of(
        **{**SMALL, "optimizer": "sgd", "lr": 0.0, "eval_every": 1, "patience": 2, "steps": 50}
    )
    metrics, _ = train.train(config, tmp_path, log=lambda _: None)
    assert metrics["steps"] == 3 and len(metrics["val"]) == 3


# --- a run directory is a unit ----------------------------------------------------------------

FLAGS = [
    "--model",
    "mlp",
    "--steps",
    "12",
    "--batch-size",
    "32",
    "--hidden",
    "16",
    "--layers",
    "1",
    "--eval-every",
    "6",
    "--checkpoint-every",
    "4",
]


def _snapshot(directory):
    """Every file under ``directory`` with its bytes: what "nothing changed" compares."""
    return {p.relative_to(directory): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def _one_line_error(done, *fragments):
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_a_run_is_refused_overwritten_whole_or_resumed_with_its_configuration(tmp_path):
    out = tmp_path / "run"
    _cli(*FLAGS, "--out", str(out))
    before = _snapshot(out)
    assert sorted(int(p.name) for p in (out / "checkpoints").iterdir()) == [8, 12]
    # run again: refused, nothing touched
    _one_line_error(_cli(*FLAGS, "--out", str(out), status=2), "--resume", "--overwrite")
    # resume with fields that change the model and the optimizer: refused, each field named
    changed = _cli(*FLAGS, "--hidden", "8", "--lr", "0.1", "--out", str(out), "--resume", status=2)
    _one_line_error(changed, "hidden: 16 -> 8", "lr: 0.001 -> 0.1")
    assert _snapshot(out) == before
    # --overwrite replaces the run whole: none of the old checkpoints is left
    _cli(*[f if f != "12" else "3" for f in FLAGS], "--out", str(out), "--overwrite")
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["3"]
    assert json.loads((out / "metrics.json").read_text())["steps"] == 3
    # fields that may change on resume: more steps (constant schedule), evaluation and
    # checkpoint intervals
    flags = [f if f != "12" else "3" for f in FLAGS]
    more = _cli(*flags[:-4], "--steps", "5", "--eval-every", "5", "--out", str(out), "--resume")
    assert "resumed at step 3" in more.stdout
    assert json.loads((out / "metrics.json").read_text())["steps"] == 5


def test_resume_needs_a_run_and_overwrite_needs_a_run(tmp_path):
    empty = tmp_path / "empty"
    _one_line_error(_cli("--out", str(empty), "--resume", status=2), "nothing to resume")
    assert not empty.exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    _one_line_error(_cli("--out", str(other), "--overwrite", status=2), "not a jaxchain run")
    assert (other / "notes.txt").read_text() == "mine"


@pytest.mark.slow  # make test: the same checks through train's flags (the test above)
def test_finetune_refuses_an_existing_run(tmp_path):
    flags = [
        "--strategy",
        "probe",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--eval-every",
        "2",
        "--warmup",
        "1",
        "--out",
        str(tmp_path),
    ]
    _cli(*flags, command="finetune")
    before = _snapshot(tmp_path)
    _one_line_error(_cli(*flags, command="finetune", status=2), "--resume", "--overwrite")
    changed = _cli(*flags, "--strategy", "full", "--resume", command="finetune", status=2)
    _one_line_error(changed, "strategy: 'probe' -> 'full'")
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--model", "mlp", "--data", "shakespeare"], "does not read --data shakespeare"),
        (["--devices", "2"], "XLA_FLAGS=--xla_force_host_platform_device_count=2"),
        (["--steps", "0"], "--steps must be at least 1, got 0"),
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--lr", "-1"], "--lr must be >= 0"),
        (["--step", "10"], "unrecognized arguments: --step"),  # no abbreviations
        (["--model", "cnn"], "invalid choice: 'cnn' (choose from 'mlp', 'rnn', 'lstm'"),
        (["--optimizer", "lion"], "choose from 'sgd'"),
    ],
)
def test_usage_errors_are_one_line_with_status_2(tmp_path, args, says):
    out = tmp_path / "run"
    _one_line_error(_cli(*args, "--out", str(out), status=2), says)
    assert not out.exists()


def test_every_flag_has_help_with_its_default():
    from jaxchain import cli

    commands = cli.parser()._subparsers._group_actions[0].choices
    for name in ("train", "finetune"):
        text = commands[name].format_help()
        for action in commands[name]._actions:
            assert action.help, f"{name} {action.option_strings} has no help"
        assert "(default: 2000)" in text or name == "finetune"


# --- killed at any moment, resumed exactly ----------------------------------------------------

# Runs `jaxchain train` and kills itself with SIGKILL at a chosen point: during the N-th
# training step (after it is dispatched, before its result is recorded) or during the N-th
# checkpoint write (orbax's temporary directory written, not yet renamed).
KILLER = """
import os, signal, sys
from jaxchain import cli
from jaxchain.train import loop
point, at = sys.argv[1], int(sys.argv[2])
calls = []
def maybe_die():
    calls.append(1)
    if len(calls) == at:
        os.kill(os.getpid(), signal.SIGKILL)
if point == "step":
    make = loop.make_step
    def make_step(*a, **k):
        step = make(*a, **k)
        def killing(*args):
            result = step(*args)
            maybe_die()
            return result
        return killing
    loop.make_step = make_step
else:
    from orbax.checkpoint.path import atomicity
    finalize = atomicity.AtomicRenameTemporaryPath.finalize
    async def dying(self, *a, **k):
        maybe_die()
        return await finalize(self, *a, **k)
    atomicity.AtomicRenameTemporaryPath.finalize = dying
sys.exit(cli.main(["train", *sys.argv[3:]]))
"""


def _killed(point, at, *args):
    argv = [sys.executable, "-c", KILLER, point, str(at), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == -9, done.stderr[-3000:]  # it was killed, not finished


def test_sigkill_at_any_moment_then_resume_is_bit_identical(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    flags = [*FLAGS, "--steps", "16", "--checkpoint-every", "3"]
    _cli(*flags, "--out", str(whole))
    _killed("step", 5, *flags, "--out", str(split))  # mid-step 5: checkpoint 3 is the last
    _killed("checkpoint", 2, *flags, "--out", str(split), "--resume")  # writing checkpoint 6
    assert {p.name for p in (split / "checkpoints").iterdir()} == {
        "3",
        "6.orbax-checkpoint-tmp",  # half written, never renamed
    }
    _killed("step", 4, *flags, "--out", str(split), "--resume")  # mid-step 7
    resumed = _cli(*flags, "--out", str(split), "--resume")
    assert "resumed at step 6" in resumed.stdout
    (a, meta_a), (b, meta_b) = (_final_params(d) for d in (whole, split))
    assert meta_a["step"] == meta_b["step"] == 16
    chex.assert_trees_all_equal(a, b)  # params and optimizer state, bit for bit
    assert meta_a["history"]["train_loss"] == meta_b["history"]["train_loss"]
    assert meta_a["history"]["val"] == [
        {**v, "seconds": meta_a["history"]["val"][i]["seconds"]}
        for i, v in enumerate(meta_b["history"]["val"])
    ]


# --- bad values inside jit are never silent ---------------------------------------------------


def _classifier_step(checks):
    from jaxchain import rules

    def loss(params, batch):
        x, y = batch
        return jnp.mean(rules.softmax_cross_entropy(x @ params["w"], y))

    tx = optim.make_optimizer("adam", 0.1)
    params = {"w": jnp.ones((3, 5), F32)}
    return optim.make_step(loss, tx, checks=checks), params, tx.init(params)


def test_an_out_of_range_label_in_a_jitted_step_is_skipped_and_counted():
    step, params, state = _classifier_step(checks=False)
    x = jnp.ones((4, 3), F32)
    for bad in (5, -1):  # label 5 of 5 classes; -1 does not wrap around
        params, state, metrics = step(params, state, (x, jnp.array([0, 1, bad, 2])))
        assert not np.isfinite(metrics["loss"]) and not np.isfinite(metrics["grad_norm"])
        np.testing.assert_array_equal(params["w"], 1.0)  # never applied
    assert int(state.total_notfinite) == 2
    params, state, _ = step(params, state, (x, jnp.array([0, 1, 4, 2])))
    assert not np.all(params["w"] == 1.0)


def test_an_out_of_range_label_in_a_checked_step_raises():
    from jax.experimental import checkify

    step, params, state = _classifier_step(checks=True)
    params, state, _ = step(params, state, (jnp.ones((4, 3), F32), jnp.array([0, 1, 2, 2])))
    step.wait_checks()  # a good step passes
    step(params, state, (jnp.ones((4, 3), F32), jnp.array([0, 1, 5, 2])))  # checked meanwhile
    with pytest.raises(checkify.JaxRuntimeError, match=r"labels must lie in \[0, 5\)"):
        optim.finish_checks(step)
    optim.finish_checks(step)  # raised once; now nothing is pending


@pytest.mark.parametrize("checks", [False, True])
def test_make_step_has_aux_and_donates(checks):
    tx = optim.make_optimizer("sgd", 0.1)
    params = _params()
    step = optim.make_step(
        lambda p, b: (_quadratic(p, b), {"w0": p["w"][0]}), tx, has_aux=True, checks=checks
    )
    new, _, metrics = step(params, tx.init(params), jnp.zeros(3, F32))
    assert float(metrics["aux"]["w0"]) == 1.0 and float(new["w"][0]) < 1.0
    assert params["w"].is_deleted()  # donated: its buffer was reused
    optim.finish_checks(step)


def test_data_layer_refuses_bad_labels_on_the_host():
    with pytest.raises(
        ValueError, match=r"digits: labels must lie in \[0, 10\), got values in \[-1, 3\]"
    ):
        data.check_labels("digits", np.array([0, 3, -1]), 10)


def test_recurrent_layers_stack():
    task = train.Config.of(model="lstm", layers=3, hidden=8).make_task()
    params = task.init(jax.random.key(0))
    assert len(params["cells"]) == 3 and params["cells"][1]["w_x"].shape == (8, 32)
    x, _ = task.batch(0)
    assert task.logits(params, x[:2], train.BACKWARDS["manual"]).shape == (2, 10)


def test_time_limit_is_kept_and_progress_is_printed(tmp_path):
    done = _cli(
        "--model",
        "mlp",
        "--steps",
        "1000000",
        "--time-limit",
        "7",
        "--eval-every",
        "100000",
        "--out",
        str(tmp_path),
    )
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 < metrics["steps"] < 1000000
    assert metrics["seconds"] > 6  # kept: it ran its 7 s (no upper bound: a busy machine is slow)
    assert "step " in done.stdout and " steps/s" in done.stdout  # a line every few seconds


def test_checked_run_from_the_command(tmp_path, capsys):
    from jaxchain import cli

    argv = [
        "train",
        "--model",
        "mlp",
        "--steps",
        "3",
        "--eval-every",
        "3",
        "--checks",
        "--hidden",
        "8",
        "--layers",
        "1",
        "--out",
        str(tmp_path),
    ]
    with jax.numpy_dtype_promotion("standard"):
        assert cli.main(argv) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["skipped_steps"] == 0


# --- the training layer as tables --------------------------------------------------------------


def test_options_are_groups_named_by_their_flags(tmp_path):
    """A configuration nests its options by their user; its leaves keep the flags' names,
    round-trip through ``flags``, and ``run.json`` holds the nested record, read back whole
    (and a flat record too)."""
    config = train.Config.of(**{**SMALL, "lr": 3e-3, "strategy": "lora", "vocab": 512})
    assert config.optim.lr == 3e-3 and config.task.architecture.hidden == 16
    assert config.task.finetuning.strategy == "lora" and config.task.decoder.vocab == 512
    assert train.Config.of(**config.flags) == config
    assert config.replace(rank=4).task.finetuning.rank == 4 and config.task.finetuning.rank == 8
    with pytest.raises(ValueError, match="unknown options hiden"):
        train.Config.of(hiden=8)
    with pytest.raises(ValueError, match=r"^top_k must be at least 1, got 0"):
        train.Config.of(top_k=0)
    runs.prepare(tmp_path / "nested", dataclasses.asdict(config))
    saved = json.loads((tmp_path / "nested" / "run.json").read_text())["config"]
    assert saved["optim"]["lr"] == 3e-3 and saved["task"]["architecture"]["hidden"] == 16
    assert train.read_config(tmp_path / "nested") == config
    runs.prepare(tmp_path / "flat", config.flags)
    assert train.read_config(tmp_path / "flat") == config


def test_every_pair_of_the_tables_and_only_those():
    """The command's choices come from the tables, and each model is refused on a data set it
    does not read, with what it reads and what reads that data set."""
    from jaxchain.train import tasks

    assert tasks.choices(pretrained=True) == (["decoder", "minilm"], ["play", "vader"])
    models, datasets = tasks.choices(pretrained=False)
    assert models == ["mlp", "rnn", "lstm", "gru", "transformer", "decoder"]
    assert datasets == ["digits", "shakespeare"]
    pair = (
        "^model decoder does not read data digits; it reads shakespeare, play, and digits goes with"
    )
    with pytest.raises(ValueError, match=pair):
        tasks.make_task("decoder", "digits")
    with pytest.raises(ValueError, match=r"^model must be one of mlp, .*, minilm, got 'cnn'"):
        tasks.make_task("cnn", "digits")


def test_language_evaluation_honours_its_split():
    """A language task evaluates the split it is asked for, and refuses one it does not
    have (it once returned the validation loss whatever the split)."""
    from jaxchain.train import tasks

    task = train.Config.of(
        model="gru", data="shakespeare", hidden=8, layers=1, seq_len=8
    ).make_task()
    params = task.init(jax.random.key(0))
    val, training = (task.evaluate(params, s)["loss"] for s in ("val", "train"))
    assert np.isfinite(val) and np.isfinite(training) and val != training
    with pytest.raises(ValueError, match="split must be one of train, val, got 'test'"):
        task.evaluate(params, "test")
    # one token a character: nats per character is the mean cross-entropy of the windows
    ids = task.data.splits["val"]
    rows = ids[np.linspace(0, len(ids) - 9, 256).astype(np.int64)[:, None] + np.arange(9)]
    logits = task.logits(params, rows[:, :-1], rules)
    mean = float(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, rows[:, 1:])))
    assert val == pytest.approx(mean, rel=1e-5)
    assert tasks.EVAL_WINDOWS == 256


def test_generate_samples_a_character_run(tmp_path):
    """``jaxchain generate`` continues a prompt with any Shakespeare run (a character model
    here, by recomputing its logits over the window), through the one generation function;
    a digits run is refused in one line."""
    out = tmp_path / "gru"
    flags = ["--hidden", "8", "--layers", "1", "--seq-len", "8", "--steps", "2"]
    _cli("--model", "gru", "--data", "shakespeare", "--out", str(out), *flags)
    done = _cli("--run", str(out), "--prompt", "ROMEO:", "--steps", "12", command="generate")
    text = done.stdout.rstrip("\n")
    assert text.startswith("ROMEO:") and len(text) == len("ROMEO:") + 12
    digits = tmp_path / "mlp"
    _cli("--model", "mlp", "--out", str(digits), "--hidden", "8", "--layers", "1", "--steps", "2")
    done = _cli("--run", str(digits), "--prompt", "a", command="generate", status=2)
    assert done.stderr.count("\n") == 1 and "generate samples language models" in done.stderr
