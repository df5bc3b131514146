"""Reading and changing hyperparameters during training.

Because a gradtx optimizer is a pytree whose numeric hyperparameters are leaves, there is no
need to restructure it to log or change them:

- :func:`hyperparams` reads every numeric hyperparameter of a chain as a flat dict, with
  schedules evaluated at the step count found in the state (inside ``jit`` too);
- :func:`replace` returns the optimizer with some hyperparameters changed; the tree structure
  is unchanged, so the state stays valid and a jitted step that takes the optimizer as an
  argument compiles nothing new;
- :func:`inject_hyperparams` (optax's wrapper, same behaviour) keeps hyperparameters in the
  *state*, where they can be edited like any other state entry; its scheduled arguments may be
  plain schedules or :class:`StatefulSchedule` objects with a state of their own.

Values the user writes are checked where the user builds the optimizer. Values that arrive
during training (a schedule's value, a hyperparameter edited in the state) are never refused
when the inner optimizer is rebuilt with them, eagerly or under ``jit`` alike: an eager loop
and a jitted one compute the same numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import numbers
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import numerics as tree_lib
from gradtx.core import (
    GradientTransformation,
    _as_member,
    _Foreign,
    _is_plain_function,
    _StaticFn,
    _unchecked_values,
    chain,
    named_chain,
    static_field,
    transform,
)

__all__ = [
    "hyperparams",
    "replace",
    "inject_hyperparams",
    "inject_stateful_hyperparams",
    "InjectedHyperparams",
    "InjectHyperparamsState",
    "InjectStatefulHyperparamsState",
    "StatefulSchedule",
    "WrappedSchedule",
    "WrappedScheduleState",
]


# ----------------------------------------------------------------------------------------------
# Walking an optimizer alongside its state.


@dataclasses.dataclass
class _Entry:
    route: tuple  # how to reach the owning transform: ("chain", i), ("named", n), ("field", f)...
    labels: tuple  # readable path: chain indices, named_chain names, wrapper field names
    owner: str  # the owning transform's name
    name: str  # the field (hyperparameter) name
    value: Any  # the field's value (a number, array or schedule)
    count: Any  # the owner's step count from the state (or None)
    injected: bool = False  # held in an inject_hyperparams state (change it there)
    key: str = ""


_INNER_STATE_NAMES = ("inner_state", "inner_opt_state")


def _is_numeric(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, numbers.Number):
        return True
    if isinstance(v, np.ndarray | np.generic | jax.Array):
        return np.issubdtype(np.dtype(v.dtype), np.number)
    return False


def _is_tx(v: Any) -> bool:
    return isinstance(v, GradientTransformation | _Foreign)


def _walk(tx: Any, state: Any, route: tuple, labels: tuple, out: list[_Entry]) -> None:
    if isinstance(tx, chain):
        if len(state) != len(tx.transforms):
            raise ValueError(
                f"hyperparams: the state has {len(state)} entries but the chain has "
                f"{len(tx.transforms)} transforms"
            )
        for i, (t, s) in enumerate(zip(tx.transforms, state, strict=True)):
            _walk(t, s, (*route, ("chain", i)), (*labels, str(i)), out)
        return
    if isinstance(tx, named_chain):
        for n, t in zip(tx.names, tx.transforms, strict=True):
            _walk(t, state[n], (*route, ("named", n)), (*labels, n), out)
        return
    if isinstance(tx, _Foreign):
        # An optax transform: report what an optax inject_hyperparams state holds.
        hp = getattr(state, "hyperparams", None)
        if isinstance(hp, Mapping):
            for k, v in hp.items():
                out.append(_Entry(route, labels, "inject_hyperparams", k, v, None, True))
        return
    if not dataclasses.is_dataclass(tx):
        return
    entries = getattr(tx, "_hyperparam_entries", None)
    owner = getattr(tx, "_hyperparam_owner", type(tx).__name__)
    if entries is not None:
        for name, value, count, injected in entries(state):
            out.append(_Entry(route, labels, owner, name, value, count, injected))
        return
    count = getattr(state, "count", None)
    if callable(count):  # a tuple's count method, not a step count
        count = None
    for f in dataclasses.fields(tx):
        if f.metadata.get("static"):
            continue
        v = getattr(tx, f.name)
        if _is_tx(v):
            if getattr(tx, "_state_is_inner", False):  # the wrapper keeps the inner state as is
                inner = state
            elif f.name in getattr(tx, "_member_states", {}):  # {field: its state's field}
                inner = getattr(state, tx._member_states[f.name], None)
            else:
                inner = next(
                    (getattr(state, n) for n in _INNER_STATE_NAMES if hasattr(state, n)), None
                )
            if inner is not None:
                _walk(v, inner, (*route, ("field", f.name)), (*labels, f.name), out)
        elif isinstance(v, Mapping) and v and all(_is_tx(t) for t in v.values()):
            inner = getattr(state, "inner_states", None)
            if isinstance(inner, Mapping):
                for k, t in v.items():
                    r = (*route, ("field", f.name), ("key", k))
                    _walk(t, _unwrap_masked(inner[k]), r, (*labels, str(k)), out)
        elif callable(v) or _is_numeric(v) or isinstance(v, jax.core.Tracer):
            out.append(_Entry(route, labels, owner, f.name, v, count))
    extra = getattr(tx, "_state_hyperparams", None)
    if extra is not None and not isinstance(state, _StateLike):
        for name, value in extra(state).items():
            out.append(_Entry(route, labels, owner, name, value, None, True))


def _unwrap_masked(state: Any) -> Any:
    """A partition member's state: optax's layout keeps it in a ``MaskedState`` per label."""
    from gradtx.partition import MaskedState

    return state.inner_state if isinstance(state, MaskedState) else state


def _entries(opt: Any, state: Any) -> list[_Entry]:
    out: list[_Entry] = []
    _walk(opt, state, (), (), out)
    _assign_keys(out)
    return out


def _forms(e: _Entry) -> tuple[str, str, str]:
    """The short, owner-qualified and path-qualified names of an entry."""
    full = "/".join((*e.labels, e.name))
    return e.name, f"{e.owner}/{e.name}", full


def _assign_keys(entries: list[_Entry]) -> None:
    forms = [_forms(e) for e in entries]
    for level in range(3):
        counts: dict[str, int] = {}
        for fs in forms:
            counts[fs[level]] = counts.get(fs[level], 0) + 1
        for e, fs in zip(entries, forms, strict=True):
            if not e.key and (counts[fs[level]] == 1 or level == 2):
                e.key = fs[level]


def _value(e: _Entry) -> Any:
    v = e.value
    if callable(v):
        if e.count is None:
            raise ValueError(
                f"hyperparams: {e.owner}.{e.name} is a schedule but its state holds no step count"
            )
        return v(e.count)
    return jnp.asarray(v)


def hyperparams(opt: Any, state: Any) -> dict[str, jax.Array]:
    """The current value of every numeric hyperparameter of an optimizer, as a flat dict.

    Walks the optimizer (members of :class:`gradtx.chain` and :class:`gradtx.named_chain`,
    inner transforms of wrappers) alongside its state. A schedule is evaluated at its
    transform's step count, so the value reported is the one the *next* update will use (a
    transform's schedule sees ``count = 0`` on its first update). Works inside ``jit``.

    Keys are the hyperparameter names (``learning_rate``, ``b1``, ...) when unique, else
    qualified by the transform (``scale_by_adam/b1``), else by the position in the chain
    (``0/decay``, or the name given to :class:`gradtx.named_chain`). :func:`replace` accepts
    the same keys.

    Args:
        opt: the optimizer (a gradtx transform).
        state: its state.

    Returns:
        ``{key: value}`` with 0-d arrays (or arrays, for array-valued hyperparameters).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> lr = gradtx.linear_schedule(1.0, 0.0, transition_steps=10)
        >>> opt = gradtx.adamw(lr, weight_decay=1e-2)
        >>> state = opt.init({"w": jnp.zeros(2)})
        >>> for _ in range(3):
        ...     _, state = opt.update({"w": jnp.ones(2)}, state, {"w": jnp.zeros(2)})
        >>> h = gradtx.hyperparams(opt, state)
        >>> sorted(h)
        ['b1', 'b2', 'eps', 'eps_root', 'learning_rate', 'weight_decay']
        >>> round(float(h["learning_rate"]), 4)
        0.7
    """
    return {e.key: _value(e) for e in _entries(opt, state)}


# ----------------------------------------------------------------------------------------------
# Replacing hyperparameters.


def _like(old: Any, new: Any) -> Any:
    """``new`` with the leaf type of ``old`` where possible, so the jit cache key is unchanged."""
    if callable(new) or callable(old) or isinstance(new, jax.core.Tracer):
        if isinstance(new, jax.core.Tracer) and hasattr(old, "dtype"):
            return new.astype(old.dtype)
        return new
    if type(old) is float and _is_numeric(new) and np.ndim(new) == 0:
        return float(new)
    if type(old) is int and _is_numeric(new) and np.ndim(new) == 0:
        x = float(new)
        return int(x) if x.is_integer() else x
    if isinstance(old, np.ndarray | np.generic) and _is_numeric(new):
        if np.shape(new) == np.shape(old):
            return np.asarray(new, dtype=old.dtype)
    if isinstance(old, jax.Array) and _is_numeric(new) and np.shape(new) == old.shape:
        if getattr(old, "weak_type", False) and old.ndim == 0:  # a number the user wrote
            v = jnp.asarray(complex(new) if np.iscomplexobj(new) else float(new))
            if v.dtype == old.dtype:
                return v  # weakly typed, like the Python number it replaces
        return jnp.asarray(new, dtype=old.dtype)
    return new


def _with_field(tx: Any, name: str, value: Any) -> Any:
    try:
        return dataclasses.replace(tx, **{name: value})
    except TypeError:
        new = object.__new__(type(tx))
        for f in dataclasses.fields(tx):
            object.__setattr__(new, f.name, getattr(tx, f.name))
        object.__setattr__(new, name, value)
        new.__post_init__()
        return new


def _set(tx: Any, route: tuple, name: str, value: Any) -> Any:
    if not route:
        return _with_field(tx, name, value)
    (kind, arg), rest = route[0], route[1:]
    if kind == "chain":
        members = list(tx.transforms)
        members[arg] = _set(members[arg], rest, name, value)
        return tx._with_members(members)
    if kind == "named":
        i = tx.names.index(arg)
        members = list(tx.transforms)
        members[i] = _set(members[i], rest, name, value)
        return named_chain(names=tx.names, transforms=tuple(members))
    if kind == "field":
        inner = getattr(tx, arg)
        if rest and rest[0][0] == "key":
            k = rest[0][1]
            d = dict(inner)
            d[k] = _set(inner[k], rest[1:], name, value)
            return _with_field(tx, arg, type(inner)(d) if type(inner) is not dict else d)
        return _with_field(tx, arg, _set(inner, rest, name, value))
    raise AssertionError(kind)


def _match(entries: list[_Entry], key: str) -> list[_Entry]:
    return [e for e in entries if key in _forms(e) or key == e.key]


def replace(opt: Any, **new_values: Any) -> Any:
    """A copy of the optimizer with the named hyperparameters replaced, wherever they are.

    Names are those of :func:`hyperparams` (``learning_rate``, ``b1``, ...); where a name is
    used by several transforms, qualify it (``**{"scale_by_adam/b1": 0.8}`` or
    ``**{"1/weight_decay": 0.0}``). A number replaced by a number (or a schedule by a schedule)
    keeps the tree structure and leaf types: the old state stays valid and a jitted step that
    takes the optimizer as an argument compiles nothing new. Python and NumPy numbers are
    checked like at construction; a JAX array is not (a jitted caller would pass it as a
    tracer, which cannot be checked), so a loop that sets a hyperparameter to a schedule's
    value behaves the same eagerly and under ``jit``.

    Args:
        opt: the optimizer.
        **new_values: ``name=value`` for each hyperparameter to change.

    Raises:
        ValueError: a name is unknown or ambiguous (the message lists the names available), a
            number is replaced by a schedule or the reverse (that changes what the state
            holds: build a new optimizer and state), or the hyperparameter lives in an
            :func:`inject_hyperparams` state (edit ``state.hyperparams`` instead).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.sgd(0.1, momentum=0.9)
        >>> opt = gradtx.replace(opt, learning_rate=0.01, decay=0.5)
        >>> state = opt.init({"w": jnp.zeros(1)})
        >>> {k: round(float(v), 4) for k, v in gradtx.hyperparams(opt, state).items()}
        {'decay': 0.5, 'learning_rate': 0.01}
    """
    for key, value in new_values.items():
        entries = _entries(opt, _Placeholder(opt))
        found = _match(entries, key)
        available = ", ".join(sorted(e.key for e in entries if not e.injected))
        if not found:
            raise ValueError(f"replace: no hyperparameter named {key!r}; available: {available}")
        if len(found) > 1:
            options = " or ".join(repr(e.key if e.key != key else _forms(e)[2]) for e in found)
            raise ValueError(
                f"replace: {key!r} is ambiguous ({len(found)} transforms have it); use {options}"
            )
        e = found[0]
        if e.injected:
            raise ValueError(
                f"replace: {key!r} is held in the optimizer state (inject_hyperparams or a "
                f"state-driven value); change state.hyperparams[{e.name!r}] instead"
            )
        if callable(e.value) != callable(value):
            what = "a schedule" if callable(value) else "a constant"
            raise ValueError(
                f"replace: {key!r} is {'a schedule' if callable(e.value) else 'a constant'} "
                f"and cannot become {what} (the state would change); build a new optimizer"
            )
        if isinstance(value, jax.Array):
            with _unchecked_values():
                opt = _set(opt, e.route, e.name, _like(e.value, value))
        else:
            opt = _set(opt, e.route, e.name, _like(e.value, value))
    return opt


class _Placeholder:
    """Mirrors an optimizer's state shape without building it: chains get tuples/dicts."""

    def __new__(cls, opt: Any) -> Any:
        if isinstance(opt, chain):
            return tuple(_Placeholder(t) for t in opt.transforms)
        if isinstance(opt, named_chain):
            return {n: _Placeholder(t) for n, t in zip(opt.names, opt.transforms, strict=True)}
        return _StateLike(opt)


class _StateLike:
    def __init__(self, opt: Any):
        self._opt = opt

    def __getattr__(self, name: str) -> Any:
        opt = object.__getattribute__(self, "_opt")
        if name in _INNER_STATE_NAMES and dataclasses.is_dataclass(opt):
            for f in dataclasses.fields(opt):
                v = getattr(opt, f.name)
                if _is_tx(v) and not f.metadata.get("static"):
                    return _Placeholder(v)
        if name == "inner_states" and dataclasses.is_dataclass(opt):
            for f in dataclasses.fields(opt):
                v = getattr(opt, f.name)
                if isinstance(v, Mapping) and v and all(_is_tx(t) for t in v.values()):
                    return {k: _Placeholder(t) for k, t in v.items()}
        raise AttributeError(name)


# ----------------------------------------------------------------------------------------------
# inject_hyperparams.


class InjectHyperparamsState(NamedTuple):
    """The state optax's ``inject_hyperparams`` used before it kept schedule states: step
    count, hyperparameters, inner state. Kept for code that names it; :func:`inject_hyperparams`
    now builds an :class:`InjectStatefulHyperparamsState`, as optax does."""

    count: jax.Array
    hyperparams: dict
    inner_state: Any


class InjectStatefulHyperparamsState(NamedTuple):
    """State of :func:`inject_hyperparams`: step count, the hyperparameters as arrays (edit them
    to change them), the state of each scheduled hyperparameter's schedule, the inner state."""

    count: jax.Array
    hyperparams: dict
    hyperparams_states: dict
    inner_state: Any


@runtime_checkable
class StatefulSchedule(Protocol):
    """A schedule with a state of its own, for :func:`inject_hyperparams`.

    ``init() -> state`` builds the state, ``__call__(state, **extra_args) -> value`` gives the
    value for the coming update, and ``update(state, **extra_args) -> state`` advances the
    state after it. ``extra_args`` are the extra keyword arguments of the optimizer's
    ``update`` (``value=loss``, ...), so a schedule may react to the loss. A plain schedule (a
    function of the step count) is wrapped in :class:`WrappedSchedule`, whose state is the
    count.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> class Halving:  # halve the learning rate whenever the loss went up
        ...     def init(self):
        ...         return {"lr": jnp.asarray(1.0), "last": jnp.asarray(jnp.inf)}
        ...     def __call__(self, state, **extra_args):
        ...         return state["lr"]
        ...     def update(self, state, *, value, **extra_args):
        ...         lr = jnp.where(value > state["last"], state["lr"] / 2, state["lr"])
        ...         return {"lr": lr, "last": value}
        >>> isinstance(Halving(), gradtx.StatefulSchedule)
        True
        >>> opt = gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=Halving())
        >>> state = opt.init(jnp.zeros(1))
        >>> for loss in [3.0, 4.0, 2.0]:
        ...     u, state = opt.update(jnp.ones(1), state, value=jnp.asarray(loss))
        >>> float(u[0]), float(state.hyperparams_states["learning_rate"]["lr"])
        (-0.5, 0.5)
    """

    def init(self) -> Any:
        """The schedule's initial state."""

    def update(self, state: Any, **extra_args: Any) -> Any:
        """The state after an update."""

    def __call__(self, state: Any, **extra_args: Any) -> Any:
        """The value for the coming update."""


class WrappedScheduleState(NamedTuple):
    """State of a :class:`WrappedSchedule`: the number of updates so far."""

    count: jax.Array


@transform
class WrappedSchedule:
    """A plain schedule ``s(count)`` as a :class:`StatefulSchedule` whose state is the count.

    ``WrappedSchedule(s)(state) = s(state.count)``; ``update`` adds one to the count
    (saturating, never wrapping). :func:`inject_hyperparams` wraps every plain schedule it is
    given in one; a gradtx schedule keeps its numbers as pytree leaves.

    Args:
        schedule_fn: a function of the step count.

    Example:
        >>> import gradtx
        >>> s = gradtx.WrappedSchedule(gradtx.linear_schedule(1.0, 0.0, 4))
        >>> state = s.update(s.update(s.init()))
        >>> int(state.count), float(s(state))
        (2, 0.5)
    """

    schedule_fn: Any

    def __post_init__(self) -> None:
        fn = self.schedule_fn
        if not callable(fn):
            raise TypeError(f"WrappedSchedule: schedule_fn must be callable, got {fn!r}")
        if not isinstance(fn, _StaticFn) and _is_plain_function(fn):
            object.__setattr__(self, "schedule_fn", _StaticFn(fn))

    def init(self) -> WrappedScheduleState:
        return WrappedScheduleState(count=jnp.zeros([], jnp.int32))

    def update(self, state: WrappedScheduleState, **extra_args: Any) -> WrappedScheduleState:
        return WrappedScheduleState(count=tree_lib.safe_increment(state.count))

    def __call__(self, state: WrappedScheduleState, **extra_args: Any) -> Any:
        return self.schedule_fn(state.count)

    def __repr__(self) -> str:
        return f"WrappedSchedule({self.schedule_fn!r})"


@jax.tree_util.register_static
class _StaticArgs:
    """Non-numeric arguments of the inner factory, held in the treedef."""

    def __init__(self, items: dict):
        self.items = dict(items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _StaticArgs) or other.items.keys() != self.items.keys():
            return False
        for k, v in self.items.items():
            w = other.items[k]
            if v is w:
                continue
            try:
                if not bool(v == w):
                    return False
            except Exception:  # noqa: BLE001  (values that do not compare as one bool)
                return False
        return True

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.items)))

    def __repr__(self) -> str:
        return repr(self.items)


def _convert_float(x: Any, dtype: Any) -> Any:
    """Floating values to ``dtype``; strongly typed arrays and non-floats pass through."""
    if isinstance(x, jax.Array) and not getattr(x, "weak_type", False):
        return x
    dt = x.dtype if hasattr(x, "dtype") else type(x)
    if jnp.issubdtype(dt, jnp.floating):
        return jnp.asarray(x, dtype=dtype)
    return x


def _params_dtype(params: Any) -> Any:
    dts = [jnp.result_type(x) for x in jax.tree_util.tree_leaves(params)]
    dts = [d for d in dts if jnp.issubdtype(d, jnp.floating)]
    if not dts:
        return jnp.result_type(float)
    return functools.reduce(jnp.promote_types, dts)


@jax.tree_util.register_static
class _StaticSchedule:
    """A stateful schedule that is not a pytree (a plain object), held in the treedef."""

    def __init__(self, schedule: Any):
        self.schedule = schedule

    def init(self) -> Any:
        return self.schedule.init()

    def update(self, state: Any, **extra_args: Any) -> Any:
        return self.schedule.update(state, **extra_args)

    def __call__(self, state: Any, **extra_args: Any) -> Any:
        return self.schedule(state, **extra_args)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _StaticSchedule) and other.schedule is self.schedule

    def __hash__(self) -> int:
        return id(self.schedule)

    def __repr__(self) -> str:
        return repr(self.schedule)


def _as_stateful(s: Any) -> Any:
    """A scheduled argument as a :class:`StatefulSchedule` (plain schedules are wrapped)."""
    if isinstance(s, WrappedSchedule | _StaticSchedule):
        return s
    if isinstance(s, StatefulSchedule):
        return _StaticSchedule(s) if _is_plain_function(s) else s
    return WrappedSchedule(s)


@transform
class InjectedHyperparams(GradientTransformation):
    """The transform made by :func:`inject_hyperparams`: builds ``factory(**hyperparams)`` at
    every update from the hyperparameters held in its state.

    Args:
        factory: the inner optimizer's constructor (static).
        numeric: the numeric hyperparameters' initial values (leaves).
        schedules: the scheduled hyperparameters, as :class:`StatefulSchedule` objects (plain
            schedules are wrapped in :class:`WrappedSchedule`).
        static_args: the other arguments (held in the treedef).
        hyperparam_dtype: dtype of float hyperparameters (default: the params' widest float).

    Example:
        >>> import gradtx
        >>> tx = gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=0.1)
        >>> type(tx).__name__, sorted(tx.numeric)
        ('InjectedHyperparams', ['learning_rate'])
    """

    factory: Any = static_field()
    numeric: dict = dataclasses.field(default_factory=dict)
    schedules: dict = dataclasses.field(default_factory=dict)
    static_args: Any = static_field(None)
    hyperparam_dtype: Any = static_field(None)

    def _check(self):
        if not isinstance(self.static_args, _StaticArgs):
            object.__setattr__(self, "static_args", _StaticArgs(self.static_args or {}))
        scheds = {k: _as_stateful(s) for k, s in dict(self.schedules).items()}
        object.__setattr__(self, "schedules", scheds)
        object.__setattr__(self, "numeric", dict(self.numeric))

    def _dtype(self, params: Any) -> Any:
        return self.hyperparam_dtype or _params_dtype(params)

    def _inner(self, hparams: dict) -> Any:
        # The values come from the state or a schedule: never refused here, as under jit.
        with _unchecked_values():
            return _as_member(self.factory(**self.static_args.items, **hparams))

    def init(self, params):
        dtype = self._dtype(params)
        count = jnp.zeros([], jnp.int32)
        hp = {k: jnp.asarray(_convert_float(v, dtype)) for k, v in self.numeric.items()}
        hs = {k: f.init() for k, f in self.schedules.items()}
        hp.update(
            {k: jnp.asarray(_convert_float(f(hs[k]), dtype)) for k, f in self.schedules.items()}
        )
        return InjectStatefulHyperparamsState(
            count=count,
            hyperparams=hp,
            hyperparams_states=hs,
            inner_state=self._inner(hp).init(params),
        )

    def update(self, updates, state, params=None, **extra_args):
        dtype = self._dtype(params if params is not None else updates)
        hs = state.hyperparams_states
        hp = {k: _convert_float(v, dtype) for k, v in state.hyperparams.items()}
        hp.update(
            {k: _convert_float(f(hs[k], **extra_args), dtype) for k, f in self.schedules.items()}
        )
        new_hs = {k: f.update(hs[k], **extra_args) for k, f in self.schedules.items()}
        updates, inner_state = self._inner(hp).update(
            updates, state.inner_state, params, **extra_args
        )
        return updates, InjectStatefulHyperparamsState(
            count=tree_lib.safe_increment(state.count),
            hyperparams=hp,
            hyperparams_states=new_hs,
            inner_state=inner_state,
        )

    @property
    def _hyperparam_owner(self) -> str:
        return getattr(self.factory, "__name__", "inject_hyperparams")

    def _hyperparam_entries(self, state: Any) -> Iterable[tuple]:
        hp = getattr(state, "hyperparams", None)
        hs = getattr(state, "hyperparams_states", None)
        for k in self.numeric:
            yield k, self.numeric[k] if hp is None else hp[k], None, True
        for k, f in self.schedules.items():
            if isinstance(f, WrappedSchedule):  # the value the next update will use
                yield k, f.schedule_fn, None if hs is None else hs[k].count, True
            else:  # a stateful schedule may need extra arguments: the last value used
                yield k, f if hp is None else hp[k], None, True

    def __repr__(self) -> str:
        name = getattr(self.factory, "__name__", repr(self.factory))
        scheds = {
            k: f.schedule_fn if isinstance(f, WrappedSchedule) else f
            for k, f in self.schedules.items()
        }
        args = {**self.numeric, **scheds, **self.static_args.items}
        return f"inject_hyperparams({name})({', '.join(f'{k}={v!r}' for k, v in args.items())})"


def _is_validation_error(e: Exception) -> bool:
    """An error raised on purpose for a bad argument (not JAX refusing a traced value)."""
    if isinstance(e, jax.errors.ConcretizationTypeError | jax.errors.JAXTypeError):
        return False
    return isinstance(e, ValueError | TypeError)


def _value_shape(schedule: Any) -> Any:
    """The shape and dtype of a schedule's values (a float scalar when it cannot be told)."""
    try:
        if isinstance(schedule, StatefulSchedule) and not isinstance(schedule, WrappedSchedule):
            out = jax.eval_shape(lambda: schedule(schedule.init()))
        else:
            out = jax.eval_shape(schedule, jax.ShapeDtypeStruct((), jnp.int32))
        if isinstance(out, jax.ShapeDtypeStruct):
            return out
    except Exception:  # noqa: BLE001  (a schedule that needs extra arguments, say)
        pass
    return jax.ShapeDtypeStruct((), jnp.result_type(float))


def _check_written_values(factory: Callable[..., Any], other: dict, numeric: dict, scheds: dict):
    """Build the inner transform once, with the values the user wrote, so bad ones are refused
    here, where the user wrote them. Scheduled values are unknown until training (they are
    traced here), so only the written ones are checked."""

    def build(sched_values: dict) -> jax.Array:
        factory(**other, **numeric, **sched_values)
        return jnp.zeros([])

    placeholders = {k: _value_shape(s) for k, s in scheds.items()}
    try:
        jax.eval_shape(build, placeholders)
    except Exception as e:  # noqa: BLE001  (only the factory's own argument checks matter)
        if _is_validation_error(e):
            raise


def inject_hyperparams(
    inner_factory: Callable[..., Any],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., InjectedHyperparams]:
    """Wrap an optimizer constructor so its hyperparameters live in the optimizer *state*.

    ``inject_hyperparams(gradtx.adam)(learning_rate=..., b1=...)`` returns a transform whose
    state is an :class:`InjectStatefulHyperparamsState`: ``state.hyperparams`` holds every
    numeric argument as an array (change it there, e.g.
    ``state.hyperparams["learning_rate"] = 1e-4``, and the next update uses it), and scheduled
    arguments are evaluated on every update (editing them in the state has no effect; after an
    update the state holds the values that update used). A scheduled argument is a function of
    the step count (kept as a :class:`WrappedSchedule`, whose state is the count) or a
    :class:`StatefulSchedule` (its state is kept in ``state.hyperparams_states``, and it sees
    ``update``'s extra keyword arguments). Booleans, strings, ``None``, other non-numeric
    values and the callables named in ``static_args`` are passed through unchanged. Same
    behaviour and state as optax's ``inject_hyperparams``, and it accepts optax constructors as
    well as gradtx ones.

    The values you write are checked here (``inject_hyperparams(gradtx.adam)(b1=1.5)`` raises);
    the values that arrive during training (from a schedule, or edited in the state) are not,
    eagerly or under ``jit`` alike, so an eager loop and a jitted one give the same numbers
    (``max_norm`` scheduled down to 0 clips every update to zero, as in optax).

    With gradtx optimizers this wrapper is optional: their hyperparameters are already leaves,
    readable with :func:`hyperparams` and changeable with :func:`replace`.

    Args:
        inner_factory: a function returning a transform (e.g. ``gradtx.adamw``, ``optax.sgd``).
        static_args: names of callable arguments that are not schedules.
        hyperparam_dtype: dtype of float hyperparameters (default: the params' widest float).

    Returns:
        A function with ``inner_factory``'s signature returning the wrapped transform.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=0.1)
        >>> params = {"w": jnp.ones(1)}
        >>> state = opt.init(params)
        >>> state.hyperparams["learning_rate"] = jnp.asarray(0.5)
        >>> updates, state = opt.update({"w": jnp.ones(1)}, state, params)
        >>> round(float(updates["w"][0]), 4)
        -0.5
    """
    static_names = {static_args} if isinstance(static_args, str) else set(static_args)
    sig = inspect.signature(inner_factory)
    unknown = static_names - set(sig.parameters)
    if unknown:
        raise ValueError(
            f"inject_hyperparams: static_args {sorted(unknown)} are not parameters of "
            f"{getattr(inner_factory, '__name__', inner_factory)}; it takes "
            f"{sorted(sig.parameters)}"
        )

    @functools.wraps(inner_factory)
    def wrapped(*args: Any, **kwargs: Any) -> InjectedHyperparams:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        numeric, scheds, other = {}, {}, {}
        for name, value in bound.arguments.items():
            param = sig.parameters[name]
            if param.kind is param.VAR_KEYWORD:
                other.update(value)
            elif name in static_names or isinstance(value, bool):
                other[name] = value
            elif callable(value):
                scheds[name] = value
            elif isinstance(value, int | float | np.ndarray | np.generic | jax.Array):
                numeric[name] = value
            else:
                other[name] = value
        _check_written_values(inner_factory, other, numeric, scheds)
        return InjectedHyperparams(
            inner_factory, numeric, scheds, _StaticArgs(other), hyperparam_dtype
        )

    return wrapped


def inject_stateful_hyperparams(
    inner_factory: Callable[..., Any],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., InjectedHyperparams]:
    """Deprecated name of :func:`inject_hyperparams` (which takes :class:`StatefulSchedule`
    arguments too); warns with ``DeprecationWarning``, as optax's does.

    Args:
        inner_factory: a function returning a transform.
        static_args: names of callable arguments that are not schedules.
        hyperparam_dtype: dtype of float hyperparameters (default: the params' widest float).

    Example:
        >>> import warnings, jax.numpy as jnp, gradtx
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", DeprecationWarning)
        ...     opt = gradtx.inject_stateful_hyperparams(gradtx.sgd)(learning_rate=0.1)
        >>> type(opt.init(jnp.zeros(1))).__name__
        'InjectStatefulHyperparamsState'
    """
    warnings.warn(
        "inject_stateful_hyperparams is deprecated, use inject_hyperparams instead",
        DeprecationWarning,
        stacklevel=2,
    )
    return inject_hyperparams(inner_factory, static_args, hyperparam_dtype)
