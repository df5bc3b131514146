"""Every formula in ALGORITHMS.md section 1, in every listed variant, against float64 NumPy.

Each reference below is written from the formula in `reference/ALGORITHMS.md` (the sources'
form, acting on the flattened parameter vector), never by calling gradtx. Each runs 200 steps
on the random pytree problem of ``conftest.random_problem`` and must match the gradtx optimizer
to rtol 1e-10 under ``jax_enable_x64``.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from conftest import random_problem

import gradtx

STEPS = 200
LR = 0.01


def _flat(tree):
    return np.concatenate(
        [np.ravel(np.asarray(x, np.float64)) for x in jax.tree_util.tree_leaves(tree)]
    )


def _unflat(vec, like):
    leaves, treedef = jax.tree_util.tree_flatten(like)
    out, i = [], 0
    for x in leaves:
        n = np.size(x)
        out.append(vec[i : i + n].reshape(np.shape(x)))
        i += n
    return jax.tree_util.tree_unflatten(treedef, out)


def run_gradtx(opt, params, grad, steps=STEPS):
    """Iterates of a gradtx optimizer (jitted update, NumPy gradient oracle), flattened."""
    p = jax.tree_util.tree_map(np.asarray, params)
    state = opt.init(p)
    step = jax.jit(lambda u, s, p: opt.update(u, s, p))
    out = []
    for t in range(steps):
        g = grad(jax.tree_util.tree_map(np.asarray, p), t)
        u, state = step(g, state, p)
        p = gradtx.apply_updates(p, u)
        out.append(_flat(p))
    return np.stack(out)


def run_numpy(step, params, grad, steps=STEPS):
    """Iterates of a NumPy reference ``step(theta, g, t, mem) -> theta`` (t from 1), flattened."""
    theta = _flat(params)
    mem = {}
    out = []
    for t in range(1, steps + 1):
        g = _flat(grad(_unflat(theta, params), t - 1))
        theta = step(theta, g, t, mem)
        out.append(theta.copy())
    return np.stack(out)


def assert_trajectories(ref, got):
    assert np.all(np.isfinite(ref))
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# NumPy references, written from ALGORITHMS.md section 1.


def np_sgd(lr):
    def step(theta, g, t, mem):
        return theta - lr * g

    return step


def np_momentum_notes(lr, rho):
    """v <- rho v - lr g ; theta <- theta + v."""

    def step(theta, g, t, mem):
        v = mem.get("v", np.zeros_like(theta))
        v = rho * v - lr * g
        mem["v"] = v
        return theta + v

    return step


def np_momentum_trace(lr, rho):
    """m <- g + rho m ; theta <- theta - lr m."""

    def step(theta, g, t, mem):
        m = g + rho * mem.get("m", np.zeros_like(theta))
        mem["m"] = m
        return theta - lr * m

    return step


def np_nesterov_notes(lr, rho):
    """v_prev <- v ; v <- rho v - lr g ; theta <- theta - rho v_prev + (1 + rho) v."""

    def step(theta, g, t, mem):
        v_prev = mem.get("v", np.zeros_like(theta))
        v = rho * v_prev - lr * g
        mem["v"] = v
        return theta - rho * v_prev + (1 + rho) * v

    return step


def np_nesterov_trace(lr, rho):
    """m <- g + rho m ; theta <- theta - lr (g + rho m)."""

    def step(theta, g, t, mem):
        m = g + rho * mem.get("m", np.zeros_like(theta))
        mem["m"] = m
        return theta - lr * (g + rho * m)

    return step


def np_adagrad(lr, eps, g0, eps_inside):
    """G <- G + g*g ; theta <- theta - lr g / (sqrt(G) + eps)  or  / sqrt(G + eps)."""

    def step(theta, g, t, mem):
        G = mem.get("G", np.full_like(theta, g0)) + g * g
        mem["G"] = G
        den = np.sqrt(G + eps) if eps_inside else np.sqrt(G) + eps
        return theta - lr * g / den

    return step


def np_rmsprop(lr, beta, eps, eps_inside, centered=False):
    """G <- beta G + (1 - beta) g*g ; theta <- theta - lr g / (sqrt(G) + eps) (or inside);
    centered: divide by sqrt(G - m^2) with m the EMA of g."""

    def step(theta, g, t, mem):
        G = beta * mem.get("G", np.zeros_like(theta)) + (1 - beta) * g * g
        m = beta * mem.get("m", np.zeros_like(theta)) + (1 - beta) * g
        mem["G"], mem["m"] = G, m
        var = G - m * m if centered else G
        den = np.sqrt(var + eps) if eps_inside else np.sqrt(var) + eps
        return theta - lr * g / den

    return step


def np_adadelta(lr, beta, eps):
    """G <- beta G + (1-beta) g*g ; d <- -(sqrt(X + eps)/sqrt(G + eps)) g ;
    X <- beta X + (1-beta) d*d ; theta <- theta + lr d  (lr = 1 is Zeiler's original)."""

    def step(theta, g, t, mem):
        G = beta * mem.get("G", np.zeros_like(theta)) + (1 - beta) * g * g
        X = mem.get("X", np.zeros_like(theta))
        d = -(np.sqrt(X + eps) / np.sqrt(G + eps)) * g
        mem["X"] = beta * X + (1 - beta) * d * d
        mem["G"] = G
        return theta + lr * d

    return step


def np_adam(lr, b1, b2, eps, eps_root=0.0, wd=0.0, nadam=False, l2=0.0):
    """m <- b1 m + (1-b1) g ; v <- b2 v + (1-b2) g*g ; mh = m/(1-b1^t) ; vh = v/(1-b2^t) ;
    theta <- theta - lr mh / (sqrt(vh + eps_root) + eps)  [- lr wd theta  (AdamW)].
    nadam: mh <- b1 m/(1 - b1^(t+1)) + (1-b1) g/(1 - b1^t).  l2: g <- g + l2 theta first."""

    def step(theta, g, t, mem):
        g = g + l2 * theta
        m = b1 * mem.get("m", np.zeros_like(theta)) + (1 - b1) * g
        v = b2 * mem.get("v", np.zeros_like(theta)) + (1 - b2) * g * g
        mem["m"], mem["v"] = m, v
        if nadam:
            mh = b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)
        else:
            mh = m / (1 - b1**t)
        vh = v / (1 - b2**t)
        return theta - lr * mh / (np.sqrt(vh + eps_root) + eps) - lr * wd * theta

    return step


def np_adamax(lr, b1, b2, eps, wd=0.0):
    """AdaMax in gradtx's (and optax's) form: Kingma & Ba's Algorithm 2 with eps inside the
    max, m <- b1 m + (1-b1) g ; u <- max(b2 u, |g| + eps) ; theta <- theta - lr m / ((1 - b1^t) u)
    [- lr wd theta]. The paper's box has no eps (u can be 0 there);
    test_formula_holes.py::test_adamax_puts_eps_inside_the_max tells the forms apart."""

    def step(theta, g, t, mem):
        m = b1 * mem.get("m", np.zeros_like(theta)) + (1 - b1) * g
        u = np.maximum(b2 * mem.get("u", np.zeros_like(theta)), np.abs(g) + eps)
        mem["m"], mem["u"] = m, u
        return theta - lr * (m / (1 - b1**t)) / u - lr * wd * theta

    return step


def np_amsgrad(lr, b1, b2, eps):
    """Adam with vmax <- max(vmax, vh) in the denominator (Reddi et al. 2018)."""

    def step(theta, g, t, mem):
        m = b1 * mem.get("m", np.zeros_like(theta)) + (1 - b1) * g
        v = b2 * mem.get("v", np.zeros_like(theta)) + (1 - b2) * g * g
        vmax = np.maximum(mem.get("vmax", np.zeros_like(theta)), v / (1 - b2**t))
        mem["m"], mem["v"], mem["vmax"] = m, v, vmax
        return theta - lr * (m / (1 - b1**t)) / (np.sqrt(vmax) + eps)

    return step


def np_clip_value_sgd(lr, c):
    """g <- clip(g, -c, c) ; theta <- theta - lr g."""

    def step(theta, g, t, mem):
        return theta - lr * np.clip(g, -c, c)

    return step


def np_clip_norm_sgd(lr, c):
    """g <- g min(1, c / ||g||) with the global norm over all parameters."""

    def step(theta, g, t, mem):
        return theta - lr * g * min(1.0, c / np.linalg.norm(g))

    return step


# ---------------------------------------------------------------------------------------------
# The variants, each a (name, gradtx optimizer, NumPy reference) triple.

VARIANTS = [
    ("sgd", lambda: gradtx.sgd(LR), np_sgd(LR)),
    *[
        (
            f"momentum_notes_rho{rho}",
            lambda rho=rho: gradtx.sgd(LR, momentum=rho),
            np_momentum_notes(LR, rho),
        )
        for rho in (0.9, 0.99)
    ],
    ("momentum_trace", lambda: gradtx.sgd(LR, momentum=0.9), np_momentum_trace(LR, 0.9)),
    *[
        (
            f"nesterov_notes_rho{rho}",
            lambda rho=rho: gradtx.sgd(LR, momentum=rho, nesterov=True),
            np_nesterov_notes(LR, rho),
        )
        for rho in (0.9, 0.99)
    ],
    (
        "nesterov_trace",
        lambda: gradtx.sgd(LR, momentum=0.9, nesterov=True),
        np_nesterov_trace(LR, 0.9),
    ),
    (
        "adagrad_notes_eps_outside_G0_zero",
        lambda: gradtx.adagrad(0.1, initial_accumulator_value=0.0, eps=1e-7, eps_in_sqrt=False),
        np_adagrad(0.1, 1e-7, 0.0, eps_inside=False),
    ),
    (
        "adagrad_chapter_eps_inside",
        lambda: gradtx.adagrad(0.1, initial_accumulator_value=0.0, eps=1e-7),
        np_adagrad(0.1, 1e-7, 0.0, eps_inside=True),
    ),
    (
        "adagrad_library_G0",
        lambda: gradtx.adagrad(0.1),
        np_adagrad(0.1, 1e-7, 0.1, eps_inside=True),
    ),
    *[
        (
            f"rmsprop_beta{beta}_eps_{'inside' if inside else 'outside'}",
            lambda beta=beta, inside=inside: gradtx.rmsprop(
                LR, decay=beta, eps=1e-8, eps_in_sqrt=inside
            ),
            np_rmsprop(LR, beta, 1e-8, inside),
        )
        for beta in (0.9, 0.99)
        for inside in (True, False)
    ],
    *[
        (
            f"rmsprop_centered_eps_{'inside' if inside else 'outside'}",
            lambda inside=inside: gradtx.rmsprop(
                LR, decay=0.9, eps=1e-6, eps_in_sqrt=inside, centered=True
            ),
            np_rmsprop(LR, 0.9, 1e-6, inside, centered=True),
        )
        for inside in (True, False)
    ],
    ("adadelta_zeiler_no_lr", lambda: gradtx.adadelta(), np_adadelta(1.0, 0.9, 1e-6)),
    (
        "adadelta_with_lr",
        lambda: gradtx.adadelta(0.5, rho=0.95, eps=1e-5),
        np_adadelta(0.5, 0.95, 1e-5),
    ),
    *[
        (f"adam_lr{lr}", lambda lr=lr: gradtx.adam(lr), np_adam(lr, 0.9, 0.999, 1e-8))
        for lr in (1e-3, 5e-4, 1e-4)
    ],
    (
        "adam_eps_root",
        lambda: gradtx.adam(1e-3, eps=1e-8, eps_root=1e-10),
        np_adam(1e-3, 0.9, 0.999, 1e-8, eps_root=1e-10),
    ),
    (
        "adamw",
        lambda: gradtx.adamw(1e-3, weight_decay=0.1),
        np_adam(1e-3, 0.9, 0.999, 1e-8, wd=0.1),
    ),
    (
        "adam_l2_regularisation_is_not_adamw",
        lambda: gradtx.chain(gradtx.add_decayed_weights(0.1), gradtx.adam(1e-3)),
        np_adam(1e-3, 0.9, 0.999, 1e-8, l2=0.1),
    ),
    ("nadam", lambda: gradtx.nadam(1e-3), np_adam(1e-3, 0.9, 0.999, 1e-8, nadam=True)),
    (
        "nadamw",
        lambda: gradtx.nadamw(1e-3, weight_decay=0.05),
        np_adam(1e-3, 0.9, 0.999, 1e-8, wd=0.05, nadam=True),
    ),
    ("adamax", lambda: gradtx.adamax(2e-3), np_adamax(2e-3, 0.9, 0.999, 1e-8)),
    (
        "adamaxw",
        lambda: gradtx.adamaxw(2e-3, weight_decay=0.1),
        np_adamax(2e-3, 0.9, 0.999, 1e-8, wd=0.1),
    ),
    ("amsgrad", lambda: gradtx.amsgrad(1e-3), np_amsgrad(1e-3, 0.9, 0.999, 1e-8)),
    (
        "clip_by_value",
        lambda: gradtx.chain(gradtx.clip(0.5), gradtx.sgd(LR)),
        np_clip_value_sgd(LR, 0.5),
    ),
    (
        "clip_by_global_norm",
        lambda: gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.sgd(LR)),
        np_clip_norm_sgd(LR, 1.0),
    ),
]


@pytest.mark.parametrize("name,make,ref", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_formula(x64, name, make, ref):
    params, grad = random_problem(seed=1)
    expected = run_numpy(ref, params, grad)
    got = run_gradtx(make(), params, grad)
    assert_trajectories(expected, got)


def test_adamw_differs_from_l2(x64):
    """The decoupled decay of AdamW and L2 regularisation inside Adam give different iterates."""
    params, grad = random_problem(seed=2)
    a = run_numpy(np_adam(1e-3, 0.9, 0.999, 1e-8, wd=0.1), params, grad, steps=50)
    b = run_numpy(np_adam(1e-3, 0.9, 0.999, 1e-8, l2=0.1), params, grad, steps=50)
    assert np.max(np.abs(a - b)) > 1e-4
