"""The settings of :mod:`jaxchain.nn.decoder`, apart so that its Hugging Face mapping
(:mod:`jaxchain.nn._llama`) makes them too."""

from jaxchain.nn import _settings

ROPE_BASE = 10000.0  # Llama's rope_theta default
EPS = 1e-6  # RMSNorm's, Llama's rms_norm_eps default


@_settings.static
class Settings:
    """A decoder's sizes and constants: what :func:`jaxchain.nn.decoder.init` takes, stored in
    its params (``params["settings"]``) and read by ``apply``, ``loss`` and ``generate``.

    Attributes:
      vocab_size, d_model, num_heads, num_kv_heads, num_layers, d_ff: the sizes (``V``, ``D``,
        ``N``, ``K``, the blocks, ``F``).
      head_dim: ``H``; ``None`` is ``d_model / num_heads``, resolved on construction.
      tie_embeddings: the head is the embedding's transpose (no ``head`` weight).
      rope_base: RoPE's base (Llama's ``rope_theta``).
      eps: RMSNorm's epsilon (Llama's ``rms_norm_eps``).
    """

    vocab_size: int
    d_model: int
    num_heads: int
    num_kv_heads: int
    num_layers: int
    d_ff: int
    head_dim: int | None = None
    tie_embeddings: bool = False
    rope_base: float = ROPE_BASE
    eps: float = EPS

    def __post_init__(self):
        _settings.positive(
            "decoder",
            vocab_size=self.vocab_size,
            d_model=self.d_model,
            num_heads=self.num_heads,
            num_kv_heads=self.num_kv_heads,
            num_layers=self.num_layers,
            d_ff=self.d_ff,
        )
        if not self.rope_base > 0 or not self.eps >= 0:
            raise ValueError(
                f"decoder: rope_base must be > 0 and eps >= 0, got {self.rope_base}, {self.eps}"
            )
        object.__setattr__(self, "head_dim", self._head_size())
        object.__setattr__(self, "rope_base", float(self.rope_base))
        object.__setattr__(self, "eps", float(self.eps))
        object.__setattr__(self, "tie_embeddings", bool(self.tie_embeddings))

    def _head_size(self) -> int:
        d, n, k = self.d_model, self.num_heads, self.num_kv_heads
        if self.head_dim is None and d % n:
            raise ValueError(f"decoder: d_model {d} is not divisible by num_heads {n}")
        if n % k:
            raise ValueError(f"decoder: num_heads {n} is not a multiple of num_kv_heads {k}")
        h = d // n if self.head_dim is None else self.head_dim
        if isinstance(h, bool) or not isinstance(h, int) or h < 2 or h % 2:
            raise ValueError(f"decoder: head_dim {h} must be even and at least 2 (RoPE)")
        return h
