"""The MLP, built as one independent network per seed and run with batched matmuls.

A cell trains all its seeds at once: parameters carry a leading seed axis and every layer is
one `torch.baddbmm`, so S seeds cost one pass of S-times-larger matmuls instead of S passes.
Nothing mixes across the seed axis (the loss is a sum of per-seed losses, batch norm keeps
per-seed statistics and the optimizers are element-wise), so seed s trained in a batch equals
seed s trained alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Generator, Tensor, nn

from initlab.activations import Activation
from initlab.inits import Init


class SeedBatchedNorm(nn.Module):
    """Batch norm (Ioffe & Szegedy 2015) of z (S, B, units), each seed with its own batch
    statistics, running averages and affine parameters (all with a leading seed axis)."""

    def __init__(self, n_models: int, units: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(n_models, 1, units))
        self.bias = nn.Parameter(torch.zeros(n_models, 1, units))
        self.register_buffer("running_mean", torch.zeros(n_models, 1, units))
        self.register_buffer("running_var", torch.ones(n_models, 1, units))

    def forward(self, z: Tensor) -> Tensor:
        seeds, batch, units = z.shape
        flat = F.batch_norm(z.transpose(0, 1).reshape(batch, seeds * units),
                            self.running_mean.view(-1), self.running_var.view(-1),
                            self.weight.view(-1), self.bias.view(-1), self.training,
                            self.momentum, self.eps)
        return flat.reshape(batch, seeds, units).transpose(0, 1)


class SeedBatchedMLP(nn.Module):
    """`n_models` MLPs with `depth` weight layers: x (S, B, in) -> logits (S, B, classes).

    Hidden layer l computes z = h_prev @ W_l + b_l, W_l of shape (S, fan_in, fan_out), then
    h = act(z), or h = act(BN(z)) with batch norm (Ioffe & Szegedy 2015). A maxout activation
    with k pieces makes that linear map k times wider."""

    def __init__(self, n_models: int, in_features: int, num_classes: int, depth: int,
                 width: int, activation: Activation, batchnorm: bool = False):
        super().__init__()
        self.activation = activation
        widths = [in_features] + [width] * (depth - 1) + [num_classes]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.norms = nn.ModuleList()
        for layer, (fan_in, units) in enumerate(zip(widths[:-1], widths[1:])):
            hidden = layer < depth - 1
            fan_out = units * activation.pieces if hidden else units
            self.weights.append(nn.Parameter(torch.empty(n_models, fan_in, fan_out)))
            self.biases.append(nn.Parameter(torch.zeros(n_models, 1, fan_out)))
            if hidden and batchnorm:
                self.norms.append(SeedBatchedNorm(n_models, fan_out))

    def layer_outputs(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per layer (z, h): the linear output z = h_prev W + b, and the layer's output h
        (the logits for the last layer). Both (S, B, units)."""
        outputs = []
        last = len(self.weights) - 1
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = torch.baddbmm(b, x, w)
            x = z
            if layer < last:
                if self.norms:
                    x = self.norms[layer](x)
                x = self.activation.fn(x)
            outputs.append((z, x))
        return outputs

    def forward(self, x: Tensor) -> Tensor:
        return self.layer_outputs(x)[-1][1]

    @torch.no_grad()
    def initialize(self, init: Init, generators: list[Generator], bias_init: str) -> None:
        """Draw every seed's weights from its own generator, layer by layer, so a seed's
        numbers do not depend on which other seeds share the batch. Biases are 0, or N(0, 1)
        as in the lecture's lab code (`bias_init=normal`)."""
        for w, b in zip(self.weights, self.biases):
            _, fan_in, fan_out = w.shape
            for s, generator in enumerate(generators):
                w[s] = init(fan_in, fan_out, generator, self.activation)
                if bias_init == "normal":
                    b[s] = torch.randn(1, fan_out, generator=generator)
                else:
                    b[s].zero_()

    def seed_state_dict(self, s: int) -> dict[str, Tensor]:
        """The state_dict of seed s alone: its slice of every parameter and buffer."""
        return {name: value[s].detach().clone() for name, value in self.state_dict().items()}

    def load_seed_state_dicts(self, states: list[dict[str, Tensor]]) -> None:
        self.load_state_dict({name: torch.stack([state[name] for state in states])
                              for name in states[0]})
