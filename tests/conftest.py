"""Strict JAX settings for the whole suite: float64 available, no implicit rank promotion,
strict dtype promotion. Hypothesis runs few examples unless HYPOTHESIS_PROFILE=thorough.
``make test`` sets ``XLA_FLAGS=--xla_backend_optimization_level=0``: the suite is bound by
compilation (most of its programs run once), which -O0 makes about 40% faster; the commands the
tests start inherit it (tests that set a device count append theirs), and ``make thorough``
compiles at XLA's default level, as users' programs are. No test's outcome depends on time:
hangs are guarded by generous timeouts, never a bound on speed.

Compiled programs are shared through JAX's persistent compilation cache in
``.pytest_cache/jax-compilation`` — every program, however quick its compilation: each module
drops its compiled programs (below) and the next compiles many of them again, and the
``jaxchain`` commands the tests start compile the same small programs in every process — by
both workers and by those commands; ``make clean`` removes it.

Sharing it is safe, but not silent: JAX writes an entry in place (``write_bytes``, no lock
unless eviction is on), so a process may read another's entry half written. The entry is
zlib-compressed, and zlib checks a stream's end and its Adler-32 checksum, so a torn read
fails to decompress (a whole stream with a longer writer's tail after it decompresses to the
whole entry); JAX then warns ("Error reading persistent compilation cache entry") and
compiles the program itself. That warning is
ignored here and, through ``PYTHONWARNINGS``, in the commands the tests start:
``tests/test_faults.py`` runs processes racing over one cache and checks their results.
JAX's own lock (``jax_compilation_cache_max_size``) would serialise the processes and scan
every entry at every write, thousands of entries in this suite."""

import os
import pathlib

import hypothesis
import jax
import pytest

import jaxchain.cases.testing  # noqa: F401  (registers the hypothesis profiles)

TORN_READ = "Error reading persistent compilation cache entry"  # a miss; JAX compiles it
CACHE = pathlib.Path(__file__).parents[1] / ".pytest_cache" / "jax-compilation"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(CACHE))  # the commands tests start
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ["PYTHONWARNINGS"] = ",".join(
    filter(None, [os.environ.get("PYTHONWARNINGS"), f"ignore:{TORN_READ}:UserWarning"])
)
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs",
    float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]),
)
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

_PROFILES = {"default": "jaxchain", "thorough": "jaxchain-thorough"}
hypothesis.settings.load_profile(_PROFILES[os.environ.get("HYPOTHESIS_PROFILE", "default")])


UNOPTIMIZED = "--xla_backend_optimization_level=0" in os.environ.get("XLA_FLAGS", "")


@pytest.fixture
def xla_optimizes() -> bool:
    """Whether XLA compiles at its default level here (``make thorough``; ``make test``
    compiles at -O0). Values drawn by JAX (``jax.random.normal``'s transform) and jitted
    programs match the fixtures made at the default level only then, to the bit."""
    return not UNOPTIMIZED


@pytest.fixture
def file_mode() -> int:
    """The mode a plain ``open`` gives a new file here: 0666 less the umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs():
    """Each test module's compiled XLA programs are dropped after it: a long-lived pytest
    worker otherwise accumulates thousands of them, each holding memory mappings, until the
    process meets Linux's limit of 65,530 mappings (and a later import fails to map a
    library)."""
    yield
    jax.clear_caches()
