"""LoRA adapters for the transformer blocks of :mod:`jaxchain.nn.transformer` (and so of
:mod:`jaxchain.nn.bert`) and the blocks of :mod:`jaxchain.nn.decoder`: a frozen projection
``x W + b`` becomes ``x W + b + s (x A) B`` through :func:`jaxchain.rules.lora_dense`, whose
backward pass computes no gradient for the frozen ``W`` and ``b``.

Adapters are ``{"settings": Settings(rank, alpha), "blocks": [...]}``: their settings (a static
pytree node without leaves, so optax and ``jax.grad`` see only the matrices; see
``jaxchain/nn/_settings.py``) and one dict per block naming the projections adapted::

    {"q": {"a": (D, R), "b": (R, D)}, "k": ..., "v": ..., "o": ...,
     "ffn1": {"a": (D, R), "b": (R, F)}, "ffn2": {"a": (F, R), "b": (R, D)}}

A decoder block's are its attention's and its SwiGLU unit's (``W`` of ``(D, N, H)`` counts as
``(D, N H)``)::

    {"q": {"a": (D, R), "b": (R, N H)}, "k", "v": {"a": (D, R), "b": (R, K H)},
     "o": {"a": (N H, R), "b": (R, D)}, "gate", "up": {"a": (D, R), "b": (R, F)},
     "down": {"a": (F, R), "b": (R, D)}}

``A`` starts random (He normal) and ``B`` at zero, so training starts at the pretrained model
(LoRA, Hu et al. 2021). The scale is ``s = alpha / R``, read from the adapters' settings by
every ``apply`` that takes ``lora=`` and by :func:`merge`.
"""

import jax
import jax.numpy as jnp

from jaxchain.nn import _init, _settings

#: The projections of a transformer (and BERT) block that adapters may adapt.
TARGETS = ("q", "k", "v", "o", "ffn1", "ffn2")
#: The projections of a decoder block that adapters may adapt.
DECODER_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
#: LoRA's ``alpha`` by default; the scale is ``ALPHA / rank``.
ALPHA = 16.0


def scale(rank: int, alpha: float = ALPHA) -> float:
    """LoRA's ``alpha / rank``."""
    return alpha / rank


@_settings.static
class Settings:
    """The adapters' rank and ``alpha``; their scale is ``alpha / rank``."""

    rank: int
    alpha: float = ALPHA

    def __post_init__(self):
        _settings.positive("lora", rank=self.rank)
        if not self.alpha > 0:
            raise ValueError(f"lora: alpha must be > 0, got {self.alpha!r}")
        object.__setattr__(self, "alpha", float(self.alpha))

    @property
    def scale(self) -> float:
        """``alpha / rank``."""
        return scale(self.rank, self.alpha)


def per_block(adapters: dict | None, num_blocks: int) -> tuple[list, float]:
    """Each of ``num_blocks`` blocks' adapter dict (all None when ``adapters`` is None) and
    the scale; a ``ValueError`` naming ``lora`` when the adapters are not :func:`init`'s or
    are for another number of blocks."""
    if adapters is None:
        return [None] * num_blocks, 1.0
    found = _settings.of(adapters, Settings, "lora")
    if len(adapters["blocks"]) != num_blocks:
        raise ValueError(
            f"lora: the adapters are for {len(adapters['blocks'])} blocks, the model has "
            f"{num_blocks}"
        )
    return list(adapters["blocks"]), found.scale


def _is_decoder(block: dict) -> bool:
    return "w_gate" in block


def _shapes(block: dict) -> dict[str, tuple[int, int]]:
    """``(in, out)`` of each adaptable projection of a transformer or decoder block."""
    if _is_decoder(block):
        shapes = {c: (block[f"w_{c}"].shape[0], block[f"w_{c}"][0].size) for c in "qkv"}
        n, h, d = block["w_o"].shape
        return (
            shapes | {"o": (n * h, d)} | {c: block[f"w_{c}"].shape for c in ("gate", "up", "down")}
        )
    att, ffn = block["attention"], block["ffn"]
    d, n, h = att["w_q"].shape
    return {
        "q": (d, n * h),
        "k": (d, n * h),
        "v": (d, n * h),
        "o": (n * h, d),
        "ffn1": ffn["w1"].shape,
        "ffn2": ffn["w2"].shape,
    }


def init(
    key: jax.Array,
    params: dict,
    rank: int,
    *,
    alpha: float = ALPHA,
    targets=None,
    dtype=jnp.float32,
) -> dict:
    """Adapters of rank ``rank`` and scale ``alpha / rank`` for each of ``params["blocks"]``
    (a transformer's, BERT's or a decoder's) on the projections ``targets`` (default: every
    one, :data:`TARGETS` or :data:`DECODER_TARGETS`)."""
    settings = Settings(rank=rank, alpha=alpha)
    blocks = params["blocks"]
    known = DECODER_TARGETS if blocks and _is_decoder(blocks[0]) else TARGETS
    targets = known if targets is None else targets
    unknown = set(targets) - set(known)
    if unknown:
        raise ValueError(f"lora: targets must be among {known}, got {sorted(unknown)}")
    adapters = []
    for block, k in zip(blocks, jax.random.split(key, len(blocks)), strict=True):
        shapes, keys = _shapes(block), jax.random.split(k, len(targets))
        adapters.append(
            {
                name: {
                    "a": _init.he(kt, (shapes[name][0], rank), dtype),
                    "b": jnp.zeros((rank, shapes[name][1]), dtype),
                }
                for name, kt in zip(targets, keys, strict=True)
            }
        )
    return {"settings": settings, "blocks": adapters}


def merge(params: dict, adapters: dict) -> dict:
    """``params`` with each adapter folded into its block's weights, ``W + s A B``: plain
    params (the same settings) that compute what the adapted ones do (to rounding), at no
    extra cost."""
    adapted, s = per_block(adapters, len(params["blocks"]))
    blocks = [_merge(b, a, s) for b, a in zip(params["blocks"], adapted, strict=True)]
    return {**params, "blocks": blocks}


def _merge(block: dict, adapter: dict, s: float) -> dict:
    if _is_decoder(block):
        return _merge_decoder(block, adapter, s)
    att, ffn = dict(block["attention"]), dict(block["ffn"])
    for name, lora in adapter.items():
        delta = s * lora["a"] @ lora["b"]  # (in, out)
        if name in ("q", "k", "v", "o"):
            att[f"w_{name}"] = att[f"w_{name}"] + delta.reshape(att[f"w_{name}"].shape)
        else:
            w = "w1" if name == "ffn1" else "w2"
            ffn[w] = ffn[w] + delta
    return {**block, "attention": att, "ffn": ffn}


def _merge_decoder(block: dict, adapter: dict, s: float) -> dict:
    """A decoder block with ``W + s A B`` in place of each adapted ``W``."""
    block = dict(block)
    for name, lora in adapter.items():
        w = block[f"w_{name}"]
        block[f"w_{name}"] = w + (s * lora["a"] @ lora["b"]).reshape(w.shape)
    return block
