# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 7. A modern decoder from scratch
#
# Today's language models are decoder-only transformers that changed four parts of the 2017
# block: rotary position embeddings (RoPE) instead of learned positions, RMSNorm instead of
# layer norm, a gated SwiGLU feed-forward unit instead of GELU, and grouped-query attention,
# where several query heads share one key/value head. They generate with a KV cache, and are
# fine-tuned with LoRA. Each part's backward pass is derived here, written as
# `jaxchain.rules` writes it, and asserted against `jax.grad`.

# %%
import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from jaxchain import nn, reference, rules

keys = jax.random.split(jax.random.key(0), 12)

# %% [markdown]
# ## RoPE: positions as rotations
#
# Pair each head vector's halves, $(x_j, x_{j+H/2})$, and rotate pair $j$ at position $p$ by
# $\theta_j = p\,\beta^{-2j/H}$:
#
# $$\begin{pmatrix} y_j \\ y_{j+H/2} \end{pmatrix} = R(\theta_j)
#   \begin{pmatrix} x_j \\ x_{j+H/2} \end{pmatrix}, \qquad
#   R(\theta) = \begin{pmatrix} \cos\theta & -\sin\theta \\ \sin\theta & \cos\theta
#   \end{pmatrix}.$$
#
# **Why relative positions.** Rotations compose and are orthogonal, so a query at $p$ and a
# key at $p'$ score $\langle R_p q, R_{p'} k\rangle = \langle q, R_p^\top R_{p'} k\rangle =
# \langle q, R_{p'-p}\, k \rangle$: only the offset $p' - p$ matters.
#
# **Its backward.** $y = R x$ is linear, so $\bar x = R^\top \bar y = R(-\theta)\, \bar y$:
# rotate the cotangent back. Nothing needs saving but the positions.

# %%
q, k = jax.random.normal(keys[0], (1, 6, 2, 8)), jax.random.normal(keys[1], (1, 6, 2, 8))
pos = jnp.arange(6)[None]
score = lambda shift: jnp.einsum(  # noqa: E731
    "btnh,bsnh->bnts", rules.rope(q, pos + shift), rules.rope(k, pos + shift)
)
np.testing.assert_allclose(score(100), score(0), rtol=1e-9, atol=1e-12)

g = jax.random.normal(keys[2], q.shape)
_, pull = jax.vjp(lambda x: reference.rope(x, pos), q)  # autodiff of Hugging Face's form
rotated_back = rules.rope(g, -pos)  # R(-theta) g: the rotation by minus the angle
np.testing.assert_allclose(pull(g)[0], rotated_back, rtol=1e-12, atol=1e-12)
print("scores are shift-invariant; the VJP of RoPE is RoPE at -p")

# %% [markdown]
# ## RMSNorm's backward
#
# $y = \gamma \odot x\, r$ with $r = (\langle x^2\rangle + \epsilon)^{-1/2}$ (mean over the
# $D$ features). From $\partial r/\partial x_j = -r^3 x_j / D$ and $\hat g = g \odot \gamma$,
# $\hat x = x r$:
#
# $$\bar x = r\,\big(\hat g - \hat x\, \langle \hat g \odot \hat x \rangle\big), \qquad
#   \bar\gamma = \textstyle\sum_{\text{rows}} g \odot \hat x.$$
#
# Layer norm's formula without the mean terms: RMSNorm does not centre.

# %%
x, gamma = jax.random.normal(keys[3], (4, 16)), 1 + 0.1 * jax.random.normal(keys[4], (16,))
g = jax.random.normal(keys[5], (4, 16))
r = 1 / jnp.sqrt(jnp.mean(x**2, -1, keepdims=True) + 1e-6)
x_hat, g_hat = x * r, g * gamma
by_hand = r * (g_hat - x_hat * jnp.mean(g_hat * x_hat, -1, keepdims=True))
for ops in (reference, rules):  # jax.grad of the plain formula, and the hand-written rule
    _, pull = jax.vjp(ops.rms_norm, x, gamma)
    np.testing.assert_allclose(pull(g)[0], by_hand, rtol=1e-12)
    np.testing.assert_allclose(pull(g)[1], jnp.sum(g * x_hat, 0), rtol=1e-12)
print("RMSNorm: dx = r (g_hat - x_hat <g_hat x_hat>)")

# %% [markdown]
# ## SwiGLU's backward
#
# $y = \mathrm{silu}(a) \odot u$ with $a = x W_g$, $u = x W_u$ and
# $\mathrm{silu}(a) = a\,\sigma(a)$, whose derivative is
# $\sigma(a)\,(1 + a(1 - \sigma(a)))$. The product rule splits the cotangent between the two
# branches:
#
# $$\bar u = g \odot \mathrm{silu}(a), \quad \bar a = g \odot u \odot \mathrm{silu}'(a),
#   \quad \bar W_g = x^\top \bar a, \quad \bar W_u = x^\top \bar u, \quad
#   \bar x = \bar a W_g^\top + \bar u W_u^\top.$$

# %%
x = jax.random.normal(keys[6], (5, 8))
w_g, w_u = jax.random.normal(keys[7], (8, 12)), jax.random.normal(keys[8], (8, 12))
g = jax.random.normal(keys[9], (5, 12))
a, u = x @ w_g, x @ w_u
sig = jax.nn.sigmoid(a)
u_bar, a_bar = g * a * sig, g * u * sig * (1 + a * (1 - sig))
by_hand = (a_bar @ w_g.T + u_bar @ w_u.T, x.T @ a_bar, x.T @ u_bar)
for ops in (reference, rules):
    _, pull = jax.vjp(ops.swiglu, x, w_g, w_u)
    for got, want in zip(pull(g), by_hand, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-11)
print("SwiGLU: the gate's and the value's gradients, by the product rule")

# %% [markdown]
# ## Grouped-query attention: a gradient sum
#
# With $N$ query heads and $K$ key/value heads, query head $n$ reads key/value head
# $n // G$, $G = N/K$. A key/value head is *used* $G$ times, so by the multivariate chain rule
# its gradient is the **sum** of the $G$ uses' gradients:
# $\bar K_k = \sum_{n:\, n // G = k} \bar K^{(n)}$. Equivalently: repeating $K$ along heads
# is a copy, and the transpose of a copy is a sum.

# %%
B, T, N, KV, H = 2, 5, 4, 2, 8
q = jax.random.normal(keys[10], (B, T, N, H))
kv = jax.random.normal(keys[11], (2, B, T, KV, H))
loss = lambda q, k, v: jnp.sum(rules.dot_product_attention(q, k, v, is_causal=True) ** 2)  # noqa: E731
dk = jax.grad(loss, 1)(q, kv[0], kv[1])
repeated = lambda k: jnp.repeat(k, N // KV, axis=2)  # noqa: E731 (head n reads k[n // G])
per_head = jax.grad(
    lambda kr: jnp.sum(reference.dot_product_attention(q, kr, repeated(kv[1]), is_causal=True) ** 2)
)(repeated(kv[0]))  # the gradient of each query head's private copy
np.testing.assert_allclose(dk, per_head.reshape(B, T, KV, N // KV, H).sum(3), rtol=1e-10)
print("dK of a shared head = the sum over its group")

# %% [markdown]
# ## The KV cache
#
# Generating token $t+1$ needs attention of the new query against all keys and values
# $0..t$. Those were computed at earlier steps and do not change (causal attention: a position
# never sees later ones), so keep them: each step projects one token, appends its key and
# value, and attends once, $O(t)$ work instead of re-running the whole sequence, $O(t^2)$.
# `nn.decoder.generate` does this in one `jit` (a `lax.scan` over steps); it must produce
# exactly what full recomputation does:

# %%
params = nn.decoder.init(jax.random.key(1), 31, d_model=16, num_heads=4, num_kv_heads=2,
                         num_layers=2, d_ff=32)  # fmt: skip
params = jax.tree.map(lambda a: 20 * a if a.ndim > 1 else a, params)  # decisive logits
prompt = jnp.array([[3, 1, 4]])
cached = nn.decoder.generate(params, prompt, 8, key=jax.random.key(2), temperature=0.0)
# Full recomputation: the whole sequence through the model at every step. Causal attention
# lets it run on a fixed-length buffer (positions not yet generated cannot affect earlier
# logits), so it compiles once.
apply = jax.jit(nn.decoder.apply)
seq = jnp.zeros((1, 3 + 8), prompt.dtype).at[:, :3].set(prompt)
for i in range(3, 3 + 8):
    seq = seq.at[:, i].set(jnp.argmax(apply(params, seq)[:, i - 1], -1))
np.testing.assert_array_equal(cached, seq)
print("cached:", cached[0].tolist())

# %% [markdown]
# ## LoRA's gradients
#
# LoRA freezes $W$ and learns a low-rank correction, $y = xW + b + s\,(xA)B$ with
# $A \in \mathbb R^{I \times R}$, $B \in \mathbb R^{R \times O}$, $R \ll I, O$. With
# $h = xA$:
#
# $$\bar B = s\, h^\top g, \qquad \bar A = s\, x^\top (g B^\top), \qquad
#   \bar x = g W^\top + s\,(g B^\top) A^\top,$$
#
# and no $\bar W$, $\bar b$ at all: the rule returns symbolic zeros, so the $I \times O$
# product $x^\top g$ is never formed. Because $B$ starts at zero, training starts exactly at
# the pretrained model; afterwards $W + sAB$ merges the adapter away.

# %%
x, w, b = jax.random.normal(keys[0], (6, 10)), jax.random.normal(keys[1], (10, 7)), jnp.ones(7)
A, Bm = jax.random.normal(keys[2], (10, 2)), jax.random.normal(keys[3], (2, 7))
g = jax.random.normal(keys[4], (6, 7))
y, pull = jax.vjp(lambda x, w, b, A, Bm: rules.lora_dense(x, w, b, A, Bm, scale=2.0),
                  x, w, b, A, Bm)  # fmt: skip
dx, dw, db, dA, dB = pull(g)
np.testing.assert_allclose(dB, 2.0 * (x @ A).T @ g, rtol=1e-12)
np.testing.assert_allclose(dA, 2.0 * x.T @ (g @ Bm.T), rtol=1e-12)
np.testing.assert_allclose(dx, g @ w.T + 2.0 * (g @ Bm.T) @ A.T, rtol=1e-12)
assert not dw.any() and not db.any()
np.testing.assert_allclose(y, x @ (w + 2.0 * A @ Bm) + b, rtol=1e-12)  # merged = adapted
print(f"trainable: {A.size + Bm.size} of {w.size + b.size + A.size + Bm.size} numbers")
