"""Annealed Gaussian gradient noise (Neelakantan et al., 2015)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import numerics as tree_lib
from gradtx.core import (
    GradientTransformation,
    check_nonnegative,
    static_field,
    transform,
)

__all__ = ["add_noise", "AddNoiseState"]


class AddNoiseState(NamedTuple):
    """Step count and the raw data (``jax.random.key_data``) of the random key the next noise
    sample is drawn from: a plain unsigned-integer array, so states convert to NumPy and
    checkpoint like any other."""

    count: jax.Array
    rng_key: jax.Array


def _as_key(key: Any) -> jax.Array:
    """A typed PRNG key from an int seed, a typed key, or a raw ``uint32[2]`` key."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if jnp.ndim(key) == 1:
        return jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32))
    return jax.random.key(key)


@transform
class add_noise(GradientTransformation):
    """Add annealed Gaussian noise to the updates (Neelakantan et al., 2015, Section 2).

    .. math::
        u_t \\leftarrow u_t + \\mathcal N(0, σ_t^2),\\qquad σ_t^2 = \\frac{η}{(1 + t)^γ},
        \\quad t = 0, 1, \\dots

    A new key is split off the state's key at every step, and one sub-key per leaf draws that
    leaf's noise (in the leaf's dtype; complex leaves get circular complex noise).

    Args:
        eta: the initial variance ``η`` (the paper tries 0.01, 0.3, 1.0).
        gamma: the annealing exponent ``γ`` (the paper uses 0.55).
        key: the random key (an int seed or a ``jax.random.key``; ``None`` means seed 0).
        seed: an int seed, an alias of ``key`` kept for optax compatibility.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.add_noise(0.01, 0.55, key=0)
        >>> u, s = tx.update(jnp.zeros(1000), tx.init(jnp.zeros(1000)))
        >>> round(float(jnp.std(u)), 1)  # σ_0 = √0.01
        0.1

    Reference: Neelakantan et al., "Adding Gradient Noise Improves Learning for Very Deep
    Networks", 2015 (arXiv:1511.06807).
    """

    eta: Any
    gamma: Any
    key: Any = None
    seed: Any = static_field(None, kw_only=True)

    def _check(self):
        check_nonnegative("add_noise", "eta", self.eta)
        check_nonnegative("add_noise", "gamma", self.gamma)
        if self.seed is not None:
            if self.key is not None:
                raise ValueError("add_noise: pass only one of key and seed")
            object.__setattr__(self, "key", self.seed)
            object.__setattr__(self, "seed", None)
        if self.key is None:
            object.__setattr__(self, "key", 0)

    def init(self, params):
        key = jax.random.key_data(_as_key(self.key))
        return AddNoiseState(count=jnp.zeros([], jnp.int32), rng_key=key)

    def update(self, updates, state, params=None, **extra_args):
        count = tree_lib.safe_increment(state.count)
        impl = jax.random.key_impl(_as_key(self.key))
        key = jax.random.wrap_key_data(state.rng_key, impl=impl)
        rng_key, sample_key = jax.random.split(key)
        leaves, treedef = jax.tree_util.tree_flatten(updates)
        keys = jax.random.split(sample_key, len(leaves)) if leaves else []

        def noisy(u, k):
            cd = tree_lib.compute_dtype(u.dtype)
            var = self.eta / count.astype(tree_lib.real_dtype(cd)) ** self.gamma
            n = jax.random.normal(k, jnp.shape(u), u.dtype).astype(cd)
            return (u.astype(cd) + jnp.sqrt(var) * n).astype(u.dtype)

        out = treedef.unflatten([noisy(u, k) for u, k in zip(leaves, keys, strict=True)])
        return out, AddNoiseState(count=count, rng_key=jax.random.key_data(rng_key))
