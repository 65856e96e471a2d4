"""Initialization registry: name -> a function that draws one weight matrix.

Every init has the signature `init(fan_in, fan_out, generator, activation,
receptive_field=1) -> Tensor` and returns a `(fan_in, fan_out)` matrix, the lecture's
`W = randn(fan_in, fan_out) ...` convention (a layer computes `x @ W + b`). Gain-aware inits
read `activation.gain` (`initlab.activations`); the lecture's own formulas ignore it, as the
slides do.

A convolution with `c_in` input and `c_out` output channels and a k x k kernel draws the
matrix `(c_in*k*k, c_out)` with `receptive_field = k*k`: fan_in is then `c_in*k*k`, the inputs
one output sees, and the fan-out `c_out*k*k`, the outputs one input reaches, as in
`torch.nn.init` and Caffe's fillers. Only inits that use the fan-out read `receptive_field`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Generator, Tensor

Init = Callable[..., Tensor]  # (fan_in, fan_out, generator, activation, receptive_field=1)


def _uniform(fan_in: int, fan_out: int, generator: Generator, bound: float) -> Tensor:
    return (torch.rand(fan_in, fan_out, generator=generator) * 2 - 1) * bound


def _normal(fan_in: int, fan_out: int, generator: Generator, std: float) -> Tensor:
    return torch.randn(fan_in, fan_out, generator=generator) * std


def zero(fan_in, fan_out, generator, activation, receptive_field=1):
    """W = 0. The lecture's first mistake: with act(0) = 0 every gradient behind the last layer
    is 0 (chain rule through a zero weight), so hidden layers never learn."""
    return torch.zeros(fan_in, fan_out)


def constant(fan_in, fan_out, generator, activation, receptive_field=1):
    """W = 1/fan_in everywhere: non-zero, yet every unit of a layer computes the same function
    and receives the same gradient, so the symmetry is never broken."""
    return torch.full((fan_in, fan_out), 1.0 / fan_in)


def uniform(fan_in, fan_out, generator, activation, receptive_field=1):
    """W ~ U[-1, 1], the lecture's "random numbers between -1 and 1"."""
    return _uniform(fan_in, fan_out, generator, 1.0)


def normal(fan_in, fan_out, generator, activation, receptive_field=1):
    """W ~ N(0, 1), as the lecture's lab code draws with `tf.random_normal`."""
    return _normal(fan_in, fan_out, generator, 1.0)


def normal_small(fan_in, fan_out, generator, activation, receptive_field=1):
    """W ~ N(0, 0.01^2), the common "std 0.01" practice (e.g. Krizhevsky et al. 2012)."""
    return _normal(fan_in, fan_out, generator, 0.01)


def xavier(fan_in, fan_out, generator, activation, receptive_field=1):
    """W = randn(fan_in, fan_out) / sqrt(fan_in), the lecture's "Xavier" slide (Glorot & Bengio
    2010). Variance 1/fan_in: this is exactly LeCun normal (LeCun et al. 1998), not Glorot's
    normalized 2/(fan_in + fan_out); see `glorot_uniform` for that one."""
    return _normal(fan_in, fan_out, generator, 1.0 / math.sqrt(fan_in))


def he(fan_in, fan_out, generator, activation, receptive_field=1):
    """W = randn(fan_in, fan_out) / sqrt(fan_in / 2), the lecture's He slide (He et al. 2015).
    Variance 2/fan_in, for relu whatever the activation."""
    return _normal(fan_in, fan_out, generator, 1.0 / math.sqrt(fan_in / 2))


def glorot_uniform(fan_in, fan_out, generator, activation, receptive_field=1):
    """W ~ U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out)): Glorot & Bengio 2010, eq. 16.
    Variance gain^2 * 2 / (fan_in + fan_out), fan_out counted over the receptive field."""
    fans = fan_in + fan_out * receptive_field
    return _uniform(fan_in, fan_out, generator, activation.gain * math.sqrt(6.0 / fans))


def glorot_normal(fan_in, fan_out, generator, activation, receptive_field=1):
    """W ~ N(0, gain^2 * 2 / (fan_in + fan_out)): Glorot & Bengio 2010, normal form."""
    fans = fan_in + fan_out * receptive_field
    return _normal(fan_in, fan_out, generator, activation.gain * math.sqrt(2.0 / fans))


def kaiming_uniform(fan_in, fan_out, generator, activation, receptive_field=1):
    """W ~ U(-a, a), a = gain * sqrt(3 / fan_in): He et al. 2015, variance gain^2 / fan_in, with
    gain sqrt(2 / (1 + slope^2)) for (leaky) relus."""
    return _uniform(fan_in, fan_out, generator, activation.gain * math.sqrt(3.0 / fan_in))


def kaiming_normal(fan_in, fan_out, generator, activation, receptive_field=1):
    """W ~ N(0, gain^2 / fan_in): He et al. 2015 (eq. 10 with the activation's gain)."""
    return _normal(fan_in, fan_out, generator, activation.gain / math.sqrt(fan_in))


def orthogonal(fan_in, fan_out, generator, activation, receptive_field=1):
    """W = gain * Q, Q from the QR decomposition of a Gaussian matrix, signs fixed by diag(R)
    so Q is Haar-distributed (Saxe et al. 2014). The rows (or columns, whichever are fewer)
    are orthonormal: W W^T = gain^2 I when fan_in <= fan_out."""
    tall = torch.randn(max(fan_in, fan_out), min(fan_in, fan_out), generator=generator)
    q, r = torch.linalg.qr(tall)
    q = q * torch.sign(torch.diagonal(r))
    return activation.gain * (q.T if fan_in <= fan_out else q)


INITS: dict[str, Init] = {
    "zero": zero,
    "constant": constant,
    "uniform": uniform,
    "normal": normal,
    "normal_small": normal_small,
    "xavier": xavier,
    "lecun_normal": xavier,
    "he": he,
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "kaiming_uniform": kaiming_uniform,
    "kaiming_normal": kaiming_normal,
    "orthogonal": orthogonal,
}

