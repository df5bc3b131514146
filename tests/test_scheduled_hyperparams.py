"""Schedules in every hyperparameter slot (issue 3): Adam's learning rate and betas, SGD's
(Nesterov) momentum, AdamW's weight decay and RMSProp's decay, each against a float64 NumPy
reference written from the update formula and the schedules' closed forms (100 steps, rtol
1e-10 under x64), stepped by one jitted function that takes the optimizer as an argument.

Convention (every gradtx transform): a scheduled hyperparameter is evaluated at the
transform's step count before it is incremented, so step ``t = 1, 2, ...`` uses ``s(t − 1)``.
Adam's bias correction at step ``t`` uses the current scheduled value: ``1 − β(t − 1)^t``.
The references never call gradtx.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from _stepping import assert_trees_close, flat, run_numpy
from conftest import count_compilations, random_problem

import gradtx

STEPS = 100


# ----------------------------------------------------------------------------------------------
# Closed forms of the schedules used (k = the count the schedule is called with, from 0).


def np_linear(k, init_value, end_value, transition_steps, transition_begin=0):
    """α_k = a + (b − a) · clip(k − k0, 0, T) / T."""
    frac = min(max(k - transition_begin, 0), transition_steps) / transition_steps
    return init_value + (end_value - init_value) * frac


def np_cosine(k, init_value, decay_steps, alpha=0.0, exponent=1.0):
    """α_k = α_0 ((1 − a) c_k^e + a), c_k = ½ (1 + cos(π min(k, T) / T))."""
    c = 0.5 * (1 + np.cos(np.pi * min(k, decay_steps) / decay_steps))
    return init_value * ((1 - alpha) * c**exponent + alpha)


# ----------------------------------------------------------------------------------------------
# Stepping: one jitted step with the optimizer as an argument.


@jax.jit
def _step(opt, params, state, grads):
    updates, state = opt.update(grads, state, params)
    return gradtx.apply_updates(params, updates), state


def _run(opt, params0, grad, steps):
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), params0)
    state = opt.init(params)
    for t in range(steps):
        g = grad(jax.tree_util.tree_map(np.asarray, params), t)
        params, state = _step(opt, params, state, g)
    return params


def _check(opt, init_fn, step_fn, other_opt, seed=0):
    """The gradtx trajectory equals the NumPy one, the run moved, and a second optimizer with
    other schedule values reuses the compiled step (schedule parameters are leaves)."""
    params, grad = random_problem(seed)
    ours = _run(opt, params, grad, STEPS)
    ref = run_numpy(init_fn, step_fn, params, grad, STEPS)
    assert_trees_close(ours, ref, rtol=1e-10)
    moved = max(np.max(np.abs(a - b)) for a, b in zip(flat(ref), flat(params), strict=True))
    assert moved > 1e-2
    _run(opt, params, grad, 1)  # the shapes of a fresh state are compiled
    with count_compilations() as c:
        out = _run(other_opt, params, grad, 2)
    assert c["n"] == 0
    assert not np.allclose(flat(out)[0], flat(_run(opt, params, grad, 2))[0])


def _zeros(xs):
    return [np.zeros_like(x) for x in xs]


# ----------------------------------------------------------------------------------------------
# Adam with scheduled learning rate, b1 and b2.

ADAM_LR = dict(init_value=0.05, decay_steps=80, alpha=0.1)
ADAM_B1 = dict(init_value=0.5, end_value=0.9, transition_steps=40, transition_begin=10)
ADAM_B2 = dict(init_value=0.999, decay_steps=60, alpha=0.95, exponent=2.0)


def _adam_ref(eps=1e-8):
    """Kingma & Ba 2015, Algorithm 1 with β1, β2, α scheduled: at step t (k = t − 1)
    m ← β1(k) m + (1 − β1(k)) g; v ← β2(k) v + (1 − β2(k)) g²;
    m̂ = m / (1 − β1(k)^t); v̂ = v / (1 − β2(k)^t); θ ← θ − α(k) m̂ / (√v̂ + ε)."""

    def init(xs):
        return {"m": _zeros(xs), "v": _zeros(xs)}

    def step(xs, gs, st, k, value):
        t = k + 1
        a, b1, b2 = np_cosine(k, **ADAM_LR), np_linear(k, **ADAM_B1), np_cosine(k, **ADAM_B2)
        out = []
        for i, (x, g) in enumerate(zip(xs, gs, strict=True)):
            st["m"][i] = b1 * st["m"][i] + (1 - b1) * g
            st["v"][i] = b2 * st["v"][i] + (1 - b2) * g * g
            mh = st["m"][i] / (1 - b1**t)
            vh = st["v"][i] / (1 - b2**t)
            out.append(x - a * mh / (np.sqrt(vh) + eps))
        return out, st

    return init, step


def test_adam_scheduled_lr_and_betas(x64):
    opt = gradtx.adam(
        gradtx.cosine_decay_schedule(**ADAM_LR),
        b1=gradtx.linear_schedule(**ADAM_B1),
        b2=gradtx.cosine_decay_schedule(**ADAM_B2),
    )
    other = gradtx.adam(
        gradtx.cosine_decay_schedule(**{**ADAM_LR, "init_value": 0.03}),
        b1=gradtx.linear_schedule(**{**ADAM_B1, "init_value": 0.6}),
        b2=gradtx.cosine_decay_schedule(**{**ADAM_B2, "alpha": 0.9}),
    )
    _check(opt, *_adam_ref(), other)


# ----------------------------------------------------------------------------------------------
# SGD with scheduled (Nesterov) momentum.

SGD_LR = 0.02
MOMENTUM = dict(init_value=0.5, end_value=0.95, transition_steps=60, transition_begin=5)
NESTEROV = dict(init_value=0.9, decay_steps=70, alpha=0.3, exponent=1.5)


def _sgd_momentum_ref(rho, nesterov):
    """Heavy ball in trace form (Sutskever et al. 2013), ρ scheduled: at step t (k = t − 1)
    m ← g + ρ(k) m; θ ← θ − α m, or θ ← θ − α (g + ρ(k) m) with Nesterov."""

    def step(xs, gs, ms, k, value):
        r = rho(k)
        ms = [g + r * m for g, m in zip(gs, ms, strict=True)]
        d = [g + r * m for g, m in zip(gs, ms, strict=True)] if nesterov else ms
        return [x - SGD_LR * u for x, u in zip(xs, d, strict=True)], ms

    return _zeros, step


def test_sgd_scheduled_momentum(x64):
    opt = gradtx.sgd(SGD_LR, momentum=gradtx.linear_schedule(**MOMENTUM))
    other = gradtx.sgd(SGD_LR, momentum=gradtx.linear_schedule(**{**MOMENTUM, "init_value": 0.3}))
    _check(opt, *_sgd_momentum_ref(lambda k: np_linear(k, **MOMENTUM), False), other)


def test_sgd_scheduled_nesterov_momentum(x64):
    opt = gradtx.sgd(SGD_LR, momentum=gradtx.cosine_decay_schedule(**NESTEROV), nesterov=True)
    other = gradtx.sgd(
        SGD_LR,
        momentum=gradtx.cosine_decay_schedule(**{**NESTEROV, "alpha": 0.5}),
        nesterov=True,
    )
    _check(opt, *_sgd_momentum_ref(lambda k: np_cosine(k, **NESTEROV), True), other)


# ----------------------------------------------------------------------------------------------
# AdamW with scheduled weight decay.

ADAMW_LR = 0.02
WEIGHT_DECAY = dict(init_value=0.5, decay_steps=60, alpha=0.2)


def _adamw_ref(b1=0.9, b2=0.999, eps=1e-8):
    """Loshchilov & Hutter 2019, Algorithm 2 with its multiplier η_t = α (the learning rate)
    and its step size 1, λ scheduled: at step t (k = t − 1) Adam's m̂, v̂;
    θ ← θ − α (m̂ / (√v̂ + ε) + λ(k) θ)."""

    def init(xs):
        return {"m": _zeros(xs), "v": _zeros(xs)}

    def step(xs, gs, st, k, value):
        t, lam = k + 1, np_cosine(k, **WEIGHT_DECAY)
        out = []
        for i, (x, g) in enumerate(zip(xs, gs, strict=True)):
            st["m"][i] = b1 * st["m"][i] + (1 - b1) * g
            st["v"][i] = b2 * st["v"][i] + (1 - b2) * g * g
            mh = st["m"][i] / (1 - b1**t)
            vh = st["v"][i] / (1 - b2**t)
            out.append(x - ADAMW_LR * (mh / (np.sqrt(vh) + eps) + lam * x))
        return out, st

    return init, step


def test_adamw_scheduled_weight_decay(x64):
    opt = gradtx.adamw(ADAMW_LR, weight_decay=gradtx.cosine_decay_schedule(**WEIGHT_DECAY))
    other = gradtx.adamw(
        ADAMW_LR, weight_decay=gradtx.cosine_decay_schedule(**{**WEIGHT_DECAY, "init_value": 1.0})
    )
    _check(opt, *_adamw_ref(), other)


# ----------------------------------------------------------------------------------------------
# RMSProp with a scheduled decay.

RMS_LR = 0.01
RMS_DECAY = dict(init_value=0.5, end_value=0.99, transition_steps=50)


def _rmsprop_ref(eps=1e-8):
    """Tieleman & Hinton 2012 (ε inside the root), β scheduled: at step t (k = t − 1)
    G ← β(k) G + (1 − β(k)) g²; θ ← θ − α g / √(G + ε)."""

    def step(xs, gs, nus, k, value):
        b = np_linear(k, **RMS_DECAY)
        nus = [b * v + (1 - b) * g * g for v, g in zip(nus, gs, strict=True)]
        out = [x - RMS_LR * g / np.sqrt(v + eps) for x, g, v in zip(xs, gs, nus, strict=True)]
        return out, nus

    return _zeros, step


def test_rmsprop_scheduled_decay(x64):
    opt = gradtx.rmsprop(RMS_LR, decay=gradtx.linear_schedule(**RMS_DECAY))
    other = gradtx.rmsprop(RMS_LR, decay=gradtx.linear_schedule(**{**RMS_DECAY, "init_value": 0.7}))
    _check(opt, *_rmsprop_ref(), other)
