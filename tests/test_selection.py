"""Exact k-selection: the radix path for large vectors agrees with a stable sort."""

from __future__ import annotations

import pytest
import torch

from prunefw import selection as _selection
from prunefw.selection import float_keys, largest_k, smallest_k

N = _selection._KTHVALUE_MAX + 12_345  # just past the switch to the radix path


def reference_smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    order = torch.sort(values.double(), stable=True).indices[:k]
    mask = torch.zeros(values.numel(), dtype=torch.bool)
    mask[order] = True
    return mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k", [1, 777, N // 2, N - 1])
def test_radix_path_matches_stable_sort_with_ties_and_signs(dtype, k):
    gen = torch.Generator().manual_seed(k)
    values = (torch.randn(N, generator=gen) * 4).round() / 4  # heavy ties, negatives
    values[::97] = -0.0  # both signs of zero are one value
    values = values.to(dtype)
    assert torch.equal(smallest_k(values, k), reference_smallest(values, k))


def test_radix_and_kthvalue_paths_agree(monkeypatch):
    gen = torch.Generator().manual_seed(1)
    values = torch.rand(N, generator=gen).round(decimals=3)
    radix = smallest_k(values, 400_000)
    monkeypatch.setattr(_selection, "_KTHVALUE_MAX", N + 1)
    assert torch.equal(radix, smallest_k(values, 400_000))
    assert torch.equal(~largest_k(values, N - 400_000), radix)


def test_float_keys_order_like_the_floats():
    values = torch.tensor([-float("inf"), -2.5, -1e-30, -0.0, 0.0, 1e-30, 3.0, float("inf")])
    keys = float_keys(values.clone(), 32, non_negative=False)
    assert torch.equal(keys.argsort(stable=True), torch.arange(8))
    assert int(keys[3]) == int(keys[4])
    keys64 = float_keys(values.double(), 64, non_negative=False)
    assert bool((keys64[1:] >= keys64[:-1]).all())
