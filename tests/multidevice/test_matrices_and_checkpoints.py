"""Muon giving whole matrices to devices; every registry optimizer's jitted init following the
parameters; checkpoints moving between 8 devices and 1."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import registry
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from test_sharded_training import (
    MESH,
    OPTIMIZERS,
    _close,
    _identical,
    _one_device,
    _params0,
    _reference,
    _sharded,
)

import gradtx

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")


def collectives(compiled_text: str) -> dict[str, int]:
    """How many of each collective a compiled HLO module runs (async pairs counted once)."""
    return {k: len(re.findall(rf"\b{k}(?:-start)?\(", compiled_text)) for k in COLLECTIVES}


def _muon_update_hlo(opt, params, grads):
    state = jax.jit(opt.init)(params)
    return jax.jit(opt.update).lower(grads, state, params).compile().as_text()


def test_muon_on_whole_matrices_needs_no_collective_inside_the_iteration():
    rng = np.random.default_rng(0)
    shapes = [(128, 128)] * 6 + [(64, 128), (128, 64)]  # two shapes: two stacks
    params = {
        f"w{i}": jnp.asarray(rng.standard_normal(s), jnp.float32) for i, s in enumerate(shapes)
    }
    params = jax.device_put(params, NamedSharding(MESH, P("data")))  # FSDP: rows split 8 ways
    grads = jax.tree_util.tree_map(lambda p: jnp.cos(3 * p), params)
    naive = gradtx.scale_by_muon()
    whole = gradtx.scale_by_muon(mesh=MESH, mesh_axis="data")
    n = collectives(_muon_update_hlo(naive, params, grads))
    w = collectives(_muon_update_hlo(whole, params, grads))
    # Naive: the Gram matrices of a row-split matrix are gathered and reduced in each of the 5
    # iterations of each matrix. Whole matrices: one exchange into the stacks per shape group
    # (all-to-all) and one back, nothing inside the iteration.
    assert n["all-gather"] + n["all-reduce"] >= 5 * len(shapes)
    assert w["all-gather"] == w["all-reduce"] == w["reduce-scatter"] == 0
    assert 0 < sum(w.values()) <= 2 * 3  # the 128x128 stack, the 64x128 one and its transpose
    u_naive, _ = jax.jit(naive.update)(grads, naive.init(params), params)
    u_whole, _ = jax.jit(whole.update)(grads, whole.init(params), params)
    host = jax.device_get((grads, params))
    u_one, _ = naive.update(host[0], naive.init(host[1]), host[1])
    _close(u_whole, u_naive)
    _close(u_whole, u_one)
    for u, p in zip(
        jax.tree_util.tree_leaves(u_whole), jax.tree_util.tree_leaves(params), strict=True
    ):
        assert u.sharding.is_equivalent_to(p.sharding, u.ndim)  # results back in FSDP layout


@pytest.mark.parametrize("layout", ["fsdp", "zero1"])
def test_muon_on_whole_matrices_trains_as_on_one_device(layout):
    opt = OPTIMIZERS["muon"](mesh=MESH, mesh_axis="data")
    params, _, _ = _sharded(opt, layout)
    _close(params, _reference("muon"))


def test_normuon_on_whole_matrices_trains_as_on_one_device():
    opt = OPTIMIZERS["normuon"](mesh=MESH, mesh_axis="data")
    params, _, _ = _sharded(opt, "fsdp")
    ref = _reference("normuon")
    assert not np.allclose(ref[0]["w"], _params0()[0]["w"], atol=1e-3)  # it trained
    _close(params, ref)


def test_muon_mesh_arguments_are_checked():
    with pytest.raises(ValueError, match="scale_by_muon: mesh and mesh_axis go together"):
        gradtx.scale_by_muon(mesh=MESH)
    with pytest.raises(ValueError, match=r"mesh_axis must be an axis of the mesh .*'model'"):
        gradtx.scale_by_muon(mesh=MESH, mesh_axis="model")
    with pytest.raises(TypeError, match="muon: mesh must be a jax.sharding.Mesh"):
        gradtx.muon(0.1, mesh="data", mesh_axis="data")


def decomposed_matrices(compiled_text: str) -> dict[str, int]:
    """How many matrices one device hands to each LAPACK routine (eigh, QR, triangular solve) in
    a compiled module: a batched call counts its batch."""
    out: dict[str, int] = {}
    for target, dims in re.findall(
        r'custom_call_target="lapack_(\w+?)_ffi", operand_layout_constraints=\{\w+\[([\d,]*)\]',
        compiled_text,
    ):
        shape = [int(d) for d in dims.split(",")]
        target = target[1:]  # without the dtype's letter: syevd, geqrf, trsm
        out[target] = out.get(target, 0) + int(np.prod(shape[:-2]))
    return out


WHOLE = {  # every step refreshes SOAP's bases and refits Kron's factors
    "soap": lambda **kw: gradtx.scale_by_soap(precondition_frequency=1, **kw),
    "kron": lambda **kw: gradtx.scale_by_kron(preconditioner_update_probability=1.0, **kw),
}


@pytest.mark.parametrize("name", sorted(WHOLE))
def test_soap_and_kron_on_whole_matrices_split_the_work_and_keep_the_numbers(name, x64):
    # float64: in float32, one device and 8 sum the factors' products in different orders, and
    # SOAP's first Adam steps in the rotated basis (entries of order 1) show it at 1e-4. Square
    # matrices: a factor of a wide matrix is rank-deficient, its null-space basis arbitrary.
    rng = np.random.default_rng(0)
    shapes = [(64, 64)] * 6 + [(32, 32)] * 2  # 12 factors of 64x64 and 4 of 32x32
    params = {
        f"w{i}": jnp.asarray(rng.standard_normal(s), jnp.float64) for i, s in enumerate(shapes)
    }
    params = jax.device_put(params, NamedSharding(MESH, P("data")))  # FSDP
    naive, whole = WHOLE[name](), WHOLE[name](mesh=MESH, mesh_axis="data")
    states = {"naive": jax.jit(naive.init)(params), "whole": jax.jit(whole.init)(params)}
    dev = jax.devices()[0]
    host = jax.device_put(jax.device_get(params), dev)
    one = naive.init(host)
    one_step = jax.jit(naive.update)
    steps = {"naive": jax.jit(naive.update), "whole": jax.jit(whole.update)}
    for t in range(3):  # SOAP: eigh at the first step, power step and QR at the next two
        grads = jax.tree_util.tree_map(lambda p, t=t: jnp.cos((t + 3) * p), params)
        for key in ("naive", "whole"):
            u, states[key] = jax.block_until_ready(steps[key](grads, states[key], params))
            if key == "naive":
                u_naive = u
        u_one, one = one_step(jax.device_put(jax.device_get(grads), dev), one, host)
        _close(u, u_naive)
        _close(u, u_one)
        _close(states["whole"], states["naive"])
    texts = {k: f.lower(grads, states[k], params).compile().as_text() for k, f in steps.items()}
    # Where the work went, per device. Naive: every one of the 16 factors. Whole: SOAP stacks
    # factors by size, ceil(12/8) + ceil(4/8) = 3; Kron stacks leaves by shape, ceil(6/8) +
    # ceil(2/8) = 2 leaves with 2 triangular factors each.
    n, w = decomposed_matrices(texts["naive"]), decomposed_matrices(texts["whole"])
    want = {"soap": {"syevd": 3, "geqrf": 3}, "kron": {"trsm": 4}}[name]
    for r, k in want.items():
        assert n[r] == 16 and w[r] == k, (r, n, w)
    print(
        name, "collectives naive", collectives(texts["naive"]), "whole", collectives(texts["whole"])
    )


def test_kron_on_whole_matrices_trains_as_on_one_device():
    params, _, _ = _sharded(OPTIMIZERS["kron"](mesh=MESH, mesh_axis="data"), "fsdp")
    _close(params, _reference("kron"))


def test_soap_on_whole_matrices_trains_as_with_split_matrices(x64):
    # Against the split form on the same mesh, not one device: the MLP's factors are
    # rank-deficient (wide matrices, always-blank pixels), with clusters of tiny eigenvalues
    # whose eigenvectors turn with the last bit of the factor, so an 8-device sum and a
    # one-device sum (another order) give other bases there, and SOAP's Adam step, a
    # normalised one, shows it at the step size (0.014 after one step, even in float64).
    # The square matrices of the test above do match one device.
    opt = OPTIMIZERS["soap"]
    p64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), _params0())
    whole, _, _ = _sharded(opt(mesh=MESH, mesh_axis="data"), "fsdp", params=p64)
    split, _, _ = _sharded(opt(), "fsdp", params=p64)
    assert not np.allclose(split[0]["w"], p64[0]["w"], atol=1e-3)  # it trained
    _close(whole, split)


def test_soap_and_kron_mesh_arguments_are_checked():
    with pytest.raises(ValueError, match="scale_by_soap: mesh and mesh_axis go together"):
        gradtx.scale_by_soap(mesh=MESH)
    with pytest.raises(ValueError, match=r"kron: mesh_axis must be an axis .*'model'"):
        gradtx.kron(1e-3, mesh=MESH, mesh_axis="model")
    with pytest.raises(TypeError, match="soap: mesh must be a jax.sharding.Mesh"):
        gradtx.soap(mesh="data", mesh_axis="data")


def test_every_optimizers_jitted_init_follows_the_parameters_and_state_sharding_agrees():
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("a", "b"))
    specs = {"w": P("b", "a"), "b": P("b"), "v": P(None, "a"), "s": P()}
    shapes = {"w": (16, 8), "b": (8,), "v": (4, 6), "s": ()}
    params = {
        k: jax.device_put(jnp.full(shapes[k], 0.5), NamedSharding(mesh, specs[k])) for k in specs
    }
    wrong = []
    for case in registry.CASES:
        opt = case.make(case.lr)
        state = jax.jit(opt.init)(params)
        planned = gradtx.state_sharding(opt, params)
        leaves = jax.tree_util.tree_flatten_with_path(state)[0]
        assert len(leaves) == len(jax.tree_util.tree_leaves(planned)), case.name
        for (path, leaf), plan in zip(leaves, jax.tree_util.tree_leaves(planned), strict=True):
            keys = [getattr(k, "key", None) for k in path]
            mirrors = [k for k in specs if k in keys and leaf.shape == shapes[k] and leaf.ndim]
            if mirrors:  # a moment of that parameter: its sharding, by itself and as planned
                want = NamedSharding(mesh, specs[mirrors[-1]])
                if not (
                    leaf.sharding.is_equivalent_to(want, leaf.ndim)
                    and plan.is_equivalent_to(want, leaf.ndim)
                ):
                    wrong.append(f"{case.name} {jax.tree_util.keystr(path)} {leaf.sharding}")
            elif leaf.ndim == 0 and not (
                plan.is_fully_replicated and len(leaf.sharding.device_set) in (1, 8)
            ):
                wrong.append(f"{case.name} {jax.tree_util.keystr(path)} scalar {plan}")
    assert not wrong, "\n".join(wrong)


def test_zero1_needs_an_axis_of_the_mesh():
    params = jax.device_put(_params0(), NamedSharding(MESH, P()))
    with pytest.raises(ValueError, match=r"state_sharding: zero_axis 'model' is not an axis"):
        gradtx.state_sharding(gradtx.adam(0.1), params, zero_axis="model")


# ----------------------------------------------------------------------------------------------
# Checkpoints across meshes.


def _save_and_restore(how, state, template, tmp_path):
    if how == "state_dict":
        np.savez(tmp_path / "opt.npz", **jax.device_get(gradtx.state_dict(state)))
        with np.load(tmp_path / "opt.npz") as saved:
            return gradtx.load_state_dict(template, saved)
    import orbax.checkpoint as ocp

    ckpt = ocp.StandardCheckpointer()
    ckpt.save(tmp_path / "opt", gradtx.state_dict(state))
    ckpt.wait_until_finished()
    restored = ckpt.restore(tmp_path / "opt", gradtx.state_dict(template))
    return gradtx.load_state_dict(template, restored)


@pytest.mark.parametrize("how", ["state_dict", "orbax"])
def test_checkpoint_from_eight_devices_resumes_on_one(how, tmp_path):
    opt = OPTIMIZERS["adamw"]()
    params, state, _ = _sharded(opt, "fsdp", steps=10)
    one = jax.devices()[0]
    host_params = jax.device_put(jax.device_get(params), one)
    template = gradtx.abstract_state(opt, host_params)  # on device 0
    restored = _save_and_restore(how, state, template, tmp_path)
    for leaf in jax.tree_util.tree_leaves(restored):
        assert leaf.sharding.device_set == {one}
    _identical(restored, jax.device_get(state))
    a = _one_device(opt, 5, host_params, restored, start=10)
    b = _one_device(opt, 5, host_params, jax.device_get(state), start=10)
    _identical(a, b)  # the restored state resumes exactly as the saved one
    _close(a[0], _sharded(opt, "fsdp", 5, params, state, start=10)[0])


@pytest.mark.parametrize("how", ["state_dict", "orbax"])
def test_checkpoint_from_one_device_resumes_on_eight(how, tmp_path):
    opt = OPTIMIZERS["adamw"]()
    params, state = _one_device(opt, 10)
    sharded_params = jax.device_put(params, NamedSharding(MESH, P("data")))
    template = gradtx.abstract_state(opt, sharded_params, zero_axis=None)
    restored = _save_and_restore(how, state, template, tmp_path)
    planned = gradtx.state_sharding(opt, sharded_params)
    for leaf, want in zip(
        jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(planned), strict=True
    ):
        assert leaf.sharding.is_equivalent_to(want, leaf.ndim)
    _identical(restored, jax.device_get(state))
    placed = jax.device_put(state, planned)
    a = _sharded(opt, "fsdp", 5, params, restored, start=10)
    b = _sharded(opt, "fsdp", 5, params, placed, start=10)
    _identical(a[:2], b[:2])
    _close(a[0], _one_device(opt, 5, params, state, start=10)[0])
