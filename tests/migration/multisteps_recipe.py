"""optax's gradient-accumulation recipe: ``optax.MultiSteps`` applies adam every 4 mini-batches."""

import jax
import jax.numpy as jnp
import optax

xs = jax.random.normal(jax.random.PRNGKey(0), (64, 3))
ys = xs @ jnp.array([2.0, -1.0, 0.5]) + 1.0


def loss(params, x, y):
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


opt = optax.MultiSteps(optax.adam(0.1), every_k_schedule=4)
params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
opt_state = opt.init(params)


@jax.jit
def step(params, opt_state, x, y):
    grads = jax.grad(loss)(params, x, y)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


trajectory = []
for i in range(40):
    j = i % 8
    params, opt_state = step(params, opt_state, xs[j * 8 : (j + 1) * 8], ys[j * 8 : (j + 1) * 8])
    trajectory.append(params["w"])

RESULT = {"trajectory": jnp.stack(trajectory), "b": params["b"], "mini_step": opt_state.mini_step}
