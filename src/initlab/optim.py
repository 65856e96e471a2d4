"""Optimizer registry: name -> a builder from the `optimizer` config group.

Each update is torch.optim's own functional form (`torch.optim.sgd.sgd`,
`torch.optim.adam.adam`), so the numbers are those of `torch.optim.SGD` / `Adam`; the
classes here only hold the parameters, the learning rate and the running state, because
`torch.optim.Optimizer`'s first call imports torch._dynamo: ~2 s in every cell's process.
Both update each parameter element on its own, so a seed-batched model (`initlab.models`)
trains every seed exactly as it would alone. Every parameter must have a gradient at each
step (true of every model here).
"""

from __future__ import annotations

import torch
from torch.optim.adam import adam as adam_update
from torch.optim.sgd import sgd as sgd_update


class Optimizer:
    """`params` and the learning rate `lr`, which a schedule may change between steps."""

    def __init__(self, params, lr: float, weight_decay: float):
        self.params = list(params)
        self.lr, self.weight_decay = lr, weight_decay

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


class SGD(Optimizer):
    """SGD with heavy-ball momentum (Polyak 1964) and L2 weight decay, in PyTorch's form:
    v <- momentum v + (g + weight_decay w), w <- w - lr v."""

    def __init__(self, params, lr: float, momentum: float, weight_decay: float):
        super().__init__(params, lr, weight_decay)
        self.momentum = momentum
        self.velocities = [None] * len(self.params)  # sgd_update creates them at step 1

    @torch.no_grad()
    def step(self) -> None:
        sgd_update(self.params, [p.grad for p in self.params], self.velocities,
                   weight_decay=self.weight_decay, momentum=self.momentum, lr=self.lr,
                   dampening=0.0, nesterov=False, maximize=False)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with L2 weight decay: m, v <- running means of g and g^2
    (betas 0.9, 0.999), w <- w - lr m_hat / (sqrt(v_hat) + 1e-8), hats bias-corrected."""

    def __init__(self, params, lr: float, weight_decay: float):
        super().__init__(params, lr, weight_decay)
        self.means = [torch.zeros_like(p) for p in self.params]
        self.squares = [torch.zeros_like(p) for p in self.params]
        self.steps = [torch.tensor(0.0) for _ in self.params]

    @torch.no_grad()
    def step(self) -> None:
        adam_update(self.params, [p.grad for p in self.params], self.means, self.squares, [],
                    self.steps, amsgrad=False, beta1=0.9, beta2=0.999, lr=self.lr,
                    weight_decay=self.weight_decay, eps=1e-8, maximize=False)


def sgd(params, cfg) -> SGD:
    return SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def adam(params, cfg) -> Adam:
    return Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


OPTIMIZERS = {"sgd": sgd, "adam": adam}


class StepDecay:
    """lr x `gamma` at each of `milestones` (iterations): the step schedule of Mishkin & Matas
    2016's CIFAR-10 runs (x0.1 at 40k, 60k and 80k of 90k). `step()` once per minibatch;
    the same products as torch.optim.lr_scheduler.MultiStepLR."""

    def __init__(self, optimizer: Optimizer, cfg):
        self.optimizer, self.gamma = optimizer, cfg.gamma
        self.milestones, self.iteration = set(cfg.milestones), 0

    def step(self) -> None:
        self.iteration += 1
        if self.iteration in self.milestones:
            self.optimizer.lr *= self.gamma
