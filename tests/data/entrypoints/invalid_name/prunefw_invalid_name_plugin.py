"""A plugin registering a criterion under an invalid name."""

import torch

from prunefw import PruningCriterion, hookimpl


class BadNameCriterion(PruningCriterion):
    name = "Bad Name!"

    def compute_mask(self, scores, default_mask):
        return torch.ones_like(scores, dtype=torch.bool)


@hookimpl
def prunefw_register_criteria():
    return [BadNameCriterion]
