"""Schedule-Free (Defazio et al., arXiv 2405.15682) against the paper and optax.contrib.

- float64 NumPy references written from the paper (Schedule-Free SGD, eqs. (1)–(3) with the
  weighted average of Algorithm 1; Schedule-Free AdamW, Algorithm 1) match gradtx for 100 steps
  at rtol 1e-8 under x64, both the training point ``y`` and the average ``x``, with warmup and
  weight decay;
- the documented differences: ``schedule_free_adamw`` follows optax (bias correction on ``v``,
  weights from the running maximum of the learning rate, a warmup one step behind); a float64
  reference of that form pins it, the paper's numbers come from the documented arguments of
  ``schedule_free``, and the two differ;
- float32 runs match optax.contrib for 100 steps (params and evaluation params);
- eval params inside a chain, ``b1 = 1``, state scalars in float32 for 16-bit params (optax's
  bfloat16 ``weight_sum`` stops at 256), abstract init, errors in the user's words.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _stepping import assert_trees_close, flat
from conftest import F32_ORACLE_ATOL, F32_ORACLE_RTOL, random_problem

import gradtx
from gradtx.transforms.schedule_free import (
    ScheduleFreeState,
    schedule_free,
    schedule_free_adamw,
    schedule_free_eval_params,
    schedule_free_sgd,
)

STEPS = 100


def _run(opt, params0, grad, steps, dtype, *, lib="gradtx"):
    """``steps`` jitted steps (gradient at the current params); returns (params, eval params)."""
    apply = gradtx.apply_updates if lib == "gradtx" else optax.apply_updates
    evaluate = (
        schedule_free_eval_params if lib == "gradtx" else optax.contrib.schedule_free_eval_params
    )
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), params0)
    state = opt.init(params)

    @jax.jit
    def step(params, state, g):
        u, state = opt.update(g, state, params)
        return apply(params, u), state

    for t in range(steps):
        g = grad(jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), params), t)
        params, state = step(
            params, state, jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), g)
        )
    return params, evaluate(state, params)


def _run_numpy(step_fn, params0, grad, steps):
    """A float64 reference on the list of leaves: ``step_fn(ys, gs, mem) -> ys``; returns
    (y, x) as trees."""
    leaves, treedef = jax.tree_util.tree_flatten(params0)
    ys = [np.array(v, np.float64) for v in leaves]
    mem = {"z": [y.copy() for y in ys], "x": [y.copy() for y in ys], "t": 0, "wsum": 0.0}
    for t in range(steps):
        gs = treedef.flatten_up_to(grad(jax.tree_util.tree_unflatten(treedef, ys), t))
        ys = step_fn(ys, [np.asarray(g, np.float64) for g in gs], mem)
    return jax.tree_util.tree_unflatten(treedef, ys), jax.tree_util.tree_unflatten(
        treedef, mem["x"]
    )


def _average_and_interpolate(mem, c, b1):
    """Algorithm 1, line 11 (x_{t+1} = (1 − c) x_t + c z_{t+1}) and line 5 for the next step
    (y = (1 − β1) z + β1 x)."""
    mem["x"] = [(1 - c) * x + c * z for x, z in zip(mem["x"], mem["z"], strict=True)]
    return [(1 - b1) * z + b1 * x for z, x in zip(mem["z"], mem["x"], strict=True)]


# ----------------------------------------------------------------------------------------------
# The paper.


def _sgd_paper(gamma, b1, wd, warmup):
    """Schedule-Free SGD, eqs. (1)–(3): z_{t+1} = z_t − γ_t ∇f(y_t) (with the decoupled decay
    −γ_t λ y_t of Algorithm 1, line 9), x averaged with c_{t+1} = γ_t² / Σ_{i≤t} γ_i²
    (Algorithm 1, line 10) and the warmup γ_t = γ min(1, t / T_warmup) (line 8, without Adam's
    bias correction)."""

    def step(ys, gs, mem):
        mem["t"] += 1
        t = mem["t"]
        g_t = gamma * (min(1.0, t / warmup) if warmup else 1.0)
        mem["z"] = [z - g_t * (g + wd * y) for z, g, y in zip(mem["z"], gs, ys, strict=True)]
        mem["wsum"] += g_t**2
        return _average_and_interpolate(mem, g_t**2 / mem["wsum"], b1)

    return step


def _adamw_paper(gamma, b1, b2, eps, wd, warmup):
    """Schedule-Free AdamW, Algorithm 1 (lines 7–11)."""

    def step(ys, gs, mem):
        mem["t"] += 1
        t = mem["t"]
        mem.setdefault("v", [np.zeros_like(y) for y in ys])
        mem["v"] = [b2 * v + (1 - b2) * g * g for v, g in zip(mem["v"], gs, strict=True)]  # 7
        g_t = gamma * np.sqrt(1 - b2**t) * min(1.0, t / warmup)  # line 8
        mem["z"] = [  # line 9
            z - g_t * g / (np.sqrt(v) + eps) - g_t * wd * y
            for z, g, v, y in zip(mem["z"], gs, mem["v"], ys, strict=True)
        ]
        mem["wsum"] += g_t**2
        return _average_and_interpolate(mem, g_t**2 / mem["wsum"], b1)  # lines 10, 11

    return step


def _paper_lr(gamma, warmup, b2=None):
    """γ_t as a function of t (jnp), for the paper's numbers through ``schedule_free``."""

    def lr(t):
        t = jnp.asarray(t, jnp.float64)
        bc = 1.0 if b2 is None else jnp.sqrt(1 - b2**t)
        return gamma * bc * jnp.minimum(1.0, t / warmup)

    return lr


def _shifted(f):
    return lambda c: f(c + 1)  # the base optimizer counts from 0, the paper's t from 1


@pytest.mark.parametrize("warmup,wd,b1", [(None, 0.0, 0.9), (None, 0.02, 0.7), (30, 0.02, 0.9)])
def test_sgd_matches_the_paper(x64, warmup, wd, b1):
    params, grad = random_problem(0)
    if warmup is None:  # no warmup: schedule_free_sgd is the paper's method as it stands
        opt = schedule_free_sgd(0.05, b1=b1, weight_decay=wd)
    else:  # with warmup: the documented arguments that remove optax's one-step lag
        lr = _paper_lr(0.05, warmup)
        base = gradtx.chain(gradtx.add_decayed_weights(wd), gradtx.sgd(_shifted(lr)))
        opt = schedule_free(base, lr, b1)
    y, x = _run(opt, params, grad, STEPS, jnp.float64)
    y_ref, x_ref = _run_numpy(_sgd_paper(0.05, b1, wd, warmup), params, grad, STEPS)
    assert_trees_close(y, y_ref, rtol=1e-8)
    assert_trees_close(x, x_ref, rtol=1e-8)
    assert _dist(x_ref, params) > 0.3 and _dist(x_ref, y_ref) > 1e-3


def test_adamw_matches_algorithm_1_through_schedule_free(x64):
    # the paper's Schedule-Free AdamW: γ_t = γ √(1 − β2^t) min(1, t/T) for the step, the decay
    # and the weights; v not bias-corrected
    gamma, b1, b2, eps, wd, warmup = 0.05, 0.9, 0.99, 1e-3, 0.02, 30
    params, grad = random_problem(0)
    lr = _paper_lr(gamma, warmup, b2)
    base = gradtx.chain(
        gradtx.scale_by_rms(b2, eps, eps_in_sqrt=False),
        gradtx.add_decayed_weights(wd),
        gradtx.scale_by_learning_rate(_shifted(lr)),
    )
    y, x = _run(schedule_free(base, lr, b1), params, grad, STEPS, jnp.float64)
    ref = _run_numpy(_adamw_paper(gamma, b1, b2, eps, wd, warmup), params, grad, STEPS)
    assert_trees_close(y, ref[0], rtol=1e-8)
    assert_trees_close(x, ref[1], rtol=1e-8)
    assert _dist(ref[1], params) > 0.3


def _adamw_optax_form(gamma, b1, b2, eps, wd, warmup):
    """schedule_free_adamw as documented (optax's form): v̂ = v / (1 − β2^t); the z step uses the
    base's learning rate at t − 1; the weights are (max_{i≤t} γ_i)² with γ_t = γ min(1, t/T)."""

    def step(ys, gs, mem):
        mem["t"] += 1
        t = mem["t"]
        mem.setdefault("v", [np.zeros_like(y) for y in ys])
        mem.setdefault("max_lr", 0.0)
        mem["v"] = [b2 * v + (1 - b2) * g * g for v, g in zip(mem["v"], gs, strict=True)]
        lr_base = gamma * min(1.0, (t - 1) / warmup)
        mem["z"] = [
            z - lr_base * (g / (np.sqrt(v / (1 - b2**t)) + eps) + wd * y)
            for z, g, v, y in zip(mem["z"], gs, mem["v"], ys, strict=True)
        ]
        mem["max_lr"] = max(mem["max_lr"], gamma * min(1.0, t / warmup))
        mem["wsum"] += mem["max_lr"] ** 2
        return _average_and_interpolate(mem, mem["max_lr"] ** 2 / mem["wsum"], b1)

    return step


def test_adamw_default_is_optax_s_form_and_differs_from_the_paper(x64):
    gamma, b1, b2, eps, wd, warmup = 0.05, 0.9, 0.99, 1e-3, 0.02, 30
    params, grad = random_problem(0)
    opt = schedule_free_adamw(gamma, warmup, b1, b2, eps, wd)
    y, x = _run(opt, params, grad, STEPS, jnp.float64)
    y_ref, x_ref = _run_numpy(_adamw_optax_form(gamma, b1, b2, eps, wd, warmup), params, grad,
                              STEPS)  # fmt: skip
    assert_trees_close(y, y_ref, rtol=1e-8)
    assert_trees_close(x, x_ref, rtol=1e-8)
    _, x_paper = _run_numpy(_adamw_paper(gamma, b1, b2, eps, wd, warmup), params, grad, STEPS)
    assert _dist(x, x_paper) > 1e-2  # the documented difference is real


def test_weights_follow_the_running_maximum_of_a_decreasing_learning_rate(x64):
    # γ_t = 0.1 · 0.97^t decreases: the weights stay at (max γ)² = γ_1², so c_{t+1} = 1/t (the
    # paper's γ_t² would weigh late iterates less); the z step uses the base's γ at t − 1
    params, grad = random_problem(3)

    def step(ys, gs, mem):
        mem["t"] += 1
        t = mem["t"]
        mem["z"] = [z - 0.1 * 0.97 ** (t - 1) * g for z, g in zip(mem["z"], gs, strict=True)]
        mem["max_lr"] = max(mem.get("max_lr", 0.0), 0.1 * 0.97**t)
        mem["wsum"] += mem["max_lr"] ** 2
        return _average_and_interpolate(mem, mem["max_lr"] ** 2 / mem["wsum"], 0.9)

    sched = gradtx.exponential_decay(0.1, 1, 0.97)
    y, x = _run(schedule_free_sgd(sched), params, grad, STEPS, jnp.float64)
    y_ref, x_ref = _run_numpy(step, params, grad, STEPS)
    assert_trees_close(y, y_ref, rtol=1e-8)
    assert_trees_close(x, x_ref, rtol=1e-8)
    with jax.enable_x64(False):
        y32, x32 = _run(schedule_free_sgd(sched), params, grad, STEPS, jnp.float32)
        o_sched = optax.exponential_decay(0.1, 1, 0.97)
        y_o, x_o = _run(optax.contrib.schedule_free_sgd(o_sched), params, grad, STEPS,
                        jnp.float32, lib="optax")  # fmt: skip
    assert_trees_close(x32, x_o, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)
    assert_trees_close(y32, y_o, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)


def _dist(a, b) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(flat(a), flat(b), strict=True))


# ----------------------------------------------------------------------------------------------
# optax.contrib.


OPTAX = {
    "sgd": lambda o: o.schedule_free_sgd(0.1),
    "sgd_warmup_decay": lambda o: o.schedule_free_sgd(
        0.1, warmup_steps=10, b1=0.8, weight_decay=0.01, weight_lr_power=1.0
    ),
    "adamw": lambda o: o.schedule_free_adamw(0.02),
    "adamw_warmup_decay": lambda o: o.schedule_free_adamw(
        0.02, warmup_steps=15, b1=0.95, b2=0.99, eps=1e-4, weight_decay=0.05
    ),
}


class _GRADTX:
    """Stands in for ``optax.contrib`` with gradtx's functions (the same call builds both)."""

    schedule_free_sgd = staticmethod(schedule_free_sgd)
    schedule_free_adamw = staticmethod(schedule_free_adamw)


@pytest.mark.parametrize("name", sorted(OPTAX))
def test_matches_optax(name):
    params, grad = random_problem(1)
    y, x = _run(OPTAX[name](_GRADTX), params, grad, STEPS, jnp.float32)
    y_o, x_o = _run(OPTAX[name](optax.contrib), params, grad, STEPS, jnp.float32, lib="optax")
    assert_trees_close(y, y_o, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)
    assert_trees_close(x, x_o, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)
    assert _dist(x, params) > 0.1


def test_wrapper_with_a_schedule_and_an_optax_base_matches_optax():
    params, grad = random_problem(2)
    sched = gradtx.warmup_constant_schedule(0.0, 0.05, 12)
    o_sched = optax.warmup_constant_schedule(0.0, 0.05, 12)
    ours = schedule_free(gradtx.adam(sched, b1=0.0), sched, b1=0.9, weight_lr_power=3.0)
    theirs = optax.contrib.schedule_free(optax.adam(o_sched, b1=0.0), o_sched, 0.9, 3.0)
    foreign = schedule_free(optax.sgd(0.05), 0.05)  # an optax transform as the base
    y, x = _run(ours, params, grad, STEPS, jnp.float32)
    y_o, x_o = _run(theirs, params, grad, STEPS, jnp.float32, lib="optax")
    assert_trees_close(y, y_o, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)
    assert_trees_close(x, x_o, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)
    y, x = _run(foreign, params, grad, STEPS, jnp.float32)
    y_o, x_o = _run(optax.contrib.schedule_free_sgd(0.05), params, grad, STEPS, jnp.float32,
                    lib="optax")  # fmt: skip
    assert_trees_close(x, x_o, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)


def test_state_layout_is_optax_s():
    assert ScheduleFreeState._fields == optax.contrib.ScheduleFreeState._fields
    params = {"w": jnp.ones(2)}
    ours = schedule_free_adamw(0.1).init(params)
    theirs = optax.contrib.schedule_free_adamw(0.1).init(params)
    assert int(ours.step_count) == int(theirs.step_count) == 1
    np.testing.assert_array_equal(ours.z["w"], theirs.z["w"])
    assert ours.z["w"] is not params["w"]  # a copy: params and state can both be donated


# ----------------------------------------------------------------------------------------------
# Evaluation parameters, b1 = 1, dtypes, errors.


def test_eval_params_inside_a_chain_and_at_b1_one():
    params = {"w": jnp.array([1.0, -2.0]), "b": None}
    opt = gradtx.chain(gradtx.clip_by_global_norm(10.0), schedule_free_sgd(0.3, b1=0.6))
    state = opt.init(params)
    for t in range(4):
        g = {"w": params["w"] * (1.0 + t), "b": None}
        u, state = opt.update(g, state, params)
        params = gradtx.apply_updates(params, u)
    sf = state[1]
    x = schedule_free_eval_params(state, params)  # found inside the chain's state
    want = (np.asarray(params["w"]) - 0.4 * np.asarray(sf.z["w"])) / 0.6
    np.testing.assert_allclose(np.asarray(x["w"]), want, rtol=1e-6)
    assert x["b"] is None
    # b1 = 1: y is x itself (gradients at the average, Polyak averaging of SGD's iterates)
    opt = schedule_free_sgd(0.3, b1=1.0)
    params = jnp.array([1.0, -2.0])
    state = opt.init(params)
    zs = []
    for _ in range(5):
        u, state = opt.update(params, state, params)
        params = gradtx.apply_updates(params, u)
        zs.append(np.asarray(state.z))
    np.testing.assert_allclose(np.asarray(params), np.mean(zs, axis=0), rtol=1e-6)
    np.testing.assert_array_equal(schedule_free_eval_params(state, params), params)


def test_eval_params_refuses_other_states():
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="schedule_free_eval_params: state must be .* found none"):
        schedule_free_eval_params(gradtx.adam(0.1).init(params), params)
    two = gradtx.chain(schedule_free_sgd(0.1), schedule_free_sgd(0.1)).init(params)
    with pytest.raises(ValueError, match="found 2"):
        schedule_free_eval_params(two, params)


def test_bfloat16_params_keep_float32_scalars():
    # 300 steps at learning rate 1: Σ w = 300 exactly; optax's bfloat16 sum stops at 256
    params = {"w": jnp.zeros(3, jnp.bfloat16)}
    zeros = {"w": jnp.zeros(3, jnp.bfloat16)}

    def run(opt):
        def body(carry, _):
            p, s = carry
            u, s = opt.update(zeros, s, p)
            return (optax.apply_updates(p, u), s), u["w"].dtype == jnp.bfloat16

        return jax.lax.scan(body, (params, opt.init(params)), length=300)[0][1]

    ours = jax.jit(lambda: run(schedule_free_sgd(1.0)))()
    theirs = jax.jit(lambda: run(optax.contrib.schedule_free_sgd(1.0)))()
    assert ours.weight_sum.dtype == ours.max_lr.dtype == ours.b1.dtype == jnp.float32
    assert ours.z["w"].dtype == jnp.bfloat16
    assert float(ours.weight_sum) == 300.0
    assert theirs.weight_sum.dtype == jnp.bfloat16 and float(theirs.weight_sum) == 256.0


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_params_and_state_dtype(dtype):
    params = {"w": jnp.linspace(-1, 1, 6, dtype=dtype).reshape(2, 3), "b": jnp.ones(3, dtype)}
    for opt, z_dtype in (
        (schedule_free_adamw(1e-2, warmup_steps=2), dtype),
        (schedule_free_sgd(0.1, state_dtype=jnp.float32), "float32"),
    ):
        state = opt.init(params)
        want = jax.tree_util.tree_map(lambda v: v.dtype, state)
        p = params
        step = jax.jit(opt.update)
        for t in range(4):
            g = jax.tree_util.tree_map(
                lambda v, t=t: (v - 0.3 * jnp.cos(v * (t + 1))).astype(v.dtype), p
            )
            u, state = step(g, state, p)
            p = gradtx.apply_updates(p, u)
            assert all(v.dtype == jnp.dtype(dtype) for v in jax.tree_util.tree_leaves(u))
            assert jax.tree_util.tree_map(lambda v: v.dtype, state) == want
            assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree_util.tree_leaves(p))
        assert state.z["w"].dtype == jnp.dtype(z_dtype)
        x = schedule_free_eval_params(state, p)
        assert x["w"].dtype == jnp.dtype(dtype)


def test_init_on_shape_dtype_structs():
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3, jnp.bfloat16)}
    abstract = jax.tree_util.tree_map(lambda v: jax.ShapeDtypeStruct(v.shape, v.dtype), params)
    for opt in (
        schedule_free_adamw(1e-2, warmup_steps=5),
        schedule_free_sgd(0.1, state_dtype="float32"),
    ):
        got, want = jax.eval_shape(opt.init, abstract), opt.init(params)
        assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
        for a, b in zip(
            jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True
        ):
            assert (a.shape, a.dtype) == (b.shape, b.dtype)


def test_a_zero_learning_rate_leaves_everything_in_place():
    # w = 0 for every step: c = 0 (not 0/0), x and y stay at the start
    opt = schedule_free_sgd(0.0)
    params = jnp.array([1.0, 2.0])
    state = opt.init(params)
    for _ in range(3):
        u, state = opt.update(params, state, params)
        params = gradtx.apply_updates(params, u)
    np.testing.assert_array_equal(params, [1.0, 2.0])
    assert float(state.weight_sum) == 0.0


@pytest.mark.parametrize(
    "build,error,message",
    [
        (
            lambda: schedule_free_sgd(b1=0.0),
            ValueError,
            r"schedule_free_sgd: b1 must be in \(0, 1\], got 0.0",
        ),
        (
            lambda: schedule_free_adamw(b1=1.5),
            ValueError,
            r"schedule_free_adamw: b1 must be in \(0, 1\]",
        ),
        (
            lambda: schedule_free_adamw(b2=1.0),
            ValueError,
            r"schedule_free_adamw: b2 must be in \[0, 1\), got 1.0",
        ),
        (
            lambda: schedule_free_adamw(eps=-1.0),
            ValueError,
            r"schedule_free_adamw: eps must be in \[0, inf\]",
        ),
        (
            lambda: schedule_free_adamw(warmup_steps=0),
            ValueError,
            r"schedule_free_adamw: warmup_steps must be in \[1, inf\], got 0",
        ),
        (
            lambda: schedule_free_sgd(warmup_steps=2.5),
            ValueError,
            r"schedule_free_sgd: warmup_steps must be an integer >= 1, got 2.5",
        ),
        (
            lambda: schedule_free_sgd(gradtx.constant_schedule(0.1), warmup_steps=5),
            TypeError,
            r"schedule_free_sgd: learning_rate must be a number when warmup_steps is given",
        ),
        (
            lambda: schedule_free_sgd(weight_decay=-0.1),
            ValueError,
            r"schedule_free_sgd: weight_decay must be in \[0, inf\]",
        ),
        (
            lambda: schedule_free(gradtx.sgd(0.1), -0.1),
            ValueError,
            r"schedule_free: learning_rate must be in \[0, inf\], got -0.1",
        ),
        (
            lambda: schedule_free(gradtx.sgd(0.1), 0.1, weight_lr_power=-1.0),
            ValueError,
            r"schedule_free: weight_lr_power must be in \[0, inf\]",
        ),
        (
            lambda: schedule_free(gradtx.sgd(0.1), 0.1, state_dtype=jnp.int32),
            TypeError,
            r"schedule_free: state_dtype must be a floating or complex dtype",
        ),
        (
            lambda: schedule_free("sgd", 0.1),
            TypeError,
            r"schedule_free: base_optimizer must be a gradient transformation .*, got 'sgd'",
        ),
    ],
)
def test_bad_arguments_are_named(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_update_needs_params():
    opt = schedule_free_sgd(0.1)
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match=r"schedule_free.update: params are required"):
        opt.update(params, opt.init(params))
