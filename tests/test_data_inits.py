"""LSUV and RBM pre-training, on the real prepared data."""

from __future__ import annotations

import pytest
import torch
from sklearn.linear_model import LogisticRegression

from initlab.activations import ACTIVATIONS
from initlab.config import load_config
from initlab.data.prepare import load_split
from initlab.inits import INITS
from initlab.inits.data_dependent import DATA_INITS
from initlab.models import SeedBatchedMLP
from initlab.train import initialize


@pytest.fixture
def data(in_project):
    (x, y), (xv, yv) = load_split("train"), load_split("val")
    return x.flatten(1), y, xv.flatten(1), yv


@pytest.mark.parametrize("activation", ["relu", "tanh", "maxout"])
def test_lsuv_gives_unit_variance_on_a_held_out_batch(in_project, data, activation):
    x, _, x_val, _ = data
    cfg = load_config([f"activation={activation}", "init=lsuv", "model.depth=5"])
    model = SeedBatchedMLP(2, 784, 10, 5, 128, ACTIVATIONS[activation])
    log = initialize(model, cfg.init, "zero", [0, 1], x)
    assert all(torch.count_nonzero(b) == 0 for b in model.biases)
    with torch.no_grad():
        outputs = model.layer_outputs(x_val.expand(2, -1, -1))
    for layer, (z, _) in enumerate(outputs):
        assert ((z.var(dim=(1, 2)) - 1).abs() < cfg.init.lsuv.tol).all(), layer
        assert (log[f"lsuv_iterations_layer{layer}"] <= cfg.init.lsuv.max_iter).all()
        assert ((log[f"lsuv_variance_layer{layer}"] - 1).abs() < cfg.init.lsuv.tol).all()


def test_rbm_pretraining_learns_features(in_project, data):
    x, y, x_val, y_val = data
    subset = slice(0, 1500)
    cfg = load_config(["activation=sigmoid", "init=rbm", "init.rbm.epochs=4"])
    model = SeedBatchedMLP(1, 784, 10, 3, 64, ACTIVATIONS["sigmoid"])
    log = initialize(model, cfg.init, "zero", [0], x[subset])
    start = SeedBatchedMLP(1, 784, 10, 3, 64, ACTIVATIONS["sigmoid"])
    start.initialize(INITS[DATA_INITS["rbm"].pre_init],
                     [torch.Generator().manual_seed(0)], "zero")  # not the same stream

    for layer in (0, 1):
        errors = log[f"rbm_recon_error_layer{layer}"][:, 0]
        assert len(errors) == 4 and errors[-1] < errors[0]  # reconstruction improves
    # The output layer keeps its pre-init; the hidden layers moved far from it.
    pre = SeedBatchedMLP(1, 784, 10, 3, 64, ACTIVATIONS["sigmoid"])
    initialize(pre, load_config(["init=normal_small"]).init, "zero", [0], x)
    assert torch.equal(pre.weights[2], model.weights[2])
    assert (model.weights[0] - pre.weights[0]).norm() > 5 * pre.weights[0].norm()

    def probe_accuracy(net) -> float:
        """A logistic regression on the first hidden layer's features."""
        with torch.no_grad():
            train_features = net.layer_outputs(x[subset].unsqueeze(0))[0][1][0]
            val_features = net.layer_outputs(x_val.unsqueeze(0))[0][1][0]
        probe = LogisticRegression(max_iter=300).fit(train_features, y[subset])
        return probe.score(val_features, y_val)

    assert probe_accuracy(model) > probe_accuracy(pre) + 0.05
