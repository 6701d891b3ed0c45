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
# # 8. Automatic differentiation from scratch: reverse mode and forward mode
#
# Every rule in jaxchain is one link of the chain rule. Automatic differentiation is the
# bookkeeping that chains the links, and it comes in two modes:
#
# * **reverse mode** records the computation on a *tape* (a graph of the operations in the
#   order they ran), then walks it backwards, carrying the *cotangent* $\bar v = \partial L /
#   \partial v$ of each value: one backward pass gives the gradient with respect to *every*
#   input. It is what `jax.grad` does and what `jaxchain.rules` writes by hand (`custom_vjp`).
# * **forward mode** carries, next to each value $v$, its *tangent* $\dot v = \partial v /
#   \partial x \cdot t$ along one input direction $t$: one forward pass gives the derivative of
#   *every* output along that direction. Dual numbers do it; `jax.jvp` does it; and
#   `jaxchain.tangents` writes it by hand (`custom_jvp`).
#
# Below, both are built in plain NumPy, about a hundred lines each, and checked against
# `jax.grad` and `jax.jvp` on an MLP. Then the costs: why training uses reverse mode, when
# forward mode wins, and how the two combine into Hessian-vector products.

# %%
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

jax.config.update("jax_enable_x64", True)

from jaxchain import nn, reference, rules, tangents

# %% [markdown]
# ## Reverse mode: a tape
#
# A `Var` holds a value and, once the backward pass reaches it, its cotangent `grad`. Each
# operation computes its value *and* appends to the tape a record: its inputs, its output,
# and its **VJP**, the function that turns the output's cotangent into the inputs'
# cotangents. For $y = x W$ that is $(\bar y W^\top, x^\top \bar y)$; for $y = \tanh x$,
# $\bar y (1 - y^2)$: the same formulas as jaxchain's rules.
#
# `backward` seeds $\bar L = 1$ and replays the tape in reverse: because each record was
# appended after the records of its inputs, reversed order visits every value after all the
# values that use it (a topological order), so its cotangent is complete when it is passed on.
# A value used twice gets the *sum* of its cotangents (the multivariate chain rule).


# %%
class Tape:
    """The operations in the order they ran: ``(inputs, output, vjp)``."""

    def __init__(self):
        self.records = []


class Var:
    def __init__(self, value, tape):
        self.value, self.tape, self.grad = np.asarray(value, np.float64), tape, None

    def _op(self, others, value, vjp):
        out = Var(value, self.tape)
        self.tape.records.append(((self, *others), out, vjp))
        return out

    def __add__(self, other):  # broadcasting a bias over rows: its cotangent sums the rows
        return self._op([other], self.value + other.value,
                        lambda g: (g, _unbroadcast(g, other.value.shape)))  # fmt: skip

    def __sub__(self, other):
        return self._op([other], self.value - other.value, lambda g: (g, -g))

    def __mul__(self, other):
        a, b = self.value, other.value
        return self._op([other], a * b, lambda g: (g * b, g * a))

    def __matmul__(self, other):
        a, b = self.value, other.value
        return self._op([other], a @ b, lambda g: (g @ b.T, a.T @ g))

    def tanh(self):
        y = np.tanh(self.value)
        return self._op([], y, lambda g: (g * (1 - y * y),))

    def relu(self):
        y = np.maximum(self.value, 0)
        return self._op([], y, lambda g: (g * (self.value > 0),))

    def mean(self):
        n = self.value.size
        return self._op([], self.value.mean(), lambda g: (np.full(self.value.shape, g / n),))

    def backward(self):
        """Cotangents of every value on the tape with respect to this scalar."""
        self.grad = np.ones_like(self.value)
        for inputs, out, vjp in reversed(self.tape.records):
            if out.grad is None:  # not on a path to this output
                continue
            for x, g in zip(inputs, vjp(out.grad), strict=True):
                x.grad = g if x.grad is None else x.grad + g  # used twice: cotangents add


def _unbroadcast(g, shape):
    """The cotangent of a broadcast: summed over the axes that were broadcast."""
    return g.sum(axis=tuple(range(g.ndim - len(shape)))).reshape(shape)


# %% [markdown]
# An MLP with a squared-error loss, written once over any "array" type that has `@`, `+`,
# `-`, `*`, `tanh` and `mean`: the tape's `Var` here, the dual numbers below.


# %%
def mlp_loss(params, x, target, *, tanh, mean):
    h = x
    for i, layer in enumerate(params):
        h = h @ layer["w"] + layer["b"]
        if i < len(params) - 1:
            h = tanh(h)
    d = h - target
    return mean(d * d)


key_p, key_x, key_t, key_v = jax.random.split(jax.random.key(0), 4)
params = nn.mlp.init(key_p, [4, 16, 16, 3], activation="tanh", dtype=jnp.float64)["layers"]
x = jax.random.normal(key_x, (8, 4))
target = jax.random.normal(key_t, (8, 3))

tape = Tape()
var_params = [{k: Var(v, tape) for k, v in layer.items()} for layer in params]
loss = mlp_loss(var_params, Var(x, tape), Var(target, tape), tanh=Var.tanh, mean=Var.mean)
loss.backward()
tape_grads = [{k: v.grad for k, v in layer.items()} for layer in var_params]


def jax_loss(params):
    return mlp_loss(params, x, target, tanh=jnp.tanh, mean=jnp.mean)


want = jax.grad(jax_loss)(params)
for ours, theirs in zip(tape_grads, want, strict=True):
    for k in ours:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-12, atol=1e-15)
np.testing.assert_allclose(loss.value, jax_loss(params), rtol=1e-14)
print(f"tape: {len(tape.records)} records; the gradient equals jax.grad's to 1e-12")

# %% [markdown]
# ## Forward mode: dual numbers
#
# A dual number $v + \dot v\,\varepsilon$ with $\varepsilon^2 = 0$ carries a value and its
# tangent. Arithmetic on them *is* the chain rule: $(a + \dot a\varepsilon)(b +
# \dot b\varepsilon) = ab + (\dot a b + a \dot b)\varepsilon$, the product rule, and
# $f(v + \dot v\varepsilon) = f(v) + f'(v)\dot v\,\varepsilon$. Nothing is recorded, nothing
# runs backwards: the tangent rides along with the value, so memory does not grow with the
# length of the computation. Each rule below is a **JVP**, the linear map $\dot x \mapsto
# J \dot x$ — what `jaxchain.tangents` writes for every op.


# %%
class Dual:
    def __init__(self, value, tangent):
        self.value, self.tangent = np.asarray(value, np.float64), np.asarray(tangent, np.float64)

    def __add__(self, other):
        return Dual(self.value + other.value, self.tangent + other.tangent)

    def __sub__(self, other):
        return Dual(self.value - other.value, self.tangent - other.tangent)

    def __mul__(self, other):  # the product rule
        a, b = self, other
        return Dual(a.value * b.value, a.tangent * b.value + a.value * b.tangent)

    def __matmul__(self, other):  # bilinear: one term per moving factor
        a, b = self, other
        return Dual(a.value @ b.value, a.tangent @ b.value + a.value @ b.tangent)

    def tanh(self):
        y = np.tanh(self.value)
        return Dual(y, (1 - y * y) * self.tangent)

    def relu(self):
        return Dual(np.maximum(self.value, 0), (self.value > 0) * self.tangent)

    def mean(self):
        return Dual(self.value.mean(), self.tangent.mean())


def constant(a):
    return Dual(a, np.zeros_like(a))


direction = jax.tree.map(lambda a: jax.random.normal(key_v, a.shape), params)
dual_params = [{k: Dual(layer[k], d[k]) for k in layer} for layer, d in zip(params, direction,
                                                                               strict=True)]  # fmt: skip
out = mlp_loss(dual_params, constant(x), constant(target), tanh=Dual.tanh, mean=Dual.mean)
value, tangent = jax.jvp(jax_loss, (params,), (direction,))
np.testing.assert_allclose(out.value, value, rtol=1e-14)
np.testing.assert_allclose(out.tangent, tangent, rtol=1e-12)
print(f"dual numbers: directional derivative {out.tangent:.6f} = jax.jvp's {tangent:.6f}")

# %% [markdown]
# The two modes answer different questions. The tape gave all $\partial L / \partial
# \theta$ at once; the dual numbers gave one number, $\nabla L \cdot t$. They agree where they
# overlap: $\langle \nabla L, t \rangle$ from the tape is the tangent from the duals.

# %%
along = sum(np.vdot(g[k], d[k]) for g, d in zip(tape_grads, direction, strict=True) for k in g)
np.testing.assert_allclose(along, out.tangent, rtol=1e-12)

# %% [markdown]
# ## The same through jaxchain
#
# `jax.jvp` cannot go through a `custom_vjp` — JAX knows only its backward pass — so forward
# mode through `jaxchain.rules` fails. `jaxchain.tangents` has every op again as a
# `custom_jvp`, whose JVP is written out; JAX transposes it into the VJP when asked for a
# gradient. The MLP of `jaxchain.nn` runs with either family through `ops=`:

# %%
mlp = {"layers": params}


def nn_loss(p, ops):
    return ops.mse(nn.mlp.apply(p, x, activation="tanh", ops=ops), target)


try:
    jax.jvp(lambda p: nn_loss(p, rules), (mlp,), ({"layers": direction},))
except TypeError as e:
    print("rules:", str(e).splitlines()[0])
_, through_tangents = jax.jvp(lambda p: nn_loss(p, tangents), (mlp,), ({"layers": direction},))
np.testing.assert_allclose(through_tangents, tangent, rtol=1e-12)
grads = jax.grad(nn_loss)(mlp, tangents)  # reverse mode, by transposing the hand-written JVPs
np.testing.assert_allclose(grads["layers"][0]["w"], want[0]["w"], rtol=1e-12)

# %% [markdown]
# ## Cost: tall and wide Jacobians
#
# For $f: \mathbb{R}^n \to \mathbb{R}^m$, one JVP gives one *column* of the Jacobian
# $J \in \mathbb{R}^{m \times n}$ and one VJP gives one *row*, each for about the cost of
# evaluating $f$. So `jacfwd` takes $n$ JVPs and `jacrev` takes $m$ VJPs: forward mode wins
# for **tall** Jacobians (few inputs, many outputs), reverse mode for **wide** ones (many
# inputs, few outputs) — and a loss, one output of millions of parameters, is as wide as a
# Jacobian gets. That is why training uses reverse mode.
#
# Below, $f$ maps $n$ inputs through a tanh MLP (width 64) to $m$ outputs, with $nm = 2^{12}$
# fixed while the shape goes from wide to tall. Both through `jaxchain.tangents`.


# %%
def timed(fn, *args, repeats=10):
    jax.block_until_ready(fn(*args))  # compile
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


shapes = [(2**k, 2 ** (12 - k)) for k in range(1, 12, 3)]  # (n, m)
times = {"jacfwd": [], "jacrev": []}
for n, m in shapes:
    net = nn.mlp.init(jax.random.key(n), [n, 64, 64, m], activation="tanh", dtype=jnp.float64)
    f = lambda v, net=net: nn.mlp.apply(net, v, activation="tanh", ops=tangents)  # noqa: E731
    v = jax.random.normal(jax.random.key(1), (n,))
    fwd, rev = jax.jit(jax.jacfwd(f)), jax.jit(jax.jacrev(f))
    np.testing.assert_allclose(fwd(v), rev(v), rtol=1e-10, atol=1e-13)
    times["jacfwd"].append(timed(fwd, v))
    times["jacrev"].append(timed(rev, v))
    print(f"n={n:5d} m={m:5d}  jacfwd {times['jacfwd'][-1] * 1e3:7.3f} ms   "
          f"jacrev {times['jacrev'][-1] * 1e3:7.3f} ms")  # fmt: skip

fig, ax = plt.subplots(figsize=(6, 3.5))
ratio = [n / m for n, m in shapes]
for name, ts in times.items():
    ax.loglog(ratio, np.array(ts) * 1e3, "o-", label=name)
ax.set_xlabel("n / m  (inputs per output: tall <- -> wide)")
ax.set_ylabel("ms per Jacobian")
ax.set_title("Jacobian of an MLP, n m = 4096")
ax.legend()
fig.tight_layout()

# %% [markdown]
# The two lines cross near $n = m$: `jacfwd` is cheaper to the left (tall), `jacrev` to the
# right (wide). The times above are this machine's, measured when the notebook ran.
#
# ## Hessian-vector products: forward over reverse
#
# Newton-type methods, curvature estimates and influence functions need $H v$, the Hessian of
# a loss times a vector, without forming $H$. It is the directional derivative of the
# gradient: $H v = \frac{d}{d\epsilon} \nabla L(\theta + \epsilon v)$ — one **forward-mode**
# pass over the **reverse-mode** gradient, about the cost of two gradients:
#
# ```python
# hvp = jax.jvp(jax.grad(loss), (theta,), (v,))[1]
# ```
#
# Forward over reverse works through **both** families. With `jaxchain.rules`, the inner
# `jax.grad` runs each rule's forward pass and hand-written backward pass as ordinary JAX
# code, and the outer forward pass differentiates *that* code — so `jax.hessian`
# (`jacfwd(jacrev(f))`) works through the rules too. What fails through a `custom_vjp` is
# forward mode applied *to it directly*: `jax.jvp`, `jacfwd` and `linearize` of `f`, and so
# forward over forward (`jacfwd(jacfwd(f))`) or reverse over forward. With
# `jaxchain.tangents` those work as well: the gradient is the transposed JVP. On an LSTM's
# loss, the two ways and the reverse-over-reverse product agree with autodiff:

# %%
lstm = nn.lstm.init(jax.random.key(3), 4, 8, dtype=jnp.float64)
xs = jax.random.normal(jax.random.key(4), (3, 10, 4))


def lstm_loss(p, ops):
    hs, _ = nn.lstm.apply(p, xs, ops=ops)
    return jnp.mean(hs**2)


def hvp(ops):
    """H v by forward over reverse: the JVP of the gradient along v."""
    return jax.jvp(jax.grad(lambda p: lstm_loss(p, ops)), (lstm,), (v,))[1]


def hvp_reverse_over_reverse(ops):
    """H v as the gradient of <grad L, v>: reverse over reverse."""

    def inner(p):
        g = jax.grad(lstm_loss)(p, ops)
        return sum(jnp.vdot(g[k], v[k]) for k in g)

    return jax.grad(inner)(lstm)


v = jax.tree.map(lambda a: jax.random.normal(jax.random.key(5), a.shape), lstm)
autodiff = hvp(reference)
for got in (hvp(tangents), hvp(rules), hvp_reverse_over_reverse(rules)):
    for k in lstm:
        np.testing.assert_allclose(got[k], autodiff[k], rtol=1e-9, atol=1e-14)
try:
    jax.jacfwd(jax.jacfwd(lambda z: rules.tanh(z).sum()))(xs[0, 0])
except TypeError as e:
    print("forward over forward through rules:", str(e).splitlines()[0])
forward_over_forward = jax.jacfwd(jax.jacfwd(lambda z: tangents.tanh(z).sum()))(xs[0, 0])
np.testing.assert_allclose(jnp.diag(forward_over_forward),
                           -2 * jnp.tanh(xs[0, 0]) * (1 - jnp.tanh(xs[0, 0]) ** 2), rtol=1e-12)  # fmt: skip
print("H v: tangents (fwd over rev) = rules (fwd over rev) = rules (rev over rev) = autodiff")

# %% [markdown]
# ## Which family when
#
# | you want | use | why |
# |---|---|---|
# | a gradient to train with | `jaxchain.rules` | the hand-written backward pass chooses what the forward pass saves (an LSTM saves its gates, blockwise attention one number per row) |
# | `jax.jvp`, `jax.jacfwd`, `jax.linearize` | `jaxchain.tangents` | forward mode cannot go through a `custom_vjp` |
# | `jax.hessian` or $Hv$ by forward over reverse | either | the outer forward pass differentiates the inner gradient's code, hand-written backward passes included |
# | forward over forward, `jacfwd(jacfwd(f))` | `jaxchain.tangents` | its inner forward pass meets the rule itself |
# | a reference to check against | `jaxchain.reference` | plain `jax.numpy`, differentiated by JAX |
