"""Schedules: float64 NumPy closed forms at every step, optax's same-named schedules, jit with a
traced step and the schedule as an argument (compiled once per sweep), vmap over the schedule's
own parameters, and construction errors naming the argument."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import count_compilations

import gradtx

# ----------------------------------------------------------------------------------------------
# Closed forms, written from the formulas (ALGORITHMS.md section 2 and the issue), one step t at
# a time, in float64 Python arithmetic. Never call gradtx.


def np_constant(t, value):
    return value


def np_polynomial(t, init_value, end_value, power, transition_steps, transition_begin=0):
    s = min(max(t - transition_begin, 0), transition_steps)
    return (init_value - end_value) * (1 - s / transition_steps) ** power + end_value


def np_linear(t, init_value, end_value, transition_steps, transition_begin=0):
    return np_polynomial(t, init_value, end_value, 1.0, transition_steps, transition_begin)


def np_piecewise_constant(t, init_value, boundaries_and_scales):
    v = init_value
    for b, s in sorted(boundaries_and_scales.items()):
        if t >= b:
            v *= s
    return v


def np_piecewise_interpolate(t, interpolate_type, init_value, boundaries_and_scales):
    items = sorted(boundaries_and_scales.items())
    bounds = [0] + [b for b, _ in items]
    values = [init_value]
    for _, s in items:
        values.append(values[-1] * s)
    for i in range(len(bounds) - 1):
        if bounds[i] <= t < bounds[i + 1]:
            p = (t - bounds[i]) / max(bounds[i + 1] - bounds[i], 1)
            a, b = values[i], values[i + 1]
            if interpolate_type == "linear":
                return a + (b - a) * p
            return b + (a - b) * (1 + math.cos(math.pi * p)) / 2
    return values[-1]


def np_exponential(
    t, init_value, transition_steps, decay_rate, transition_begin=0, staircase=False,
    end_value=None,
):  # fmt: skip
    d = t - transition_begin
    if d <= 0:
        v = init_value
    else:
        p = d / transition_steps
        if staircase:
            p = math.floor(p)
        v = init_value * decay_rate**p
    if end_value is not None:
        v = max(v, end_value) if decay_rate < 1 else min(v, end_value)
    return v


def np_inverse_time(t, init_value, decay_steps, decay_rate, staircase=False):
    p = math.floor(t / decay_steps) if staircase else t / decay_steps
    return init_value / (1 + decay_rate * p)


def np_natural_exp(t, init_value, decay_steps, decay_rate, staircase=False):
    p = math.floor(t / decay_steps) if staircase else t / decay_steps
    return init_value * math.exp(-decay_rate * p)


def np_cosine_decay(t, init_value, decay_steps, alpha=0.0, exponent=1.0):
    c = (1 + math.cos(math.pi * min(t, decay_steps) / decay_steps)) / 2
    return init_value * ((1 - alpha) * c**exponent + alpha)


def np_cosine_restarts(t, init_value, first_period, period_multiplier=1.0, alpha=0.0):
    start, period = 0.0, float(first_period)
    while t >= start + period:  # walk the periods one by one
        start += period
        period *= period_multiplier
    c = (1 + math.cos(math.pi * (t - start) / period)) / 2
    return init_value * (alpha + (1 - alpha) * c)


def np_warmup_constant(t, init_value, peak_value, warmup_steps):
    if t < warmup_steps:
        return init_value + (peak_value - init_value) * t / warmup_steps
    return peak_value


def np_warmup_cosine(t, init_value, peak_value, warmup_steps, decay_steps, end_value=0.0,
                     exponent=1.0):  # fmt: skip
    """optax's form: the cosine decays ``peak`` to the floor ``a = end / peak`` of it (``a = 0``
    when ``peak = 0``, so the decay is then 0 whatever ``end_value``)."""
    if t < warmup_steps:
        return init_value + (peak_value - init_value) * t / warmup_steps
    d = decay_steps - warmup_steps
    c = (1 + math.cos(math.pi * min(t - warmup_steps, d) / d)) / 2
    a = 0.0 if peak_value == 0 else end_value / peak_value
    return peak_value * ((1 - a) * c**exponent + a)


def np_warmup_exponential(t, init_value, peak_value, warmup_steps, **exp_kwargs):
    if t < warmup_steps:
        return init_value + (peak_value - init_value) * t / warmup_steps
    return np_exponential(t - warmup_steps, peak_value, **exp_kwargs)


def np_wsd(t, peak_value, warmup_steps, stable_steps, decay_steps, init_value=0.0,
           end_value=0.0, decay_shape="linear"):  # fmt: skip
    if t < warmup_steps:
        return init_value + (peak_value - init_value) * t / warmup_steps
    if t < warmup_steps + stable_steps:
        return peak_value
    f = min((t - warmup_steps - stable_steps) / decay_steps, 1.0)
    g = {
        "linear": 1 - f,
        "cosine": (1 + math.cos(math.pi * f)) / 2,
        "1-sqrt": 1 - math.sqrt(f),
    }[decay_shape]
    return end_value + (peak_value - end_value) * g


def np_sgdr(t, cosine_kwargs):
    start = 0
    for i, kw in enumerate(cosine_kwargs):
        last = i == len(cosine_kwargs) - 1
        if t < start + kw["decay_steps"] or last:
            return np_warmup_cosine(t - start, **kw)
        start += kw["decay_steps"]


def np_cyclic(t, min_value, max_value, half_cycle_steps, mode="triangular", gamma=1.0):
    cycle = math.floor(1 + t / (2 * half_cycle_steps))
    x = abs(t / half_cycle_steps - 2 * cycle + 1)
    amp = {"triangular": 1.0, "triangular2": 1 / 2 ** (cycle - 1), "exp_range": gamma**t}[mode]
    return min_value + (max_value - min_value) * max(0.0, 1 - x) * amp


def _lerp(a, b, p):
    return a + (b - a) * p


def np_linear_onecycle(t, transition_steps, peak_value, pct_start=0.3, pct_final=0.85,
                       div_factor=25.0, final_div_factor=1e4):  # fmt: skip
    b1, b2, n = (
        int(pct_start * transition_steps),
        int(pct_final * transition_steps),
        transition_steps,
    )
    lo, end = peak_value / div_factor, peak_value / div_factor / final_div_factor
    if t < b1:
        return _lerp(lo, peak_value, t / b1)
    if t < b2:
        return _lerp(peak_value, lo, (t - b1) / (b2 - b1))
    if t < n:
        return _lerp(lo, end, (t - b2) / (n - b2))
    return end


def np_cosine_onecycle(t, transition_steps, peak_value, pct_start=0.3, div_factor=25.0,
                       final_div_factor=1e4):  # fmt: skip
    b1, n = int(pct_start * transition_steps), transition_steps
    lo, end = peak_value / div_factor, peak_value / (div_factor * final_div_factor)

    def cos_interp(a, b, p):
        return b + (a - b) * (1 + math.cos(math.pi * p)) / 2

    if t < b1:
        return cos_interp(lo, peak_value, t / b1)
    if t < n:
        return cos_interp(peak_value, end, (t - b1) / (n - b1))
    return end


def np_join(t, pieces, boundaries):
    """``pieces`` are NumPy closed forms ``f(t)``."""
    start = 0
    for i, f in enumerate(pieces):
        if i == len(pieces) - 1 or t < boundaries[i]:
            return f(t - start)
        start = boundaries[i]


# ----------------------------------------------------------------------------------------------
# Cases: name -> (kwargs of variant k = 0, 1, 2; NumPy form; whether optax has the schedule).
# The three variants share their tree structure (to be stacked for vmap) and differ in every
# number, step counts included; the range of steps covers each boundary, warmup end and restart.

N = 70


def _join_kwargs(k):
    b = 10 + 5 * k
    g = [
        gradtx.linear_schedule(0.0, 1.0 + k, transition_steps=b),
        gradtx.cosine_decay_schedule(1.0 + k, decay_steps=20 + k, alpha=0.1),
        gradtx.constant_schedule(0.05 * (k + 1)),
    ]
    return {"schedules": g, "boundaries": [b, b + 25 + k]}


def _np_join(t, schedules, boundaries):
    k = round(schedules[0].end_value - 1.0)
    b = 10 + 5 * k
    pieces = [
        lambda s: np_linear(s, 0.0, 1.0 + k, b),
        lambda s: np_cosine_decay(s, 1.0 + k, 20 + k, 0.1),
        lambda s: 0.05 * (k + 1),
    ]
    return np_join(t, pieces, boundaries)


CASES = {
    "constant_schedule": (lambda k: {"value": 0.1 * (k + 1)}, np_constant, True),
    "linear_schedule": (
        lambda k: dict(
            init_value=1.0 + k,
            end_value=0.1 * k,
            transition_steps=30 + 5 * k,
            transition_begin=5 + k,
        ),  # fmt: skip
        np_linear,
        True,
    ),
    "polynomial_schedule": (
        lambda k: dict(
            init_value=1.0,
            end_value=0.01 * (k + 1),
            power=0.5 + k,
            transition_steps=40 - 3 * k,
            transition_begin=3 * k,
        ),  # fmt: skip
        np_polynomial,
        True,
    ),
    "piecewise_constant_schedule": (
        lambda k: dict(
            init_value=0.5 + k, boundaries_and_scales={10 + k: 0.5, 30 + 2 * k: 0.1, 50: 2.0 + k}
        ),  # fmt: skip
        np_piecewise_constant,
        True,
    ),
    "piecewise_interpolate_schedule": (
        lambda k: dict(
            interpolate_type="linear",
            init_value=1.0 + k,
            boundaries_and_scales={10 + k: 3.0, 35: 0.2 * (k + 1), 36 + k: 0.5},
        ),  # fmt: skip
        np_piecewise_interpolate,
        True,
    ),
    "piecewise_interpolate_schedule/cosine": (
        lambda k: dict(
            interpolate_type="cosine",
            init_value=0.1 * (k + 1),
            boundaries_and_scales={0: 2.0, 20 + k: 10.0, 55 - k: 0.01},
        ),  # fmt: skip
        np_piecewise_interpolate,
        True,
    ),
    "exponential_decay": (
        lambda k: dict(
            init_value=1.0 + k,
            transition_steps=7 + k,
            decay_rate=0.5 + 0.1 * k,
            transition_begin=4 + k,
            end_value=0.05 * (k + 1),
        ),  # fmt: skip
        np_exponential,
        True,
    ),
    "exponential_decay/staircase-growth": (
        lambda k: dict(
            init_value=0.1,
            transition_steps=9 + k,
            decay_rate=1.5 + k,
            transition_begin=2 * k,
            staircase=True,
            end_value=2.0 + k,
        ),  # fmt: skip
        np_exponential,
        True,
    ),
    "inverse_time_decay": (
        lambda k: dict(init_value=1.0 + k, decay_steps=10 + k, decay_rate=0.5 * (k + 1)),
        np_inverse_time,
        False,
    ),
    "inverse_time_decay/staircase": (
        lambda k: dict(
            init_value=1.0, decay_steps=6 + k, decay_rate=0.5 * (k + 1), staircase=True
        ),  # fmt: skip
        np_inverse_time,
        False,
    ),
    "natural_exp_decay": (
        lambda k: dict(init_value=1.0 + k, decay_steps=10 + k, decay_rate=0.5 * (k + 1)),
        np_natural_exp,
        False,
    ),
    "natural_exp_decay/staircase": (
        lambda k: dict(
            init_value=2.0, decay_steps=8 + k, decay_rate=0.3 * (k + 1), staircase=True
        ),  # fmt: skip
        np_natural_exp,
        False,
    ),
    "cosine_decay_schedule": (
        lambda k: dict(
            init_value=1.0 + k, decay_steps=40 + 5 * k, alpha=0.1 * k, exponent=1.0 + k
        ),  # fmt: skip
        np_cosine_decay,
        True,
    ),
    "cosine_restarts_schedule": (
        lambda k: dict(
            init_value=1.0, first_period=7 + k, period_multiplier=1.0 + 0.5 * k, alpha=0.1 * k
        ),  # fmt: skip
        np_cosine_restarts,
        False,
    ),
    "cosine_restarts_schedule/doubling": (
        lambda k: dict(init_value=0.5 + k, first_period=3 + 2 * k, period_multiplier=2.0 + k),
        np_cosine_restarts,
        False,
    ),
    "warmup_constant_schedule": (
        lambda k: dict(init_value=0.01 * k, peak_value=1.0 + k, warmup_steps=15 + 5 * k),
        np_warmup_constant,
        True,
    ),
    "warmup_cosine_decay_schedule": (
        lambda k: dict(
            init_value=0.0,
            peak_value=1.0 + k,
            warmup_steps=10 + k,
            decay_steps=50 + 3 * k,
            end_value=0.1 * k,
            exponent=1.0 + 0.5 * k,
        ),  # fmt: skip
        np_warmup_cosine,
        True,
    ),
    "warmup_exponential_decay_schedule": (
        lambda k: dict(
            init_value=0.1 * k,
            peak_value=1.0 + k,
            warmup_steps=8 + 2 * k,
            transition_steps=5 + k,
            decay_rate=0.6 + 0.1 * k,
            transition_begin=3 * k,
            staircase=True,
            end_value=0.1,
        ),  # fmt: skip
        np_warmup_exponential,
        True,
    ),
    "warmup_stable_decay_schedule": (
        lambda k: dict(
            peak_value=1.0 + k,
            warmup_steps=10 + k,
            stable_steps=20 - 2 * k,
            decay_steps=25 + k,
            init_value=0.1 * k,
            end_value=0.01 * k,
        ),  # fmt: skip
        np_wsd,
        False,
    ),
    "warmup_stable_decay_schedule/cosine": (
        lambda k: dict(
            peak_value=1.0 + k,
            warmup_steps=5 * k,
            stable_steps=10 + k,
            decay_steps=30 + k,
            end_value=0.1,
            decay_shape="cosine",
        ),  # fmt: skip
        np_wsd,
        False,
    ),
    "warmup_stable_decay_schedule/1-sqrt": (
        lambda k: dict(
            peak_value=1.0,
            warmup_steps=5 + k,
            stable_steps=7 * k,
            decay_steps=33 + k,
            init_value=0.2,
            decay_shape="1-sqrt",
        ),  # fmt: skip
        np_wsd,
        False,
    ),
    "sgdr_schedule": (
        lambda k: {
            "cosine_kwargs": [
                dict(init_value=0.0, peak_value=1.0 + k, warmup_steps=5, decay_steps=20 + k),
                dict(
                    init_value=0.1,
                    peak_value=0.5,
                    warmup_steps=3 + k,
                    decay_steps=25,
                    end_value=0.05 * k,
                ),  # fmt: skip
                dict(
                    init_value=0.0, peak_value=0.25 * (k + 1), warmup_steps=0, decay_steps=15
                ),  # fmt: skip
            ]
        },
        np_sgdr,
        True,
    ),
    "cyclic_schedule": (
        lambda k: dict(min_value=0.1 * k, max_value=1.0 + k, half_cycle_steps=6 + 2 * k),
        np_cyclic,
        False,
    ),
    "cyclic_schedule/triangular2": (
        lambda k: dict(
            min_value=0.01, max_value=1.0 + k, half_cycle_steps=5 + k, mode="triangular2"
        ),  # fmt: skip
        np_cyclic,
        False,
    ),
    "cyclic_schedule/exp_range": (
        lambda k: dict(
            min_value=0.0,
            max_value=2.0,
            half_cycle_steps=4 + 3 * k,
            mode="exp_range",
            gamma=0.99 - 0.02 * k,
        ),  # fmt: skip
        np_cyclic,
        False,
    ),
    "linear_onecycle_schedule": (
        lambda k: dict(
            transition_steps=60 - 4 * k,
            peak_value=1.0 + k,
            pct_start=0.25 + 0.05 * k,
            pct_final=0.75 + 0.05 * k,
            div_factor=10.0 + k,
            final_div_factor=100.0 * (k + 1),
        ),  # fmt: skip
        np_linear_onecycle,
        True,
    ),
    "cosine_onecycle_schedule": (
        lambda k: dict(
            transition_steps=60 - 4 * k,
            peak_value=1.0 + k,
            pct_start=0.25 + 0.1 * k,
            div_factor=10.0 + k,
            final_div_factor=100.0 * (k + 1),
        ),  # fmt: skip
        np_cosine_onecycle,
        True,
    ),
    "join_schedules": (_join_kwargs, _np_join, True),
}


def _name(case):
    return case.split("/")[0]


def _make(case, k):
    kwargs, _, _ = CASES[case]
    return getattr(gradtx, _name(case))(**kwargs(k))


def _reference(case, k, steps):
    kwargs, ref, _ = CASES[case]
    return np.array([ref(int(t), **kwargs(k)) for t in steps], dtype=np.float64)


@pytest.mark.parametrize("case", sorted(CASES))
def test_closed_form_every_step(case, x64):
    steps = np.arange(N)
    want = _reference(case, 0, steps)
    sched = _make(case, 0)
    # Traced int32 steps under jit (one per step), and the whole curve at once.
    per_step = jax.jit(jax.vmap(lambda t: sched(t)))(jnp.asarray(steps, jnp.int32))
    np.testing.assert_allclose(np.asarray(per_step), want, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(np.asarray(sched(steps)), want, rtol=1e-10, atol=1e-13)
    # Python ints.
    for t in (0, 1, N // 2, N - 1):
        np.testing.assert_allclose(float(sched(t)), want[t], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("case", sorted(c for c in CASES if CASES[c][2]))
def test_equals_optax(case, x64):
    kwargs, _, _ = CASES[case]
    for k in range(3):
        ours = _make(case, k)
        theirs = getattr(optax, _name(case))(**kwargs(k))
        steps = jnp.arange(N)
        got = np.asarray(jax.vmap(ours)(steps))
        want = np.asarray(jax.vmap(theirs)(steps))
        for t in (0, N // 2):  # and on Python ints
            np.testing.assert_allclose(float(ours(t)), float(theirs(t)), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=f"variant {k}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_vmap_over_parameters_and_jit_compiles_once(case, x64):
    steps = np.arange(N)
    scheds = [_make(case, k) for k in range(3)]
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *scheds)
    got = jax.vmap(lambda s: s(jnp.asarray(steps, jnp.int32)))(stacked)
    for k in range(3):
        want = _reference(case, k, steps)
        np.testing.assert_allclose(np.asarray(got[k]), want, rtol=1e-10, atol=1e-13)

    # The schedule as a jit argument: a sweep over its numbers (step counts included) compiles
    # once, and a traced step gives the closed form.
    f = jax.jit(lambda s, t: s(t))
    t = jnp.asarray(N // 3, jnp.int32)
    f(scheds[0], t)
    with count_compilations() as n:
        for k in (1, 2):
            np.testing.assert_allclose(
                float(f(scheds[k], t)), _reference(case, k, [N // 3])[0], rtol=1e-10, atol=1e-13
            )
    assert n["n"] == 0


def test_vmap_builds_schedules_from_traced_arguments():
    # A sweep over peak values and decay steps written as a function of the numbers.
    peaks = jnp.array([0.1, 0.2, 0.4])
    decays = jnp.array([20, 30, 40])

    def lr_at(peak, decay, t):
        return gradtx.warmup_cosine_decay_schedule(0.0, peak, 5, decay)(t)

    got = jax.jit(jax.vmap(lr_at, in_axes=(0, 0, None)))(peaks, decays, 12)
    want = [
        np_warmup_cosine(12, 0.0, float(p), 5, int(d)) for p, d in zip(peaks, decays, strict=True)
    ]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)


def test_schedules_are_pytrees_with_numeric_leaves():
    s = gradtx.warmup_cosine_decay_schedule(0, 1, 10, 100.0)
    leaves, treedef = jax.tree_util.tree_flatten(s)
    assert leaves == [0.0, 1.0, 10, 100, 0.0, 1.0]  # ints for values become floats, and back
    assert [type(x) for x in leaves[:4]] == [float, float, int, int]
    s2 = jax.tree_util.tree_unflatten(treedef, [0.0, 2.0, 10, 50, 0.0, 1.0])
    assert isinstance(s2, gradtx.warmup_cosine_decay_schedule)
    assert float(s2(10)) == 2.0
    # Static choices live in the treedef.
    a = gradtx.exponential_decay(1.0, 10, 0.5, staircase=True)
    b = gradtx.exponential_decay(1.0, 10, 0.5, staircase=False)
    assert jax.tree_util.tree_structure(a) != jax.tree_util.tree_structure(b)
    assert "warmup_steps=10" in repr(s)


def test_join_schedules_holds_plain_functions_statically():
    s = gradtx.join_schedules([lambda t: 1.0 + 0.0 * t, gradtx.constant_schedule(0.5)], [3])
    assert jax.tree_util.tree_leaves(s) == [0.5, 3]
    got = jax.jit(lambda s, t: s(t))(s, jnp.arange(6))
    np.testing.assert_allclose(np.asarray(got), [1, 1, 1, 0.5, 0.5, 0.5])


def test_piecewise_dict_is_sorted_like_optax():
    a = gradtx.piecewise_constant_schedule(1.0, {20: 0.1, 10: 0.5})
    assert a.boundaries == (10, 20)
    want = [np_piecewise_constant(t, 1.0, {20: 0.1, 10: 0.5}) for t in range(30)]
    np.testing.assert_allclose(np.asarray(a(jnp.arange(30))), want, rtol=1e-6)


def test_cosine_restarts_restart_steps_exactly():
    # T0 = 10, m = 3: restarts at 10, 40, 130, 400, 1210, ... where the value is back at α0,
    # and one step before each restart it is just above the floor.
    s = gradtx.cosine_restarts_schedule(1.0, 10, period_multiplier=3, alpha=0.0)
    starts = [0, 10, 40, 130, 400, 1210, 3640]
    periods = [10, 30, 90, 270, 810, 2430, 7290]
    got_start = np.asarray(s(jnp.asarray(starts)))
    np.testing.assert_allclose(got_start, 1.0, rtol=1e-6)
    before = np.asarray(s(jnp.asarray(starts[1:]) - 1))
    want = [(1 + math.cos(math.pi * (p - 1) / p)) / 2 for p in periods[:-1]]
    np.testing.assert_allclose(before, want, rtol=1e-3, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# Errors at construction name the argument.

ERRORS = [
    (lambda: gradtx.linear_schedule(1.0, 0.0, -1), "transition_steps"),
    (lambda: gradtx.linear_schedule(1.0, 0.0, 10, transition_begin=-1), "transition_begin"),
    (lambda: gradtx.polynomial_schedule(1.0, 0.0, 2.0, -5), "transition_steps"),
    (lambda: gradtx.polynomial_schedule(1.0, 0.0, 2.0, 2.5), "whole number"),
    (lambda: gradtx.piecewise_constant_schedule(1.0, {10: -0.5}), "scales"),
    (lambda: gradtx.piecewise_constant_schedule(1.0, {-3: 0.5}), "boundaries_and_scales"),
    (
        lambda: gradtx.piecewise_constant_schedule(1.0, boundaries=(20, 10), scales=(0.5, 0.5)),
        "strictly increasing",
    ),
    (lambda: gradtx.piecewise_interpolate_schedule("quadratic", 1.0, {}), "interpolate_type"),
    (lambda: gradtx.exponential_decay(1.0, -2, 0.5), "transition_steps"),
    (lambda: gradtx.exponential_decay(1.0, 10, 0.0), "decay_rate"),
    (lambda: gradtx.exponential_decay(1.0, 10, 0.5, transition_begin=-2), "transition_begin"),
    (lambda: gradtx.inverse_time_decay(1.0, 0, 0.5), "decay_steps"),
    (lambda: gradtx.inverse_time_decay(1.0, 10, -0.5), "decay_rate"),
    (lambda: gradtx.natural_exp_decay(1.0, -10, 0.5), "decay_steps"),
    (lambda: gradtx.cosine_decay_schedule(1.0, 0), "decay_steps"),
    (lambda: gradtx.cosine_restarts_schedule(1.0, 0), "first_period"),
    (lambda: gradtx.cosine_restarts_schedule(1.0, 10, period_multiplier=0.5), "period_multiplier"),
    (lambda: gradtx.cosine_restarts_schedule(1.0, 10, alpha=1.5), "alpha"),
    (lambda: gradtx.warmup_constant_schedule(0.0, 1.0, -1), "warmup_steps"),
    (lambda: gradtx.warmup_cosine_decay_schedule(0.0, 1.0, 10, 10), "decay_steps"),
    (lambda: gradtx.warmup_cosine_decay_schedule(0.0, 1.0, -1, 10), "warmup_steps"),
    (lambda: gradtx.warmup_exponential_decay_schedule(0.0, 1.0, 5, -1, 0.5), "transition_steps"),
    (lambda: gradtx.warmup_stable_decay_schedule(1.0, 5, -1, 10), "stable_steps"),
    (lambda: gradtx.warmup_stable_decay_schedule(1.0, 5, 5, 0), "decay_steps"),
    (lambda: gradtx.warmup_stable_decay_schedule(1.0, 5, 5, 5, decay_shape="sqrt"), "decay_shape"),
    (lambda: gradtx.cyclic_schedule(0.0, 1.0, 0), "half_cycle_steps"),
    (lambda: gradtx.cyclic_schedule(1.0, 0.5, 10), "max_value"),
    (lambda: gradtx.cyclic_schedule(0.0, 1.0, 10, mode="sine"), "mode"),
    (lambda: gradtx.cyclic_schedule(0.0, 1.0, 10, mode="exp_range", gamma=0.0), "gamma"),
    (lambda: gradtx.linear_onecycle_schedule(0, 1.0), "transition_steps"),
    (lambda: gradtx.linear_onecycle_schedule(100, 1.0, pct_start=0.9, pct_final=0.5), "pct_final"),
    (lambda: gradtx.cosine_onecycle_schedule(100, 1.0, pct_start=1.0), "pct_start"),
    (lambda: gradtx.cosine_onecycle_schedule(100, 1.0, div_factor=0.0), "div_factor"),
    (
        lambda: gradtx.join_schedules([gradtx.constant_schedule(1.0)] * 3, [20, 10]),
        "strictly increasing",
    ),
    (
        lambda: gradtx.join_schedules([gradtx.constant_schedule(1.0)] * 3, [10, 10]),
        "strictly increasing",
    ),
    (lambda: gradtx.join_schedules([gradtx.constant_schedule(1.0)] * 2, [5, 10]), "boundaries"),
    (lambda: gradtx.join_schedules([gradtx.constant_schedule(1.0)] * 2, [-5]), "boundaries"),
    (lambda: gradtx.sgdr_schedule([]), "cosine_kwargs"),
    (
        lambda: gradtx.sgdr_schedule(
            [dict(init_value=0, peak_value=1, warmup_steps=5, decay_steps=5)]
        ),  # fmt: skip
        "decay_steps",
    ),
]


@pytest.mark.parametrize("make, name", ERRORS, ids=[e[1] + str(i) for i, e in enumerate(ERRORS)])
def test_bad_arguments_raise_naming_them(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_join_schedules_rejects_non_callables():
    with pytest.raises(TypeError, match="schedules"):
        gradtx.join_schedules([1.0, 2.0], [3])


def test_checks_skip_tracers():
    # Rebuilding a schedule with traced numbers (inside jit/vmap) never raises.
    f = jax.jit(lambda d: gradtx.cosine_decay_schedule(1.0, d)(3))
    np.testing.assert_allclose(float(f(10)), np_cosine_decay(3, 1.0, 10), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# warmup_cosine_decay_schedule's edge cases, and step counts past int32.


def test_warmup_cosine_decay_edge_cases_match_optax(x64):
    """peak 0 (the decay is 0, whatever end_value: optax scales the cosine by the floor
    end/peak, taken as 0 when peak = 0), negative ends and peaks, no warmup, a one-step decay:
    optax's values and the NumPy form at every step, eagerly and with the schedule (its peak
    traced) as a jit argument. decay_steps <= warmup_steps is refused, as optax refuses it
    (its cosine would have no positive length)."""
    cases = [
        dict(init_value=0.0, peak_value=0.0, warmup_steps=10, decay_steps=100, end_value=-3.0),
        dict(init_value=0.5, peak_value=0.0, warmup_steps=10, decay_steps=60, end_value=2.0),
        dict(init_value=0.0, peak_value=0.0, warmup_steps=0, decay_steps=40, end_value=1.0),
        dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=100, end_value=-3.0),
        dict(init_value=1.0, peak_value=2.0, warmup_steps=0, decay_steps=1, end_value=0.5),
        dict(init_value=0.0, peak_value=-1.0, warmup_steps=5, decay_steps=30, end_value=0.5,
             exponent=2.0),
    ]  # fmt: skip
    steps = np.arange(120)
    run = jax.jit(lambda s, t: s(t))
    for kw in cases:
        ours = gradtx.warmup_cosine_decay_schedule(**kw)
        want = [np_warmup_cosine(int(t), **kw) for t in steps]
        theirs = np.asarray(jax.vmap(optax.warmup_cosine_decay_schedule(**kw))(steps))
        np.testing.assert_allclose(theirs, want, rtol=1e-12, atol=1e-12, err_msg=str(kw))
        np.testing.assert_allclose(np.asarray(ours(steps)), want, rtol=1e-12, atol=1e-12)
        got = np.asarray(run(ours, jnp.asarray(steps, jnp.int32)))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=str(kw))
    for warmup, decay in ((10, 10), (10, 4)):
        kw = dict(init_value=0.0, peak_value=1.0, warmup_steps=warmup, decay_steps=decay)
        with pytest.raises(ValueError):
            optax.warmup_cosine_decay_schedule(**kw)
        with pytest.raises(ValueError, match="decay_steps must be greater than warmup_steps"):
            gradtx.warmup_cosine_decay_schedule(**kw)


B31 = 2**31


def _big_join():
    pieces = [gradtx.constant_schedule(0.5), gradtx.linear_schedule(1.0, 0.0, B31 + 2**24)]
    return dict(schedules=pieces, boundaries=[2**30 + 3])


def _np_big_join(t, schedules, boundaries):
    pieces = [lambda s: 0.5, lambda s: np_linear(s, 1.0, 0.0, B31 + 2**24)]
    return np_join(t, pieces, boundaries)


# name -> (arguments with step counts at or past 2**31 (or sums past it), NumPy form, optax).
BIG = {
    "linear_schedule": (
        dict(init_value=1.0, end_value=0.0, transition_steps=3 * 2**30, transition_begin=2**30),
        np_linear,
        True,
    ),
    "polynomial_schedule": (
        dict(
            init_value=1.0, end_value=0.1, power=2.0, transition_steps=B31 + 5, transition_begin=7
        ),
        np_polynomial,
        True,
    ),  # fmt: skip
    "piecewise_constant_schedule": (
        dict(init_value=1.0, boundaries_and_scales={B31 - 10: 0.5, B31 + 2**24: 0.1}),
        np_piecewise_constant,
        True,
    ),
    "piecewise_interpolate_schedule": (
        dict(
            interpolate_type="cosine",
            init_value=1.0,
            boundaries_and_scales={2**30: 2.0, B31 + 2**28: 0.5},
        ),
        np_piecewise_interpolate,
        True,
    ),  # fmt: skip
    "exponential_decay": (
        dict(init_value=1.0, transition_steps=B31 + 1, decay_rate=0.5, transition_begin=2**30),
        np_exponential,
        True,
    ),
    "inverse_time_decay": (
        dict(init_value=1.0, decay_steps=2**32, decay_rate=1.0),
        np_inverse_time,
        False,
    ),
    "natural_exp_decay": (
        dict(init_value=1.0, decay_steps=3 * B31, decay_rate=2.0),
        np_natural_exp,
        False,
    ),
    "cosine_decay_schedule": (
        dict(init_value=1.0, decay_steps=B31 + 2**29, alpha=0.1),
        np_cosine_decay,
        True,
    ),
    "cosine_restarts_schedule": (
        dict(init_value=1.0, first_period=B31 + 2**24, period_multiplier=1.5, alpha=0.2),
        np_cosine_restarts,
        False,
    ),
    "warmup_constant_schedule": (
        dict(init_value=0.0, peak_value=1.0, warmup_steps=B31 + 2**24),
        np_warmup_constant,
        True,
    ),
    "warmup_cosine_decay_schedule": (
        dict(init_value=0.0, peak_value=1.0, warmup_steps=2**30, decay_steps=2**32, end_value=-0.5),
        np_warmup_cosine,
        True,
    ),  # fmt: skip
    "warmup_exponential_decay_schedule": (
        dict(
            init_value=0.0, peak_value=1.0, warmup_steps=2**30, transition_steps=B31, decay_rate=0.5
        ),
        np_warmup_exponential,
        True,
    ),  # fmt: skip
    "warmup_stable_decay_schedule": (
        dict(peak_value=1.0, warmup_steps=2**30, stable_steps=2**30 + 2**24, decay_steps=B31),
        np_wsd,
        False,
    ),
    "sgdr_schedule": (
        {
            "cosine_kwargs": [
                dict(init_value=0.0, peak_value=1.0, warmup_steps=10, decay_steps=2**30 + 2**29)
            ]
            * 3
        },
        np_sgdr,
        True,
    ),  # fmt: skip
    "cyclic_schedule": (
        dict(min_value=0.0, max_value=1.0, half_cycle_steps=2**30 + 5),
        np_cyclic,
        False,
    ),
    "linear_onecycle_schedule": (
        dict(transition_steps=B31 + 2**24, peak_value=1.0),
        np_linear_onecycle,
        True,
    ),
    "cosine_onecycle_schedule": (
        dict(transition_steps=2**32, peak_value=1.0),
        np_cosine_onecycle,
        True,
    ),
    "join_schedules": (_big_join, _np_big_join, True),
}
# int32 counts near the top of int32 (around the boundaries at 2**31 - 10 and 2**30), and
# counts past it (Python ints; int64 under x64).
COUNTS_32 = [0, 12345, 2**30 - 1, 2**30, 2**30 + 4, B31 - 11, B31 - 10, B31 - 1]
COUNTS_PAST = [B31, B31 + 2**24 + 4096, 3 * 2**30 + 7, 2**32 + 2**20]


def _big_kwargs(case):
    kw = BIG[case][0]
    return kw() if callable(kw) else kw


@pytest.mark.parametrize("case", sorted(BIG))
def test_step_arguments_and_counts_past_int32(case):
    """Step arguments of 2**31 and more (or whose sums pass it) and counts near and past
    2**31. float32 mode: the schedule as a jit argument with int32 counts (a step argument
    past int32 would not fit the int32 a Python int leaf becomes), and Python int counts past
    int32; against the float64 NumPy form (boundaries crossed exactly at 2**31 - 10 and 2**30).
    Under x64: int64 counts against optax and the NumPy form to float64 precision."""
    _, ref, has_optax = BIG[case]
    make = getattr(gradtx, case)
    sched = make(**_big_kwargs(case))
    want_32 = [ref(t, **_big_kwargs(case)) for t in COUNTS_32]
    got = jax.jit(lambda s, t: s(t))(sched, jnp.asarray(COUNTS_32, jnp.int32))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want_32, rtol=2e-5, atol=2e-6)
    for t in COUNTS_PAST:
        np.testing.assert_allclose(float(sched(t)), ref(t, **_big_kwargs(case)), rtol=2e-5,
                                   atol=2e-6, err_msg=str(t))  # fmt: skip
    with jax.enable_x64(True):
        sched = make(**_big_kwargs(case))
        counts = COUNTS_32 + COUNTS_PAST
        want = [ref(t, **_big_kwargs(case)) for t in counts]
        got = np.asarray(jax.jit(lambda s, t: s(t))(sched, jnp.asarray(counts, jnp.int64)))
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
        if has_optax:
            kw = _big_kwargs(case)
            if case == "join_schedules":
                kw = dict(
                    schedules=[optax.constant_schedule(0.5),
                               optax.linear_schedule(1.0, 0.0, B31 + 2**24)],
                    boundaries=kw["boundaries"],
                )  # fmt: skip
            theirs = getattr(optax, case)(**kw)
            np.testing.assert_allclose(
                got, np.asarray(jax.vmap(theirs)(jnp.asarray(counts, jnp.int64))), rtol=1e-9,
                atol=1e-12,
            )  # fmt: skip


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("linear_schedule", dict(init_value=2.0, end_value=0.5, transition_steps=0)),
        ("polynomial_schedule", dict(init_value=2.0, end_value=0.5, power=2, transition_steps=0)),
        ("exponential_decay", dict(init_value=2.0, transition_steps=0, decay_rate=0.5)),
        (
            "exponential_decay",
            dict(init_value=2.0, transition_steps=0, decay_rate=0.5, staircase=True),
        ),
    ],
)
def test_zero_transition_steps_keep_init_value_like_optax(name, kwargs):
    ours, theirs = getattr(gradtx, name)(**kwargs), getattr(optax, name)(**kwargs)
    for t in (0, 1, 7, 1000):
        assert float(ours(t)) == 2.0 == float(theirs(t))
        assert float(jax.jit(ours)(jnp.asarray(t))) == 2.0


def test_warmup_then_no_decay_like_optax():
    ours = gradtx.warmup_exponential_decay_schedule(0.0, 1.0, 5, 0, 0.5)
    theirs = optax.warmup_exponential_decay_schedule(0.0, 1.0, 5, 0, 0.5)
    got = [float(ours(t)) for t in range(9)]
    np.testing.assert_allclose(got, [float(theirs(t)) for t in range(9)], rtol=1e-6)
    np.testing.assert_allclose(got, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0, 1.0], rtol=1e-6)


def test_warmup_constant_without_warmup_is_the_peak_unlike_optax():
    # A warmup of 0 steps reaches the constant phase at once; optax's stays at init_value
    # (README, "What differs from optax").
    ours = gradtx.warmup_constant_schedule(0.0, 1.0, 0)
    theirs = optax.warmup_constant_schedule(0.0, 1.0, 0)
    assert [float(ours(t)) for t in (0, 1, 50)] == [1.0, 1.0, 1.0]
    assert [float(theirs(t)) for t in (0, 1, 50)] == [0.0, 0.0, 0.0]
