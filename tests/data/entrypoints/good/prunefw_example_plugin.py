"""A well-behaved third-party prunefw plugin (test data: the `good` scenario)."""

import torch

from prunefw import PruningCriterion, hookimpl


class ExampleKeepLargest(PruningCriterion):
    """Keep the largest half of the entries by score; prune the floor(n / 2) smallest."""

    name = "example-keep-largest"

    def compute_mask(self, scores, default_mask):
        flat = scores.reshape(-1)
        order = torch.argsort(flat, stable=True)
        keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
        keep[order[: flat.numel() // 2]] = False
        return keep.reshape(scores.shape)


@hookimpl
def prunefw_register_criteria():
    return [ExampleKeepLargest]
