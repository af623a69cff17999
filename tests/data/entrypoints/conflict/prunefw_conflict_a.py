"""Conflict scenario, distribution prunefw-conflict-a: registers its own 'shared-name'."""

import torch

from prunefw import PruningCriterion, hookimpl


class ConflictACriterion(PruningCriterion):
    name = "shared-name"

    def compute_mask(self, scores, default_mask):
        return torch.ones_like(scores, dtype=torch.bool)


@hookimpl
def prunefw_register_criteria():
    return [ConflictACriterion]
