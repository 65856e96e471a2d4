"""Activation registry: name -> the function, the gain gain-aware inits use, and its shape.

Gains come from `torch.nn.init.calculate_gain` where PyTorch defines one. For the others the
choice is documented on the entry:
- elu, gelu, silu, softplus: sqrt(2), as for relu. Each is relu-like (zero or near zero on the
  negative side, identity on the positive side), so He's argument applies approximately.
- maxout(k=2): 1. For two i.i.d. zero-mean pieces a, b: max(a,b)^2 + min(a,b)^2 = a^2 + b^2 and
  max, min are equal in law up to sign, so E[max(a,b)^2] = E[a^2]: the second moment is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.init import calculate_gain


@dataclass(frozen=True)
class Activation:
    fn: Callable[[Tensor], Tensor]
    gain: float
    pieces: int = 1  # maxout: the linear map before it has `pieces` x outputs
    bounds: tuple[float, float] | None = None  # output range of a saturating activation
    negative_slope: float = 0.0  # leaky relus: He's gain sqrt(2 / (1 + a^2)) uses it


def maxout(x: Tensor, pieces: int = 2) -> Tensor:
    """Maxout (Goodfellow et al. 2013): max over `pieces` consecutive linear outputs."""
    return x.unflatten(-1, (-1, pieces)).amax(dim=-1)


def _leaky(slope: float) -> Activation:
    return Activation(lambda x: F.leaky_relu(x, slope), calculate_gain("leaky_relu", slope),
                      negative_slope=slope)


RELU_LIKE_GAIN = math.sqrt(2.0)

ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation(torch.sigmoid, calculate_gain("sigmoid"), bounds=(0.0, 1.0)),
    "tanh": Activation(torch.tanh, calculate_gain("tanh"), bounds=(-1.0, 1.0)),
    "relu": Activation(F.relu, calculate_gain("relu")),
    "leaky_relu": _leaky(0.01),
    # VLReLU of Mishkin & Matas 2016 (after Graham 2014): negative slope 0.333.
    "vleaky_relu": _leaky(0.333),
    "elu": Activation(F.elu, RELU_LIKE_GAIN),
    "selu": Activation(F.selu, calculate_gain("selu")),
    "gelu": Activation(F.gelu, RELU_LIKE_GAIN),
    "silu": Activation(F.silu, RELU_LIKE_GAIN),
    "softplus": Activation(F.softplus, RELU_LIKE_GAIN),
    "maxout": Activation(maxout, 1.0, pieces=2),
}
