"""The Equinox training loop: ``eqx.filter`` the arrays, ``eqx.filter_jit``, ``eqx.apply_updates``,
with weight decay masked to the weights by a model-shaped tree of bools."""

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from sklearn.datasets import load_digits

x, y = load_digits(return_X_y=True)
x, y = jnp.asarray(x / 16.0, jnp.float32)[:512], jnp.asarray(y)[:512]

model = eqx.nn.MLP(64, 10, width_size=32, depth=1, key=jax.random.PRNGKey(0))
# a pytree of bools shaped like the model: True on weight matrices (an eqx.Module, so callable)
decay_mask = jax.tree.map(lambda leaf: eqx.is_array(leaf) and leaf.ndim == 2, model)
optim = optax.adamw(3e-3, weight_decay=1e-2, mask=decay_mask)
opt_state = optim.init(eqx.filter(model, eqx.is_array))


@eqx.filter_value_and_grad
def compute_loss(model, x, y):
    logits = jax.vmap(model)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


@eqx.filter_jit
def make_step(model, opt_state, x, y):
    loss, grads = compute_loss(model, x, y)
    updates, opt_state = optim.update(grads, opt_state, eqx.filter(model, eqx.is_array))
    return eqx.apply_updates(model, updates), opt_state, loss


losses = []
for i in list(range(4)) * 10:
    model, opt_state, loss = make_step(
        model, opt_state, x[i * 128 : (i + 1) * 128], y[i * 128 : (i + 1) * 128]
    )
    losses.append(loss)

RESULT = {"losses": jnp.stack(losses), "weight": model.layers[-1].weight}
