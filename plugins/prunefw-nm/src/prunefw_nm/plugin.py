"""The prunefw plugin of prunefw-nm, loaded through the ``prunefw`` entry-point group.

``pyproject.toml`` declares ``[project.entry-points.prunefw] nm = "prunefw_nm.plugin"``;
prunefw imports this module the first time criteria are needed and calls its hook.

Example:
    >>> from prunefw_nm.plugin import prunefw_register_criteria
    >>> [cls.name for cls in prunefw_register_criteria()]
    ['nm']
"""

from __future__ import annotations

from collections.abc import Sequence

import prunefw
from prunefw import PruningCriterion
from prunefw_nm.criterion import NMCriterion

__all__ = ["prunefw_register_criteria"]


@prunefw.hookimpl
def prunefw_register_criteria() -> Sequence[type[PruningCriterion]]:
    """Register :class:`~prunefw_nm.NMCriterion` under the name ``"nm"``.

    Returns:
        ``[NMCriterion]``.
    """
    return [NMCriterion]
