"""The conv nets: FitNet4's size against the published one, one training step for every
activation, inits with the conv layers' fans, LSUV on conv layers, seeds kept apart."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from initlab.activations import ACTIVATIONS
from initlab.config import load_config
from initlab.data.prepare import load_split
from initlab.errors import ConfigError
from initlab.inits import INITS
from initlab.inits.data_dependent import lsuv
from initlab.models import FITNET4_PUBLISHED_PARAMETERS, build_model


def model_cfg(name: str, activation: str, image_shape=(3, 32, 32), width=None):
    return OmegaConf.create({
        "model": {"name": name, "depth": 3, "channels": [8, 16], "batchnorm": False,
                  "width": width or (500 if name == "fitnet4" else 32)},
        "dataset": {"image_shape": list(image_shape), "num_classes": 10},
        "activation": {"name": activation}})


def generators(n: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in range(n)]


def test_fitnet4_parameter_count_against_the_published_one():
    relu = build_model(model_cfg("fitnet4", "relu"), 1).seed_parameter_count()
    maxout = build_model(model_cfg("fitnet4", "maxout"), 1).seed_parameter_count()
    # Hand count: 15 3x3 convs 3-32-32-32-48-48-80x5-128x5, 128-500 fc, 500-10 softmax.
    convs = [3, 32, 32, 32, 48, 48, 80, 80, 80, 80, 80, 128, 128, 128, 128, 128]
    by_hand = sum(9 * a * b + b for a, b in zip(convs[:-1], convs[1:])) + 128 * 500 + 500 \
        + 500 * 10 + 10
    assert relu == by_hand == 1_071_542
    # Maxout with 2 pieces doubles every hidden layer's outputs: ~2.1M against the "~2.5M"
    # Romero et al. 2015 report for their maxout FitNet 4.
    assert maxout == 2_138_074
    assert abs(maxout / FITNET4_PUBLISHED_PARAMETERS - 1) < 0.2


@pytest.mark.parametrize("name,shape", [("cnn", (1, 28, 28)), ("cnn", (3, 32, 32)),
                                        ("fitnet4", (3, 32, 32))])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_conv_nets_take_a_training_step_with_every_activation(name, shape, activation):
    model = build_model(model_cfg(name, activation, shape, width=16), 2)
    model.initialize(INITS["kaiming_normal"], generators(2), "zero")
    x, y = torch.rand(2, 4, *shape), torch.randint(0, 10, (2, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = [w.detach().clone() for w in model.weights]
    loss = F.cross_entropy(model(x).transpose(1, 2), y)
    loss.backward()
    optimizer.step()
    assert math.isfinite(loss.item())
    assert all(torch.isfinite(w.grad).all() for w in model.weights)
    # (a deep sigmoid FitNet4's first layers may move by less than float resolution: the
    # vanishing gradient itself)
    assert not torch.equal(before[-1], model.weights[-1])


def test_conv_inits_use_the_receptive_field_in_fan_in_and_fan_out():
    model = build_model(model_cfg("cnn", "relu", width=16), 1)
    conv = model.weights[1]  # 8 -> 16 channels, 3x3: fan_in 72, fan_out 144
    for init, variance in [("he", 2 / 72), ("xavier", 1 / 72),
                           ("glorot_normal", 2 * 2 / (72 + 144))]:  # relu gain^2 = 2
        model.initialize(INITS[init], generators(1), "zero")
        assert conv.var().item() == pytest.approx(variance, rel=0.15)


def test_orthogonal_conv_filters_are_orthonormal():
    model = build_model(model_cfg("cnn", "relu", width=16), 1)
    model.initialize(INITS["orthogonal"], generators(1), "zero")
    filters = model.weights[1][0].flatten(1)  # (16 out, 8*3*3 = 72): rows orthonormal
    assert torch.allclose(filters @ filters.T / ACTIVATIONS["relu"].gain ** 2,
                          torch.eye(16), atol=1e-5)


class Lsuv:
    tol, max_iter, batch_size = 0.1, 10, 64


@pytest.mark.parametrize("activation", ["relu", "maxout"])
def test_lsuv_gives_conv_layers_unit_variance(activation):
    model = build_model(model_cfg("cnn", activation, (1, 28, 28), width=16), 2)
    model.initialize(INITS["orthogonal"], generators(2), "zero")
    x = torch.rand(200, 1, 28, 28)
    log = lsuv(model, x, generators(2), Lsuv)
    for layer in range(len(model.weights)):
        assert (log[f"lsuv_variance_layer{layer}"] - 1).abs().max() < Lsuv.tol


def test_a_seed_in_a_conv_batch_matches_it_trained_alone_to_rounding():
    cfg = model_cfg("cnn", "maxout", (1, 28, 28), width=16)
    pair, alone = build_model(cfg, 2), build_model(cfg, 1)
    pair.initialize(INITS["he"], generators(2), "zero")
    alone.initialize(INITS["he"], generators(2)[1:], "zero")
    assert torch.equal(pair.weights[0][1], alone.weights[0][0])
    x = torch.rand(2, 8, 1, 28, 28)
    # A grouped convolution sums in another order than a plain one: equal to float rounding.
    assert torch.allclose(pair(x)[1], alone(x[1:])[0], atol=1e-5)


def test_rbm_and_batch_norm_are_refused_on_conv_nets(in_project):
    with pytest.raises(ConfigError, match="init='rbm' is not allowed: with model=cnn"):
        load_config(["model=cnn", "init=rbm", "depth_sweep.depths=[]",
                     "batchnorm_sweep.activations=[]"])
    with pytest.raises(ConfigError, match="model.batchnorm=True is not allowed"):
        load_config(["model=cnn", "model.batchnorm=true", "depth_sweep.depths=[]",
                     "batchnorm_sweep.activations=[]"])


def test_a_cnn_cell_trains_and_evaluates_on_the_embedded_data(in_project):
    from initlab.evaluate import evaluate_cell
    from initlab.train import train_cell

    cfg = load_config(["model=cnn", "model.channels=[4]", "model.width=16", "init=lsuv",
                       "activation=maxout", "train.epochs=1", "grid.inits=[lsuv]",
                       "study.seeds=[0,1]", "train.augment=mirror_crop",
                       "depth_sweep.depths=[]", "batchnorm_sweep.activations=[]",
                       "run_dir=runs/grid/cnn-maxout-lsuv"])
    out = train_cell(cfg)
    x_test, y_test = load_split("test")
    ran = json.loads((out / "cell.json").read_text())
    rows = evaluate_cell(out, x_test, y_test)
    assert [r["seed"] for r in rows] == [0, 1]
    assert all(r["test_accuracy"] > 0.5 for r in rows)  # learned in one epoch
    assert ran["parameters_per_seed"] == build_model(cfg, 1).seed_parameter_count()
