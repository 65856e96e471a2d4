"""What mean-field theory predicts at init, layer by layer (no training needed).

Poole et al. 2016, "Exponential expressivity in deep neural networks through transient chaos";
Schoenholz et al. 2017, "Deep information propagation". For a wide fully connected net whose
weights have variance sigma_w^2 / fan_in and whose biases have variance sigma_b^2:

- forward: the pre-activation variance q^l = sigma_w^2 E_z[phi(sqrt(q^{l-1}) z)^2] + sigma_b^2,
  z ~ N(0, 1); from the data, q^1(x) = sigma_w,1^2 |x|^2 / fan_in + sigma_b^2 per example;
- backward: chi^l = sigma_w^2 E_z[phi'(sqrt(q^l) z)^2]; the squared backward signal is
  multiplied by chi per layer, its norm by sqrt(chi): 1/2 log10(chi) decades a layer. chi = 1
  is the edge of chaos;
- depth: xi_c = -1 / ln(slope of the correlation map at its fixed point c*); Schoenholz et al.
  found nets train up to about 6 xi_c layers.

The expectations use the closed forms where they exist (the arc-cosine kernel at c = 1 for relu
and leaky relu, Cho & Saul 2009; maxout of two i.i.d. Gaussian pieces keeps E[h^2] = q and
passes the gradient through exactly one piece), else Gauss-Legendre quadrature of the Gaussian
integral on each side of 0, where elu and selu have their kink (Gauss-Hermite over the whole
line loses ~0.5% there), QUADRATURE_NODES a side over 10 standard deviations: relative error
below 1e-9 for q from 0.01 to 500 (tested against adaptive quadrature, and against a
10^6-sample Monte Carlo).

    python -m initlab.theory activation=tanh init=xavier model.depth=50
"""

from __future__ import annotations

import functools
import math
import sys

import numpy as np
import pandas as pd
import torch

from initlab.activations import ACTIVATIONS

QUADRATURE_NODES = 100
# Degree-1 positively homogeneous: phi(a u) = a phi(u) for a > 0, so with sigma_b = 0 the
# correlation map does not depend on q, and its slope at c* = 1 is 1 (q E[phi'^2] = E[phi^2]):
# xi_c is infinite at any sigma_w^2, and depth acts through the scale of q alone (chi per layer).
HOMOGENEOUS = ("relu", "leaky_relu", "vleaky_relu", "maxout")
# sigma_b^2 of each `model.bias_init` (`initlab.models.SeedBatchedNet.initialize`).
BIAS_VARIANCE = {"zero": 0.0, "normal": 1.0}
# Inits the theory does not describe: no random weights of a set variance (zero, constant) or
# weights fitted to the data (rbm).
OUTSIDE_THEORY = ("zero", "constant", "rbm")


@functools.cache
def _nodes(n: int = QUADRATURE_NODES):
    """Nodes and weights of E[f(z)], z ~ N(0, 1): Gauss-Legendre on [-10, 0] and on [0, 10]
    (computed once: an eigenvalue problem, ~3 ms)."""
    x, w = np.polynomial.legendre.leggauss(n)
    x, w = 5 * (x + 1), 5 * w  # [0, 10]
    x, w = np.concatenate([-x[::-1], x]), np.concatenate([w[::-1], w])
    return x, w * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def _phi_and_slope(activation: str, u: np.ndarray, slope: bool = True):
    """phi(u) and phi'(u) (None unless `slope`) of a one-piece activation of the registry, in
    float64 (the slope by autograd)."""
    t = torch.tensor(u, dtype=torch.float64, requires_grad=slope)
    y = ACTIVATIONS[activation].fn(t)
    if not slope:
        return y.numpy(), None
    (grad,) = torch.autograd.grad(y.sum(), t)
    return y.detach().numpy(), grad.numpy()


def moments(activation: str, q, slope: bool = True):
    """(E[phi(sqrt(q) z)^2], E[phi'(sqrt(q) z)^2]) for z ~ N(0, 1), for each q (an array); the
    second is None unless `slope`."""
    q = np.asarray(q, dtype=float)
    act = ACTIVATIONS[activation]
    if activation == "maxout":
        return q.copy(), np.ones_like(q)
    if activation in ("relu", "leaky_relu", "vleaky_relu"):
        kept = (1 + act.negative_slope ** 2) / 2
        return kept * q, np.full_like(q, kept)
    x, w = _nodes()
    u = np.sqrt(q)[..., None] * x
    phi, grad = _phi_and_slope(activation, u, slope)
    return (phi ** 2) @ w, None if grad is None else (grad ** 2) @ w


def weight_variance(init: str, activation: str, fan_in: int, fan_out: int) -> float | None:
    """sigma_w^2 = fan_in * Var(W) of an init (None: outside the theory). LSUV is left to
    `propagate` (it sets q = 1 at every layer)."""
    gain2 = ACTIVATIONS[activation].gain ** 2
    return {
        "uniform": fan_in / 3, "normal": fan_in, "normal_small": fan_in * 1e-4,
        "xavier": 1.0, "lecun_normal": 1.0, "he": 2.0,
        "kaiming_uniform": gain2, "kaiming_normal": gain2,
        "glorot_uniform": gain2 * 2 * fan_in / (fan_in + fan_out),
        "glorot_normal": gain2 * 2 * fan_in / (fan_in + fan_out),
        "orthogonal": gain2 * min(1.0, fan_in / fan_out),
    }.get(init)


def input_moments(x) -> np.ndarray:
    """|x|^2 / fan_in of each example of a batch x (N, ...), the first layer's input."""
    x = np.asarray(x, dtype=float)
    return np.square(x.reshape(len(x), -1)).mean(1)


def propagate(activation: str, init: str, widths: list[int], input_q, bias_variance=0.0):
    """The predicted per-layer table of a net with layer sizes `widths` (input, hidden...,
    output) from inputs whose |x|^2 / fan_in are `input_q` (one value per example): per weight
    layer its sigma_w^2, the mean q (z_std = sqrt(q)), E[h^2], chi (for the hidden layers),
    and log10 of the weight-gradient norm relative to the last layer's (the norm of the outer
    product h_{l-1} delta_l, examples taken alone, without the layers' own sizes: compare
    layers of one shape). None for an init outside the theory."""
    if init in OUTSIDE_THEORY:
        return None
    q_in = np.asarray(input_q, dtype=float)
    layers, h2 = [], q_in  # E[h^2] of the layer's input, per example
    for k, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        last = k == len(widths) - 2
        if init == "lsuv":  # scaled so that each layer's outputs have unit variance
            sigma2 = 1.0 / float(np.mean(h2))
        else:
            sigma2 = weight_variance(init, activation, fan_in, fan_out)
        q = sigma2 * h2 + bias_variance
        out2, slope2 = (q, np.ones_like(q)) if last else moments(activation, q)
        layers.append({"layer": k, "sigma_w2": sigma2, "q": float(np.mean(q)),
                       "z_std": math.sqrt(float(np.mean(q))), "h_in2": float(np.mean(h2)),
                       "slope2": float(np.mean(slope2))})
        h2 = out2
    table = pd.DataFrame(layers)
    # delta_k = (W_{k+1} delta_{k+1}) * phi'(z_k): E[delta_k^2] = chi_k E[delta_{k+1}^2] with
    # chi_k = sigma_{w,k+1}^2 E[phi'^2] (n_{k+1} / fan_in_{k+1} = 1 between hidden layers).
    fan_ratio = np.array(widths[2:], dtype=float) / np.array(widths[1:-1], dtype=float)
    chi = table.sigma_w2.to_numpy()[1:] * table.slope2.to_numpy()[:-1] * fan_ratio
    table["chi"] = np.append(chi, np.nan)
    log_delta2 = np.append(np.cumsum(np.log10(chi)[::-1])[::-1], 0.0)
    table["log10_grad_norm"] = 0.5 * (log_delta2 + np.log10(table.h_in2)
                                      - math.log10(table.h_in2.iloc[-1]))
    return table.drop(columns=["slope2"])


def fixed_point(activation: str, sigma_w2, sigma_b2, q0: float = 1.0, steps: int = 300):
    """q* of the forward map, iterated from q0, for a value or an array of (sigma_w2, sigma_b2);
    inf where it diverges."""
    sigma_w2, sigma_b2 = np.broadcast_arrays(np.asarray(sigma_w2, float),
                                             np.asarray(sigma_b2, float))
    q = np.full(sigma_w2.shape, q0)
    for _ in range(steps):
        new = sigma_w2 * moments(activation, np.minimum(q, 1e12), slope=False)[0] + sigma_b2
        done = np.abs(new - q) <= 1e-12 * np.maximum(1.0, q)
        q = np.where(new > 1e12, np.inf, new)
        if done.all():
            break
    return float(q) if q.ndim == 0 else q


def order_to_chaos(activation: str, sigma_w2, sigma_b2):
    """chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2] at the fixed point: < 1 ordered (gradients
    vanish), > 1 chaotic (they explode), 1 on the edge of chaos."""
    q = fixed_point(activation, sigma_w2, sigma_b2)
    return np.asarray(sigma_w2, float) * moments(activation, np.atleast_1d(q))[1].reshape(
        np.shape(q))


@functools.lru_cache(maxsize=None)
def correlation_depth(activation: str, sigma_w2: float, sigma_b2: float,
                      nodes: int = 41) -> float:
    """xi_c = -1/ln(chi_c), chi_c the slope of the correlation map at its fixed point c*
    (Schoenholz et al. 2017, eqs. 4 and 9): inf on the edge of chaos, and for the HOMOGENEOUS
    activations without biases."""
    if activation in HOMOGENEOUS and sigma_b2 == 0:
        return math.inf
    if ACTIVATIONS[activation].pieces != 1:
        raise ValueError(f"correlation_depth: {activation} has more than one piece")
    q = fixed_point(activation, sigma_w2, sigma_b2)
    if not math.isfinite(q):
        return 0.0
    x, w = _nodes(nodes)
    z1, z2 = np.meshgrid(x, x, indexing="ij")
    weights = np.outer(w, w)
    u1 = math.sqrt(q) * z1
    phi1, slope1 = _phi_and_slope(activation, u1)
    c = 0.5
    for _ in range(300):
        u2 = math.sqrt(q) * (c * z1 + math.sqrt(max(0.0, 1 - c * c)) * z2)
        phi2, _ = _phi_and_slope(activation, u2, slope=False)
        new = (sigma_w2 * float((phi1 * phi2 * weights).sum()) + sigma_b2) / q
        new = min(new, 1.0)
        if abs(new - c) < 1e-10:
            c = new
            break
        c = new
    u2 = math.sqrt(q) * (c * z1 + math.sqrt(max(0.0, 1 - c * c)) * z2)
    _, slope2 = _phi_and_slope(activation, u2)
    chi_c = sigma_w2 * float((slope1 * slope2 * weights).sum())
    return math.inf if abs(chi_c - 1) < 1e-9 else -1.0 / math.log(chi_c)


def main() -> None:
    from initlab.config import load_config
    from initlab.data.prepare import load_split
    from initlab.errors import ConfigError, reported_errors

    with reported_errors():
        cfg = load_config(sys.argv[1:])
    depth, width = cfg.model.depth, cfg.model.width
    features = math.prod(cfg.dataset.image_shape)
    widths = [features] + [width] * (depth - 1) + [cfg.dataset.num_classes]
    # Inputs in [0, 1], not centred: |x|^2 / fan_in of the embedded MNIST subset is ~0.10;
    # the prepared data give the exact value where they exist.
    try:
        x, _ = load_split("train")
        input_q = input_moments(x[:cfg.train.probe_size].numpy())
        source = f"the first {len(input_q)} prepared training images (the probe batch)"
    except ConfigError:  # no prepared data yet: the theory needs none
        input_q, source = np.array([0.1]), "|x|^2 / fan_in = 0.1 (no prepared data found)"
    name, init = cfg.activation.name, cfg.init.name
    bias2 = BIAS_VARIANCE[cfg.model.bias_init]
    table = propagate(name, init, widths, input_q, bias2)
    if table is None:
        print(f"theory: init={init} is outside mean-field theory (no weights of a set "
              "variance, or weights fitted to the data)")
        return
    pd.set_option("display.width", 120)
    print(f"theory: {name} + {init}, {depth} weight layers of width {width}, inputs from "
          f"{source}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    hidden = table.chi.dropna()
    if len(hidden):
        print(f"gradient norm: {0.5 * np.log10(hidden).mean():+.3f} decades a layer "
              f"(mean over hidden layers); first/last hidden: "
              f"{table.log10_grad_norm.iloc[1] - table.log10_grad_norm.iloc[-2]:+.2f} decades")
    sigma2 = float(table.sigma_w2.iloc[1]) if len(table) > 2 else float(table.sigma_w2.iloc[0])
    if name in HOMOGENEOUS or ACTIVATIONS[name].pieces == 1:
        xi = correlation_depth(name, sigma2, bias2)
        print(f"correlation depth xi_c = {xi:.3g} layers: trainable to ~{6 * xi:.3g} layers "
              "(Schoenholz et al. 2017: ~6 xi_c)")


if __name__ == "__main__":
    main()
