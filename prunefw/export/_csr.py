"""Sparse kernels: very sparse ``nn.Linear`` layers as ``torch.sparse_csr`` matmuls (inference)."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ._errors import ExportError
from ._state import _join

#: The weight sparsity from which torch's CSR matmul beat the dense one for batches of 8
#: and 128 rows (4096 x 4096 float32 weight, CPU, 1 and 2 threads) in
#: ``benchmarks/sparse_kernels.py`` (see docs/deploy.md). Below it CSR was slower at
#: every batch size; for a single row (token-by-token decoding) it was slower at every
#: sparsity with 2 threads.
CSR_MIN_SPARSITY = 0.9


class CsrLinear(nn.Module):
    """An inference-only ``nn.Linear`` whose weight is a ``torch.sparse_csr`` tensor.

    ``forward`` computes ``x @ W.T + b`` with :func:`torch.sparse.mm`. The weight is a
    buffer (no gradient); ``state_dict`` holds it in the CSR layout, which
    ``torch.save`` stores and safetensors does not.

    Args:
        weight: The dense ``(out_features, in_features)`` weight; its zeros are dropped.
        bias: The bias, or ``None``.

    Example:
        >>> import torch
        >>> layer = CsrLinear(torch.tensor([[0.0, 2.0], [1.0, 0.0]]), torch.tensor([0.5, 0.0]))
        >>> layer(torch.tensor([[1.0, 1.0]]))
        tensor([[2.5000, 1.0000]])
    """

    weight: torch.Tensor

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            self.register_buffer("weight", weight.detach().to_sparse_csr())
        self.bias = (
            None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x @ W.T + b`` for ``x`` of shape ``(..., in_features)``."""
        flat = x.reshape(-1, self.in_features)
        y = torch.sparse.mm(self.weight, flat.T).T
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        """Sizes, bias and the weight's sparsity."""
        nnz = self.weight._nnz()
        sparsity = 1 - nnz / (self.in_features * self.out_features)
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, sparsity={sparsity:.2%}"
        )


def to_sparse_csr(model: nn.Module, *, min_sparsity: float = CSR_MIN_SPARSITY) -> list[str]:
    """Replace the very sparse float32 ``nn.Linear`` layers of ``model`` by :class:`CsrLinear`.

    Only where the benchmark showed a gain: an ``nn.Linear`` on the CPU, in float32,
    whose weight (after pruning: ``orig * mask``) has at least ``min_sparsity`` zeros,
    for inputs of several rows (batches or prompts of 8 tokens and more). Below
    :data:`CSR_MIN_SPARSITY` torch's CSR matmul was slower than dense on this CPU at
    every batch size measured, so other layers stay as they are; for one row at a time
    (decoding) it was slower even at 95% with 2 threads: keep such models dense. For
    inference only: the converted layers have no trainable weight and their pruning
    masks are gone (the zeros are the layout).

    Args:
        model: The model; its layers are replaced in place.
        min_sparsity: Convert layers with at least this fraction of zero weights.

    Returns:
        The qualified names of the layers replaced.

    Raises:
        ExportError: ``min_sparsity`` is not in ``[0, 1]``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
        >>> with torch.no_grad():
        ...     _ = model[0].weight.masked_fill_(torch.rand(64, 64) < 0.95, 0.0)
        >>> x = torch.randn(3, 64)
        >>> expected = model(x)
        >>> to_sparse_csr(model)
        ['0']
        >>> torch.allclose(model(x), expected, atol=1e-6)
        True
    """
    if not isinstance(min_sparsity, (int, float)) or not 0.0 <= min_sparsity <= 1.0:
        raise ExportError(f"to_sparse_csr(min_sparsity={min_sparsity!r}): expected [0, 1]")
    todo: list[tuple[str, nn.Module, str, nn.Linear]] = []
    for name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            if type(child) is not nn.Linear:
                continue
            weight = child.weight.detach()
            if weight.dtype != torch.float32 or weight.device.type != "cpu":
                continue
            if float((weight == 0).sum()) / weight.numel() >= min_sparsity:
                todo.append((_join(name, child_name), parent, child_name, child))
    for _, parent, child_name, child in todo:
        bias = child.bias.detach() if isinstance(child.bias, torch.Tensor) else None
        setattr(parent, child_name, CsrLinear(child.weight.detach(), bias))
    return [label for label, _, _, _ in todo]
