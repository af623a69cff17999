"""What ``calibration_data`` may be: token-id tensors are one batch, dicts are keyword args."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunefw import LayerPruningContext, PruningCriterion
from prunefw.calibration import calibration_batches
from prunefw.errors import InvalidArgumentError


class ShapeRecorder(PruningCriterion):
    """Records the input shape of every observed forward call; prunes nothing."""

    name = "test-shape-recorder"
    requires_calibration = True

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def reset_calibration(self) -> None:
        self.shapes.clear()

    def observe(self, module, name, inputs, output):
        self.shapes.append(tuple(inputs[0].shape))

    def compute_mask(self, scores, default_mask):
        return torch.ones_like(default_mask)


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 10)

    def forward(self, input_ids, attention_mask=None):
        hidden = self.embed(input_ids)
        if attention_mask is not None:
            hidden = hidden * attention_mask[..., None]
        return self.proj(hidden)


def shapes(data) -> list[tuple[int, ...]]:
    model = TinyLM()
    crit = ShapeRecorder()
    LayerPruningContext({"proj": crit}, model=model).prune(calibration_data=data)
    return crit.shapes


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_a_2d_integer_tensor_is_one_batch(dtype):
    assert shapes(torch.zeros(3, 5, dtype=dtype)) == [(3, 5, 4)]


def test_other_tensors_iterate_along_dim_0_as_before():
    assert shapes(torch.zeros(2, 3, 5, dtype=torch.long)) == [(3, 5, 4), (3, 5, 4)]
    assert shapes(torch.zeros(3, dtype=torch.long)) == [(4,), (4,), (4,)]  # one token each
    floats = torch.zeros(2, 4)
    assert calibration_batches(floats) is floats  # a float tensor: rows, as any iterable
    flags = torch.zeros(2, 4, dtype=torch.bool)
    assert calibration_batches(flags) is flags


def test_a_list_of_dicts_passes_keyword_arguments():
    data = [
        {"input_ids": torch.zeros(1, 6, dtype=torch.long), "attention_mask": torch.ones(1, 6)},
        {"input_ids": torch.zeros(2, 3, dtype=torch.long)},
    ]
    assert shapes(data) == [(1, 6, 4), (2, 3, 4)]


def test_an_empty_token_tensor_is_no_batch():
    with pytest.raises(InvalidArgumentError, match="calibration_data was empty"):
        shapes(torch.zeros(0, 5, dtype=torch.long))
