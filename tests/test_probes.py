"""initlab.probes.sample_std: torch.std's numbers, and exactly 0 where every unit is equal
(finding F1 checks the symmetry of zero-init sigmoid units with `== 0`)."""

from __future__ import annotations

import pytest
import torch

from initlab.probes import sample_std


@pytest.mark.parametrize("dim", [(1, 2), 2])
def test_sample_std_is_torch_std(dim):
    torch.manual_seed(0)
    z = torch.randn(5, 256, 128)
    for t in (3 * z + 1, torch.relu(z), 0.01 * z + 100, torch.sigmoid(10 * z)):
        torch.testing.assert_close(sample_std(t, dim), t.std(dim=dim), rtol=1e-5, atol=0)


def test_sample_std_is_exactly_zero_over_equal_units():
    # Units that compute the same function: equal along the unit axis, not across examples.
    per_example = torch.linspace(0.1, 0.9, 256).view(1, 256, 1)
    h = per_example.expand(5, 256, 128).contiguous()
    assert torch.equal(sample_std(h, 2), torch.zeros(5, 256))
    assert torch.equal(sample_std(torch.full((5, 256, 128), 0.1), (1, 2)), torch.zeros(5))
    assert (sample_std(h, (1, 2)) > 0).all()


def test_batch_norm_is_probed_as_training_sees_it_and_left_as_it_was():
    """At init, eval-mode batch norm is the identity (running mean 0, variance 1); the probes
    run in training mode, so a relu + batch-norm layer's outputs are those of normalized
    pre-activations, and the running averages are the same after the probe as before."""
    from initlab.activations import ACTIVATIONS
    from initlab.models import SeedBatchedMLP
    from initlab.probes import layer_statistics

    torch.manual_seed(0)
    model = SeedBatchedMLP(2, 20, 3, 3, 16, ACTIVATIONS["relu"], batchnorm=True)
    for w in model.weights:
        torch.nn.init.normal_(w, std=5.0)  # pre-activations far from unit variance
    x, y = torch.randn(64, 20) + 3.0, torch.randint(0, 3, (64,))
    before = [b.clone() for b in model.buffers()]
    model.eval()
    stats = layer_statistics(model, x, y)
    assert not model.training
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers()))
    z, _ = model.layer_outputs(x.expand(2, *x.shape))[0]
    normalized = (z - z.mean(1, keepdim=True)) / (z.var(1, unbiased=False, keepdim=True)
                                                 + 1e-5).sqrt()
    torch.testing.assert_close(stats["h_mean"][:, 0], torch.relu(normalized).mean((1, 2)))
    assert (stats["h_mean"][:, 0] - torch.relu(z).mean((1, 2))).abs().min() > 1.0
