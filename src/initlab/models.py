"""The MLP, built as one independent network per seed and run with batched matmuls.

A cell trains all its seeds at once: parameters carry a leading seed axis and every layer is
one `torch.baddbmm`, so S seeds cost one pass of S-times-larger matmuls instead of S passes.
Nothing mixes across the seed axis (the loss is a sum of per-seed losses and the optimizers
are element-wise), so seed s trained in a batch equals seed s trained alone.
"""

from __future__ import annotations

import torch
from torch import Generator, Tensor, nn

from initlab.activations import Activation
from initlab.inits import Init


class SeedBatchedMLP(nn.Module):
    """`n_models` MLPs with `depth` weight layers: x (S, B, in) -> logits (S, B, classes).

    Hidden layer l computes h = act(h_prev @ W_l + b_l), W_l of shape (S, fan_in, fan_out);
    a maxout activation with k pieces makes that linear map k times wider."""

    def __init__(self, n_models: int, in_features: int, num_classes: int, depth: int,
                 width: int, activation: Activation):
        super().__init__()
        self.activation = activation
        widths = [in_features] + [width] * (depth - 1) + [num_classes]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for layer, (fan_in, units) in enumerate(zip(widths[:-1], widths[1:])):
            fan_out = units * activation.pieces if layer < depth - 1 else units
            self.weights.append(nn.Parameter(torch.empty(n_models, fan_in, fan_out)))
            self.biases.append(nn.Parameter(torch.zeros(n_models, 1, fan_out)))

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.weights) - 1
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if layer < last:
                x = self.activation.fn(x)
        return x

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
        """The state_dict of seed s alone (its slice of every parameter)."""
        return {name: value[s].detach().clone() for name, value in self.state_dict().items()}

    def load_seed_state_dicts(self, states: list[dict[str, Tensor]]) -> None:
        self.load_state_dict({name: torch.stack([state[name] for state in states])
                              for name in states[0]})
