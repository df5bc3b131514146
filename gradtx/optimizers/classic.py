"""The classic optimizers (SGD to Adam and its variants): compositions of transforms, optax's names.

Each returns a :class:`gradtx.chain`; its hyperparameters are pytree leaves of that chain.
The math lives on the transforms each one composes.
"""

from __future__ import annotations

from typing import Any

from gradtx.core import ScalarOrSchedule, chain, identity, user_facing
from gradtx.transforms.adaptive import (
    scale_by_adadelta,
    scale_by_adam,
    scale_by_adamax,
    scale_by_amsgrad,
    scale_by_rms,
    scale_by_rss,
    scale_by_stddev,
)
from gradtx.transforms.decay import add_decayed_weights
from gradtx.transforms.momentum import trace
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = [
    "sgd",
    "adagrad",
    "rmsprop",
    "adadelta",
    "adam",
    "adamw",
    "nadam",
    "nadamw",
    "adamax",
    "adamaxw",
    "amsgrad",
]


@user_facing(renames={("trace", "decay"): "momentum"})
def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: Any = None,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
) -> chain:
    """Stochastic gradient descent, optionally with (Nesterov) momentum: :class:`trace` then
    ``−α``. ``θ ← θ − α g``; with momentum ``m ← g + ρ m``, ``θ ← θ − α m`` (or ``α (g + ρ m)``).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.sgd(0.1, momentum=0.9)
        >>> params = {"w": jnp.ones(2)}
        >>> updates, state = opt.update({"w": jnp.ones(2)}, opt.init(params), params)
        >>> gradtx.apply_updates(params, updates)["w"].tolist()
        [0.8999999761581421, 0.8999999761581421]

    Reference: Robbins & Monro, 1951; Sutskever et al., ICML 2013 (momentum and Nesterov).
    """
    return chain(
        trace(momentum, nesterov, accumulator_dtype) if momentum is not None else identity(),
        scale_by_learning_rate(learning_rate),
    )


@user_facing
def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: Any = 0.1,
    eps: Any = 1e-7,
    *,
    eps_in_sqrt: bool = True,
) -> chain:
    """AdaGrad: :class:`scale_by_rss` then ``−α``. For the course notes' form pass
    ``initial_accumulator_value=0.0, eps_in_sqrt=False``.

    Example:
        >>> import gradtx
        >>> opt = gradtx.adagrad(0.1, initial_accumulator_value=0.0, eps_in_sqrt=False)
    """
    return chain(
        scale_by_rss(initial_accumulator_value, eps, eps_in_sqrt=eps_in_sqrt),
        scale_by_learning_rate(learning_rate),
    )


@user_facing(renames={("trace", "decay"): "momentum"})
def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: Any = 0.9,
    eps: Any = 1e-8,
    initial_scale: Any = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: Any = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> chain:
    """RMSProp: :class:`scale_by_rms` (or :class:`scale_by_stddev` when ``centered``), then
    ``−α``, then optional (Nesterov) momentum on the scaled step.

    Example:
        >>> import gradtx
        >>> opt = gradtx.rmsprop(1e-3, centered=True, momentum=0.9)
    """
    scaler = scale_by_stddev if centered else scale_by_rms
    return chain(
        scaler(decay, eps, initial_scale, eps_in_sqrt, bias_correction),
        scale_by_learning_rate(learning_rate),
        trace(momentum, nesterov) if momentum is not None else identity(),
    )


@user_facing
def adadelta(
    learning_rate: ScalarOrSchedule | None = None,
    rho: Any = 0.9,
    eps: Any = 1e-6,
    weight_decay: Any = 0.0,
    weight_decay_mask: Any = None,
) -> chain:
    """AdaDelta: weight decay added to the gradient, :class:`scale_by_adadelta`, then ``−α``.
    ``learning_rate=None`` means α = 1, Zeiler's original method (PyTorch's default too).

    Example:
        >>> import gradtx
        >>> opt = gradtx.adadelta()
    """
    return chain(
        add_decayed_weights(weight_decay, mask=weight_decay_mask),
        scale_by_adadelta(rho, eps),
        scale_by_learning_rate(1.0 if learning_rate is None else learning_rate),
    )


@user_facing
def adam(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    eps_root: Any = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any = None,
) -> chain:
    """Adam: :class:`scale_by_adam` then ``−α``.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.adam(1e-3)
        >>> state = opt.init({"w": jnp.zeros(3)})

    Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype),
        scale_by_learning_rate(learning_rate),
    )


@user_facing
def adamw(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    eps_root: Any = 0.0,
    mu_dtype: Any = None,
    weight_decay: Any = 1e-4,
    mask: Any = None,
    *,
    nesterov: bool = False,
    nu_dtype: Any = None,
) -> chain:
    """AdamW: :class:`scale_by_adam`, then decoupled :class:`add_decayed_weights`, then ``−α``,
    so ``θ ← θ − α (m̂ / (√v̂ + ε) + λ θ)``: the decay never passes through ``m`` and ``v``.

    Example:
        >>> import gradtx
        >>> opt = gradtx.adamw(1e-3, weight_decay=1e-2)

    Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


@user_facing
def nadam(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    eps_root: Any = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    nu_dtype: Any = None,
) -> chain:
    """Nadam: :func:`adam` with ``nesterov=True`` (the simplified look-ahead numerator
    documented on :class:`scale_by_adam`, not Dozat's Algorithm 2 nor PyTorch's NAdam).

    Example:
        >>> import gradtx
        >>> opt = gradtx.nadam(1e-3)

    Reference: Dozat, "Incorporating Nesterov Momentum into Adam", ICLR workshop 2016.
    """
    return adam(
        learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nu_dtype=nu_dtype
    )


@user_facing
def nadamw(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    eps_root: Any = 0.0,
    mu_dtype: Any = None,
    weight_decay: Any = 1e-4,
    mask: Any = None,
    *,
    nesterov: bool = True,
    nu_dtype: Any = None,
) -> chain:
    """NadamW: :func:`adamw` with ``nesterov=True``.

    Example:
        >>> import gradtx
        >>> opt = gradtx.nadamw(1e-3, weight_decay=1e-2)
    """
    return adamw(
        learning_rate, b1, b2, eps, eps_root, mu_dtype, weight_decay, mask,
        nesterov=nesterov, nu_dtype=nu_dtype,
    )  # fmt: skip


@user_facing
def adamax(
    learning_rate: ScalarOrSchedule, b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8
) -> chain:
    """AdaMax: :class:`scale_by_adamax` then ``−α``.

    Example:
        >>> import gradtx
        >>> opt = gradtx.adamax(2e-3)
    """
    return chain(scale_by_adamax(b1, b2, eps), scale_by_learning_rate(learning_rate))


@user_facing
def adamaxw(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    weight_decay: Any = 1e-4,
    mask: Any = None,
) -> chain:
    """AdaMaxW: :class:`scale_by_adamax`, decoupled :class:`add_decayed_weights`, then ``−α``.

    Example:
        >>> import gradtx
        >>> opt = gradtx.adamaxw(2e-3, weight_decay=1e-2)
    """
    return chain(
        scale_by_adamax(b1, b2, eps),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


@user_facing
def amsgrad(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    eps_root: Any = 0.0,
    mu_dtype: Any = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
) -> chain:
    """AMSGrad: :class:`scale_by_amsgrad` then ``−α``.

    Example:
        >>> import gradtx
        >>> opt = gradtx.amsgrad(1e-3)
    """
    return chain(
        scale_by_amsgrad(b1, b2, eps, eps_root, mu_dtype, bias_correction_mu, bias_correction_nu),
        scale_by_learning_rate(learning_rate),
    )
