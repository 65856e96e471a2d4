"""Every activation matches its definition; gains are the documented values; every init x
activation pair builds and trains a step."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from initlab.activations import ACTIVATIONS, maxout
from initlab.inits import INITS
from initlab.inits.data_dependent import DATA_INITS
from initlab.models import SeedBatchedMLP
from initlab.optim import OPTIMIZERS

POINTS = torch.tensor([-3.0, -1.0, -0.1, 0.0, 0.1, 1.0, 3.0])
DEFINITIONS = {
    "sigmoid": lambda x: 1 / (1 + math.exp(-x)),
    "tanh": math.tanh,
    "relu": lambda x: max(x, 0.0),
    "leaky_relu": lambda x: x if x > 0 else 0.01 * x,
    "vleaky_relu": lambda x: x if x > 0 else 0.333 * x,
    "elu": lambda x: x if x > 0 else math.exp(x) - 1,
    "selu": lambda x: 1.0507009873554805 * (x if x > 0 else 1.6732632423543772 * (math.exp(x) - 1)),
    "gelu": lambda x: x * 0.5 * (1 + math.erf(x / math.sqrt(2))),
    "silu": lambda x: x / (1 + math.exp(-x)),
    "softplus": lambda x: math.log1p(math.exp(x)),
}
GAINS = {"sigmoid": 1.0, "tanh": 5 / 3, "relu": math.sqrt(2),
         "leaky_relu": math.sqrt(2 / (1 + 0.01 ** 2)),
         "vleaky_relu": math.sqrt(2 / (1 + 0.333 ** 2)),
         "elu": math.sqrt(2), "selu": 3 / 4, "gelu": math.sqrt(2), "silu": math.sqrt(2),
         "softplus": math.sqrt(2), "maxout": 1.0}


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_activation_matches_definition(name):
    expected = torch.tensor([DEFINITIONS[name](float(x)) for x in POINTS])
    assert torch.allclose(ACTIVATIONS[name].fn(POINTS), expected, atol=1e-6)


def test_maxout_is_the_max_of_its_pieces():
    x = torch.randn(3, 5, 8)
    pieces = x.view(3, 5, 4, 2)
    assert torch.equal(maxout(x), torch.maximum(pieces[..., 0], pieces[..., 1]))
    assert ACTIVATIONS["maxout"].pieces == 2


def test_gains_are_the_documented_values():
    assert set(GAINS) == set(ACTIVATIONS)
    for name, gain in GAINS.items():
        assert ACTIVATIONS[name].gain == pytest.approx(gain), name


def test_maxout_layers_are_k_times_wider_and_inits_see_that_fan_out():
    model = SeedBatchedMLP(2, 20, 4, depth=3, width=8, activation=ACTIVATIONS["maxout"])
    assert [tuple(w.shape) for w in model.weights] == [(2, 20, 16), (2, 8, 16), (2, 8, 4)]
    model.initialize(INITS["glorot_normal"], [torch.Generator().manual_seed(i) for i in (0, 1)],
                     "zero")
    assert model(torch.rand(2, 5, 20)).shape == (2, 5, 4)


class _Options:
    tol, max_iter, batch_size, epochs, k, lr = 0.1, 10, 32, 1, 1, 0.1


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("init", sorted({**INITS, **DATA_INITS}))
def test_every_init_and_activation_trains_a_step(init, activation):
    torch.manual_seed(0)
    x, y = torch.rand(64, 30), torch.randint(0, 5, (64,))
    generators = [torch.Generator().manual_seed(s) for s in (0, 1)]
    model = SeedBatchedMLP(2, 30, 5, depth=3, width=12, activation=ACTIVATIONS[activation])
    if init in DATA_INITS:
        model.initialize(INITS[DATA_INITS[init].pre_init], generators, "zero")
        DATA_INITS[init].fn(model, x, generators, _Options)
    else:
        model.initialize(INITS[init], generators, "zero")

    class Sgd:
        lr, momentum, weight_decay = 0.01, 0.9, 0.0

    optimizer = OPTIMIZERS["sgd"](model.parameters(), Sgd)
    loss = F.cross_entropy(model(x.expand(2, -1, -1)).transpose(1, 2), y.expand(2, -1))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(w).all() for w in model.weights)
