"""The Flax Linen tutorial's training loop: a ``TrainState`` holding the optimizer."""

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax.training import train_state
from sklearn.datasets import load_digits

x, y = load_digits(return_X_y=True)
x, y = jnp.asarray(x / 16.0, jnp.float32)[:512], jnp.asarray(y)[:512]


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(32)(x))
        return nn.Dense(10)(x)


model = MLP()
params = model.init(jax.random.PRNGKey(0), x[:1])["params"]
state = train_state.TrainState.create(
    apply_fn=model.apply, params=params, tx=optax.sgd(learning_rate=0.1, momentum=0.9)
)


@jax.jit
def train_step(state, x, y):
    def loss_fn(params):
        logits = state.apply_fn({"params": params}, x)
        return optax.softmax_cross_entropy(logits, jax.nn.one_hot(y, 10)).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


losses = []
for i in list(range(4)) * 10:
    state, loss = train_step(state, x[i * 128 : (i + 1) * 128], y[i * 128 : (i + 1) * 128])
    losses.append(loss)

RESULT = {"losses": jnp.stack(losses), "params": state.params}
