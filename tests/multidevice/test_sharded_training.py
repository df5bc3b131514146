"""Data-parallel, FSDP and ZeRO-1 training on 8 devices give one device's parameters; the state
lives where it was asked to; ZeRO-1 divides the moments' memory by 8."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _digits import digits, init_mlp, loss
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import gradtx

MESH = Mesh(np.array(jax.devices()), ("data",))
STEPS, BATCH = 20, 128
SIZES = (64, 128, 16)  # every axis divisible by 8 (the 10 classes padded to 16 outputs)


def _labels(params):
    return [{"w": "w", "b": "b"} for _ in params]


OPTIMIZERS = {
    "adamw": lambda **_: gradtx.adamw(1e-2, weight_decay=1e-3),
    "schedule": lambda **_: gradtx.sgd(
        gradtx.warmup_cosine_decay_schedule(0.0, 0.1, 5, STEPS), momentum=0.9
    ),
    "partition": lambda **_: gradtx.partition(
        {"w": gradtx.adamw(1e-2, weight_decay=1e-3), "b": gradtx.sgd(0.05, momentum=0.5)},
        _labels,
    ),
    "muon": lambda **kw: gradtx.muon(0.02, **kw),
    "normuon": lambda **kw: gradtx.normuon(0.02, **kw),
    "soap": lambda **kw: gradtx.soap(3e-3, precondition_frequency=5, **kw),
    "kron": lambda **kw: gradtx.kron(1e-3, **kw),
}


def _batches():
    x, y, _, _ = digits()
    idx = np.resize(np.arange(len(x)), STEPS * BATCH).reshape(STEPS, BATCH)
    return x[idx], y[idx].astype(np.int32)


def _step(opt, params, state, x, y):
    value, g = jax.value_and_grad(loss)(params, x, y)
    u, state = opt.update(g, state, params)
    return gradtx.apply_updates(params, u), state, value


def _params0():
    return init_mlp(jax.random.PRNGKey(0), SIZES)


def _one_device(opt, steps=STEPS, params=None, state=None, start=0):
    dev = jax.devices()[0]
    params = jax.device_put(_params0() if params is None else params, dev)
    state = jax.jit(opt.init)(params) if state is None else jax.device_put(state, dev)
    step = jax.jit(functools.partial(_step, opt))
    xs, ys = _batches()
    for t in range(start, start + steps):
        params, state, _ = step(params, state, jax.device_put(xs[t], dev), ys[t])
    return params, state


def _param_shardings(layout):
    spec = P("data") if layout.startswith("fsdp") else P()
    return jax.tree_util.tree_map(lambda _: NamedSharding(MESH, spec), _params0())


def _sharded(opt, layout, steps=STEPS, params=None, state=None, start=0):
    p_sh = _param_shardings(layout)
    params = jax.device_put(_params0() if params is None else params, p_sh)
    s_sh = gradtx.state_sharding(opt, params, zero_axis="data" if layout == "zero1" else None)
    if state is None:
        state = jax.jit(opt.init, out_shardings=s_sh)(params)
    step = jax.jit(functools.partial(_step, opt), out_shardings=(p_sh, s_sh, None))
    xs, ys = _batches()
    batch = NamedSharding(MESH, P("data"))
    for t in range(start, start + steps):
        x, y = jax.device_put((xs[t], ys[t]), batch)
        params, state, _ = jax.block_until_ready(step(params, state, x, y))  # see conftest
    return params, state, s_sh


def _close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def _identical(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@functools.cache
def _reference(name):
    return jax.device_get(_one_device(OPTIMIZERS[name]())[0])


@pytest.mark.parametrize("layout", ["dp", "fsdp", "zero1"])
@pytest.mark.parametrize("name", ["adamw", "muon", "partition", "schedule"])  # SOAP, Kron: whole
def test_sharded_training_gives_one_devices_parameters(name, layout):
    opt = OPTIMIZERS[name]()
    params, state, s_sh = _sharded(opt, layout)
    ref = _reference(name)
    assert not np.allclose(ref[0]["w"], _params0()[0]["w"], atol=1e-3)  # it trained
    _close(params, ref)
    # the state is where state_sharding put it, and that is what each layout means
    for (path, leaf), want in zip(
        jax.tree_util.tree_flatten_with_path(state)[0], jax.tree_util.tree_leaves(s_sh), strict=True
    ):
        where = jax.tree_util.keystr(path)
        assert leaf.sharding.is_equivalent_to(want, leaf.ndim), where
        if leaf.ndim == 0 or layout == "dp":
            assert leaf.sharding.is_fully_replicated, where
        elif layout == "zero1" and any(d % 8 == 0 for d in leaf.shape):
            assert leaf.sharding.spec[[d % 8 == 0 for d in leaf.shape].index(True)] == "data"
        elif layout == "fsdp" and leaf.shape in {(64, 128), (128, 16), (128,), (16,)}:
            assert leaf.sharding.is_equivalent_to(NamedSharding(MESH, P("data")), leaf.ndim)


def test_zero1_moments_take_an_eighth_of_the_bytes_on_every_device():
    opt = OPTIMIZERS["adamw"]()
    _, state, _ = _sharded(opt, "zero1", steps=1)
    _, dp_state, _ = _sharded(opt, "dp", steps=1)
    moments = [state[0].mu, state[0].nu]
    total = sum(x.nbytes for x in jax.tree_util.tree_leaves(moments))
    n_params = sum(np.size(x) for x in jax.tree_util.tree_leaves(_params0()))
    assert total == 2 * 4 * n_params
    for d in jax.devices():
        here = sum(
            s.data.nbytes
            for x in jax.tree_util.tree_leaves(moments)
            for s in x.addressable_shards
            if s.device == d
        )
        assert here * 8 == total
        dp_here = sum(
            s.data.nbytes
            for x in jax.tree_util.tree_leaves([dp_state[0].mu, dp_state[0].nu])
            for s in x.addressable_shards
            if s.device == d
        )
        assert dp_here == total  # data parallel keeps a full copy on every device


def test_jitted_init_puts_each_moment_with_its_parameter():
    # No out_shardings: the state follows the parameters by itself, scalars replicated.
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("a", "b"))
    specs = [{"w": P("b", "a"), "b": P("b")}, {"w": P(None, "a"), "b": P()}]
    params = jax.device_put(
        _params0(), jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), specs)
    )
    opt = gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adamw(1e-3))
    state = jax.jit(opt.init)(params)
    for moments in (state[1][0].mu, state[1][0].nu):
        for m, p in zip(
            jax.tree_util.tree_leaves(moments), jax.tree_util.tree_leaves(params), strict=True
        ):
            assert m.sharding.is_equivalent_to(p.sharding, m.ndim)
    assert state[1][0].count.sharding.is_fully_replicated
    assert len(state[1][0].count.sharding.device_set) == 8


def test_explicit_mesh_training_with_global_norm_clipping_gives_one_devices_parameters():
    # jax.make_mesh's axes are Explicit: shardings are part of the arrays' types, and the
    # global norm must not ravel a sharded leaf (the clip threshold is crossed at every step).
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    rng = np.random.default_rng(1)
    target = {"w": rng.standard_normal((64, 128)), "b": rng.standard_normal(128)}
    target = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), target)
    opt = gradtx.chain(gradtx.clip_by_global_norm(0.5), gradtx.adamw(1e-2))

    def run(params):
        state = jax.jit(opt.init)(params)

        @jax.jit
        def step(params, state):
            g = jax.grad(lambda p: gradtx.tree.norm(gradtx.tree.sub(p, target), squared=True))(
                params
            )
            u, state = opt.update(g, state, params)
            return gradtx.apply_updates(params, u), state

        for _ in range(STEPS):
            params, state = step(params, state)
        return params, state

    zeros = jax.tree_util.tree_map(jnp.zeros_like, target)
    with jax.set_mesh(mesh):
        params = jax.device_put(zeros, NamedSharding(mesh, P("data")))
        params, state = run(params)
    assert jax.typeof(state[1][0].mu["w"]).sharding.spec == P("data", None)
    ref, _ = run(jax.device_put(zeros, jax.devices()[0]))
    assert not np.allclose(ref["w"], 0, atol=1e-3)
    _close(params, ref)
