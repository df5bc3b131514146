"""optax's L-BFGS recipe: ``optax.lbfgs()`` with its zoom line search, driven by a
``lax.while_loop`` that reads ``count`` and ``grad`` from the state with ``tree_get``."""

import jax
import jax.numpy as jnp
import optax
import optax.tree_utils as otu


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def run_opt(init_params, fun, opt, max_iter, tol):
    value_and_grad_fun = optax.value_and_grad_from_state(fun)

    def step(carry):
        params, state = carry
        value, grad = value_and_grad_fun(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fun)
        return optax.apply_updates(params, updates), state

    def continuing_criterion(carry):
        _, state = carry
        iter_num = otu.tree_get(state, "count")
        grad = otu.tree_get(state, "grad")
        err = otu.tree_norm(grad)
        return (iter_num == 0) | ((iter_num < max_iter) & (err >= tol))

    init_carry = (init_params, opt.init(init_params))
    return jax.lax.while_loop(continuing_criterion, step, init_carry)


opt = optax.lbfgs()
# a few iterations: the iterates themselves must agree, before rounding can separate them
params, state = run_opt(jnp.zeros(4), rosenbrock, opt, max_iter=12, tol=1e-3)

RESULT = {
    "params": params,
    "count": otu.tree_get(state, "count"),
    "value": rosenbrock(params),
}
