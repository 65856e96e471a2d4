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
