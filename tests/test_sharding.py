"""state_sharding's rules on one device (the 8-device runs are in tests/multidevice): which state
leaves follow which parameter, stacked histories, ZeRO-1's choice of axis, and the errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import gradtx

MESH = Mesh(np.array(jax.devices()[:1]).reshape(1, 1), ("data", "model"))


def _params():
    return {
        "dense": {"w": jnp.ones((4, 6)), "b": jnp.zeros(6)},
        "head": {"w": jnp.ones((6, 3)), "b": jnp.zeros(3)},
    }


SPECS = {
    "dense": {"w": P("model", None), "b": P("model")},
    "head": {"w": P(None, "model"), "b": P()},
}


def _specs(tree):
    return jax.tree_util.tree_map(lambda s: tuple(s.spec), tree)


def _with_shardings(params, specs):
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(MESH, s)),
        params,
        specs,
        is_leaf=lambda x: isinstance(x, P),
    )


def test_moments_follow_their_parameter_and_counts_are_replicated():
    opt = gradtx.adamw(1e-3)
    sh = gradtx.state_sharding(opt, _params(), SPECS, mesh=MESH)
    assert (
        _specs(sh[0].mu)
        == _specs(sh[0].nu)
        == {
            "dense": {"w": ("model",), "b": ("model",)},
            "head": {"w": (None, "model"), "b": ()},
        }
    )
    assert tuple(sh[0].count.spec) == ()
    # the same from ShapeDtypeStructs carrying their shardings, and from placed arrays
    again = gradtx.state_sharding(opt, _with_shardings(_params(), SPECS))
    assert _specs(again) == _specs(sh)


def test_histories_take_the_parameters_sharding_on_their_trailing_axes():
    opt = gradtx.lbfgs(memory_size=5)
    state = jax.eval_shape(opt.init, _params())
    sh = gradtx.state_sharding(opt, _params(), SPECS, mesh=MESH)
    leaves = jax.tree_util.tree_flatten_with_path(state)[0]
    found = 0
    for (path, leaf), s in zip(leaves, jax.tree_util.tree_leaves(sh), strict=True):
        if leaf.shape == (5, 4, 6):  # (memory, *dense.w.shape)
            assert tuple(s.spec) == (None, "model"), jax.tree_util.keystr(path)
            found += 1
        elif leaf.shape == (5, 6, 3):
            assert tuple(s.spec) == (None, None, "model"), jax.tree_util.keystr(path)
            found += 1
    assert found == 4  # s and y histories of both matrices


def test_leaves_of_other_shapes_are_replicated():
    # SOAP's Kronecker factors (n, n) and Adafactor's row/column statistics are not moments
    for opt in (gradtx.soap(1e-3), gradtx.adafactor(1e-3)):
        state = jax.eval_shape(opt.init, _params())
        sh = gradtx.state_sharding(opt, _params(), SPECS, mesh=MESH)
        params_shapes = {(4, 6), (6,), (6, 3), (3,)}
        leaves = zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(sh), strict=True)
        for leaf, s in leaves:
            if leaf.shape not in params_shapes:
                assert tuple(s.spec) == (), (type(opt).__name__, leaf.shape, s.spec)
    soap = gradtx.state_sharding(gradtx.soap(1e-3), _params(), SPECS, mesh=MESH)
    assert tuple(soap[0].mu["dense"]["w"].spec) == ("model",)  # SOAP's own Adam moments
    assert tuple(soap[0].nu["head"]["w"].spec) == (None, "model")


def test_masked_and_partitioned_states_find_their_parameters_by_path():
    labels = {"dense": {"w": "a", "b": "b"}, "head": {"w": "a", "b": "b"}}
    opt = gradtx.partition({"a": gradtx.adam(0.1), "b": gradtx.sgd(0.1, momentum=0.9)}, labels)
    sh = gradtx.state_sharding(opt, _params(), SPECS, mesh=MESH)
    adam = sh.inner_states["a"].inner_state[0]
    assert tuple(adam.mu["dense"]["w"].spec) == ("model",)
    assert tuple(adam.nu["head"]["w"].spec) == (None, "model")
    sgd = sh.inner_states["b"].inner_state[0]
    assert tuple(sgd.trace["dense"]["b"].spec) == ("model",)


def test_zero1_splits_the_first_free_divisible_axis():
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    params = {"w": jnp.ones((3, 8)), "v": jnp.ones((4, 5)), "odd": jnp.ones(7)}
    opt = gradtx.adam(1e-3)
    sh = gradtx.state_sharding(opt, params, {k: P() for k in params}, mesh=mesh, zero_axis="data")
    # with a 1-device axis every size divides: the first axis of each moment
    assert _specs(sh[0].mu) == {"w": ("data",), "v": ("data",), "odd": ("data",)}
    assert tuple(sh[0].count.spec) == ()
    # an axis the parameter is already split over is not used twice
    specs = {"w": P(None, "data"), "v": P(), "odd": P()}
    sh = gradtx.state_sharding(opt, params, specs, mesh=mesh, zero_axis="data")
    assert tuple(sh[0].mu["w"].spec) == (None, "data")


def test_zero1_skips_axes_the_mesh_axis_does_not_divide():
    # The rule on its own (no 8 devices here): sizes 3 and 5 with an axis of 2 stay whole.
    mesh = jax.sharding.AbstractMesh((2,), ("data",))
    params = {
        "w": jax.ShapeDtypeStruct((3, 4), jnp.float32),
        "v": jax.ShapeDtypeStruct((5,), jnp.float32),
    }
    sh = gradtx.state_sharding(
        gradtx.adam(1e-3), params, {"w": P(), "v": P()}, mesh=mesh, zero_axis="data"
    )
    assert tuple(sh[0].mu["w"].spec) == (None, "data")
    assert tuple(sh[0].mu["v"].spec) == ()


def test_arrays_on_one_device_give_that_device_everywhere():
    params = jax.device_put(_params(), jax.devices()[0])
    sh = gradtx.state_sharding(gradtx.adam(0.1), params)
    assert {s for s in jax.tree_util.tree_leaves(sh)} == {
        jax.sharding.SingleDeviceSharding(jax.devices()[0])
    }


def test_abstract_state_carries_shapes_dtypes_and_shardings():
    opt = gradtx.sgd(0.1, momentum=0.9)
    abstract = gradtx.abstract_state(opt, _params(), SPECS, mesh=MESH)
    trace = abstract[0].trace["dense"]["w"]
    assert isinstance(trace, jax.ShapeDtypeStruct)
    assert trace.shape == (4, 6) and trace.dtype == jnp.float32
    assert tuple(trace.sharding.spec) == ("model",)
    state = jax.jit(opt.init, out_shardings=jax.tree_util.tree_map(lambda a: a.sharding, abstract))(
        _params()
    )
    restored = gradtx.load_state_dict(abstract, gradtx.state_dict(state))
    assert restored[0].trace["dense"]["w"].sharding == trace.sharding


def test_bad_arguments_name_the_function_and_the_value():
    params = _params()
    with pytest.raises(
        ValueError, match=r"state_sharding: the parameter at \['dense'\]\['b'\] has no sharding"
    ):
        gradtx.state_sharding(gradtx.adam(0.1), jax.eval_shape(lambda: params))
    with pytest.raises(ValueError, match="state_sharding: PartitionSpec shardings need mesh="):
        gradtx.state_sharding(gradtx.adam(0.1), params, SPECS)
    with pytest.raises(
        ValueError, match="state_sharding: shardings must have the params' structure"
    ):
        gradtx.state_sharding(gradtx.adam(0.1), params, {"dense": P()}, mesh=MESH)
    with pytest.raises(TypeError, match="state_sharding: shardings must hold .* got str"):
        gradtx.state_sharding(
            gradtx.adam(0.1), params, jax.tree_util.tree_map(lambda _: "x", params), mesh=MESH
        )
    with pytest.raises(
        ValueError, match=r"state_sharding: zero_axis 'dp' is not an axis of the mesh"
    ):
        gradtx.state_sharding(gradtx.adam(0.1), params, SPECS, mesh=MESH, zero_axis="dp")
    with pytest.raises(TypeError, match="state_sharding: opt must be a transform with an init"):
        gradtx.state_sharding(3, params, SPECS, mesh=MESH)
