"""Training-time data augmentation: `train.augment` -> a function of the seeds' minibatches.

`augment(x, generators) -> x` with x (S, B, C, H, W); seed s draws from its own generator (its
data-order stream), so a seed's augmentations do not depend on the other seeds of the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def none(x: Tensor, generators) -> Tensor:
    return x


def mirror_crop(x: Tensor, generators, pad: int = 4) -> Tensor:
    """Mirror and crop (Krizhevsky et al. 2012; the CIFAR-10 recipe of Mishkin & Matas 2016):
    flip each image left-right with probability 1/2, then cut a random H x W window out of it
    zero-padded by `pad` pixels on every side."""
    seeds, batch, _, height, width = x.shape
    flip = torch.stack([torch.rand(batch, generator=g) < 0.5 for g in generators])
    offset = torch.stack([torch.randint(0, 2 * pad + 1, (batch, 2), generator=g)
                          for g in generators]).to(x.device)
    x = torch.where(flip.to(x.device)[..., None, None, None], x.flip(-1), x)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = offset[..., 0, None] + torch.arange(height, device=x.device)  # (S, B, H)
    cols = offset[..., 1, None] + torch.arange(width, device=x.device)  # (S, B, W)
    crops = padded[torch.arange(seeds, device=x.device)[:, None, None, None],
                   torch.arange(batch, device=x.device)[None, :, None, None], :,
                   rows[..., :, None], cols[..., None, :]]  # (S, B, H, W, C)
    return crops.permute(0, 1, 4, 2, 3)


AUGMENTATIONS = {"none": none, "mirror_crop": mirror_crop}
