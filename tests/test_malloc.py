"""The command's allocator setting (:mod:`jaxchain._malloc`): a compiled program's
temporary buffer, freed at the end of each call, is reused by the next call instead of being
mapped and faulted in again. Counted in page faults, not timed; each process runs alone."""

import os
import resource
import subprocess
import sys

import pytest

from jaxchain import _malloc
from jaxchain.benchmarks import harness

# A program with a 64 MiB temporary (the outer product, read by a matrix product), past
# glibc's largest mmap threshold (32 MiB): the fewest page faults of 5 calls after 2.
CALLS = """
import json, resource, sys
from jaxchain import _malloc
kept = _malloc.keep_freed_memory()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: (jnp.outer(x, x) @ x[:, None]).sum()).lower(jnp.ones(4096, jnp.float32))
f = f.compile()
temp = f.memory_analysis().temp_size_in_bytes
x = jnp.ones(4096, jnp.float32)
faults = []
for i in range(7):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "temp": temp, "faults": min(faults[2:])}))
"""


def _fresh_pages_fault_one_by_one() -> bool:
    """4 KiB pages, and no transparent huge pages on every mapping (``always`` maps a fresh
    buffer in 2 MiB pages: a few dozen faults, with or without the setting)."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            always = "[always]" in f.read()
    except OSError:
        always = False
    return resource.getpagesize() == 4096 and not always


pytestmark = [
    pytest.mark.skipif(_malloc._glibc() is None, reason="glibc's malloc only"),
    pytest.mark.skipif(not _fresh_pages_fault_one_by_one(), reason="4 KiB pages, THP not always"),
]


def _run(**env) -> dict:
    import json

    done = subprocess.run(
        [sys.executable, "-c", CALLS],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "GLIBC_TUNABLES": "", **env},
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def test_a_freed_temporary_buffer_is_reused_without_page_faults():
    kept = _run()
    assert kept["kept"] and kept["temp"] >= 64 << 20
    assert kept["faults"] < 1000  # a fresh 64 MiB buffer is 16384 pages


def test_the_system_allocator_faults_the_buffer_in_on_every_call():
    """``JAXCHAIN_MALLOC=system``: glibc's defaults, and the cost the setting removes."""
    system = _run(JAXCHAIN_MALLOC="system")
    assert not system["kept"]
    assert system["faults"] > 8000


def test_the_pytorch_worker_gets_the_same_allocator(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    monkeypatch.setattr(_malloc, "SETTING", None)
    assert _malloc.child_environment()["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
    monkeypatch.setattr(_malloc, "SETTING", "kept")
    tunables = _malloc.child_environment()["GLIBC_TUNABLES"]
    assert tunables == "glibc.malloc.hugetlb=1:" + _malloc.TUNABLES


def test_a_call_of_main_from_python_leaves_the_allocator_alone(monkeypatch, capsys):
    """Only the command line sets it: a process that calls ``cli.main`` has threads already."""
    from jaxchain import cli

    calls = []
    monkeypatch.setattr(_malloc, "keep_freed_memory", lambda: calls.append(1))
    with pytest.raises(SystemExit):  # argparse: no command given
        cli.main([])
    assert calls == []
    monkeypatch.setattr(sys, "argv", ["jaxchain"])
    with pytest.raises(SystemExit):
        cli.main()
    assert calls == [1]


def test_a_benchmark_records_how_memory_is_allocated(monkeypatch):
    monkeypatch.setattr(_malloc, "SETTING", None)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert harness.machine()["malloc"] == "the C library's defaults"
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")
    assert harness.machine()["malloc"] == "GLIBC_TUNABLES=glibc.malloc.arena_max=1"
    monkeypatch.setattr(_malloc, "SETTING", "kept")
    assert harness.machine()["malloc"] == "kept"
