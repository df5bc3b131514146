"""MultiSteps and apply_every: micro-batches equal one big batch; optax parity."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import F32_ORACLE_ATOL, F32_ORACLE_RTOL, count_compilations

import gradtx

RNG = np.random.default_rng(0)
K, B = 4, 8
X = RNG.normal(size=(3 * K * B, 5)).astype(np.float32)
Y = (X @ RNG.normal(size=5) + 0.3 * RNG.normal(size=3 * K * B)).astype(np.float32)
P0 = {"w": jnp.asarray(RNG.normal(size=5), jnp.float32), "b": jnp.zeros((), jnp.float32)}


def loss(p, x, y):
    return jnp.mean((x @ p["w"] + p["b"] - y) ** 2)


GRAD = jax.grad(loss)


def _batches(size):
    return [(X[i : i + size], Y[i : i + size]) for i in range(0, len(X), size)]


def _train(opt, batches, *, jit=True, params=P0):
    state = opt.init(params)
    update = jax.jit(opt.update) if jit else opt.update
    for x, y in batches:
        u, state = update(GRAD(params, x, y), state, params)
        params = optax.apply_updates(params, u)
    return params, state


def _close(a, b, rtol=1e-6, atol=0.0):
    jax.tree_util.tree_map(
        lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol),
        a,
        b,
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: gradtx.sgd(0.05),
        lambda: gradtx.adam(0.05),
        lambda: gradtx.adamw(0.05, weight_decay=0.1),
    ],
    ids=["sgd", "adam", "adamw"],
)
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_k_micro_batches_equal_one_step_on_the_concatenated_batch(make, precision, x64):
    # float64 shows the accumulation is exact (rtol 1e-6 holds with room to spare); float32
    # shows it in the everyday dtype, where summation order costs ~1 ulp (atol for the
    # coordinates that cancel to ~1e-4).
    dt = np.float64 if precision == "float64" else np.float32
    p0 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dt), P0)
    cast = [(jnp.asarray(x, dt), jnp.asarray(y, dt)) for x, y in _batches(B)]
    big_batches = [(jnp.asarray(x, dt), jnp.asarray(y, dt)) for x, y in _batches(K * B)]
    micro, state = _train(gradtx.MultiSteps(make(), every_k_schedule=K), cast, params=p0)
    big, _ = _train(make(), big_batches, params=p0)
    assert micro["w"].dtype == dt and int(state.gradient_step) == 3
    _close(micro, big, rtol=1e-6, atol=0.0 if dt == np.float64 else 1e-7)
    # and the parameters did move (three optimizer steps)
    assert not np.allclose(np.asarray(micro["w"]), np.asarray(P0["w"]), atol=1e-2)


@pytest.mark.parametrize("use_grad_mean", [True, False])
def test_multisteps_matches_optax(use_grad_mean):
    ours = gradtx.MultiSteps(gradtx.adam(0.05), 3, use_grad_mean=use_grad_mean)
    ref = optax.MultiSteps(optax.adam(0.05), 3, use_grad_mean=use_grad_mean)
    p1, s1 = _train(ours, _batches(5))
    p2, s2 = _train(ref, _batches(5))
    _close(p1, p2, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)
    assert int(s1.mini_step) == int(s2.mini_step)
    assert int(s1.gradient_step) == int(s2.gradient_step)
    _close(s1.acc_grads, s2.acc_grads, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)


def test_multisteps_schedule_of_k_matches_optax():
    sched = lambda step: jnp.where(step < 2, 2, 4)
    ours = gradtx.MultiSteps(gradtx.sgd(0.05, momentum=0.9), sched)
    ref = optax.MultiSteps(optax.sgd(0.05, momentum=0.9), sched)
    p1, s1 = _train(ours, _batches(4))
    p2, s2 = _train(ref, _batches(4))
    _close(p1, p2, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)
    assert int(s1.gradient_step) == int(s2.gradient_step)


def test_multisteps_state_is_readable_and_jit_equals_eager():
    opt = gradtx.MultiSteps(gradtx.adam(0.05), every_k_schedule=3)
    p1, s1 = _train(opt, _batches(5)[:7], jit=True)
    p2, s2 = _train(opt, _batches(5)[:7], jit=False)
    _close((p1, s1), (p2, s2), rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)
    # 7 micro-steps with k = 3: two optimizer steps, one micro-step in the accumulator
    assert (int(s1.mini_step), int(s1.gradient_step)) == (1, 2)
    assert not bool(opt.has_updated(s1))
    x, y = _batches(5)[0]
    np.testing.assert_allclose(
        np.asarray(s1.acc_grads["w"]), np.asarray(GRAD(p1, *_batches(5)[6])["w"]), rtol=1e-6
    )
    del x, y
    assert int(s1.inner_opt_state[0].count) == 2
    assert jax.tree_util.tree_structure(p1) == jax.tree_util.tree_structure(P0)


def test_accumulator_dtype():
    p = {"w": jnp.zeros(3, jnp.bfloat16)}
    assert gradtx.MultiSteps(gradtx.sgd(0.1), 2).init(p).acc_grads["w"].dtype == jnp.float32
    opt = gradtx.MultiSteps(gradtx.sgd(0.1), 2, accumulator_dtype=jnp.bfloat16)
    state = opt.init(P0)
    assert state.acc_grads["w"].dtype == jnp.bfloat16
    u, state = opt.update(jax.tree_util.tree_map(jnp.ones_like, P0), state, P0)
    assert u["w"].dtype == jnp.float32 and state.acc_grads["w"].dtype == jnp.bfloat16


def test_new_k_and_learning_rate_do_not_recompile():
    g = GRAD(P0, X[:4], Y[:4])

    @jax.jit
    def step(opt, state):
        return opt.update(g, state, P0)

    opt = gradtx.MultiSteps(gradtx.adam(0.1), 2)
    state = opt.init(P0)
    step(opt, state)
    with count_compilations() as c:
        step(gradtx.MultiSteps(gradtx.adam(0.2), 2), state)
        step(gradtx.MultiSteps(gradtx.adam(0.1), 3), state)
    assert c["n"] == 0


def test_multisteps_argument_errors():
    with pytest.raises(ValueError, match="every_k_schedule must be in"):
        gradtx.MultiSteps(gradtx.sgd(0.1), 0)
    with pytest.raises(TypeError, match="should_skip_update_fn"):
        gradtx.MultiSteps(gradtx.sgd(0.1), 2, should_skip_update_fn=3)
    with pytest.raises(ValueError, match="apply_every: k must be in"):
        gradtx.apply_every(0)


@pytest.mark.parametrize("k", [1, 3])
def test_apply_every_matches_optax_and_numpy(k):
    ours = gradtx.chain(gradtx.sgd(0.1), gradtx.apply_every(k))
    ref = optax.chain(optax.sgd(0.1), optax.apply_every(k))
    p1, s1 = _train(ours, _batches(6)[:8])
    p2, s2 = _train(ref, _batches(6)[:8])
    _close(p1, p2, rtol=F32_ORACLE_RTOL, atol=F32_ORACLE_ATOL)
    _close(s1[1].grad_acc, s2[1].grad_acc, rtol=1e-6, atol=1e-7)
    # NumPy: the emitted update is the sum of the k last SGD steps, at the k-th step
    ours_eager = gradtx.apply_every(k)
    s = ours_eager.init(np.zeros(2))
    outs = []
    for t in range(7):
        u, s = ours_eager.update(jnp.asarray([float(t), 1.0]), s)
        outs.append(np.asarray(u))
    for t in range(7):
        want = np.zeros(2)
        if t % k == k - 1:
            want = np.array([sum(range(t - k + 1, t + 1)), float(k)])
        np.testing.assert_array_equal(outs[t], want)


@pytest.mark.parametrize("k", [2, 3])
def test_apply_every_keeps_its_cycle_at_the_int32_limit(k):
    # A count that saturated would freeze the phase (k=3: never emit again; k=2: emit a growing
    # sum every step); near the limit the count steps back by a multiple of k instead.
    tx = gradtx.apply_every(k)
    params = jnp.zeros(2)
    start = 2**31 - 1 - 2 * k  # a multiple-of-k distance below the limit: phase start % k
    state = tx.init(params)._replace(count=jnp.asarray(start, jnp.int32))
    acc = np.zeros(2)
    phase = start % k
    step = jax.jit(tx.update)
    for t in range(5 * k):
        g = np.full(2, t + 1.0)
        u, state = step(jnp.asarray(g, jnp.float32), state)
        acc = g if phase == 0 else acc + g
        want = acc if phase == k - 1 else np.zeros(2)
        np.testing.assert_allclose(np.asarray(u), want)
        phase = (phase + 1) % k
        assert 0 <= int(state.count) <= 2**31 - 1
