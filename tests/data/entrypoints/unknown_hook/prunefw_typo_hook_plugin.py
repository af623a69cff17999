"""A plugin with a typo in its hook name (prunefw_register_criterias)."""

import torch

from prunefw import PruningCriterion, hookimpl


class TypoCriterion(PruningCriterion):
    name = "typo-criterion"

    def compute_mask(self, scores, default_mask):
        return torch.ones_like(scores, dtype=torch.bool)


@hookimpl
def prunefw_register_criterias():
    return [TypoCriterion]
