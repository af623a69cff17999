"""The prunefw plugin of prunefw-wanda, loaded through the ``prunefw`` entry-point group.

``pyproject.toml`` declares ``[project.entry-points.prunefw] wanda = "prunefw_wanda.plugin"``;
prunefw imports this module the first time criteria are needed and calls its hook.

Example:
    >>> from prunefw_wanda.plugin import prunefw_register_criteria
    >>> [cls.name for cls in prunefw_register_criteria()]
    ['wanda']
"""

from __future__ import annotations

from collections.abc import Sequence

import prunefw
from prunefw import PruningCriterion
from prunefw_wanda.criterion import WandaCriterion

__all__ = ["prunefw_register_criteria"]


@prunefw.hookimpl
def prunefw_register_criteria() -> Sequence[type[PruningCriterion]]:
    """Register :class:`~prunefw_wanda.WandaCriterion` under the name ``"wanda"``.

    Returns:
        ``[WandaCriterion]``.
    """
    return [WandaCriterion]
