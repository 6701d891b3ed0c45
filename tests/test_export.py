"""Out to Hugging Face: :func:`jaxchain.pretrained.save_bert` writes what
``transformers.BertModel.from_pretrained`` reads (a fixture made with transformers:
``tests/fixtures/make_export_fixture.py``), and :func:`load_minilm` reads it back bit for bit."""

import importlib.util
import pathlib

import chex
import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxchain import pretrained
from jaxchain.nn import bert

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def _fixture_module():
    spec = importlib.util.spec_from_file_location(
        "make_export_fixture", FIXTURES / "make_export_fixture.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def hf():
    return dict(np.load(FIXTURES / "hf_export_reference.npz"))


def test_what_jaxchain_writes_is_what_hugging_face_reads(tmp_path, hf, xla_optimizes):
    """MiniLM moved by seeded noise, written: the bytes transformers read (where
    ``jax.random.normal`` rounds as when the fixture was made, at XLA's default level: make
    thorough), read back bit for bit, tokenized and run as transformers did."""
    fixture = _fixture_module()
    params, head, config = fixture.perturbed()
    out = pretrained.save_bert(tmp_path / "hf", params, config, head=head)
    if xla_optimizes:  # the very bytes transformers read when the fixture was made
        assert fixture.digests(out) == {k: str(v) for k, v in hf.items() if k.startswith("sha256/")}
    loaded = pretrained.load_minilm(out)
    chex.assert_trees_all_equal(loaded.params, params)  # bit for bit
    tokens, mask = loaded.tokenize(list(hf["sentences"]))
    np.testing.assert_array_equal(tokens, hf["tokens"])
    np.testing.assert_array_equal(mask, hf["mask"])
    hidden = np.asarray(loaded.hidden(tokens, mask))
    np.testing.assert_allclose(hidden[mask], hf["hidden"][mask], rtol=0, atol=5e-5)
    weights = load_file(out / pretrained.HEAD_FILE)
    pooled = np.asarray(bert.mean_pool(hidden, mask))
    logits = pooled @ weights["weight"].T + weights["bias"]
    np.testing.assert_allclose(logits, hf["logits"], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(weights["weight"], np.asarray(head["w"]).T)


def test_to_torch_is_from_torch_reversed():
    encoder = pretrained.load_minilm()
    state = bert.to_torch(encoder.params)
    original = load_file(pretrained.minilm_dir() / "model.safetensors")
    assert set(original) - set(state) == {
        "embeddings.position_ids",
        "pooler.dense.weight",
        "pooler.dense.bias",
    }
    for name, value in state.items():
        np.testing.assert_array_equal(value, original[name], err_msg=name)
    chex.assert_trees_all_equal(bert.from_torch(state, encoder.config), encoder.params)


def test_save_bert_never_writes_into_a_directory_that_holds_files(tmp_path):
    encoder = pretrained.load_minilm()
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not empty"):
        pretrained.save_bert(tmp_path, encoder.params, encoder.config)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_save_bert_writes_every_file_with_the_default_mode(tmp_path, file_mode):
    """0666 less the umask for each file, as a plain open gives (save_file alone: 0600)."""
    from jaxchain import nn

    params = nn.bert.init(
        jax.random.key(0), 30, max_len=8, d_model=16, num_heads=2, num_layers=1, d_ff=32
    )
    config = dict(
        vocab_size=30,
        max_position_embeddings=8,
        hidden_size=16,
        num_attention_heads=2,
        num_hidden_layers=1,
        intermediate_size=32,
        type_vocab_size=2,
    )
    head = {"w": np.zeros((16, 2), np.float32), "b": np.zeros(2, np.float32)}
    out = pretrained.save_bert(tmp_path / "export", params, config, head=head)
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert {"model.safetensors", "head.safetensors", "config.json"} <= set(modes)
    assert set(modes.values()) == {file_mode}, modes
