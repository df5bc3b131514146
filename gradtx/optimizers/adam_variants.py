"""Adam's relatives and the memory-light adaptive methods: compositions, optax's names.

Each returns a :class:`gradtx.chain`; the math (and any documented difference from optax) lives
on the transforms each one composes.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradtx.core import ScalarOrSchedule, chain, user_facing
from gradtx.transforms.adam_variants import (
    add_proximal_decay,
    scale_by_adan,
    scale_by_belief,
    scale_by_lion,
    scale_by_novograd,
    scale_by_radam,
    scale_by_yogi,
)
from gradtx.transforms.adaptive import scale_by_adam
from gradtx.transforms.clipping import clip_by_block_rms
from gradtx.transforms.decay import add_decayed_weights
from gradtx.transforms.factored import scale_by_factored_rms, scale_by_sm3
from gradtx.transforms.layerwise import scale_by_param_block_rms
from gradtx.transforms.momentum import ema
from gradtx.transforms.optimistic import scale_by_optimistic_gradient
from gradtx.transforms.scaling import scale, scale_by_learning_rate

__all__ = [
    "radam",
    "adabelief",
    "yogi",
    "adan",
    "novograd",
    "lion",
    "optimistic_adam",
    "optimistic_adam_v2",
    "sm3",
    "adafactor",
]


@user_facing
def radam(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    eps_root: Any = 0.0,
    threshold: Any = 5.0,
    *,
    nesterov: bool = False,
) -> chain:
    """Rectified Adam: :class:`scale_by_radam` then ``−α``.

    Example:
        >>> import gradtx
        >>> opt = gradtx.radam(1e-3)

    Reference: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020.
    """
    return chain(
        scale_by_radam(b1, b2, eps, eps_root, threshold, nesterov=nesterov),
        scale_by_learning_rate(learning_rate),
    )


@user_facing
def adabelief(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-16,
    eps_root: Any = 1e-16,
    *,
    nesterov: bool = False,
) -> chain:
    """AdaBelief: :class:`scale_by_belief` then ``−α``.

    Example:
        >>> import gradtx
        >>> opt = gradtx.adabelief(1e-3)

    Reference: Zhuang et al., "AdaBelief Optimizer", NeurIPS 2020.
    """
    return chain(
        scale_by_belief(b1, b2, eps, eps_root, nesterov=nesterov),
        scale_by_learning_rate(learning_rate),
    )


@user_facing
def yogi(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-3,
    *,
    bias_correction: bool = False,
) -> chain:
    """Yogi: :class:`scale_by_yogi` then ``−α``. ``bias_correction=True`` gives optax's numbers.

    Example:
        >>> import gradtx
        >>> opt = gradtx.yogi(1e-2)

    Reference: Zaheer et al., "Adaptive Methods for Nonconvex Optimization", NeurIPS 2018.
    """
    return chain(
        scale_by_yogi(b1, b2, eps, bias_correction=bias_correction),
        scale_by_learning_rate(learning_rate),
    )


@user_facing
def adan(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.98,
    b2: Any = 0.92,
    b3: Any = 0.99,
    eps: Any = 1e-8,
    eps_root: Any = 1e-8,
    weight_decay: Any = 0.0,
    mask: Any = None,
    *,
    variant: str = "paper",
) -> chain:
    """Adan: :class:`scale_by_adan`, ``−α``, then the paper's proximal weight decay
    ``θ ← (θ − α u) / (1 + λ α)`` (:class:`add_proximal_decay`).

    ``variant="optax"`` gives optax's numbers: its moments (see :class:`scale_by_adan`) and its
    decoupled decay ``θ ← θ − α (u + λ θ)``.

    Example:
        >>> import gradtx
        >>> opt = gradtx.adan(1e-3, weight_decay=0.02)

    Reference: Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing
    Deep Models", arXiv:2208.06677.
    """
    scaling = scale_by_adan(b1, b2, b3, eps, eps_root, variant=variant)
    if variant == "optax":
        return chain(
            scaling,
            add_decayed_weights(weight_decay, mask),
            scale_by_learning_rate(learning_rate),
        )
    return chain(
        scaling,
        scale_by_learning_rate(learning_rate),
        add_proximal_decay(learning_rate, weight_decay, mask),
    )


@user_facing
def novograd(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.25,
    eps: Any = 1e-6,
    eps_root: Any = 0.0,
    weight_decay: Any = 0.0,
    *,
    mask: Any = None,
) -> chain:
    """NovoGrad: :class:`scale_by_novograd` (weight decay inside the moment) then ``−α``.

    Example:
        >>> import gradtx
        >>> opt = gradtx.novograd(1e-2, weight_decay=1e-3)

    Reference: Ginsburg et al., "Stochastic Gradient Methods with Layer-wise Adaptive Moments
    for Training of Deep Networks", arXiv:1905.11286.
    """
    return chain(
        scale_by_novograd(b1, b2, eps, eps_root, weight_decay, mask=mask),
        scale_by_learning_rate(learning_rate),
    )


@user_facing
def lion(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.99,
    mu_dtype: Any = None,
    weight_decay: Any = 1e-3,
    mask: Any = None,
) -> chain:
    """Lion: :class:`scale_by_lion`, decoupled :class:`add_decayed_weights`, then ``−α``:
    ``θ ← θ − α (sign(c_t) + λ θ)``.

    Example:
        >>> import gradtx
        >>> opt = gradtx.lion(1e-4, weight_decay=1e-2)

    Reference: Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023.
    """
    return chain(
        scale_by_lion(b1, b2, mu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


@user_facing(renames={("scale_by_optimistic_gradient", "beta"): "optimism"})
def optimistic_adam(
    learning_rate: ScalarOrSchedule,
    optimism: Any = None,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    eps_root: Any = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
) -> chain:
    """Optimistic Adam: :class:`scale_by_adam`, then the optimistic step
    :class:`scale_by_optimistic_gradient` with ``α = learning_rate``, ``β = optimism``, then
    ``−1``: ``θ_t = θ_{t−1} − (α + β) û_t + β û_{t−1}`` with ``û = m̂ / (√v̂ + ε)``
    (Daskalakis et al., 2018, Algorithm 1 with ``β = α``; the first step is ``−α û_1``).

    ``optimism=None`` means ``β = α``, as in the paper. The paper's Adam is Kingma & Ba's, so
    ``nesterov`` defaults to ``False``; optax defaults to ``nesterov=True`` (pass it for
    optax's numbers).

    Example:
        >>> import gradtx
        >>> opt = gradtx.optimistic_adam(1e-3)

    Reference: Daskalakis, Ilyas, Syrgkanis & Zeng, "Training GANs with Optimism", ICLR 2018.
    """
    adam = scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov)
    if optimism is None:
        # β = α: θ_t = θ_{t−1} − α (2 û_t − û_{t−1}), with the learning rate its own leaf (so
        # ``hyperparams`` reports it and ``replace(learning_rate=...)`` changes it).
        return chain(
            adam, scale_by_optimistic_gradient(1.0, 1.0), scale_by_learning_rate(learning_rate)
        )
    return chain(
        adam, scale_by_optimistic_gradient(alpha=learning_rate, beta=optimism), scale(-1.0)
    )


@user_facing
def optimistic_adam_v2(
    learning_rate: ScalarOrSchedule,
    *,
    alpha: Any = 1.0,
    beta: Any = 1.0,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    eps_root: Any = 0.0,
    mu_dtype: Any = None,
    nesterov: bool = True,
) -> chain:
    """Optimistic Adam with the optimism separate from the learning rate (optax's
    ``optimistic_adam_v2``): :class:`scale_by_adam`, then :class:`scale_by_optimistic_gradient`
    with ``(α, β)``, then ``−η``:

    .. math::
        θ_t = θ_{t−1} − η \\left[(α + β)\\, r_t − β\\, r_{t−1}\\right],\\qquad
        r_t = \\frac{\\hat m_t}{\\sqrt{\\hat v_t + ε_{\\text{root}}} + ε}

    (``r_0 = r_1`` at the first step, so it is ``−η α r_1``). Unlike :func:`optimistic_adam`,
    whose optimism coefficients are tied to the learning rate as in the paper (``β = α = η``),
    here ``η`` scales the whole step and ``α, β`` are unitless; ``α = β = 1`` is the paper's
    ``2 r_t − r_{t−1}``. The Adam step is Nadam's (``nesterov=True``) by default, as in optax.

    ``b1``, ``b2``, ``eps``, ``eps_root``, ``mu_dtype`` and ``nesterov``: as for
    :class:`scale_by_adam`.

    Args:
        learning_rate: ``η`` (a float or a schedule of the step count).
        alpha: ``α``, the weight of the current step.
        beta: ``β``, the weight of the correction ``r_t − r_{t−1}``.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.optimistic_adam_v2(0.1, alpha=1.0, beta=1.0, nesterov=False)
        >>> u, s = opt.update(jnp.array([2.0]), opt.init(jnp.zeros(1)))
        >>> [round(float(x), 4) for x in u]  # −η α m̂/(√v̂ + ε) = −0.1 · 1
        [-0.1]

    Reference: Daskalakis, Ilyas, Syrgkanis & Zeng, "Training GANs with Optimism", ICLR 2018;
    Mokhtari, Ozdaglar & Pattathil, AISTATS 2020 (the generalised ``(α, β)`` step).
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_optimistic_gradient(alpha=alpha, beta=beta),
        scale_by_learning_rate(learning_rate),
    )


@user_facing(renames={("scale_by_sm3", "b1"): "momentum"})
def sm3(learning_rate: ScalarOrSchedule, momentum: Any = 0.9) -> chain:
    """SM3: :class:`scale_by_sm3` (momentum ``b1 = momentum``, the paper's sums) then ``−α``.

    Example:
        >>> import gradtx
        >>> opt = gradtx.sm3(0.1)

    Reference: Anil et al., "Memory-Efficient Adaptive Optimization", NeurIPS 2019.
    """
    return chain(scale_by_sm3(momentum), scale_by_learning_rate(learning_rate))


def _relative_step_size(count: jax.Array) -> jax.Array:
    """Adafactor's relative step size ``ρ_t = min(10⁻², 1/√t)`` with ``t = count + 1``."""
    t = jnp.asarray(count, jnp.result_type(float)) + 1  # in float: count + 1 wraps at 2^31 - 1
    return jnp.minimum(1e-2, jax.lax.rsqrt(t))


@user_facing(
    renames={
        ("clip_by_block_rms", "threshold"): "clipping_threshold",
        ("ema", "decay"): "momentum",
        ("add_decayed_weights", "weight_decay"): "weight_decay_rate",
        ("scale_by_factored_rms", "epsilon"): "eps",
        ("scale_by_factored_rms", "step_offset"): "decay_offset",
    }
)
def adafactor(
    learning_rate: ScalarOrSchedule | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: Any = 0.8,
    decay_offset: Any = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: Any = 1.0,
    momentum: Any = None,
    dtype_momentum: Any = jnp.float32,
    weight_decay_rate: Any = None,
    eps: Any = 1e-30,
    factored: bool = True,
    weight_decay_mask: Any = None,
) -> chain:
    """Adafactor (Shazeer & Stern, 2018, Algorithm 4): :class:`scale_by_factored_rms`, update
    clipping ``Û = U / max(1, RMS(U) / d)``, the step size ``α_t = max(ε2, RMS(X_{t−1})) ρ_t``
    (:class:`scale_by_param_block_rms`), optional momentum and weight decay, then ``−1``.

    ``learning_rate=None`` uses the paper's relative step ``ρ_t = min(10⁻², 1/√t)``; optax's
    ``learning_rate=None`` uses ``ρ_t = 1`` instead, so pass ``learning_rate=1.0`` for optax's
    numbers. A given ``learning_rate`` replaces ``ρ_t`` (as in optax). ``momentum`` is an EMA
    (without bias correction) of the scaled step; ``weight_decay_rate`` adds ``λ θ`` after it,
    not multiplied by the step size (as optax). State memory for an ``n × m`` matrix: ``n + m``
    numbers (plus the momentum, if any).

    Args:
        learning_rate: ``ρ_t`` (a float or schedule), or ``None`` for the paper's.
        min_dim_size_to_factor: factor only arrays with two axes at least this long.
        decay_rate: exponent ``c`` of ``β̂_t = 1 − t^(−c)``.
        decay_offset: step offset of that schedule (e.g. for fine-tuning).
        multiply_by_parameter_scale: scale by ``max(ε2, RMS(θ))`` (relative steps).
        clipping_threshold: ``d`` (``None``: no clipping).
        momentum: ``β1`` of an EMA of the steps (``None``: none).
        dtype_momentum: dtype of that EMA.
        weight_decay_rate: ``λ`` (``None``: none).
        eps: ``ε1``, added to the squared gradient.
        factored: factor the second moments.
        weight_decay_mask: which parameters decay.

    Example:
        >>> import gradtx
        >>> opt = gradtx.adafactor()

    Reference: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory
    Cost", ICML 2018.
    """
    parts: list = [
        scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps)
    ]
    if clipping_threshold is not None:
        parts.append(clip_by_block_rms(clipping_threshold))
    step_size = _relative_step_size if learning_rate is None else learning_rate
    parts.append(scale_by_learning_rate(step_size, flip_sign=False))
    if multiply_by_parameter_scale:
        parts.append(scale_by_param_block_rms())
    if momentum is not None:
        parts.append(ema(momentum, debias=False, accumulator_dtype=dtype_momentum))
    if weight_decay_rate is not None:
        parts.append(add_decayed_weights(weight_decay_rate, mask=weight_decay_mask))
    parts.append(scale(-1.0))
    return chain(*parts)
