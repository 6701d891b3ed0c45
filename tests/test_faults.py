"""Faults a user meets, through real `jaxchain` processes: a compilation cache shared by
racing processes, damaged checkpoints, two runs into one directory, SIGINT and SIGTERM, every
error a user can cause (one line, exit status 2, the flag or file named), checked steps from
Python."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import chex
import jax
import pytest

from jaxchain import train
from jaxchain.train import runs

RUN = ["--model", "mlp", "--batch-size", "32", "--hidden", "16", "--layers", "1"]
FLAGS = [*RUN, "--steps", "12", "--eval-every", "6", "--checkpoint-every", "4"]


def _argv(*args, command="train"):
    return [sys.executable, "-m", "jaxchain.cli", command, *args]


def _cli(*args, status=0, command="train"):
    done = subprocess.run(
        _argv(*args, command=command), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == status, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _one_line(done, *fragments):
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _snapshot(directory):
    """Every file of a run with its bytes, but the lock file (its last holder's id)."""
    files = (p for p in directory.rglob("*") if p.is_file() and p.name != ".lock")
    return {p.relative_to(directory): p.read_bytes() for p in files}


def _state(out):
    """The params, optimizer state and loss history of the run in ``out``'s last checkpoint."""
    config = train.read_config(out)
    task = config.make_task()
    params = task.init(jax.random.key(0))
    tx = config.optimizer_for(task.trainable)
    checkpoints = runs.Checkpoints(out / "checkpoints")
    state, meta = checkpoints.restore({"params": params, "opt_state": tx.init(params)})
    checkpoints.close()
    return state, meta["step"], meta["history"]["train_loss"]


# --- the compilation cache, shared ------------------------------------------------------------

# Compiles 24 distinct programs in a shuffled order, twice (the second time from the persistent
# cache), checking each result; prints how many cache entries it could not read.
RACER = """
import random, sys, warnings
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
order = list(range(24))
random.Random(int(sys.argv[2])).shuffle(order)
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    for _ in range(2):
        for i in order:
            got = jax.jit(lambda x, i=i: jnp.sum(jnp.tanh(x * (i + 1))) + i)(jnp.arange(8.0))
            want = np.sum(np.tanh(np.arange(8.0, dtype=np.float32) * (i + 1))) + i
            assert abs(float(got) - want) < 1e-4, (i, got, want)
        jax.clear_caches()
torn = [w for w in seen if "persistent compilation cache" in str(w.message)]
assert len(torn) == len(seen), [str(w.message) for w in seen]
print(len(torn))
"""


def test_processes_racing_over_one_compilation_cache_get_right_results(tmp_path):
    """Six processes write and read one fresh cache directory at once: every result is
    right; an entry read half-written is a warning (ignored by the suite) and a compilation,
    never a wrong program or an error."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), str(seed)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for seed in range(6)
    ]  # fmt: skip
    results = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-3000:]
    torn = sum(int(out.split()[-1]) for out, _ in results)
    print(f"{torn} torn reads among 6 processes")  # seen with pytest -s
    assert len(list(tmp_path.glob("*-cache"))) >= 24  # one entry per program, at least


# --- checkpoints that cannot be read ----------------------------------------------------------


def _truncate_a_data_file(step_dir):
    files = sorted(
        (step_dir / "state" / "ocdbt.process_0" / "d").iterdir(), key=lambda p: p.stat().st_size
    )
    data = files[-1].read_bytes()
    files[-1].write_bytes(data[: len(data) // 2])


def _delete_the_manifest(step_dir):
    (step_dir / "state" / "manifest.ocdbt").unlink()


def _delete_the_step(step_dir):
    shutil.rmtree(step_dir)


def test_resume_falls_back_past_damaged_checkpoints(tmp_path):
    """Checkpoints 8 and 12; checkpoint 12 damaged three ways: --resume says so in one line
    (nothing to say when the step is gone), continues from 8, and writes a checkpoint 12
    equal to the undamaged one, bit for bit. With both damaged: one line, exit 2, nothing
    changed."""
    base = tmp_path / "base"
    _cli(*FLAGS, "--out", str(base))
    assert sorted(p.name for p in (base / "checkpoints").iterdir()) == ["12", "8"]
    expected, step, losses = _state(base)
    for damage in (_truncate_a_data_file, _delete_the_manifest, _delete_the_step):
        run = tmp_path / damage.__name__
        shutil.copytree(base, run)
        damage(run / "checkpoints" / "12")
        done = _cli(*FLAGS, "--out", str(run), "--resume")
        said = [line for line in done.stdout.splitlines() if "cannot be read" in line]
        if damage is _delete_the_step:
            assert said == [], done.stdout
        else:
            assert len(said) == 1 and said[0].startswith("checkpoint 12 cannot be read"), said
            assert (run / "corrupt-checkpoints" / "12").is_dir()  # set aside, not deleted
        assert "resumed at step 8" in done.stdout
        got, got_step, got_losses = _state(run)
        chex.assert_trees_all_equal(got, expected)
        assert (got_step, got_losses) == (step, losses)
    ruined = tmp_path / "ruined"
    shutil.copytree(base, ruined)
    _truncate_a_data_file(ruined / "checkpoints" / "12")
    _delete_the_manifest(ruined / "checkpoints" / "8")
    before = _snapshot(ruined)
    done = _cli(*FLAGS, "--out", str(ruined), "--resume", status=2)
    _one_line(done, "--resume: no checkpoint in", "can be read (tried 12, 8")
    assert _snapshot(ruined) == before


# --- one run, one writer ----------------------------------------------------------------------


def test_two_runs_started_together_into_one_directory(tmp_path):
    """Exactly one runs; the other is refused in one line; the run is whole."""
    out = tmp_path / "run"
    flags = [*RUN, "--steps", "200", "--eval-every", "100", "--out", str(out)]
    procs = [
        subprocess.Popen(_argv(*flags), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [p.communicate(timeout=600) for p in procs]
    statuses = sorted(p.returncode for p in procs)
    assert statuses == [0, 2], results
    refused = results[[p.returncode for p in procs].index(2)][1].strip().splitlines()
    assert len(refused) == 1, refused
    assert "is in use by another run (process " in refused[0] or "holds a run" in refused[0]
    assert json.loads((out / "metrics.json").read_text())["steps"] == 200
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["200"]


def _steps(out) -> set[str]:
    return {p.name for p in (out / "checkpoints").glob("*") if p.name.isdigit()}


def _started(proc, out, before, seconds=300):
    """Wait until ``proc`` holds the run in ``out`` (its id in the lock file) and trains (a
    checkpoint not among ``before``: it checkpoints every step)."""
    deadline = time.monotonic() + seconds
    lock = out / ".lock"
    while not (lock.is_file() and lock.read_text().strip() == str(proc.pid)) or not (
        _steps(out) - before
    ):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.2)


def _interrupt(flags, out, signum, *extra, second=()):
    """Start a run, wait until it trains (a second run with the flags ``second`` is then
    refused), and send ``signum``: the run stops after its step, checkpointed, with one line
    and the status 128 + signum."""
    before = _steps(out) if out.exists() else set()
    proc = subprocess.Popen(
        _argv(*flags, "--out", str(out), *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _started(proc, out, before)
        if second:
            other = _cli(*flags, "--out", str(out), *second, status=2)
            _one_line(other, f"is in use by another run (process {proc.pid})")
        time.sleep(1.0)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:  # a failed assertion above: never leave it running
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signum, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    line = f"interrupted at step {metrics['steps']}; checkpoint written; --resume continues"
    assert stderr.strip().splitlines() == [f"jaxchain train: {line}"], stderr
    assert metrics["interrupted"] == signal.Signals(signum).name
    assert str(metrics["steps"]) in _steps(out)
    return metrics["steps"]


def test_sigint_and_sigterm_save_and_resume_bit_identical(tmp_path):
    """Ctrl-C, then --resume, then SIGTERM, then --resume to the end: the same params,
    optimizer state and losses as a run never stopped."""
    out = tmp_path / "run"
    flags = [*RUN, "--steps", "1000000", "--eval-every", "1000000", "--checkpoint-every", "1"]
    first = _interrupt(flags, out, signal.SIGINT, second=["--resume"])
    second = _interrupt(flags, out, signal.SIGTERM, "--resume", second=["--overwrite"])
    assert second >= first
    end = second + 3
    _cli(*flags[:-6], "--steps", str(end), "--out", str(out), "--resume")
    whole = tmp_path / "whole"
    _cli(*flags[:-6], "--steps", str(end), "--out", str(whole))
    (a, step_a, losses_a), (b, step_b, losses_b) = _state(out), _state(whole)
    chex.assert_trees_all_equal(a, b)
    assert step_a == step_b == end and losses_a == losses_b


# --- every error a user can cause: one line, exit status 2 ------------------------------------


def _bad_run_json(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"config": {"model": "mlp",\n')
    return ["--out", str(run), "--resume"]


def _bad_tokenizer(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(
        json.dumps({"config": {"model": "decoder", "data": "shakespeare"}})
    )
    (run / "tokenizer.json").write_text("{not a tokenizer")
    return ["--run", str(run), "--prompt", "x"]


def _a_file(tmp_path):
    (tmp_path / "f").write_text("mine")
    return ["--out", str(tmp_path / "f")]


def _under_a_file(tmp_path):
    (tmp_path / "f").write_text("mine")
    return ["--out", str(tmp_path / "f" / "run")]


CASES = [  # (name, command, arguments from tmp_path, what the line says)
    ("out is a file", "train", _a_file, "is a file, not a directory"),
    ("out under a file", "train", _under_a_file, "which is a file"),
    ("out unwritable", "train", lambda _: ["--out", "/sys/jaxchain-run"], "/sys"),
    ("run.json corrupt", "train", _bad_run_json, "run.json cannot be read"),
    ("run.json missing", "train", lambda p: ["--out", str(p), "--resume"], "nothing to resume"),
    ("tokenizer corrupt", "generate", _bad_tokenizer, "cannot be read as a tokenizer"),
]


@pytest.mark.parametrize(
    ("command", "make", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_user_errors_are_one_line_with_status_2(tmp_path, command, make, says):
    args = make(tmp_path)
    before = _snapshot(tmp_path)
    done = subprocess.run(
        _argv(*RUN[:2], "--steps", "2", *args, command=command)
        if command == "train"
        else _argv(*args, command=command),
        capture_output=True,
        text=True,
        timeout=600,
    )
    _one_line(done, says)
    assert _snapshot(tmp_path) == before


# Sets the limit in the child before it runs the command: no file may grow past 16 KiB, less
# than a checkpoint's data file (writes past it fail with EFBIG, as a full disk fails them with
# ENOSPC; Python ignores the SIGXFSZ that comes with it). An exec, not `preexec_fn`: a fork of
# this process, which runs JAX's threads, warns (and may deadlock).
LIMITED = (
    "import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 10,) * 2);"
    " os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


@pytest.mark.parametrize("how", ["tmpfs", "file size limit"])
def test_a_full_disk_is_one_line_with_status_2(tmp_path, how):
    """A checkpoint that cannot be written: on a 32 KiB tmpfs where one can be mounted (as
    root), and under a 16 KiB file size limit, which needs no privilege."""
    disk = tmp_path / "disk"
    disk.mkdir()
    # smaller than one checkpoint: its first write fails however soon orbax deletes old ones
    mount = ["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(disk)]
    if how == "tmpfs" and subprocess.run(mount, capture_output=True).returncode != 0:
        how = "file size limit"  # not root: the other simulation, not a skip
    argv = _argv(*FLAGS, "--out", str(disk / "run"))
    if how == "file size limit":
        argv = [sys.executable, "-c", LIMITED, *argv[1:]]
    says = "No space left on device" if how == "tmpfs" else "File too large"
    env = {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"}  # its files would fail too
    import matplotlib.font_manager  # noqa: F401  (its font cache, written here, is only read there)

    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
        _one_line(done, "jaxchain train: error: --out: ", says)  # a checkpoint or loss.png
    finally:
        if how == "tmpfs":
            subprocess.run(["umount", str(disk)], check=True)


# tensorstore's messages as orbax raises them; the spec payload may come before the code, and
# once did so in a run of the test above ("...cannot be written in ...: true}']")
_WRITING = 'RESOURCE_EXHAUSTED: Error writing local file "/d/manifest.ocdbt": Failed to write'
_SPEC = "[tensorstore_spec='{\"create\": true}']"


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ValueError(f"{_WRITING}: No space left on device [os_error_code='28']"), "No space"),
        (
            ValueError(f"{_WRITING}: No space left on device {_SPEC} [os_error_code='28']"),
            "No space",
        ),
        (ValueError(f"{_WRITING}: File too large [os_error_code=27] {_SPEC}"), "File too large"),
        (OSError(28, "No space left on device"), "No space"),
        (ValueError("INVALID_ARGUMENT: shape mismatch: [4] vs [5]"), None),
    ],
)
def test_the_file_systems_reason_is_read_from_its_code(error, reason):
    said = runs.os_error(error)
    assert (said is None) if reason is None else said.startswith(reason)


@pytest.mark.parametrize(
    ("error", "logged"), [(OSError(28, "No space left on device"), False), (KeyError("x"), True)]
)
def test_a_write_the_file_system_failed_is_not_logged_again_by_asyncio(caplog, error, logged):
    """asyncio logs each failed task nobody awaited when it is collected; orbax leaves one per
    pending write of a checkpoint the disk refused, which the command has reported already.
    Only those are dropped (a CI run printed 40 such lines after the one-line error)."""
    import asyncio
    import gc
    import logging

    from jaxchain import cli

    async def write():
        raise error

    loop = asyncio.new_event_loop()
    task = loop.create_task(write())
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addFilter(cli._not_a_failed_write)
    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            del task
            gc.collect()
    finally:
        asyncio_log.removeFilter(cli._not_a_failed_write)
    said = [r for r in caplog.records if "exception was never retrieved" in r.getMessage()]
    assert len(said) == int(logged), caplog.text


def test_load_minilm_names_the_file_that_is_missing_or_wrong(tmp_path):
    from safetensors.numpy import load_file, save_file

    from jaxchain import pretrained

    source = pretrained.minilm_dir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copyfile(source / name, tmp_path / name)
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        pretrained.load_minilm(tmp_path)
    state = load_file(source / "model.safetensors")
    name = next(k for k in state if k.endswith("embeddings.word_embeddings.weight"))
    state[name] = state[name][:-1]  # one row short of config.json's vocabulary
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"model.safetensors: .*word.* has shape \(30521, 384\)"):
        pretrained.load_minilm(tmp_path)
    shutil.copyfile(source / "model.safetensors", tmp_path / "model.safetensors")
    (tmp_path / "tokenizer.json").write_text("{")
    with pytest.raises(ValueError, match=r"tokenizer\.json cannot be read"):
        pretrained.load_minilm(tmp_path)


# --- generate, checked steps, dropout ---------------------------------------------------------


def test_generate_is_bounded_and_its_text_is_whole_characters():
    from jaxchain.train import data, tasks

    tokenizer = data.bpe(data.shakespeare(), 300)
    with pytest.raises(ValueError, match=f"passes the {tasks.MAX_TOKENS} tokens"):
        text = tasks.Text.of_tokenizer(tokenizer)
        tasks.generate_text(tasks.Model(None, None), text, None, "ROMEO:", tasks.MAX_TOKENS)
    ids = tokenizer.encode("café\tnaïve\n").ids
    assert data.decode_text(tokenizer, ids) == "café\tnaïve\n"
    byte = {v: k for k, v in tokenizer.get_vocab().items()}
    half = [i for i, t in byte.items() if t == "Ã"]  # 0xC3: the first half of é
    control = [i for i, t in byte.items() if t == chr(256 + 0x17)]  # byte 0x17
    assert data.decode_text(tokenizer, [*ids, *control, *half]) == "café\tnaïve\n"


def test_a_checked_step_raises_at_the_next_call_and_an_unread_failure_is_one_line():
    script = """
import jax, jax.numpy as jnp
from jaxchain import rules
from jaxchain.train import optim
loss = lambda p, b: jnp.mean(rules.softmax_cross_entropy(b[0] @ p["w"], b[1]))
with jax.numpy_dtype_promotion("standard"):
    tx = optim.make_optimizer("sgd", 0.1)
    step, p = optim.make_step(loss, tx, checks=True), {"w": jnp.ones((3, 5))}
    s = tx.init(p)
    p, s, _ = step(p, s, (jnp.ones((4, 3)), jnp.array([0, 1, 7, 2])))  # label 7 of 5
    if len(__import__("sys").argv) > 1:
        try:
            step(p, s, (jnp.ones((4, 3)), jnp.array([0, 1, 2, 2])))
        except Exception as e:
            print(type(e).__name__)
"""
    raised = subprocess.run(
        [sys.executable, "-c", script, "next"], capture_output=True, text=True, timeout=300
    )
    assert raised.stdout.strip() == "JaxRuntimeError" and raised.stderr == "", raised.stderr
    unread = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    lines = unread.stderr.strip().splitlines()
    assert len(lines) == 1 and "labels must lie in [0, 5)" in lines[0], unread.stderr


def test_dropout_resumes_bit_identical_and_is_recorded(tmp_path):
    with jax.numpy_dtype_promotion("standard"):
        small = dict(
            model="mlp",
            steps=6,
            batch_size=32,
            hidden=16,
            layers=1,
            eval_every=6,
            checkpoint_every=3,
            dropout=0.3,
        )
        config = train.Config.of(**small)
        _, p1 = train.train(config, tmp_path / "whole", log=lambda _: None)
        train.train(config, tmp_path / "split", stop_at=3, log=lambda _: None)
        _, p2 = train.train(config, tmp_path / "split", resume=True, log=lambda _: None)
        _, p0 = train.train(
            train.Config.of(**{**small, "dropout": 0.0}), tmp_path / "plain", log=lambda _: None
        )
    chex.assert_trees_all_equal(p1, p2)
    leaves = zip(jax.tree.leaves(p0), jax.tree.leaves(p1), strict=True)
    assert not all(bool((a == b).all()) for a, b in leaves)  # dropout changed the run
    saved = json.loads((tmp_path / "split" / "run.json").read_text())["config"]
    assert saved["task"]["dropout"] == 0.3  # run.json nests the options by their user
    with pytest.raises(ValueError, match=r"^dropout must be in \[0, 1\)"):
        train.Config.of(dropout=1.0)
