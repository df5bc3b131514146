"""Optimizer state across devices: the sharding of every state leaf, from the parameters'.

gradtx adds no communication of its own. A training step is a ``jax.jit`` of gradient, update
and ``apply_updates``; where the parameters and state live is said with ``NamedSharding``s and
XLA inserts the collectives. What gradtx provides is the state's half of that description:

* ``init`` works on abstract parameters (``jax.eval_shape(opt.init, params)``) and, under
  ``jax.jit`` with sharded parameters, every state leaf that mirrors a parameter comes out with
  that parameter's sharding (scalars replicated);
* :func:`state_sharding` gives the sharding tree of the state for ``out_shardings``,
  ``jax.device_put`` or a checkpoint restore, following the parameters (data parallel, FSDP) or
  splitting the state along a data-parallel axis while the parameters stay replicated (ZeRO
  stage 1);
* :func:`abstract_state` gives the same as ``jax.ShapeDtypeStruct``s, which is what orbax needs
  to restore a checkpoint onto a mesh.

Which state leaves mirror which parameter is read from the state itself: a subtree shaped like
the parameters maps leaf to leaf; otherwise a leaf whose key path contains a parameter's key
path belongs to that parameter. A leaf of the parameter's shape takes its sharding, a leaf of
shape ``(k, *param.shape)`` (a history, a stack) takes it on the trailing axes, and any other
leaf (a Kronecker factor, a step count, a factored second moment) is replicated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec, Sharding, SingleDeviceSharding

__all__ = ["abstract_state", "state_sharding"]

_OWNER = "state_sharding"


def _init_of(owner: str, opt: Any) -> Callable[[Any], Any]:
    if hasattr(opt, "init"):
        return opt.init
    raise TypeError(
        f"{owner}: opt must be a transform with an init method, got {type(opt).__name__}"
    )


def _abstract_init(init: Callable[[Any], Any], params: Any) -> Any:
    """The state's shapes and dtypes, from the params' alone (their shardings are not traced)."""
    return jax.eval_shape(
        init, jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), params)
    )


def _param_shardings(owner: str, params: Any, shardings: Any, mesh: Any) -> list:
    """One ``Sharding`` per params leaf, from ``shardings`` or the leaves' own ``.sharding``."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    if shardings is None:
        out = [getattr(x, "sharding", None) for x in leaves]
        for (path, _), s in zip(jax.tree_util.tree_flatten_with_path(params)[0], out, strict=True):
            if not isinstance(s, Sharding):
                raise ValueError(
                    f"{owner}: the parameter at {jax.tree_util.keystr(path)} has no sharding; "
                    "pass arrays placed on devices, jax.ShapeDtypeStruct(..., sharding=...), or "
                    "shardings= (a tree of Shardings or PartitionSpecs with the params' structure)"
                )
        return out
    try:
        given = treedef.flatten_up_to(shardings)
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{owner}: shardings must have the params' structure ({treedef}), got "
            f"{jax.tree_util.tree_structure(shardings, is_leaf=_is_spec)}"
        ) from e
    out = []
    for s in given:
        if isinstance(s, PartitionSpec):
            if mesh is None:
                raise ValueError(f"{owner}: PartitionSpec shardings need mesh=, got mesh=None")
            s = NamedSharding(mesh, s)
        if not isinstance(s, Sharding):
            raise TypeError(
                f"{owner}: shardings must hold jax.sharding.Sharding or PartitionSpec leaves, "
                f"got {type(s).__name__}"
            )
        out.append(s)
    return out


def _is_spec(x: Any) -> bool:
    return isinstance(x, PartitionSpec)


def _spec(s: Sharding, ndim: int) -> tuple:
    """The spec of a NamedSharding padded to ``ndim`` entries."""
    spec = tuple(s.spec)
    return spec + (None,) * (ndim - len(spec))


def _axes_of(entry: Any) -> tuple:
    if entry is None:
        return ()
    return tuple(entry) if isinstance(entry, tuple) else (entry,)


def _owners(state: Any, params: Any) -> list[int | None]:
    """For each state leaf, the index of the params leaf it belongs to (or ``None``)."""
    p_paths, p_def = jax.tree_util.tree_flatten_with_path(params)
    p_def = jax.tree_util.tree_structure(params)
    index = {tuple(path): i for i, (path, _) in enumerate(p_paths)}
    structural = p_def.num_leaves > 1 or p_def.num_nodes > 1  # a bare array matches everything

    def params_shaped(x: Any) -> bool:
        return structural and jax.tree_util.tree_structure(x) == p_def

    owners: list[int | None] = []
    for path, node in jax.tree_util.tree_flatten_with_path(state, is_leaf=params_shaped)[0]:
        if params_shaped(node):
            owners.extend(range(p_def.num_leaves))
            continue
        path = tuple(path)
        best, best_key = None, None
        for i in range(len(path) + 1):  # the longest parameter path inside this one, rightmost
            for j in range(i, len(path) + 1):
                k = index.get(path[i:j])
                if k is not None and (best_key is None or (j - i, j) > best_key):
                    best, best_key = k, (j - i, j)
        owners.append(best)
    return owners


def state_sharding(
    opt: Any,
    params: Any,
    shardings: Any = None,
    *,
    mesh: jax.sharding.Mesh | None = None,
    zero_axis: str | Sequence[str] | None = None,
) -> Any:
    """The sharding of every leaf of ``opt.init(params)``, as a tree with the state's structure.

    By default the state follows the parameters: a leaf that mirrors a parameter (a moment, an
    accumulator) gets that parameter's sharding, a leaf of shape ``(k, *param.shape)`` gets it
    on its trailing axes, everything else (step counts, scalars, Kronecker factors) is
    replicated. With parameters replicated that is plain data parallelism; with parameters
    split over a mesh axis it is FSDP.

    ``zero_axis`` adds ZeRO stage 1: every state leaf with at least one axis is also split
    along the named mesh axis (or axes), on its first axis that is not sharded yet and whose
    size the axis size divides. The parameters stay as they are (typically replicated), so the
    optimizer's memory per device is divided by the axis size; the update runs on each shard
    and XLA gathers the updated parameters.

    Args:
        opt: the transform (anything with ``init``).
        params: the parameters: arrays placed on devices, or ``jax.ShapeDtypeStruct``s (with a
            ``sharding`` unless ``shardings`` is given).
        shardings: optional tree with the params' structure of ``Sharding``s or
            ``PartitionSpec``s (these need ``mesh``); defaults to the params' ``.sharding``.
        mesh: the mesh for ``PartitionSpec`` shardings and replicated leaves (default: the mesh
            of the params' ``NamedSharding``s).
        zero_axis: a mesh axis name (or several) to split the state along, or ``None``.

    Returns:
        A tree with the structure of ``jax.eval_shape(opt.init, params)`` whose leaves are
        ``jax.sharding.Sharding``s, ready for ``jax.jit(..., out_shardings=...)``.

    Example:
        >>> import jax, jax.numpy as jnp, numpy as np, gradtx
        >>> from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        >>> mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
        >>> params = {"w": jnp.zeros((4, 2)), "b": jnp.zeros(2)}
        >>> params = jax.device_put(params, NamedSharding(mesh, P()))
        >>> opt = gradtx.adamw(1e-3)
        >>> sh = gradtx.state_sharding(opt, params, zero_axis="data")
        >>> sh[0].mu["w"].spec, sh[0].count.spec
        (P('data',), P())
        >>> state = jax.jit(opt.init, out_shardings=sh)(params)

    References: Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion
    Parameter Models", SC 2020; Xu et al., "Automatic Cross-Replica Sharding of Weight Update in
    Data-Parallel Training", arXiv:2004.13336, 2020.
    """
    init = _init_of(_OWNER, opt)
    p_shard = _param_shardings(_OWNER, params, shardings, mesh)
    p_leaves = jax.tree_util.tree_leaves(params)
    state = _abstract_init(init, params)
    s_leaves, s_def = jax.tree_util.tree_flatten(state)
    owners = _owners(state, params)

    meshes = {s.mesh for s in p_shard if isinstance(s, NamedSharding)}
    if mesh is None:
        if len(meshes) > 1:
            raise ValueError(
                f"{_OWNER}: the params are on {len(meshes)} different meshes; pass mesh="
            )
        mesh = next(iter(meshes), None)
    if mesh is None:  # no NamedSharding anywhere: every leaf where the params are
        devices = set(p_shard)
        if len(devices) != 1 or zero_axis is not None:
            raise ValueError(
                f"{_OWNER}: the params' shardings are not NamedShardings "
                f"({sorted(map(str, devices))}); pass mesh= and NamedSharding or PartitionSpec "
                "shardings"
            )
        only = next(iter(devices))
        return s_def.unflatten([only] * len(s_leaves))

    zero = (
        ()
        if zero_axis is None
        else _axes_of(tuple(zero_axis) if not isinstance(zero_axis, str) else zero_axis)
    )
    for a in zero:
        if a not in mesh.shape:
            raise ValueError(
                f"{_OWNER}: zero_axis {a!r} is not an axis of the mesh {dict(mesh.shape)}"
            )
    zero_size = math.prod(mesh.shape[a] for a in zero)

    out = []
    for leaf, owner in zip(s_leaves, owners, strict=True):
        shape = tuple(leaf.shape)
        spec: list = [None] * len(shape)
        if owner is not None:
            ps, p_shape = p_shard[owner], tuple(np.shape(p_leaves[owner]))
            if isinstance(ps, SingleDeviceSharding) and shape == p_shape and not zero:
                out.append(ps)
                continue
            n = len(p_shape)
            if (
                isinstance(ps, NamedSharding)
                and len(shape) >= n
                and shape[len(shape) - n :] == p_shape
            ):
                spec[len(shape) - n :] = _spec(ps, n)
        if zero and shape:
            used = {a for e in spec for a in _axes_of(e)}
            if not used & set(zero):
                for i, (e, d) in enumerate(zip(spec, shape, strict=True)):
                    if e is None and d % zero_size == 0:
                        spec[i] = zero[0] if len(zero) == 1 else zero
                        break
        while spec and spec[-1] is None:
            spec.pop()
        out.append(NamedSharding(mesh, PartitionSpec(*spec)))
    return s_def.unflatten(out)


def abstract_state(
    opt: Any,
    params: Any,
    shardings: Any = None,
    *,
    mesh: jax.sharding.Mesh | None = None,
    zero_axis: str | Sequence[str] | None = None,
) -> Any:
    """``jax.eval_shape(opt.init, params)`` with the shardings of :func:`state_sharding`.

    The tree of ``jax.ShapeDtypeStruct``\\ s that describes a state without allocating it: the
    target of an orbax restore onto a mesh, or the input of ``jax.jit(...).lower``.

    Its arguments (``opt``, ``params``, ``shardings``, ``mesh``, ``zero_axis``) mean what they
    mean for :func:`state_sharding`.

    Example:
        >>> import jax, jax.numpy as jnp, gradtx
        >>> params = {"w": jnp.zeros((4, 2))}
        >>> gradtx.abstract_state(gradtx.sgd(0.1, momentum=0.9), params)[0].trace["w"].shape
        (4, 2)
    """
    sh = state_sharding(opt, params, shardings, mesh=mesh, zero_axis=zero_axis)
    state = _abstract_init(_init_of("abstract_state", opt), params)
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, sh
    )


def _check_mesh_axis(owner: str, mesh: Any, mesh_axis: Any) -> None:
    """``mesh`` and ``mesh_axis`` of a matrix optimizer: both or neither, the axis in the mesh."""
    if (mesh is None) != (mesh_axis is None):
        raise ValueError(
            f"{owner}: mesh and mesh_axis go together (whole matrices are given to the devices "
            f"along mesh_axis of mesh), got mesh={mesh!r} and mesh_axis={mesh_axis!r}"
        )
    if mesh is None:
        return
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"{owner}: mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if mesh_axis not in mesh.shape:
        raise ValueError(
            f"{owner}: mesh_axis must be an axis of the mesh {dict(mesh.shape)}, got {mesh_axis!r}"
        )


def _map_whole_matrices(
    fn: Callable[..., Any], items: list, args: tuple, mesh: Any, axis: str, gather: bool = False
) -> list:
    """``fn(batch, *args)`` on every stack of items in ``items``, with whole items given to the
    devices along mesh ``axis``.

    An item is an array ``(B_i, …)`` or a pytree of them sharing the batch ``B_i`` (a matrix
    and its factors, say). Items of one structure, shapes and dtypes are stacked into one batch,
    padded to a multiple of the axis size with copies of the group's last matrix and split along
    the batch over ``axis`` (``shard_map``), so each device runs ``fn`` on the matrices it holds
    entirely: the computation needs no communication, and only its results are gathered back.
    ``fn`` must treat the members of a batch independently and return arrays (or a pytree of
    them) with the batch as leading axis; ``args`` are replicated. The padding repeats real
    matrices, so whatever ``fn`` computes on them (and its derivative) is finite where the
    members' is. With ``gather``, each device gets every result (one all-gather per output of a
    stack, for results that are replicated or that each device slices its share from);
    otherwise the results stay split along ``axis`` for XLA to move where they are used.
    """
    groups: dict[Any, list[int]] = {}
    for i, item in enumerate(items):
        leaves, treedef = jax.tree_util.tree_flatten(item)
        key = (treedef, tuple((y.shape[1:], jnp.result_type(y)) for y in leaves))
        groups.setdefault(key, []).append(i)
    n = mesh.shape[axis]
    out: list = [None] * len(items)
    arg_specs = (PartitionSpec(),) * len(args)

    def gathered(*a: Any) -> Any:
        out = fn(*a)
        return jax.tree_util.tree_map(lambda r: jax.lax.all_gather(r, axis, tiled=True), out)

    local = jax.shard_map(
        gathered if gather else fn,
        mesh=mesh,
        in_specs=(PartitionSpec(axis), *arg_specs),
        out_specs=PartitionSpec() if gather else PartitionSpec(axis),
        check_vma=not gather,  # an all-gather's result is the same on every device
    )

    def stack(*parts: jax.Array) -> jax.Array:
        total = sum(p.shape[0] for p in parts)
        last = parts[-1][-1:]
        pad = [jnp.broadcast_to(last, (-total % n, *last.shape[1:]))] if total % n else []
        parts = [*parts, *pad]
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts)

    for members in groups.values():
        result = local(jax.tree_util.tree_map(stack, *[items[i] for i in members]), *args)
        start = 0
        for i in members:
            size = jax.tree_util.tree_leaves(items[i])[0].shape[0]
            out[i] = jax.tree_util.tree_map(lambda r, a=start, b=start + size: r[a:b], result)
            start += size
    return out


def _each_whole(fn: Callable[..., Any], items: list[tuple], mesh: Any, axis: str | None) -> list:
    """``fn(*item)`` for every item (a tuple of arrays or of pytrees of them): one after another
    without a mesh ``axis``; with one, batched (``jax.vmap``) over stacks of items given whole to
    the devices along ``axis`` (:func:`_map_whole_matrices`), every device getting every result."""
    if axis is None:
        return [fn(*item) for item in items]
    stacked = [jax.tree_util.tree_map(lambda x: x[None], item) for item in items]
    done = _map_whole_matrices(
        lambda batch: jax.vmap(fn)(*batch), stacked, (), mesh, axis, gather=True
    )
    return [jax.tree_util.tree_map(lambda r: r[0], d) for d in done]
