"""prunefw-nm: N:M semi-structured sparsity for prunefw.

In every group of ``m`` consecutive weights along the input dimension, keep the
``n`` most important and prune the others: 2:4 is the pattern of NVIDIA's sparse
tensor cores and of :func:`torch.sparse.to_sparse_semi_structured`.

The criterion is registered with prunefw under the name ``"nm"`` through the
``prunefw`` entry-point group (module :mod:`prunefw_nm.plugin`); prunefw never
imports this package itself.

Example:
    >>> import prunefw
    >>> from prunefw_nm import NMCriterion
    >>> prunefw.criterion("nm", n=2, m=4)
    NMCriterion(n=2, m=4)
    >>> prunefw.available_criteria()["nm"] is NMCriterion
    True
"""

from prunefw_nm.criterion import NMCriterion

__all__ = ["NMCriterion", "__version__"]

#: The distribution's version (kept equal to ``pyproject.toml`` by a test).
__version__ = "0.1.0"
