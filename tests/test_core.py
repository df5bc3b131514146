"""The protocol: pytree transforms, chain/named_chain, optax interop, errors, dtypes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import F32_ORACLE_RTOL, count_compilations

import gradtx

PARAMS = {"layer1": {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}, "layer2": {"w": jnp.ones((3,))}}


def grads(scale=0.5):
    return jax.tree_util.tree_map(lambda p: jnp.full_like(p, scale), PARAMS)


# ---------------------------------------------------------------------------------------------
# The protocol.


def test_unpacks_as_init_update():
    init, update = gradtx.adam(1e-3)
    state = init(PARAMS)
    u, state = update(grads(), state, PARAMS)
    assert jax.tree_util.tree_structure(u) == jax.tree_util.tree_structure(PARAMS)


def test_hyperparameters_are_leaves_and_options_static():
    opt = gradtx.adamw(1e-3, b1=0.8, weight_decay=0.01, nesterov=True)
    leaves = jax.tree_util.tree_leaves(opt)
    assert sorted(leaves) == sorted([1e-3, 0.8, 0.999, 1e-8, 0.0, 0.01])
    rebuilt = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(opt), leaves)
    assert rebuilt.transforms[0].nesterov is True
    # changing an option changes the treedef (so it recompiles); a value does not
    t1 = jax.tree_util.tree_structure(gradtx.adam(1e-3))
    assert t1 == jax.tree_util.tree_structure(gradtx.adam(0.5, b1=0.1))
    assert t1 != jax.tree_util.tree_structure(gradtx.adam(1e-3, nesterov=True))


def test_transforms_are_immutable():
    tx = gradtx.scale_by_adam()
    with pytest.raises(AttributeError):
        tx.b1 = 0.5


def test_repr_shows_non_default_fields():
    assert repr(gradtx.scale_by_adam(b1=0.8)) == "scale_by_adam(b1=0.8)"
    assert "scale_by_learning_rate(learning_rate=0.1)" in repr(gradtx.sgd(0.1))


@pytest.mark.parametrize(
    "make_other",
    [
        lambda: gradtx.adamw(3e-3),
        lambda: gradtx.adamw(1e-3, b1=0.5, b2=0.9),
        lambda: gradtx.adamw(1e-3, weight_decay=0.5),
        lambda: gradtx.adamw(2.0, b1=0.0, b2=0.5, eps=1e-3, weight_decay=0.0),
    ],
)
def test_no_recompile_for_new_hyperparameters(make_other):
    @jax.jit
    def step(opt, params, state):
        u, state = opt.update(grads(), state, params)
        return gradtx.apply_updates(params, u), state

    opt = gradtx.adamw(1e-3)
    params, state = step(opt, PARAMS, opt.init(PARAMS))
    other = make_other()
    with count_compilations() as c:
        p2, s2 = step(other, params, state)
        jax.block_until_ready(p2)
    assert c["n"] == 0
    # and the new values are really used: compare with a freshly built step
    p3, _ = jax.jit(lambda p, s: step(other, p, s))(params, state)
    np.testing.assert_allclose(
        np.asarray(p2["layer2"]["w"]), np.asarray(p3["layer2"]["w"]), rtol=1e-6
    )


def test_compile_counter_sees_a_structural_change():
    @jax.jit
    def step(opt, state):
        return opt.update(grads(), state, PARAMS)

    opt = gradtx.sgd(0.1, momentum=0.9)
    _, state = step(opt, opt.init(PARAMS))
    with count_compilations() as c:
        jax.block_until_ready(step(gradtx.sgd(0.1, momentum=0.9, nesterov=True), state))
    assert c["n"] >= 1


LOW = dict(mu_dtype=jnp.bfloat16, nu_dtype=jnp.float16)


@pytest.mark.parametrize(
    "make,fields",
    [
        (lambda **kw: gradtx.adam(1e-2, **kw), ("mu", "nu")),
        (lambda **kw: gradtx.adamw(1e-2, **kw), ("mu", "nu")),
        (lambda **kw: gradtx.nadam(1e-2, **kw), ("mu", "nu")),
        (lambda **kw: gradtx.amsgrad(1e-2, mu_dtype=kw.get("mu_dtype")), ("mu",)),
        (lambda **kw: gradtx.sgd(1e-2, 0.9, accumulator_dtype=kw.get("mu_dtype")), ("trace",)),
    ],
)
def test_moment_dtypes_are_honoured(make, fields):
    opt, ref_opt = make(**LOW), make()
    state, ref_state = opt.init(PARAMS), ref_opt.init(PARAMS)
    for _ in range(3):
        u, state = opt.update(grads(), state, PARAMS)
        ref_u, ref_state = ref_opt.update(grads(), ref_state, PARAMS)
    want = {"mu": jnp.bfloat16, "nu": jnp.float16, "trace": jnp.bfloat16}
    for f in fields:
        assert all(x.dtype == want[f] for x in jax.tree_util.tree_leaves(getattr(state[0], f))), f
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(u))
    # the low-precision moments still give nearly the float32 result
    np.testing.assert_allclose(
        np.asarray(u["layer1"]["w"]), np.asarray(ref_u["layer1"]["w"]), rtol=2e-2
    )


def test_amsgrad_nu_dtype():
    opt = gradtx.scale_by_amsgrad(nu_dtype=jnp.float16)
    state = opt.init(PARAMS)
    _, state = opt.update(grads(), state)
    assert all(x.dtype == jnp.float16 for x in jax.tree_util.tree_leaves((state.nu, state.nu_max)))


def test_complex_adam_keeps_real_second_moment():
    p = {"z": jnp.asarray([1 + 2j, -1j], jnp.complex64)}
    opt = gradtx.adam(0.1)
    state = opt.init(p)
    u, state = opt.update({"z": jnp.asarray([1j, 2 + 0j], jnp.complex64)}, state, p)
    assert state[0].nu["z"].dtype == jnp.float32
    assert u["z"].dtype == jnp.complex64
    # first Adam step is -lr * g / |g| element-wise
    np.testing.assert_allclose(np.asarray(u["z"]), [-0.1j, -0.1], rtol=1e-5)


def test_step_counter_saturates():
    opt = gradtx.scale_by_adam()
    state = opt.init(PARAMS)._replace(count=jnp.asarray(np.iinfo(np.int32).max, jnp.int32))
    _, state = opt.update(grads(), state)
    assert int(state.count) == np.iinfo(np.int32).max
    assert gradtx.numerics.safe_increment(jnp.asarray(5, jnp.int32)).dtype == jnp.int32


# ---------------------------------------------------------------------------------------------
# Combinators.


def test_chain_composes_in_order():
    tx = gradtx.chain(gradtx.scale(2.0), gradtx.clip(1.5), gradtx.scale(-1.0))
    u, _ = tx.update({"a": jnp.asarray([0.5, 1.0])}, tx.init(None))
    np.testing.assert_allclose(np.asarray(u["a"]), [-1.0, -1.5])


def test_named_chain_state_is_keyed_by_name():
    tx = gradtx.named_chain(
        ("adam", gradtx.scale_by_adam()), ("lr", gradtx.scale_by_learning_rate(0.1))
    )
    state = tx.init(PARAMS)
    assert set(state) == {"adam", "lr"}
    u, state = tx.update(grads(), state)
    ref, _ = gradtx.adam(0.1).update(grads(), gradtx.adam(0.1).init(PARAMS))
    np.testing.assert_allclose(np.asarray(u["layer2"]["w"]), np.asarray(ref["layer2"]["w"]))
    # inserting a stateless member keeps the other members' state under the same keys
    tx2 = gradtx.named_chain(
        ("clip", gradtx.clip(10.0)),
        ("adam", gradtx.scale_by_adam()),
        ("lr", gradtx.scale_by_learning_rate(0.1)),
    )
    s2 = tx2.init(PARAMS)
    s2 = {**s2, "adam": state["adam"], "lr": state["lr"]}
    tx2.update(grads(), s2)


def test_named_chain_rejects_bad_members():
    with pytest.raises(ValueError, match="unique"):
        gradtx.named_chain(("a", gradtx.identity()), ("a", gradtx.identity()))
    with pytest.raises(TypeError, match="pairs"):
        gradtx.named_chain(gradtx.identity())


def test_identity_set_to_zero_stateless():
    g = grads(0.7)
    assert gradtx.identity().update(g, gradtx.identity().init(PARAMS))[0] is g
    z, _ = gradtx.set_to_zero().update(g, gradtx.EmptyState())
    assert all(float(jnp.abs(x).sum()) == 0 for x in jax.tree_util.tree_leaves(z))
    tx = gradtx.stateless(lambda u, p: jax.tree_util.tree_map(lambda a, b: a * b, u, p))
    u, _ = tx.update(g, tx.init(PARAMS), PARAMS)
    np.testing.assert_allclose(np.asarray(u["layer1"]["w"]), 0.7)


def test_apply_updates_keeps_dtypes_and_none():
    params = {"a": jnp.ones(2, jnp.float16), "b": jnp.ones(2, jnp.bfloat16), "c": None}
    updates = {"a": jnp.full(2, 0.25, jnp.float32), "b": jnp.full(2, 0.5, jnp.float32), "c": None}
    out = gradtx.apply_updates(params, updates)
    assert out["a"].dtype == jnp.float16 and out["b"].dtype == jnp.bfloat16 and out["c"] is None
    np.testing.assert_allclose(np.asarray(out["a"], np.float32), 1.25)


def test_add_decayed_weights_mask_forms():
    p = {"w": jnp.ones(2), "b": jnp.ones(2)}
    g = {"w": jnp.zeros(2), "b": jnp.zeros(2)}
    for mask in ({"w": True, "b": False}, lambda params: {"w": True, "b": False}):
        tx = gradtx.add_decayed_weights(0.5, mask=mask)
        u, _ = tx.update(g, tx.init(p), p)
        np.testing.assert_allclose(np.asarray(u["w"]), 0.5)
        np.testing.assert_allclose(np.asarray(u["b"]), 0.0)
    # a mask that is a function of params is static and jit-compatible
    tx = gradtx.add_decayed_weights(
        0.5, mask=lambda params: jax.tree_util.tree_map(lambda x: x.ndim > 0, params)
    )
    u, _ = jax.jit(lambda tx, g, p: tx.update(g, tx.init(p), p))(tx, g, p)
    np.testing.assert_allclose(np.asarray(u["b"]), 0.5)


def test_schedule_as_learning_rate():
    opt = gradtx.sgd(lambda t: 0.1 / (1.0 + t))
    params = {"x": jnp.asarray(0.0)}
    state = opt.init(params)
    got = []
    for _ in range(3):
        u, state = opt.update({"x": jnp.asarray(1.0)}, state, params)
        got.append(float(u["x"]))
    np.testing.assert_allclose(got, [-0.1, -0.05, -0.1 / 3], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# optax interop, both ways.


def _run(tx, steps=5):
    state = tx.init(PARAMS)
    p = PARAMS
    for _ in range(steps):
        u, state = tx.update(grads(), state, p)
        p = optax.apply_updates(p, u)
    return p


def test_gradtx_transform_inside_optax_chain():
    ours = _run(
        optax.chain(gradtx.clip_by_global_norm(1.0), gradtx.scale_by_adam(), optax.scale(-0.1))
    )
    ref = _run(
        optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam(), optax.scale(-0.1))
    )
    np.testing.assert_allclose(
        np.asarray(ours["layer1"]["w"]), np.asarray(ref["layer1"]["w"]), rtol=F32_ORACLE_RTOL
    )


def test_optax_transform_inside_gradtx_chain():
    tx = gradtx.chain(optax.clip_by_global_norm(1.0), gradtx.scale_by_adam(), optax.scale(-0.1))
    ours = _run(tx)
    ref = _run(
        optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam(), optax.scale(-0.1))
    )
    np.testing.assert_allclose(
        np.asarray(ours["layer1"]["w"]), np.asarray(ref["layer1"]["w"]), rtol=F32_ORACLE_RTOL
    )
    # the chain is still a pytree that can be passed to jit (the optax member is static)
    step = jax.jit(lambda tx, s: tx.update(grads(), s, PARAMS))
    step(tx, tx.init(PARAMS))


def test_gradtx_optimizer_where_optax_expects_a_transformation():
    ours = _run(optax.MultiSteps(gradtx.adamw(1e-2), every_k_schedule=2), steps=6)
    ref = _run(optax.MultiSteps(optax.adamw(1e-2), every_k_schedule=2), steps=6)
    np.testing.assert_allclose(
        np.asarray(ours["layer1"]["w"]), np.asarray(ref["layer1"]["w"]), rtol=F32_ORACLE_RTOL
    )
    ours = _run(optax.apply_if_finite(gradtx.sgd(0.1, momentum=0.9), 3))
    ref = _run(optax.apply_if_finite(optax.sgd(0.1, momentum=0.9), 3))
    np.testing.assert_allclose(
        np.asarray(ours["layer2"]["w"]), np.asarray(ref["layer2"]["w"]), rtol=1e-6
    )
    mask = {"layer1": {"w": True, "b": False}, "layer2": {"w": True}}
    ours = _run(optax.masked(gradtx.adam(0.1), mask))
    ref = _run(optax.masked(optax.adam(0.1), mask))
    np.testing.assert_allclose(
        np.asarray(ours["layer1"]["b"]), np.asarray(ref["layer1"]["b"]), rtol=1e-6
    )


def test_as_optax_passes_value_through_optax_chain():
    p = {"w": jnp.asarray([1.0, -2.0])}
    g = {"w": jnp.asarray([0.5, 1.0])}
    tx = optax.chain(gradtx.as_optax(gradtx.polyak_sgd(max_learning_rate=10.0)))
    u, _ = tx.update(g, tx.init(p), p, value=jnp.asarray(2.0))
    # Polyak step: (f - f*) / ||g||^2 with f* = 0, applied as -step * g
    np.testing.assert_allclose(np.asarray(u["w"]), -2.0 / 1.25 * np.asarray([0.5, 1.0]), rtol=1e-6)
    plateau = optax.chain(gradtx.as_optax(gradtx.reduce_on_plateau(patience=1)))
    s = plateau.init(p)
    for v in (1.0, 1.0, 1.0):
        u, s = plateau.update(g, s, p, value=jnp.asarray(v))
    assert float(s[0].scale) < 1.0
    assert isinstance(gradtx.as_optax(gradtx.adam(0.1)), optax.GradientTransformationExtraArgs)


def test_extra_args_reach_optax_members_that_take_them():
    seen = {}

    def update(updates, state, params=None, **extra):
        seen.update(extra)
        return updates, state

    member = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)
    tx = gradtx.chain(gradtx.identity(), member)
    tx.update(grads(), tx.init(PARAMS), PARAMS, value=3.0)
    assert seen == {"value": 3.0}


def test_chain_rejects_non_transforms():
    with pytest.raises(TypeError, match="init, update"):
        gradtx.chain(3.0)


# ---------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize(
    "make,argname,value",
    [
        (lambda: gradtx.adam(1e-3, b1=1.2), "b1", "1.2"),
        (lambda: gradtx.adam(1e-3, b1=1.0), "b1", "1.0"),
        (lambda: gradtx.adam(1e-3, b2=-0.1), "b2", "-0.1"),
        (lambda: gradtx.adam(1e-3, eps=-1e-8), "eps", "-1e-08"),
        (lambda: gradtx.adam(float("nan")), "learning_rate", "nan"),
        (lambda: gradtx.adam(float("inf")), "learning_rate", "inf"),
        (lambda: gradtx.adamw(1e-3, weight_decay=-1.0), "weight_decay", "-1.0"),
        (lambda: gradtx.sgd(0.1, momentum=-0.5), "momentum", "-0.5"),
        (lambda: gradtx.rmsprop(0.1, decay=1.5), "decay", "1.5"),
        (lambda: gradtx.rmsprop(0.1, eps=-1.0), "eps", "-1.0"),
        (
            lambda: gradtx.adagrad(0.1, initial_accumulator_value=-1.0),
            "initial_accumulator_value",
            "-1.0",
        ),
        (lambda: gradtx.adadelta(rho=2.0), "rho", "2.0"),
        (lambda: gradtx.amsgrad(0.1, b2=1.0), "b2", "1.0"),
        (lambda: gradtx.adamax(0.1, b1=np.float32(-0.1)), "b1", "-0.1"),
        (lambda: gradtx.clip(-1.0), "max_delta", "-1.0"),
        (lambda: gradtx.clip_by_global_norm(0.0), "max_norm", "0.0"),
        (lambda: gradtx.ema(1.5), "decay", "1.5"),
        (lambda: gradtx.scale(float("nan")), "step_size", "nan"),
        (lambda: gradtx.ema(1.0), "decay", "1.0"),
        (lambda: gradtx.scale_by_rms(decay=1.0, bias_correction=True), "decay", "1.0"),
        (lambda: gradtx.scale_by_stddev(decay=1.0, bias_correction=True), "decay", "1.0"),
        (lambda: gradtx.adam(1e-3, b1=jnp.asarray([0.5, 1.5])), "b1", "1.5"),
        (lambda: gradtx.sgd(jnp.asarray([0.1, float("inf")])), "learning_rate", "inf"),
    ],
)
def test_invalid_hyperparameters_raise_at_construction(make, argname, value):
    with pytest.raises(ValueError, match=argname) as e:
        make()
    assert value in str(e.value)


def test_decay_of_one_is_fine_without_bias_correction():
    gradtx.ema(1.0, debias=False)
    gradtx.scale_by_rms(decay=1.0)
    gradtx.adam(jnp.asarray([0.1, 0.2]), b1=jnp.asarray([0.0, 0.9]))  # a stacked sweep


def test_text_hyperparameter_is_a_type_error():
    with pytest.raises(TypeError, match="learning_rate must be a number, array or schedule"):
        gradtx.sgd("0.1")


def test_clip_on_complex_updates_says_so():
    with pytest.raises(TypeError, match="clip: element-wise clipping is defined for real"):
        gradtx.clip(1.0).update(jnp.asarray([1j]), gradtx.EmptyState())


def test_state_from_another_optimizer_names_member_and_path():
    p = {"w": jnp.ones(2)}
    with pytest.raises(
        ValueError,
        match=r"^adam.update: the state is not what adam.init builds: it differs at \[0\]: "
        r"EmptyState vs ScaleByAdamState",
    ):
        gradtx.adam(0.1).update(p, gradtx.sgd(0.1).init(p), p)
    # without params (nothing to build the expected state from), the failing member says so
    with pytest.raises(
        ValueError, match=r"adam: the state of member 0 \(scale_by_adam\).*EmptyState vs"
    ):
        gradtx.adam(0.1).update(p, gradtx.sgd(0.1).init(p))
    nc = gradtx.named_chain(("adam", gradtx.scale_by_adam()), ("lr", gradtx.scale(-0.1)))
    bad = {"adam": gradtx.EmptyState(), "lr": gradtx.EmptyState()}
    with pytest.raises(ValueError, match=r"named_chain.update: .* at \['adam'\]: EmptyState vs"):
        nc.update(p, bad, p)
    with pytest.raises(ValueError, match="named_chain: the state of member 'adam'"):
        nc.update(p, bad)


def test_bad_dtype_argument():
    with pytest.raises(TypeError, match="mu_dtype"):
        gradtx.adam(1e-3, mu_dtype=jnp.int32)


def test_validation_skips_tracers():
    # building an optimizer from a traced learning rate is fine (vmap / grad over it)
    jax.vmap(lambda lr: jax.tree_util.tree_leaves(gradtx.adam(lr))[0])(jnp.ones(3))
    jax.grad(lambda b1: gradtx.scale_by_adam(b1=b1).b1 * 2.0)(0.5)


def test_update_with_mismatched_tree_names_the_path():
    opt = gradtx.adam(1e-3)
    state = opt.init(PARAMS)
    bad = {"layer1": {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}, "layer3": {"w": jnp.ones((3,))}}
    with pytest.raises(ValueError, match=r"\['layer2'\]|\['layer3'\]"):
        opt.update(bad, state, PARAMS)
    wrong_shape = {
        "layer1": {"w": jnp.ones((2, 4)), "b": jnp.zeros(3)},
        "layer2": {"w": jnp.ones((3,))},
    }
    with pytest.raises(ValueError, match=r"\['layer1'\]\['w'\].*shape"):
        opt.update(wrong_shape, state, PARAMS)
    # the same error from inside jit
    with pytest.raises(ValueError, match=r"\['layer1'\]\['w'\]"):
        jax.jit(opt.update)(wrong_shape, state, PARAMS)


def test_add_decayed_weights_needs_params():
    tx = gradtx.add_decayed_weights(0.1)
    with pytest.raises(ValueError, match="params"):
        tx.update(grads(), tx.init(PARAMS))
