"""The ``jaxchain`` command.

``jaxchain --help`` lists the commands and imports nothing heavy; ``jaxchain COMMAND ...``
imports that command's module (:mod:`~jaxchain.cli.check`, :mod:`~jaxchain.cli.train`,
:mod:`~jaxchain.cli.models`, :mod:`~jaxchain.cli.bench`) and builds its flags. A command whose
extra is not installed says which, in one line, with exit status 2.
"""

import argparse
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence

import jaxchain
from jaxchain import _malloc
from jaxchain._arguments import ArgumentError
from jaxchain._extras import MissingExtra

#: command: (the module of :mod:`jaxchain.cli` that builds its flags and runs it, its help)
COMMANDS = {
    "check": ("check", "check every rule against autodiff and finite differences"),
    "train": ("train", "train a model on a packaged data set"),
    "finetune": (
        "train",
        "fine-tune MiniLM-L6 on the VADER sentiment lexicon, or a Llama decoder (--base) on a play",
    ),
    "generate": ("models", "sample text from a trained language model (--data shakespeare)"),
    "export": ("models", "write a MiniLM run as Hugging Face BERT, a decoder run as Llama"),
    "bench": ("bench", "time and memory: hand-written against autodiff (and PyTorch)"),
    "audit": ("bench", "the checker over jax.numpy, jax.scipy, optax and flax derivatives"),
}


#: a Python argument's flag where it is not ``--`` and the name with dashes for underscores
FLAGS: dict[str, str] = {}


def flag(argument: str) -> str:
    """The flag that gives the library's ``argument``: ``batch_size`` -> ``--batch-size``."""
    return FLAGS.get(argument, "--" + argument.replace("_", "-"))


def message(error: Exception) -> str:
    """``error``'s message in the command's words: the arguments an
    :class:`~jaxchain._arguments.ArgumentError` names, as the flags that give them."""
    return error.render(flag) if isinstance(error, ArgumentError) else str(error)


class UsageError(Exception):
    """A command-line mistake: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line (``prog: error: ...``, exit status 2) and
    ``--help`` to see the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``jaxchain`` command line: every command, with the flags of ``command`` (of every
    command when None). Building a command's flags imports its module (and its extra)."""
    root = _Parser(
        prog="jaxchain",
        description="The chain rule written by hand, checked against autodiff.",
        allow_abbrev=False,
    )
    root.add_argument("--version", action="version", version=f"jaxchain {jaxchain.__version__}")
    commands = root.add_subparsers(dest="command", required=True)
    formatter = argparse.ArgumentDefaultsHelpFormatter
    for name, (module, help) in COMMANDS.items():
        p = commands.add_parser(
            name, help=help, description=help, allow_abbrev=False, formatter_class=formatter
        )
        if command in (None, name):
            importlib.import_module(f"jaxchain.cli.{module}").flags(name, p)
    return root


def _command(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (its first word that is not a flag), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def _quiet_closed_loops(unraisable, *, hook=sys.unraisablehook) -> None:
    """``sys.unraisablehook`` less tensorstore's late callbacks into the event loop of an
    orbax write that failed ("Event loop is closed", one per pending write, while the command
    reports the write's own error in one line)."""
    value = unraisable.exc_value
    if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
        return
    hook(unraisable)


def _not_a_failed_write(record: logging.LogRecord) -> bool:
    """False for asyncio's "Task exception was never retrieved" of an orbax write that the
    file system failed (one per pending write of the checkpoint, logged when the task is
    collected, while the command reports that checkpoint's error in one line)."""
    error = record.exc_info[1] if record.exc_info else None
    if error is None or "exception was never retrieved" not in str(record.msg):
        return True
    from jaxchain.train import runs

    return runs.os_error(error) is None


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the command line, before JAX starts a thread (not a call from Python)
        _malloc.keep_freed_memory()
    argv = list(sys.argv[1:] if argv is None else argv)
    name = _command(argv)
    try:
        args = parser(name if name in COMMANDS else "").parse_args(argv)
    except MissingExtra as e:
        print(f"jaxchain {name}: error: {e}", file=sys.stderr)
        return 2
    # orbax logs the errors it raises, tracebacks included, through absl; the command
    # reports each error itself, in one line
    logging.getLogger("absl").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").addFilter(_not_a_failed_write)
    sys.unraisablehook = _quiet_closed_loops
    # and of an orbax write the file system failed, a write fragment's coroutine that never
    # ran, reported when the interpreter exits
    warnings.filterwarnings("ignore", r"coroutine '.*write_fragment' was never awaited")
    try:
        status = args.run(args)
    except MissingExtra as e:  # a part of a command that needs another extra
        print(f"jaxchain {args.command}: error: {e}", file=sys.stderr)
        status = 2
    except UsageError as e:
        print(f"jaxchain {args.command}: error: {e}", file=sys.stderr)
        status = 2
    except ArgumentError as e:  # the library's, its arguments as this command's flags
        print(f"jaxchain {args.command}: error: {message(e)}", file=sys.stderr)
        status = 2
    except OSError as e:  # a file or directory the command was asked to write or read
        if e.filename is None:
            raise
        print(f"jaxchain {args.command}: error: {e.filename}: {e.strerror}", file=sys.stderr)
        status = 2
    except Exception as e:
        cluster = getattr(args, "cluster", None)
        if cluster is None or not cluster.multi:
            raise
        # Most likely another process died: a collective with it fails at once. Leave now;
        # JAX's orderly shutdown would wait for the lost process at a barrier.
        print(
            f"jaxchain {args.command}: error: process {cluster.process_id} of "
            f"{cluster.num_processes} stopped: {type(e).__name__}: {e}\n"
            f"another process has probably died; the run's last checkpoint is kept: start "
            f"all {cluster.num_processes} processes again with --resume",
            file=sys.stderr,
            flush=True,
        )
        os._exit(1)
    return status
