"""Full-batch optimizers: compositions that need the objective itself, not only its gradient.

They take the extra keyword arguments ``value``, ``grad`` and ``value_fn`` in ``update`` (see
:mod:`gradtx.linesearch`); for a whole solve in one compiled call see :func:`gradtx.minimize`.
"""

from __future__ import annotations

from typing import Any

from gradtx.core import GradientTransformation, ScalarOrSchedule, chain, identity, user_facing
from gradtx.lbfgs import scale_by_lbfgs
from gradtx.linesearch import scale_by_zoom_linesearch
from gradtx.transforms.scaling import scale, scale_by_learning_rate

__all__ = ["lbfgs"]

# The default line search is built on each call, not once at import: its hyperparameters take
# the float width in force when the optimizer is built (float64 once x64 is on).
_ZOOM = "zoom"


@user_facing
def lbfgs(
    learning_rate: ScalarOrSchedule | None = None,
    memory_size: int = 10,
    scale_init_precond: bool = True,
    linesearch: Any = _ZOOM,
) -> GradientTransformation:
    """L-BFGS: :class:`scale_by_lbfgs`, then ``−1`` (or ``−α``), then a line search.

    The parameters move by ``θ ← θ − η H_k ∇f(θ)`` with ``η`` chosen by the line search
    (strong Wolfe by default). Pass the objective at each step:
    ``opt.update(g, state, params, value=v, grad=g, value_fn=f)``, and use
    :func:`value_and_grad_from_state` to reuse the line search's last evaluation. The
    direction ``H_k ∇f(θ)`` is the two-loop recursion of :class:`scale_by_lbfgs`.

    Args:
        learning_rate: ``α``, a scale (or schedule) applied to ``−H_k ∇f(θ)`` before the line
            search (``None``: ``−1``, the usual choice with a line search).
        memory_size: number of ``(s, y)`` pairs kept, ``m``.
        scale_init_precond: start each recursion from ``γ_k I`` with
            ``γ_k = <s, y>/<y, y>`` of the newest pair (else the identity).
        linesearch: the line search transform (default ``"zoom"``:
            :class:`scale_by_zoom_linesearch` with 20 evaluations, starting from a step of 1);
            ``None`` uses no line search (the step is then just ``α``; as in optax, every
            step's curvature pair is stored, so on a non-convex objective ``H_k`` may be
            indefinite: take a small ``α``).

    Example:
        >>> import jax, jax.numpy as jnp, gradtx
        >>> f = lambda x: jnp.sum((x - jnp.array([1.0, -2.0])) ** 2)
        >>> opt, x = gradtx.lbfgs(), jnp.zeros(2)
        >>> state = opt.init(x)
        >>> for _ in range(2):
        ...     v, g = jax.value_and_grad(f)(x)
        ...     u, state = opt.update(g, state, x, value=v, grad=g, value_fn=f)
        ...     x = gradtx.apply_updates(x, u)
        >>> [round(float(e), 4) for e in x]
        [1.0, -2.0]

    Reference: Liu & Nocedal, "On the limited memory BFGS method for large scale
    optimization", Mathematical Programming, 1989.
    """
    if isinstance(linesearch, str) and linesearch == _ZOOM:
        linesearch = scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one")
    return chain(
        scale_by_lbfgs(memory_size=memory_size, scale_init_precond=scale_init_precond),
        scale(-1.0) if learning_rate is None else scale_by_learning_rate(learning_rate),
        identity() if linesearch is None else linesearch,
    )
