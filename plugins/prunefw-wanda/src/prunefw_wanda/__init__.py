"""prunefw-wanda: the Wanda pruning criterion (weights times activations) for prunefw.

Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language
Models", arXiv:2306.11695) prunes, in every output row of a ``Linear`` weight, the
entries with the lowest ``|W_ij| * ||X_j||_2``, where ``||X_j||_2`` is the norm of
input feature ``j`` over calibration data.

The criterion is registered with prunefw under the name ``"wanda"`` through the
``prunefw`` entry-point group (module :mod:`prunefw_wanda.plugin`); prunefw never
imports this package itself.

Example:
    >>> import prunefw
    >>> from prunefw_wanda import WandaCriterion
    >>> prunefw.criterion("wanda", sparsity=0.5)
    WandaCriterion(sparsity=0.5)
    >>> prunefw.available_criteria()["wanda"] is WandaCriterion
    True
"""

from prunefw_wanda.criterion import WandaCriterion

__all__ = ["WandaCriterion", "__version__"]

#: The distribution's version (kept equal to ``pyproject.toml`` by a test).
__version__ = "0.1.0"
