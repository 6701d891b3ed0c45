"""What a user would write instead of a hand-written rule, timed next to it."""

import math

import jax
import jax.numpy as jnp
from jax import lax


def chunked_attention(q, k, v, *, is_causal: bool = False, chunk: int = 512):
    """Rabe and Staats' memory-efficient attention ("Self-attention does not need O(n^2)
    memory", 2021) as plain JAX: queries in chunks, and within each a map over key chunks whose
    summaries (values, weights, maxima) are combined at the end; each key chunk's work is under
    ``jax.checkpoint``, so that autodiff recomputes it in the backward pass instead of saving
    it. Causality is a mask inside each chunk (no chunk is skipped). ``(B, T, N, H)`` layout.
    """
    b, t, n, h = q.shape
    s = k.shape[1]
    qc, kc = min(chunk, t), min(chunk, s)
    scale = 1 / math.sqrt(h)

    @jax.checkpoint
    def summarize(q_c, k_c, v_c, q_start, k_start):
        scores = jnp.einsum("bqnh,bknh->bnqk", q_c, k_c) * scale
        if is_causal:
            q_idx = q_start + jnp.arange(q_c.shape[1])[:, None]
            k_idx = k_start + jnp.arange(k_c.shape[1])[None, :]
            scores = jnp.where(k_idx <= q_idx, scores, -jnp.inf)
        m = lax.stop_gradient(jnp.max(scores, axis=-1, keepdims=True))
        m = jnp.where(jnp.isfinite(m), m, 0)
        e = jnp.exp(scores - m)
        return jnp.einsum("bnqk,bknh->bnqh", e, v_c), jnp.sum(e, axis=-1), m[..., 0]

    def query_chunk(q_start):
        q_c = lax.dynamic_slice_in_dim(q, q_start, qc, axis=1)

        def key_chunk(k_start):
            k_c = lax.dynamic_slice_in_dim(k, k_start, kc, axis=1)
            v_c = lax.dynamic_slice_in_dim(v, k_start, kc, axis=1)
            return summarize(q_c, k_c, v_c, q_start, k_start)

        values, weights, maxes = lax.map(key_chunk, jnp.arange(0, s, kc))
        top = jnp.max(maxes, axis=0, keepdims=True)
        correction = jnp.exp(maxes - top)
        values = jnp.sum(values * correction[..., None], axis=0)
        weights = jnp.sum(weights * correction, axis=0)
        return jnp.moveaxis(values / weights[..., None], 1, 2)  # (B, qc, N, H)

    out = lax.map(query_chunk, jnp.arange(0, t, qc))  # (T / qc, B, qc, N, H)
    return jnp.moveaxis(out, 0, 1).reshape(b, t, n, h)
