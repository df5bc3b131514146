"""optax's reduce-on-plateau recipe: ``optax.contrib.reduce_on_plateau`` after adam, fed the
loss through ``value=``, and its scale read with ``optax.tree_utils.tree_get``."""

import jax
import jax.numpy as jnp
import optax
import optax.tree_utils as otu

xs = jax.random.normal(jax.random.PRNGKey(0), (64, 4))
ys = jnp.sin(xs @ jnp.array([1.0, -1.0, 0.5, 2.0]))


def loss(params):
    return jnp.mean((jnp.tanh(xs @ params["w"]) @ params["v"] - ys) ** 2)


opt = optax.chain(
    optax.adam(0.05),
    optax.contrib.reduce_on_plateau(
        patience=3, cooldown=2, factor=0.5, rtol=1e-4, accumulation_size=5
    ),
)
params = {"w": 0.5 * jax.random.normal(jax.random.PRNGKey(1), (4, 8)), "v": jnp.zeros(8)}
state = opt.init(params)


@jax.jit
def step(params, state):
    value, grads = jax.value_and_grad(loss)(params)
    updates, state = opt.update(grads, state, params, value=value)
    return optax.apply_updates(params, updates), state, value


values, scales = [], []
for _ in range(150):
    params, state, value = step(params, state)
    values.append(value)
    scales.append(otu.tree_get(state, "scale"))

RESULT = {"values": jnp.stack(values), "scales": jnp.stack(scales), "params": params}
