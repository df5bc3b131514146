"""One registry of every optimizer in gradtx, driving the property and convergence tests.

Each case builds an optimizer from a learning rate (so the same case can be swept, vmapped and
differentiated with respect to it). Add a case here when you add an optimizer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gradtx


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Any], Any]  # learning rate -> optimizer
    lr: float = 1e-2  # a learning rate that trains the property-test problems
    complex_ok: bool = True  # defined for complex parameters
    extra_args: Callable[[Any, Any], dict] | None = None  # (params, grads) -> update kwargs
    quadratic_tol: float = 1e-3  # convergence test tolerances (distance to the minimiser)
    rosenbrock_tol: float = 5e-2
    steps: int = 2000
    conv_lr: float | None = None  # learning rate for the convergence tests (default: lr)


CASES: list[Case] = [
    Case("sgd", lambda lr: gradtx.sgd(lr), lr=1e-2, conv_lr=2e-3, steps=20000),
    Case("sgd_momentum", lambda lr: gradtx.sgd(lr, momentum=0.9), conv_lr=1e-3, steps=5000),
    Case("sgd_nesterov", lambda lr: gradtx.sgd(lr, momentum=0.9, nesterov=True), conv_lr=1e-3, steps=5000),
    Case("adagrad", lambda lr: gradtx.adagrad(lr), conv_lr=0.5, steps=5000),
    Case("rmsprop", lambda lr: gradtx.rmsprop(lr), conv_lr=1e-3, steps=5000),
    Case(
        "rmsprop_centered_momentum",
        lambda lr: gradtx.rmsprop(lr, centered=True, momentum=0.9),
        conv_lr=3e-4,
        steps=5000,
    ),
    Case("adadelta", lambda lr: gradtx.adadelta(lr), lr=1.0, conv_lr=10.0, steps=5000),
    Case("adam", lambda lr: gradtx.adam(lr), conv_lr=1e-2, steps=5000),
    Case("adamw", lambda lr: gradtx.adamw(lr, weight_decay=0.0), conv_lr=1e-2, steps=5000),
    Case("nadam", lambda lr: gradtx.nadam(lr), conv_lr=1e-2, steps=5000),
    Case("nadamw", lambda lr: gradtx.nadamw(lr, weight_decay=0.0), conv_lr=1e-2, steps=5000),
    Case("adamax", lambda lr: gradtx.adamax(lr), conv_lr=1e-2, steps=5000),
    Case("adamaxw", lambda lr: gradtx.adamaxw(lr, weight_decay=0.0), conv_lr=1e-2, steps=5000),
    Case("amsgrad", lambda lr: gradtx.amsgrad(lr), conv_lr=1e-2, steps=5000),
]

BY_NAME = {c.name: c for c in CASES}
