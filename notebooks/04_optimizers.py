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
# # 4. Optimizers from their formulas
#
# Back-propagation gives the gradient $g_t = \nabla L(\theta_t)$; an optimizer turns it into a
# step. Each one below is written from its formula as a pure pair `(init, update)` — state in,
# state out, no hidden mutation — and checked step by step against optax, which jaxchain's
# training uses. Then we watch them on a quadratic and on the Rosenbrock function.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

jax.config.update("jax_enable_x64", True)

# %% [markdown]
# | optimizer | state | update $\Delta\theta$ |
# | --- | --- | --- |
# | SGD | — | $-\eta g$ |
# | momentum | $m \leftarrow \beta m + g$ | $-\eta m$ |
# | Nesterov | $m \leftarrow \beta m + g$ | $-\eta (g + \beta m)$ |
# | Adagrad | $s \leftarrow s + g^2$ ($s_0 = 0.1$) | $-\eta\, g / \sqrt{s + \epsilon}$ |
# | RMSprop | $v \leftarrow \rho v + (1-\rho) g^2$ | $-\eta\, g / \sqrt{v + \epsilon}$ |
# | Adam | $m \leftarrow \beta_1 m + (1-\beta_1) g$, $v \leftarrow \beta_2 v + (1-\beta_2) g^2$ | $-\eta\, \hat m / (\sqrt{\hat v} + \epsilon)$, $\hat m = m / (1-\beta_1^t)$, $\hat v = v / (1-\beta_2^t)$ |
#
# Nesterov's step looks ahead: it applies the momentum it is about to have. Adam's bias
# corrections undo the pull of the zero initial state toward zero in the first steps.
# (The constants are optax's defaults, so that the comparison is exact.)


# %%
def sgd(lr):
    return (lambda theta: None), (lambda g, state, t: (-lr * g, state))


def momentum(lr, beta=0.9, nesterov=False):
    def update(g, m, t):
        m = beta * m + g
        return -lr * (g + beta * m if nesterov else m), m

    return jnp.zeros_like, update


def adagrad(lr, initial=0.1, eps=1e-7):
    def update(g, s, t):
        s = s + g**2
        return -lr * g / jnp.sqrt(s + eps), s

    return (lambda theta: jnp.full_like(theta, initial)), update


def rmsprop(lr, decay=0.9, eps=1e-8):
    def update(g, v, t):
        v = decay * v + (1 - decay) * g**2
        return -lr * g / jnp.sqrt(v + eps), v

    return jnp.zeros_like, update


def adam(lr, b1=0.9, b2=0.999, eps=1e-8):
    def update(g, state, t):
        m, v = state
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        return -lr * m_hat / (jnp.sqrt(v_hat) + eps), (m, v)

    return (lambda theta: (jnp.zeros_like(theta), jnp.zeros_like(theta))), update


OURS = {
    "sgd": sgd,
    "momentum": momentum,
    "nesterov": lambda lr: momentum(lr, nesterov=True),
    "adagrad": adagrad,
    "rmsprop": rmsprop,
    "adam": adam,
}
OPTAX = {
    "sgd": optax.sgd,
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "nesterov": lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
    "adagrad": optax.adagrad,
    "rmsprop": optax.rmsprop,
    "adam": optax.adam,
}


def rosenbrock(theta):
    x, y = theta
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def quadratic(theta):  # an ill-conditioned bowl: curvature 1 along x, 20 along y
    return 0.5 * (theta[0] ** 2 + 20 * theta[1] ** 2)


def run(opt, f, theta, steps):
    """The trajectory ``(steps + 1, 2)`` of ``opt = (init, update)`` on ``f``: a scan."""
    init, update = opt

    def step(carry, t):
        theta, state = carry
        delta, state = update(jax.grad(f)(theta), state, t)
        return (theta + delta, state), theta + delta

    ts = jnp.arange(1, steps + 1, dtype=theta.dtype)
    _, path = jax.lax.scan(step, (theta, init(theta)), ts)
    return jnp.concatenate([theta[None], path])


def run_optax(tx, f, theta, steps):
    state, path = tx.init(theta), [theta]
    for _ in range(steps):
        updates, state = tx.update(jax.grad(f)(theta), state, theta)
        theta = optax.apply_updates(theta, updates)
        path.append(theta)
    return jnp.stack(path)


# %% [markdown]
# ## Step by step against optax
#
# Twenty steps of each, from the same start on Rosenbrock's function, in float64: every
# iterate agrees with optax's to rounding.

# %%
start = jnp.array([-1.2, 1.0])
for name in OURS:
    lr = 1e-4 if name in ("sgd", "momentum", "nesterov") else 1e-2
    ours = run(OURS[name](lr), rosenbrock, start, 20)
    theirs = run_optax(OPTAX[name](lr), rosenbrock, start, 20)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14, err_msg=name)
    print(f"{name:>8}: 20 steps equal to optax's (last iterate {np.asarray(ours[-1])})")

# %% [markdown]
# ## Trajectories
#
# Each path starts at $(-4, 1)$ on the ill-conditioned quadratic. Plain SGD's learning rate
# is capped by the steep direction ($\eta < 2/20$, see below), and along it SGD bounces from
# side to side; momentum carries speed from step to step, and overshoots; the adaptive methods
# (Adagrad, RMSprop, Adam) divide each coordinate by its own gradient scale, so their first
# steps head diagonally, whatever the curvature. On Rosenbrock's curved valley the minimum is
# at $(1, 1)$; the learning rates are each method's, picked by hand to be stable.

# %%
configs = {
    "sgd": 0.09,
    "momentum": 0.02,
    "nesterov": 0.02,
    "adagrad": 0.5,
    "rmsprop": 0.05,
    "adam": 0.1,
}
paths_q = {n: run(OURS[n](lr), quadratic, jnp.array([-4.0, 1.0]), 100) for n, lr in configs.items()}
final_q = {n: float(quadratic(p[-1])) for n, p in paths_q.items()}
print({n: f"{v:.2e}" for n, v in final_q.items()})
assert all(v < quadratic(jnp.array([-4.0, 1.0])) / 1000 for v in final_q.values())

configs_r = {
    "sgd": 2e-3,
    "momentum": 5e-4,
    "nesterov": 5e-4,
    "adagrad": 1.0,
    "rmsprop": 3e-3,
    "adam": 0.03,
}
paths_r = {n: run(OURS[n](lr), rosenbrock, start, 3000) for n, lr in configs_r.items()}
final_r = {n: float(rosenbrock(p[-1])) for n, p in paths_r.items()}
print({n: f"{v:.2e}" for n, v in final_r.items()})
assert all(v < 5e-3 for v in final_r.values())  # every one reaches the valley's floor near (1, 1)


def contour(ax, f, xlim, ylim, levels):
    xs, ys = np.meshgrid(np.linspace(*xlim, 200), np.linspace(*ylim, 200))
    zs = jax.vmap(jax.vmap(f))(jnp.stack([xs, ys], -1))
    ax.contour(xs, ys, zs, levels=levels, colors="0.8", linewidths=0.6)


fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
contour(axes[0], quadratic, (-4.5, 1), (-1.5, 1.5), 20)
contour(axes[1], rosenbrock, (-1.5, 1.5), (-0.5, 1.5), np.logspace(-1, 3, 15))
for paths, ax in ((paths_q, axes[0]), (paths_r, axes[1])):
    for name, path in paths.items():
        ax.plot(*np.asarray(path).T, ".-", ms=2, lw=1, label=name)
axes[0].set_title("quadratic, 100 steps")
axes[1].set_title("Rosenbrock, 3000 steps")
axes[1].plot(1, 1, "k*", ms=10)
axes[0].legend()
plt.show()

# %% [markdown]
# ## The learning rate
#
# Gradient descent on $\tfrac12 \lambda \theta^2$ multiplies $\theta$ by $(1 - \eta\lambda)$
# each step: it converges when $|1 - \eta \lambda| < 1$, i.e. $\eta < 2/\lambda$, fastest at
# $\eta = 1/\lambda$, and oscillates for $1/\lambda < \eta < 2/\lambda$. On our quadratic the
# steep direction has $\lambda = 20$, so SGD diverges beyond $\eta = 0.1$.

# %%
rates = [0.01, 0.05, 0.09, 0.11]
losses = {
    lr: jax.vmap(quadratic)(run(sgd(lr), quadratic, jnp.array([-4.0, 1.0]), 60)) for lr in rates
}
for lr, curve in losses.items():
    ratio = abs(1 - lr * 20)
    # the steep coordinate follows theta_t = (1 - lr * 20)^t exactly
    steep = run(sgd(lr), quadratic, jnp.array([0.0, 1.0]), 60)[:, 1]
    np.testing.assert_allclose(steep, (1 - lr * 20) ** np.arange(61), rtol=1e-10, atol=1e-12)
    print(f"lr={lr}: |1 - 20 lr| = {ratio:.2f}, loss after 60 steps {float(curve[-1]):.3g}")
assert losses[0.11][-1] > losses[0.11][0]  # diverged
assert losses[0.09][-1] < losses[0.09][0]

fig, ax = plt.subplots(figsize=(6, 4))
for lr, curve in losses.items():
    ax.semilogy(curve, label=f"lr = {lr}")
ax.set_xlabel("step")
ax.set_ylabel("loss")
ax.set_title("SGD on the quadratic: the learning rate")
ax.legend()
plt.show()
