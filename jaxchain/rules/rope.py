"""Rotary position embedding (RoPE), as Llama uses it."""

from functools import partial

import jax

from jaxchain._checks import check_rope
from jaxchain._primal.rope import rotated


def rope(x: jax.Array, positions: jax.Array, *, base: float = 10000.0) -> jax.Array:
    r"""Rotary position embedding of ``x (B, T, N, H)`` at integer ``positions``.

    Each head vector's halves pair up, :math:`(x_j, x_{j + H/2})` for :math:`j < H/2` (the
    half-split convention of Hugging Face's Llama, ``rotate_half``), and each pair is rotated
    by the angle :math:`\theta_j = p\,\beta^{-2j/H}` at position :math:`p`:

    .. math:: y_j = x_j \cos\theta_j - x_{j+H/2} \sin\theta_j, \quad
              y_{j+H/2} = x_{j+H/2} \cos\theta_j + x_j \sin\theta_j.

    A rotation's inverse is its transpose, the rotation by :math:`-\theta`, so the backward
    pass rotates the cotangent back:

    .. math:: \frac{\partial L}{\partial x_j} = g_j \cos\theta_j + g_{j+H/2} \sin\theta_j,
              \quad \frac{\partial L}{\partial x_{j+H/2}}
              = g_{j+H/2} \cos\theta_j - g_j \sin\theta_j.

    Why it works: rotated queries and keys have :math:`\langle R_p q, R_{p'} k\rangle =
    \langle q, R_{p' - p} k\rangle`, so attention scores see only relative positions.
    Saves only ``positions``; the angles are recomputed (in float32, or float64 for float64
    inputs).

    Args:
      x: ``(B, T, N, H)``, ``H`` even.
      positions: integers ``(B, T)`` or ``(T,)``.
      base: :math:`\beta`, Llama's ``rope_theta``.

    Returns:
      ``(B, T, N, H)``.
    """
    x, positions = check_rope("rope", x, positions, base)
    return _rope(x, positions, float(base))


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _rope(x, positions, base):
    return _rope_fwd(x, positions, base)[0]


def _rope_fwd(x, positions, base):
    return rotated(x, positions, base), positions


def _rope_bwd(base, positions, g):
    return rotated(g, positions, base, -1), None  # rotated back, by -theta


_rope.defvjp(_rope_fwd, _rope_bwd)
