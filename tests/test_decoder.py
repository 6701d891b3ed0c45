"""The Llama-style decoder and its parts: RoPE, RMSNorm, SwiGLU, dropout, LoRA; generation with
a KV cache; BPE tokens; the decoder and LoRA through the command line."""

import dataclasses
import json

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxchain import nn, reference, rules
from jaxchain.train import data, tasks

F32 = jnp.float32
OPS = (rules, reference)


def _decoder(tie=False, sharp=20.0):
    """A small decoder with grouped-query attention, its weights scaled up so that greedy
    choices are far from ties."""
    params = nn.decoder.init(
        jax.random.key(0),
        23,
        d_model=16,
        num_heads=4,
        num_kv_heads=2,
        num_layers=2,
        d_ff=24,
        tie_embeddings=tie,
    )
    return jax.tree.map(lambda a: a * sharp if a.ndim > 1 else a, params)


@pytest.mark.parametrize("tie", [False, True])
def test_generate_with_the_kv_cache_is_greedy_decoding_by_full_recomputation(tie):
    params = _decoder(tie)
    prompt = jax.random.randint(jax.random.key(1), (2, 3), 0, 23)
    made = []
    cached = nn.decoder.generate(
        params,
        prompt,
        7,
        key=jax.random.key(2),
        temperature=0.0,
        progress=lambda n: made.append(int(n)),
    )
    jax.effects_barrier()
    assert made == [1, 2, 3, 4, 5, 6, 7]  # in order, one call per token
    # every step recomputes the whole sequence, no cache; causal attention lets it run on a
    # fixed-length buffer (later positions cannot change earlier logits): one compilation
    apply = jax.jit(nn.decoder.apply)
    seq = jnp.zeros((2, 10), prompt.dtype).at[:, :3].set(prompt)
    for i in range(3, 10):
        seq = seq.at[:, i].set(jnp.argmax(apply(params, seq)[:, i - 1], -1))
    np.testing.assert_array_equal(cached, seq)
    assert len(set(np.asarray(seq[:, 3:]).ravel().tolist())) > 2  # not one repeated token


def test_sampling_keeps_to_the_top_k_and_depends_on_the_key():
    params, prompt = _decoder(), jnp.array([[1, 2, 3]])
    logits = nn.decoder.apply(params, prompt)[0, -1]
    top2 = set(np.argsort(np.asarray(logits))[-2:].tolist())
    firsts = {
        int(nn.decoder.generate(params, prompt, 1, key=jax.random.key(s), top_k=2)[0, -1])
        for s in range(12)
    }
    assert firsts <= top2 and len(firsts) == 2
    a, b = (nn.decoder.generate(params, prompt, 6, key=jax.random.key(s)) for s in (0, 1))
    assert not np.array_equal(a, b)


def test_decoder_bad_input():
    params = _decoder()
    key, ids = jax.random.key(0), jnp.zeros((1, 2), jnp.int32)
    for call, message in [
        (lambda: nn.decoder.generate(params, ids[:, :0], 2, key=key), "at least one token"),
        (
            lambda: nn.decoder.generate(params, ids, 2, key=key, top_k=24),
            r"top_k must be in \[1, 23\]",
        ),
        (
            lambda: nn.decoder.generate(params, jnp.zeros((1, 2)), 2, key=key),
            "prompt must be integer",
        ),
        (
            lambda: nn.decoder.init(
                jax.random.key(0), 5, d_model=16, num_heads=4, num_kv_heads=3, num_layers=1, d_ff=8
            ),
            "not a multiple of num_kv_heads",
        ),
        (
            lambda: nn.decoder.init(
                jax.random.key(0), 5, d_model=12, num_heads=4, num_kv_heads=2, num_layers=1, d_ff=8
            ),
            "must be even",
        ),
    ]:
        with pytest.raises(ValueError, match=message):
            call()


@pytest.mark.parametrize("ops", OPS, ids=lambda m: m.__name__)
def test_rope_scores_depend_on_relative_positions_only(ops):
    """<rope(q, i), rope(k, j)> is a function of j - i: shifting both positions by 11 leaves
    every score unchanged (why RoPE encodes relative position)."""
    keys = jax.random.split(jax.random.key(3), 2)
    q, k = (jax.random.normal(key, (1, 4, 2, 8)) for key in keys)
    pos = jnp.array([[0, 3, 4, 9]])

    def scores(shift):
        rq, rk = (ops.rope(a, pos + shift) for a in (q, k))
        return jnp.einsum("btnh,bsnh->bnts", rq, rk)

    np.testing.assert_allclose(scores(11), scores(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ops.rope(q, jnp.zeros((1, 4), jnp.int32)), q)  # angle 0


def test_rope_is_huggingface_llama_rotate_half():
    """Hugging Face's apply_rotary_pos_emb: ``q cos + rotate_half(q) sin`` with ``cos, sin`` of
    ``cat(freqs, freqs)``, ``freqs = pos / base^(2j/H)``; position 1, H = 4, base 100 by hand:
    pairs (x0, x2) turn by 1 radian, (x1, x3) by 1/10."""
    x = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 1, 4)
    y = rules.rope(x, jnp.array([[1]]), base=100.0)[0, 0, 0]
    c0, s0, c1, s1 = np.cos(1), np.sin(1), np.cos(0.1), np.sin(0.1)
    want = [1 * c0 - 3 * s0, 2 * c1 - 4 * s1, 3 * c0 + 1 * s0, 4 * c1 + 2 * s1]
    np.testing.assert_allclose(y, want, rtol=1e-12)


def test_rms_norm_matches_flax_and_normalises():
    x = 3 * jax.random.normal(jax.random.key(4), (4, 32))
    scale = jnp.ones(32)
    y = rules.rms_norm(x, scale, eps=0.0)
    np.testing.assert_allclose(jnp.mean(y**2, -1), 1.0, rtol=1e-12)
    with jax.numpy_dtype_promotion("standard"):  # flax, as written
        flax_y = fnn.RMSNorm(epsilon=1e-6, param_dtype=x.dtype).apply(
            {"params": {"scale": scale}}, x
        )
    np.testing.assert_allclose(rules.rms_norm(x, scale), flax_y, rtol=1e-12)


def test_dropout_draws_its_mask_again_from_the_key():
    """The mask of the forward pass is the backward's (drawn from the saved key), the same as
    flax.linen.Dropout's from that key; about ``rate`` of the elements are dropped; rate 0 is
    the identity and rate 1 zeros."""
    x, key = jnp.ones((200, 50)), jax.random.key(5)
    y, pull = jax.vjp(lambda x: rules.dropout(x, key, 0.3), x)
    (g,) = pull(jnp.ones_like(y))
    np.testing.assert_array_equal(g, y)  # the same kept elements, the same 1 / (1 - p)
    np.testing.assert_array_equal(y, fnn.Dropout(0.3).apply({}, x, deterministic=False, rng=key))
    assert abs(float(jnp.mean(y == 0)) - 0.3) < 0.01
    np.testing.assert_allclose(float(jnp.mean(y)), 1.0, atol=0.02)  # unbiased
    assert rules.dropout(x, key, 0.0) is not None and np.all(rules.dropout(x, key, 0.0) == x)
    assert np.all(rules.dropout(x, key, 1.0) == 0)
    for bad, message in [(1.5, r"rate must be .* in \[0, 1\]"), (0.1, "key must be one PRNG")]:
        with pytest.raises(ValueError, match=message):
            rules.dropout(x, key if bad > 1 else jnp.zeros(3), bad)


def test_lora_dense_computes_no_gradient_for_the_frozen_weights():
    keys = jax.random.split(jax.random.key(6), 5)
    x, w = jax.random.normal(keys[0], (3, 4)), jax.random.normal(keys[1], (4, 5))
    b = jnp.ones(5)
    a, bb = jax.random.normal(keys[2], (4, 2)), jax.random.normal(keys[3], (2, 5))
    y = rules.lora_dense(x, w, b, a, bb, scale=0.5)
    np.testing.assert_allclose(y, x @ w + b[None] + 0.5 * x @ a @ bb, rtol=1e-12)
    grads = jax.grad(lambda *p: jnp.sum(rules.lora_dense(*p, scale=0.5) ** 2), range(5))(
        x, w, b, a, bb
    )
    assert np.all(grads[1] == 0) and np.all(grads[2] == 0)
    grad_w = jax.grad(lambda w: jnp.sum(rules.lora_dense(x, w, b, a, bb, scale=0.5)))
    products = [
        e for e in jax.make_jaxpr(grad_w)(w).jaxpr.eqns if e.primitive.name == "dot_general"
    ]
    assert products  # the backward's other products are there (dx, dA, dB) ...
    assert all(e.outvars[0].aval.shape != w.shape for e in products)  # ... but no dW = x^T g


def test_merged_adapters_give_the_adapted_model():
    """LoRA on every projection of a small BERT: the merged weights ``W + s A B`` give the
    outputs of the adapted model; only the adapters (and no encoder weight) get gradients."""
    sizes = dict(max_len=8, d_model=8, num_heads=2, num_layers=2, d_ff=16)
    enc = nn.bert.init(jax.random.key(7), 11, **sizes)
    adapters = nn.lora.init(jax.random.key(8), enc, 3)
    assert adapters["settings"].scale == nn.lora.scale(3)
    noise = jax.random.key(9)  # B starts at zero: move it, so that the adapters do something
    adapters = jax.tree.map(
        lambda a: a + 0.1 * jax.random.normal(noise, a.shape, a.dtype), adapters
    )
    tokens = jax.random.randint(jax.random.key(10), (2, 6), 0, 11)
    adapted = nn.bert.apply(enc, tokens, lora=adapters)
    merged = nn.bert.apply(nn.lora.merge(enc, adapters), tokens)
    np.testing.assert_allclose(adapted, merged, rtol=1e-5, atol=1e-5)
    assert not np.allclose(adapted, nn.bert.apply(enc, tokens), atol=1e-3)
    for ops in OPS:
        g = jax.grad(
            lambda p, ops=ops: jnp.sum(
                nn.bert.apply(p["enc"], tokens, lora=p["lora"], ops=ops) ** 2
            )
        )({"enc": enc, "lora": adapters})
        leaves = jax.tree.leaves(g["enc"]["blocks"])
        assert all(float(jnp.abs(x).max()) == 0 for x in leaves[:1])  # a frozen weight
        assert all(float(jnp.abs(x).max()) > 0 for x in jax.tree.leaves(g["lora"]))


def test_decoder_lora_merged_is_adapted_and_only_the_adapters_learn():
    """LoRA on every attention and SwiGLU projection of the decoder (through lora_dense): the
    merged weights give the adapted logits, and the frozen weights get no gradient."""
    params = _decoder(sharp=1.0)
    adapters = nn.lora.init(jax.random.key(8), params, 2)
    first = adapters["blocks"][0]
    assert set(first) == set(nn.lora.DECODER_TARGETS)
    assert first["k"]["b"].shape == (2, 2 * 4) and first["o"]["a"].shape == (16, 2)
    noise = jax.random.key(9)  # B starts at zero: move it, so that the adapters do something
    adapters = jax.tree.map(
        lambda a: a + 0.3 * jax.random.normal(noise, a.shape, a.dtype), adapters
    )
    tokens = jax.random.randint(jax.random.key(10), (2, 6), 0, 23)

    @jax.jit
    def run(params, adapters):
        adapted = nn.decoder.apply(params, tokens, lora=adapters)
        merged = nn.lora.merge(params, adapters)
        g = jax.grad(lambda p: nn.decoder.loss(p["base"], tokens, tokens, lora=p["lora"]))(
            {"base": params, "lora": adapters}
        )
        return adapted, nn.decoder.apply(merged, tokens), nn.decoder.apply(params, tokens), g

    adapted, merged, plain, g = run(params, adapters)
    np.testing.assert_allclose(merged, adapted, rtol=1e-5, atol=1e-5)
    assert not np.allclose(adapted, plain, atol=1e-3)
    assert float(jnp.abs(g["base"]["blocks"][0]["w_up"]).max()) == 0  # frozen
    assert all(float(jnp.abs(x).max()) > 0 for x in jax.tree.leaves(g["lora"]))


def test_lora_strategy_trains_under_two_percent_of_minilm():
    options = tasks.Options(batch_size=4, finetuning=tasks.Finetuning("lora", rank=8))
    task = tasks.make_task("minilm", "vader", options)
    params = task.init(jax.random.key(0))
    trainable = task.trainable(params)
    sizes = [
        (x.size, t)
        for x, t in zip(jax.tree.leaves(params), jax.tree.leaves(trainable), strict=True)
    ]
    share = sum(n for n, t in sizes if t) / sum(n for n, _ in sizes)
    assert 0.01 < share < 0.02
    assert not any(jax.tree.leaves(trainable["encoder"]))


def test_bpe_tokens_round_trip_the_text():
    corpus = data.shakespeare()
    tokenizer = data.bpe(corpus, 300)
    text = corpus.text(corpus.val[:2000])
    ids = data.encode(tokenizer, text)
    assert tokenizer.decode(ids.tolist()) == text and len(ids) < len(text)
    with pytest.raises(ValueError, match="above the 256 bytes"):
        data.bpe(corpus, 200)


def test_decoder_trains_and_generates_from_the_command_line(
    tmp_path, capsys, file_mode, monkeypatch
):
    """`jaxchain train --model decoder` writes the tokenizer with the run; `jaxchain generate`
    samples from its checkpoint (greedy: twice the same text)."""
    from jaxchain.cli import main

    out = tmp_path / "run"
    flags = [
        "--hidden",
        "64",
        "--layers",
        "1",
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--eval-every",
        "3",
        "--vocab",
        "300",
    ]
    with jax.numpy_dtype_promotion("standard"):  # optax's Adam, as written
        assert (
            main(
                ["train", "--model", "decoder", "--data", "shakespeare", "--out", str(out), *flags]
            )
            == 0
        )
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "tokenizer.json").is_file() and 1 < metrics["val_loss"] < 8  # nats per char
    capsys.readouterr()
    greedy = [
        "generate",
        "--run",
        str(out),
        "--prompt",
        "ROMEO:",
        "--steps",
        "5",
        "--temperature",
        "0",
    ]
    texts = []
    for _ in range(2):
        assert main(greedy) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] and texts[0].startswith("ROMEO:")
    monkeypatch.setattr("jaxchain.cli.models.GENERATED_EVERY", 2)  # a "long" generation: progress
    assert main(greedy) == 0
    printed = capsys.readouterr()
    assert printed.out == texts[0]
    assert printed.err.splitlines() == [f"jaxchain generate: {n}/5 tokens" for n in (2, 4, 5)]
    _exports_as_llama(main, out, tmp_path / "hf", file_mode)
    assert main(["generate", "--run", str(tmp_path), "--prompt", "x"]) == 2
    assert (
        main(["train", "--model", "decoder", "--data", "digits", "--out", str(tmp_path / "d")]) == 2
    )


def _exports_as_llama(main, run, out, file_mode):
    """`jaxchain export` of a decoder run writes a Hugging Face Llama directory (what
    transformers reads: tests/test_llama.py) holding the run's params bit for bit and its
    tokenizer file byte for byte, with the files' default mode."""

    from jaxchain import pretrained, train

    assert main(["export", "--run", str(run), "--out", str(out)]) == 0
    files = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json")
    assert sorted(p.name for p in out.iterdir()) == list(files)
    assert all((out / f).stat().st_mode & 0o777 == file_mode for f in files)
    assert (out / "tokenizer.json").read_bytes() == (run / "tokenizer.json").read_bytes()
    loaded = pretrained.load_llama(out)
    s = dataclasses.asdict(loaded.settings)
    like = jax.eval_shape(lambda: nn.decoder.init(jax.random.key(0), **s))
    restored = train.restore_params(run, train.read_config(run), like)
    jax.tree.map(np.testing.assert_array_equal, loaded.params, restored)
    ids = jnp.array([loaded.tokenizer.encode("ROMEO:").ids])
    greedy = nn.decoder.generate(restored, ids, 5, key=jax.random.key(0), temperature=0.0)
    np.testing.assert_array_equal(loaded.generate(ids, 5), greedy)
    assert main(["export", "--run", str(run), "--out", str(out)]) == 2  # not empty


ENCODER = dict(max_len=8, d_model=8, num_heads=2, num_layers=2)


def test_every_model_that_trains_takes_dropout():
    """mlp, rnn, lstm, gru, transformer, bert, decoder: with a key and a rate the output
    changes (and is the same for the rules and the twins, which draw the same masks); at rate
    0 it is the model's output."""
    key, drop = jax.random.key(11), jax.random.key(12)
    xs, tokens = jax.random.normal(key, (2, 5, 3), F32), jax.random.randint(key, (2, 5), 0, 11)
    models = {
        "mlp": (nn.mlp.init(key, [3, 8, 4]), lambda p, **kw: nn.mlp.apply(p, xs, **kw)),
        **{name: (module.init(key, 3, 4), lambda p, m=module, **kw: m.apply(p, xs, **kw)[0])
           for name, module in (("rnn", nn.rnn), ("lstm", nn.lstm), ("gru", nn.gru))},
        "transformer": (nn.transformer.init(key, 11, **ENCODER),
                        lambda p, **kw: nn.transformer.apply(p, tokens, **kw)),
        "bert": (nn.bert.init(key, 11, **ENCODER), lambda p, **kw: nn.bert.apply(p, tokens, **kw)),
        "decoder": (_decoder(sharp=1.0), lambda p, **kw: nn.decoder.hidden(p, tokens, **kw)),
    }  # fmt: skip
    for name, (params, run) in models.items():
        plain = run(params)
        np.testing.assert_array_equal(run(params, dropout=0.0, key=drop), plain, err_msg=name)
        dropped = run(params, dropout=0.5, key=drop)
        assert not np.allclose(dropped, plain), name
        twin = run(params, dropout=0.5, key=drop, ops=reference)
        np.testing.assert_allclose(dropped, twin, rtol=1e-5, atol=1e-6, err_msg=name)
