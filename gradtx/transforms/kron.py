"""PSGD-Kron: preconditioned SGD with a Kronecker-factored preconditioner fitted on a Lie group.

Xi-Lin Li's preconditioned SGD (arXiv 1512.04202) fits a preconditioner ``P = Qᴴ Q`` so that
the preconditioned gradient ``P g`` has the statistics of a Newton step: ``P`` minimises the
criterion ``E[hᴴ P h + vᴴ P⁻¹ v]`` where ``h`` is the gradient and ``v`` a random probe. With
Kronecker factors, ``Q = Q_1 ⊗ Q_2 ⊗ …``, one per axis of a parameter, each ``Q_i`` an upper
triangular matrix (or a diagonal, for large or unit axes), and ``Q`` is updated by a
multiplicative step on the Lie group of such matrices (arXiv 2211.04422), normalised by a
bound of the step's norm so that it stays on the group without a tuned learning rate.

This module follows the PSGD-Kron implementations people use: Evan Walters' ``psgd_jax``
``kron`` and ``kron_torch`` (after Li's ``psgd_torch``). Their defaults, and where each comes
from, are listed on :class:`scale_by_kron`. The randomness (the probe ``V``, the coin that
decides whether the preconditioner is updated, the rare rebalancing of the factors) is drawn
from a key kept in the state, folded with the step count, so runs are reproducible and a
float64 NumPy reference can use the same draws.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental.shard_alike import shard_alike

from gradtx import numerics as tree_lib
from gradtx.core import (
    GradientTransformation,
    ScalarOrSchedule,
    _seed_to_key,
    _StaticFn,
    chain,
    check_count,
    check_decay,
    check_dtype,
    check_range,
    concrete_float,
    hyper,
    static_field,
    transform,
    user_facing,
)
from gradtx.schedules import BaseSchedule
from gradtx.sharding import _check_mesh_axis, _each_whole
from gradtx.transforms.decay import add_decayed_weights
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = [
    "KronState",
    "precond_update_prob_schedule",
    "scale_by_kron",
    "kron",
]

_HIGHEST = lax.Precision.HIGHEST
# psgd_jax and kron_torch rebalance the factors of a leaf on about 1 preconditioner update in 100
_BALANCE_PROBABILITY = 0.01
_MEMORY_SAVE_MODES = (None, "one_diag", "all_diag")


@transform
class precond_update_prob_schedule(BaseSchedule):
    """PSGD-Kron's default probability of updating the preconditioner at step ``n``:
    ``p(n) = clip(max_prob · exp(−decay (n − flat_start)), min_prob, max_prob)``.

    Flat at ``max_prob`` for ``flat_start`` steps, then an exponential decay to ``min_prob``
    (with the defaults, 1 until step 500, 0.03 from about step 4,000 on): the preconditioner
    is learned early and then only refreshed. The defaults are ``kron_torch``'s (``psgd_jax``
    has the same curve with ``flat_start=250`` in some versions).

    Args:
        max_prob: the probability at the start, in [0, 1].
        min_prob: the floor, in [0, 1].
        decay: the rate of the exponential decay (per step).
        flat_start: the number of steps at ``max_prob``.

    Example:
        >>> from gradtx.transforms.kron import precond_update_prob_schedule
        >>> p = precond_update_prob_schedule()
        >>> [round(float(p(n)), 4) for n in (0, 500, 1500, 10000)]
        [1.0, 1.0, 0.3679, 0.03]

    Reference: Evan Walters, ``psgd_jax`` and ``kron_torch`` (github.com/evanatyourservice).
    """

    max_prob: Any = 1.0
    min_prob: Any = 0.03
    decay: Any = 0.001
    flat_start: Any = 500

    def _check(self):
        owner = "precond_update_prob_schedule"
        check_range(owner, "max_prob", self.max_prob, low=0.0, high=1.0)
        check_range(owner, "min_prob", self.min_prob, low=0.0, high=1.0)
        check_range(owner, "decay", self.decay, low=0.0)
        check_range(owner, "flat_start", self.flat_start)
        lo, hi = concrete_float(self.min_prob), concrete_float(self.max_prob)
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"{owner}: min_prob must be <= max_prob, got {lo} > {hi}")

    def __call__(self, count: Any) -> jax.Array:
        n = jnp.asarray(count, jnp.float32)
        p = self.max_prob * jnp.exp(-self.decay * (n - self.flat_start))
        return jnp.clip(p, self.min_prob, self.max_prob)


_DEFAULT_PROBABILITY = _StaticFn(precond_update_prob_schedule())


class KronState(NamedTuple):
    """State of :class:`scale_by_kron` (``psgd_jax``'s names).

    ``count`` is the number of steps taken; ``key`` the PRNG key the step's draws are folded
    from (it does not change: step ``t`` uses ``fold_in(key, t)``); ``mu`` the EMA of the
    gradient; ``Qs_preconditioners`` one tuple of factors per leaf, a ``(d, d)`` upper
    triangular matrix or a ``(d,)`` diagonal per axis (a scalar leaf has one ``(1,)`` factor).
    """

    count: jax.Array
    key: jax.Array
    mu: Any
    Qs_preconditioners: Any


def _diagonal_axes(shape: tuple, max_size: int, min_ndim: int, mode: str | None) -> list[bool]:
    """Which axes of a leaf get a diagonal factor (the others an upper triangular one).

    Diagonal: axes of size 1, axes longer than ``max_size``, every axis of a leaf with fewer
    than ``min_ndim`` axes, and as ``mode`` says: ``"one_diag"`` the longest axis (the last of
    equally long ones), ``"all_diag"`` all of them.
    """
    shape = tuple(shape) or (1,)
    diag = [d == 1 or d > max_size or len(shape) < min_ndim for d in shape]
    if mode == "all_diag":
        diag = [True] * len(shape)
    elif mode == "one_diag":
        longest = max(range(len(shape)), key=lambda i: (shape[i], i))
        diag[longest] = True
    return diag


def _along(x: jax.Array, axis: int, m: jax.Array) -> jax.Array:
    """The mode product ``y[…a…] = Σ_b m[a, b] x[…b…]`` on ``axis`` (``m`` a matrix), or the
    product with the diagonal ``m`` (a vector) along that axis."""
    if m.ndim == 1:
        shape = [1] * x.ndim
        shape[axis] = m.shape[0]
        return x * m.reshape(shape)
    return jnp.moveaxis(jnp.tensordot(m, x, axes=(1, axis), precision=_HIGHEST), 0, axis)


def _unfold(x: jax.Array, axis: int) -> jax.Array:
    """The mode-``axis`` unfolding: ``axis`` first, every other axis flattened into columns."""
    return jnp.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)


def _inv_transpose_along(x: jax.Array, axis: int, q: jax.Array) -> jax.Array:
    """``y[…a…] = Σ_b x[…b…] (q⁻¹)[b, a]`` on ``axis``: a triangular solve with ``qᵀ``, or a
    division by the diagonal ``q``."""
    if q.ndim == 1:
        shape = [1] * x.ndim
        shape[axis] = q.shape[0]
        return x / q.reshape(shape)
    xm = jnp.moveaxis(x, axis, 0)
    sol = lax.linalg.triangular_solve(
        q, xm.reshape(q.shape[0], -1), left_side=True, lower=False, transpose_a=True
    )
    return jnp.moveaxis(sol.reshape(xm.shape), 0, axis)


def _norm_lower_bound(h: jax.Array) -> jax.Array:
    """A cheap lower bound of the spectral norm of the Hermitian matrix ``h`` (Li's).

    With ``r`` the row of ``h`` of largest norm, ``x = h r̄`` and the bound is ``‖hᴴ x‖ / ‖x‖``
    (two steps of power iteration from ``r``), computed on ``h / max|h|`` so that it neither
    overflows nor underflows. Li's version also tries the largest column; for a Hermitian
    matrix the two coincide. 0 for ``h = 0``.
    """
    m = jnp.max(jnp.abs(h))
    safe_m = jnp.where(m > 0, m, 1).astype(m.dtype)
    hs = h / safe_m.astype(h.dtype)
    j = jnp.argmax(jnp.sum(tree_lib.abs_sq(hs), axis=1))
    x = hs @ jnp.conj(hs[j])
    nx = jnp.linalg.norm(x)
    y = jnp.conj(hs).T @ (x / jnp.where(nx > 0, nx, 1).astype(x.dtype))
    return jnp.where(m > 0, m * jnp.linalg.norm(y), 0).astype(m.dtype)


def _scaled_rms(u: jax.Array) -> jax.Array:
    """``sqrt(mean |u|²)`` computed as ``m sqrt(mean |u/m|²)``, ``m = max |u|``: no overflow."""
    m = jnp.max(jnp.abs(u)) if u.size else jnp.zeros((), tree_lib.real_dtype(u.dtype))
    safe_m = jnp.where(m > 0, m, 1).astype(m.dtype)
    return m * jnp.sqrt(jnp.mean(tree_lib.abs_sq(u / safe_m.astype(u.dtype))))


def _update_factors(qs: tuple, g: jax.Array, v: jax.Array, lr: Any) -> tuple:
    """One Lie-group step of every factor of one leaf (the gradient ``g`` and probe ``v`` are
    in the factors' dtype and shape)."""
    a = g
    conj_b = jnp.conj(v)
    for i, q in enumerate(qs):
        a = _along(a, i, q)  # A = Q g
        conj_b = _inv_transpose_along(conj_b, i, q)  # conj(B) = conj(V) ×_i Q_i⁻ᵀ
    # A common scale for both terms: the step below is unchanged by it, and |A|² cannot overflow
    s = jnp.maximum(jnp.max(jnp.abs(a)), jnp.max(jnp.abs(conj_b)))
    s = jnp.where(s > 0, s, 1).astype(s.dtype)
    a = a / s.astype(a.dtype)
    conj_b = conj_b / s.astype(conj_b.dtype)
    out = []
    for i, q in enumerate(qs):
        tiny = jnp.finfo(tree_lib.real_dtype(q.dtype)).tiny
        if q.ndim == 1:
            others = tuple(k for k in range(a.ndim) if k != i)
            t1 = jnp.sum(tree_lib.abs_sq(a), axis=others)
            t2 = jnp.sum(tree_lib.abs_sq(conj_b), axis=others)
            step = (t1 - t2) / jnp.maximum(jnp.max(t1 + t2), tiny)
            out.append(q - lr * step * q)
        else:
            ai, bi = _unfold(a, i), _unfold(conj_b, i)
            t1 = jnp.matmul(ai, jnp.conj(ai).T, precision=_HIGHEST)
            t2 = jnp.matmul(jnp.conj(bi), bi.T, precision=_HIGHEST)
            bound = jnp.maximum(_norm_lower_bound(t1 + t2), tiny)
            step = jnp.triu(t1 - t2) / bound.astype(q.dtype)
            out.append(q - lr * jnp.matmul(step, q, precision=_HIGHEST))
    return tuple(out)


def _balance(qs: tuple, do: jax.Array) -> tuple:
    """Rescale the factors of one leaf to a common ``max |Q_i|`` (their geometric mean) when
    ``do``; ``Q`` itself is unchanged (the scales multiply to 1)."""
    if len(qs) < 2:
        return qs
    norms = jnp.stack([jnp.max(jnp.abs(q)) for q in qs])  # in the factors' real dtype
    gmean = jnp.exp(jnp.mean(jnp.log(norms)))
    return tuple(
        q * jnp.where(do, gmean / n, 1).astype(q.dtype) for q, n in zip(qs, norms, strict=True)
    )


def _precondition(qs: tuple, g: jax.Array) -> jax.Array:
    """``P g = Qᴴ Q g``: each factor, then its conjugate transpose, along its axis."""
    for i, q in enumerate(qs):
        g = _along(g, i, q)
        g = _along(g, i, jnp.conj(q) if q.ndim == 1 else jnp.conj(q).T)
    return g


@transform
class scale_by_kron(GradientTransformation):
    """PSGD-Kron's scaling: momentum, preconditioned by ``P = Qᴴ Q`` with Kronecker factors
    ``Q = ⊗_i Q_i`` fitted on the Lie group of triangular matrices.

    At step ``t`` (1 at the first update), per leaf ``g`` of shape ``(d_1, …, d_k)``:

    .. math::
        m ← β_1 m + (1-β_1) g,\\quad \\hat m = m / (1-β_1^t),\\quad
        u = P \\hat m = Q^H Q \\hat m,\\quad u ← u / \\max(1, \\mathrm{rms}(u)/c).

    With probability ``p_t`` (a coin drawn each step), ``Q`` is first updated from ``h = m̂``
    (or ``g`` with ``momentum_into_precond_update=False``) and a probe ``V ~ N(0, I)`` of the
    leaf's shape: ``A = Q h`` (each ``Q_i`` applied along axis ``i``), ``B̄ = V̄ ×_i Q_i⁻ᵀ``, and
    for each factor, with ``A_(i)``, ``B̄_(i)`` the mode-``i`` unfoldings,

    .. math::
        T_1 = A_{(i)} A_{(i)}^H,\\quad T_2 = \\bar B_{(i)}^{*} \\bar B_{(i)}^T,\\quad
        Q_i ← Q_i - \\frac{η_P}{\\lVert T_1 + T_2 \\rVert}\\,\\mathrm{triu}(T_1 - T_2)\\, Q_i,

    where ``‖·‖`` is a lower bound of the spectral norm (Li's two-step power iteration). For a
    diagonal factor ``T_1``, ``T_2`` are the sums of ``|A|²``, ``|B̄|²`` over the other axes and
    ``Q_i ← Q_i − η_P (T_1 − T_2) ⊙ Q_i / max(T_1 + T_2)``. The step is a descent step of
    ``E[hᴴ P h + vᴴ P⁻¹ v]`` on the group, normalised so that it never leaves it (the
    multiplier ``I − η_P …`` keeps a positive diagonal for ``η_P < 1``). On about one update
    in 100 the factors of a leaf are rebalanced to a common ``max |Q_i|``, which leaves ``Q``
    unchanged.
    The update uses the factors as updated this step.

    Defaults and where they come from (``psgd_jax`` ``kron``, ``kron_torch``):
    ``b1=0.9``; ``preconditioner_update_probability``: :func:`precond_update_prob_schedule`
    (1 for 500 steps, then decaying to 0.03), called with the number of steps taken before this
    one, as ``kron_torch`` (``psgd_jax`` passes that number plus one);
    ``max_size_triangular=8192``; ``min_ndim_triangular=2`` (vectors and scalars get a
    diagonal); ``preconditioner_lr=0.1``; ``preconditioner_init_scale=1.0`` (``Q_i`` starts at
    ``scale^{1/k} I``); ``momentum_into_precond_update=True``; the bound ``c = 1.1`` on the RMS
    of each leaf's update (``kron_torch`` and later ``psgd_jax``: a preconditioned gradient has
    RMS about 1; some ``psgd_jax`` versions used a soft ``tanh`` trust region instead).

    Randomness: step ``t`` (counting from 0) draws from ``k = fold_in(key, t)``, split into
    three keys: the update coin (``uniform(k1) < p_t``), the rebalancing coin
    (``uniform(k2) < 0.01``) and the probes (``k3`` split into one key per array leaf, in leaf
    order, masked-out leaves skipped; ``V`` drawn with ``jax.random.normal`` in the factors'
    dtype and the leaf's shape).

    Not included: ``psgd_jax``'s matmul precision options (gradtx uses the highest precision),
    scanned layers, and the later versions' dimension merging and block partitioning.

    ``mesh`` and ``mesh_axis``: a ``jax.sharding.Mesh`` and one of its axis names, to fit and apply
    the preconditioner of whole leaves on separate devices: leaves with a triangular factor are
    stacked by shape (with their momentum, factors and probe keys), split along ``mesh_axis`` with
    ``shard_map``, each device runs the Lie-group step and ``Qᴴ Q m̂`` on the leaves it holds, and
    the results are gathered back to the parameters' layout. Without them, XLA gathers each leaf
    split over devices (FSDP) to every device, and every device fits every factor. The numbers are
    the same either way.

    Args:
        b1: decay of the momentum, in [0, 1) (0: no momentum).
        normalize_grads: divide each leaf's gradient by its norm first (``psgd_jax``'s option).
        preconditioner_update_probability: the probability ``p_t`` of updating ``Q`` at a step
            (a number in [0, 1] or a schedule).
        max_size_triangular: axes longer than this get a diagonal factor.
        min_ndim_triangular: leaves with fewer axes get diagonal factors only.
        memory_save_mode: ``None``, ``"one_diag"`` (the longest axis of each leaf gets a
            diagonal) or ``"all_diag"`` (every axis does).
        preconditioner_lr: the Lie-group step ``η_P``, in (0, 1) (or a schedule).
        preconditioner_init_scale: ``Q`` starts at this times the identity (> 0).
        mu_dtype: dtype of ``mu`` (default: the params').
        precond_dtype: dtype of the factors (default: the params', at least float32).
        momentum_into_precond_update: fit ``Q`` to the momentum (``True``) or the gradient.
        max_update_rms: the bound ``c`` on each leaf's RMS (``None``: no bound).
        random_seed: the PRNG key (``jax.random.key(0)`` or ``jax.random.PRNGKey(0)``; an int
            ``n`` stands for ``jax.random.PRNGKey(n)``; ``None`` for ``PRNGKey(0)``).

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx.transforms.kron import scale_by_kron
        >>> tx = scale_by_kron()
        >>> state = tx.init({"w": jnp.zeros((2, 3))})
        >>> [q.shape for q in state.Qs_preconditioners["w"]]
        [(2, 2), (3, 3)]
        >>> u, state = tx.update({"w": jnp.full((2, 3), 0.5)}, state)
        >>> u["w"].shape, bool(jnp.sqrt(jnp.mean(u["w"] ** 2)) <= 1.1)
        ((2, 3), True)

    References: Li, "Preconditioned Stochastic Gradient Descent", arXiv 1512.04202 (IEEE TNNLS
    2018); Li, "Black Box Lie Group Preconditioners for SGD", arXiv 2211.04422; Li's
    ``psgd_torch`` and Evan Walters' ``psgd_jax``/``kron_torch``.
    """

    b1: Any = 0.9
    normalize_grads: bool = static_field(False)
    preconditioner_update_probability: ScalarOrSchedule = dataclasses.field(
        default=_DEFAULT_PROBABILITY
    )
    max_size_triangular: int = static_field(8192)
    min_ndim_triangular: int = static_field(2)
    memory_save_mode: str | None = static_field(None)
    preconditioner_lr: ScalarOrSchedule = 0.1
    preconditioner_init_scale: Any = 1.0
    mu_dtype: Any = static_field(None)
    precond_dtype: Any = static_field(None)
    momentum_into_precond_update: bool = static_field(True, kw_only=True)
    max_update_rms: Any = dataclasses.field(default=1.1, kw_only=True)
    random_seed: Any = dataclasses.field(default=None, kw_only=True)
    mesh: Any = static_field(None, kw_only=True)
    mesh_axis: str | None = static_field(None, kw_only=True)

    def _check(self):
        owner = "scale_by_kron"
        _check_mesh_axis(owner, self.mesh, self.mesh_axis)
        check_decay(owner, "b1", self.b1)
        check_range(owner, "preconditioner_update_probability",
                    self.preconditioner_update_probability, low=0.0, high=1.0)  # fmt: skip
        check_count(owner, "max_size_triangular", self.max_size_triangular, low=1)
        check_count(owner, "min_ndim_triangular", self.min_ndim_triangular)
        if self.memory_save_mode not in _MEMORY_SAVE_MODES:
            raise ValueError(
                f"{owner}: memory_save_mode must be None, 'one_diag' or 'all_diag', "
                f"got {self.memory_save_mode!r}"
            )
        check_range(owner, "preconditioner_lr", self.preconditioner_lr,
                    low=0.0, high=1.0, low_open=True, high_open=True)  # fmt: skip
        check_range(owner, "preconditioner_init_scale", self.preconditioner_init_scale,
                    low=0.0, low_open=True)  # fmt: skip
        if self.max_update_rms is not None:
            check_range(owner, "max_update_rms", self.max_update_rms, low=0.0, low_open=True)
        object.__setattr__(self, "mu_dtype", check_dtype(owner, "mu_dtype", self.mu_dtype))
        object.__setattr__(
            self, "precond_dtype", check_dtype(owner, "precond_dtype", self.precond_dtype)
        )
        for name in ("max_size_triangular", "min_ndim_triangular"):
            value = getattr(self, name)
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                object.__setattr__(self, name, int(value))
        seed = _seed_to_key(owner, "random_seed", self.random_seed)
        object.__setattr__(self, "random_seed", seed)

    def _precond_dtype(self, leaf: Any) -> Any:
        return self.precond_dtype or tree_lib.compute_dtype(jnp.result_type(leaf))

    def _diagonal_axes(self, shape: tuple) -> list[bool]:
        return _diagonal_axes(
            shape, self.max_size_triangular, self.min_ndim_triangular, self.memory_save_mode
        )

    def _finish(self, qs: tuple, m: jax.Array) -> jax.Array:
        """The update of one leaf from its factors and debiased momentum: ``P m̂``, its RMS
        bounded by ``max_update_rms``."""
        if not m.size:
            return m
        u = _precondition(qs, m)
        if self.max_update_rms is not None:
            c = jnp.asarray(self.max_update_rms).astype(_real(u.dtype))
            u = u / jnp.maximum(1, _scaled_rms(u) / c).astype(u.dtype)
        return u

    def init(self, params):
        def factors(p):
            if p is None:
                return None
            shape = tuple(jnp.shape(p)) or (1,)
            dt = self._precond_dtype(p)
            scale = jnp.asarray(self.preconditioner_init_scale, tree_lib.real_dtype(dt))
            scale = (scale ** (1.0 / len(shape))).astype(dt)
            if jnp.ndim(p) == 1 and self._diagonal_axes(shape)[0]:  # mirrors p: sharded like it
                return (tree_lib.full_like(p, scale, dt),)
            return tuple(
                scale * (jnp.ones(d, dt) if diag else jnp.eye(d, dtype=dt))
                for d, diag in zip(shape, self._diagonal_axes(shape), strict=True)
            )

        key = jax.random.PRNGKey(0) if self.random_seed is None else self.random_seed
        return KronState(
            count=jnp.zeros([], jnp.int32),
            key=jnp.asarray(key) if isinstance(key, np.ndarray) else key,
            mu=tree_lib.tree_zeros_like(params, self.mu_dtype),
            Qs_preconditioners=tree_lib.tree_map_none(factors, params),
        )

    def update(self, updates, state, params=None, **extra_args):
        owner = "scale_by_kron"
        tree_lib.check_structure(updates, state.mu, owner, "updates", "state (mu)")
        leaves, treedef = jax.tree_util.tree_flatten(updates, is_leaf=tree_lib.is_none)
        mus = treedef.flatten_up_to(state.mu)
        qss = treedef.flatten_up_to(state.Qs_preconditioners)
        count = tree_lib.safe_increment(state.count)

        # the step's draws: update coin, rebalancing coin, probes (one key per leaf)
        k_coin, k_balance, k_probe = jax.random.split(jax.random.fold_in(state.key, state.count), 3)
        prob = hyper(self.preconditioner_update_probability, state.count)
        do_update = jax.random.uniform(k_coin, (), jnp.float32) < prob
        do_balance = jax.random.uniform(k_balance, (), jnp.float32) < _BALANCE_PROBABILITY
        # one key per array leaf, in leaf order; masked-out (None) leaves take none, so the
        # draws do not depend on where the tree holds None
        order = {i: j for j, i in enumerate(i for i, g in enumerate(leaves) if g is not None)}
        probe_keys = jax.random.split(k_probe, max(len(order), 1))
        precond_lr = hyper(self.preconditioner_lr, state.count)
        b1 = self.b1
        k_b1 = tree_lib.Scalar(b1)
        k_1mb1 = tree_lib.Scalar(1 - b1)
        debias = 1 / tree_lib.bias_correction_scalar(b1, count)

        new_mus, grads_in, moms = [], [], []
        for g, mu, qs in zip(leaves, mus, qss, strict=True):
            if g is None:
                new_mus.append(None)
                grads_in.append(None)
                moms.append(None)
                continue
            g = tree_lib.as_array(g)
            dt = qs[0].dtype
            gq = tree_lib.cast(g, dt)
            if self.normalize_grads:
                norm = _scaled_rms(gq) * jnp.sqrt(jnp.asarray(max(gq.size, 1), _real(dt)))
                gq = gq / (norm + 1e-16).astype(dt)
            mu = tree_lib.ema_leaf(gq, mu, k_b1, k_1mb1)
            mhat = tree_lib.cast(mu, dt) * jnp.asarray(debias).astype(dt)
            shape = tuple(g.shape) or (1,)
            new_mus.append(mu)
            moms.append(mhat.reshape(shape))
            grads_in.append((mhat if self.momentum_into_precond_update else gq).reshape(shape))

        lr = jnp.asarray(precond_lr)

        def fit(qs, h, key, v_shape):
            """One leaf's factors after this step's refit (rebalanced first if the coin says),
            with a probe of the leaf's shape ``v_shape``."""
            v = jax.random.normal(key, v_shape, h.dtype).reshape(h.shape)
            new = _update_factors(_balance(qs, do_balance), h, v, lr.astype(_real(h.dtype)))
            return tuple(tree_lib.cast(q, p.dtype) for q, p in zip(new, qs, strict=True))

        # With a mesh axis, leaves with a triangular factor are refitted and preconditioned
        # whole on separate devices (stacked by shape, shard_map); the rest stay where they are.
        whole = {
            i
            for i, (h, qs) in enumerate(zip(grads_in, qss, strict=True))
            if self.mesh_axis is not None
            and h is not None
            and h.size
            and any(q.ndim == 2 for q in qs)
        }

        def refit(qss):
            out = []
            for i, (h, qs) in enumerate(zip(grads_in, qss, strict=True)):
                # nothing to fit on an empty leaf; whole leaves are fitted on their device below
                if h is None or h.size == 0 or i in whole:
                    out.append(qs)
                    continue
                out.append(fit(qs, h, probe_keys[order[i]], jnp.shape(leaves[i])))
            return out

        qss = lax.cond(do_update, refit, lambda q: list(q), list(qss))

        def leaf_whole(m, h, key, qs):
            h = m if h is None else h  # the momentum, unless fitting to the gradient
            qs = lax.cond(do_update, lambda q: fit(q, h, key, h.shape), lambda q: q, qs)
            return self._finish(qs, m), qs

        into = self.momentum_into_precond_update
        ordered = sorted(whole)
        done = _each_whole(
            leaf_whole,
            [
                (moms[i], None if into else grads_in[i], probe_keys[order[i]], qss[i])
                for i in ordered
            ],
            self.mesh,
            self.mesh_axis,
        )
        finished = dict(zip(ordered, done, strict=True))

        out = []
        for i, (g, m, qs) in enumerate(zip(leaves, moms, qss, strict=True)):
            if g is None:
                out.append(None)
                continue
            if i in finished:  # back in the layout of the momentum and the old factors
                u, new_qs = finished[i]
                u = shard_alike(m, u)[1]
                qss[i] = tuple(shard_alike(a, b)[1] for a, b in zip(qs, new_qs, strict=True))
            else:
                u = self._finish(qs, m)
            out.append(tree_lib.cast(u.reshape(jnp.shape(g)), jnp.result_type(g)))

        return treedef.unflatten(out), KronState(
            count=count,
            key=state.key,
            mu=treedef.unflatten(new_mus),
            Qs_preconditioners=treedef.unflatten(qss),
        )


def _real(dtype: Any) -> Any:
    return tree_lib.real_dtype(dtype)


@user_facing
def kron(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    weight_decay: Any = 0.0,
    mask: Any = None,
    normalize_grads: bool = False,
    preconditioner_update_probability: ScalarOrSchedule = _DEFAULT_PROBABILITY,
    max_size_triangular: int = 8192,
    min_ndim_triangular: int = 2,
    memory_save_mode: str | None = None,
    preconditioner_lr: ScalarOrSchedule = 0.1,
    preconditioner_init_scale: Any = 1.0,
    mu_dtype: Any = None,
    precond_dtype: Any = None,
    *,
    momentum_into_precond_update: bool = True,
    max_update_rms: Any = 1.1,
    random_seed: Any = None,
    mesh: Any = None,
    mesh_axis: str | None = None,
) -> chain:
    """PSGD-Kron: :class:`scale_by_kron`, decoupled :class:`add_decayed_weights`, then ``−η``:
    ``θ ← θ − η (u + λ θ)`` with ``u`` the clipped preconditioned momentum.

    ``psgd_jax``'s ``kron`` with its argument order; the decay mask is ``mask`` (optax's name;
    ``psgd_jax`` calls it ``weight_decay_mask``). The update has RMS at most 1.1 per leaf, so
    learning rates are Adam's order (``psgd_jax`` suggests 3 to 10 times smaller than Adam's).
    ``mesh`` and ``mesh_axis``: see :class:`scale_by_kron`.

    Example:
        >>> import jax.numpy as jnp
        >>> from gradtx.transforms.kron import kron
        >>> opt = kron(1e-3)
        >>> params = {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}
        >>> grads = {"w": jnp.full((2, 2), 1e6), "b": jnp.full(2, -1e6)}
        >>> u, state = opt.update(grads, opt.init(params), params)
        >>> [round(float(jnp.sqrt(jnp.mean(x**2))), 6) for x in (u["b"], u["w"])]  # 1.1 η
        [0.0011, 0.0011]

    Reference: Li, arXiv 1512.04202 and 2211.04422; Walters, ``psgd_jax``.
    """
    return chain(
        scale_by_kron(
            b1,
            normalize_grads,
            preconditioner_update_probability,
            max_size_triangular,
            min_ndim_triangular,
            memory_save_mode,
            preconditioner_lr,
            preconditioner_init_scale,
            mu_dtype,
            precond_dtype,
            momentum_into_precond_update=momentum_into_precond_update,
            max_update_rms=max_update_rms,
            random_seed=random_seed,
            mesh=mesh,
            mesh_axis=mesh_axis,
        ),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
