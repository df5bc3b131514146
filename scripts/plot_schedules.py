"""Plot every gradtx schedule family to ``docs/schedules.png`` (one subplot per family).

Run from the repository root: ``.venv/bin/python scripts/plot_schedules.py``. Each curve is a
single vectorised call ``schedule(jnp.arange(steps))``.
"""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")

import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

import gradtx  # noqa: E402

STEPS = 300
OUT = pathlib.Path(__file__).resolve().parent.parent / "docs" / "schedules.png"

FAMILIES = {
    "constant / linear / polynomial": {
        "constant_schedule(0.8)": gradtx.constant_schedule(0.8),
        "linear_schedule(1, 0.1, 200, begin=50)": gradtx.linear_schedule(1.0, 0.1, 200, 50),
        "polynomial_schedule(power=2)": gradtx.polynomial_schedule(1.0, 0.0, 2.0, 250),
        "polynomial_schedule(power=0.5)": gradtx.polynomial_schedule(1.0, 0.0, 0.5, 250),
    },
    "piecewise": {
        "piecewise_constant": gradtx.piecewise_constant_schedule(1.0, {80: 0.5, 160: 0.4}),
        "piecewise_interpolate linear": gradtx.piecewise_interpolate_schedule(
            "linear", 0.2, {60: 5.0, 150: 0.5, 250: 0.2}
        ),
        "piecewise_interpolate cosine": gradtx.piecewise_interpolate_schedule(
            "cosine", 0.2, {60: 5.0, 150: 0.5, 250: 0.2}
        ),
    },
    "exponential-type decays": {
        "exponential_decay(T=30, r=0.7)": gradtx.exponential_decay(1.0, 30, 0.7),
        "exponential_decay staircase": gradtx.exponential_decay(1.0, 30, 0.7, staircase=True),
        "natural_exp_decay(T=50, r=1)": gradtx.natural_exp_decay(1.0, 50, 1.0),
        "inverse_time_decay(T=20, r=1)": gradtx.inverse_time_decay(1.0, 20, 1.0),
        "inverse_time_decay staircase": gradtx.inverse_time_decay(1.0, 20, 1.0, staircase=True),
    },
    "cosine decay": {
        "cosine_decay_schedule": gradtx.cosine_decay_schedule(1.0, 250),
        "alpha=0.2": gradtx.cosine_decay_schedule(1.0, 250, alpha=0.2),
        "exponent=3": gradtx.cosine_decay_schedule(1.0, 250, exponent=3.0),
    },
    "warmup": {
        "warmup_constant": gradtx.warmup_constant_schedule(0.0, 1.0, 50),
        "warmup_cosine_decay": gradtx.warmup_cosine_decay_schedule(0.0, 1.0, 50, 300, 0.05),
        "warmup_exponential_decay": gradtx.warmup_exponential_decay_schedule(0.0, 1.0, 50, 40, 0.6),
    },
    "warmup-stable-decay": {
        "linear": gradtx.warmup_stable_decay_schedule(1.0, 30, 150, 100),
        "cosine": gradtx.warmup_stable_decay_schedule(1.0, 30, 150, 100, decay_shape="cosine"),
        "1-sqrt": gradtx.warmup_stable_decay_schedule(1.0, 30, 150, 100, decay_shape="1-sqrt"),
    },
    "warm restarts": {
        "cosine_restarts(T0=40, m=1)": gradtx.cosine_restarts_schedule(1.0, 40),
        "cosine_restarts(T0=20, m=2, alpha=0.1)": gradtx.cosine_restarts_schedule(
            1.0, 20, 2.0, 0.1
        ),
        "sgdr_schedule (3 runs)": gradtx.sgdr_schedule(
            [
                dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=80),
                dict(init_value=0.0, peak_value=0.7, warmup_steps=10, decay_steps=100),
                dict(init_value=0.0, peak_value=0.5, warmup_steps=10, decay_steps=120),
            ]
        ),
    },
    "cyclic": {
        "triangular": gradtx.cyclic_schedule(0.1, 1.0, 40),
        "triangular2": gradtx.cyclic_schedule(0.1, 1.0, 40, mode="triangular2"),
        "exp_range (gamma=0.995)": gradtx.cyclic_schedule(0.1, 1.0, 40, "exp_range", 0.995),
    },
    "one-cycle and join": {
        "linear_onecycle": gradtx.linear_onecycle_schedule(280, 1.0),
        "cosine_onecycle": gradtx.cosine_onecycle_schedule(280, 1.0),
        "join_schedules(linear, constant, cosine)": gradtx.join_schedules(
            [
                gradtx.linear_schedule(0.0, 0.6, 60),
                gradtx.constant_schedule(0.6),
                gradtx.cosine_decay_schedule(0.6, 100),
            ],
            [60, 150],
        ),
    },
}


def main() -> None:
    steps = jnp.arange(STEPS)
    cols = 3
    rows = -(-len(FAMILIES) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), constrained_layout=True)
    for ax, (family, scheds) in zip(axes.flat, FAMILIES.items(), strict=False):
        for label, sched in scheds.items():
            ax.plot(steps, sched(steps), label=label, lw=1.6)
        ax.set_title(family)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(FAMILIES) :]:
        ax.axis("off")
    fig.suptitle("gradtx schedules (value against step)")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
