"""SOAP: Adam run in the eigenbasis of Shampoo's preconditioner (Vyas et al., 2024).

For a weight matrix with gradient ``G`` (``m × n``), Shampoo keeps the Kronecker factors
``L = EMA(G Gᵀ)`` and ``R = EMA(Gᵀ G)``. SOAP rotates the gradient into their eigenbases,
``G' = Q_Lᵀ G Q_R``, runs Adam there (first and second moments of ``G'``), and rotates Adam's
normalised step back, ``N = Q_L N' Q_Rᵀ``. The eigenbases are refreshed only every
``precondition_frequency`` steps, by one step of power iteration followed by a QR
decomposition, starting from the previous basis; between refreshes a step costs four small
matrix products per factor.

This module follows the paper's algorithm box (Algorithm 3, with Algorithm 4 as the refresh)
and, for the details the box leaves out, the authors' reference implementation
(github.com/nikhilvyas/SOAP, ``soap.py``): the first update only builds the factors and their
eigenbases (by ``eigh``) and leaves the parameters where they are; the first moment is kept in
the eigenbasis and re-expressed in the new basis when the basis changes; before each refresh
the basis vectors are sorted by their estimated eigenvalues ``diag(Qᵀ L Q)``, and the second
moment is permuted with them; Adam's bias correction is applied to the step size,
``sqrt(1 − β2^t) / (1 − β1^t)``, with ``ε`` added to the uncorrected ``sqrt(ν)``.
"""

from __future__ import annotations

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
    chain,
    check_count,
    check_decay,
    check_nonnegative,
    check_range,
    static_field,
    transform,
    user_facing,
)
from gradtx.numerics import tree_map_none as _map
from gradtx.safe_math import _saturate
from gradtx.sharding import _check_mesh_axis, _each_whole
from gradtx.transforms.decay import add_decayed_weights
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = ["SoapState", "scale_by_soap", "soap"]

_HIGHEST = lax.Precision.HIGHEST  # rotations in full float32 (no TF32/bf16 passes)


class SoapState(NamedTuple):
    """SOAP's state.

    ``count`` is the number of updates taken (the first only builds the preconditioner, so
    Adam's step is ``t = count`` at the update that follows). ``mu`` and ``nu`` are Adam's
    moments *in the eigenbasis* (``mu`` in the params' dtype, ``nu`` in their real dtype).
    ``factors`` and ``bases`` hold, per parameter, a tuple with one entry per axis: the
    Kronecker factor ``EMA(G_(i) G_(i)ᵀ)`` of that axis and its eigenbasis (columns; at each
    refresh they are sorted by decreasing eigenvalue estimate before the power-iteration step,
    which keeps that order), or ``None`` for an axis left unpreconditioned.
    Both are kept in float32 for 16-bit parameters (float64 for float64 ones).
    """

    count: jax.Array
    mu: Any
    nu: Any
    factors: Any
    bases: Any


def _unzip(tree: Any, like: Any, n: int) -> tuple:
    """Split a tree of ``n``-tuples (one per leaf of ``like``) into ``n`` trees."""
    treedef = jax.tree_util.tree_structure(like, is_leaf=tree_lib.is_none)
    parts = treedef.flatten_up_to(tree)
    return tuple(treedef.unflatten([p[i] for p in parts]) for i in range(n))


def _pow2_exponent(m: jax.Array) -> jax.Array:
    """An integer ``e`` with ``2^e`` close to ``m > 0`` (0 for ``m = 0``), clamped so that
    ``2^±e`` is a normal number of ``m``'s dtype: dividing by ``2^e`` is then exact."""
    _, e = jnp.frexp(m)
    top = jnp.finfo(m.dtype).maxexp - 3
    return jnp.clip(e, -top, top)


def _pow2(e: jax.Array, dtype: Any) -> jax.Array:
    return lax.exp2(e.astype(dtype))


def _clip_finite(x: jax.Array) -> jax.Array:
    """``x`` clipped to ``±finfo.max``: an overflowed entry (either sign) stays finite."""
    big = np.asarray(jnp.finfo(x.dtype).max, x.dtype)
    return jnp.clip(x, -big, big)


def _outer(g: jax.Array, axis: int) -> jax.Array:
    """``G_(i) G_(i)ᵀ``: ``g`` contracted with itself over every axis but ``axis``.

    Formed from ``g / 2^e`` (``2^e ≈ max |g|``, an exact scaling) and scaled back by ``2^{2e}``,
    so an entry never adds ``+inf`` to ``−inf`` (huge gradients give ``±inf`` at worst, clipped
    to ``±finfo.max`` by the caller), and equal bit for bit to the plain product otherwise.
    """
    e = _pow2_exponent(jnp.max(jnp.abs(g), initial=0))
    s = _pow2(e, g.dtype)
    gs = g / s
    others = [a for a in range(g.ndim) if a != axis]
    out = jnp.tensordot(gs, gs, axes=(others, others), precision=_HIGHEST)
    return out * s * s


def _normalised(f: jax.Array) -> jax.Array:
    """``f / 2^e`` with ``2^e ≈ max |f|``: the same eigenvectors, entries of order one."""
    e = _pow2_exponent(jnp.max(jnp.abs(f), initial=0))
    return f / _pow2(e, f.dtype)


def _project(x: jax.Array, bases: tuple, back: bool = False) -> jax.Array:
    """Rotate ``x`` into the eigenbasis (``x ×_i Q_iᵀ`` on every preconditioned axis ``i``;
    ``Q_Lᵀ X Q_R`` for a matrix), or back (``x ×_i Q_i``; ``Q_L X Q_Rᵀ``)."""
    for i, q in enumerate(bases):
        if q is None:
            continue
        y = jnp.tensordot(x, q, axes=([i], [1 if back else 0]), precision=_HIGHEST)
        x = jnp.moveaxis(y, -1, i)
    return x


def _eigenbasis(f: jax.Array) -> jax.Array:
    """The eigenvectors of the symmetric ``f``, by decreasing eigenvalue (the first basis)."""
    _, v = jnp.linalg.eigh(_normalised(f))
    return v[:, ::-1]


def _refresh(f: jax.Array, q: jax.Array) -> tuple:
    """One power-iteration step and a QR decomposition from the previous basis ``q``
    (the paper's Algorithm 4), after sorting ``q``'s columns by ``diag(qᵀ f q)``, decreasing.
    Returns the new basis and the sorting permutation (the second moment follows it)."""
    fn = _normalised(f)
    fq = jnp.matmul(fn, q, precision=_HIGHEST)
    estimate = jnp.sum(q * fq, axis=0)  # diag(qᵀ f q)
    order = jnp.argsort(-estimate, stable=True)
    power = jnp.matmul(fn, q[:, order], precision=_HIGHEST)
    q_new, _ = jnp.linalg.qr(power)
    return q_new.astype(q.dtype), order


def _switch(index: jax.Array, branches: list, operand: Any) -> Any:
    """``lax.switch`` on a traced index; the branch itself on a concrete one."""
    if isinstance(index, jax.core.Tracer):
        return lax.switch(index, branches, operand)
    return branches[int(index)](operand)


_KEEP, _INIT, _REFRESH = 0, 1, 2


@transform
class scale_by_soap(GradientTransformation):
    """SOAP's scaling: Adam in the eigenbasis of Shampoo's Kronecker factors.

    For a matrix parameter with gradient ``G`` at Adam's step ``t`` (Algorithm 3 of the paper;
    ``β_s`` is ``shampoo_beta``):

    .. math::
        G' = Q_L^\\top G Q_R,\\quad M' ← β_1 M' + (1-β_1) G',\\quad
        V ← β_2 V + (1-β_2) G'^{\\odot 2},\\\\
        u = \\frac{\\sqrt{1-β_2^t}}{1-β_1^t}\\;
            Q_L \\frac{M'}{\\sqrt{V} + ε} Q_R^\\top,\\\\
        L ← β_s L + (1-β_s) G G^\\top,\\quad R ← β_s R + (1-β_s) G^\\top G,

    and every ``precondition_frequency`` steps (``t = f, 2f, …``), after ``L`` and ``R`` took
    in ``G``, each basis is refreshed by ``Q ← QR(L Q)`` (Algorithm 4) with ``Q``'s columns first
    sorted by ``diag(Qᵀ L Q)``, decreasing, and ``V`` permuted with them; ``M'`` is re-expressed
    in the new basis (it is the moment ``M`` of the paper's box, held rotated). The first update
    only sets ``L`` and ``R`` from ``G`` and their eigenbases by ``eigh``; it returns zeros.
    This is the authors' reference implementation, whose step size carries the bias correction
    (so ``ε`` is added to the uncorrected ``sqrt(V)``).

    Which axes are preconditioned: every axis of length at most ``max_precond_dim`` of a
    parameter with two axes or more (an axis longer than that keeps the identity, so for it this
    is plain Adam); a parameter with more axes gets one factor per axis, contracted over all the
    others (the authors' ``merge_dims=False``); a 1-D parameter is preconditioned only with
    ``precondition_1d=True`` (the authors' default is not, as here); a scalar never. Without any
    preconditioned axis a parameter follows Adam with the same first-step skip.

    Numerics: factors and bases are kept in float32 for 16-bit parameters (``eigh`` and ``QR``
    run in float32 there) and in the parameters' dtype otherwise; the rotations use full
    float32 matrix products (``Precision.HIGHEST``). The factors are formed from ``G / 2^e``
    (``2^e ≈ max |G|``, an exact scaling) and clipped to the largest finite value, ``ν``
    saturates there, and ``eigh``/``QR`` see the factor divided by a power of two near its
    largest entry (the same eigenvectors): gradients from 1e-30 to 1e30 keep the state finite.
    The bases are not differentiated through (the authors compute them without gradients):
    ``jax.grad`` through a step treats them as constants. Complex parameters are refused.

    Rank-deficient gradients (a batch smaller than the layer's width, a constant gradient):
    rotated components the gradient does not span hold only rounding noise, which Adam's
    normalisation scales up to steps of order the learning rate, so two float32 runs that round
    differently (eager and jitted, or on two backends) can differ visibly. The authors' code
    does the same; a larger ``eps`` damps it.

    ``mesh`` and ``mesh_axis``: a ``jax.sharding.Mesh`` and one of its axis names, to decompose
    whole factors on separate devices: at the first update (``eigh``) and at each refresh (power
    step and QR) the factors of every parameter are stacked by size and split along ``mesh_axis``
    with ``shard_map``; each device decomposes the factors it holds and the new bases are gathered.
    Without them every device decomposes every factor. The numbers are the same either way.

    Args:
        b1: Adam's decay of the first moment, in [0, 1).
        b2: Adam's decay of the second moment, in [0, 1).
        shampoo_beta: decay of the Kronecker factors, in [0, 1); a negative value (the default,
            as the authors') means ``b2``.
        eps: added to ``sqrt(V)``.
        precondition_frequency: refresh the eigenbases every this many steps (an integer >= 1).
        max_precond_dim: axes longer than this are not preconditioned.
        precondition_1d: precondition 1-D parameters too (a full ``n × n`` factor).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_soap()
        >>> state = tx.init(jnp.zeros((2, 2)))
        >>> u, state = tx.update(jnp.array([[1.0, 0.0], [0.0, 2.0]]), state)
        >>> float(jnp.abs(u).max())  # the first update only builds L, R and their eigenbases
        0.0
        >>> u, state = tx.update(jnp.array([[3.0, 0.0], [0.0, -1.0]]), state)
        >>> [[round(float(x), 4) for x in row] for row in u]  # sign(G') at Adam's first step
        [[1.0, 0.0], [0.0, -1.0]]

    Reference: Vyas, Morwani, Zhao, Kwun, Shapira, Brandfonbrener, Janson & Kakade, "SOAP:
    Improving and Stabilizing Shampoo using Adam", arXiv 2409.11321 (ICLR 2025), Algorithms 3
    and 4; the authors' code at github.com/nikhilvyas/SOAP.
    """

    b1: Any = 0.95
    b2: Any = 0.95
    shampoo_beta: Any = -1.0
    eps: Any = 1e-8
    precondition_frequency: Any = 10
    max_precond_dim: int = static_field(10000)
    precondition_1d: bool = static_field(False)
    mesh: Any = static_field(None, kw_only=True)
    mesh_axis: str | None = static_field(None, kw_only=True)

    def _check(self):
        owner = "scale_by_soap"
        _check_mesh_axis(owner, self.mesh, self.mesh_axis)
        check_decay(owner, "b1", self.b1)
        check_decay(owner, "b2", self.b2)
        check_range(owner, "shampoo_beta", self.shampoo_beta, high=1.0, high_open=True)
        check_nonnegative(owner, "eps", self.eps)
        check_count(owner, "precondition_frequency", self.precondition_frequency, low=1)
        dim = self.max_precond_dim
        if isinstance(dim, bool) or not isinstance(dim, int | np.integer):
            raise TypeError(f"{owner}: max_precond_dim must be an integer >= 0, got {dim!r}")
        if dim < 0:
            raise ValueError(f"{owner}: max_precond_dim must be an integer >= 0, got {dim!r}")
        if not isinstance(self.precondition_1d, bool | np.bool_):
            raise TypeError(
                f"{owner}: precondition_1d must be True or False, got {self.precondition_1d!r}"
            )

    def _preconditioned(self, shape: tuple) -> tuple[bool, ...]:
        """Which axes of a parameter of this shape get a Kronecker factor."""
        if len(shape) == 1:
            return (bool(self.precondition_1d) and shape[0] <= self.max_precond_dim,)
        return tuple(n <= self.max_precond_dim for n in shape)

    def init(self, params):
        def leaf(p):
            if p is None:
                return None, None, None, None
            dtype = jnp.result_type(p)
            if jnp.issubdtype(dtype, jnp.complexfloating):
                raise TypeError(
                    "scale_by_soap: complex parameters are not supported (the Kronecker factors "
                    f"and their eigenbases are real), got dtype {dtype}"
                )
            shape = jnp.shape(p)
            fd = tree_lib.compute_dtype(dtype)
            on = self._preconditioned(shape)
            factors = tuple(
                jnp.zeros((n, n), fd) if use else None for n, use in zip(shape, on, strict=True)
            )
            bases = tuple(
                jnp.eye(n, dtype=fd) if use else None for n, use in zip(shape, on, strict=True)
            )
            zeros = tree_lib.full_like(p, 0, dtype)  # sharded like p
            return zeros, zeros, factors, bases

        mu, nu, factors, bases = _unzip(_map(leaf, params), params, 4)
        return SoapState(count=jnp.zeros([], jnp.int32), mu=mu, nu=nu, factors=factors, bases=bases)

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.mu, "scale_by_soap", "updates", "state (mu)")
        fdt = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
        count = state.count
        first = count == 0
        refresh = jnp.logical_and(
            jnp.logical_not(first), count % jnp.asarray(self.precondition_frequency) == 0
        )
        mode = jnp.where(first, _INIT, jnp.where(refresh, _REFRESH, _KEEP))
        b1, b2 = jnp.asarray(self.b1, fdt), jnp.asarray(self.b2, fdt)
        sb = jnp.asarray(self.shampoo_beta, fdt)
        sb = jnp.where(sb < 0, b2, sb)
        t = jnp.maximum(count, 1).astype(fdt)  # Adam's step (the first update takes none)
        step_size = jnp.sqrt(1 - b2**t) / (1 - b1**t)
        k = {
            "b1": tree_lib.Scalar(b1),
            "1-b1": tree_lib.Scalar(1 - b1),
            "b2": tree_lib.Scalar(b2),
            "1-b2": tree_lib.Scalar(1 - b2),
            "sb": tree_lib.Scalar(sb),
            "1-sb": tree_lib.Scalar(1 - sb),
            "step": tree_lib.Scalar(step_size),
            "eps": tree_lib.Scalar(self.eps),
        }

        def adam(g, mu, nu, factors, bases):
            if g is None:
                return None, None, None, None
            g = tree_lib.as_array(g)
            cd = _factor_dtype(factors, mu)
            gc = tree_lib.cast(g, cd)
            gp = _project(gc, bases)
            m = tree_lib.ema_leaf(gp, mu, k["b1"], k["1-b1"])
            v = _saturate(tree_lib.ema_leaf(jnp.square(gp), nu, k["b2"], k["1-b2"]))
            md, vd = tree_lib.cast(m, cd), tree_lib.cast(v, cd)
            n = lax.div(md, lax.add(lax.sqrt(vd), k["eps"](cd)))
            out = tree_lib.smul(_project(n, bases, back=True), k["step"])
            out = jnp.where(first, jnp.zeros((), cd), out)
            gs = lax.stop_gradient(gc)
            new_factors = tuple(
                None
                if f is None
                else _clip_finite(
                    lax.add(tree_lib.smul(f, k["sb"]), tree_lib.smul(_outer(gs, i), k["1-sb"]))
                )
                for i, f in enumerate(factors)
            )
            m, v = jnp.where(first, mu, m), jnp.where(first, nu, v)
            return tree_lib.cast(out, g.dtype), m, v, new_factors

        out, mu, nu, factors = _unzip(
            _map(adam, updates, state.mu, state.nu, state.factors, state.bases), updates, 4
        )

        mu_leaves, treedef = jax.tree_util.tree_flatten(mu, is_leaf=tree_lib.is_none)
        # (leaf, axis) of every preconditioned axis: the factors and bases to decompose
        where = [
            (j, i)
            for j, fs in enumerate(treedef.flatten_up_to(factors))
            if mu_leaves[j] is not None
            for i, f in enumerate(fs)
            if f is not None
        ]

        def each_factor(fn, fs, qs):
            """``fn(f, q)`` for every preconditioned axis (whole factors on separate devices
            with a mesh axis), in the order of ``where``."""
            items = [(fs[j][i], qs[j][i]) for j, i in where]
            return _each_whole(fn, items, self.mesh, self.mesh_axis)

        def rebuild(qs, new):
            """The bases with the new ones in place, laid out as the old ones were."""
            out = [list(x) if x is not None else None for x in qs]
            for (j, i), q in zip(where, new, strict=True):
                out[j][i] = shard_alike(qs[j][i], q)[1] if self.mesh_axis else q
            return [tuple(x) if x is not None else None for x in out]

        def keep(operand):
            _, bases, mu, nu = operand
            return bases, mu, nu

        def first_bases(operand):
            factors, bases, mu, nu = operand
            fs, qs = treedef.flatten_up_to(factors), treedef.flatten_up_to(bases)
            new = each_factor(lambda f, q: _eigenbasis(f), fs, qs)
            return treedef.unflatten(rebuild(qs, new)), mu, nu

        def refreshed_bases(operand):
            factors, bases, mu, nu = operand
            fs, qs = treedef.flatten_up_to(factors), treedef.flatten_up_to(bases)
            done = each_factor(_refresh, fs, qs)
            new_qs = rebuild(qs, [q for q, _ in done])
            ms, vs = treedef.flatten_up_to(mu), treedef.flatten_up_to(nu)
            for (j, i), (_, order) in zip(where, done, strict=True):
                vs[j] = jnp.take(vs[j], order, axis=i)  # ν's entries follow their directions
            for j, m in enumerate(ms):
                if m is None or new_qs[j] is None:
                    continue
                # M' = Q_oldᵀ M Q_old → Q_newᵀ M Q_new: back to the parameter's axes and in again
                mc = tree_lib.cast(m, _factor_dtype(fs[j], m))
                ms[j] = tree_lib.cast(_project(_project(mc, qs[j], back=True), new_qs[j]), m.dtype)
            return treedef.unflatten(new_qs), treedef.unflatten(ms), treedef.unflatten(vs)

        operand = (lax.stop_gradient(factors), lax.stop_gradient(state.bases), mu, nu)
        bases, mu, nu = _switch(mode, [keep, first_bases, refreshed_bases], operand)
        return out, SoapState(
            count=tree_lib.safe_increment(count), mu=mu, nu=nu, factors=factors, bases=bases
        )


def _factor_dtype(factors: tuple, like: Any) -> Any:
    """The dtype a parameter's rotation runs in: its factors' (float32 for 16-bit params)."""
    for f in factors:
        if f is not None:
            return f.dtype
    return tree_lib.compute_dtype(jnp.result_type(like))


@user_facing
def soap(
    learning_rate: ScalarOrSchedule = 3e-3,
    b1: Any = 0.95,
    b2: Any = 0.95,
    shampoo_beta: Any = -1.0,
    eps: Any = 1e-8,
    weight_decay: Any = 0.01,
    precondition_frequency: Any = 10,
    max_precond_dim: int = 10000,
    precondition_1d: bool = False,
    mask: Any = None,
    *,
    mesh: Any = None,
    mesh_axis: str | None = None,
) -> chain:
    """SOAP: :class:`scale_by_soap`, decoupled :class:`add_decayed_weights`, then ``−η``:
    ``θ ← θ − η (u + λ θ)``.

    Defaults are the authors' (``lr = 3e-3``, ``β = (0.95, 0.95)``, the factors' decay equal to
    ``β2``, ``ε = 1e-8``, ``λ = 0.01``, a refresh every 10 steps, axes up to 10000).

    Differences from the authors' code, both of order ``η λ`` and absent with
    ``weight_decay=0`` (then the numbers are theirs): the decay is AdamW's, applied with the
    step (their code multiplies the already-updated weights by ``1 − η λ``, a difference of
    ``η² λ u``), and it also applies at the first update, where the SOAP step is zero (their
    code leaves the parameters untouched then). Their ``merge_dims``, ``normalize_grads``
    and ``correct_bias=False`` options are not offered. ``mesh`` and ``mesh_axis``: see
    :class:`scale_by_soap`.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.soap(1e-2, weight_decay=0.0)
        >>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
        >>> state = opt.init(params)
        >>> for _ in range(2):
        ...     u, state = opt.update({"w": jnp.ones((2, 3)), "b": -jnp.ones(3)}, state, params)
        >>> [round(float(x), 4) for x in u["b"]]  # Adam's first step on the 1-D bias
        [0.01, 0.01, 0.01]

    Reference: Vyas et al., "SOAP: Improving and Stabilizing Shampoo using Adam",
    arXiv 2409.11321 (ICLR 2025).
    """
    return chain(
        scale_by_soap(
            b1,
            b2,
            shampoo_beta,
            eps,
            precondition_frequency,
            max_precond_dim,
            precondition_1d,
            mesh=mesh,
            mesh_axis=mesh_axis,
        ),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )
