"""ACProp (Zhuang et al., arXiv 2110.05454) against the paper's algorithm and optax.contrib.

- a float64 NumPy reference written from the ACProp algorithm (asynchronous, centred: the
  gradient over the bias-corrected centred second moment of the steps before; the authors' code
  for the first step), never calling gradtx, matches for 100 steps at rtol 1e-8 under x64, with
  ``eps``/``eps_root`` large enough to matter, weight decay, a mask and a scheduled step size;
- float32 runs match optax.contrib.acprop for 100 steps with ``center_on_previous=True`` (optax
  centres ``g`` on the momentum before this step) and differ from it without;
- state layout and dtypes, 16-bit params, ``jax.eval_shape`` init, gradients of ±1e30 and
  1e-30 staying finite, jit = eager, a learning rate vmapped over and differentiated through,
  bad arguments named in the user's words;
- the digits MLP reaches 95% test accuracy with ``acprop(1e-3)``.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _digits import demo_accuracy
from _stepping import assert_trees_close, run_library, run_numpy
from _stepping import moved as _moved
from conftest import F32_ORACLE_ATOL, F32_ORACLE_RTOL, random_problem

import gradtx
from gradtx.transforms.adam_relatives_2021 import acprop, scale_by_acprop
from gradtx.transforms.adam_variants import ScaleByBeliefState

STEPS = 100


# ----------------------------------------------------------------------------------------------
# The ACProp algorithm of arXiv 2110.05454 (AdaBelief's centred second moment, used one step
# late), with the bias correction and first step of the authors' code.


def _acprop_ref(lr, b1, b2, eps, eps_root, wd, mask=None, previous=False):
    """``lr(t)`` is the step size at step t = 1, 2, ...; ``mask[i]`` whether leaf i decays."""

    def init(xs):
        # initialise m_0 = 0, s_0 = 0, t = 0
        return {"t": 0, "m": [np.zeros_like(x) for x in xs], "s": [np.zeros_like(x) for x in xs]}

    def step(xs, gs, st, _, value):
        st["t"] += 1  # t ← t + 1
        t = st["t"]
        out = []
        for i, (x, g) in enumerate(zip(xs, gs, strict=True)):
            m_new = b1 * st["m"][i] + (1 - b1) * g  # m_t = β1 m_{t−1} + (1 − β1) g_t
            if t == 1:
                d = g / (1 + eps)  # no s_0 to divide by: a gradient step (the authors' code)
            else:
                # the asynchronous update: g_t over √(s_{t−1}), bias-corrected with t − 1
                d = g / (np.sqrt(st["s"][i] / (1 - b2 ** (t - 1))) + eps)
            decay = wd if mask is None or mask[i] else 0.0
            out.append(x - lr(t) * (d + decay * x))
            centre = st["m"][i] if previous else m_new  # optax centres on m_{t−1}
            # s_t = β2 s_{t−1} + (1 − β2)(g_t − m_t)² + ε
            st["s"][i] = b2 * st["s"][i] + (1 - b2) * (g - centre) ** 2 + eps_root
            st["m"][i] = m_new
        return out, st

    return init, step


def _schedule(count):
    # α = 0.02 / (1 + k/20) at the k-th update (k = 0, 1, ...), in float64
    return 0.02 / (1 + jnp.asarray(count, jnp.float64) / 20)


# leaves of random_problem in tree order: dense/b, dense/w, scale
MASK = {"dense": {"w": True, "b": False}, "scale": True}
MASK_LEAVES = [False, True, True]

PAPER = {
    "defaults": dict(lr=1e-2, b1=0.9, b2=0.999, eps=1e-16, eps_root=1e-16, wd=0.0),
    "big_eps_decay_mask": dict(
        lr=3e-2, b1=0.5, b2=0.9, eps=1e-2, eps_root=1e-3, wd=0.1, mask=True
    ),  # fmt: skip
    "scheduled": dict(lr="schedule", b1=0.8, b2=0.99, eps=1e-8, eps_root=1e-4, wd=0.01),
    "center_on_previous": dict(
        lr=1e-2, b1=0.7, b2=0.95, eps=1e-3, eps_root=1e-3, wd=0.0, previous=True
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_acprop_matches_the_paper_algorithm(x64, name):
    kw = dict(PAPER[name])
    lr, mask, previous = kw.pop("lr"), kw.pop("mask", False), kw.pop("previous", False)
    params, grad = random_problem(0)
    opt = acprop(
        _schedule if lr == "schedule" else lr,
        kw["b1"], kw["b2"], kw["eps"], kw["eps_root"], kw["wd"], MASK if mask else None,
        center_on_previous=previous,
    )  # fmt: skip
    ours = run_library(opt, params, grad, STEPS, jnp.float64)
    lr_t = (lambda t: 0.02 / (1 + (t - 1) / 20)) if lr == "schedule" else (lambda t: lr)
    init, step = _acprop_ref(lr_t, **kw, mask=MASK_LEAVES if mask else None, previous=previous)
    want = run_numpy(init, step, params, grad, STEPS)
    assert_trees_close(ours, want, rtol=1e-8, atol=1e-12)
    assert _moved(want, params) > 0.1


def test_first_steps_by_hand(x64):
    # t = 1: u = −α g; t = 2: s_1 = (1 − β2)(g1 − m1)² + ε_root, u = −α g2 / (√(s_1/(1 − β2)) + ε)
    b1, b2, eps, eps_root = 0.9, 0.99, 1e-3, 1e-2
    tx = scale_by_acprop(b1, b2, eps, eps_root)
    s = tx.init(jnp.zeros(2))
    g1, g2 = np.array([2.0, -4.0]), np.array([1.0, 3.0])
    u1, s = tx.update(jnp.asarray(g1), s)
    np.testing.assert_allclose(u1, g1 / (1 + eps), rtol=1e-12)
    s1 = (1 - b2) * (g1 - (1 - b1) * g1) ** 2 + eps_root
    np.testing.assert_allclose(s.nu, s1, rtol=1e-12)
    u2, s = tx.update(jnp.asarray(g2), s)
    np.testing.assert_allclose(u2, g2 / (np.sqrt(s1 / (1 - b2)) + eps), rtol=1e-12)
    assert int(s.count) == 2


@pytest.mark.parametrize("wd,mask", [(0.0, None), (0.05, MASK)])
def test_acprop_matches_optax_with_center_on_previous(wd, mask):
    params, grad = random_problem(1)
    theirs = run_library(optax.contrib.acprop(1e-2, weight_decay=wd, mask=mask), params, grad,
                         STEPS, jnp.float32, lib="optax")  # fmt: skip
    ours = run_library(acprop(1e-2, weight_decay=wd, mask=mask, center_on_previous=True),
                       params, grad, STEPS, jnp.float32)  # fmt: skip
    assert_trees_close(ours, theirs, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)
    assert _moved(ours, params) > 0.1
    # the paper's centring on m_t (the default) is not optax's
    paper = run_library(acprop(1e-2, weight_decay=wd, mask=mask), params, grad, STEPS,
                        jnp.float32)  # fmt: skip
    assert _moved(paper, theirs) > 1e-2


def test_signature_and_state_match_optax():
    for ours, theirs in ((acprop, optax.contrib.acprop),
                         (scale_by_acprop, optax.contrib.scale_by_acprop)):  # fmt: skip
        po = [p for p in inspect.signature(ours).parameters.values() if p.kind != p.KEYWORD_ONLY]
        pt = list(inspect.signature(theirs).parameters.values())
        assert [p.name for p in po] == [p.name for p in pt]
        assert [p.default for p in po] == [p.default for p in pt]
    params = {"w": jnp.arange(3.0), "b": jnp.ones(2, jnp.bfloat16)}
    state = scale_by_acprop().init(params)
    theirs = optax.contrib.scale_by_acprop().init(params)
    assert isinstance(state, ScaleByBeliefState) and state._fields == theirs._fields
    assert state.count.dtype == jnp.int32
    assert state.mu["b"].dtype == state.nu["b"].dtype == jnp.bfloat16


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_params_and_abstract_init(dtype):
    opt = acprop(1e-2, weight_decay=1e-3)
    params = {"w": jnp.linspace(-1, 1, 6, dtype=dtype).reshape(2, 3), "b": jnp.zeros(3, dtype)}
    abstract = jax.eval_shape(opt.init, jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params))  # fmt: skip
    state = opt.init(params)
    want = jax.tree_util.tree_map(lambda x: x.dtype, state)
    assert jax.tree_util.tree_map(lambda x: x.dtype, abstract) == want

    @jax.jit
    def step(p, s, t):
        g = jax.tree_util.tree_map(lambda x: (x - 0.3 * jnp.cos(x * (t + 1))).astype(x.dtype), p)
        u, s = opt.update(g, s, p)
        return gradtx.apply_updates(p, u), s, u

    for t in range(4):
        params, state, u = step(params, state, t)
        assert all(x.dtype == jnp.dtype(dtype) for x in jax.tree_util.tree_leaves(u))
        assert jax.tree_util.tree_map(lambda x: x.dtype, state) == want
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(params))
    assert _moved(params, {"w": jnp.linspace(-1, 1, 6).reshape(2, 3), "b": jnp.zeros(3)}) > 0


@pytest.mark.parametrize("previous", [False, True])
def test_huge_and_tiny_gradients_stay_finite(previous):
    tx = scale_by_acprop(center_on_previous=previous)
    s = tx.init(jnp.zeros(4))
    gs = [jnp.array([1e30, -1e30, 1e-30, 0.0]), jnp.array([-1e30, 1e30, -1e-30, 1.0])] * 3
    for g in gs:
        u, s = tx.update(g, s)
        for x in (u, s.mu, s.nu):
            assert bool(jnp.all(jnp.isfinite(x))), (u, s)
    assert float(s.nu[0]) > 1e30  # saturated, not inf
    assert float(jnp.abs(u[2])) > 0  # the tiny gradient still moves its coordinate


def test_jit_equals_eager_vmap_and_grad_over_learning_rate():
    params, grad = random_problem(2, np.float32)
    g0 = jax.tree_util.tree_map(jnp.asarray, grad(params, 0))
    g1 = jax.tree_util.tree_map(jnp.asarray, grad(params, 1))
    p = jax.tree_util.tree_map(jnp.asarray, params)

    def two_steps(lr):
        opt = acprop(lr, weight_decay=0.01)
        u, s = opt.update(g0, opt.init(p), p)
        q = gradtx.apply_updates(p, u)
        u, s = opt.update(g1, s, q)
        return gradtx.apply_updates(q, u)["scale"]

    eager = two_steps(0.1)
    np.testing.assert_allclose(jax.jit(two_steps)(0.1), eager, rtol=1e-6)
    lrs = jnp.array([0.1, 0.2])
    np.testing.assert_allclose(jax.vmap(two_steps)(lrs), [two_steps(0.1), two_steps(0.2)],
                               rtol=1e-6)  # fmt: skip
    # with fixed gradients the result is quadratic in the learning rate (through the weight
    # decay of the first step's point): a central difference is exact
    d = jax.grad(two_steps)(0.1)
    np.testing.assert_allclose(d, (two_steps(0.15) - two_steps(0.05)) / 0.1, rtol=1e-3)
    assert bool(jnp.isfinite(d)) and abs(float(d)) > 0


@pytest.mark.parametrize(
    "build,error,message",
    [
        (lambda: acprop(float("nan")), ValueError, r"acprop: learning_rate must be finite"),
        (lambda: acprop(1e-2, b1=1.0), ValueError, r"acprop: b1 must be in \[0, 1\), got 1.0"),
        (lambda: acprop(1e-2, b2=-0.1), ValueError, r"acprop: b2 must be in \[0, 1\), got -0.1"),
        (lambda: acprop(1e-2, eps=-1.0), ValueError, r"acprop: eps must be in \[0, inf\], got"),
        (lambda: acprop(1e-2, eps_root=-1.0), ValueError, r"acprop: eps_root must be in"),
        (lambda: acprop(1e-2, weight_decay=-1.0), ValueError, r"acprop: weight_decay must be"),
        (lambda: acprop("x"), TypeError, r"acprop: learning_rate must be a number"),
        (
            lambda: acprop(1e-2, center_on_previous="yes"),
            TypeError,
            r"acprop: center_on_previous must be True or False, got 'yes'",
        ),
        (
            lambda: scale_by_acprop(eps=float("nan")),
            ValueError,
            r"scale_by_acprop: eps must be finite, got nan",
        ),
    ],
)
def test_bad_arguments_are_named(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_integer_params_are_refused():
    with pytest.raises(TypeError, match="acprop"):
        acprop(1e-2).init(jnp.arange(3))


def test_digits_mlp_reaches_95_percent():
    acc = demo_accuracy(acprop(1e-3))
    assert acc >= 0.95, acc
