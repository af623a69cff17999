"""Conflict scenario, distribution prunefw-conflict-b: registers its own 'shared-name'."""

import torch

from prunefw import PruningCriterion, hookimpl


class ConflictBCriterion(PruningCriterion):
    name = "shared-name"

    def compute_mask(self, scores, default_mask):
        return torch.ones_like(scores, dtype=torch.bool)


@hookimpl
def prunefw_register_criteria():
    return [ConflictBCriterion]
