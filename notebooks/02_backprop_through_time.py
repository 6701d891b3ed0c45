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
# # 2. Back-propagation through time
#
# A recurrent network applies the same weights at every step, so its gradient is a sum over
# steps. Back-propagation through time (BPTT) computes it with one sweep backwards: a reverse
# scan that carries the gradient of the state from step $t+1$ to step $t$. We derive it for an
# Elman RNN and for an LSTM, write it in a few lines of JAX, check it against `jax.grad`, and
# look at why gradients vanish or explode over long time lags.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

jax.config.update("jax_enable_x64", True)

from jaxchain import check, nn, reference, rules

B, T, I, H = 4, 12, 3, 5
keys = jax.random.split(jax.random.key(0), 4)
xs = jax.random.normal(keys[0], (B, T, I))
cts = jax.random.normal(keys[1], (B, T, H))  # dL/dh_t for every step: L = sum_t <c_t, h_t>

# %% [markdown]
# ## The Elman RNN
#
# $$a_t = x_t W_x + h_{t-1} W_h + b, \qquad h_t = \tanh(a_t), \qquad
#   L = \sum_t \langle c_t, h_t \rangle.$$
#
# $h_t$ reaches the loss directly (through $c_t$) and through every later state (through
# $a_{t+1}$), so with $\delta_t := \partial L / \partial a_t$:
#
# $$\frac{\partial L}{\partial h_t} = c_t + \delta_{t+1} W_h^\top, \qquad
#   \delta_t = \frac{\partial L}{\partial h_t} \odot (1 - h_t^2).$$
#
# That is a scan from $t = T$ down to $1$ whose carry is $\delta_{t+1} W_h^\top$. The weights
# are shared by every step, so their gradients sum over steps — and a sum of products over
# steps and batch rows is **one matrix product** over all $B T$ rows:
#
# $$\frac{\partial L}{\partial W_x} = \sum_t x_t^\top \delta_t = X^\top \Delta, \qquad
#   \frac{\partial L}{\partial W_h} = \sum_t h_{t-1}^\top \delta_t = H_{\text{prev}}^\top \Delta,
#   \qquad \frac{\partial L}{\partial b} = \sum_{t, b} \delta_t.$$

# %%
params = nn.rnn.init(keys[2], I, H, dtype=jnp.float64)
h0 = jnp.zeros((B, H))


def rnn_forward(p, xs):
    def step(h, x):
        h = jnp.tanh(x @ p["w_x"] + h @ p["w_h"] + p["b"])
        return h, h

    _, hs = jax.lax.scan(step, h0, jnp.swapaxes(xs, 0, 1))
    return hs  # (T, B, H), time-major


def rnn_deltas(p, xs, cts):
    """Every delta_t, time-major (T, B, H): the reverse scan, carrying delta_{t+1} W_h^T."""
    hs, c = rnn_forward(p, xs), jnp.swapaxes(cts, 0, 1)

    def step(carry, inputs):
        h, c_t = inputs
        delta = (c_t + carry) * (1 - h**2)
        return delta @ p["w_h"].T, delta

    return jax.lax.scan(step, jnp.zeros((B, H)), (hs, c), reverse=True)[1]


def rnn_bptt(p, xs, cts):
    hs, d = rnn_forward(p, xs), rnn_deltas(p, xs, cts).reshape(T * B, H)
    x_rows = jnp.swapaxes(xs, 0, 1).reshape(T * B, I)
    h_prev = jnp.concatenate([h0[None], hs[:-1]]).reshape(T * B, H)
    return {"w_x": x_rows.T @ d, "w_h": h_prev.T @ d, "b": d.sum(0)}


def rnn_loss(p):
    return jnp.sum(jnp.swapaxes(rnn_forward(p, xs), 0, 1) * cts)


ours, auto = rnn_bptt(params, xs, cts), jax.grad(rnn_loss)(params)
for name in params:
    np.testing.assert_allclose(ours[name], auto[name], rtol=1e-12)
print("reverse-scan BPTT == jax.grad for", list(params))

# %% [markdown]
# The weight gradient as a sum of one outer product per step, and as one product after the
# scan, are the same number — the second is what `jaxchain.rules.rnn` does, because one large
# matrix product runs far faster than $T$ small ones:

# %%
hs, d = rnn_forward(params, xs), rnn_deltas(params, xs, cts)
h_prev = jnp.concatenate([h0[None], hs[:-1]])
summed = sum(h_prev[t].T @ d[t] for t in range(T))
np.testing.assert_allclose(summed, h_prev.reshape(T * B, H).T @ d.reshape(T * B, H), rtol=1e-13)
print("sum_t h_{t-1}^T delta_t == H_prev^T Delta")

# %% [markdown]
# jaxchain's `rules.rnn` is exactly this rule as a `jax.custom_vjp`; the checker compares it
# with `jax.grad` of the scan (`reference.rnn`), with finite differences and second order:

# %%
report = check.check_vjp(
    rules.rnn, reference.rnn, xs, h0, params["w_x"], params["w_h"], params["b"], name="rnn"
)
print(report)
assert report.ok

# %% [markdown]
# ## The LSTM
#
# Gates $i, f, g, o$ from one pre-activation $a_t = x_t W_x + h_{t-1} W_h + b$ split in four:
#
# $$i = \sigma(a^i),\ f = \sigma(a^f),\ g = \tanh(a^g),\ o = \sigma(a^o), \qquad
#   c_t = f \odot c_{t-1} + i \odot g, \qquad h_t = o \odot \tanh(c_t).$$
#
# Backwards, with $\bar h = \partial L / \partial h_t$ (from the loss and from step $t+1$) and
# $\bar c$ the gradient of $c_t$ arriving from step $t+1$:
#
# $$\frac{\partial L}{\partial c_t} = \bar c + \bar h \odot o \odot (1 - \tanh^2 c_t),$$
#
# $$\delta^o = \bar h \odot \tanh(c_t) \odot o(1-o), \quad
#   \delta^i = \tfrac{\partial L}{\partial c_t} \odot g \odot i(1-i), \quad
#   \delta^g = \tfrac{\partial L}{\partial c_t} \odot i \odot (1-g^2), \quad
#   \delta^f = \tfrac{\partial L}{\partial c_t} \odot c_{t-1} \odot f(1-f),$$
#
# and the carries to step $t-1$: $\partial L / \partial c_{t-1} = \tfrac{\partial L}{\partial
# c_t} \odot f$, $\partial L / \partial h_{t-1} = \delta\, W_h^\top$. The cell's memory path
# multiplies by $f$ only — no weight matrix, no squashing derivative — which is why gradients
# survive longer in an LSTM. Here is one step, checked against `jax.vjp`:

# %%
lstm = nn.lstm.init(keys[3], I, H, dtype=jnp.float64)
x, h_prev, c_prev = xs[:, 0], *jax.random.normal(keys[1], (2, B, H))


def cell(x, h, c, p):
    i, f, g, o = jnp.split(x @ p["w_x"] + h @ p["w_h"] + p["b"], 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c = f * c + i * g
    return o * jnp.tanh(c), c, (i, f, g, o)


h, c, (i, f, g, o) = cell(x, h_prev, c_prev, lstm)
h_bar, c_bar = jax.random.normal(keys[2], (2, B, H))
dc = c_bar + h_bar * o * (1 - jnp.tanh(c) ** 2)
delta = jnp.concatenate(
    [
        dc * g * i * (1 - i),
        dc * c_prev * f * (1 - f),
        dc * i * (1 - g**2),
        h_bar * jnp.tanh(c) * o * (1 - o),
    ],
    axis=-1,
)
by_hand = {
    "x": delta @ lstm["w_x"].T,
    "h": delta @ lstm["w_h"].T,
    "c": dc * f,
    "w_x": x.T @ delta,
    "w_h": h_prev.T @ delta,
    "b": delta.sum(0),
}

_, pull = jax.vjp(lambda x, h, c, p: cell(x, h, c, p)[:2], x, h_prev, c_prev, lstm)
dx, dh, dc_prev, dp = pull((h_bar, c_bar))
for name, auto in {"x": dx, "h": dh, "c": dc_prev, **dp}.items():
    np.testing.assert_allclose(by_hand[name], auto, rtol=1e-12, atol=1e-14)
print("LSTM gate derivatives == jax.vjp for", list(by_hand))

report = check.check_vjp(
    lambda xs, p: nn.lstm.apply(p, xs, ops=rules)[0],
    lambda xs, p: nn.lstm.apply(p, xs, ops=reference)[0],
    xs,
    lstm,
    name="lstm (whole sequence)",
)
print(report)
assert report.ok

# %% [markdown]
# ## Vanishing and exploding gradients
#
# How much does the last output depend on the input $k$ steps earlier? Unrolling the RNN's
# recursion, $\partial h_T / \partial h_{T-k} = \prod_{s} \mathrm{diag}(1 - h_s^2)\, W_h^\top$:
# a product of $k$ matrices. If their norms sit below one the product shrinks geometrically
# (vanishing); above one it can grow geometrically (exploding). We measure
# $\lVert \partial \langle 1, h_T \rangle / \partial x_{T-k} \rVert$ through the hand-written
# BPTT for an RNN with recurrent weights $0.8 Q$ and $3 Q$ ($Q$ orthogonal) and an LSTM
# (forget bias 1).

# %%
T_long, H_long = 60, 32
xs_long = 0.5 * jax.random.normal(keys[0], (16, T_long, 8))


def lag_norms(module, p):
    g = jax.grad(lambda xs: jnp.sum(module.apply(p, xs, ops=rules)[0][:, -1]))(xs_long)
    return np.linalg.norm(np.asarray(g), axis=(0, 2))[::-1]  # index k = time lag


rnn_p = nn.rnn.init(keys[1], 8, H_long, dtype=jnp.float64)
curves = {
    "RNN, W_h = 0.8 Q": lag_norms(nn.rnn, {**rnn_p, "w_h": 0.8 * rnn_p["w_h"]}),
    "RNN, W_h = 3 Q": lag_norms(nn.rnn, {**rnn_p, "w_h": 3.0 * rnn_p["w_h"]}),
    "LSTM": lag_norms(nn.lstm, nn.lstm.init(keys[1], 8, H_long, dtype=jnp.float64)),
}

# %% [markdown]
# **Clipping.** `optax.clip_by_global_norm(1.0)` rescales the whole gradient when its norm
# exceeds 1: it bounds the size of a step (the cure for exploding gradients) but multiplies
# every time lag by the same factor — the *shape* of the curve, and so the vanishing of distant
# contributions, is unchanged.

# %%
exploding = curves["RNN, W_h = 3 Q"]
clip = optax.clip_by_global_norm(1.0)
clipped, _ = clip.update(jnp.asarray(exploding), clip.init(None))
clipped = np.asarray(clipped)
curves["RNN, W_h = 3 Q, clipped"] = clipped
np.testing.assert_allclose(np.linalg.norm(clipped), 1.0, rtol=1e-12)
np.testing.assert_allclose(clipped / exploding, clipped[0] / exploding[0], rtol=1e-12)

vanishing, lstm_curve = curves["RNN, W_h = 0.8 Q"], curves["LSTM"]
assert vanishing[59] / vanishing[0] < 1e-6  # vanished
assert exploding[59] / exploding[0] > 1e6  # exploded
assert lstm_curve[59] / lstm_curve[0] > 1e3 * vanishing[59] / vanishing[0]  # kept far longer

fig, ax = plt.subplots(figsize=(7, 4))
for (label, norms), style in zip(curves.items(), ["-", "-", "-", "--"], strict=True):
    ax.semilogy(np.arange(T_long), norms, style, label=label)
ax.set_xlabel("time lag k")
ax.set_ylabel(r"$\|\partial \langle 1, h_T\rangle / \partial x_{T-k}\|$")
ax.set_title("Gradient norm against time lag (hand-written BPTT)")
ax.legend()
plt.show()
