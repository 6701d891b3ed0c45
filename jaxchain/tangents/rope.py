"""Forward-mode rule of the rotary position embedding."""

from functools import partial

import jax

from jaxchain._checks import check_rope
from jaxchain._primal.rope import rotated


def rope(x: jax.Array, positions: jax.Array, *, base: float = 10000.0) -> jax.Array:
    r"""Rotary position embedding (see :func:`jaxchain.rules.rope`): a rotation of each pair
    :math:`(x_j, x_{j+H/2})` by :math:`\theta_j = p\,\beta^{-2j/H}`. A rotation is linear, so
    the JVP rotates the tangent by the same angle, :math:`\dot y = R_\theta \dot x` (the
    reverse rule rotates the cotangent back, by :math:`-\theta`)."""
    x, positions = check_rope("rope", x, positions, base)
    return _rope(x, positions, float(base))


@partial(jax.custom_jvp, nondiff_argnums=(2,))
def _rope(x, positions, base):
    return rotated(x, positions, base)


@_rope.defjvp
def _rope_jvp(base, primals, tangents):
    (x, positions), (dx, _) = primals, tangents
    return rotated(x, positions, base), rotated(dx, positions, base)
