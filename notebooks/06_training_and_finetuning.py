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
# # 6. Training and fine-tuning
#
# The hand-written rules at work: an MLP and an LSTM trained on scikit-learn's digits with a
# jit-compiled optax step; freezing lower layers and training a new head; gradient
# accumulation, which equals a larger batch; and fine-tuning the pretrained MiniLM-L6 encoder
# on human-rated sentiment.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from jaxchain import nn, pretrained, reference, rules
from jaxchain.train import data, optim, tasks

digits = data.digits()
print(f"digits: {len(digits.train)} train, {len(digits.val)} val, {len(digits.test)} test")


def accuracy(logits_fn, params, split):
    return float(np.mean(np.argmax(logits_fn(params, split.x), -1) == split.y))


def batches(split, size, seed=0):
    """An endless stream of shuffled batches ``(x, y)``."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(split))
        for i in range(0, len(order) - size + 1, size):
            yield split.x[order[i : i + size]], split.y[order[i : i + size]]


# %% [markdown]
# ## An MLP, hand-written backward against autodiff
#
# The same network, optimizer and batches, once through `jaxchain.rules` and once through
# `jax.grad` of the twins: the two loss curves are the same curve.


# %%
def mlp_loss(ops):
    def loss(params, batch):
        x, y = batch
        return jnp.mean(ops.softmax_cross_entropy(nn.mlp.apply(params, x, ops=ops), y))

    return loss


def fit(loss, params, stream, steps, tx):
    params = jax.tree.map(jnp.copy, params)  # the step donates (reuses) the params it is given
    step, state, curve = optim.make_step(loss, tx), tx.init(params), []
    for _ in range(steps):
        params, state, metrics = step(params, state, next(stream))
        curve.append(float(metrics["loss"]))
    return params, np.array(curve)


init = nn.mlp.init(jax.random.key(0), [64, 128, 128, 10])
tx = optim.make_optimizer("adam", 1e-3)
mlp, curve = fit(mlp_loss(rules), init, batches(digits.train, 64), 300, tx)
_, curve_auto = fit(mlp_loss(reference), init, batches(digits.train, 64), 300, tx)
np.testing.assert_allclose(curve, curve_auto, rtol=1e-4)
mlp_logits = jax.jit(lambda p, x: nn.mlp.apply(p, x))
test_acc = accuracy(mlp_logits, mlp, digits.test)
print(f"MLP test accuracy after 300 steps: {test_acc:.3f}")
assert test_acc > 0.93

# %% [markdown]
# ## An LSTM reading the image row by row
#
# Each 8x8 image becomes a sequence of 8 rows of 8 pixels; the last hidden state feeds a dense
# head. The backward pass is the whole-sequence BPTT rule of notebook 2.

# %%
rows = data.digits(sequence=True)
k1, k2 = jax.random.split(jax.random.key(1))
lstm_init = {"cell": nn.lstm.init(k1, 8, 64), "head": nn.mlp.init(k2, [64, 10])["layers"][0]}


def lstm_logits(params, x, ops=rules):
    _, (h, _) = nn.lstm.apply(params["cell"], x, ops=ops)
    return ops.dense(h, params["head"]["w"], params["head"]["b"])


def lstm_loss(params, batch):
    x, y = batch
    return jnp.mean(rules.softmax_cross_entropy(lstm_logits(params, x), y))


lstm, lstm_curve = fit(
    lstm_loss, lstm_init, batches(rows.train, 64), 400, optim.make_optimizer("adam", 3e-3)
)
lstm_acc = accuracy(jax.jit(lstm_logits), lstm, rows.test)
print(f"LSTM test accuracy after 400 steps: {lstm_acc:.3f}")
assert lstm_acc > 0.85

fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(curve, label="MLP, hand-written")
ax.plot(curve_auto, "--", label="MLP, jax.grad")
ax.plot(lstm_curve, label="LSTM, hand-written")
ax.set_xlabel("step")
ax.set_ylabel("cross-entropy")
ax.set_yscale("log")
ax.legend()
plt.show()

# %% [markdown]
# ## Freezing lower layers, training a new head
#
# Train the MLP on the digits 0-4 only; then keep its hidden layers, put a new output layer on
# top, and train only that layer on the digits 5-9. `make_optimizer(trainable=...)` labels
# each leaf for `optax.multi_transform`; frozen leaves get `optax.set_to_zero()` updates.


# %%
def subset(split, labels):
    keep = np.isin(split.y, labels)
    return data.Split(split.x[keep], split.y[keep])


low, high = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
base, _ = fit(
    mlp_loss(rules),
    init,
    batches(subset(digits.train, low), 32),
    200,
    optim.make_optimizer("adam", 1e-3),
)
new_head = nn.mlp.init(jax.random.key(5), [128, 10])["layers"][0]
transfer = {"layers": [*base["layers"][:2], new_head]}
trainable = lambda p: {"layers": [{"w": False, "b": False}] * 2 + [{"w": True, "b": True}]}  # noqa: E731
tuned, _ = fit(
    mlp_loss(rules),
    transfer,
    batches(subset(digits.train, high), 32),
    200,
    optim.make_optimizer("adam", 3e-3, trainable=trainable),
)

for old, new in zip(
    jax.tree.leaves(transfer["layers"][:2]), jax.tree.leaves(tuned["layers"][:2]), strict=True
):
    np.testing.assert_array_equal(old, new)  # frozen: bit for bit
head_acc = accuracy(mlp_logits, tuned, subset(digits.test, high))
print(f"new head on frozen features, digits 5-9: test accuracy {head_acc:.3f}")
assert head_acc > 0.85

# %% [markdown]
# ## Gradient accumulation equals a larger batch
#
# Averaging the gradients of $k$ micro-batches of size $b$ gives exactly the gradient of one
# batch of size $k b$ (the loss is a mean), so `optax.MultiSteps` — one update every $k$ calls
# — reproduces the larger batch's training, at the memory of the smaller one.

# %%
x64, y64 = next(batches(digits.train, 64, seed=3))
big_tx = optim.make_optimizer("sgd", 0.5)
small_tx = optim.make_optimizer("sgd", 0.5, accumulate=4)
big_step, small_step = (
    optim.make_step(mlp_loss(rules), big_tx),
    optim.make_step(mlp_loss(rules), small_tx),
)
big, big_state = jax.tree.map(jnp.copy, init), big_tx.init(init)  # copies: steps donate
small, small_state = jax.tree.map(jnp.copy, init), small_tx.init(init)
for _ in range(3):
    big, big_state, _ = big_step(big, big_state, (x64, y64))
    for i in range(4):
        micro = (x64[16 * i : 16 * (i + 1)], y64[16 * i : 16 * (i + 1)])
        small, small_state, _ = small_step(small, small_state, micro)
for a, b in zip(jax.tree.leaves(big), jax.tree.leaves(small), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
print("3 updates of batch 64 == 3 x 4 accumulated micro-batches of 16")

# %% [markdown]
# ## Fine-tuning a pretrained encoder
#
# MiniLM-L6 (a 6-block, 22.7M-parameter BERT trained to embed sentences), read from its
# safetensors file, runs on the same rules. Its mean-pooled embeddings already know a lot about
# meaning:

# %%
encoder = pretrained.load_minilm()
e = encoder.embed(["wonderful", "delightful", "horrible"])
print(
    f"cos(wonderful, delightful) = {e[0] @ e[1]:.3f}, cos(wonderful, horrible) = {e[0] @ e[2]:.3f}"
)
assert e[0] @ e[1] > e[0] @ e[2]

# %% [markdown]
# The fine-tuning task: is a word of the VADER lexicon positive or negative, as rated by ten
# people? We train the top block and a new head for a few dozen steps (the `top-k` strategy of
# `jaxchain finetune`, with k = 1): the lower five blocks are frozen, and `stop_gradient` on
# their parameters means no backward pass runs below the top block. `jaxchain finetune
# --compare` runs the four strategies at full length; their results are in `bench/RESULTS.md`.

# %%
options = tasks.Options(batch_size=16, seq_len=8, finetuning=tasks.Finetuning("top-k", top_k=1))
task = tasks.make_task("minilm", "vader", options)
params = task.init(jax.random.key(0))
before = task.evaluate(params, "val")["accuracy"]
tx = optim.make_optimizer(
    "adamw", 1e-3, steps=60, schedule_kind="cosine", warmup=6, trainable=task.trainable
)
step, state, ft_curve = (
    optim.make_step(lambda p, b: task.loss(p, b, rules), tx),
    tx.init(params),
    [],
)
with jax.numpy_dtype_promotion("standard"):
    for s in range(60):
        params, state, metrics = step(params, state, task.batch(s))
        ft_curve.append(float(metrics["loss"]))
after = task.evaluate(params, "val")["accuracy"]
print(f"validation accuracy: {before:.3f} before, {after:.3f} after 60 steps of top-1 fine-tuning")
assert after > max(before, 0.8)
