"""Reading (``hyperparams``) and changing (``replace``, ``inject_hyperparams``) hyperparameters:
scheduled values step by step against float64 NumPy closed forms, a digits MLP trained with a
scheduled learning rate and weight decay, no recompilation, and optax's inject_hyperparams as
an oracle."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _digits import digits, init_mlp, logits, loss
from conftest import count_compilations, random_problem
from test_schedules import np_cosine_decay, np_exponential, np_linear, np_warmup_cosine

import gradtx

# ----------------------------------------------------------------------------------------------
# The digits MLP (plain JAX), trained with scheduled learning rate and weight decay.

STEPS, BATCH = 300, 64
LR = dict(init_value=0.0, peak_value=5e-3, warmup_steps=30, decay_steps=STEPS, end_value=1e-4)
WD = dict(init_value=1e-3, decay_steps=STEPS, alpha=0.1)


@jax.jit
def _train(opt, params, state, xb, yb):
    """Scan over mini-batches; record the hyperparameters in force at each step."""

    def step(carry, batch):
        params, state = carry
        h = gradtx.hyperparams(opt, state)
        grads = jax.grad(loss)(params, *batch)
        updates, state = opt.update(grads, state, params)
        return (gradtx.apply_updates(params, updates), state), h

    (params, state), hs = jax.lax.scan(step, (params, state), (xb, yb))
    return params, state, hs


def _batches(x, y, steps, seed=0):
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.permutation(len(x)) for _ in range(steps * BATCH // len(x) + 1)])
    idx = idx[: steps * BATCH].reshape(steps, BATCH)
    return x[idx], y[idx]


def test_digits_mlp_with_scheduled_lr_and_weight_decay():
    x_tr, y_tr, x_te, y_te = digits()
    opt = gradtx.adamw(
        learning_rate=gradtx.warmup_cosine_decay_schedule(**LR),
        weight_decay=gradtx.cosine_decay_schedule(**WD),
    )
    params = init_mlp(jax.random.PRNGKey(0))
    state = opt.init(params)
    xb, yb = _batches(x_tr, y_tr, STEPS)
    params, state, hs = _train(opt, params, state, xb, yb)

    acc = float(jnp.mean(jnp.argmax(logits(params, x_te), -1) == y_te))
    assert acc >= 0.9, acc

    # hyperparams reported the scheduled values step by step (the value used at step t).
    want_lr = [np_warmup_cosine(t, **LR) for t in range(STEPS)]
    want_wd = [np_cosine_decay(t, **WD) for t in range(STEPS)]
    np.testing.assert_allclose(np.asarray(hs["learning_rate"]), want_lr, rtol=2e-5, atol=1e-9)
    np.testing.assert_allclose(np.asarray(hs["weight_decay"]), want_wd, rtol=2e-5, atol=1e-10)
    np.testing.assert_allclose(np.asarray(hs["b1"]), 0.9, rtol=1e-7)
    assert sorted(hs) == ["b1", "b2", "eps", "eps_root", "learning_rate", "weight_decay"]
    # After the last step, the value for the next one.
    h = gradtx.hyperparams(opt, state)
    np.testing.assert_allclose(float(h["learning_rate"]), np_warmup_cosine(STEPS, **LR), rtol=1e-5)


def _np_adamw(x, m, v, *, t, a, lam):
    """θ ← θ − α (m̂ / (√v̂ + ε) + λ θ) with Adam's bias corrections at step t (from 1)."""
    m_hat, v_hat = m / (1 - 0.9**t), v / (1 - 0.999**t)
    return x - a * (m_hat / (np.sqrt(v_hat) + 1e-8) + lam * x)


def test_schedules_drive_the_update_exactly(x64):
    # adamw with both schedules, against a float64 NumPy AdamW using the closed-form schedules.
    params, grad = random_problem(1)
    lr = dict(init_value=0.0, peak_value=0.1, warmup_steps=3, decay_steps=12, end_value=0.01)
    wd = dict(init_value=0.1, end_value=0.0, transition_steps=8, transition_begin=2)
    opt = gradtx.adamw(
        gradtx.warmup_cosine_decay_schedule(**lr), weight_decay=gradtx.linear_schedule(**wd)
    )
    step = jax.jit(lambda o, g, s, p: o.update(g, s, p))
    p, state = params, opt.init(params)
    ref = jax.tree_util.tree_map(np.array, params)
    m = jax.tree_util.tree_map(np.zeros_like, ref)
    v = jax.tree_util.tree_map(np.zeros_like, ref)
    for t in range(15):
        h = gradtx.hyperparams(opt, state)
        np.testing.assert_allclose(float(h["learning_rate"]), np_warmup_cosine(t, **lr), rtol=1e-12)
        np.testing.assert_allclose(float(h["weight_decay"]), np_linear(t, **wd), atol=1e-15)
        u, state = step(opt, grad(p, t), state, p)
        p = gradtx.apply_updates(p, u)
        g = grad(ref, t)
        a, lam = np_warmup_cosine(t, **lr), np_linear(t, **wd)
        m = jax.tree_util.tree_map(lambda m_, g_: 0.9 * m_ + 0.1 * g_, m, g)
        v = jax.tree_util.tree_map(lambda v_, g_: 0.999 * v_ + 0.001 * g_**2, v, g)
        ref = jax.tree_util.tree_map(functools.partial(_np_adamw, t=t + 1, a=a, lam=lam), ref, m, v)
    for got, want in zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(ref), strict=True):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-12)


def test_jitted_step_compiles_once_for_two_peak_values():
    params, grad = random_problem(0, np.float32)
    wd = gradtx.linear_schedule(1e-2, 0.0, 20)

    def make(peak):
        return gradtx.adamw(gradtx.warmup_cosine_decay_schedule(0.0, peak, 5, 50), weight_decay=wd)

    @jax.jit
    def run(opt, params):
        state = opt.init(params)

        def body(carry, t):
            p, s = carry
            g = jax.tree_util.tree_map(lambda x: x - 1.0, p)
            u, s = opt.update(g, s, p)
            return (gradtx.apply_updates(p, u), s), gradtx.hyperparams(opt, s)["learning_rate"]

        return jax.lax.scan(body, (params, state), jnp.arange(10))[1]

    run(make(1e-3), params)
    with count_compilations() as n:
        lrs = run(make(3e-3), params)
    assert n["n"] == 0
    # After step t the next learning rate is the schedule at t + 1.
    want = [np_warmup_cosine(t + 1, 0.0, 3e-3, 5, 50) for t in range(10)]
    np.testing.assert_allclose(np.asarray(lrs), want, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Keys.


def test_keys_are_qualified_only_when_needed():
    p = {"w": jnp.zeros(2)}
    opt = gradtx.chain(gradtx.scale_by_adam(b1=0.8), gradtx.scale_by_amsgrad(), gradtx.trace(0.5))
    h = gradtx.hyperparams(opt, opt.init(p))
    assert h.keys() == {
        "scale_by_adam/b1", "scale_by_adam/b2", "scale_by_adam/eps", "scale_by_adam/eps_root",
        "scale_by_amsgrad/b1", "scale_by_amsgrad/b2", "scale_by_amsgrad/eps",
        "scale_by_amsgrad/eps_root", "decay",
    }  # fmt: skip
    assert float(h["scale_by_adam/b1"]) == pytest.approx(0.8)
    assert float(h["scale_by_amsgrad/b1"]) == pytest.approx(0.9)

    # Same transform twice: qualified by position; named_chain by name.
    two = gradtx.chain(gradtx.trace(0.9), gradtx.trace(0.5))
    assert sorted(gradtx.hyperparams(two, two.init(p))) == ["0/decay", "1/decay"]
    named = gradtx.named_chain(("slow", gradtx.trace(0.9)), ("fast", gradtx.trace(0.5)))
    h = gradtx.hyperparams(named, named.init(p))
    assert {k: round(float(v), 4) for k, v in h.items()} == {"slow/decay": 0.9, "fast/decay": 0.5}


def test_hyperparams_inside_jit_equals_eager():
    sched = gradtx.exponential_decay(0.5, 3, 0.5)
    opt = gradtx.sgd(gradtx.constant_schedule(0.1), momentum=sched)
    p = {"w": jnp.ones(3)}
    state = opt.init(p)
    for _ in range(4):
        _, state = opt.update(p, state, p)
    eager = gradtx.hyperparams(opt, state)
    jitted = jax.jit(gradtx.hyperparams)(opt, state)
    assert eager.keys() == jitted.keys() == {"decay", "learning_rate"}
    np.testing.assert_allclose(float(jitted["decay"]), np_exponential(4, 0.5, 3, 0.5), rtol=1e-6)
    for k in eager:
        np.testing.assert_allclose(np.asarray(eager[k]), np.asarray(jitted[k]), rtol=1e-6)


def test_hyperparams_see_through_wrappers_and_plateau():
    p = {"w": jnp.zeros(2)}
    opt = gradtx.chain(gradtx.masked(gradtx.sgd(0.3), {"w": True}), gradtx.reduce_on_plateau())
    h = gradtx.hyperparams(opt, opt.init(p))
    assert float(h["learning_rate"]) == pytest.approx(0.3)
    assert float(h["scale"]) == 1.0 and float(h["factor"]) == pytest.approx(0.1)
    opt2 = gradtx.replace(opt, learning_rate=0.7)
    assert float(gradtx.hyperparams(opt2, opt.init(p))["learning_rate"]) == pytest.approx(0.7)


# ----------------------------------------------------------------------------------------------
# replace.


def test_replace_keeps_state_and_compiles_nothing_new():
    params, grad = random_problem(2, np.float32)
    opt = gradtx.sgd(0.1, momentum=0.9)
    step = jax.jit(lambda o, g, s, p: o.update(g, s, p))
    state = opt.init(params)
    u, state = step(opt, grad(params, 0), state, params)
    params = gradtx.apply_updates(params, u)

    new = gradtx.replace(opt, learning_rate=0.05, decay=np.float64(0.5))
    assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(opt)
    with count_compilations() as n:
        u, state2 = step(new, grad(params, 1), state, params)
    assert n["n"] == 0
    # Oracle: optax's sgd with the new values, continuing from the same momentum buffer.
    ox = optax.sgd(0.05, momentum=0.5)
    ostate = ox.init(params)
    ostate = (optax.TraceState(trace=state[0].trace), *ostate[1:])
    ou, _ = ox.update(grad(params, 1), ostate, params)
    for a, b in zip(jax.tree_util.tree_leaves(u), jax.tree_util.tree_leaves(ou), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)

    # A schedule replaced by another schedule: same state (it keeps a count), no compile.
    sched_opt = gradtx.adam(gradtx.cosine_decay_schedule(1e-2, 100))
    s = sched_opt.init(params)
    step(sched_opt, grad(params, 0), s, params)
    with count_compilations() as n:
        step(gradtx.replace(sched_opt, learning_rate=gradtx.cosine_decay_schedule(1e-3, 50)),
             grad(params, 0), s, params)  # fmt: skip
    assert n["n"] == 0


def test_replace_errors_name_the_choices():
    opt = gradtx.chain(gradtx.trace(0.9), gradtx.ema(0.5), gradtx.scale_by_learning_rate(0.1))
    with pytest.raises(ValueError, match=r"'decay' is ambiguous.*'trace/decay' or 'ema/decay'"):
        gradtx.replace(opt, decay=0.1)
    with pytest.raises(
        ValueError, match=r"no hyperparameter named 'lr'; available: .*learning_rate"
    ):
        gradtx.replace(opt, lr=0.1)
    with pytest.raises(ValueError, match="constant and cannot become a schedule"):
        gradtx.replace(opt, learning_rate=gradtx.constant_schedule(0.1))
    with pytest.raises(ValueError, match="decay must be in"):
        gradtx.replace(opt, **{"trace/decay": 1.5})
    new = gradtx.replace(opt, **{"trace/decay": 0.5, "1/decay": 0.25})
    h = gradtx.hyperparams(new, new.init({"w": jnp.zeros(1)}))
    assert {k: float(v) for k, v in h.items()} == {
        "trace/decay": 0.5, "ema/decay": 0.25, "learning_rate": pytest.approx(0.1)
    }  # fmt: skip
    two = gradtx.chain(gradtx.trace(0.9), gradtx.trace(0.5))
    with pytest.raises(ValueError, match="'0/decay' or '1/decay'"):
        gradtx.replace(two, **{"trace/decay": 0.1})


# ----------------------------------------------------------------------------------------------
# inject_hyperparams, against optax's.


@pytest.mark.parametrize("factory", ["adam", "sgd"])
def test_inject_hyperparams_matches_optax(factory):
    params, grad = random_problem(3, np.float32)
    if factory == "adam":
        ours = gradtx.inject_hyperparams(gradtx.adam)(
            learning_rate=gradtx.exponential_decay(0.1, 3, 0.5), b1=0.9
        )
        theirs = optax.inject_hyperparams(optax.adam)(
            learning_rate=optax.exponential_decay(0.1, 3, 0.5), b1=0.9
        )
        edit = ("b1", 0.6)
    else:
        # An optax factory wrapped by gradtx's inject_hyperparams, scheduled momentum.
        ours = gradtx.inject_hyperparams(optax.sgd)(
            learning_rate=0.1, momentum=gradtx.linear_schedule(0.5, 0.9, 6)
        )
        theirs = optax.inject_hyperparams(optax.sgd)(
            learning_rate=0.1, momentum=optax.linear_schedule(0.5, 0.9, 6)
        )
        edit = ("learning_rate", 0.02)
    step = jax.jit(lambda o, g, s, p: o.update(g, s, p))
    p1 = p2 = params
    s1, s2 = ours.init(params), theirs.init(params)
    assert s1.hyperparams.keys() == s2.hyperparams.keys()
    for t in range(10):
        if t == 5:  # change a hyperparameter by editing the state, in both
            s1.hyperparams[edit[0]] = jnp.asarray(edit[1])
            s2.hyperparams[edit[0]] = jnp.asarray(edit[1])
        u1, s1 = step(ours, grad(p1, t), s1, p1)
        u2, s2 = theirs.update(grad(p2, t), s2, p2)
        p1, p2 = gradtx.apply_updates(p1, u1), optax.apply_updates(p2, u2)
        for k in s2.hyperparams:
            np.testing.assert_allclose(
                np.asarray(s1.hyperparams[k]), np.asarray(s2.hyperparams[k]), rtol=1e-6
            )
    for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p2), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    assert float(s1.hyperparams[edit[0]]) == pytest.approx(edit[1])


def test_inject_hyperparams_reads_and_refuses_replace():
    sched = gradtx.linear_schedule(1.0, 0.0, 10)
    opt = gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=sched, momentum=0.9)
    p = {"w": jnp.zeros(2)}
    state = opt.init(p)
    for _ in range(3):
        _, state = opt.update({"w": jnp.ones(2)}, state, p)
    state.hyperparams["momentum"] = jnp.asarray(0.5)
    h = gradtx.hyperparams(opt, state)
    assert float(h["learning_rate"]) == pytest.approx(np_linear(3, 1.0, 0.0, 10))
    assert float(h["momentum"]) == 0.5
    with pytest.raises(ValueError, match=r"state.hyperparams\['momentum'\]"):
        gradtx.replace(opt, momentum=0.1)
    # Inside a chain, a name shared with another member is qualified by the factory's name.
    both = gradtx.chain(opt, gradtx.scale_by_learning_rate(0.3))
    h = gradtx.hyperparams(both, both.init(p))
    assert h.keys() == {"sgd/learning_rate", "scale_by_learning_rate/learning_rate", "momentum"}
    with pytest.raises(ValueError, match="static_args"):
        gradtx.inject_hyperparams(gradtx.sgd, static_args="nope")
    # The float hyperparameters take the dtype asked for.
    opt16 = gradtx.inject_hyperparams(gradtx.sgd, hyperparam_dtype=jnp.bfloat16)(0.1)
    assert opt16.init(p).hyperparams["learning_rate"].dtype == jnp.bfloat16


def test_replace_under_vmap_sweeps_learning_rates():
    # replace accepts traced values: one vmapped call runs a sweep of learning rates.
    opt = gradtx.sgd(0.1, momentum=0.5)
    params = {"w": jnp.ones(2)}

    def first_two_steps(lr):
        o = gradtx.replace(opt, learning_rate=lr)
        s = o.init(params)
        p = params
        for _ in range(2):
            u, s = o.update(p, s, p)  # gradient of ½‖w‖²
            p = gradtx.apply_updates(p, u)
        return p["w"][0], gradtx.hyperparams(o, s)["learning_rate"]

    lrs = jnp.array([0.1, 0.2, 0.3])
    w, reported = jax.jit(jax.vmap(first_two_steps))(lrs)
    # NumPy: m1 = 1, w1 = 1 - a; m2 = w1 + 0.5, w2 = w1 - a m2.
    a = np.array([0.1, 0.2, 0.3])
    w1 = 1 - a
    np.testing.assert_allclose(np.asarray(w), w1 - a * (w1 + 0.5), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(reported), a, rtol=1e-7)


def test_hyperparams_reads_an_optax_inject_hyperparams_member():
    inner = optax.inject_hyperparams(optax.sgd)(learning_rate=0.25)
    opt = gradtx.chain(gradtx.clip(1.0), inner)
    state = opt.init({"w": jnp.zeros(2)})
    h = gradtx.hyperparams(opt, state)
    assert float(h["learning_rate"]) == 0.25


def test_hyperparams_and_replace_look_through_partition_states():
    # partition keeps each label's state in a MaskedState (optax's layout): the step count of
    # a scheduled member is found inside it.
    labels = {"w": "a", "b": "b"}
    opt = gradtx.partition(
        {"a": gradtx.sgd(gradtx.linear_schedule(1.0, 0.0, 4)), "b": gradtx.sgd(0.5)}, labels
    )
    p = {"w": jnp.ones(2), "b": jnp.ones(2)}
    state = opt.init(p)
    for _ in range(3):
        _, state = opt.update(p, state, p)
    h = gradtx.hyperparams(opt, state)
    assert float(h["a/1/learning_rate"]) == pytest.approx(np_linear(3, 1.0, 0.0, 4))
    assert float(h["b/1/learning_rate"]) == 0.5
    new = gradtx.replace(opt, **{"b/1/learning_rate": 0.25})
    u, _ = new.update(p, state, p)  # the old state is still valid
    np.testing.assert_allclose(np.asarray(u["b"]), [-0.25, -0.25], rtol=1e-7)
    np.testing.assert_allclose(np.asarray(u["w"]), [-0.25, -0.25], rtol=1e-6)  # lr(3) = 0.25


def test_hyperparams_of_a_stateful_schedule_is_the_last_value_used():
    class Doubling:
        """A stateful schedule: 0.1, then twice the last value at every update."""

        def init(self):
            return jnp.asarray(0.1)

        def __call__(self, state, **extra_args):
            return state

        def update(self, state, **extra_args):
            return 2 * state

    opt = gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=Doubling())
    p = jnp.ones(1)
    state = opt.init(p)
    for t in range(3):
        u, state = opt.update(p, state, p)
        assert float(u[0]) == pytest.approx(-0.1 * 2**t)  # NumPy: 0.1·2^t
    assert float(gradtx.hyperparams(opt, state)["learning_rate"]) == pytest.approx(0.4)
