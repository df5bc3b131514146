"""Linear algebra used by second-order and preconditioned methods: the dominant eigenpair
(power iteration), inverse p-th roots of PSD matrices (Shampoo's coupled Newton iteration) and
non-negative least squares."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from gradtx import numerics
from gradtx.core import check_range, concrete_float

__all__ = ["global_norm", "power_iteration", "matrix_inverse_pth_root", "nnls"]


def global_norm(updates: Any) -> jax.Array:
    """The Euclidean norm of a whole tree, as if its leaves were one vector:
    ``‖u‖ = sqrt(Σ_i Σ_j |u_ij|²)`` (complex leaves count their modulus).

    Args:
        updates: a pytree of arrays (``None`` leaves are skipped).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> float(gradtx.global_norm({"a": jnp.array([3.0]), "b": jnp.array([[4.0]])}))
        5.0
    """
    return numerics.global_norm(updates)


def _float_dtype(dtype: Any) -> Any:
    """At least float32 (ints and 16-bit floats computed in float32)."""
    return jnp.promote_types(dtype, jnp.float32)


def _normalized(tree: Any) -> Any:
    """``tree / ‖tree‖`` (a zero tree stays zero)."""
    norm = numerics.tree_l2_norm(tree)
    return numerics.tree_scale(
        jnp.where(norm == 0, 0.0, 1.0 / jnp.where(norm == 0, 1.0, norm)), tree
    )


def _check_square(owner: str, matrix: jax.Array) -> None:
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"{owner}: matrix must be a square 2-D array, got shape {matrix.shape}")


def _check_count(owner: str, name: str, value: Any, low: int) -> None:
    """A concrete count must be an integer >= ``low`` (traced counts are not checked)."""
    x = concrete_float(value)
    if isinstance(value, bool | str | bytes) or (
        x is not None and not (x >= low and float(x).is_integer())
    ):
        raise ValueError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")


def power_iteration(
    matrix: Any | Callable[[Any], Any],
    *,
    v0: Any = None,
    num_iters: Any = 100,
    error_tolerance: Any = 1e-6,
    precision: lax.Precision = lax.Precision.HIGHEST,
    key: jax.Array | None = None,
) -> tuple[jax.Array, Any]:
    """The dominant eigenvalue of a matrix and its eigenvector, by power iteration.

    Starting from ``v₀``, repeat

    .. math::
        v_k = \\frac{z_{k-1}}{\\lVert z_{k-1}\\rVert},\\qquad z_k = A v_k,\\qquad
        λ_k = \\langle v_k, z_k\\rangle

    (``z₀ = A v₀/‖v₀‖``) until the relative residual ``‖z_k − λ_k v_k‖ / |λ_k|`` is below
    ``error_tolerance`` or ``num_iters`` steps are done. Returns ``λ`` and ``z / ‖z‖``. It
    converges when the eigenvalue of largest modulus is unique; the rate is
    ``|λ₂ / λ₁|`` per step.

    Args:
        matrix: a square array ``A``, or a function computing ``A v`` for a pytree ``v``
            (then ``v0`` is required and gives the pytree's structure).
        v0: the starting vector (pytree). ``None`` with an array ``A``: uniform in
            ``[−1, 1]`` drawn with ``key``.
        num_iters: the largest number of steps.
        error_tolerance: stop when the relative residual is below it.
        precision: the matmul precision for an array ``A``.
        key: the random key for ``v0`` (``None``: ``jax.random.key(0)``).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> eig, vec = gradtx.power_iteration(jnp.array([[2.0, 0.0], [0.0, 1.0]]))
        >>> round(float(eig), 4), [round(abs(float(x)), 4) for x in vec]
        (2.0, [1.0, 0.0])

    Reference: von Mises & Pollaczek-Geiringer, "Praktische Verfahren der
    Gleichungsauflösung", ZAMM 9, 1929; Golub & Van Loan, "Matrix Computations", §7.3.1.
    """
    owner = "power_iteration"
    _check_count(owner, "num_iters", num_iters, 0)
    check_range(owner, "error_tolerance", error_tolerance, low=0.0)
    if callable(matrix):
        if v0 is None:
            raise ValueError(
                f"{owner}: v0 is required when matrix is a function (it gives the structure "
                "of the vectors the function takes)"
            )
        mvp = matrix
    else:
        matrix = jnp.asarray(matrix)
        _check_square(owner, matrix)

        def mvp(v):
            return jnp.matmul(matrix, v, precision=precision)

        if v0 is None:
            key = jax.random.key(0) if key is None else key
            dtype = _float_dtype(matrix.dtype)
            v0 = jax.random.uniform(key, matrix.shape[-1:], dtype, minval=-1.0, maxval=1.0)

    v = _normalized(v0)
    z = mvp(v)
    eig = jnp.zeros_like(numerics.tree_vdot(v, z))

    def cond(carry):
        v, z, eig, i = carry
        residual = numerics.tree_l2_norm(numerics.tree_sub(z, numerics.tree_scale(eig, v)))
        converged = jnp.abs(residual / eig) < error_tolerance
        return (i < num_iters) & ((i == 0) | ~converged)

    def body(carry):
        _, z, _, i = carry
        v = _normalized(z)
        z = mvp(v)
        return v, z, numerics.tree_vdot(v, z).astype(eig.dtype), i + 1

    _, z, eig, _ = lax.while_loop(cond, body, (v, z, eig, jnp.asarray(0)))
    return eig, _normalized(z)


def _matrix_power(m: jax.Array, p: Any, precision: lax.Precision) -> jax.Array:
    """``m^p`` for an integer ``p >= 1``: unrolled squaring when ``p`` is concrete, a loop of
    ``p`` products when it is traced."""
    k = concrete_float(p)
    if k is not None:
        k = int(k)
        result, base = None, m
        while k:
            if k & 1:
                result = base if result is None else jnp.matmul(result, base, precision=precision)
            k >>= 1
            if k:
                base = jnp.matmul(base, base, precision=precision)
        return result
    p = jnp.asarray(p).astype(jnp.int32)
    return lax.fori_loop(1, p, lambda _, acc: jnp.matmul(acc, m, precision=precision), m)


def matrix_inverse_pth_root(
    matrix: Any,
    p: Any,
    num_iters: Any = 100,
    ridge_epsilon: Any = 1e-6,
    error_tolerance: Any = 1e-6,
    precision: lax.Precision = lax.Precision.HIGHEST,
) -> tuple[jax.Array, jax.Array]:
    """``A^{−1/p}`` of a symmetric positive semi-definite matrix, by the coupled Newton
    iteration (as in Shampoo).

    With ``A_ε = A + ε λ_max(A) I`` (a ridge relative to the largest eigenvalue, found by
    :func:`power_iteration`) and ``z = (1 + p) / (2 ‖A_ε‖_F)``, start from
    ``M₀ = z A_ε``, ``H₀ = z^{1/p} I`` and repeat

    .. math::
        T_k = \\frac{(p + 1) I − M_k}{p},\\qquad M_{k+1} = T_k^{\\,p} M_k,\\qquad
        H_{k+1} = H_k T_k .

    ``M_k = H_k^p A_ε`` throughout, so ``M_k → I`` gives ``H_k → A_ε^{−1/p}``. The loop stops
    after ``num_iters`` steps, when ``max |M_k − I| <= error_tolerance``, or when that error
    grows by more than 1.2× in one step (then the previous ``H`` is returned). A 1×1 matrix
    gets ``(a + ε λ_max)^{−1/p}`` directly. Computed in at least float32, returned in
    ``matrix``'s dtype.

    Args:
        matrix: the symmetric PSD matrix ``A`` (n × n).
        p: the root, a positive integer (may be traced; any integer works).
        num_iters: the largest number of Newton steps.
        ridge_epsilon: ``ε``, the relative ridge making ``A`` positive definite.
        error_tolerance: stop when ``max |M_k − I|`` is at most this.
        precision: the matmul precision.

    Returns:
        ``(H, error)``: ``A_ε^{−1/p}`` and the final ``max |M − I|`` (0 for a 1×1 matrix).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> a = jnp.diag(jnp.array([4.0, 16.0]))
        >>> h, err = gradtx.matrix_inverse_pth_root(a, 2, ridge_epsilon=0.0)
        >>> [round(float(x), 4) for x in jnp.diag(h)]
        [0.5, 0.25]

    Reference: Higham, "Functions of Matrices: Theory and Computation", SIAM 2008, eq. (7.18);
    Guo & Higham, "A Schur–Newton Method for the Matrix p-th Root and its Inverse", SIAM J.
    Matrix Anal. Appl. 28(3), 2006; Anil et al., "Scalable Second Order Optimization for Deep
    Learning", 2020 (Shampoo's use of it).
    """
    owner = "matrix_inverse_pth_root"
    matrix = jnp.asarray(matrix)
    _check_square(owner, matrix)
    _check_count(owner, "p", p, 1)
    _check_count(owner, "num_iters", num_iters, 0)
    check_range(owner, "ridge_epsilon", ridge_epsilon, low=0.0)
    check_range(owner, "error_tolerance", error_tolerance, low=0.0)
    n = matrix.shape[0]
    dtype = _float_dtype(matrix.dtype)
    a = matrix.astype(dtype)
    inv_p = 1.0 / jnp.asarray(p, dtype)
    max_ev, _ = power_iteration(a, num_iters=100, error_tolerance=1e-6, precision=precision)
    ridge = ridge_epsilon * jnp.maximum(max_ev, 1e-16)
    if n == 1:
        return ((a + ridge) ** -inv_p).astype(matrix.dtype), jnp.zeros((), dtype)

    eye = jnp.eye(n, dtype=dtype)
    damped = a + ridge * eye
    z = (1 + jnp.asarray(p, dtype)) / (2 * jnp.linalg.norm(damped))
    m0 = z * damped
    h0 = z**inv_p * eye

    def error(m):
        return jnp.max(jnp.abs(m - eye))

    def cond(carry):
        i, _, _, _, err, improving = carry
        return (i < num_iters) & (err > error_tolerance) & improving

    def body(carry):
        i, m, h, _, err, _ = carry
        t = (1 + inv_p) * eye - inv_p * m
        m_next = jnp.matmul(_matrix_power(t, p, precision), m, precision=precision)
        h_next = jnp.matmul(h, t, precision=precision)
        err_next = error(m_next)
        # The error may rise for a step before it falls; more than 1.2× means divergence.
        return i + 1, m_next, h_next, h, err_next, err_next < 1.2 * err

    init = (jnp.asarray(0), m0, h0, h0, error(m0), jnp.asarray(True))
    _, m, h, h_prev, _, improving = lax.while_loop(cond, body, init)
    result = jnp.where(improving, h, h_prev)
    return result.astype(matrix.dtype), error(m)


def _spectral_bound(q: jax.Array) -> jax.Array:
    """An upper bound on the largest eigenvalue of the PSD matrix ``q``: the smaller of its
    Frobenius norm and its 1-norm (both bound the spectral norm)."""
    if q.size == 0:
        return jnp.zeros((), q.dtype)
    fro = jnp.sqrt(jnp.sum(q * q))
    one = jnp.max(jnp.sum(jnp.abs(q), axis=0))
    return jnp.minimum(fro, one)


def nnls(
    A: jax.Array,  # noqa: N803  (the matrix's usual name, and optax's)
    b: jax.Array,
    iters: int,
    unroll: int | bool = 1,
    L: Any = None,  # noqa: N803
) -> jax.Array:
    """Non-negative least squares, ``min_x ‖A x − b‖₂`` subject to ``x >= 0``, by the fast
    projected gradient method (FPG).

    With ``Q = AᵀA``, ``q = Aᵀb``, ``L >= λ_max(Q)``, ``x₀ = y₁ = 0`` and ``t₁ = 1``, each of
    the ``iters`` steps is

    .. math::
        x_k = \\max\\!\\left(0,\\ y_k − \\frac{Q y_k − q}{L}\\right),\\qquad
        t_{k+1} = \\frac{1 + \\sqrt{1 + 4 t_k^2}}{2},\\qquad
        y_{k+1} = x_k + \\frac{t_k − 1}{t_{k+1}} (x_k − x_{k−1}),

    a projected gradient step from an extrapolated point, whose error in the objective falls
    as ``O(1/k²)``. A matrix ``b`` (M × K) solves K problems at once.

    Args:
        A: the matrix (M × N).
        b: the target, a vector (M,) or a matrix (M × K).
        iters: the number of steps (a Python int).
        unroll: how many steps ``lax.scan`` unrolls.
        L: an upper bound on the largest eigenvalue of ``AᵀA`` (``None``: the smaller of its
            Frobenius and 1-norms).

    Returns:
        ``x``, shaped (N,) or (N × K).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> x = gradtx.nnls(jnp.array([[1.0, 2.0], [3.0, 4.0]]), jnp.array([5.0, 6.0]), 1000)
        >>> [round(float(v), 2) for v in x]  # the unconstrained solution is (−4, 4.5)
        [0.0, 1.7]

    Reference: Polyak, "Projected gradient method for non-negative least square",
    Contemporary Mathematics 636, AMS 2015 (FPG); Beck & Teboulle, "A Fast Iterative
    Shrinkage-Thresholding Algorithm for Linear Inverse Problems", SIAM J. Imaging Sci. 2009.

    Note: optax 0.2.8 starts its momentum sequence at 0 rather than ``t₁ = 1``, which repeats
    its first step; its result after ``k + 1`` steps is this one's after ``k``.
    """
    owner = "nnls"
    A, b = jnp.asarray(A), jnp.asarray(b)
    if A.ndim != 2:
        raise ValueError(f"{owner}: A must be a 2-D matrix, got shape {A.shape}")
    if b.ndim not in (1, 2) or b.shape[0] != A.shape[0]:
        raise ValueError(
            f"{owner}: b must have shape ({A.shape[0]},) or ({A.shape[0]}, K) to match A of "
            f"shape {A.shape}, got {b.shape}"
        )
    if isinstance(iters, bool) or not isinstance(iters, numbers.Integral) or iters < 0:
        raise ValueError(f"{owner}: iters must be a Python int >= 0, got {iters!r}")
    if L is not None:
        check_range(owner, "L", L, low=0.0)
    dtype = _float_dtype(jnp.result_type(A, b))
    A, b = A.astype(dtype), b.astype(dtype)
    Q = A.T @ A  # noqa: N806
    q = A.T @ b
    L = _spectral_bound(Q) if L is None else jnp.asarray(L, dtype)  # noqa: N806
    L = jnp.where(L == 0, 1, L).astype(dtype)  # noqa: N806  (A = 0: any step is fine)

    def step(carry, _):
        x_prev, y, t = carry
        x = jnp.maximum(y - (Q @ y - q) / L, 0)
        t_next = (1 + jnp.sqrt(1 + 4 * t**2)) / 2
        y = x + ((t - 1) / t_next) * (x - x_prev)
        return (x, y, t_next), None

    x0 = jnp.zeros(A.shape[1:] + b.shape[1:], dtype)
    init = (x0, x0, jnp.ones((), dtype))
    (x, _, _), _ = lax.scan(step, init, length=int(iters), unroll=unroll)
    return x
