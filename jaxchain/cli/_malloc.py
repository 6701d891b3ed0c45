"""The command's memory allocator: glibc's malloc, set to keep the memory a call of a compiled
program frees for the next call.

XLA:CPU allocates each call's temporary buffer afresh (163 MiB for ``jaxchain train --model
decoder``'s step) and frees it when the call ends. glibc serves a request that large with a
new ``mmap`` (from any thread but the main one, whatever ``M_MMAP_MAX`` says), returns it with
``munmap``, and the kernels then fault the buffer in again page by page: about 43,000 page
faults and 100 ms of system time per decoder step on a 2-core machine, a third of the step
(``bench/RESULTS.md``). With one arena, no ``mmap`` and no trimming, the freed buffer stays in
the heap and the next call reuses it: no page faults after the first steps. The cost is that
the process keeps its peak memory until it exits, which a training run or a benchmark does
anyway.

The settings only reach threads that have not allocated yet, so :func:`keep_freed_memory`
runs before the command imports its module, before JAX starts its thread pools. A program
that uses the library gets the same from the environment, before Python starts::

    GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967296

``JAXCHAIN_MALLOC=system`` leaves glibc's defaults. PyTorch's steps suffer the same (MiniLM's
``BertModel`` step: 36,000 page faults a step), so ``jaxchain bench`` runs its PyTorch worker
with the same setting (:func:`child_environment`): the two are compared on one allocator.
"""

import ctypes
import os

#: The same setting, for a process about to start (``GLIBC_TUNABLES``).
TUNABLES = "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967296"

# mallopt(3)'s parameters
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_SETTINGS = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))

#: What the allocator was set to, in words, for a benchmark's header (None: glibc's defaults).
SETTING: str | None = None


def _glibc():
    """The process's C library, if it is glibc (it has ``mallopt`` and
    ``gnu_get_libc_version``)."""
    try:
        libc = ctypes.CDLL(None)  # the symbols the process has loaded
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def keep_freed_memory() -> bool:
    """One malloc arena, no ``mmap``, no trimming, unless ``JAXCHAIN_MALLOC=system``; True
    when glibc took every setting (False on another C library, which is left as it is)."""
    global SETTING
    if os.environ.get("JAXCHAIN_MALLOC") == "system":
        return False
    libc = _glibc()
    if libc is None or not all(libc.mallopt(p, v) == 1 for p, v in _SETTINGS):
        return False
    SETTING = "glibc malloc: one arena, no mmap, no trim; PyTorch's worker too"
    return True


def child_environment() -> dict[str, str]:
    """This process's environment, with :data:`TUNABLES` where this process took the setting:
    for a process whose time is compared with this one's."""
    env = dict(os.environ)
    if SETTING is not None:
        env["GLIBC_TUNABLES"] = ":".join(filter(None, (env.get("GLIBC_TUNABLES"), TUNABLES)))
    return env
