"""Low precision as the ecosystem does it: inputs narrower than float32 (bfloat16, float16)
are computed in float32 (reductions, log-sum-exps, statistics, accumulators), and results
and gradients are returned in the input dtype."""

import jax
import jax.numpy as jnp


def wide(x: jax.Array) -> jax.Array:
    """``x`` in float32 if it is a narrower float, else unchanged."""
    return x.astype(jnp.float32) if jnp.finfo(x.dtype).bits < 32 else x


def row_max(x: jax.Array, axis: int) -> jax.Array:
    """The maximum along ``axis`` (kept); ``-inf`` along an empty axis."""
    return jnp.max(x, axis=axis, keepdims=True, initial=-jnp.inf)


def finite_or_zero(m: jax.Array) -> jax.Array:
    """A shift for ``exp(x - m)``: ``m`` where finite, else 0 (so that an infinite maximum
    gives an infinite or zero sum, as :func:`jax.nn.logsumexp` does, not NaN)."""
    return jnp.where(jnp.isfinite(m), m, 0)
