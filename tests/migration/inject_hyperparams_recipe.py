"""optax's recipe for changing a hyperparameter during training: ``inject_hyperparams`` puts
the learning rate in the state, where the loop rewrites it."""

import jax
import jax.numpy as jnp
import optax

xs = jax.random.normal(jax.random.PRNGKey(0), (32, 3))
ys = xs @ jnp.array([1.0, -2.0, 0.5])


def loss(params):
    return jnp.mean((xs @ params - ys) ** 2)


optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=0.1)
params = jnp.zeros(3)
opt_state = optimizer.init(params)


@jax.jit
def step(params, opt_state):
    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value


values, rates = [], []
for i in range(60):
    if i % 20 == 19:
        opt_state.hyperparams["learning_rate"] = opt_state.hyperparams["learning_rate"] / 2
    params, opt_state, value = step(params, opt_state)
    values.append(value)
    rates.append(opt_state.hyperparams["learning_rate"])

# a scheduled clip threshold that reaches 0 at the end of training, called eagerly
clipper = optax.inject_hyperparams(optax.clip_by_global_norm)(
    max_norm=optax.linear_schedule(1.0, 0.0, 9)
)
clip_state = clipper.init(params)
clipped = []
for _ in range(12):
    u, clip_state = clipper.update(jnp.ones(3), clip_state)
    clipped.append(u)

RESULT = {
    "values": jnp.stack(values),
    "rates": jnp.stack(rates),
    "params": params,
    "clipped": jnp.stack(clipped),
}
