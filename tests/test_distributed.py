"""Beyond one process: two real processes on 127.0.0.1 (JAX's distributed runtime, gloo
collectives) train as one process does, resume across processes, and stop with a clear
error when one dies; parameters sharded over 8 host devices train as one device does."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import pytest

from jaxchain import train
from jaxchain.train import distributed, runs

MLP = [
    "--model",
    "mlp",
    "--steps",
    "8",
    "--batch-size",
    "32",
    "--hidden",
    "16",
    "--layers",
    "1",
    "--eval-every",
    "4",
    "--checkpoint-every",
    "4",
]
QUIET = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(command, *flags, process, port, env=QUIET, log=None):
    """Process ``process`` of two: process 0 told by flags, process 1 by the environment."""
    cluster = {"coordinator": f"127.0.0.1:{port}", "num_processes": "2", "process_id": str(process)}
    argv = [sys.executable, "-m", "jaxchain.cli", command, *flags]
    if process == 0:
        argv += [f"--{k.replace('_', '-')}={v}" for k, v in cluster.items()]
    else:
        env = {**env, **{distributed.ENV[k]: v for k, v in cluster.items()}}
    out = subprocess.PIPE if log is None else log
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, text=True, env=env)


def _together(command, *flags, env=QUIET):
    """Run ``command`` as two processes; both must succeed."""
    port = _port()
    procs = [_start(command, *flags, process=i, port=port, env=env) for i in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return outs


def _alone(command, *flags, env=QUIET):
    argv = [sys.executable, "-m", "jaxchain.cli", command, *flags]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _state(out):
    """The final ``(params and optimizer state, metadata)`` of the mlp run in ``out``."""
    config = train.Config.of(model="mlp", data="digits", hidden=16, layers=1)
    params = config.make_task().init(jax.random.key(0))
    tx = config.optimizer_for()
    checkpoints = runs.Checkpoints(out / "checkpoints")
    state, meta = checkpoints.restore({"params": params, "opt_state": tx.init(params)})
    checkpoints.close()
    return state, meta


def test_two_processes_train_and_resume_as_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _alone("train", *MLP, "--out", str(one))
    first, _ = _together("train", *MLP, "--out", str(two), "--stop-at", "4")
    assert "step 4: val accuracy" in first[0] and "val accuracy" not in first[1]  # logs once
    resumed, _ = _together("train", *MLP, "--out", str(two), "--resume")
    assert "resumed at step 4" in resumed[0]
    assert {p.name for p in two.iterdir()} == {
        ".lock",
        "run.json",
        "checkpoints",
        "metrics.json",
        "loss.png",
    }
    assert json.loads((two / "run.json").read_text())["config"]["devices"] == 2
    (a, meta_a), (b, meta_b) = _state(one), _state(two)
    assert meta_a["step"] == meta_b["step"] == 8
    # the same batches, split over two processes: equal up to float32 summation order
    np.testing.assert_allclose(
        meta_b["history"]["train_loss"], meta_a["history"]["train_loss"], rtol=1e-5
    )
    assert [v["accuracy"] for v in meta_b["history"]["val"]] == [
        v["accuracy"] for v in meta_a["history"]["val"]
    ]
    chex.assert_trees_all_close(b, a, rtol=1e-5, atol=1e-6)


def test_a_dead_process_stops_the_other_with_a_clear_error(tmp_path):
    flags = [
        *MLP,
        "--steps",
        "1000000",
        "--eval-every",
        "1000000",
        "--checkpoint-every",
        "1000000",
        "--out",
        str(tmp_path / "run"),
    ]
    port = _port()
    with open(tmp_path / "log", "w") as log:
        survivor = _start("train", *flags, process=0, port=port, log=log)
        victim = _start("train", *flags, process=1, port=port)
        hang = time.monotonic() + 600  # a guard against a hang, not a bound on speed
        while "steps/s" not in (tmp_path / "log").read_text():  # training: a progress line
            assert survivor.poll() is None and time.monotonic() < hang, survivor.stderr.read()
            time.sleep(0.5)
        victim.send_signal(signal.SIGKILL)
        victim.communicate()  # closes its pipes
        # no bound on time (a loaded machine is slow): the survivor must stop through the
        # failed collective (our message, status 1), not JAX's heartbeat, which aborts
        _, err = survivor.communicate(timeout=600)  # a guard against a hang only
    assert survivor.returncode == 1, err[-3000:]
    assert "jaxchain train: error: process 0 of 2 stopped" in err
    assert "another process has probably died" in err and "--resume" in err


@pytest.mark.parametrize(
    ("flags", "env", "says"),
    [
        (dict(num_processes=2), {}, "num_processes 2 needs coordinator HOST:PORT and process_id"),
        (
            dict(num_processes=2, process_id=2, coordinator="h:1"),
            {},
            "process_id must be in [0, 1]",
        ),
        (
            dict(num_processes=2, process_id=0, coordinator="nowhere"),
            {},
            "coordinator must be HOST:PORT",
        ),
        (dict(process_id=1), {}, "process_id 1 needs num_processes"),
        ({}, {"JAXCHAIN_NUM_PROCESSES": "two"}, "JAXCHAIN_NUM_PROCESSES must be an integer"),
    ],
)
def test_a_cluster_that_cannot_be_is_a_clear_error(flags, env, says):
    with pytest.raises(ValueError, match=f"^{re.escape(says)}"):
        distributed.Cluster.from_flags(**flags, environ=env)


def test_the_environment_names_the_cluster_and_flags_win():
    env = {
        "JAXCHAIN_COORDINATOR": "10.0.0.1:1234",
        "JAXCHAIN_NUM_PROCESSES": "4",
        "JAXCHAIN_PROCESS_ID": "3",
    }
    assert distributed.Cluster.from_flags(environ=env) == distributed.Cluster("10.0.0.1:1234", 4, 3)
    assert distributed.Cluster.from_flags(process_id=1, environ=env).process_id == 1
    assert not distributed.Cluster.from_flags(environ={}).multi


# --- sharded parameters, and the fine-tuned encoder out to Hugging Face -----------------------

FINETUNE = [
    "--strategy",
    "full",
    "--steps",
    "4",
    "--batch-size",
    "8",
    "--seq-len",
    "8",
    "--eval-every",
    "4",
    "--warmup",
    "1",
]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """Two short MiniLM fine-tuning runs: on one device, and over 8 host devices with the
    params and optimizer state sharded (both tests below use them: one xdist group)."""
    root = tmp_path_factory.mktemp("finetune")
    env = {
        **QUIET,
        "XLA_FLAGS": f"{QUIET.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8",
    }
    _alone("finetune", *FINETUNE, "--out", str(root / "one"), env=env)
    _alone(
        "finetune",
        *FINETUNE,
        "--devices",
        "8",
        "--shard",
        "params",
        "--out",
        str(root / "eight"),
        env=env,
    )
    return root


@pytest.mark.slow  # two MiniLM runs (2 min); make test shards the MLP (test_train.py)
@pytest.mark.xdist_group("finetuned")
def test_sharded_params_train_as_one_device_in_an_eighth_of_the_memory(finetuned):
    one, eight = (
        json.loads((finetuned / d / "metrics.json").read_text()) for d in ("one", "eight")
    )
    assert eight["config"]["shard"] == "params" and eight["config"]["devices"] == 8
    np.testing.assert_allclose(
        np.array(eight["train_loss"]), np.array(one["train_loss"]), rtol=1e-5
    )
    assert [v["accuracy"] for v in eight["val"]] == [v["accuracy"] for v in one["val"]]
    assert eight["test_accuracy"] == one["test_accuracy"]
    # params + Adam's two moments: about 260 MiB whole; each device holds about an eighth
    assert one["state_bytes_per_device"] == one["state_bytes"] == eight["state_bytes"]
    assert one["state_bytes"] / 8 < eight["state_bytes_per_device"] < one["state_bytes"] / 7.9


@pytest.mark.slow  # the same two runs
@pytest.mark.xdist_group("finetuned")
def test_export_writes_the_fine_tuned_encoder_for_hugging_face(finetuned):
    from safetensors.numpy import load_file

    from jaxchain import pretrained

    for run in ("one", "eight"):  # the sharded run's checkpoint is read on one device
        _alone("export", "--run", str(finetuned / run), "--out", str(finetuned / f"hf-{run}"))
    config = train.read_config(finetuned / "eight")
    task = config.make_task()
    like = jax.eval_shape(task.init, jax.random.key(0))
    params = train.restore_params(finetuned / "eight", config, like, task.trainable)
    exported = pretrained.load_minilm(finetuned / "hf-eight")
    chex.assert_trees_all_equal(exported.params, params["encoder"])  # bit for bit
    head = load_file(finetuned / "hf-eight" / pretrained.HEAD_FILE)
    np.testing.assert_array_equal(head["weight"], np.asarray(params["head"]["w"]).T)
    # the one-device run's: 4 Adam steps of at most lr = 1e-4 each, equal to within 1e-5
    # (the key biases, whose gradient is zero but for rounding, move by Adam's noise)
    chex.assert_trees_all_close(
        pretrained.load_minilm(finetuned / "hf-one").params, exported.params, rtol=0, atol=1e-5
    )
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxchain.cli",
            "export",
            "--run",
            str(finetuned / "one"),
            "--out",
            str(finetuned / "hf-one"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 2 and "is not empty" in again.stderr
