"""The gradtx contract: a transformation is an immutable pytree with ``init`` and ``update``.

A transform's numeric hyperparameters (learning rate, betas, eps, weight decay, schedule
parameters) are pytree *leaves*; its structural options (``nesterov``, dtypes, mask functions)
are *static* fields. So a jitted training step that takes the optimizer as an argument compiles
once for every learning rate, ``jax.vmap`` runs a sweep of optimizers in one call, and
``jax.grad`` differentiates through a step with respect to a hyperparameter.

A transform unpacks as ``init, update = tx``, which is all optax asks of a
``GradientTransformation``; gradtx accepts optax's transforms in :func:`chain` in return.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gradtx import numerics as tree_lib

__all__ = [
    "GradientTransformation",
    "GradientTransformationExtraArgs",
    "Params",
    "Updates",
    "OptState",
    "TransformInitFn",
    "TransformUpdateFn",
    "TransformUpdateExtraArgsFn",
    "init_empty_state",
    "stateless_with_tree_map",
    "with_extra_args_support",
    "EmptyState",
    "CountState",
    "transform",
    "static_field",
    "chain",
    "named_chain",
    "identity",
    "set_to_zero",
    "stateless",
    "apply_updates",
    "as_optax",
    "eager_jit",
    "Schedule",
    "FrozenTree",
    "ScalarOrSchedule",
    # for writing transforms of your own
    "check_range",
    "check_nonnegative",
    "check_decay",
    "check_count",
    "check_dtype",
    "concrete_float",
    "hyper",
    "is_scheduled",
    "freeze_mask",
    "resolve_mask",
    "broadcast_mask",
    "field_repr",
    "user_facing",
]

Params = Any  # a pytree of arrays: the model's parameters
Updates = Any  # a pytree shaped like the parameters: gradients in, increments out
OptState = Any  # an optimizer's state: NamedTuples, dataclasses, dicts and arrays
TransformInitFn = Callable[[Params], OptState]
TransformUpdateFn = Callable[[Updates, OptState, Params | None], tuple[Updates, OptState]]
TransformUpdateExtraArgsFn = Callable[..., tuple[Updates, OptState]]
Schedule = Callable[[jax.Array], jax.Array]
ScalarOrSchedule = float | jax.Array | Schedule


class EmptyState(NamedTuple):
    """State of a transform that keeps nothing between steps."""


class CountState(NamedTuple):
    """State holding only the number of steps taken (an int32 that saturates, never wraps)."""

    count: jax.Array


# ----------------------------------------------------------------------------------------------
# Declaring transforms.


def static_field(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A dataclass field that is part of the treedef (hashable configuration), not a leaf."""
    metadata = dict(kwargs.pop("metadata", {}) or {})
    metadata["static"] = True
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def _wrap_callables(obj: Any) -> None:
    """Plain Python functions stored as hyperparameters become static, hashable leaves-free nodes.

    A schedule that is a gradtx pytree (its numbers are leaves) is kept as it is; a bare function
    or lambda is not a valid JAX type, so it is wrapped in :class:`_StaticFn`, which flattens to
    no leaves and keeps the function in the treedef (functions hash by identity).
    """
    for f in dataclasses.fields(obj):
        if f.metadata.get("static"):
            continue
        value = getattr(obj, f.name)
        if callable(value) and not isinstance(value, _StaticFn) and _is_plain_function(value):
            object.__setattr__(obj, f.name, _StaticFn(value))


def _is_plain_function(value: Any) -> bool:
    leaves = jax.tree_util.tree_leaves(value)
    return len(leaves) == 1 and leaves[0] is value


def transform(cls: type) -> type:
    """Class decorator: a frozen dataclass registered as a pytree.

    Fields declared with :func:`static_field` go to the treedef; every other field is a child
    (numbers become leaves). Validation written in ``_check`` runs when the user builds the
    transform, on concrete values only. Unflattening (the transform coming out of ``jit``,
    ``vmap``, ``lax.scan`` or ``jax.tree.map`` with new values) refuses no value, exactly as
    inside a trace, where the values are tracers: the same code behaves the same eagerly and
    jitted.
    """
    cls = dataclasses.dataclass(frozen=True, repr=False)(cls)
    fields = dataclasses.fields(cls)
    data = tuple(f.name for f in fields if not f.metadata.get("static"))
    meta = tuple(f.name for f in fields if f.metadata.get("static"))
    keys = tuple(jax.tree_util.GetAttrKey(n) for n in data)

    def flatten(obj: Any) -> tuple[list, tuple]:
        return [getattr(obj, n) for n in data], tuple(getattr(obj, n) for n in meta)

    def flatten_with_keys(obj: Any) -> tuple[list, tuple]:
        children = [(k, getattr(obj, n)) for k, n in zip(keys, data, strict=True)]
        return children, tuple(getattr(obj, n) for n in meta)

    def unflatten(aux: tuple, children: Any) -> Any:
        kwargs = dict(zip(data, children, strict=True))
        kwargs.update(zip(meta, aux, strict=True))
        with _unchecked_values():
            return cls(**kwargs)

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    return cls


# ----------------------------------------------------------------------------------------------
# Validation helpers (used by every transform's ``_check``).


class _ValidationState(threading.local):
    unchecked: int = 0


_VALIDATION = _ValidationState()


class _unchecked_values:
    """Inside this block hyperparameter values count as unknown, as under ``jit``.

    A transform rebuilt during training from values that arrive at run time (a schedule's value,
    a hyperparameter injected through the optimizer state) is built inside this block: its
    ``_check`` runs (dtypes and masks are still normalised) but no value is refused, because
    the same code under ``jit`` sees tracers there and cannot refuse them either. So an eager
    run and a jitted run of the same training loop compute the same numbers, and never does one
    raise where the other does not. Values the user writes are checked where the user builds
    the transform.
    """

    def __enter__(self) -> _unchecked_values:
        _VALIDATION.unchecked += 1
        return self

    def __exit__(self, *exc: Any) -> None:
        _VALIDATION.unchecked -= 1


def concrete_float(value: Any) -> float | None:
    """The value as a Python float when it is a concrete real scalar, else ``None``.

    ``None`` too while a transform is rebuilt from values that arrive during training (a
    schedule's value, an injected hyperparameter): there, as under ``jit``, values are not
    known in advance and validation that relies on this helper is skipped.
    """
    if _VALIDATION.unchecked:
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray | np.generic) and np.ndim(value) == 0:
        if np.issubdtype(np.asarray(value).dtype, np.number):
            return float(np.real(value))
    if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer):
        if value.ndim == 0 and jnp.issubdtype(value.dtype, jnp.number):
            try:
                return float(np.real(np.asarray(value)))
            except Exception:  # noqa: BLE001  (a non-addressable array: leave it unchecked)
                return None
    return None


def check_range(
    owner: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise ``ValueError`` naming ``owner``, ``name`` and ``value`` when a concrete value (a
    number, or every element of a concrete array, e.g. a stacked sweep) is out of range or not
    finite, and ``TypeError`` for text. Traced values and callables (schedules) are not checked,
    nor values that arrive during training (see :func:`concrete_float`).
    """
    if isinstance(value, str | bytes | list | tuple | dict | set) and not _VALIDATION.unchecked:
        raise TypeError(f"{owner}: {name} must be a number, array or schedule, got {value!r}")
    x = concrete_float(value)
    if x is None:
        arr = _concrete_array(value)
        if arr is None or arr.size == 0:
            return
        bad = ~np.isfinite(arr)
        if low is not None:
            bad |= arr <= low if low_open else arr < low
        if high is not None:
            bad |= arr >= high if high_open else arr > high
        if not bad.any():
            return
        x = float(arr[bad].flat[0])  # report the first offending element
        value = x
    if not math.isfinite(x):
        raise ValueError(f"{owner}: {name} must be finite, got {value!r}")
    lo_bad = low is not None and (x <= low if low_open else x < low)
    hi_bad = high is not None and (x >= high if high_open else x > high)
    if lo_bad or hi_bad:
        lb = "(" if low_open else "["
        hb = ")" if high_open else "]"
        lo_s = "-inf" if low is None else f"{low:g}"
        hi_s = "inf" if high is None else f"{high:g}"
        raise ValueError(f"{owner}: {name} must be in {lb}{lo_s}, {hi_s}{hb}, got {value!r}")


def _concrete_array(value: Any) -> np.ndarray | None:
    """A concrete real NumPy/JAX array (not a tracer) as float64 NumPy, else ``None`` (also
    ``None`` while values are unchecked, see :func:`concrete_float`)."""
    if _VALIDATION.unchecked or isinstance(value, jax.core.Tracer):
        return None
    if isinstance(value, np.ndarray | jax.Array):
        if not jnp.issubdtype(value.dtype, jnp.number):
            return None
        try:
            return np.real(np.asarray(value)).astype(np.float64)
        except Exception:  # noqa: BLE001  (a non-addressable array: leave it unchecked)
            return None
    return None


def check_nonnegative(owner: str, name: str, value: Any) -> None:
    """``value >= 0`` and finite, when concrete."""
    check_range(owner, name, value, low=0.0)


def check_decay(owner: str, name: str, value: Any) -> None:
    """A decay rate (beta): ``0 <= value < 1``, when concrete."""
    check_range(owner, name, value, low=0.0, high=1.0, high_open=True)


def check_count(owner: str, name: str, value: Any, low: int = 0) -> None:
    """A count (steps, a period, a patience): a whole number ``>= low``, when concrete."""
    if isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")
    check_range(owner, name, value, low=float(low))
    x = concrete_float(value)
    arr = _concrete_array(value) if x is None else np.asarray(x)
    if arr is not None and arr.size and not np.all(arr == np.round(arr)):
        raise ValueError(f"{owner}: {name} must be an integer >= {low}, got {value!r}")


def _seed_to_key(owner: str, name: str, seed: Any) -> Any:
    """A ``random_seed`` argument as a PRNG key: an int becomes ``jax.random.PRNGKey(int)``;
    a typed key or a raw ``uint32[2]`` key, ``None`` and traced values are returned as they
    are; anything else is a ``TypeError`` naming ``owner`` and ``name``."""
    if seed is None or isinstance(seed, jax.core.Tracer):
        return seed
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        return jax.random.PRNGKey(int(seed))
    dt = getattr(seed, "dtype", None)
    if dt is not None and (
        jax.dtypes.issubdtype(dt, jax.dtypes.prng_key)
        or (np.dtype(dt) == np.uint32 and np.ndim(seed) == 1)
    ):
        return seed
    raise TypeError(
        f"{owner}: {name} must be a PRNG key (jax.random.key(0) or jax.random.PRNGKey(0)), "
        f"an int or None, got {seed!r}"
    )


def check_dtype(owner: str, name: str, value: Any) -> Any:
    """Normalise an optional dtype argument to a ``numpy.dtype`` (or ``None``)."""
    if value is None:
        return None
    try:
        dt = jnp.dtype(value)
    except TypeError as e:
        raise TypeError(f"{owner}: {name} must be a dtype or None, got {value!r}") from e
    if not jnp.issubdtype(dt, jnp.inexact):
        raise TypeError(f"{owner}: {name} must be a floating or complex dtype, got {value!r}")
    return dt


def hyper(value: Any, count: jax.Array | None) -> Any:
    """The value of a hyperparameter at a step: calls it on ``count`` if it is a schedule."""
    if callable(value):
        if count is None:
            raise ValueError("a scheduled hyperparameter needs a step count")
        return value(count)
    return value


def is_scheduled(*values: Any) -> bool:
    """Whether any of the hyperparameters is a schedule (so the transform must keep a count)."""
    return any(callable(v) for v in values)


# ----------------------------------------------------------------------------------------------
# Fast eager calls: ``update`` and ``apply_updates`` outside any trace run a compiled version.


class eager_jit:
    """Turn the compiled eager path on or off (on unless ``GRADTX_EAGER_JIT=0``).

    Called outside any ``jit``/``vmap``/``grad`` trace with concrete arrays, a transform's
    ``update`` and :func:`apply_updates` run a compiled version of themselves, cached by the
    tree structure, shapes and dtypes of their arguments and by the transform's static
    configuration; the transform's numeric hyperparameters are arguments of the compiled
    function, so a new learning rate compiles nothing. The numbers are those of the plain path
    (the same operations, fused by XLA). A call that cannot be compiled (an extra argument that
    is a function, such as ``value_fn``; a custom transform whose update needs concrete values)
    runs the plain path.

    Transforms from other libraries inside a gradtx chain, and wrappers whose eager behaviour
    differs on purpose (``apply_if_finite(..., on_max_errors="raise")`` raises
    ``FloatingPointError`` itself), keep running op by op. The first call of a new structure
    compiles (seconds for a model with a thousand arrays); every later call is one dispatch.

    Turn it off to debug a transform of your own, e.g. to ``print`` inside its ``update``:
    ``gradtx.eager_jit(False)`` switches it off until ``gradtx.eager_jit(True)``, and
    ``with gradtx.eager_jit(False): ...`` for a block only.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.sgd(0.1)
        >>> p = {"w": jnp.ones(2)}
        >>> u, _ = opt.update({"w": jnp.ones(2)}, opt.init(p))  # compiled once, then reused
        >>> with gradtx.eager_jit(False):  # op by op, as written
        ...     v, _ = opt.update({"w": jnp.ones(2)}, opt.init(p))
        >>> [round(float(x), 4) for x in u["w"]], bool((u["w"] == v["w"]).all())
        ([-0.1, -0.1], True)
        >>> gradtx.eager_jit.enabled()
        True
    """

    _enabled: bool = os.environ.get("GRADTX_EAGER_JIT", "1").lower() not in ("0", "false", "no")

    def __init__(self, enabled: bool):
        self._previous = eager_jit._enabled
        eager_jit._enabled = bool(enabled)

    def __enter__(self) -> eager_jit:
        return self

    def __exit__(self, *exc: Any) -> None:
        eager_jit._enabled = self._previous

    @staticmethod
    def enabled() -> bool:
        """Whether eager calls currently run compiled."""
        return eager_jit._enabled


_SCALAR_TYPES = (np.ndarray, np.generic, bool, int, float, complex)
_FALLBACK = object()
_PLAIN_ONLY: set[Any] = set()  # structures of transforms whose update needed concrete values


def _eager() -> bool:
    """Whether a call should take the compiled eager path: switched on, outside any trace."""
    from jax._src import core as jax_core

    return eager_jit._enabled and jax_core.trace_state_clean()


def _plain_args(extra_args: dict) -> bool:
    return all(
        isinstance(x, (jax.Array, *_SCALAR_TYPES)) for x in jax.tree_util.tree_leaves(extra_args)
    )


@jax.jit
def _jit_update(tx, updates, state, params, extra_args):
    return tx.update(updates, state, params, **extra_args)


def _any_member(obj: Any, pred: Callable[[Any], bool]) -> bool:
    """Whether ``pred`` holds for a transform or one nested in it (members, inner transforms)."""
    if isinstance(obj, _Foreign) or (isinstance(obj, GradientTransformation) and pred(obj)):
        return True
    if isinstance(obj, GradientTransformation):
        return any(_any_member(v, pred) for v in vars(obj).values())
    if isinstance(obj, tuple | list):
        return any(_any_member(v, pred) for v in obj)
    if isinstance(obj, dict):
        return any(_any_member(v, pred) for v in obj.values())
    return False


def _runs_plainly(obj: Any) -> bool:
    """Whether a transform (or one nested in it) must keep running op by op when called
    eagerly: a transform of another library (an opaque closure that may have side effects),
    or one whose eager behaviour differs on purpose (``_eager_compilable`` is False)."""
    return _any_member(obj, lambda t: not t._eager_compilable())


def _holds_foreign_functions(obj: Any) -> bool:
    """Whether a transform (or one nested in it) is another library's or built from the user's
    own ``(init_fn, update_fn)``: their states are of their own making."""
    return _any_member(obj, lambda t: isinstance(t, _FromFunctions))


def _compiled_update(tx, updates, state, params, extra_args):
    if not _plain_args(extra_args) or _runs_plainly(tx):
        return _FALLBACK
    try:
        key = jax.tree_util.tree_structure(tx)  # the class and static options of every member
        if key in _PLAIN_ONLY:
            return _FALLBACK
        return _jit_update(tx, updates, state, params, extra_args)
    except jax.errors.ConcretizationTypeError:
        _PLAIN_ONLY.add(key)  # its update branches on values: always run this one plainly
        return _FALLBACK
    except TypeError:
        return _FALLBACK  # not a jit argument (an object leaf, an unhashable option): plainly


def _canonical(tx: Any) -> Any:
    """``tx`` with its Python-float hyperparameters as weakly typed arrays of JAX's default
    float dtype: the values a jitted step sees when the optimizer is its argument.

    Derived per-step scalars (``1 − β``, ``ε·sqrt(1 − β2^t)``) are then formed from the same
    float32 (or float64) numbers on every path: op by op, jitted with the optimizer closed
    over, jitted with it as an argument, and compiled eagerly. Without this, ``1 − 0.999`` is
    exact in Python but ``1 − float32(0.999)`` is not, a 1e-5 relative difference in float32.
    """
    leaves, treedef = jax.tree_util.tree_flatten(tx)
    if not any(type(x) is float or type(x) is complex for x in leaves):
        return tx
    return treedef.unflatten(
        [jnp.asarray(x) if type(x) is float or type(x) is complex else x for x in leaves]
    )


def _with_eager_jit(plain: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(plain)
    def update(self, updates, state, params=None, **extra_args):
        if state is None:
            _refuse_missing_state(self, updates, params)
        self = _canonical(self)
        if _eager():
            out = _compiled_update(self, updates, state, params, extra_args)
            if out is not _FALLBACK:
                return out
        if _UPDATE_CALL.depth:
            return plain(self, updates, state, params, **extra_args)
        # The outermost update (traced once under jit): updates shaped like the params, and
        # the state what init builds.
        if not _any_member(self, lambda t: not t._updates_like_params):
            tree_lib.check_structure(
                updates, params, f"{_user_name(self)}.update", "updates", "params"
            )
        if state is not None:  # None: a stateless transform (_refuse_missing_state said so)
            _check_state_structure(self, updates, state, params)
        _UPDATE_CALL.depth += 1
        try:
            return plain(self, updates, state, params, **extra_args)
        finally:
            _UPDATE_CALL.depth -= 1

    update._gradtx_plain = plain
    return update


def _user_name(tx: Any) -> str:
    """The name the user called to build ``tx`` (``adam`` for the chain ``adam`` returns), for
    error messages."""
    return getattr(tx, "_name", None) or getattr(tx, "_owner", None) or type(tx).__name__


class _UpdateCall(threading.local):
    depth: int = 0


_UPDATE_CALL = _UpdateCall()


# The state structures each transform structure's init has built: an update whose state has one
# of them needs no further check (tracing init again would cost as much as init itself).
_STATES_BUILT: dict[Any, set[Any]] = {}


def _remember_state(tx_def: Any, state_def: Any) -> None:
    if len(_STATES_BUILT) > 4096:  # bounded: a long sweep over structures must not grow it
        _STATES_BUILT.clear()
    _STATES_BUILT.setdefault(tx_def, set()).add(state_def)


def _abstract(x: Any) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x))


@functools.lru_cache(maxsize=256)
def _expected_state_structure(tx_def: Any, tx_avals: tuple, ref_def: Any, ref_avals: tuple):
    tx = jax.tree_util.tree_unflatten(tx_def, tx_avals)
    ref = jax.tree_util.tree_unflatten(ref_def, ref_avals)
    return jax.eval_shape(lambda t, r: t.init(r), tx, ref)


def _check_state_structure(tx: Any, updates: Any, state: Any, params: Any) -> None:
    """Refuse, naming the first differing path, a state that ``tx.init`` would not build (one
    made by another optimizer, or for other parameters). Decided from structures and shapes
    alone (cached), so under ``jit`` it costs nothing after tracing."""
    if params is None or _holds_foreign_functions(tx):
        # without params the updates would be the reference, and a wrong updates tree would be
        # blamed on the state: the update's own checks speak then. Functions of the user's or
        # of another library keep states of their own making.
        return
    try:
        tx_leaves, tx_def = jax.tree_util.tree_flatten(tx)
        state_def = jax.tree_util.tree_structure(state)
        if state_def in _STATES_BUILT.get(tx_def, ()):
            return  # the fast path: a structure this transform's init has built
        ref_leaves, ref_def = jax.tree_util.tree_flatten(params)
        expected = _expected_state_structure(
            tx_def,
            tuple(_abstract(x) for x in tx_leaves),
            ref_def,
            tuple(_abstract(x) for x in ref_leaves),
        )
    except Exception:  # noqa: BLE001  (cannot tell: let update itself speak)
        return
    if state_def == jax.tree_util.tree_structure(expected):
        _remember_state(tx_def, state_def)
        return
    if not jax.tree_util.tree_leaves(expected) and not jax.tree_util.tree_leaves(state):
        return  # a stateless transform ignores its state: () or optax's EmptyState will do
    diff = tree_lib.first_difference(state, expected, names=("state", "state init builds"))
    if diff is None:
        return
    path, why = diff
    name = _user_name(tx)
    raise ValueError(
        f"{name}.update: the state is not what {name}.init builds: it differs at "
        f"{path or 'the root'}: {why}. Was it made by another optimizer, or for other "
        "parameters?"
    )


def _refuse_missing_state(tx: Any, updates: Any, params: Any) -> None:
    """``update(..., state=None)``: an error, unless the transform keeps no state (optax's
    stateless transforms accept ``None`` and so do ours)."""
    try:
        expected = jax.eval_shape(tx.init, params if params is not None else updates)
    except Exception:  # noqa: BLE001  (cannot tell: let update itself speak)
        return
    if jax.tree_util.tree_leaves(expected) or (
        isinstance(expected, tuple | list | dict) and len(expected)
    ):
        name = _user_name(tx)
        raise ValueError(
            f"{name}.update: the state is None; build it with {name}.init(params) and pass "
            "the state that init (or the previous update) returned"
        )


class _InitCall(threading.local):
    outer: str | None = None  # the name of the outermost transform being initialised


_INIT_CALL = _InitCall()


def _check_param_dtypes(owner: str, params: Any) -> None:
    """Parameters must be floating or complex arrays: refuse integer and boolean leaves, naming
    the optimizer and the first such path (gradient steps on them are meaningless)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        dt = getattr(leaf, "dtype", None)
        if dt is None:
            if not isinstance(leaf, numbers.Number | np.ndarray):
                continue  # not an array (e.g. a placeholder): the transform decides
            dt = np.result_type(leaf)
        if not jnp.issubdtype(dt, jnp.inexact):
            raise TypeError(
                f"{owner}: parameters must be floating or complex arrays; got "
                f"{jnp.dtype(dt).name} at {jax.tree_util.keystr(path) or 'the root'} (filter them "
                "out, e.g. with eqx.filter(model, eqx.is_inexact_array), or mask them out with "
                "gradtx.masked)"
            )


def _with_param_check(plain: Callable[..., Any]) -> Callable[..., Any]:
    """``init`` that first refuses integer and boolean parameters (see _check_param_dtypes).

    Containers (chains) and masks skip the check and leave it to their members, which see
    only the leaves they will update: a leaf masked out may be an integer. The error names the
    outermost transform, the one the user built (``adam``, not its ``scale_by_adam``).
    """

    @functools.wraps(plain)
    def init(self, params):
        outer = _INIT_CALL.outer is None
        if outer:
            _INIT_CALL.outer = _user_name(self)
        try:
            if self._checks_param_dtypes:
                _check_param_dtypes(_INIT_CALL.outer, params)
            state = plain(self, params)
        finally:
            if outer:
                _INIT_CALL.outer = None
        if outer:
            try:
                _remember_state(
                    jax.tree_util.tree_structure(_canonical(self)),
                    jax.tree_util.tree_structure(state),
                )
            except TypeError:  # an unhashable static option: update will check the long way
                pass
        return state

    init._gradtx_plain = plain
    return init


_ERROR_HEAD = re.compile(r"(?P<owner>[A-Za-z_][\w.]*): (?P<name>[A-Za-z_]\w*)(?P<rest>\b.*)", re.S)


def user_facing(
    fn: Callable[..., Any] | None = None, *, renames: dict[tuple[str, str], str] | None = None
) -> Any:
    """Decorate a function that builds a transform from building blocks (``sgd`` builds
    ``trace`` and ``scale_by_learning_rate``) so that its errors speak the user's words.

    A bad argument refused by a building block (``trace: decay must be in [0, 1], got -0.5``)
    is reported under the decorated function and the argument the user passed
    (``sgd: momentum must be in [0, 1], got -0.5``): an argument of the same name keeps its
    name, others are looked up in ``renames``, keyed by ``(block, argument)``. The returned
    chain remembers the function's name, so later errors (``init`` with integer parameters,
    ``update`` before ``init``) name it too.

    Example:
        >>> import gradtx
        >>> @gradtx.user_facing(renames={("trace", "decay"): "beta"})
        ... def heavy_ball(learning_rate, beta=0.9):
        ...     return gradtx.chain(gradtx.trace(beta), gradtx.scale(-learning_rate))
        >>> try:
        ...     heavy_ball(0.1, beta=1.5)
        ... except ValueError as e:
        ...     print(e)
        heavy_ball: beta must be in [0, 1], got 1.5
    """
    if fn is None:
        return functools.partial(user_facing, renames=renames)
    table = dict(renames or {})
    own = fn.__name__
    arg_names = set(inspect.signature(fn).parameters)

    @functools.wraps(fn)
    def build(*args: Any, **kwargs: Any) -> Any:
        try:
            out = fn(*args, **kwargs)
        except (ValueError, TypeError) as e:
            relabelled = _relabel(e, own, arg_names, table)
            if relabelled is None:
                raise
            raise relabelled from None
        if isinstance(out, chain):  # the outermost function called names it
            object.__setattr__(out, "_name", own)
        return out

    return build


def _relabel(
    e: Exception, own: str, arg_names: set[str], table: dict[tuple[str, str], str]
) -> Exception | None:
    m = _ERROR_HEAD.match(str(e)) if len(e.args) == 1 else None
    if m is None or m["owner"] == own:
        return None
    name = table.get((m["owner"], m["name"]))
    if name is None and m["name"] in arg_names:
        name = m["name"]
    if name is None:
        return None
    try:
        new = type(e)(f"{own}: {name}{m['rest']}")
    except Exception:  # noqa: BLE001  (an exception type with another constructor)
        new = (ValueError if isinstance(e, ValueError) else TypeError)(f"{own}: {name}{m['rest']}")
    new.__cause__ = None
    return new


# ----------------------------------------------------------------------------------------------
# The base class.


class GradientTransformation:
    """Base of every gradtx transform: an immutable pytree with ``init`` and ``update``.

    ``init(params) -> state`` builds the state; ``update(updates, state, params=None,
    **extra_args) -> (updates, state)`` transforms the updates (gradients on entry, parameter
    increments on exit of a full optimizer). Extra keyword arguments (``value``, ``grad``,
    ``value_fn``, ...) are passed down a chain to every member and ignored by those that do
    not use them.

    Called with two functions, as optax users write a transform of their own,
    ``GradientTransformation(init_fn, update_fn)`` builds one from them: ``update_fn(updates,
    state, params)`` receives no extra keyword arguments (use
    :class:`GradientTransformationExtraArgs` for one that does). Such a transform runs op by op
    when called eagerly, like a transform of another library: its functions may print or have
    other side effects.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> init, update = gradtx.scale(0.5)
        >>> updates, state = update({"w": jnp.ones(2)}, init({"w": jnp.zeros(2)}))
        >>> updates["w"].tolist()
        [0.5, 0.5]
        >>> double = gradtx.GradientTransformation(
        ...     lambda params: gradtx.EmptyState(),
        ...     lambda updates, state, params=None: (2 * updates, state),
        ... )
        >>> gradtx.chain(double, gradtx.scale(0.5)).update(jnp.ones(2), ((), ()))[0].tolist()
        [1.0, 1.0]
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        # ``GradientTransformation(init_fn, update_fn)``: the optax way to write a transform.
        if (args or kwargs) and cls in (GradientTransformation, GradientTransformationExtraArgs):
            cls = _FromFunctions if cls is GradientTransformation else _FromFunctionsExtraArgs
        return object.__new__(cls)

    def init(self, params: Params) -> OptState:
        raise NotImplementedError

    def update(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        raise NotImplementedError

    # ``init, update = tx``: the optax protocol.
    def __iter__(self) -> Iterator[Callable[..., Any]]:
        yield self.init
        yield self.update

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> Callable[..., Any]:
        return (self.init, self.update)[i]

    def __post_init__(self) -> None:
        _wrap_callables(self)
        self._check()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every ``update`` a subclass defines gets the compiled eager path (see eager_jit).
        super().__init_subclass__(**kwargs)
        upd = cls.__dict__.get("update")
        if upd is not None and not hasattr(upd, "_gradtx_plain"):
            cls.update = _with_eager_jit(upd)
        ini = cls.__dict__.get("init")
        if ini is not None and not hasattr(ini, "_gradtx_plain"):
            cls.init = _with_param_check(ini)

    # Whether init refuses integer and boolean parameters itself (containers and masks leave it
    # to their members).
    _checks_param_dtypes = True
    # Whether ``update``'s updates have the params' structure (lookahead's params hold two
    # copies of them).
    _updates_like_params = True

    def _check(self) -> None:
        """Validate concrete hyperparameters; override in subclasses."""

    def _eager_compilable(self) -> bool:
        """Whether an eager ``update`` may run compiled (see :class:`eager_jit`); False where
        compiling would change what an eager call does, or only copy."""
        return True

    def _takes_extra_args(self) -> bool:
        """Whether ``update`` accepts extra keyword arguments (every gradtx transform does)."""
        return True

    def __repr__(self) -> str:
        return field_repr(self)


class _ExtraArgsMeta(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        if cls is GradientTransformationExtraArgs:
            return isinstance(obj, GradientTransformation) and obj._takes_extra_args()
        return super().__instancecheck__(obj)


class GradientTransformationExtraArgs(GradientTransformation, metaclass=_ExtraArgsMeta):
    """A transform whose ``update`` accepts extra keyword arguments (``value=``, ...).

    Every gradtx transform is one (``isinstance`` says so), since a chain passes extra
    arguments to each member and members ignore those they do not use. Called with two
    functions, ``GradientTransformationExtraArgs(init_fn, update_fn)`` builds a transform whose
    ``update_fn(updates, state, params, **extra_args)`` receives them.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> isinstance(gradtx.adam(1e-3), gradtx.GradientTransformationExtraArgs)
        True
        >>> tx = gradtx.GradientTransformationExtraArgs(
        ...     lambda params: gradtx.EmptyState(),
        ...     lambda updates, state, params=None, *, value, **extra: (value * updates, state),
        ... )
        >>> tx.update(jnp.ones(2), tx.init(None), value=jnp.asarray(3.0))[0].tolist()
        [3.0, 3.0]
    """


def field_repr(obj: Any) -> str:
    """``name(field=value, ...)`` showing the fields of a dataclass that differ from defaults."""
    if not dataclasses.is_dataclass(obj):
        return f"{type(obj).__name__}()"
    parts = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if f.default is not dataclasses.MISSING and _same(v, f.default):
            continue
        parts.append(f"{f.name}={_value_repr(v)}")
    return f"{type(obj).__name__}({', '.join(parts)})"


def _same(a: Any, b: Any) -> bool:
    try:
        if isinstance(a, jax.Array) and a.ndim == 0 and type(b) in (float, complex):
            return bool(a == jnp.asarray(b))  # a hyperparameter given as a JAX scalar
        return bool(a is b or (type(a) is type(b) and a == b))
    except Exception:  # noqa: BLE001  (arrays compare element-wise)
        return False


def _value_repr(v: Any) -> str:
    """A stored hyperparameter as the user wrote it: ``0.9``, not ``Array(0.9, dtype=...)``."""
    if isinstance(v, jax.Array) and not isinstance(v, jax.core.Tracer) and v.ndim == 0:
        return str(np.asarray(v))
    return repr(v)


@jax.tree_util.register_static
class _StaticFn:
    """A plain function kept in the treedef (no leaves), so it can sit in a pytree transform."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _StaticFn) and other.fn is self.fn

    def __hash__(self) -> int:
        return hash(self.fn)

    def __repr__(self) -> str:
        return getattr(self.fn, "__name__", repr(self.fn))


@jax.tree_util.register_static
class FrozenTree:
    """A pytree of Python scalars (e.g. a mask of bools) held in the treedef, hashable."""

    def __init__(self, tree: Any):
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        frozen = []
        for x in leaves:
            if isinstance(x, jax.core.Tracer) or np.ndim(x) != 0:
                raise TypeError(f"expected a tree of Python scalars (e.g. bools), got leaf {x!r}")
            frozen.append(np.asarray(x).item())
        self.treedef = treedef
        self.leaves = tuple(frozen)

    @property
    def tree(self) -> Any:
        return jax.tree_util.tree_unflatten(self.treedef, self.leaves)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, FrozenTree)
            and other.treedef == self.treedef
            and other.leaves == self.leaves
        )

    def __hash__(self) -> int:
        return hash((self.treedef, self.leaves))

    def __repr__(self) -> str:
        return repr(self.tree)


def _is_mask_fn(mask: Any) -> bool:
    """Whether a mask (or labels) argument is a function of the params rather than a tree.

    As optax decides it: a tree whose leaves are all callable is a function. So a tree of bools
    that is also callable, such as an Equinox module with a ``__call__`` mapped to bools, is a
    tree. A callable with no leaves at all (a static helper such as :class:`gradtx.select`) is
    a function.
    """
    leaves = jax.tree_util.tree_leaves(mask)
    if leaves:
        return all(callable(x) for x in leaves)
    return callable(mask) and not isinstance(mask, FrozenTree)


def freeze_mask(mask: Any) -> Any:
    """A ``mask`` argument (``None``, a function of params, or a pytree of bools) made static.

    The mask is a function when every leaf of it is callable (optax's rule): a pytree of bools
    that is also callable (an Equinox module with ``__call__``) is a tree.
    """
    if mask is None or isinstance(mask, FrozenTree | _StaticFn):
        return mask
    if _is_mask_fn(mask):
        return mask if _is_static_callable(mask) else _StaticFn(mask)
    return FrozenTree(mask)


def _is_static_callable(fn: Any) -> bool:
    """A callable that is already a hashable pytree with no leaves (``select``): kept as is."""
    if jax.tree_util.tree_leaves(fn):
        return False
    try:
        hash(fn)
    except TypeError:
        return False
    return True


def resolve_mask(mask: Any, params: Any) -> Any:
    """The pytree of bools a frozen mask stands for, given the params (or ``None``)."""
    if mask is None:
        return None
    if isinstance(mask, FrozenTree):
        return mask.tree
    return mask(params)


def broadcast_mask(mask: Any, params: Any, owner: str, what: str = "mask") -> Any:
    """A mask (a prefix of the params' tree, or ``None`` for all-True) broadcast to every leaf.

    ``what`` names the argument in errors (``"labels"`` for a tree of labels, which has no
    ``None`` default).
    """
    if mask is None and what == "mask":
        return jax.tree_util.tree_map(lambda _: True, params)
    try:
        if mask is None:
            raise TypeError("None")
        return jax.tree_util.tree_map(
            lambda m, sub: jax.tree_util.tree_map(lambda _: m, sub), mask, params
        )
    except (ValueError, TypeError) as e:
        raise ValueError(
            f"{owner}: {what} must have the structure of the params (or a prefix of it); "
            f"{what} {jax.tree_util.tree_structure(mask)} vs params "
            f"{jax.tree_util.tree_structure(params)}"
        ) from e


@jax.tree_util.register_static
class _Foreign:
    """A transform from another library (any ``(init, update)`` pair), held statically."""

    def __init__(self, tx: Any):
        try:
            init_fn, update_fn = tx
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"chain: expected gradient transformations (objects that unpack as "
                f"`init, update`), got {tx!r}"
            ) from e
        if not (callable(init_fn) and callable(update_fn)):
            raise TypeError(f"chain: init and update must be callable, got {tx!r}")
        self.tx = tx
        self.init = init_fn
        self._update = update_fn
        try:
            sig = inspect.signature(update_fn)
            self._extra = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        except (TypeError, ValueError):
            self._extra = False

    def update(self, updates, state, params=None, **extra_args):
        if self._extra:
            return self._update(updates, state, params, **extra_args)
        return self._update(updates, state, params)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Foreign) and other.tx is self.tx

    def __hash__(self) -> int:
        return id(self.tx)

    def __repr__(self) -> str:
        return f"foreign({type(self.tx).__name__})"


def _as_member(tx: Any) -> Any:
    if isinstance(tx, GradientTransformation | _Foreign):
        return tx
    return _Foreign(tx)


@transform
class _FromFunctions(GradientTransformation):
    """A transform built from an ``(init_fn, update_fn)`` pair (see GradientTransformation)."""

    init_fn: Callable[..., Any] = static_field()
    update_fn: Callable[..., Any] = static_field()
    _owner = "GradientTransformation"  # the name the user called, for error messages

    def __init__(
        self,
        init: Callable[..., Any] | None = None,
        update: Callable[..., Any] | None = None,
        *,
        init_fn: Callable[..., Any] | None = None,  # the field names, used when unflattening
        update_fn: Callable[..., Any] | None = None,
    ):
        owner = self._owner
        init = init_fn if init is None else init
        update = update_fn if update is None else update
        for name, fn in (("init", init), ("update", update)):
            if not callable(fn):
                raise TypeError(f"{owner}: {name} must be callable, got {fn!r}")
        object.__setattr__(self, "init_fn", init)
        object.__setattr__(self, "update_fn", update)
        self.__post_init__()

    def init(self, params):
        return self.init_fn(params)

    def update(self, updates, state, params=None, **extra_args):
        return self.update_fn(updates, state, params)

    def _eager_compilable(self):
        return False  # the user's functions may print or have other side effects

    def _takes_extra_args(self):
        return False

    def __repr__(self):
        return f"GradientTransformation({_fn_name(self.init_fn)}, {_fn_name(self.update_fn)})"


@transform
class _FromFunctionsExtraArgs(_FromFunctions, GradientTransformationExtraArgs):
    """A transform built from an ``(init_fn, update_fn)`` pair whose update takes extra args."""

    _owner = "GradientTransformationExtraArgs"

    def __init__(self, *args: Any, **kwargs: Any):  # the checks above, not a dataclass __init__
        _FromFunctions.__init__(self, *args, **kwargs)

    def update(self, updates, state, params=None, **extra_args):
        return self.update_fn(updates, state, params, **extra_args)

    def _takes_extra_args(self):
        return True

    def __repr__(self):
        init, update = _fn_name(self.init_fn), _fn_name(self.update_fn)
        return f"GradientTransformationExtraArgs({init}, {update})"


def _fn_name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def with_extra_args_support(tx: Any) -> GradientTransformationExtraArgs:
    """``tx`` as a transform whose ``update`` accepts (and, if ``tx``'s does not, drops) extra
    keyword arguments.

    Every gradtx transform already accepts them and is returned unchanged; a transform built
    with ``GradientTransformation(init_fn, update_fn)`` or taken from another library is
    wrapped.

    Args:
        tx: any ``(init, update)`` pair.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> plain = gradtx.GradientTransformation(lambda p: (), lambda u, s, p=None: (-u, s))
        >>> tx = gradtx.with_extra_args_support(plain)
        >>> tx.update(jnp.ones(1), (), value=jnp.asarray(1.0))[0].tolist()
        [-1.0]
    """
    if isinstance(tx, GradientTransformationExtraArgs):
        return tx
    if isinstance(tx, _FromFunctions):
        update_fn = tx.update_fn

        def update(updates, state, params=None, **extra_args):
            return update_fn(updates, state, params)

        return GradientTransformationExtraArgs(tx.init_fn, update)
    foreign = _Foreign(tx)  # another library's pair: passes extra arguments only if it can
    return GradientTransformationExtraArgs(foreign.init, foreign.update)


def init_empty_state(params: Params) -> EmptyState:
    """The ``init`` of a transform that keeps no state: returns ``EmptyState()``.

    Example:
        >>> import gradtx
        >>> gradtx.init_empty_state({"w": 1.0})
        EmptyState()
    """
    del params
    return EmptyState()


# ----------------------------------------------------------------------------------------------
# Combinators.


@dataclasses.dataclass(frozen=True, repr=False, init=False)
class chain(GradientTransformation):
    """Apply transforms one after the other; the state is the tuple of their states.

    ``chain(a, b)(g) = b(a(g))``. Members may be gradtx transforms (whose hyperparameters stay
    pytree leaves) or any other ``(init, update)`` pair, such as an optax transform (held
    statically, its hyperparameters baked in as optax does).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.chain(gradtx.clip(1.0), gradtx.scale(-0.1))
        >>> params = {"w": jnp.array([3.0, -0.5])}
        >>> updates, _ = tx.update(params, tx.init(params))
        >>> [round(float(u), 4) for u in updates["w"]]
        [-0.1, 0.05]
    """

    transforms: tuple = ()
    _name: str | None = None  # the function that built it (``adam``), for error messages
    _checks_param_dtypes = False

    def __init__(self, *transforms: Any):
        # ``chain(a, b, c)`` like optax; unflattening passes the members wrapped in _ChainArgs
        # and they are stored as they come (they may be tracers' containers or placeholders).
        if len(transforms) == 1 and isinstance(transforms[0], _ChainArgs):
            object.__setattr__(self, "transforms", tuple(transforms[0].items))
            return
        object.__setattr__(self, "transforms", tuple(_as_member(t) for t in transforms))

    def _with_members(self, members: Any) -> chain:
        """A chain of other members under the same name (so the same treedef when the members'
        structures match: a rebuilt optimizer compiles nothing new)."""
        out = chain(*members)
        object.__setattr__(out, "_name", self._name)
        return out

    def init(self, params: Params) -> tuple:
        return tuple(t.init(params) for t in self.transforms)

    def update(self, updates, state, params=None, **extra_args):
        owner = _user_name(self)
        if type(state) not in (tuple, list) or len(state) != len(self.transforms):
            what = (
                f"a {type(state).__name__} of {len(state)} entries"
                if type(state) in (tuple, list)
                else f"a {type(state).__name__}"
            )
            raise ValueError(
                f"{owner}.update: the state is {what}, but {owner}.init builds a tuple of "
                f"{len(self.transforms)} (one per transform); was it made by another optimizer?"
            )
        new_state = []
        for i, (t, s) in enumerate(zip(self.transforms, state, strict=True)):
            updates, s = _member_update(owner, i, t, updates, s, params, extra_args)
            new_state.append(s)
        return updates, tuple(new_state)

    def __repr__(self) -> str:
        return f"chain({', '.join(repr(t) for t in self.transforms)})"


def _member_update(owner, where, tx, updates, state, params, extra_args):
    """``tx.update``; when it fails on a state its ``init`` would not have built (a state from
    another optimizer, or members reordered), say so, naming the member and the first path."""
    try:
        return tx.update(updates, state, params, **extra_args)
    except (AttributeError, TypeError, KeyError, IndexError) as e:
        try:
            expected = jax.eval_shape(tx.init, params if params is not None else updates)
            diff = tree_lib.first_difference(state, expected)
        except Exception:  # noqa: BLE001  (cannot tell: let the original error speak)
            diff = None
        if diff is None:
            raise
        path, why = diff
        raise ValueError(
            f"{owner}: the state of member {where} ({type(tx).__name__}) is not what its init "
            f"builds: it differs at {path or 'the root'}: {why}. Was the state made by a "
            "different optimizer?"
        ) from e


class _ChainArgs:
    def __init__(self, items):
        self.items = items


def _chain_unflatten(aux, children):
    out = chain(_ChainArgs(children[0]))
    if aux is not None:
        object.__setattr__(out, "_name", aux)
    return out


# ``chain`` takes its members positionally (``chain(a, b, c)``, as optax), which the keyword
# constructor that ``register_dataclass`` calls cannot express; so it is registered by hand,
# with the same key path (``.transforms``) a dataclass registration would give.
jax.tree_util.register_pytree_with_keys(
    chain,
    lambda c: (((jax.tree_util.GetAttrKey("transforms"), c.transforms),), c._name),
    _chain_unflatten,
    lambda c: ((c.transforms,), c._name),
)


@transform
class named_chain(GradientTransformation):
    """A chain whose state is a dict keyed by the names you give, so keys stay stable.

    Inserting or removing a member leaves the state of the other members under the same names,
    so a checkpoint of the old chain still loads into the new one.

    Example:
        >>> import gradtx
        >>> tx = gradtx.named_chain(("clip", gradtx.clip(1.0)), ("adam", gradtx.scale_by_adam()))
        >>> sorted(tx.init({"w": 0.0}).keys())
        ['adam', 'clip']
    """

    names: tuple = static_field(())
    transforms: tuple = ()
    _checks_param_dtypes = False

    def __init__(self, *named: Any, names: tuple | None = None, transforms: tuple | None = None):
        if names is not None or transforms is not None:  # keyword form used by unflattening
            names, transforms = tuple(names or ()), tuple(transforms or ())
        else:
            pairs = []
            for item in named:
                if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
                    raise TypeError(f"named_chain: expected (name, transform) pairs, got {item!r}")
                pairs.append(item)
            names = tuple(n for n, _ in pairs)
            transforms = tuple(t for _, t in pairs)
            if len(set(names)) != len(names):
                dup = sorted({n for n in names if names.count(n) > 1})
                raise ValueError(f"named_chain: names must be unique, got duplicates {dup}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "transforms", tuple(_as_member(t) for t in transforms))

    def init(self, params: Params) -> dict:
        return {n: t.init(params) for n, t in zip(self.names, self.transforms, strict=True)}

    def update(self, updates, state, params=None, **extra_args):
        missing = [n for n in self.names if not isinstance(state, dict) or n not in state]
        if missing:
            got = f"keys {sorted(state)}" if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"named_chain.update: the state has no entry for {missing} (got {got}); "
                "named_chain.init builds a dict keyed by the members' names"
            )
        new_state = {}
        for n, t in zip(self.names, self.transforms, strict=True):
            updates, new_state[n] = _member_update(
                "named_chain", repr(n), t, updates, state[n], params, extra_args
            )
        return updates, new_state

    def __repr__(self) -> str:
        inner = ", ".join(
            f"({n!r}, {t!r})" for n, t in zip(self.names, self.transforms, strict=True)
        )
        return f"named_chain({inner})"


@transform
class identity(GradientTransformation):
    """Leave updates unchanged (``u ← u``); keeps no state.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> gradtx.identity().update(jnp.ones(2), gradtx.EmptyState())[0].tolist()
        [1.0, 1.0]
    """

    def _eager_compilable(self) -> bool:
        return False  # returns its input: compiling would only copy it

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        return updates, state


@transform
class set_to_zero(GradientTransformation):
    """Replace every update by zeros of the same shape and dtype (freezes what it is applied to).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> gradtx.set_to_zero().update(jnp.ones(2), gradtx.EmptyState())[0].tolist()
        [0.0, 0.0]
    """

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        return jax.tree_util.tree_map(jnp.zeros_like, updates), state


@transform
class stateless(GradientTransformation):
    """A transform from a function ``f(updates, params) -> updates`` that keeps no state.

    Args:
        f: the function; it receives ``params=None`` when the caller passes none.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.stateless(lambda u, p: jax.tree_util.tree_map(jnp.sign, u))
        >>> tx.update(jnp.array([-2.0, 3.0]), tx.init(None))[0].tolist()
        [-1.0, 1.0]
    """

    f: Callable[[Updates, Params | None], Updates] = static_field()

    def _check(self):
        if not callable(self.f):
            raise TypeError(f"stateless: f must be callable, got {self.f!r}")

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        return self.f(updates, params), state


@transform
class stateless_with_tree_map(GradientTransformation):
    """A stateless transform from a per-leaf function ``f(g, p) -> u``, mapped over the tree
    (``p`` is ``None`` when the caller passes no parameters; ``None`` leaves stay ``None``).

    Args:
        f: the per-leaf function.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.stateless_with_tree_map(lambda g, p: g * p)
        >>> tx.update({"w": jnp.ones(2)}, tx.init(None), {"w": jnp.arange(2.0)})[0]["w"].tolist()
        [0.0, 1.0]
    """

    f: Callable[[jax.Array, jax.Array | None], jax.Array] = static_field()

    def _check(self):
        if not callable(self.f):
            raise TypeError(f"stateless_with_tree_map: f must be callable, got {self.f!r}")

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        # ``None`` leaves (frozen parameters) stay ``None``; f never sees them.
        f = self.f
        if params is None:
            return jax.tree_util.tree_map(lambda g: f(g, None), updates), state
        tree_lib.check_structure(updates, params, "stateless_with_tree_map", "updates", "params")
        return jax.tree_util.tree_map(f, updates, params), state


def as_optax(tx: GradientTransformation) -> Any:
    """``tx`` as an ``optax.GradientTransformationExtraArgs`` (requires optax).

    Any gradtx transform already works where optax wants an ``(init, update)`` pair, but optax
    passes extra keyword arguments such as ``value=`` only to members that are instances of its
    own ``GradientTransformationExtraArgs``. Wrap transforms that need them (``polyak_sgd``,
    ``reduce_on_plateau``, the line searches) before putting them in ``optax.chain``.

    Example:
        >>> import jax.numpy as jnp, optax, gradtx
        >>> tx = optax.chain(gradtx.as_optax(gradtx.polyak_sgd(max_learning_rate=1.0)))
        >>> p = {"w": jnp.ones(2)}
        >>> u, _ = tx.update({"w": jnp.ones(2)}, tx.init(p), p, value=jnp.asarray(1.0))
        >>> u["w"].tolist()  # -(f - f*) / ||g||^2 * g with f* = 0
        [-0.5, -0.5]
    """
    try:
        import optax
    except ImportError as e:  # pragma: no cover - optax is a test dependency
        raise ImportError("as_optax needs optax installed (pip install optax)") from e
    return optax.GradientTransformationExtraArgs(tx.init, tx.update)


def apply_updates(params: Params, updates: Updates) -> Params:
    """``θ ← θ + u`` leaf by leaf, keeping each parameter's dtype.

    ``None`` parameters stay ``None``. A float16 parameter updated by a float32 increment stays
    float16 (the sum is formed in the promoted dtype and cast back).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> p = {"w": jnp.ones(2, jnp.float16)}
        >>> gradtx.apply_updates(p, {"w": jnp.full(2, 0.5)})["w"].dtype
        dtype('float16')
    """
    if _eager():
        try:
            return _jit_apply_updates(params, updates)
        except TypeError:
            pass  # a leaf that is not a jit argument: add plainly (or raise the plain error)
    return _plain_apply_updates(params, updates)


def _plain_apply_updates(params: Params, updates: Updates) -> Params:
    tree_lib.check_structure(updates, params, "apply_updates", "updates", "params")
    return jax.tree_util.tree_map(_apply_leaf, params, updates, is_leaf=tree_lib.is_none)


_jit_apply_updates = jax.jit(_plain_apply_updates)


def _apply_leaf(p: Any, u: Any) -> Any:
    if p is None:
        return None
    p, u = tree_lib.as_array(p), tree_lib.as_array(u)
    if p.dtype == u.dtype:
        return lax.add(p, u)
    return jnp.asarray(p + u).astype(p.dtype)
