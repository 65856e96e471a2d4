"""Data-dependent initializations: they start from a plain init, then look at training data.

Each is `init(model, x_train, generators, cfg) -> log`, where `model` is a seed-batched model
already drawn with the init's `pre_init`, `x_train` is the training inputs (N, C, H, W) in [0, 1],
`generators` are the seeds' init streams (each seed picks its own batches), and `log` maps a
metric name to a (steps, seeds) tensor that training records in MLflow (`step` = row).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor


@dataclass
class LsuvConfig:
    """LSUV's options: the values of Mishkin & Matas's own PyTorch package."""
    tol: float = 0.1  # stop once every seed's output variance is within tol of 1
    max_iter: int = 10  # rescalings per layer at most
    batch_size: int = 500  # training examples each seed measures the variance on

    def problems(self) -> list[tuple[str, object, str]]:
        """(key, value, what is allowed) of every value out of range."""
        return [(key, value, allowed) for key, value, ok, allowed in [
            ("tol", self.tol, self.tol > 0, "must be > 0"),
            ("max_iter", self.max_iter, self.max_iter >= 0, "must be >= 0"),
            ("batch_size", self.batch_size, self.batch_size >= 2, "must be >= 2")] if not ok]


@dataclass
class RbmConfig:
    """RBM pre-training's options (CD-k, Hinton, Osindero & Teh 2006)."""
    epochs: int = 5  # passes over the training data per hidden layer
    k: int = 1  # Gibbs steps of contrastive divergence
    lr: float = 0.1
    batch_size: int = 100

    def problems(self) -> list[tuple[str, object, str]]:
        """(key, value, what is allowed) of every value out of range."""
        return [(key, value, allowed) for key, value, ok, allowed in [
            ("epochs", self.epochs, self.epochs >= 1, "must be >= 1"),
            ("k", self.k, self.k >= 1, "must be >= 1"),
            ("lr", self.lr, self.lr > 0, "must be > 0"),
            ("batch_size", self.batch_size, self.batch_size >= 1, "must be >= 1")] if not ok]


@dataclass(frozen=True)
class DataInit:
    fn: Callable
    pre_init: str  # the data-independent init drawn first (a name in `initlab.inits.INITS`)
    options: type  # its options' dataclass, `init.<name>` of the config


def _per_seed_batches(x: Tensor, generators, size: int) -> Tensor:
    """(S, size, ...): for each seed, `size` examples of x chosen by that seed's generator."""
    idx = torch.stack([torch.randperm(len(x), generator=g)[:size] for g in generators])
    return x[idx.to(x.device)]


@torch.no_grad()
def lsuv(model, x_train: Tensor, generators, cfg) -> dict[str, Tensor]:
    """Layer-sequential unit-variance init (Mishkin & Matas 2016, Algorithm 1).

    Pre-init: orthonormal (Saxe et al. 2014). Then, from the first layer to the last, scale
    W_l <- W_l / sqrt(Var[x W_l + b_l]) on a training minibatch until |Var - 1| < tol or
    `max_iter` scalings; biases 0. Each seed is scaled on its own minibatch and its own
    variance. On a conv net a conv layer is scaled like a fully connected one: its
    variance is over the minibatch, the channels and the positions. Logs, per layer, the
    iterations used and the final variance."""
    batch = _per_seed_batches(x_train, generators, cfg.batch_size)
    for b in model.biases:
        b.zero_()
    log = {}
    for layer, w in enumerate(model.weights):
        iterations = torch.zeros(len(w), device=w.device)
        while True:
            variance = model.layer_outputs(batch)[layer][0].flatten(1).var(dim=1)
            todo = ((variance - 1).abs() >= cfg.tol) & (iterations < cfg.max_iter)
            if not todo.any():
                break
            w.mul_(torch.where(todo, variance.rsqrt(), 1.0).view(-1, *[1] * (w.ndim - 1)))
            iterations += todo
        log[f"lsuv_iterations_layer{layer}"] = iterations.cpu().unsqueeze(0)
        log[f"lsuv_variance_layer{layer}"] = variance.cpu().unsqueeze(0)
    return log


def _sample(p: Tensor, generators) -> Tensor:
    return torch.stack([torch.bernoulli(p[s], generator=g) for s, g in enumerate(generators)])


@torch.no_grad()
def rbm(model, x_train: Tensor, generators, cfg) -> dict[str, Tensor]:
    """Greedy layer-wise pre-training of the hidden layers as stacked RBMs (Hinton, Osindero &
    Teh 2006), with Bernoulli visible and hidden units and contrastive divergence CD-k.

    For hidden layer l with weights W (visible x hidden), hidden bias b (the layer's bias) and
    a visible bias a, each minibatch v0 does
        p(h|v) = sigmoid(v W + b),  p(v|h) = sigmoid(h W^T + a),
        h0 ~ p(h|v0); k Gibbs steps give (vk, p(h|vk)) with vk the mean-field reconstruction,
        W += lr (v0^T p(h|v0) - vk^T p(h|vk)) / B,  a += lr mean(v0 - vk),
        b += lr mean(p(h|v0) - p(h|vk)).
    The visible data of layer l+1 are p(h|v) of layer l on the training set (max-pooled over
    the pieces of a maxout layer). The output layer keeps its pre-init; fine-tuning is the
    normal training that follows, whatever the activation (the RBM's units are sigmoid; with
    another activation the pre-trained weights are used as they are). Logs the mean squared
    reconstruction error per layer and epoch. Fully connected nets only: the config refuses
    rbm with a conv net (`initlab.schema.validate`)."""
    seeds = len(generators)
    visible = x_train.flatten(1).unsqueeze(0).expand(seeds, -1, -1)
    pieces = model.activation.pieces
    log = {}
    for layer, (w, b) in enumerate(zip(model.weights[:-1], model.biases[:-1])):
        a = torch.zeros(seeds, 1, w.shape[1], device=w.device)
        errors = []
        for _ in range(cfg.epochs):
            order = torch.stack([torch.randperm(visible.shape[1], generator=g)
                                 for g in generators]).to(w.device)
            error = torch.zeros(seeds, device=w.device)
            for start in range(0, visible.shape[1], cfg.batch_size):
                idx = order[:, start:start + cfg.batch_size]
                v0 = visible[torch.arange(seeds, device=w.device)[:, None], idx]
                ph0 = torch.sigmoid(torch.baddbmm(b, v0, w))
                h, vk, phk = _sample(ph0, generators), v0, ph0
                for _ in range(cfg.k):
                    vk = torch.sigmoid(torch.baddbmm(a, h, w.transpose(1, 2)))
                    phk = torch.sigmoid(torch.baddbmm(b, vk, w))
                    h = _sample(phk, generators)
                n = v0.shape[1]
                w.add_(torch.bmm(v0.transpose(1, 2), ph0) - torch.bmm(vk.transpose(1, 2), phk),
                       alpha=cfg.lr / n)
                a.add_((v0 - vk).mean(1, keepdim=True), alpha=cfg.lr)
                b.add_((ph0 - phk).mean(1, keepdim=True), alpha=cfg.lr)
                error += ((v0 - vk) ** 2).mean(dim=(1, 2)) * n
            errors.append(error.cpu() / visible.shape[1])
        log[f"rbm_recon_error_layer{layer}"] = torch.stack(errors)
        hidden = torch.sigmoid(torch.baddbmm(b, visible, w))
        visible = hidden.unflatten(-1, (-1, pieces)).amax(-1) if pieces > 1 else hidden
    return log


DATA_INITS: dict[str, DataInit] = {
    "lsuv": DataInit(lsuv, "orthogonal", LsuvConfig),  # LSUV rescales: the gain is moot
    "rbm": DataInit(rbm, "normal_small", RbmConfig),
}
