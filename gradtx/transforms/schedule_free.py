"""Schedule-Free learning (Defazio et al., "The Road Less Scheduled", arXiv 2405.15682).

Momentum and the learning-rate schedule are replaced by interpolation and averaging of three
sequences: the base optimizer steps ``z``, ``x`` is a weighted average of the ``z``'s (the point
to evaluate), and gradients are taken at ``y = (1 − β) z + β x``, the parameters the wrapper
hands back during training. Only ``z`` is stored (with the base optimizer's state); ``x`` follows
from the parameters, ``x = (y − (1 − β) z) / β``, which :func:`schedule_free_eval_params`
computes. Names, arguments, state layout and numbers are optax.contrib's; each difference from
the paper is listed on :class:`schedule_free` and :func:`schedule_free_adamw`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import numerics as tree_lib
from gradtx.core import (
    GradientTransformation,
    ScalarOrSchedule,
    _as_member,
    chain,
    check_count,
    check_dtype,
    check_nonnegative,
    check_range,
    hyper,
    static_field,
    transform,
    user_facing,
)
from gradtx.numerics import tree_map_none as _map
from gradtx.optimizers.classic import sgd
from gradtx.schedules import warmup_constant_schedule
from gradtx.transforms.adaptive import scale_by_rms
from gradtx.transforms.decay import add_decayed_weights
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = [
    "ScheduleFreeState",
    "schedule_free",
    "schedule_free_eval_params",
    "schedule_free_sgd",
    "schedule_free_adamw",
]


class ScheduleFreeState(NamedTuple):
    """State of :class:`schedule_free` (optax.contrib's layout).

    ``b1`` is β, kept for :func:`schedule_free_eval_params`; ``weight_sum`` the sum of the
    averaging weights so far; ``step_count`` the step about to be taken (1 at the first update);
    ``max_lr`` the largest learning rate seen; ``z`` the base optimizer's sequence.
    """

    b1: jax.Array
    weight_sum: jax.Array
    step_count: jax.Array
    max_lr: jax.Array
    base_optimizer_state: Any
    z: Any


def _scalar_dtype(params: Any) -> Any:
    """The dtype of the state's scalars: the narrowest real dtype of the params, at least
    float32 (a bfloat16 ``weight_sum`` would stop growing after a few hundred steps)."""
    dtypes = [
        tree_lib.real_dtype(tree_lib.compute_dtype(jnp.result_type(x)))
        for x in jax.tree_util.tree_leaves(params)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    if not dtypes:
        return jnp.dtype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    return min(dtypes, key=lambda d: jnp.dtype(d).itemsize)


@transform
class schedule_free(GradientTransformation):
    """Make ``base_optimizer`` schedule-free: its steps move ``z``; the parameters become
    ``y``, an interpolation between ``z`` and the running average ``x`` of the ``z``'s.

    With ``u_t`` the base optimizer's update (for SGD, ``−γ_t g_t`` with ``g_t`` taken at
    ``y_t``) and ``β = b1`` (the paper's eqs. (1)–(3) and Algorithm 1, lines 5, 9–11):

    .. math::
        z_{t+1} = z_t + u_t,\\quad x_{t+1} = (1-c_{t+1}) x_t + c_{t+1} z_{t+1},\\quad
        y_{t+1} = (1-β) z_{t+1} + β x_{t+1},\\\\
        c_{t+1} = \\frac{w_t}{\\sum_{i \\le t} w_i},\\quad
        w_t = \\big(\\max_{i \\le t} γ_i\\big)^{p}.

    The update returned is ``y_{t+1} − y_t = c_{t+1}(z_t − y_t) + (1 − β(1 − c_{t+1}))(z_{t+1} −
    z_t)``, the same numbers as recomputing ``x`` from ``y`` and ``z`` as optax does, without
    dividing by β. Here ``γ_t = learning_rate(t)`` for ``t = 1, 2, ...`` and ``p =
    weight_lr_power``: with ``p = 2`` and a learning rate that never decreases (warmup, then
    constant: the intended use), this is the paper's ``c_{t+1} = γ_t² / Σ_{i≤t} γ_i²``. The
    base optimizer should have no momentum of its own.

    Differences from the paper, all as optax (and the authors' current code) does:

    - the weights use the running maximum of the learning rate, not its current value; they
      differ only for a learning rate that decreases;
    - the base optimizer's own schedule counts from 0, the weights' from 1: with a warmup the
      first step of ``z`` is ``γ_0 = 0`` where the paper takes ``γ_1``, a one-step lag. Pass a
      base optimizer whose schedule is ``lambda t: learning_rate(t + 1)`` for the paper's;
    - only ``z`` is stored, so β must be > 0 (``x`` is recovered by dividing by it).

    The scalars of the state are kept in at least float32 (optax keeps them in the narrowest
    dtype of the params, bfloat16 for bfloat16 params); the updates have the params' dtype.

    Args:
        base_optimizer: the optimizer whose steps move ``z`` (gradtx or optax), without momentum.
        learning_rate: the learning rate (or schedule) the weights of the average follow: the
            base optimizer's, with its warmup.
        b1: β, the interpolation weight of ``x`` in ``y``, in (0, 1] (0.9; 0.95 or 0.98 also
            work well, say the authors).
        weight_lr_power: ``p``, the power of the learning rate in the weights (0: uniform).
        state_dtype: dtype of ``z`` (default: the params').

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.schedule_free(gradtx.sgd(0.5), learning_rate=0.5, b1=0.5)
        >>> params = jnp.array([2.0])
        >>> state = opt.init(params)
        >>> for _ in range(2):
        ...     u, state = opt.update(params, state, params)  # the gradient of |θ|²/2 is θ
        ...     params = gradtx.apply_updates(params, u)
        >>> params.tolist(), gradtx.schedule_free_eval_params(state, params).tolist()
        ([0.625], [0.75])

    Reference: Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less
    Scheduled", NeurIPS 2024, arXiv 2405.15682.
    """

    flat_safe = True  # element by element (the base optimizer is checked on its own)
    base_optimizer: Any
    learning_rate: ScalarOrSchedule
    b1: Any = 0.9
    weight_lr_power: Any = 2.0
    state_dtype: Any = static_field(None)

    def _check(self):
        owner = "schedule_free"
        try:
            base = _as_member(self.base_optimizer)
        except TypeError:
            raise TypeError(
                f"{owner}: base_optimizer must be a gradient transformation (an (init, update) "
                f"pair), got {self.base_optimizer!r}"
            ) from None
        object.__setattr__(self, "base_optimizer", base)
        check_nonnegative(owner, "learning_rate", self.learning_rate)
        check_range(owner, "b1", self.b1, low=0.0, high=1.0, low_open=True)
        check_nonnegative(owner, "weight_lr_power", self.weight_lr_power)
        object.__setattr__(self, "state_dtype", check_dtype(owner, "state_dtype", self.state_dtype))

    def _hyperparam_entries(self, state: Any) -> Any:
        # for gradtx.hyperparams: the learning rate's schedule runs on ``step_count``
        yield "learning_rate", self.learning_rate, getattr(state, "step_count", None), False
        yield "b1", self.b1, None, False
        yield "weight_lr_power", self.weight_lr_power, None, False

    def init(self, params):
        dtype = _scalar_dtype(params)
        z = _map(
            lambda p: None if p is None else jnp.array(p, dtype=self.state_dtype, copy=True),
            params,
        )
        return ScheduleFreeState(
            b1=jnp.asarray(self.b1, dtype),
            weight_sum=jnp.zeros([], dtype),
            step_count=jnp.ones([], jnp.int32),
            max_lr=jnp.zeros([], dtype),
            base_optimizer_state=self.base_optimizer.init(params),
            z=z,
        )

    def update(self, updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(
                "schedule_free.update: params are required (the parameters are the point y "
                "between z and its average x): call update(grads, state, params)"
            )
        tree_lib.check_structure(updates, state.z, "schedule_free", "updates", "state (z)")
        dtype = state.max_lr.dtype
        lr = jnp.asarray(hyper(self.learning_rate, state.step_count), dtype)
        max_lr = jnp.maximum(state.max_lr, lr)
        weight = max_lr ** jnp.asarray(self.weight_lr_power, dtype)
        weight_sum = state.weight_sum + weight
        # c = w / Σw; 0 while every weight is 0 (a zero learning rate: x stays where it is)
        empty = weight_sum == 0
        c = jnp.where(empty, 0, weight / jnp.where(empty, 1, weight_sum))
        b1 = jnp.asarray(self.b1, dtype)
        y_coef = 1 - b1 * (1 - c)

        base_updates, base_state = self.base_optimizer.update(
            updates, state.base_optimizer_state, params, **extra_args
        )

        def leaf(y, z, u):
            if y is None:
                return None, None
            y, z, u = tree_lib.as_array(y), tree_lib.as_array(z), tree_lib.as_array(u)
            z_new = jnp.asarray(z + u).astype(z.dtype)
            cd = tree_lib.compute_dtype(jnp.result_type(y, z))
            yc, zc = tree_lib.cast(y, cd), tree_lib.cast(z, cd)
            dz = tree_lib.cast(z_new, cd) - zc  # the step z took, as stored
            dy = c.astype(cd) * (zc - yc) + y_coef.astype(cd) * dz
            return tree_lib.cast(dy, y.dtype), z_new

        pairs = _map(leaf, params, state.z, base_updates)
        treedef = jax.tree_util.tree_structure(params, is_leaf=tree_lib.is_none)
        parts = treedef.flatten_up_to(pairs)
        out = treedef.unflatten([None if p is None else p[0] for p in parts])
        z = treedef.unflatten([None if p is None else p[1] for p in parts])
        return out, ScheduleFreeState(
            b1=state.b1,
            weight_sum=weight_sum,
            step_count=tree_lib.safe_increment(state.step_count),
            max_lr=max_lr,
            base_optimizer_state=base_state,
            z=z,
        )


def _find_state(state: Any) -> ScheduleFreeState:
    if isinstance(state, ScheduleFreeState):
        return state
    found = [
        s
        for s in jax.tree_util.tree_leaves(
            state, is_leaf=lambda s: isinstance(s, ScheduleFreeState)
        )
        if isinstance(s, ScheduleFreeState)
    ]
    if len(found) != 1:
        what = "none" if not found else f"{len(found)}"
        raise ValueError(
            "schedule_free_eval_params: state must be the state of a schedule_free optimizer "
            f"(a ScheduleFreeState, or a state holding exactly one); found {what}"
        )
    return found[0]


def schedule_free_eval_params(state: Any, params: Any) -> Any:
    """The point to evaluate a schedule-free model at: the average ``x = (y − (1 − β) z) / β``.

    ``params`` are the training parameters ``y``; ``state`` is the optimizer's state (a
    :class:`ScheduleFreeState`, or a state holding exactly one, e.g. inside a chain). The result
    has the params' dtypes.

    Args:
        state: the state of a :class:`schedule_free` optimizer.
        params: the current training parameters.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.schedule_free_sgd(1.0, b1=0.5)
        >>> params = {"w": jnp.array([2.0])}
        >>> u, state = opt.update({"w": jnp.array([1.0])}, opt.init(params), params)
        >>> params = gradtx.apply_updates(params, u)  # y = z = 1 after the first step
        >>> gradtx.schedule_free_eval_params(state, params)["w"].tolist()
        [1.0]

    Reference: Defazio et al., arXiv 2405.15682.
    """
    sf = _find_state(state)
    tree_lib.check_structure(params, sf.z, "schedule_free_eval_params", "params", "state (z)")

    def leaf(y, z):
        if y is None:
            return None
        y, z = tree_lib.as_array(y), tree_lib.as_array(z)
        cd = tree_lib.compute_dtype(jnp.result_type(y, z))
        b1 = sf.b1.astype(tree_lib.real_dtype(cd)).astype(cd)
        x = (tree_lib.cast(y, cd) - (1 - b1) * tree_lib.cast(z, cd)) / b1
        return tree_lib.cast(x, y.dtype)

    return _map(leaf, params, sf.z)


def _with_warmup(owner: str, learning_rate: Any, warmup_steps: Any) -> Any:
    """``learning_rate`` with optax's linear warmup from 0 over ``warmup_steps`` (a positive
    integer, as optax documents it: optax's schedule with 0 steps would stay at 0)."""
    if warmup_steps is None:
        return learning_rate
    check_count(owner, "warmup_steps", warmup_steps, low=1)
    if callable(learning_rate):
        raise TypeError(
            f"{owner}: learning_rate must be a number when warmup_steps is given (the warmup "
            f"rises to it), got the schedule {learning_rate!r}; put the warmup in the schedule "
            "instead (e.g. gradtx.warmup_constant_schedule)"
        )
    return warmup_constant_schedule(0.0, learning_rate, warmup_steps)


@user_facing
def schedule_free_sgd(
    learning_rate: Any = 1.0,
    warmup_steps: int | None = None,
    b1: Any = 0.9,
    weight_decay: Any = None,
    weight_lr_power: Any = 2.0,
    state_dtype: Any = None,
) -> schedule_free:
    """Schedule-Free SGD: :class:`schedule_free` around plain SGD (optax.contrib's shortcut).

    ``z ← z − γ_t (g + λ y)`` with ``g`` taken at ``y``; with ``warmup_steps`` the learning rate
    rises linearly from 0 to ``learning_rate`` (:class:`warmup_constant_schedule`). The weight
    decay is multiplied by the learning rate, as in PyTorch and optax.

    Args:
        learning_rate: γ.
        warmup_steps: length of the linear warmup (``None``: no warmup).
        b1: β (see :class:`schedule_free`).
        weight_decay: λ (``None``: no weight decay).
        weight_lr_power: see :class:`schedule_free`.
        state_dtype: dtype of ``z``.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.schedule_free_sgd(0.5, warmup_steps=10)
        >>> params = jnp.ones(3)
        >>> state = opt.init(params)
        >>> for _ in range(50):
        ...     u, state = opt.update(params, state, params)  # minimise |θ|²/2
        ...     params = gradtx.apply_updates(params, u)
        >>> x = gradtx.schedule_free_eval_params(state, params)
        >>> bool(jnp.all(jnp.abs(x) < 0.1))
        True

    Reference: Defazio et al., arXiv 2405.15682.
    """
    learning_rate = _with_warmup("schedule_free_sgd", learning_rate, warmup_steps)
    base = sgd(learning_rate)
    if weight_decay is not None:
        base = chain(add_decayed_weights(weight_decay), base)
    return schedule_free(base, learning_rate, b1, weight_lr_power, state_dtype)


@user_facing(renames={("scale_by_rms", "decay"): "b2"})
def schedule_free_adamw(
    learning_rate: Any = 0.0025,
    warmup_steps: int | None = None,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    weight_lr_power: Any = 2.0,
    state_dtype: Any = None,
) -> schedule_free:
    """Schedule-Free AdamW: :class:`schedule_free` around AdamW without momentum.

    The base optimizer is ``z ← z − γ_t (g / (√v̂ + ε) + λ y)`` with ``v̂ = v / (1 − β2^t)``
    (:class:`scale_by_rms` with Adam's bias correction, :class:`add_decayed_weights`,
    ``−γ_t``); ``b1`` is the schedule-free β, not a momentum.

    The paper's Algorithm 1 (lines 7–10) folds the bias correction into the learning rate,
    ``γ_t = γ √(1 − β2^t) min(1, t/T_warmup)``, and uses that ``γ_t`` for the step, the weight
    decay and the averaging weights. Here, as in optax and in the authors' current code (which
    calls the paper's form one that "can cause instability on some problems"), the correction
    divides ``v`` instead, so: ε is not scaled by ``√(1 − β2^t)``; the weight decay is ``γ λ``,
    not ``γ √(1 − β2^t) λ``; and the averaging weights are ``γ_max²``, not ``γ_t²``, so the
    first ``~1/(1 − β2)`` iterates are not down-weighted. The warmup lags one step (see
    :class:`schedule_free`). The paper's numbers come from :class:`schedule_free` with
    ``learning_rate=lambda t: γ_t`` and the base ``chain(scale_by_rms(b2, eps,
    eps_in_sqrt=False), add_decayed_weights(λ), scale_by_learning_rate(lambda t: γ_{t+1}))``.

    Args:
        learning_rate: γ.
        warmup_steps: length of the linear warmup (``None``: no warmup).
        b1: β (see :class:`schedule_free`).
        b2: decay of the second moment, in [0, 1).
        eps: added to ``√v̂``.
        weight_decay: λ, multiplied by the learning rate.
        weight_lr_power: see :class:`schedule_free`.
        state_dtype: dtype of ``z``.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.schedule_free_adamw(0.1)
        >>> params = {"w": jnp.array([1.0, -1.0])}
        >>> u, state = opt.update({"w": jnp.array([3.0, -0.5])}, opt.init(params), params)
        >>> [round(float(x), 4) for x in u["w"]]  # the first step is −γ sign(g)
        [-0.1, 0.1]

    Reference: Defazio et al., arXiv 2405.15682, Algorithm 1.
    """
    learning_rate = _with_warmup("schedule_free_adamw", learning_rate, warmup_steps)
    base = chain(
        scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True),
        add_decayed_weights(weight_decay),
        scale_by_learning_rate(learning_rate),
    )
    return schedule_free(base, learning_rate, b1, weight_lr_power, state_dtype)
