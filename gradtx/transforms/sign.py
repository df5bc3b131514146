"""Sign-based scaling: signSGD's ``sign(g)`` and Rprop's per-coordinate adaptive step sizes."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import numerics as tree_lib
from gradtx.core import (
    EmptyState,
    GradientTransformation,
    check_range,
    static_field,
    transform,
)
from gradtx.numerics import is_none as _none
from gradtx.numerics import tree_map_none as _map

__all__ = ["scale_by_sign", "scale_by_rprop", "ScaleByRpropState"]


@transform
class scale_by_sign(GradientTransformation):
    """Replace each update by its sign: ``u ← sign(u)`` (0 stays 0; a complex ``u`` maps to
    ``u / |u|``).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_sign()
        >>> tx.update(jnp.array([-0.3, 0.0, 7.0]), tx.init(None))[0].tolist()
        [-1.0, 0.0, 1.0]

    Reference: Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex Problems",
    ICML 2018.
    """

    def init(self, params):
        return EmptyState()

    def update(self, updates, state, params=None, **extra_args):
        return _map(lambda u: None if u is None else jnp.sign(u), updates), state


class ScaleByRpropState(NamedTuple):
    """Per-coordinate step sizes ``Δ`` and the sign of the previous gradient (0 after a sign
    change, as iRprop− forgets the gradient there)."""

    step_sizes: Any
    prev_signs: Any


@transform
class scale_by_rprop(GradientTransformation):
    """Rprop's per-coordinate step sizes, the iRprop− variant (Igel & Hüsken, 2003).

    With ``s = sign(g_t) · sign(g_{t−1})`` per coordinate:

    .. math::
        Δ_t = \\begin{cases} \\min(η^+ Δ_{t-1}, Δ_{max}) & s > 0 \\\\
        \\max(η^- Δ_{t-1}, Δ_{min}) & s < 0 \\\\ Δ_{t-1} & s = 0 \\end{cases},\\qquad
        u_t = \\begin{cases} 0 & s < 0 \\\\ Δ_t\\,\\mathrm{sign}(g_t) & \\text{else}\\end{cases}

    and after a sign change the stored gradient is set to 0 (so the next step is ``s = 0``).
    The output is ``+Δ sign(g)``; :func:`gradtx.rprop` flips it for descent. ``Δ_0`` is the
    learning rate. This is iRprop− (no weight backtracking), which is what optax and PyTorch
    call Rprop; the 1993 Rprop of Riedmiller & Braun also undoes the previous step on a sign
    change. Not defined for complex parameters.

    optax's ``scale_by_rprop`` returns each coordinate's step one iteration late: at step
    ``t`` it outputs ``Δ_{t−1} sign(g_{t−1})`` (zero at the first step, and zero where the sign
    has just changed). ``lagged=True`` reproduces that.

    Args:
        learning_rate: the initial step size ``Δ_0``.
        eta_minus: ``η^- in (0, 1)``, the factor applied after a sign change.
        eta_plus: ``η^+ > 1``, the factor applied while the sign persists.
        min_step_size: ``Δ_min``.
        max_step_size: ``Δ_max``.
        lagged: output the previous iteration's step (optax's behaviour).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> tx = gradtx.scale_by_rprop(0.1)
        >>> s = tx.init(jnp.zeros(2))
        >>> u, s = tx.update(jnp.array([1.0, -1.0]), s)
        >>> u, s = tx.update(jnp.array([2.0, 1.0]), s)  # same sign, then a sign change
        >>> [round(float(x), 4) for x in u], [round(float(x), 4) for x in s.step_sizes]
        ([0.12, 0.0], [0.12, 0.05])

    Reference: Igel & Hüsken, "Empirical evaluation of the improved Rprop learning algorithms",
    Neurocomputing 50, 2003 (iRprop−); Riedmiller & Braun, "A direct adaptive method for faster
    backpropagation learning: the RPROP algorithm", ICNN 1993.
    """

    learning_rate: Any
    eta_minus: Any = 0.5
    eta_plus: Any = 1.2
    min_step_size: Any = 1e-6
    max_step_size: Any = 50.0
    lagged: bool = static_field(False, kw_only=True)

    def _check(self):
        o = "scale_by_rprop"
        check_range(o, "learning_rate", self.learning_rate, low=0.0, low_open=True)
        check_range(o, "eta_minus", self.eta_minus, low=0.0, high=1.0, low_open=True)
        check_range(o, "eta_plus", self.eta_plus, low=1.0)
        check_range(o, "min_step_size", self.min_step_size, low=0.0)
        check_range(o, "max_step_size", self.max_step_size, low=0.0, low_open=True)
        if callable(self.learning_rate):
            raise TypeError(f"{o}: learning_rate must be a number (the initial step size)")

    def init(self, params):
        def steps(p):
            if p is None:
                return None
            if jnp.iscomplexobj(p):  # the sign of a gradient component is undefined
                raise TypeError(
                    f"scale_by_rprop: complex parameters are not supported (Rprop compares the "
                    f"signs of successive gradients), got dtype {jnp.result_type(p)}"
                )
            dt = tree_lib.real_dtype(jnp.result_type(p))
            return tree_lib.full_like(p, self.learning_rate, dt)

        return ScaleByRpropState(
            step_sizes=_map(steps, params), prev_signs=tree_lib.tree_zeros_like(params)
        )

    def update(self, updates, state, params=None, **extra_args):
        tree_lib.check_structure(updates, state.step_sizes, "scale_by_rprop", "updates", "state")

        def f(g, step, prev):
            if g is None:
                return None, None, None
            cd = tree_lib.compute_dtype(step.dtype)
            sg = jnp.sign(g).astype(cd)
            s = sg * prev.astype(cd)
            step_c = step.astype(cd)
            grown = jnp.minimum(step_c * self.eta_plus, self.max_step_size)
            shrunk = jnp.maximum(step_c * self.eta_minus, self.min_step_size)
            new_step = jnp.where(s > 0, grown, jnp.where(s < 0, shrunk, step_c))
            new_sign = jnp.where(s < 0, 0.0, sg)
            if self.lagged:
                out = jnp.where(s < 0, 0.0, step_c * prev.astype(cd)).astype(g.dtype)
            else:
                out = (new_step * new_sign).astype(g.dtype)
            return out, new_step.astype(step.dtype), new_sign.astype(prev.dtype)

        triples = _map(f, updates, state.step_sizes, state.prev_signs)
        treedef = jax.tree_util.tree_structure(updates, is_leaf=_none)
        flat = treedef.flatten_up_to(triples)
        out = treedef.unflatten([t[0] for t in flat])
        steps = treedef.unflatten([t[1] for t in flat])
        signs = treedef.unflatten([t[2] for t in flat])
        return out, ScaleByRpropState(step_sizes=steps, prev_signs=signs)
