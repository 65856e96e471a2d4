"""Each init draws weights whose statistics match its formula; zero and constant inits keep
the symmetry the lecture says they keep."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from initlab.activations import ACTIVATIONS
from initlab.inits import INITS
from initlab.models import SeedBatchedMLP

FAN_IN, FAN_OUT = 800, 1200
RELU, TANH = ACTIVATIONS["relu"], ACTIVATIONS["tanh"]
LEAKY = ACTIVATIONS["vleaky_relu"]

# name, activation, expected mean, expected variance
EXPECTED = [
    ("zero", RELU, 0.0, 0.0),
    ("constant", RELU, 1 / FAN_IN, 0.0),
    ("uniform", RELU, 0.0, 1 / 3),
    ("normal", RELU, 0.0, 1.0),
    ("normal_small", RELU, 0.0, 1e-4),
    ("xavier", RELU, 0.0, 1 / FAN_IN),
    ("lecun_normal", TANH, 0.0, 1 / FAN_IN),
    ("he", TANH, 0.0, 2 / FAN_IN),
    ("glorot_uniform", TANH, 0.0, (5 / 3) ** 2 * 2 / (FAN_IN + FAN_OUT)),
    ("glorot_normal", RELU, 0.0, 2 * 2 / (FAN_IN + FAN_OUT)),
    ("kaiming_uniform", RELU, 0.0, 2 / FAN_IN),
    ("kaiming_normal", LEAKY, 0.0, 2 / (1 + 0.333 ** 2) / FAN_IN),
    ("kaiming_normal", TANH, 0.0, (5 / 3) ** 2 / FAN_IN),
    ("orthogonal", RELU, 0.0, 2 / FAN_OUT),
]


@pytest.mark.parametrize("name,activation,mean,variance", EXPECTED)
def test_weight_statistics_match_formula(name, activation, mean, variance):
    w = INITS[name](FAN_IN, FAN_OUT, torch.Generator().manual_seed(0), activation)
    n = w.numel()
    assert w.shape == (FAN_IN, FAN_OUT)
    # The sample mean's sd is sqrt(var / n); the sample variance's relative sd is ~sqrt(2 / n).
    assert abs(w.mean().item() - mean) <= 5 * math.sqrt(variance / n) + 1e-9
    assert w.var().item() == pytest.approx(variance, rel=5 * math.sqrt(2 / n), abs=1e-12)


@pytest.mark.parametrize("fan_in,fan_out", [(300, 500), (500, 300)])
def test_orthogonal_is_orthonormal(fan_in, fan_out):
    w = INITS["orthogonal"](fan_in, fan_out, torch.Generator().manual_seed(1),
                            ACTIVATIONS["sigmoid"])  # gain 1
    small = w @ w.T if fan_in <= fan_out else w.T @ w
    assert torch.allclose(small, torch.eye(min(fan_in, fan_out)), atol=1e-5)


def test_same_generator_state_same_weights_different_seed_different_weights():
    draw = lambda seed: INITS["he"](50, 60, torch.Generator().manual_seed(seed), RELU)  # noqa
    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))


def _train_steps(init: str, activation: str, steps: int = 5):
    """A 3-layer net on a fixed random batch; returns the model and the weight gradients of
    every step."""
    torch.manual_seed(0)
    x, y = torch.rand(1, 64, 20), torch.randint(0, 4, (1, 64))
    y[0, :40] = 2  # a skewed class prior, which the output bias must learn
    model = SeedBatchedMLP(1, 20, 4, depth=3, width=8, activation=ACTIVATIONS[activation])
    model.initialize(INITS[init], [torch.Generator().manual_seed(0)], "zero")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    grads = []
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x)[0], y[0]).backward()
        grads.append([w.grad.clone() for w in model.weights])
        optimizer.step()
    return model, grads, y


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_zero_init_with_act_zero_at_zero_never_learns_weights(activation):
    model, grads, y = _train_steps("zero", activation)
    for step in grads:
        for g in step:
            assert torch.count_nonzero(g) == 0
    for w in model.weights:
        assert torch.count_nonzero(w) == 0
    # Only the output bias moves: towards the class prior (class 2 is the majority).
    assert torch.count_nonzero(model.biases[0]) == 0
    assert torch.count_nonzero(model.biases[1]) == 0
    assert model.biases[2][0, 0].argmax().item() == 2


@pytest.mark.parametrize("init", ["zero", "constant"])
def test_sigmoid_or_constant_init_never_breaks_symmetry(init):
    activation = "sigmoid" if init == "zero" else "tanh"
    model, grads, _ = _train_steps(init, activation)
    # Hidden layers do receive gradients (sigmoid(0) = 0.5 feeds the last layer) ...
    assert any(torch.count_nonzero(g) > 0 for step in grads for g in step[:-1])
    # ... but every unit of a hidden layer stays identical to the others.
    for w, b in zip(model.weights[:-1], model.biases[:-1]):
        assert torch.equal(w[0], w[0][:, :1].expand_as(w[0]))
        assert torch.equal(b[0], b[0][:, :1].expand_as(b[0]))
