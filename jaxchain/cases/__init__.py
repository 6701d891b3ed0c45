"""jaxchain's own cases for the checker: what ``jaxchain check`` and the test suite run.

- ``registry``: every rule and model with its autodiff twin, its forward-mode twin, its
  counterpart and how to make arguments for it (core: JAX and NumPy);
- ``peers``: each op computed by jax.nn, optax or flax, and the low-precision comparison
  (``pip install 'jaxchain[flax]'``);
- :mod:`~jaxchain.cases.testing`: hypothesis strategies and ``check_property``, to test your
  own rules as jaxchain tests its own (``pip install 'jaxchain[testing]'``);
- ``audit`` and ``audit_libraries``: ``jaxchain audit``, the checker over other libraries'
  derivatives (``pip install 'jaxchain[flax]'``; the lineax, optimistix, diffrax and equinox
  recipes where those are installed).

The checker (:mod:`jaxchain.check`) imports none of these: it checks anyone's rule.
"""
