"""The models (MLP, small CNN, FitNet4), built as one independent network per seed.

A cell trains all its seeds at once: parameters carry a leading seed axis; a fully connected
layer is one `torch.baddbmm` and a convolution one grouped `conv2d` (a group per seed), so S
seeds cost one pass of S-times-larger operations instead of S passes. Nothing mixes across
the seed axis (the loss is a sum of per-seed losses, batch norm keeps per-seed statistics and
the optimizers are element-wise), so seed s trained in a batch equals seed s trained alone:
bit for bit for the MLP, to float rounding for the conv nets (a grouped convolution sums in
another order than the same convolution alone).
"""

from __future__ import annotations

import math
from itertools import islice

import torch
import torch.nn.functional as F
from torch import Generator, Tensor, nn

from initlab.activations import ACTIVATIONS, Activation
from initlab.inits import Init

POOL = "pool"  # 2x2 max pooling, stride 2
GLOBAL_POOL = "global_pool"  # max over the whole feature map

# FitNet4 (Romero et al. 2015), the network of Mishkin & Matas 2016's CIFAR-10 table: 3x3
# convolutions (padding 1) in three stages of 5, 2x2 max pooling between the stages, 8x8 max
# pooling (the whole map of a 32x32 input) after the last, then a 500-unit fully connected
# layer (`model.width`) and the softmax layer.
FITNET4_CONVS = [32, 32, 32, 48, 48, POOL, 80, 80, 80, 80, 80, POOL,
                 128, 128, 128, 128, 128, GLOBAL_POOL]
# Its parameter count as published: "~2.5M" (Romero et al. 2015, Table 1, FitNet 4, with
# maxout units). Compared with ours in the tests and docs/datasets.md.
FITNET4_PUBLISHED_PARAMETERS = 2.5e6


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


def _max_pool2(x: Tensor) -> Tensor:
    """2x2 max pooling, stride 2, of (B, C, H, W) (an odd last row or column is dropped), as a
    max over a reshape: its backward is deterministic on CUDA, F.max_pool2d's is not."""
    batch, channels, height, width = x.shape
    x = x[:, :, : height // 2 * 2, : width // 2 * 2]
    return x.reshape(batch, channels, height // 2, 2, width // 2, 2).amax(dim=(3, 5))


def _seed_major(t: Tensor, seeds: int) -> Tensor:
    """(B, S*C, H, W), the grouped convolution's layout -> (S, B, C, H, W)."""
    return t.unflatten(1, (seeds, -1)).transpose(0, 1)


class SeedBatchedNet(nn.Module):
    """`n_models` networks: x (S, B, *input_shape) -> logits (S, B, classes).

    First the convolutions of `convs` (an int: a 3x3 convolution, padding 1, with that many
    output channels, then the activation; POOL / GLOBAL_POOL: max pooling), then fully
    connected hidden layers of `dense` units, then the output layer. A layer computes
    z = h_prev W + b (z = conv(h_prev, W) + b), then h = act(z), or h = act(BN(z)) with batch
    norm (Ioffe & Szegedy 2015, fully connected layers only). A maxout activation with k pieces
    makes the linear map k times wider. Fully connected weights are (S, fan_in, fan_out), conv
    weights (S, out_channels, in_channels, 3, 3)."""

    def __init__(self, n_models: int, input_shape, num_classes: int, convs: list, dense: list,
                 activation: Activation, batchnorm: bool = False):
        super().__init__()
        self.n_models, self.activation, self.convs = n_models, activation, list(convs)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.norms = nn.ModuleList()
        channels, *size = input_shape
        for spec in self.convs:
            if spec == POOL:
                size = [s // 2 for s in size]
            elif spec == GLOBAL_POOL:
                size = [1, 1]
            else:
                self.weights.append(nn.Parameter(
                    torch.empty(n_models, spec * activation.pieces, channels, 3, 3)))
                self.biases.append(nn.Parameter(torch.zeros(n_models, spec * activation.pieces)))
                channels = spec
        widths = [channels * math.prod(size), *dense, num_classes]
        for layer, (fan_in, units) in enumerate(zip(widths[:-1], widths[1:])):
            hidden = layer < len(dense)
            fan_out = units * activation.pieces if hidden else units
            self.weights.append(nn.Parameter(torch.empty(n_models, fan_in, fan_out)))
            self.biases.append(nn.Parameter(torch.zeros(n_models, 1, fan_out)))
            if hidden and batchnorm:
                self.norms.append(SeedBatchedNorm(n_models, fan_out))

    def layer_outputs(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per weight layer (z, h): the linear output z, and the layer's output h = act(z)
        (the logits for the last layer). Both (S, B, units) or (S, B, channels, H, W)."""
        seeds, outputs, layer = self.n_models, [], 0
        if self.convs:
            x = x.transpose(0, 1).flatten(1, 2)  # (B, S*C, H, W): a group per seed
            for spec in self.convs:
                if spec == POOL:
                    x = _max_pool2(x)
                elif spec == GLOBAL_POOL:
                    x = x.amax(dim=(2, 3), keepdim=True)
                else:
                    w, b = self.weights[layer], self.biases[layer]
                    z = F.conv2d(x, w.flatten(0, 1), b.flatten(), padding=1, groups=seeds)
                    x = self._channel_activation(z)
                    outputs.append((_seed_major(z, seeds), _seed_major(x, seeds)))
                    layer += 1
            x = _seed_major(x, seeds)
        x = x.flatten(2)
        last = len(self.weights) - 1
        # islice, not a slice: slicing a ParameterList builds a new module on every call
        for hidden, (w, b) in enumerate(islice(zip(self.weights, self.biases), layer, None)):
            z = torch.baddbmm(b, x, w)
            x = z
            if layer < last:
                if self.norms:
                    x = self.norms[hidden](x)
                x = self.activation.fn(x)
            outputs.append((z, x))
            layer += 1
        return outputs

    def _channel_activation(self, z: Tensor) -> Tensor:
        """The activation of a conv output (B, channels, H, W); maxout takes the max of each
        unit's consecutive channels."""
        if self.activation.pieces == 1:
            return self.activation.fn(z)
        return self.activation.fn(z.movedim(1, -1)).movedim(-1, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer_outputs(x)[-1][1]

    @torch.no_grad()
    def initialize(self, init: Init, generators: list[Generator], bias_init: str) -> None:
        """Draw every seed's weights from its own generator, layer by layer, so a seed's
        numbers do not depend on which other seeds share the batch. A conv weight is drawn as
        the (in_channels*3*3, out_channels) matrix with receptive field 3*3 (initlab.inits).
        Biases are 0, or N(0, 1) as in the lecture's lab code (`bias_init=normal`)."""
        for w, b in zip(self.weights, self.biases):
            for s, generator in enumerate(generators):
                if w.ndim == 5:  # (S, out, in, k, k)
                    out_channels, *receptive = w.shape[1:]
                    matrix = init(math.prod(receptive), out_channels, generator,
                                  self.activation, receptive_field=math.prod(receptive[1:]))
                    w[s] = matrix.T.reshape(w.shape[1:])
                else:
                    w[s] = init(*w.shape[1:], generator, self.activation)
                if bias_init == "normal":
                    b[s] = torch.randn(b.shape[1:], generator=generator)
                else:
                    b[s].zero_()

    def seed_state_dict(self, s: int) -> dict[str, Tensor]:
        """The state_dict of seed s alone: its slice of every parameter and buffer."""
        return {name: value[s].detach().clone() for name, value in self.state_dict().items()}

    def load_seed_state_dicts(self, states: list[dict[str, Tensor]]) -> None:
        self.load_state_dict({name: torch.stack([state[name] for state in states])
                              for name in states[0]})

    def seed_parameter_count(self) -> int:
        """Parameters of one seed's network."""
        return sum(p[0].numel() for p in self.parameters())


class SeedBatchedMLP(SeedBatchedNet):
    """The MLP: `depth` fully connected weight layers, `width` units in each hidden one."""

    def __init__(self, n_models: int, in_features: int, num_classes: int, depth: int,
                 width: int, activation: Activation, batchnorm: bool = False):
        super().__init__(n_models, [in_features], num_classes, [], [width] * (depth - 1),
                         activation, batchnorm)


# model.name -> its convolutions (see SeedBatchedNet); the small CNN is a 3x3 convolution and
# a 2x2 max pooling per `model.channels` entry (28x28 -> 7x7, 32x32 -> 8x8 with two).
MODELS = {
    "mlp": lambda model: [],
    "cnn": lambda model: [c for channels in model.channels for c in (channels, POOL)],
    "fitnet4": lambda model: FITNET4_CONVS,
}


def build_model(cfg, n_models: int) -> SeedBatchedNet:
    """The configured model for the dataset's image shape and classes: the convolutions of
    `MODELS[model.name]`, then `model.depth - 1` hidden layers of `model.width` units for the
    mlp, one for the conv nets."""
    model = cfg.model
    dense = [model.width] * (model.depth - 1) if model.name == "mlp" else [model.width]
    return SeedBatchedNet(n_models, list(cfg.dataset.image_shape), cfg.dataset.num_classes,
                          MODELS[model.name](model), dense, ACTIVATIONS[cfg.activation.name],
                          model.batchnorm)
