"""Hugging Face's ``LlamaForCausalLM`` and :mod:`jaxchain.nn.decoder`: state dicts (NumPy
arrays under the names of its ``model.safetensors``; torch not needed) and configs.

``LlamaForCausalLM`` keeps each projection as ``nn.Linear`` weights ``(out, in)`` for
``x W^T``; the decoder multiplies ``x W`` with the heads in the shapes, so the weights are
transposed and split: ``q_proj (N H, D) -> w_q (D, N, H)``, ``o_proj (D, N H) -> w_o (N, H,
D)``. The head halves need no permutation: both rotate Hugging Face's ``rotate_half`` way.
"""

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from jaxchain.nn import _settings
from jaxchain.nn._decoder_settings import EPS as RMS_NORM_EPS
from jaxchain.nn._decoder_settings import ROPE_BASE as ROPE_THETA
from jaxchain.nn._decoder_settings import Settings
from jaxchain.nn._torch import require

# config fields that change the computation and that the decoder does not implement, with the
# value that it does implement
UNSUPPORTED = {"attention_bias": False, "mlp_bias": False, "rope_scaling": None}
PROJECTIONS = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "gate": "mlp.gate_proj",
    "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}


def _rope(config: Mapping) -> float:
    """``rope_theta``, from transformers 5's ``rope_parameters`` or the older top-level field;
    a RoPE of another type (scaled: ``llama3``, ``linear``, ``dynamic``, ...) is refused."""
    rope = dict(config.get("rope_parameters") or {})
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise ValueError(
            f"llama config: rope_parameters.rope_type {kind!r} is not supported (only "
            "'default': RoPE without scaling)"
        )
    return float(rope.get("rope_theta", config.get("rope_theta", ROPE_THETA)))


def settings_from_config(config: Mapping) -> Settings:
    """The decoder's :class:`~jaxchain.nn.decoder.Settings` of a Hugging Face ``LlamaConfig``
    (its ``config.json`` as a dict). Every field that changes the computation is honoured or
    refused with a ``ValueError`` naming it."""
    if config.get("model_type", "llama") != "llama":
        raise ValueError(f"llama config: model_type is {config['model_type']!r}, not 'llama'")
    for field, supported in UNSUPPORTED.items():
        if config.get(field, supported) not in (supported, None):
            raise ValueError(
                f"llama config: {field} = {config[field]!r} is not supported (only {supported!r})"
            )
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"llama config: hidden_act {act!r} is not supported (only 'silu')")
    heads = config["num_attention_heads"]
    return Settings(
        vocab_size=config["vocab_size"],
        d_model=config["hidden_size"],
        num_heads=heads,
        num_kv_heads=config.get("num_key_value_heads") or heads,
        num_layers=config["num_hidden_layers"],
        d_ff=config["intermediate_size"],
        head_dim=config.get("head_dim") or config["hidden_size"] // heads,
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        rope_base=_rope(config),
        eps=float(config.get("rms_norm_eps", RMS_NORM_EPS)),
    )


def to_config(settings: Settings, **extra) -> dict:
    """The ``LlamaConfig`` (``config.json``) of a decoder of ``settings`` (``params["settings"]``);
    ``extra`` fields (token ids, ``max_position_embeddings``) are added."""
    s = settings
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": s.vocab_size,
        "hidden_size": s.d_model,
        "intermediate_size": s.d_ff,
        "num_hidden_layers": s.num_layers,
        "num_attention_heads": s.num_heads,
        "num_key_value_heads": s.num_kv_heads,
        "head_dim": s.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": s.eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": s.rope_base},
        "rope_theta": s.rope_base,
        "tie_word_embeddings": s.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "dtype": "float32",
        **extra,
    }


def from_torch(state_dict: Mapping[str, np.ndarray], config: Mapping | Settings) -> dict:
    """Decoder params, carrying their settings, from a ``LlamaForCausalLM`` state dict of
    NumPy arrays and its config (a ``config.json`` dict, or :class:`Settings`). Tied
    embeddings: no ``head``, whatever ``lm_head.weight`` holds (it is the embedding)."""
    settings = config if isinstance(config, Settings) else settings_from_config(config)
    sd = {k: np.asarray(v) for k, v in state_dict.items()}
    d, n, k, h = settings.d_model, settings.num_heads, settings.num_kv_heads, settings.head_dim
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    if not settings.tie_embeddings:
        names.append("lm_head.weight")
    require(sd, names, "decoder")
    heads = {"q": n, "k": k, "v": k}
    blocks = []
    for i in range(settings.num_layers):
        p = f"model.layers.{i}."
        w = {c: f"{p}{name}.weight" for c, name in PROJECTIONS.items()}
        o, norms = (
            f"{p}self_attn.o_proj.weight",
            (f"{p}input_layernorm.weight", f"{p}post_attention_layernorm.weight"),
        )
        require(sd, [*w.values(), o, *norms], "decoder")
        block = {f"w_{c}": jnp.asarray(sd[w[c]].T.reshape(d, heads[c], h)) for c in "qkv"}
        block |= {f"w_{c}": jnp.asarray(sd[w[c]].T) for c in ("gate", "up", "down")}
        block["w_o"] = jnp.asarray(sd[o].T.reshape(n, h, d))
        block["norm1"], block["norm2"] = (jnp.asarray(sd[x]) for x in norms)
        blocks.append(block)
    params = {
        "settings": settings,
        "embed": jnp.asarray(sd[names[0]]),
        "blocks": blocks,
        "final_norm": jnp.asarray(sd[names[1]]),
    }
    if not settings.tie_embeddings:
        params["head"] = jnp.asarray(sd["lm_head.weight"].T)
    return params


def to_torch(params: dict) -> dict[str, np.ndarray]:
    """The ``LlamaForCausalLM`` state dict of decoder ``params``: :func:`from_torch`
    reversed, bit for bit (with :func:`to_config` of ``params["settings"]``, a checkpoint).
    Tied embeddings (no ``head``): no ``lm_head.weight``, as ``save_pretrained`` writes them.
    Plain params only: fold LoRA adapters in first (:func:`jaxchain.nn.lora.merge`)."""
    _settings.of(params, Settings, "decoder")
    sd = {"model.embed_tokens.weight": params["embed"], "model.norm.weight": params["final_norm"]}
    for i, block in enumerate(params["blocks"]):
        p = f"model.layers.{i}."
        for c, name in PROJECTIONS.items():
            w = np.asarray(block[f"w_{c}"])
            sd[f"{p}{name}.weight"] = w.reshape(w.shape[0], -1).T
        sd[f"{p}self_attn.o_proj.weight"] = (
            np.asarray(block["w_o"]).reshape(-1, block["w_o"].shape[-1]).T
        )
        sd[f"{p}input_layernorm.weight"] = block["norm1"]
        sd[f"{p}post_attention_layernorm.weight"] = block["norm2"]
    if "head" in params:
        sd["lm_head.weight"] = np.asarray(params["head"]).T
    return {k: np.ascontiguousarray(np.asarray(v)) for k, v in sd.items()}
