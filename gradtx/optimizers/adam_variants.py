"""Adam's relatives and the memory-light adaptive methods: compositions, optax's names.

Each returns a :class:`gradtx.chain`; the math (and any documented difference from optax) lives
on the transforms each one composes.
"""

from __future__ import annotations

from typing import Any

from gradtx.core import ScalarOrSchedule, chain
from gradtx.transforms.adam_variants import (
    add_proximal_decay,
    scale_by_adan,
    scale_by_belief,
    scale_by_lion,
    scale_by_novograd,
    scale_by_radam,
    scale_by_yogi,
)
from gradtx.transforms.decay import add_decayed_weights
from gradtx.transforms.scaling import scale_by_learning_rate

__all__ = ["radam", "adabelief", "yogi", "adan", "novograd", "lion"]


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
