"""initlab.optim: torch.optim's numbers, without torch.optim.Optimizer's torch._dynamo import."""

import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from initlab.optim import OPTIMIZERS, StepDecay


def _train(make_optimizer, make_schedule, steps=12):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(3, 8, 4))
    b = torch.nn.Parameter(torch.zeros(3, 1, 4))
    x, target = torch.randn(3, 16, 8), torch.randn(3, 16, 4)
    optimizer = make_optimizer([w, b])
    schedule = make_schedule(optimizer)
    for _ in range(steps):
        optimizer.zero_grad()
        ((torch.baddbmm(b, x, w) - target) ** 2).mean().backward()
        optimizer.step()
        schedule.step()
    return w.detach(), b.detach()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_updates_equal_torch_optim_bit_for_bit(name):
    cfg = OmegaConf.create({"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3,
                            "milestones": [4, 9], "gamma": 0.1})
    reference = {"sgd": lambda p: torch.optim.SGD(p, lr=cfg.lr, momentum=cfg.momentum,
                                                  weight_decay=cfg.weight_decay),
                 "adam": lambda p: torch.optim.Adam(p, lr=cfg.lr,
                                                    weight_decay=cfg.weight_decay)}[name]
    ours = _train(lambda p: OPTIMIZERS[name](p, cfg), lambda o: StepDecay(o, cfg))
    theirs = _train(reference, lambda o: torch.optim.lr_scheduler.MultiStepLR(
        o, list(cfg.milestones), cfg.gamma))
    for mine, torchs in zip(ours, theirs):
        assert torch.equal(mine, torchs)


def test_a_training_step_does_not_import_dynamo():
    code = """import sys, torch
from omegaconf import OmegaConf
from initlab.optim import OPTIMIZERS, StepDecay
cfg = OmegaConf.create({"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "milestones": [1],
                        "gamma": 0.1})
for name in OPTIMIZERS:
    w = torch.nn.Parameter(torch.ones(2))
    optimizer = OPTIMIZERS[name]([w], cfg)
    (w ** 2).sum().backward()
    optimizer.step()
    StepDecay(optimizer, cfg).step()
    assert optimizer.lr < cfg.lr and not torch.equal(w, torch.ones(2))
print("torch._dynamo" in sys.modules)"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"
