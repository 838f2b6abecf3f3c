"""probgen.ops.shapes: broadcasting and flattening helpers."""

from __future__ import annotations

import pytest
import torch

from probgen.ops import append_dims, batch_mean, batch_sum, event_numel, flatten_event, unflatten_event


def test_append_dims_broadcasts_per_sample_scale():
    s = torch.tensor([1.0, 2.0])
    x = torch.ones(2, 3, 4, 5)
    y = append_dims(s, x.dim()) * x
    assert append_dims(s, 4).shape == (2, 1, 1, 1)
    assert y[1].unique().tolist() == [2.0] and y[0].unique().tolist() == [1.0]
    assert append_dims(s, 1) is not None and append_dims(s, 1).shape == (2,)


def test_append_dims_refuses_fewer_dims():
    with pytest.raises(ValueError, match="more than target_ndim=1"):
        append_dims(torch.ones(2, 3), 1)


def test_batch_sum_and_mean():
    x = torch.arange(24.0).reshape(2, 3, 4)
    torch.testing.assert_close(batch_sum(x), torch.tensor([66.0, 210.0]))
    torch.testing.assert_close(batch_mean(x), torch.tensor([66.0, 210.0]) / 12)
    assert batch_sum(torch.ones(3)).tolist() == [1.0, 1.0, 1.0]


def test_flatten_roundtrip_and_numel():
    x = torch.randn(5, 1, 8, 8)
    flat = flatten_event(x)
    assert flat.shape == (5, 64) and event_numel((1, 8, 8)) == 64 and event_numel(()) == 1
    torch.testing.assert_close(unflatten_event(flat, (1, 8, 8)), x)
    torch.testing.assert_close(flat[2], x[2].reshape(-1))
