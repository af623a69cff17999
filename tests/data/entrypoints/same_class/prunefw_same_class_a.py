"""Same-class scenario, distribution a: defines and registers SharedCriterion."""

import torch

from prunefw import PruningCriterion, hookimpl


class SharedCriterion(PruningCriterion):
    name = "same-class"

    def compute_mask(self, scores, default_mask):
        return torch.ones_like(scores, dtype=torch.bool)


@hookimpl
def prunefw_register_criteria():
    return [SharedCriterion]
