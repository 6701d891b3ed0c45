"""LoRA adapters for the transformer blocks of :mod:`jaxchain.nn.transformer` (and so of
:mod:`jaxchain.nn.bert`) and the blocks of :mod:`jaxchain.nn.decoder`: a frozen projection
``x W + b`` becomes ``x W + b + s (x A) B`` through :func:`jaxchain.rules.lora_dense`, whose
backward pass computes no gradient for the frozen ``W`` and ``b``.

Adapters are a list with one dict per block, naming the projections adapted::

    {"q": {"a": (D, R), "b": (R, D)}, "k": ..., "v": ..., "o": ...,
     "ffn1": {"a": (D, R), "b": (R, F)}, "ffn2": {"a": (F, R), "b": (R, D)}}

A decoder block's are its attention's and its SwiGLU unit's (``W`` of ``(D, N, H)`` counts as
``(D, N H)``)::

    {"q": {"a": (D, R), "b": (R, N H)}, "k", "v": {"a": (D, R), "b": (R, K H)},
     "o": {"a": (N H, R), "b": (R, D)}, "gate", "up": {"a": (D, R), "b": (R, F)},
     "down": {"a": (F, R), "b": (R, D)}}

``A`` starts random (He normal) and ``B`` at zero, so training starts at the pretrained model
(LoRA, Hu et al. 2021). The scale is ``s = alpha / R``.
"""

import jax
import jax.numpy as jnp

from jaxchain.nn import _init

TARGETS = ("q", "k", "v", "o", "ffn1", "ffn2")
DECODER_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
ALPHA = 16.0  # the scale is ALPHA / rank


def scale(rank: int, alpha: float = ALPHA) -> float:
    """LoRA's ``alpha / rank``."""
    return alpha / rank


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
    key: jax.Array, blocks: list[dict], rank: int, *, targets=None, dtype=jnp.float32
) -> list[dict]:
    """Adapters of rank ``rank`` for each of ``blocks`` (transformer or decoder block params)
    on the projections ``targets`` (default: every one, :data:`TARGETS` or
    :data:`DECODER_TARGETS`)."""
    if rank < 1:
        raise ValueError(f"lora: rank must be at least 1, got {rank}")
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
    return adapters


def merge(blocks: list[dict], adapters: list[dict], s: float) -> list[dict]:
    """The blocks with each adapter folded into its weights, ``W + s A B``: plain blocks that
    compute what the adapted ones do (to rounding), at no extra cost."""
    merged = []
    for block, adapter in zip(blocks, adapters, strict=True):
        if _is_decoder(block):
            merged.append(_merge_decoder(block, adapter, s))
            continue
        att, ffn = dict(block["attention"]), dict(block["ffn"])
        for name, lora in adapter.items():
            delta = s * lora["a"] @ lora["b"]  # (in, out)
            if name in ("q", "k", "v"):
                att[f"w_{name}"] = att[f"w_{name}"] + delta.reshape(att[f"w_{name}"].shape)
            elif name == "o":
                att["w_o"] = att["w_o"] + delta.reshape(att["w_o"].shape)
            else:
                w = "w1" if name == "ffn1" else "w2"
                ffn[w] = ffn[w] + delta
        merged.append({**block, "attention": att, "ffn": ffn})
    return merged


def _merge_decoder(block: dict, adapter: dict, s: float) -> dict:
    """A decoder block with ``W + s A B`` in place of each adapted ``W``."""
    block = dict(block)
    for name, lora in adapter.items():
        w = block[f"w_{name}"]
        block[f"w_{name}"] = w + (s * lora["a"] @ lora["b"]).reshape(w.shape)
    return block
