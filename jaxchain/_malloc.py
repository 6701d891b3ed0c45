"""The ``jaxchain`` command's memory allocator: glibc's malloc, set to keep the memory a call of
a compiled program frees for the next call.

XLA:CPU allocates each call's temporary buffer afresh (163 MiB for ``jaxchain train --model
decoder``'s step) and frees it when the call ends. glibc serves a request that large with a
new ``mmap`` (from any thread but the main one, whatever ``M_MMAP_MAX`` says), returns it with
``munmap``, and the kernels then fault the buffer in again page by page: about 43,000 page
faults and 100 ms of system time per decoder step on a 2-core machine, a third of the step
(``bench/RESULTS.md``). With one arena, no ``mmap`` and no trimming, the freed buffer stays in
the heap and the next call reuses it: no page faults after the first steps. The cost is that
the process keeps its peak memory until it exits, which a training run or a benchmark does
anyway.

The settings only reach threads that have not allocated yet, so the command line (not
``jaxchain.cli.main`` called from Python) runs :func:`keep_freed_memory` first, before JAX
starts its thread pools. A program
that uses the library can ask for the same through the environment, before Python starts
(in most processes, not all: in 1 of 5 the faults remained)::

    GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647

``JAXCHAIN_MALLOC=system`` leaves glibc's defaults. PyTorch's steps suffer the same (MiniLM's
``BertModel`` step: 36,000 page faults a step), so ``jaxchain bench`` runs its PyTorch worker
with the same setting (:func:`child_environment`): the two are compared on one allocator.
"""

import ctypes
import os
import sys

#: The same setting, for a process about to start (``GLIBC_TUNABLES``).
TUNABLES = "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647"

# mallopt(3)'s parameters
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))  # int max

#: What the allocator was set to, in words, for a benchmark's header (None: not set here).
SETTING: str | None = None


def _glibc():
    """The process's C library on Linux, if it is glibc (it has ``mallopt`` and
    ``gnu_get_libc_version``); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the symbols the process has loaded
    except (OSError, TypeError):
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def keep_freed_memory() -> bool:
    """One malloc arena, no ``mmap``, no trimming below 2 GiB, unless ``JAXCHAIN_MALLOC`` is
    ``system`` (any case); True when glibc took every setting (False on another C library or
    system, which is left as it is)."""
    global SETTING
    if os.environ.get("JAXCHAIN_MALLOC", "").strip().lower() == "system":
        return False
    libc = _glibc()
    if libc is None:
        return False
    taken = [libc.mallopt(parameter, value) == 1 for parameter, value in _SETTINGS]
    if not all(taken):
        return False
    SETTING = "glibc malloc: one arena, no mmap, no trim"
    return True


def child_environment() -> dict[str, str]:
    """This process's environment, with :data:`TUNABLES` where this process took the setting:
    for a process whose time is compared with this one's."""
    env = dict(os.environ)
    if SETTING is not None:
        env["GLIBC_TUNABLES"] = ":".join(filter(None, (env.get("GLIBC_TUNABLES"), TUNABLES)))
    return env
