"""The library speaks Python, the command speaks flags: each error raised through
Python names the argument the caller passed, with the expected and the actual value; the same
error through the command names the flag, in one line with exit status 2. The command maps
arguments to flags in one place (``jaxchain.cli.flag``); no message is rewritten."""

import pytest

from jaxchain import cli, train
from jaxchain._arguments import ArgumentError
from jaxchain.cases import audit
from jaxchain.train import distributed, runs, tasks

# (what raises through Python, its message; the command's arguments, its message)
TABLE = [
    (
        lambda tmp: train.Config.of(steps=0),
        "steps must be at least 1, got 0",
        ["train", "--steps", "0"],
        "jaxchain train: error: --steps must be at least 1, got 0",
    ),
    (
        lambda tmp: train.Config.of(top_k=0),
        "top_k must be at least 1, got 0",
        ["finetune", "--top-k", "0"],
        "jaxchain finetune: error: --top-k must be at least 1, got 0",
    ),
    (
        lambda tmp: train.Config.of(dropout=1.0),
        "dropout must be in [0, 1), got 1.0",
        ["train", "--dropout", "1.0"],
        "jaxchain train: error: --dropout must be in [0, 1), got 1.0",
    ),
    (
        lambda tmp: tasks.make_task("mlp", "shakespeare"),
        "model mlp does not read data shakespeare; it reads digits, and shakespeare goes with "
        "rnn, lstm, gru, transformer, decoder",
        ["train", "--model", "mlp", "--data", "shakespeare"],
        "jaxchain train: error: --model mlp does not read --data shakespeare; it reads digits, "
        "and shakespeare goes with rnn, lstm, gru, transformer, decoder",
    ),
    (
        lambda tmp: distributed.mesh_shardings(4, 32),
        "devices 4 but only 1 available; on the CPU, set "
        "XLA_FLAGS=--xla_force_host_platform_device_count=4",
        ["train", "--devices", "4"],
        "jaxchain train: error: --devices 4 but only 1 available; on the CPU, set "
        "XLA_FLAGS=--xla_force_host_platform_device_count=4",
    ),
    (
        lambda tmp: distributed.Cluster.from_flags(None, 2, None, environ={}),
        "num_processes 2 needs coordinator HOST:PORT and process_id",
        ["train", "--num-processes", "2"],
        "jaxchain train: error: --num-processes 2 needs --coordinator HOST:PORT and --process-id",
    ),
    (
        lambda tmp: runs.vet(tmp / "run", {}, resume=True, overwrite=True),
        "resume and overwrite exclude each other",
        ["train", "--resume", "--overwrite"],
        "jaxchain train: error: --resume and --overwrite exclude each other",
    ),
    (
        lambda tmp: runs.vet(tmp / "file", {}),
        "out: {tmp}/file is a file, not a directory",
        ["train", "--out", "{tmp}/file"],
        "jaxchain train: error: --out: {tmp}/file is a file, not a directory",
    ),
    (
        lambda tmp: train.read_config(tmp),
        "run: {tmp} is not a jaxchain run (no run.json)",
        ["generate", "--run", "{tmp}", "--prompt", "ROMEO"],
        "jaxchain generate: error: --run: {tmp} is not a jaxchain run (no run.json)",
    ),
    (
        lambda tmp: audit.select(["nowhere"]),
        "only: unknown recipe(s) 'nowhere'; known: ",
        ["audit", "--only", "nowhere"],
        "jaxchain audit: error: --only: unknown recipe(s) 'nowhere'; known: ",
    ),
]


@pytest.mark.parametrize(("raise_it", "says", "argv", "command_says"), TABLE)
def test_python_names_the_argument_and_the_command_its_flag(
    raise_it, says, argv, command_says, tmp_path, capsys
):
    (tmp_path / "file").write_text("")
    here = str(tmp_path)
    with pytest.raises(ArgumentError) as raised:
        raise_it(tmp_path)
    assert str(raised.value).startswith(says.replace("{tmp}", here)), str(raised.value)
    if "--out" not in argv and argv[0] in ("train", "finetune"):
        argv = [*argv, "--out", str(tmp_path / "run")]
    assert cli.main([a.replace("{tmp}", here) for a in argv]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(command_says.replace("{tmp}", here)), err


def test_no_library_message_names_a_flag():
    """Outside ``jaxchain.cli``, no raised message spells a flag (``--batch-size``): the
    library's errors name the Python arguments, and the command maps them."""
    import pathlib
    import re

    import jaxchain

    root = pathlib.Path(jaxchain.__file__).parent
    flagged = re.compile(r"raise \w+\(\s*f?\"[^\"]*(?<![\w-])--[a-z][a-z-]+")
    found = [
        f"{path.relative_to(root)}: {m.group(0)}"
        for path in sorted(root.rglob("*.py"))
        if "cli" not in path.relative_to(root).parts
        for m in flagged.finditer(path.read_text())
    ]
    assert not found, found


def test_a_choice_outside_its_set_names_the_argument_not_a_template():
    """``options.one_of`` raised a plain ValueError whose ``{optimizer}`` template was never
    filled in; the command's argparse choices caught it first, Python callers saw braces."""
    with pytest.raises(ArgumentError) as raised:
        train.Config.of(optimizer="adamax")
    assert str(raised.value).startswith("optimizer must be one of sgd, ")
    assert str(raised.value).endswith("got 'adamax'") and "{" not in str(raised.value)
