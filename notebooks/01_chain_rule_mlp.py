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
# # 1. The chain rule in an MLP
#
# A three-layer network, ReLU, ReLU, softmax, trained with cross-entropy. We derive every
# gradient by hand, compute it on an example small enough to follow with a pencil, and check
# it against `jax.grad` to float64 precision. Then we write down the usual mistakes, and watch
# `jaxchain.check` catch each one.
#
# Column vectors, one example:
#
# $$z_1 = W_1 x + b_1,\quad h_1 = \mathrm{relu}(z_1),\quad
#   z_2 = W_2 h_1 + b_2,\quad h_2 = \mathrm{relu}(z_2),\quad
#   z_3 = W_3 h_2 + b_3,\quad \hat y = \mathrm{softmax}(z_3),$$
#
# $$L = -\sum_k y_k \log \hat y_k \quad (y \text{ one-hot}).$$

# %%
import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from jaxchain import check, nn, reference, rules

np.set_printoptions(precision=4, suppress=True)

# %% [markdown]
# ## The worked example
#
# Two inputs, two hidden units per layer, two classes; numbers chosen to be easy to multiply.

# %%
x = jnp.array([1.0, 2.0])
y = jnp.array([0.0, 1.0])  # the true class is 1
W1 = jnp.array([[0.5, -0.5], [0.25, 0.5]])
b1 = jnp.array([0.0, 0.5])
W2 = jnp.array([[1.0, -1.0], [0.5, 1.0]])
b2 = jnp.array([0.0, -0.5])
W3 = jnp.array([[1.0, 0.5], [-1.0, 0.5]])
b3 = jnp.array([0.0, 0.0])
params = dict(W1=W1, b1=b1, W2=W2, b2=b2, W3=W3, b3=b3)


def loss(p, x, y):
    h1 = jax.nn.relu(p["W1"] @ x + p["b1"])
    h2 = jax.nn.relu(p["W2"] @ h1 + p["b2"])
    z3 = p["W3"] @ h2 + p["b3"]
    return -jnp.sum(y * jax.nn.log_softmax(z3))


# %% [markdown]
# **Forward.** $z_1 = (0.5 - 1,\ 0.25 + 1 + 0.5) = (-0.5, 1.75)$, so $h_1 = (0, 1.75)$: the
# first unit is off. $z_2 = (-1.75,\ 1.75 - 0.5) = (-1.75, 1.25)$, $h_2 = (0, 1.25)$.
# $z_3 = (0.625, 0.625)$: both classes get the same logit, $\hat y = (0.5, 0.5)$, and
# $L = \log 2$.

# %%
z1 = W1 @ x + b1
h1 = jnp.maximum(z1, 0)
z2 = W2 @ h1 + b2
h2 = jnp.maximum(z2, 0)
z3 = W3 @ h2 + b3
y_hat = jnp.exp(z3) / jnp.sum(jnp.exp(z3))
print("z1", z1, "h1", h1, "z2", z2, "h2", h2, "z3", z3, "y_hat", y_hat)
np.testing.assert_allclose(z1, [-0.5, 1.75])
np.testing.assert_allclose(h2, [0.0, 1.25])
np.testing.assert_allclose(y_hat, [0.5, 0.5])
np.testing.assert_allclose(loss(params, x, y), np.log(2), rtol=1e-15)

# %% [markdown]
# ## Backward, one step of the chain rule at a time
#
# **Softmax and cross-entropy together.** $L = -\sum_k y_k z_{3,k} + \log \sum_j e^{z_{3,j}}$,
# so
#
# $$\frac{\partial L}{\partial z_{3,k}} = -y_k + \frac{e^{z_{3,k}}}{\sum_j e^{z_{3,j}}}
#   = \hat y_k - y_k, \qquad \delta_3 := \frac{\partial L}{\partial z_3} = \hat y - y.$$
#
# Going through the softmax's Jacobian
# $\partial \hat y / \partial z_3 = \mathrm{diag}(\hat y) - \hat y \hat y^\top$ and the log's
# $-y / \hat y$ gives the same thing, more slowly:

# %%
delta3 = y_hat - y
jacobian = jnp.diag(y_hat) - jnp.outer(y_hat, y_hat)
np.testing.assert_allclose(jacobian.T @ (-y / y_hat), delta3, rtol=1e-15)
np.testing.assert_allclose(jax.jacobian(jax.nn.softmax)(z3), jacobian, rtol=1e-15)
print("delta3 = y_hat - y =", delta3)

# %% [markdown]
# **The last layer.** $z_3 = W_3 h_2 + b_3$ is linear in $W_3$:
# $\partial z_{3,k} / \partial W_{3,kj} = h_{2,j}$, so
#
# $$\frac{\partial L}{\partial W_3} = \delta_3\, h_2^\top, \qquad
#   \frac{\partial L}{\partial b_3} = \delta_3, \qquad
#   \frac{\partial L}{\partial h_2} = W_3^\top \delta_3.$$
#
# **Through the ReLU.** $h_2 = \mathrm{relu}(z_2)$ elementwise, with derivative
# $\mathbb 1[z_2 > 0]$:
#
# $$\delta_2 = (W_3^\top \delta_3) \odot \mathbb 1[z_2 > 0], \qquad
#   \frac{\partial L}{\partial W_2} = \delta_2\, h_1^\top, \qquad
#   \frac{\partial L}{\partial b_2} = \delta_2,$$
#
# and once more, $\delta_1 = (W_2^\top \delta_2) \odot \mathbb 1[z_1 > 0]$,
# $\partial L / \partial W_1 = \delta_1 x^\top$.
#
# By pencil: $\delta_3 = (0.5, -0.5)$, so $\partial L / \partial W_3 = \delta_3 h_2^\top$ has
# rows $0.5 \cdot (0, 1.25)$ and $-0.5 \cdot (0, 1.25)$. Next,
# $W_3^\top \delta_3 = (1 \cdot 0.5 + (-1)(-0.5),\ 0.5 \cdot 0.5 + 0.5 \cdot (-0.5)) = (1, 0)$;
# the first unit of $z_2$ is negative, so $\delta_2 = (1 \cdot 0, 0 \cdot 1) = (0, 0)$ — and
# no gradient reaches $W_1$ or $W_2$ at all.
# A dead path is the commonest surprise of ReLU networks, so we also run a second input where
# every unit is alive.


# %%
def by_hand(p, x, y):
    z1 = p["W1"] @ x + p["b1"]
    h1 = jnp.maximum(z1, 0)
    z2 = p["W2"] @ h1 + p["b2"]
    h2 = jnp.maximum(z2, 0)
    z3 = p["W3"] @ h2 + p["b3"]
    y_hat = jax.nn.softmax(z3)
    d3 = y_hat - y
    d2 = (p["W3"].T @ d3) * (z2 > 0)
    d1 = (p["W2"].T @ d2) * (z1 > 0)
    return dict(
        W1=jnp.outer(d1, x), b1=d1, W2=jnp.outer(d2, h1), b2=d2, W3=jnp.outer(d3, h2), b3=d3
    )


grads = by_hand(params, x, y)
print({k: np.asarray(v) for k, v in grads.items()})
np.testing.assert_allclose(grads["W3"], [[0.0, 0.625], [0.0, -0.625]])
np.testing.assert_allclose(grads["W2"], 0.0)  # the dead path

x_alive = jnp.array([2.0, 1.0])
for inputs in [(x, y), (x_alive, y)]:
    auto = jax.grad(loss)(params, *inputs)
    for name in params:
        np.testing.assert_allclose(by_hand(params, *inputs)[name], auto[name], rtol=1e-14, atol=0)
print("by hand == jax.grad for", list(params))

# %% [markdown]
# ## The same network in jaxchain
#
# jaxchain stores a layer as `x @ W + b` with `W` of shape `(in, out)`: a batch of row vectors.
# In that layout $\partial L/\partial W = X^\top \Delta$ — the transpose of $\delta h^\top$,
# summed over the batch. `nn.mlp.apply(..., ops=rules)` runs the hand-written rules
# (`dense`, `relu`, `softmax_cross_entropy`, whose backward is literally `y_hat - y`), and
# `ops=reference` runs the same network through `jax.grad`.

# %%
mlp = nn.mlp.init(jax.random.key(0), [4, 16, 16, 3], dtype=jnp.float64)
xs = jax.random.normal(jax.random.key(1), (8, 4), jnp.float64)
labels = jnp.arange(8) % 3


def mlp_loss(ops):
    return lambda p: jnp.mean(ops.softmax_cross_entropy(nn.mlp.apply(p, xs, ops=ops), labels))


g_rules = jax.grad(mlp_loss(rules))(mlp)
g_auto = jax.grad(mlp_loss(reference))(mlp)
for a, b in zip(jax.tree.leaves(g_rules), jax.tree.leaves(g_auto), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)

report = check.check_vjp(mlp_loss(rules), mlp_loss(reference), mlp, name="mlp loss")
print(report)
assert report.ok and report.max_rel("vjp") < 1e-10

# %% [markdown]
# ## The usual mistakes, and the checker that catches them
#
# Each mistake below is a backward rule written wrongly, as a `jax.custom_vjp`, checked by
# `check.check_vjp` against the autodiff twin (and, with `reference=None`, against finite
# differences alone). A wrong rule must make `report.ok` false.


# %%
def custom(fwd, bwd):
    """A function whose backward pass is ``bwd(residuals, g)``."""
    f = jax.custom_vjp(lambda *args: fwd(*args)[0])
    f.defvjp(fwd, bwd)
    return f


def caught(name, f, reference_f, *args):
    report = check.check_vjp(f, reference_f, *args, name=name)
    fd = check.check_vjp(f, None, *args, name=name)
    assert not report.ok and not fd.ok, name
    print(f"{name}: caught (worst relative error {report.max_rel_error:.2g})")
    return report


key = jax.random.key(2)
pred, target = jax.random.normal(key, (2, 5), jnp.float64)

# %% [markdown]
# **1. The sign of the squared-error derivative.** $L = \tfrac12 (\hat y - y)^2$ has
# $\partial L / \partial \hat y = \hat y - y$. Writing $y - \hat y$ (the derivative of
# $(y - \hat y)$ forgetting its inner $-1$) makes gradient descent climb.


# %%
def half_squared_error(pred, target):
    return 0.5 * jnp.sum((pred - target) ** 2)


wrong_sign = custom(
    lambda p, t: (half_squared_error(p, t), (p, t)),
    lambda res, g: (g * (res[1] - res[0]), g * (res[0] - res[1])),  # dpred should be p - t
)
caught("squared error, sign", wrong_sign, half_squared_error, pred, target)

# %% [markdown]
# **2. A forgotten activation derivative.** For $h = \sigma(z)$, $z = w^\top x$:
# $\partial h / \partial w = \sigma'(z)\, x$ with $\sigma'(z) = \sigma(z)(1 - \sigma(z))$.
# Dropping $\sigma'(z)$ treats the neuron as linear.

# %%
w = jax.random.normal(jax.random.key(3), (5,), jnp.float64)


def neuron(w, x):
    return jax.nn.sigmoid(jnp.dot(w, x))


no_derivative = custom(
    lambda w, x: (neuron(w, x), (w, x)),
    lambda res, g: (g * res[1], g * res[0]),  # missing sigma'(z) on both
)
caught("sigmoid, no activation derivative", no_derivative, neuron, w, pred)

# %% [markdown]
# **3. The gradient with respect to the input used for the weight.** For $z = w^\top x$,
# $\partial z / \partial w = x$ and $\partial z / \partial x = w$. Updating $w$ with
# $\partial L / \partial x$ is a silent mistake when the two have the same shape.


# %%
def linear(w, x):
    return jnp.dot(w, x)


swapped = custom(
    lambda w, x: (linear(w, x), (w, x)),
    lambda res, g: (g * res[0], g * res[1]),  # dw = g * w: that is dL/dx
)
caught("input gradient used for the weight", swapped, linear, w, pred)

# %% [markdown]
# **4. A sigmoid evaluated wrongly.** $\sigma'(z) = \sigma(z)(1 - \sigma(z))$ needs
# $\sigma(z)$, not $z$: using the pre-activation in its place, $z(1 - z)$, is right nowhere
# but by accident.

# %%
wrong_sigmoid = custom(
    lambda z: (jax.nn.sigmoid(z), z),
    lambda z, g: (g * z * (1 - z),),  # should be s * (1 - s) with s = sigmoid(z)
)
report = caught("sigmoid derivative from z", wrong_sigmoid, jax.nn.sigmoid, pred)
print(report)

# %% [markdown]
# The report names the input leaf and the index of the worst error. The right rules, by
# contrast, pass every check — here is jaxchain's own `sigmoid` against its twin:

# %%
good = check.check_vjp(rules.sigmoid, reference.sigmoid, pred, name="sigmoid")
assert good.ok
print(good)
