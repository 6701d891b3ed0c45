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
# # 3. Attention
#
# Scaled dot-product attention, $O = \mathrm{softmax}(Q K^\top / \sqrt d)\, V$, is three
# matrix products around a row-wise softmax. Its backward pass is the softmax Jacobian and the
# product rule. We derive both, check them against `jax.grad`, extend to several heads, and
# show the trick every fast implementation uses: save the per-row log-sum-exp instead of the
# $T \times T$ probabilities, and recompute the probabilities in the backward pass.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

jax.config.update("jax_enable_x64", True)

from jaxchain import check, nn, reference, rules

keys = jax.random.split(jax.random.key(0), 6)

# %% [markdown]
# ## The softmax Jacobian
#
# For $p = \mathrm{softmax}(s)$, $p_i = e^{s_i} / \sum_j e^{s_j}$:
#
# $$\frac{\partial p_i}{\partial s_j} = p_i (\mathbb 1[i = j] - p_j), \qquad
#   J = \mathrm{diag}(p) - p p^\top.$$
#
# A backward pass never builds $J$: the vector-Jacobian product with an upstream gradient
# $\bar p$ is
#
# $$\bar s = J^\top \bar p = p \odot (\bar p - \langle \bar p, p \rangle).$$

# %%
s = jax.random.normal(keys[0], (6,))
p = jax.nn.softmax(s)
J = jnp.diag(p) - jnp.outer(p, p)
np.testing.assert_allclose(jax.jacobian(jax.nn.softmax)(s), J, rtol=1e-14, atol=1e-16)
p_bar = jax.random.normal(keys[1], (6,))
_, pull = jax.vjp(jax.nn.softmax, s)
np.testing.assert_allclose(pull(p_bar)[0], p * (p_bar - p_bar @ p), rtol=1e-13, atol=1e-16)
print("J = diag(p) - p p^T; J^T p_bar = p * (p_bar - <p_bar, p>)")

# %% [markdown]
# ## The scaled dot-product backward
#
# Forward, for one head: $S = Q K^\top / \sqrt d$, $P = \mathrm{softmax}_{\text{rows}}(S)$,
# $O = P V$. Backward from $\bar O = \partial L / \partial O$:
#
# $$\bar V = P^\top \bar O, \qquad \bar P = \bar O V^\top, \qquad
#   \bar S = P \odot \big(\bar P - \mathrm{rowsum}(\bar P \odot P)\big), \qquad
#   \bar Q = \bar S K / \sqrt d, \qquad \bar K = \bar S^\top Q / \sqrt d.$$
#
# One more identity saves a $T \times T$ product: $\mathrm{rowsum}(\bar P \odot P) =
# \mathrm{rowsum}(\bar O V^\top \odot P) = \mathrm{rowsum}(\bar O \odot P V) =
# \mathrm{rowsum}(\bar O \odot O)$ — a sum over the head dimension, from arrays the forward
# already returned.

# %%
T, S_len, d = 5, 7, 4
Q, K, V = (jax.random.normal(k, (n, d)) for k, n in zip(keys[:3], (T, S_len, S_len), strict=True))
O_bar = jax.random.normal(keys[3], (T, d))


def attention(Q, K, V):
    return jax.nn.softmax(Q @ K.T / jnp.sqrt(d), axis=-1) @ V


P = jax.nn.softmax(Q @ K.T / jnp.sqrt(d), axis=-1)
O = P @ V
P_bar = O_bar @ V.T
D = jnp.sum(O_bar * O, axis=-1, keepdims=True)
np.testing.assert_allclose(D, jnp.sum(P_bar * P, axis=-1, keepdims=True), rtol=1e-13)
S_bar = P * (P_bar - D)
by_hand = (S_bar @ K / jnp.sqrt(d), S_bar.T @ Q / jnp.sqrt(d), P.T @ O_bar)

_, pull = jax.vjp(attention, Q, K, V)
for name, ours, auto in zip("QKV", by_hand, pull(O_bar), strict=True):
    np.testing.assert_allclose(ours, auto, rtol=1e-12, atol=1e-14, err_msg=name)
print("dQ, dK, dV by hand == jax.vjp")

# %% [markdown]
# ## Recomputing the probabilities from the log-sum-exp
#
# The backward needs $P$, a $T \times S$ array per head. Saving it costs memory quadratic in
# the sequence length. Instead, save one number per row, $\ell = \log \sum_j e^{S_{ij}}$
# (computed stably as $m + \log \sum_j e^{S_{ij} - m}$ with $m$ the row maximum), and rebuild
# $P = e^{S - \ell}$ in the backward from $Q$ and $K$, which are saved anyway. This is what
# `jaxchain.rules.dot_product_attention` does: it saves $Q, K, V, O$ and $\ell$.

# %%
Sc = Q @ K.T / jnp.sqrt(d)
m = jnp.max(Sc, axis=-1, keepdims=True)
lse = m + jnp.log(jnp.sum(jnp.exp(Sc - m), axis=-1, keepdims=True))
np.testing.assert_allclose(jnp.exp(Sc - lse), P, rtol=1e-14)
huge = 1e4 * Sc  # a naive exp overflows here; the shifted one does not
lse_huge = jax.nn.logsumexp(huge, axis=-1, keepdims=True)
assert np.all(np.isfinite(jnp.exp(huge - lse_huge))) and not np.all(np.isfinite(jnp.exp(huge)))
print("P == exp(S - lse), stable for scores as large as 1e4")

# %% [markdown]
# ## Several heads, masks, and the checker
#
# Multi-head attention runs the same computation on $N$ heads of size $H = D / N$, each with
# its own projections ($W_q, W_k, W_v$ of shape $(D, N, H)$ in jaxchain, so the head count is
# in the shapes) and concatenates the heads through $W_o$. The gradient of each head is
# independent of the others, so the backward above is simply batched over heads. A mask sets
# the scores of forbidden positions to $-\infty$ (their $P$ is 0, so their gradient is 0); a
# causal mask forbids $j > i$.

# %%
q, k, v = (jax.random.normal(kk, (2, 6, 3, 4)) for kk in keys[3:6])  # (B, T, N, H)
report = check.check_vjp(
    lambda q, k, v: rules.dot_product_attention(q, k, v, is_causal=True),
    lambda q, k, v: reference.dot_product_attention(q, k, v, is_causal=True),
    q,
    k,
    v,
    name="causal attention, 3 heads",
)
print(report)
assert report.ok

mha = nn.attention.init(keys[0], 12, 3, dtype=jnp.float64)
x = jax.random.normal(keys[1], (2, 6, 12))
mask = jnp.arange(6)[None, :] < jnp.array([[6], [4]])  # the second sequence has 2 pads
report = check.check_vjp(
    lambda p, x: nn.attention.apply(p, x, mask, ops=rules),
    lambda p, x: nn.attention.apply(p, x, mask, ops=reference),
    mha,
    x,
    name="multi-head self-attention, padded",
)
print(report)
assert report.ok

# %% [markdown]
# ## Backward memory against sequence length
#
# XLA reports the temporary memory a compiled function needs. We compile the loss and its
# gradient for one head of size 64, in float32, for growing $T$: with `jax.grad` of the
# straightforward twin, which keeps $P$ for its backward, and with the hand-written rule as
# it chooses by default. Below $T = 1024$ the rule computes the whole $T \times T$ scores at
# once and saves the log-sum-exp instead of $P$. From $T = 1024$ it goes **blockwise**
# (blocks of 512 queries by 256 keys) and never builds a $T \times T$ array at all: the
# forward pass keeps a running maximum and normaliser per row (an online softmax), and the
# backward pass recomputes one block of $P = e^{S - \ell}$ at a time.


# %%
def temp_mib(ops, t):
    x = jnp.zeros((1, t, 1, 64), jnp.float32)

    def loss(q, k, v):
        return jnp.sum(ops.dot_product_attention(q, k, v) ** 2)

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(x, x, x).compile()
    return compiled.memory_analysis().temp_size_in_bytes / 2**20


lengths = [256, 512, 1024, 2048, 4096]
memory = {
    name: np.array([temp_mib(ops, t) for t in lengths])
    for name, ops in (("jax.grad", reference), ("hand-written", rules))
}
for name, mib in memory.items():
    print(
        f"{name:>12}: "
        + ", ".join(f"T={t}: {m:.1f} MiB" for t, m in zip(lengths, mib, strict=True))
    )

auto, manual = memory.values()
assert np.all(manual <= auto)
assert manual[1] < 0.8 * auto[1]  # T = 512, whole: no saved copy of P
assert auto[-1] / auto[2] > 10  # autodiff, T = 1024 -> 4096: T x T arrays, quadratic
assert manual[-1] / manual[2] < 2  # blockwise, T = 1024 -> 4096: not even 2x the memory
assert manual[-1] < 0.02 * auto[-1]
t_by_t = lengths[-1] ** 2 * 4 / 2**20  # one float32 T x T array, MiB
print(
    f"one T x T array at T={lengths[-1]}: {t_by_t:.0f} MiB; jax.grad needs "
    f"{auto[-1] / t_by_t:.1f} of them, the blockwise rule {manual[-1] / t_by_t:.2f}"
)

fig, ax = plt.subplots(figsize=(6, 4))
for name, mib in memory.items():
    ax.loglog(lengths, mib, "o-", label=name)
ax.axvline(1024, color="0.7", ls=":", lw=1)
ax.set_xlabel("sequence length T")
ax.set_ylabel("compiled temporary memory (MiB)")
ax.set_title("Attention loss + gradient, one head of 64, float32")
ax.legend()
plt.show()

# %% [markdown]
# Autodiff's memory grows as $T^2$. The hand-written rule's grows as $T^2$ too while it works
# on the whole matrix (about half of autodiff's: no saved $P$), and then, blockwise, only
# with the $(T, H)$ arrays (the gradient of $Q$, the log-sum-exp): the $T \times T$ work is
# done one $512 \times 256$ block at a time, with the same two identities used above,
# $P = e^{S - \ell}$ and $\mathrm{rowsum}(\bar P \odot P) = \mathrm{rowsum}(\bar O \odot O)$.
