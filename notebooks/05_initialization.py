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
# # 5. Initialization: Xavier/Glorot and He
#
# Back-propagation multiplies by every layer's weights twice: on the way forward (the
# activations) and on the way back (the gradients). If each multiplication scales the signal by
# a factor other than one, a deep network's first layers see signals that have vanished or
# exploded. Initialization chooses the weights' variance to keep that factor near one.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

jax.config.update("jax_enable_x64", True)  # so that vanishing signals do not underflow to 0

from jaxchain import rules
from jaxchain.nn import _init

# %% [markdown]
# ## The variance of one layer
#
# For $z_j = \sum_{i=1}^{n} w_{ij} x_i$ with independent zero-mean weights of variance
# $\sigma_w^2$, independent of the inputs:
#
# $$\mathrm{Var}(z_j) = n\, \sigma_w^2\, \mathbb E[x_i^2].$$
#
# * **tanh** is close to the identity around 0, so $\mathbb E[x^2] \approx \mathrm{Var}(z_\text{prev})$,
#   and $\sigma_w^2 = 1/n_\text{in}$ keeps the forward variance; the backward pass multiplies
#   by $W^\top$, which wants $1/n_\text{out}$. **Glorot** (Xavier) takes the compromise
#   $\sigma_w^2 = 2 / (n_\text{in} + n_\text{out})$ — uniform on $\pm\sqrt{6 / (n_\text{in} +
#   n_\text{out})}$.
# * **ReLU** zeroes half of a symmetric input: $\mathbb E[\mathrm{relu}(z)^2] =
#   \tfrac12 \mathrm{Var}(z)$. To keep the variance, double the weights': **He** takes
#   $\sigma_w^2 = 2 / n_\text{in}$.
#
# jaxchain's initializers, sampled, have these variances:

# %%
key = jax.random.key(0)
n_in, n_out = 512, 256
w_glorot = _init.glorot(key, (n_in, n_out), jnp.float32)
w_he = _init.he(key, (n_in, n_out), jnp.float32)
print(f"glorot: sample var {w_glorot.var():.3e}, formula {2 / (n_in + n_out):.3e}")
print(f"he:     sample var {w_he.var():.3e}, formula {2 / n_in:.3e}")
np.testing.assert_allclose(w_glorot.var(), 2 / (n_in + n_out), rtol=0.03)
np.testing.assert_allclose(w_he.var(), 2 / n_in, rtol=0.03)
np.testing.assert_allclose(jnp.abs(w_glorot).max(), np.sqrt(6 / (n_in + n_out)), rtol=0.01)

z = jax.random.normal(key, (200_000,))
np.testing.assert_allclose(jnp.mean(jax.nn.relu(z) ** 2), 0.5, rtol=0.01)  # E[relu(z)^2] = 1/2

# %% [markdown]
# ## Through depth
#
# A stack of 30 square layers of width 256 (so Glorot's variance is $1/n$), on a batch of
# unit-variance inputs. We record the variance of each layer's pre-activation on the way
# forward, and the variance of the gradient of each layer's weights on the way back (through
# jaxchain's hand-written `dense`, `relu` and `tanh` rules), for five choices.

# %%
depth, width, batch = 30, 256, 512
x0 = jax.random.normal(jax.random.key(1), (batch, width), jnp.float64)
cotangent = jax.random.normal(jax.random.key(2), (batch, width), jnp.float64)
ACTIVATIONS = {"relu": rules.relu, "tanh": rules.tanh}


def weights(kind, key):
    keys = jax.random.split(key, depth)
    shape = (width, width)
    if kind == "he":
        return [_init.he(k, shape, jnp.float64) for k in keys]
    if kind == "glorot":
        return [_init.glorot(k, shape, jnp.float64) for k in keys]
    std = {"small (std 0.03)": 0.03, "large (std 0.2)": 0.2}[kind]
    return [std * jax.random.normal(k, shape, jnp.float64) for k in keys]


def forward(ws, activation):
    """The pre-activation of every layer; the loss is <cotangent, last>."""
    f, h, zs = ACTIVATIONS[activation], x0, []
    zero = jnp.zeros(width, jnp.float64)
    for w in ws:
        z = rules.dense(h, w, zero)
        zs.append(z)
        h = f(z)
    return zs


def statistics(kind, activation):
    ws = weights(kind, jax.random.key(3))
    zs = forward(ws, activation)
    grads = jax.grad(lambda ws: jnp.sum(forward(ws, activation)[-1] * cotangent))(ws)
    return np.array([z.var() for z in zs]), np.array([g.var() for g in grads])


runs = {
    "ReLU, He": ("he", "relu"),
    "ReLU, Glorot": ("glorot", "relu"),
    "tanh, Glorot": ("glorot", "tanh"),
    "tanh, small (std 0.03)": ("small (std 0.03)", "tanh"),
    "tanh, large (std 0.2)": ("large (std 0.2)", "tanh"),
}
results = {name: statistics(*args) for name, args in runs.items()}
for name, (act_var, grad_var) in results.items():
    print(
        f"{name:>24}: activation var layer 1 {act_var[0]:.2e}, layer 30 {act_var[-1]:.2e}; "
        f"weight-gradient var layer 1 {grad_var[0]:.2e}, layer 30 {grad_var[-1]:.2e}"
    )

# %% [markdown]
# What the formulas predict, checked:
#
# * ReLU with He keeps the activation variance, and the weight gradients, within a small
#   factor through all 30 layers.
# * ReLU with Glorot ($\sigma_w^2 = 1/n$ here) halves the variance every layer:
#   $2^{-29} \approx 2 \cdot 10^{-9}$ after 30 (up to the sampling noise of 29 random layers).
# * tanh with Glorot shrinks too, since tanh is a contraction away from 0 — but slowly, by a
#   factor of tens over 30 layers, not geometrically; its gradients stay of order one.
# * tanh with small weights ($n\sigma_w^2 = 0.23$) loses a factor of about 0.23 per layer
#   forward, and the backward signal $\delta$ shrinks as fast on its way down. A weight
#   gradient is the product of the two, $h_{l-1}^\top \delta_l$, so it is equally tiny in every
#   layer — some $10^{17}$ times smaller than with a good initialization: nothing learns.
# * tanh with large weights ($n\sigma_w^2 = 10$) saturates: the activations stay large, and
#   backwards the gradients *grow* layer after layer — the chaotic regime, where the first
#   layers' gradients are astronomically larger than the last's.

# %%
ratio = {name: act[-1] / act[0] for name, (act, _) in results.items()}
grad_ratio = {name: g[0] / g[-1] for name, (_, g) in results.items()}  # first layer / last
print({k: f"{v:.1e}" for k, v in ratio.items()})
print({k: f"{v:.1e}" for k, v in grad_ratio.items()})
assert 0.2 < ratio["ReLU, He"] < 5 and 0.1 < grad_ratio["ReLU, He"] < 10
assert 2.0**-29 / 10 < ratio["ReLU, Glorot"] < 2.0**-29 * 10
assert 1e-3 < ratio["tanh, Glorot"] < 1 and 0.1 < grad_ratio["tanh, Glorot"] < 10
assert ratio["tanh, small (std 0.03)"] < 1e-15
assert results["tanh, small (std 0.03)"][1].max() < 1e-14 * results["tanh, Glorot"][1].min()
assert grad_ratio["tanh, large (std 0.2)"] > 1e6

fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
for name, (act_var, grad_var) in results.items():
    axes[0].semilogy(np.arange(1, depth + 1), act_var, label=name)
    axes[1].semilogy(np.arange(1, depth + 1), grad_var, label=name)
axes[0].set_title("variance of the pre-activations (forward)")
axes[1].set_title("variance of the weight gradients (backward)")
for ax in axes:
    ax.set_xlabel("layer")
axes[0].legend()
plt.show()
