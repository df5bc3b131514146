"""Layer-wise, sign-based, noisy, step-size-free and optimistic optimizers (optax's names).

Each is a composition; the math lives on the transforms it composes.
"""

from __future__ import annotations

from typing import Any

from gradtx.core import ScalarOrSchedule, chain, check_range, identity, user_facing
from gradtx.transforms.adaptive import scale_by_adam
from gradtx.transforms.decay import add_decayed_weights
from gradtx.transforms.layerwise import _fromage_step, scale_by_lars, scale_by_trust_ratio
from gradtx.transforms.momentum import ema, trace
from gradtx.transforms.noise import add_noise
from gradtx.transforms.optimistic import scale_by_optimistic_gradient
from gradtx.transforms.scaling import scale, scale_by_learning_rate
from gradtx.transforms.sign import scale_by_rprop, scale_by_sign
from gradtx.transforms.step_size_free import scale_by_dog, scale_by_polyak

__all__ = [
    "lamb",
    "lars",
    "fromage",
    "sign_sgd",
    "signum",
    "rprop",
    "noisy_sgd",
    "polyak_sgd",
    "optimistic_gradient_descent",
    "dog",
]


@user_facing
def lamb(
    learning_rate: ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-6,
    eps_root: Any = 0.0,
    weight_decay: Any = 0.0,
    mask: Any = None,
) -> chain:
    """LAMB: :class:`scale_by_adam`, decoupled weight decay, :class:`scale_by_trust_ratio`,
    then ``−α``, i.e. ``θ ← θ − α ‖θ‖ / ‖r + λθ‖ · (r + λθ)`` per block, ``r = m̂ / (√v̂ + ε)``
    (You et al., 2020, Algorithm 2 with φ the identity).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.lamb(0.1, weight_decay=0.01)
        >>> p = {"w": jnp.array([3.0, 4.0])}
        >>> u, _ = opt.update({"w": jnp.array([1.0, 1.0])}, opt.init(p), p)
        >>> round(float(jnp.linalg.norm(u["w"])), 4)  # the step is α‖θ‖ long
        0.5

    Reference: You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes", ICLR 2020.
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_trust_ratio(),
        scale_by_learning_rate(learning_rate),
    )


@user_facing(renames={("trace", "decay"): "momentum"})
def lars(
    learning_rate: ScalarOrSchedule,
    weight_decay: Any = 0.0,
    weight_decay_mask: Any = True,
    trust_coefficient: Any = 0.001,
    eps: Any = 0.0,
    trust_ratio_mask: Any = True,
    momentum: Any = 0.9,
    nesterov: bool = False,
    *,
    combined_norm: bool = False,
) -> chain:
    """LARS: :class:`scale_by_lars` (weight decay and the local learning rate), ``−α``, then
    momentum: ``v ← μ v + α λ (g + βθ)``, ``θ ← θ − v`` (You et al., 2017, Algorithm 1).

    The paper's local rate is ``c ‖θ‖ / (‖g‖ + β‖θ‖)``; optax uses ``c ‖θ‖ / ‖g + βθ‖``.
    ``combined_norm=True`` gives optax's numbers. With ``weight_decay=0`` both agree.

    Example:
        >>> import gradtx
        >>> opt = gradtx.lars(0.1, weight_decay=1e-4)

    Reference: You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks", 2017.
    """
    return chain(
        scale_by_lars(
            trust_coefficient,
            eps,
            weight_decay,
            weight_decay_mask,
            trust_ratio_mask,
            combined_norm=combined_norm,
        ),
        scale_by_learning_rate(learning_rate),
        trace(momentum, nesterov),
    )


@user_facing
def fromage(learning_rate: ScalarOrSchedule, min_norm: Any = 1e-6) -> chain:
    """Fromage: ``θ ← (θ − α ‖θ‖/‖g‖ · g) / √(1 + α²)`` per block (Bernstein et al., 2020,
    Algorithm 1): :class:`scale_by_trust_ratio`, then the step and shrink
    ``u ← −α r/√(1+α²) + (1/√(1+α²) − 1) θ``. Both norms are floored at ``min_norm`` (the
    paper has no floor; it only matters for blocks of norm below ``min_norm``).

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.fromage(0.01)
        >>> p = {"w": jnp.array([3.0, 4.0])}
        >>> u, _ = opt.update({"w": jnp.array([0.0, 2.0])}, opt.init(p), p)
        >>> new = gradtx.apply_updates(p, u)["w"]
        >>> [round(float(x), 4) for x in new]
        [2.9999, 3.9498]

    Reference: Bernstein, Vahdat, Yue & Liu, "On the distance between two neural networks and
    the stability of learning", NeurIPS 2020.
    """
    check_range("fromage", "learning_rate", learning_rate)
    return chain(scale_by_trust_ratio(min_norm), _fromage_step(learning_rate))


@user_facing
def sign_sgd(learning_rate: ScalarOrSchedule) -> chain:
    """signSGD: ``θ ← θ − α sign(g)`` (Bernstein et al., 2018, Algorithm 1):
    :class:`scale_by_sign` then ``−α``.

    Example:
        >>> import jax.numpy as jnp, gradtx
        >>> opt = gradtx.sign_sgd(0.1)
        >>> u, _ = opt.update(jnp.array([-3.0, 2.0]), opt.init(jnp.zeros(2)))
        >>> [round(float(x), 4) for x in u]
        [0.1, -0.1]

    Reference: Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex Problems",
    ICML 2018.
    """
    return chain(scale_by_sign(), scale_by_learning_rate(learning_rate))


@user_facing(renames={("ema", "decay"): "beta"})
def signum(
    learning_rate: ScalarOrSchedule, beta: Any = 0.9, accumulator_dtype: Any = None
) -> chain:
    """Signum: ``m ← β m + (1 − β) g``, ``θ ← θ − α sign(m)`` (Bernstein et al., 2018,
    Algorithm 3): :class:`ema` (not debiased: the sign ignores the scale), :class:`scale_by_sign`,
    then ``−α``.

    Example:
        >>> import gradtx
        >>> opt = gradtx.signum(1e-3)

    Reference: Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex Problems",
    ICML 2018.
    """
    return chain(
        ema(beta, debias=False, accumulator_dtype=accumulator_dtype),
        scale_by_sign(),
        scale_by_learning_rate(learning_rate),
    )


@user_facing
def rprop(
    learning_rate: Any,
    eta_minus: Any = 0.5,
    eta_plus: Any = 1.2,
    min_step_size: Any = 1e-6,
    max_step_size: Any = 50.0,
    *,
    lagged: bool = False,
) -> chain:
    """Rprop (iRprop−): :class:`scale_by_rprop`, then ``−1``. ``learning_rate`` is the
    initial per-coordinate step size. ``lagged=True`` reproduces optax's ``rprop``, which
    applies each step one iteration late (see :class:`scale_by_rprop`).

    Example:
        >>> import gradtx
        >>> opt = gradtx.rprop(1e-2)

    Reference: Igel & Hüsken, "Empirical evaluation of the improved Rprop learning algorithms",
    Neurocomputing 2003.
    """
    return chain(
        scale_by_rprop(
            learning_rate, eta_minus, eta_plus, min_step_size, max_step_size, lagged=lagged
        ),
        scale(-1.0),
    )


@user_facing
def noisy_sgd(
    learning_rate: ScalarOrSchedule,
    eta: Any = 0.01,
    gamma: Any = 0.55,
    key: Any = None,
    *,
    seed: int | None = None,
) -> chain:
    """SGD on gradients with annealed Gaussian noise: :class:`add_noise` then ``−α``,
    ``θ ← θ − α (g + N(0, η/(1+t)^γ))``.

    Args:
        learning_rate: ``α``, a number or a schedule.
        eta: ``η``, the noise variance at the first step.
        gamma: ``γ``, how fast the variance decays.
        key: a ``jax.random`` key or an integer seed; the noise is a function of it and the
            step, so the same key gives the same run bit for bit. Without one, seed 0 is used
            (as in optax): every run is then the same; pass different keys to vary it.
        seed: an integer seed, instead of ``key``.

    Example:
        >>> import gradtx
        >>> opt = gradtx.noisy_sgd(1e-2, key=0)

    Reference: Neelakantan et al., "Adding Gradient Noise Improves Learning for Very Deep
    Networks", 2015.
    """
    return chain(add_noise(eta, gamma, key, seed=seed), scale_by_learning_rate(learning_rate))


@user_facing(renames={("scale_by_learning_rate", "learning_rate"): "scaling"})
def polyak_sgd(
    max_learning_rate: Any = 1.0,
    scaling: ScalarOrSchedule = 1.0,
    f_min: Any = 0.0,
    eps: Any = 0.0,
    variant: str = "sps",
) -> chain:
    """SGD with the Polyak step size: ``−s`` then :class:`scale_by_polyak`, so the step is
    ``−min((f − f*)/(‖s g‖² + ε), γ_max) · s g``; ``update`` needs ``value=f(θ)``.

    With ``scaling=1`` this is SPS_max of Loizou et al. (2021) with ``c = 1`` (and ALI-G of
    Berrada et al. (2020) with ``δ = ε``). The scaling is applied before the step size is
    computed (optax's order): a constant ``s`` is Loizou's ``c`` with the cap ``s γ_max``.

    Example:
        >>> import jax, jax.numpy as jnp, gradtx
        >>> f = lambda x: jnp.sum(x**2)
        >>> opt, x = gradtx.polyak_sgd(), jnp.array([1.0, 2.0])
        >>> value, g = jax.value_and_grad(f)(x)
        >>> u, _ = opt.update(g, opt.init(x), x, value=value)
        >>> round(float(f(x + u)), 4)  # γ = 5/20: halfway to the minimum
        1.25

    Reference: Loizou, Vaswani, Laradji & Lacoste-Julien, "Stochastic Polyak Step-size for
    SGD: An Adaptive Learning Rate for Fast Convergence", AISTATS 2021.
    """
    return chain(
        scale_by_learning_rate(scaling),
        scale_by_polyak(f_min, max_learning_rate, eps, variant),
    )


@user_facing
def optimistic_gradient_descent(
    learning_rate: ScalarOrSchedule, alpha: Any = 1.0, beta: Any = 1.0
) -> chain:
    """Optimistic gradient descent: :class:`scale_by_optimistic_gradient` then ``−α``,
    ``θ ← θ − α ((a + b) g_t − b g_{t−1})`` (``a = alpha``, ``b = beta``).

    Example:
        >>> import gradtx
        >>> opt = gradtx.optimistic_gradient_descent(1e-2)

    Reference: Mokhtari, Ozdaglar & Pattathil, AISTATS 2020.
    """
    return chain(
        scale_by_optimistic_gradient(alpha, beta),
        scale_by_learning_rate(learning_rate),
    )


@user_facing
def dog(
    learning_rate: ScalarOrSchedule = 1.0,
    init_step: tuple[str, float] = ("heuristic", 1e-6),
    eps: Any = 1e-8,
    weight_decay: Any = None,
    mask: Any = None,
) -> chain:
    """DoG: optional weight decay added to the gradient, :class:`scale_by_dog`, then ``−α``
    (``α = 1`` is the paper's method; a schedule multiplies DoG's step size). The authors
    recommend averaging the iterates (e.g. :func:`gradtx.param_ema`).

    Example:
        >>> import jax, jax.numpy as jnp, gradtx
        >>> f = lambda x: jnp.sum((x - 3.0) ** 2)
        >>> opt, x = gradtx.dog(), jnp.zeros(2)
        >>> state = opt.init(x)
        >>> for _ in range(200):  # r̄ grows from 1e-6 until it matches the distance to travel
        ...     u, state = opt.update(jax.grad(f)(x), state, x)
        ...     x = gradtx.apply_updates(x, u)
        >>> [round(float(v), 2) for v in x]
        [3.0, 3.0]

    Reference: Ivgi, Hinder & Carmon, "DoG is SGD's Best Friend: A Parameter-Free Dynamic Step
    Size Schedule", ICML 2023.
    """
    return chain(
        add_decayed_weights(weight_decay, mask) if weight_decay is not None else identity(),
        scale_by_dog(init_step, eps),
        scale_by_learning_rate(learning_rate),
    )
