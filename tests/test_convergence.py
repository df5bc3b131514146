"""Every optimizer in the registry reaches the minimum of a quadratic and of 2-D Rosenbrock.

Each case runs ``case.steps`` steps at ``case.conv_lr`` (or ``case.lr``) in one jitted
``lax.scan`` and must end within ``case.quadratic_tol`` / ``case.rosenbrock_tol`` (Euclidean
distance) of the known minimiser. Both problems are built here in NumPy so the minimisers are
exact: the quadratic ``½ (x − x*)ᵀ A (x − x*)`` has ``A`` with eigenvalues log-spaced in
[1, 10] in a random basis (condition number 10), minimum value 0 at ``x*``; Rosenbrock
``(1 − x)² + 100 (y − x²)²`` (translated, see ``_rosenbrock``) has its minimum 0 at
``(1, 1)`` + shift. A method that needs the loss
(``value=``, e.g. Polyak's step) gets the true loss at the current iterate, and one that takes
the objective (``obj_fn=``, Sophia) gets the loss function.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from registry import CASES as ALL_CASES

import gradtx

CASES = [c for c in ALL_CASES if c.converges]
IDS = [c.name for c in CASES]


def _quadratic():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    a = q @ np.diag(np.logspace(0, 1, 10)) @ q.T
    x_star = rng.normal(size=10)
    x0 = x_star + rng.normal(size=10)  # distance ~3 from the minimiser

    def split(x):  # a two-leaf pytree: a matrix block and a vector block
        return {"w": x[:6].reshape(2, 3), "b": x[6:]}

    def join(p):
        return jnp.concatenate([p["w"].reshape(-1), p["b"]])

    a_j, xs_j = jnp.asarray(a, jnp.float32), jnp.asarray(x_star, jnp.float32)

    def loss(p):
        d = join(p) - xs_j
        return 0.5 * d @ (a_j @ d)

    params0 = split(jnp.asarray(x0, jnp.float32))
    return loss, params0, lambda p: join(p), x_star


def _rosenbrock():
    # Rosenbrock from the classic start (-1.2, 1), translated by (2, 2): translation changes
    # nothing for SGD, Adam or sign methods, but keeps the curved valley away from the origin,
    # where the step of scale-invariant methods (LAMB, LARS, Fromage: ‖Δθ‖ ∝ ‖θ‖) vanishes.
    shift = 2.0

    def loss(p):
        x, y = p["xy"][0] - shift, p["xy"][1] - shift
        return (1 - x) ** 2 + 100 * (y - x**2) ** 2

    params0 = {"xy": jnp.asarray([-1.2 + shift, 1.0 + shift], jnp.float32)}
    return loss, params0, lambda p: p["xy"], np.array([1.0 + shift, 1.0 + shift])


PROBLEMS = {"quadratic": _quadratic, "rosenbrock": _rosenbrock}


def minimise(case, loss, params0, steps: int, lr: float):
    """Run ``case`` for ``steps`` steps in a jitted ``lax.scan``; return the final params."""
    opt = case.make(lr)

    def body(carry, _):
        params, state = carry
        value, grads = jax.value_and_grad(loss)(params)
        extra = case.extra_args(params, grads) if case.extra_args else {}
        if "value" in extra:
            extra["value"] = value  # the true objective, not the registry's stand-in
        if "obj_fn" in extra:
            extra["obj_fn"] = loss  # Sophia's Hessian estimate sees the true objective
        updates, state = opt.update(grads, state, params, **extra)
        return (gradtx.apply_updates(params, updates), state), None

    @jax.jit
    def run(params):
        (params, _), _ = jax.lax.scan(body, (params, opt.init(params)), None, length=steps)
        return params

    return run(params0)


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_reaches_minimum(case, problem):
    loss, params0, vec, x_star = PROBLEMS[problem]()
    lr = case.lr if case.conv_lr is None else case.conv_lr
    final = minimise(case, loss, params0, case.steps, lr)
    x = np.asarray(vec(final), np.float64)
    tol = case.quadratic_tol if problem == "quadratic" else case.rosenbrock_tol
    dist = float(np.linalg.norm(x - x_star))
    start = float(np.linalg.norm(np.asarray(vec(params0), np.float64) - x_star))
    assert np.all(np.isfinite(x)), f"{case.name} diverged on {problem}"
    assert tol < 0.5 * start  # the tolerance must be tighter than where the run started
    assert dist <= tol, f"{case.name} on {problem}: distance {dist:.3g} > tolerance {tol:.3g}"
