"""The XLA:CPU kernels each program compiles its step with, as ``compiler_options`` of that
one compiled function (``jax.jit(f, compiler_options=...)``), never by changing a user's
global ``XLA_FLAGS``.

By default XLA:CPU (jax 0.10) sends ``x W`` and ``g W^T`` to YNNPACK and a product whose left
operand is transposed (``x^T g``, every weight gradient) to Eigen. :data:`ONEDNN` sends every
product to oneDNN instead. Which is faster depends on the program (``bench/RESULTS.md``);
:data:`PROGRAMS` holds the choice measured for each of ``jaxchain train``'s models. A user of
the library gets the same with ``jax.jit(step, compiler_options=backends.ONEDNN)``, or for a
whole process with ``XLA_FLAGS="--xla_cpu_use_onednn=true
--xla_cpu_experimental_onednn_fusion_type=individual_dot
--xla_cpu_experimental_ynn_fusion_type="``.

XLA cannot serialise a program with oneDNN fusions: with JAX's persistent compilation cache
on, JAX warns ("Error writing persistent compilation cache entry ... onednn-fusion") and
compiles such a program again in the next process. And XLA (jax 0.10.2) aborts the process
when such a program is destroyed right after a call (``object_pool.h: Check failed:
available_.size() == num_created_``); a program kept until it has been idle a few
milliseconds, as a training step is, is destroyed safely.
"""

from collections.abc import Mapping

#: Every product to oneDNN, one product a fusion, none to YNNPACK.
ONEDNN: Mapping[str, object] = {
    "xla_cpu_use_onednn": True,
    "xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
    "xla_cpu_experimental_ynn_fusion_type": "",
}

#: The compiler options of each backend, by name; ``default`` is XLA's own choice.
BACKENDS: Mapping[str, Mapping[str, object]] = {"default": {}, "onednn": ONEDNN}

#: The backend each model of ``jaxchain train`` and ``finetune`` compiles its step with
#: (a model not named here: ``default``).
PROGRAMS: Mapping[str, str] = {}


def backend_of(model: str) -> str:
    """The backend ``model``'s training step is compiled with (:data:`PROGRAMS`)."""
    return PROGRAMS.get(model, "default")


def compiler_options(backend: str) -> dict[str, object] | None:
    """``jax.jit``'s ``compiler_options`` for ``backend`` (None for the default); a
    ``ValueError`` naming ``backend`` when it is not one of :data:`BACKENDS`."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {backend!r}")
    return dict(BACKENDS[backend]) or None
