"""MiniLM-L6 full fine-tuning step (loss, gradients of all 22.7M params, AdamW update):
hand-written backward passes against jax.grad through the reference twins.

    python bench/bert.py [--B 16] [--T 32] [--json bench/out/bert.json]

Prints a markdown line: the median step time of each, their ratio (autodiff / manual, > 1
means the hand-written rules are faster) and the ratio of compiled temporary memory. For the
same step in PyTorch (`BertModel`), see bench/torch_bert.py.
"""

import argparse
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from jaxchain import nn, pretrained, reference, rules, train
from jaxchain.benchmarks import median_seconds, report, temp_bytes


def make_step(encoder, ops, tx):
    def loss(params, batch):
        (tokens, mask), labels = batch
        h = nn.bert.apply(params["encoder"], tokens, mask, eps=encoder.eps, ops=ops)
        head = params["head"]
        logits = ops.dense(nn.bert.mean_pool(h, mask), head["w"], head["b"])
        return jnp.mean(ops.softmax_cross_entropy(logits, labels))

    def step(params, opt_state, batch):
        value, grads = jax.value_and_grad(loss)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return jax.tree.map(jnp.add, params, updates), opt_state, value

    return step


def run(b: int, t: int) -> dict:
    encoder = pretrained.load_minilm()
    head = nn.mlp.init(jax.random.key(0), [encoder.config["hidden_size"], 2])["layers"][0]
    params = {"encoder": encoder.params, "head": head}
    rng = np.random.default_rng(0)
    tokens = rng.integers(1000, encoder.config["vocab_size"], (b, t)).astype(np.int32)
    mask = np.arange(t)[None, :] < rng.integers(t // 2, t + 1, (b, 1))
    batch = ((tokens, mask), rng.integers(0, 2, b).astype(np.int32))
    with jax.numpy_dtype_promotion("standard"):
        tx = train.make_optimizer("adamw", 1e-4, weight_decay=0.01)
        state = tx.init(params)
        steps = {
            "manual": make_step(encoder, rules, tx),
            "autodiff": make_step(encoder, reference, tx),
        }
        seconds = median_seconds({k: jax.jit(f) for k, f in steps.items()}, params, state, batch,
                                 rounds=10)  # fmt: skip
        result = {"B": b, "T": t}
        for name, f in steps.items():
            result[f"{name}_seconds"] = seconds[name]
            result[f"{name}_temp_bytes"] = temp_bytes(f, params, state, batch)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--B", type=int, default=16)
    parser.add_argument("--T", type=int, default=32)
    parser.add_argument("--json", type=pathlib.Path, default=None)
    args = parser.parse_args()
    report(run(args.B, args.T), ["B", "T"], args.json)


if __name__ == "__main__":
    main()
