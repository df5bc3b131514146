"""What the speed work must not break: the compiled eager path and the flat path.

- eager ``update``/``apply_updates`` (compiled and cached) and a jitted step give the plain
  (op-by-op) path's numbers for every optimizer in the registry; a second call and a new
  learning rate compile nothing; the switch turns the cache off; calls that cannot be compiled
  fall back to the plain path;
- ``gradtx.flat(opt)`` gives the tree path's numbers for every optimizer it accepts and refuses
  the others at construction, naming the transform; its ``state_dict`` is keyed by parameter;
- every path (op by op, compiled eager, jit with the optimizer closed over or as an argument)
  computes with the same float32 hyperparameters, so they agree, and float32 Adam follows the
  float64 formula more closely than optax.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import count_compilations
from registry import CASES

import gradtx

IDS = [c.name for c in CASES]


def _params(dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)

    def a(*shape):
        return jnp.asarray(rng.normal(size=shape), dtype)

    return {"dense": {"w": a(4, 3), "b": a(3)}, "scale": a(), "emb": a(5, 2)}


def _grads(params, t):
    return jax.tree_util.tree_map(
        lambda p: (p - 0.5 * jnp.cos(p * (t + 1))).astype(p.dtype), params
    )


def _extra(case, params, grads):
    return case.extra_args(params, grads) if case.extra_args else {}


def _run(opt, case, params, steps=4):
    """``steps`` eager steps; returns the updates and params of every step and the state."""
    state = opt.init(params)
    history = []
    for t in range(steps):
        g = _grads(params, t)
        u, state = opt.update(g, state, params, **_extra(case, params, g))
        params = gradtx.apply_updates(params, u)
        history.append((u, params))
    return history, state


def _assert_close(a, b, rtol, atol=0.0):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        assert jnp.asarray(x).dtype == jnp.asarray(y).dtype
        low = jnp.asarray(x).dtype == jnp.bfloat16  # a couple of bfloat16 rounding steps
        np.testing.assert_allclose(
            np.asarray(x, np.float64),
            np.asarray(y, np.float64),
            rtol=max(rtol, 2e-2) if low else rtol,
            atol=atol,
        )


# ----------------------------------------------------------------------------------------------
# Compiled eager calls.


def _run_jitted(opt, case, params, steps=4):
    """The same steps as ``_run``, each one jitted whole with the optimizer as an argument."""

    @jax.jit
    def step(opt, params, state, t):
        g = _grads(params, t)
        u, state = opt.update(g, state, params, **_extra(case, params, g))
        return u, gradtx.apply_updates(params, u), state

    state = opt.init(params)
    history = []
    for t in range(steps):
        u, params, state = step(opt, params, state, jnp.asarray(t))
        history.append((u, params))
    return history, state


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_eager_compiled_and_jitted_equal_plain(case, x64):
    # float64: the compiled eager path and a jitted step (optimizer as an argument) agree with
    # the op-by-op path to rounding (XLA fuses the same ops). The op-by-op run, the costly one,
    # serves both comparisons.
    params = _params(jnp.float64)
    with gradtx.eager_jit(False):
        plain, plain_state = _run(case.make(case.lr), case, params)
    with gradtx.eager_jit(True):
        fast, fast_state = _run(case.make(case.lr), case, params)
    _assert_close(fast, plain, rtol=1e-12, atol=1e-300)
    _assert_close(fast_state, plain_state, rtol=1e-12, atol=1e-300)
    jitted, jitted_state = _run_jitted(case.make(case.lr), case, params)
    _assert_close(jitted, plain, rtol=1e-10, atol=1e-12)
    _assert_close(jitted_state, plain_state, rtol=1e-10, atol=1e-12)


@pytest.fixture
def eager_on():
    with gradtx.eager_jit(True):
        yield


def test_eager_second_call_and_new_learning_rate_compile_nothing(eager_on):
    params = _params()
    g = _grads(params, 0)
    opt = gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adamw(1e-3, weight_decay=1e-2))
    state = opt.init(params)
    u1, s1 = opt.update(g, state, params)  # compiles
    gradtx.apply_updates(params, u1)
    with count_compilations() as n:
        u2, s2 = opt.update(g, s1, params)
        gradtx.apply_updates(params, u2)
        # a new learning rate and a new weight decay: the same compiled update
        opt2 = gradtx.chain(gradtx.clip_by_global_norm(2.0), gradtx.adamw(3e-3, weight_decay=0.5))
        u3, _ = opt2.update(g, state, params)
    assert n["n"] == 0
    with gradtx.eager_jit(False):
        u3_plain, _ = opt2.update(g, state, params)
    _assert_close(u3, u3_plain, rtol=2e-5, atol=1e-7)  # float32: fused vs op-by-op rounding
    # and the new hyperparameters took effect: 3x the rate, other decay, other clip
    assert not np.allclose(np.asarray(u3["emb"]), np.asarray(u1["emb"]))


def test_eager_cache_is_used_and_the_switch_turns_it_off():
    calls = {"n": 0}

    @gradtx.transform
    class counting(gradtx.GradientTransformation):
        factor: float = 2.0

        def init(self, params):
            return gradtx.EmptyState()

        def update(self, updates, state, params=None, **extra_args):
            calls["n"] += 1  # runs when traced, not when the compiled version is reused
            return jax.tree_util.tree_map(lambda u: self.factor * u, updates), state

    tx = counting()
    x = jnp.arange(3.0)
    assert gradtx.eager_jit.enabled()  # on by default
    for _ in range(3):
        u, _ = tx.update(x, gradtx.EmptyState())
    assert calls["n"] == 1  # traced once, then the compiled version is reused
    np.testing.assert_array_equal(np.asarray(u), [0.0, 2.0, 4.0])
    calls["n"] = 0
    with gradtx.eager_jit(False):
        assert not gradtx.eager_jit.enabled()
        for _ in range(3):
            tx.update(x, gradtx.EmptyState())
        assert calls["n"] == 3  # op by op: the Python body runs every time
    assert gradtx.eager_jit.enabled()  # the block restored the switch
    gradtx.eager_jit(False)
    try:
        calls["n"] = 0
        tx.update(x, gradtx.EmptyState())
        assert calls["n"] == 1
    finally:
        gradtx.eager_jit(True)
    calls["n"] = 0
    tx.update(2 * x, gradtx.EmptyState())
    assert calls["n"] == 0  # still cached


def test_eager_falls_back_for_value_dependent_python_code(eager_on):
    @gradtx.transform
    class concrete(gradtx.GradientTransformation):
        def init(self, params):
            return gradtx.EmptyState()

        def update(self, updates, state, params=None, **extra_args):
            if float(jnp.sum(updates)) > 0:  # needs a concrete value: cannot be compiled
                return -updates, state
            return updates, state

    u, _ = concrete().update(jnp.array([1.0, 2.0]), gradtx.EmptyState())
    np.testing.assert_array_equal(np.asarray(u), [-1.0, -2.0])
    u, _ = concrete().update(jnp.array([-1.0, -2.0]), gradtx.EmptyState())
    np.testing.assert_array_equal(np.asarray(u), [-1.0, -2.0])
    # inside a chain too; and other chains still compile (the fallback is not per class)
    tx = gradtx.chain(concrete(), gradtx.scale(2.0))
    u, _ = tx.update(jnp.array([1.0, 2.0]), tx.init(None))
    np.testing.assert_array_equal(np.asarray(u), [-2.0, -4.0])
    other = gradtx.chain(gradtx.scale(3.0))
    other.update(jnp.ones(2), other.init(None))
    with count_compilations() as n:
        u, _ = other.update(jnp.ones(2), other.init(None))
        u, _ = gradtx.chain(gradtx.scale(5.0)).update(jnp.ones(2), other.init(None))
    assert n["n"] == 0  # compiled once and reused, with a new factor as an argument
    np.testing.assert_array_equal(np.asarray(u), [5.0, 5.0])


def test_eager_value_fn_falls_back_to_the_plain_path(x64):
    def f(x):
        return jnp.sum((x["a"] - 1.0) ** 2) + jnp.sum(x["b"] ** 4)

    x = {"a": jnp.array([3.0, -1.0]), "b": jnp.array([0.5])}
    opt = gradtx.lbfgs()
    results = []
    for enabled in (True, False):
        with gradtx.eager_jit(enabled):
            p, state = x, opt.init(x)
            for _ in range(3):
                v, g = jax.value_and_grad(f)(p)
                u, state = opt.update(g, state, p, value=v, grad=g, value_fn=f)
                p = gradtx.apply_updates(p, u)
            results.append(p)
    _assert_close(results[0], results[1], rtol=1e-14)
    assert float(f(results[0])) < 0.1 * float(f(x))


def test_eager_errors_are_the_plain_errors(eager_on):
    opt = gradtx.adam(1e-3)
    state = opt.init({"w": jnp.zeros(2)})
    with pytest.raises(ValueError, match=r"scale_by_adam: the structure of updates.*\['w'\]"):
        opt.update({"w": jnp.zeros(3)}, state)
    with pytest.raises(ValueError, match="apply_updates"):
        gradtx.apply_updates({"w": jnp.zeros(2)}, {"v": jnp.zeros(2)})


# ----------------------------------------------------------------------------------------------
# The flat path.

# Optimizers that need each parameter's own shape or norm, or draw per-leaf noise.
REFUSED = {
    "lamb",
    "lars",
    "fromage",
    "novograd",
    "sm3",
    "adafactor",
    "noisy_sgd",
    "scale_by_distance_over_gradients",
    "scale_by_param_block_norm",
    "scale_by_param_block_rms",
    "normalize_by_update_norm",
    "lbfgs_no_linesearch",
    "cautious_adamw",  # rescales per array
    "sam",  # opaque mode hands the params to grad_fn
    "madgrad",  # not marked element-wise (flat_safe)
    "momo",  # the step size needs inner products over every parameter
    "momo_adam",
    "muon",  # orthogonalisation needs each matrix's shape
    "normuon",
    "scale_by_muon",
    "scale_by_normuon",
    "scale_by_shape",
    "momo_adapt_lower_bound",  # inner products over every parameter, as momo
    "momo_adam_adapt_lower_bound",
    "split_real_and_imaginary_adam",  # splits complex leaves, which flat buffers do not keep
    "sophia",  # the Hessian estimate calls obj_fn on the params tree
    # learning-rate-free methods: global inner products and norms over every parameter
    "prodigy",
    "dadapt_adamw",
    "dowg",
    "cocob",  # not marked element-wise (flat_safe)
    "mechanize_adam",
    "mechanize_sgd_optax",
    # matrix methods: each needs its parameter's own shape
    "soap",
    "scale_by_soap",
    "kron",
    "galore",
    "galore_rank1",
    "scale_by_galore",
    # wrappers and blocks flat does not know to act element by element
    "clip_and_friends",  # zero_nans
    "adaptive_grad_clip",
    "centralize",
    "keep_params_nonnegative",
    "apply_every",
    "stateless",
    "stateless_with_tree_map",
    "function_pair",
    "monitors",
    "monitor_norms",
    "MultiSteps",
    "apply_if_finite",
    "conditionally_transform",
    "conditionally_mask",
    "flatten",
    "param_ema",
    "swa",
    "inject_hyperparams",
}


def _mixed_params():
    p = _params(jnp.float32)
    p["half"] = jnp.asarray(np.linspace(-1, 1, 6).reshape(2, 3), jnp.bfloat16)
    p["none"] = None
    return p


def _mixed_grads(params, t):
    return jax.tree_util.tree_map(
        lambda p: None if p is None else (p - 0.5 * jnp.cos(p * (t + 1))).astype(p.dtype),
        params,
        is_leaf=lambda x: x is None,
    )


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_flat_equals_tree_or_refuses(case):
    opt = case.make(case.lr)
    if case.name in REFUSED:
        with pytest.raises(TypeError, match=r"flat: \w+ needs each parameter's own shape"):
            gradtx.flat(opt)
        return
    fopt = gradtx.flat(opt)
    params = _mixed_params()
    s_tree, s_flat = opt.init(params), fopt.init(params)
    p_tree = p_flat = params
    step = jax.jit(lambda o, g, s, p, e: o.update(g, s, p, **e))
    for t in range(5):
        g = _mixed_grads(p_tree, t)
        gf = _mixed_grads(p_flat, t)
        u_tree, s_tree = step(opt, g, s_tree, p_tree, _extra(case, p_tree, g))
        u_flat, s_flat = step(fopt, gf, s_flat, p_flat, _extra(case, p_flat, gf))
        p_tree = gradtx.apply_updates(p_tree, u_tree)
        p_flat = gradtx.apply_updates(p_flat, u_flat)
        assert jax.tree_util.tree_structure(u_flat) == jax.tree_util.tree_structure(u_tree)
        _assert_close(u_flat, u_tree, rtol=1e-6, atol=1e-7)
    _assert_close(p_flat, p_tree, rtol=1e-6, atol=1e-7)
    # the flat state, named by parameter, is the tree state
    d_tree, d_flat = gradtx.state_dict(s_tree), gradtx.state_dict(s_flat)
    assert sorted(d_flat) == sorted(d_tree)
    _assert_close(d_flat, d_tree, rtol=1e-6, atol=1e-7)


def test_flat_is_exact_in_float64_and_keeps_few_buffers(x64):
    opt = gradtx.chain(gradtx.sgd(0.1, momentum=0.9), gradtx.adamw(1e-2, weight_decay=0.1))
    fopt = gradtx.flat(opt)
    params = _params(jnp.float64)
    s = fopt.init(params)
    # one buffer per state array kind, not one per parameter (plus the per-leaf offsets)
    assert s.inner[1][0].mu["float64"].shape == (12 + 3 + 1 + 10,)
    for compiled in (False, True):
        with gradtx.eager_jit(compiled):
            s_tree, s_flat = opt.init(params), fopt.init(params)
            p1 = p2 = params
            for t in range(6):
                u1, s_tree = opt.update(_grads(p1, t), s_tree, p1)
                u2, s_flat = fopt.update(_grads(p2, t), s_flat, p2)
                p1, p2 = gradtx.apply_updates(p1, u1), gradtx.apply_updates(p2, u2)
        for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2), strict=True):
            if compiled:  # two programs that XLA fuses differently: equal to rounding
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-14, atol=1e-16)
            else:  # op by op: the same operations on the same numbers, bit for bit
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_flat_global_norm_clipping_crosses_the_threshold():
    # the clip factor comes from the norm of all buffers together: it must equal the tree's,
    # both when the norm is above max_norm (clipping) and below it (untouched)
    opt = gradtx.chain(gradtx.clip_by_global_norm(1.5), gradtx.scale(-1.0))
    fopt = gradtx.flat(opt)
    params = _params()
    for scale in (0.01, 10.0):
        g = jax.tree_util.tree_map(lambda p, s=scale: s * p, params)
        u1, _ = opt.update(g, opt.init(params))
        u2, _ = fopt.update(g, fopt.init(params))
        _assert_close(u2, u1, rtol=1e-6)
        norm = float(gradtx.numerics.global_norm(u2))
        expected = min(1.5, float(gradtx.numerics.global_norm(g)))
        np.testing.assert_allclose(norm, expected, rtol=1e-5)


def test_flat_masks_make_groups_and_match_the_tree_path():
    mask = {"dense": {"w": True, "b": False}, "scale": False, "emb": True}
    opt = gradtx.adamw(0.1, weight_decay=0.5, mask=mask)
    fopt = gradtx.flat(opt)
    params = _params()
    state = fopt.init(params)
    assert dict(state.layout.sizes) == {"float32_0": 3 + 1, "float32_1": 12 + 10}
    s_tree = opt.init(params)
    for t in range(3):
        g = _grads(params, t)
        u1, s_tree = opt.update(g, s_tree, params)
        u2, state = fopt.update(g, state, params)
        _assert_close(u2, u1, rtol=1e-6)
    # masked wrapper: only the masked leaves get the inner transform
    mopt = gradtx.masked(gradtx.scale(3.0), mask)
    u1, _ = mopt.update(g, mopt.init(params))
    u2, _ = gradtx.flat(mopt).update(g, gradtx.flat(mopt).init(params))
    _assert_close(u2, u1, rtol=0)


def test_flat_refusals_name_the_transform():
    with pytest.raises(TypeError, match="flat: clip_by_block_rms needs each parameter's own"):
        gradtx.flat(gradtx.chain(gradtx.clip_by_block_rms(1.0), gradtx.sgd(0.1)))
    with pytest.raises(TypeError, match="flat: scale_by_trust_ratio"):
        gradtx.flat(gradtx.lamb(0.1))
    with pytest.raises(TypeError, match="flat: .*not a gradtx transform"):
        gradtx.flat(gradtx.chain(optax.scale(1.0)))
    with pytest.raises(TypeError, match="flat: inner must be a gradient transformation"):
        gradtx.flat(3.0)


def test_flat_checkpoints_move_between_tree_and_flat(tmp_path):
    opt = gradtx.adam(0.05)
    fopt = gradtx.flat(opt)
    params = _mixed_params()
    g = _mixed_grads(params, 0)
    _, s_tree = opt.update(g, opt.init(params), params)
    # tree checkpoint -> flat optimizer (through a file, into an abstract template)
    np.savez(tmp_path / "state.npz", **gradtx.state_dict(s_tree))
    with np.load(tmp_path / "state.npz") as f:
        s_flat = gradtx.load_state_dict(jax.eval_shape(fopt.init, params), f)
    assert isinstance(s_flat, gradtx.FlatState)
    u_tree, _ = opt.update(g, s_tree, params)
    u_flat, _ = fopt.update(g, s_flat, params)
    _assert_close(u_flat, u_tree, rtol=1e-6)
    # flat checkpoint -> tree optimizer
    back = gradtx.load_state_dict(opt.init(params), gradtx.state_dict(s_flat))
    _assert_close(back, s_tree, rtol=0)


def test_flat_structure_errors_name_the_path():
    fopt = gradtx.flat(gradtx.adam(0.1))
    params = _params()
    state = fopt.init(params)
    bad = dict(params, emb=jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"flat.update: the structure of updates .*\['emb'\]"):
        fopt.update(bad, state, params)
    with pytest.raises(ValueError, match="flat.update: the state is not what flat.init builds"):
        fopt.update(params, gradtx.adam(0.1).init(params), params)


def test_flat_sweeps_learning_rates_without_recompiling():
    params = _params()
    g = _grads(params, 0)

    @jax.jit
    def step(opt, state):
        return opt.update(g, state, params)

    state = gradtx.flat(gradtx.adam(1e-3)).init(params)
    step(gradtx.flat(gradtx.adam(1e-3)), state)
    with count_compilations() as n:
        for lr in (1e-2, 3e-2, 1e-1):
            u, _ = step(gradtx.flat(gradtx.adam(lr)), state)
            first = np.sign(np.asarray(g["emb"]))  # Adam's first step is -lr * sign(g)
            np.testing.assert_allclose(np.asarray(u["emb"]), -lr * first, rtol=1e-4)
    assert n["n"] == 0


def test_benchmark_runner_counts_compilations_and_state_bytes():
    from benchmarks import run

    text = run.main(["--quick", "--cases", "sweep,memory"])
    assert "| sweep: compilations for 8 learning rates | 1 | 8 |" in text
    assert "| memory: adam, float32 moments, bytes/param | 8.0000 | 8.0000 | 1.000x |" in text
    assert "| memory: adam, bfloat16 moments, bytes/param | 4.0000 | 6.0000 |" in text


# ----------------------------------------------------------------------------------------------
# One set of numbers: every path computes with the float32 value of each hyperparameter.


def _adam_trajectory(step_fn, steps=200):
    rng = np.random.default_rng(3)
    p0, target = rng.normal(size=50), rng.normal(size=50)

    def grad(p, t):
        return (p - target) + 0.3 * np.sin(3 * p) + 0.1 * np.cos(t)

    p = jnp.asarray(p0, jnp.float32)
    state = None
    for t in range(1, steps + 1):
        g = jnp.asarray(grad(np.asarray(p, np.float64), t), jnp.float32)
        p, state = step_fn(p, g, state)
    # float64 reference, written from Kingma & Ba's Algorithm 1
    q, m, v = p0.copy(), np.zeros(50), np.zeros(50)
    for t in range(1, steps + 1):
        g = grad(q, t)
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        q = q - 1e-2 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return np.asarray(p, np.float64), q


def _gradtx_step(mode):
    opt = gradtx.adam(1e-2)
    jit_closed = jax.jit(lambda p, g, s: opt.update(g, s, p))
    jit_arg = jax.jit(lambda o, p, g, s: o.update(g, s, p))

    def step(p, g, state):
        state = opt.init(p) if state is None else state
        if mode == "plain":
            with gradtx.eager_jit(False):
                u, state = opt.update(g, state, p)
        elif mode == "compiled":
            u, state = opt.update(g, state, p)
        elif mode == "jit_closed":
            u, state = jit_closed(p, g, state)
        else:
            u, state = jit_arg(opt, p, g, state)
        return p + u, state

    return step


def test_every_path_gives_the_same_float32_numbers():
    modes = ("plain", "compiled", "jit_closed", "jit_arg")
    runs = {m: _adam_trajectory(_gradtx_step(m), 60)[0] for m in modes}
    for m in ("compiled", "jit_closed", "jit_arg"):
        # XLA's fusion rounding only (without one float32 β on every path: about 1e-5)
        np.testing.assert_allclose(runs[m], runs["plain"], rtol=1e-6, atol=1e-7, err_msg=m)


def test_float32_adam_follows_the_float64_formula_closely():
    ours, ref = _adam_trajectory(_gradtx_step("plain"))

    opt = optax.adam(1e-2)

    def optax_step(p, g, state):
        state = opt.init(p) if state is None else state
        u, state = opt.update(g, state, p)
        return p + u, state

    theirs, _ = _adam_trajectory(optax_step)
    err_ours, err_theirs = np.max(np.abs(ours - ref)), np.max(np.abs(theirs - ref))
    # 1 − β and the bias correction 1 − β^t from the same float32 β cancel exactly; optax's
    # 1 − β in float64 against its float32 β^t leaves a 1e-5 relative error in the correction
    assert err_ours < 3e-6, err_ours
    assert err_ours < 0.5 * err_theirs, (err_ours, err_theirs)


def test_hyperparameters_take_the_float_width_in_force_when_they_run():
    # Python floats stay Python floats in the transform (so Flax NNX can keep an optimizer as
    # a static attribute) and become JAX scalars of the width in force at each update: one
    # built with x64 off computes in float64 once x64 is on, with no rebuild.
    early = gradtx.adam(0.1, b2=0.999)
    assert type(early.transforms[0].b2) is float
    with jax.enable_x64(True):
        p = jnp.zeros(2, jnp.float64)
        u, _ = early.update(jnp.ones(2, jnp.float64), early.init(p), p)
        assert u.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(u), -0.1 / (1 + 1e-8), rtol=1e-15)
        u2, _ = jax.jit(lambda tx, g, s: tx.update(g, s, p))(early, jnp.ones(2), early.init(p))
        np.testing.assert_allclose(np.asarray(u2), -0.1 / (1 + 1e-8), rtol=1e-15)


def test_flat_masked_state_checkpoints_round_trip():
    # a group the mask hides is a MaskedNode in the flat state: the state_dict skips it and
    # loading restores the visible groups
    p = {"a": jnp.arange(3.0), "b": jnp.ones(2)}
    tx = gradtx.chain(gradtx.masked(gradtx.adam(0.1), {"a": True, "b": False}), gradtx.scale(1.0))
    opt = gradtx.flat(tx)
    s = opt.update(p, opt.init(p), p)[1]
    d = gradtx.state_dict(s)
    assert sorted(d) == sorted(gradtx.state_dict(tx.update(p, tx.init(p), p)[1]))
    restored = gradtx.load_state_dict(opt.init(p), d)
    _assert_close(opt.update(p, restored, p)[0], opt.update(p, s, p)[0], rtol=0, atol=0)
