"""Annealed Gaussian gradient noise (Neelakantan et al., 2015), and the diagonal Gaussian that
search and perturbation methods sample from (:func:`multi_normal`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import numerics as tree_lib
from gradtx.core import (
    GradientTransformation,
    check_count,
    check_nonnegative,
    static_field,
    transform,
)

__all__ = ["add_noise", "AddNoiseState", "multi_normal", "MultiNormalDiagFromLogScale"]


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
            check_count("add_noise", "seed", self.seed)
            if self.key is not None:
                raise ValueError("add_noise: pass only one of key and seed")
            object.__setattr__(self, "key", self.seed)
            object.__setattr__(self, "seed", None)
        if self.key is None:
            object.__setattr__(self, "key", 0)
        elif not isinstance(self.key, jax.Array | np.ndarray):
            check_count("add_noise", "key", self.key)  # an integer seed

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


class MultiNormalDiagFromLogScale:
    """A multivariate normal with diagonal covariance, parameterised by its mean ``μ`` and the
    log of its standard deviations ``log σ`` (so any real ``log σ`` is valid).

    .. math::
        x = μ + σ \\odot ε,\\quad ε \\sim \\mathcal N(0, I);\\qquad
        \\log p(x) = \\sum_j \\left[-\\tfrac12 \\left(\\frac{x_j − μ_j}{σ_j}\\right)^2
        − \\log σ_j − \\tfrac12 \\log 2π\\right],

    the sum running over the parameter axes (the broadcast shape of ``μ`` and ``σ``).

    Args:
        loc: the mean ``μ``.
        log_scale: ``log σ``, broadcastable against ``loc``.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> d = gradtx.MultiNormalDiagFromLogScale(jnp.zeros(2), jnp.zeros(2))
        >>> round(float(d.log_prob(jnp.zeros(2))), 4)  # −log 2π
        -1.8379
    """

    def __init__(self, loc: Any, log_scale: Any):
        self._loc = jnp.asarray(loc)
        self._log_scale = jnp.asarray(log_scale)
        self._scale = jnp.exp(self._log_scale)
        self._param_shape = jnp.broadcast_shapes(self._loc.shape, self._log_scale.shape)

    def sample(self, shape: Sequence[int], key: Any) -> jax.Array:
        """Draw samples of shape ``(*shape, *param_shape)``: ``μ + σ ⊙ ε`` with ``ε`` standard
        normal drawn from ``key`` (a ``jax.random`` key, a raw ``uint32[2]`` key, or an int
        seed)."""
        dtype = jnp.result_type(self._loc, self._scale)
        if not jnp.issubdtype(dtype, jnp.floating):
            dtype = jnp.result_type(float)
        eps = jax.random.normal(_as_key(key), tuple(shape) + self._param_shape, dtype)
        return eps * self._scale + self._loc

    def log_prob(self, x: Any) -> jax.Array:
        """The log density of ``x``, summed over the parameter axes (one value per sample)."""
        z = (jnp.asarray(x) - self._loc) / self._scale
        per_dim = -0.5 * z**2 - self._log_scale - 0.5 * math.log(2 * math.pi)
        axes = tuple(range(-len(self._param_shape), 0))
        return jnp.sum(per_dim, axis=axes)

    @property
    def log_scale(self) -> jax.Array:
        """``log σ``, as given."""
        return self._log_scale

    @property
    def params(self) -> list[jax.Array]:
        """``[μ, log σ]``, the parameters a search method differentiates."""
        return [self._loc, self._log_scale]


def multi_normal(loc: Any, log_scale: Any) -> MultiNormalDiagFromLogScale:
    """A diagonal multivariate normal with mean ``loc`` and standard deviations
    ``exp(log_scale)``, offering ``sample(shape, key)`` and ``log_prob(x)``; see
    :class:`MultiNormalDiagFromLogScale` for the math.

    Args:
        loc: the mean ``μ``.
        log_scale: ``log σ``, broadcastable against ``loc``.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> d = gradtx.multi_normal(jnp.array([1.0, -1.0]), jnp.log(jnp.array([0.5, 2.0])))
        >>> d.sample((1000,), key=0).shape
        (1000, 2)
        >>> round(float(d.log_prob(jnp.array([1.0, -1.0]))), 4)  # −log 2π − log(0.5 · 2)
        -1.8379

    Reference: Wierstra et al., "Natural Evolution Strategies", JMLR 15, 2014 (searching with
    a Gaussian parameterised by its mean and log standard deviations).
    """
    return MultiNormalDiagFromLogScale(loc, log_scale)
