"""The Flax NNX tutorial's training loop (``nnx.Optimizer``, ``nnx.jit``, ``nnx.value_and_grad``)
on scikit-learn's digits."""

import jax.numpy as jnp
import optax
from flax import nnx
from sklearn.datasets import load_digits

x, y = load_digits(return_X_y=True)
x, y = jnp.asarray(x / 16.0, jnp.float32)[:512], jnp.asarray(y)[:512]


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.linear1 = nnx.Linear(64, 32, rngs=rngs)
        self.linear2 = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x):
        return self.linear2(nnx.relu(self.linear1(x)))


model = MLP(rngs=nnx.Rngs(0))
optimizer = nnx.Optimizer(model, optax.adamw(learning_rate=5e-3, b1=0.9), wrt=nnx.Param)


def loss_fn(model, x, y):
    logits = model(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits=logits, labels=y).mean()


@nnx.jit
def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, y)
    optimizer.update(model, grads)
    return loss


losses = [
    train_step(model, optimizer, x[i * 128 : (i + 1) * 128], y[i * 128 : (i + 1) * 128])
    for i in list(range(4)) * 10
]

RESULT = {"losses": jnp.stack(losses), "kernel": model.linear2.kernel[...]}
