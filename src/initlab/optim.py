"""Optimizer registry: name -> a builder from the `optimizer` config group.

Both update each parameter element on its own, so a seed-batched model (`initlab.models`)
trains every seed exactly as it would alone.
"""

from __future__ import annotations

import torch


def sgd(params, cfg) -> torch.optim.Optimizer:
    """SGD with (heavy-ball) momentum and L2 weight decay."""
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def adam(params, cfg) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba 2015), PyTorch's defaults for betas and eps."""
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


OPTIMIZERS = {"sgd": sgd, "adam": adam}


def step_decay(optimizer: torch.optim.Optimizer, cfg) -> torch.optim.lr_scheduler.MultiStepLR:
    """lr x `gamma` at each of `milestones` (iterations): the step schedule of Mishkin & Matas
    2016's CIFAR-10 runs (x0.1 at 40k, 60k and 80k of 90k). Stepped once per minibatch."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.milestones), cfg.gamma)
