"""Wanda: prune by weights and activations, compared per output row.

Wanda (Sun, Liu, Bair and Kolter, "A Simple and Effective Pruning Approach for Large
Language Models", ICLR 2024, arXiv:2306.11695) scores the weight ``W[i, j]`` of a
``Linear`` layer by

    ``S[i, j] = |W[i, j]| * ||X[:, j]||_2``

where ``X`` holds the layer's calibration inputs, one row per token (every leading
dimension of an input of shape ``(..., in_features)`` is a token dimension), so
``||X[:, j]||_2`` is the L2 norm of input feature ``j`` over all calibration tokens.
The weights are then compared **per output row**: in every row ``i``, the
``round(sparsity * in_features)`` entries of lowest score are pruned.

**Calibration.** The criterion uses prunefw's calibration step
(``requires_calibration = True``): ``ctx.prune(calibration_data=batches)`` runs the
batches through the model and the criterion accumulates, per target module, the sum
of squares of every input feature (in float64, on the inputs' device). Scores are
``|W|`` times the square root of those sums, in the weight's dtype promoted to at
least float32.

**Already-pruned entries.** The criterion sees the whole weight and its current mask
(``PRUNING_TYPE = "global"``). ``sparsity`` is a *target* per row, not a fraction of
what remains: entries pruned earlier count first, then the lowest-scored survivors
are pruned until the row has ``round(sparsity * in_features)`` pruned entries. A row
that already has more keeps all its survivors; nothing is ever un-pruned (prunefw
also multiplies the result with the previous mask). So applying the criterion twice
changes nothing.

**Why not the global context.** Per-row comparison needs the tensor's shape, which
torch gives only to ``"global"`` pruning methods; :class:`~prunefw.GlobalPruningContext`
(torch's ``global_unstructured``) takes only ``"unstructured"`` criteria and refuses
this one with :class:`~prunefw.errors.PruningTypeError`. That refusal is the right
answer, not a gap: ranking Wanda scores across layers would compare activation norms
of different layers, whose scales have nothing to do with each other, and the paper
shows the per-output comparison is what makes Wanda work.
"""

from __future__ import annotations

import math
import numbers
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunefw import PruningCriterion
from prunefw.errors import InvalidArgumentError, InvalidTypeError

__all__ = ["WandaCriterion"]


@dataclass
class _InputStatistics:
    """What calibration recorded for one module."""

    module: weakref.ReferenceType[nn.Module]  # guards against a reused id()
    squared_sum: torch.Tensor  # float64, (in_features,)


class WandaCriterion(PruningCriterion):
    """Prune the lowest ``|W_ij| * ||X_j||_2`` of every output row of a Linear weight.

    Wanda (Sun et al. 2023, arXiv:2306.11695): the importance of ``W[i, j]`` is its
    magnitude times the L2 norm of input feature ``j`` over all calibration tokens,
    and in every output row exactly ``round(sparsity * in_features)`` entries of
    lowest importance are pruned (Python's ``round``: halves go to the even number,
    as for the built-in criteria). Among equal scores the lower index is pruned
    first. Entries pruned earlier count towards a row's pruned entries and are never
    un-pruned (see the module docstring).

    The criterion needs calibration data (``requires_calibration = True``): use it in
    a :class:`~prunefw.LayerPruningContext` with ``model=`` and call
    ``prune(calibration_data=batches)``. Only the ``weight`` of ``nn.Linear`` modules
    (and subclasses) can be pruned. Its ``PRUNING_TYPE`` is ``"global"`` (the whole
    tensor and its mask, as torch defines it), so
    :class:`~prunefw.GlobalPruningContext` refuses it with
    :class:`~prunefw.errors.PruningTypeError`: a ranking across layers would mix the
    activation scales of different layers, while Wanda's per-output comparison is
    what makes it work.

    Args:
        sparsity: The fraction of every row to prune, in ``[0, 1]``.

    Raises:
        InvalidTypeError: ``sparsity`` is not a real number (bools are refused).
        InvalidArgumentError: ``sparsity`` is NaN or outside ``[0, 1]``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from prunefw import LayerPruningContext
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
        >>> batches = [torch.randn(32, 8) for _ in range(4)]
        >>> crit = WandaCriterion(sparsity=0.5)
        >>> LayerPruningContext({"0": crit, "2": crit}, model=model).prune(
        ...     calibration_data=batches
        ... )
        >>> (model[0].weight_mask == 0).sum(dim=1).unique().tolist()  # 4 of 8 per row
        [4]
        >>> (model[2].weight_mask == 0).sum(dim=1).unique().tolist()  # 8 of 16 per row
        [8]

        Equal weights: the input feature with the smallest activations goes first.

        >>> layer = nn.Linear(3, 2)
        >>> with torch.no_grad():
        ...     _ = layer.weight.fill_(1.0)
        >>> x = torch.randn(64, 3) * torch.tensor([10.0, 0.01, 1.0])
        >>> LayerPruningContext({layer: WandaCriterion(1 / 3)}, model=layer).prune(
        ...     calibration_data=[x]
        ... )
        >>> layer.weight_mask
        tensor([[1., 0., 1.],
                [1., 0., 1.]])

        The global context refuses it:

        >>> from prunefw import GlobalPruningContext
        >>> GlobalPruningContext(model, [crit])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        prunefw.errors.PruningTypeError: WandaCriterion(sparsity=0.5) has PRUNING_TYPE ...
    """

    name = "wanda"
    PRUNING_TYPE = "global"
    requires_calibration = True

    def __init__(self, sparsity: float) -> None:
        if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real):
            raise InvalidTypeError(
                f"WandaCriterion(sparsity={sparsity!r}): expected a float in [0, 1], got "
                f"{type(sparsity).__name__}"
            )
        value = float(sparsity)
        if math.isnan(value) or not 0.0 <= value <= 1.0:
            raise InvalidArgumentError(
                f"WandaCriterion(sparsity={sparsity!r}): must be a fraction in [0, 1] "
                "(e.g. 0.5 to prune half of every row)"
            )
        self.sparsity: float = value
        self._statistics: dict[int, _InputStatistics] = {}

    # -- calibration -------------------------------------------------------------------

    def reset_calibration(self) -> None:
        """Forget every module's input statistics (called before each calibration run)."""
        self._statistics.clear()

    def observe(self, module: nn.Module, name: str, inputs: tuple[Any, ...], output: Any) -> None:
        """Add the squared input features of one forward call of ``module``.

        Args:
            module: A ``nn.Linear`` target.
            name: The tensor to prune; must be ``"weight"``.
            inputs: The positional inputs of the forward call; ``inputs[0]`` is the
                input of shape ``(..., in_features)``.
            output: Ignored.

        Raises:
            InvalidTypeError: ``module`` is not a ``nn.Linear``.
            InvalidArgumentError: ``name`` is not ``"weight"``, or the call had no
                positional input tensor of ``in_features`` features.
        """
        linear = self._check_target(module, name)
        x = inputs[0] if inputs else None
        if not isinstance(x, torch.Tensor):
            raise InvalidArgumentError(
                f"{self!r} observed {linear!r} called without a positional input tensor "
                f"(got {type(x).__name__}); Wanda needs the layer's input activations"
            )
        if x.dim() == 0 or x.shape[-1] != linear.in_features:
            raise InvalidArgumentError(
                f"{self!r} observed {linear!r} called with an input of shape "
                f"{tuple(x.shape)}; expected (..., {linear.in_features})"
            )
        tokens = x.detach().reshape(-1, linear.in_features)
        squared = torch.linalg.vector_norm(tokens, dim=0, dtype=torch.float64).square()
        stats = self._statistics.get(id(linear))
        if stats is None or stats.module() is not linear:
            self._statistics[id(linear)] = _InputStatistics(weakref.ref(linear), squared)
        else:
            stats.squared_sum = stats.squared_sum + squared.to(stats.squared_sum.device)

    def input_norms(self, module: nn.Module) -> torch.Tensor:
        """Return ``||X_j||_2`` for every input feature ``j`` of an observed module.

        Args:
            module: A module this criterion observed during calibration.

        Returns:
            A float64 tensor of shape ``(in_features,)``.

        Raises:
            InvalidArgumentError: The module was never observed since the last
                :meth:`reset_calibration` (e.g. no calibration ran, or the batches do
                not run through it).

        Example:
            >>> import torch
            >>> from torch import nn
            >>> crit, layer = WandaCriterion(0.5), nn.Linear(2, 1)
            >>> crit.observe(layer, "weight", (torch.tensor([[3.0, 1.0], [4.0, 0.0]]),), None)
            >>> crit.input_norms(layer)
            tensor([5., 1.], dtype=torch.float64)
        """
        stats = self._statistics.get(id(module))
        if stats is None or stats.module() is not module:
            what = repr(module) if isinstance(module, nn.Linear) else type(module).__name__
            raise InvalidArgumentError(
                f"{self!r} has no calibration statistics for {what}: it was never observed. "
                "Wanda needs the module's input activations: prune it in a context with "
                "model=... and prune(calibration_data=batches), and make sure the batches run "
                "through this module's forward"
            )
        return stats.squared_sum.sqrt()

    # -- scores and masks --------------------------------------------------------------

    def importance_scores(self, module: nn.Module, name: str) -> torch.Tensor:
        """Return ``|W| * ||X_j||_2`` (broadcast over the rows) for a Linear weight.

        Args:
            module: An observed ``nn.Linear``.
            name: Must be ``"weight"``.

        Returns:
            The scores, of the weight's shape, in the weight's dtype promoted to at
            least float32 (float16/bfloat16 become float32), on the weight's device.

        Raises:
            InvalidTypeError: ``module`` is not a ``nn.Linear``.
            InvalidArgumentError: ``name`` is not ``"weight"``, the weight is not 2-D
                or does not match the observed inputs, or the module was never
                observed.
        """
        linear = self._check_target(module, name)
        weight: torch.Tensor = getattr(linear, name).detach()
        norms = self.input_norms(linear)
        if weight.dim() != 2 or weight.shape[1] != norms.numel():
            raise InvalidArgumentError(
                f"{self!r}: the weight of {linear!r} has shape {tuple(weight.shape)}, but its "
                f"observed inputs had {norms.numel()} features; expected a 2-D weight of shape "
                f"(out_features, {norms.numel()})"
            )
        magnitudes = weight.abs()
        dtype = torch.promote_types(magnitudes.dtype, torch.float32)
        return magnitudes.to(dtype) * norms.to(device=weight.device, dtype=dtype)

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        """Prune the lowest scores of every row until it has its share of pruned entries.

        Args:
            scores: Wanda scores of the whole weight, shape ``(out_features,
                in_features)``.
            default_mask: The weight's current mask, same shape: entries where it is
                0 are already pruned, count first, and stay pruned.

        Returns:
            A bool keep-mask of ``scores``' shape. Every row has
            ``max(round(sparsity * in_features), already pruned)`` pruned entries.

        Raises:
            InvalidArgumentError: ``scores`` is not 2-D, or ``default_mask`` has
                another shape.

        Example:
            >>> import torch
            >>> crit = WandaCriterion(0.5)
            >>> scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [4.0, 3.0, 2.0, 1.0]])
            >>> crit.compute_mask(scores, torch.ones(2, 4))
            tensor([[False,  True,  True, False],
                    [ True,  True, False, False]])

            An entry pruned before counts towards its row's share:

            >>> crit.compute_mask(scores, torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 1]]))
            tensor([[False,  True,  True, False],
                    [ True,  True, False, False]])
            >>> crit.compute_mask(scores, torch.tensor([[1.0, 0, 1, 1], [1, 1, 1, 1]]))
            tensor([[False, False,  True,  True],
                    [ True,  True, False, False]])
        """
        if scores.dim() != 2:
            raise InvalidArgumentError(
                f"{self!r} compares weights per output row and needs the whole 2-D weight "
                f"(out_features, in_features); got scores of shape {tuple(scores.shape)}"
            )
        if default_mask.shape != scores.shape:
            raise InvalidArgumentError(
                f"{self!r}: default_mask has shape {tuple(default_mask.shape)}, scores have "
                f"shape {tuple(scores.shape)}"
            )
        alive = default_mask != 0
        keep = alive.clone()
        k = round(self.sparsity * scores.shape[1])
        if k == 0 or scores.numel() == 0:
            return keep
        # Ascending by score; stable, so among equal scores the lower index comes first.
        order = torch.sort(scores, dim=1, stable=True).indices
        if not bool(alive.all()):
            # Then stably by survival: already-pruned entries move in front of every
            # survivor (they use up the row's share first), survivors keep score order.
            survives = alive.gather(1, order).to(torch.uint8)
            by_survival = torch.sort(survives, dim=1, stable=True).indices
            order = order.gather(1, by_survival)
        keep.scatter_(1, order[:, :k], False)
        return keep

    # -- helpers -----------------------------------------------------------------------

    def _check_target(self, module: nn.Module, name: str) -> nn.Linear:
        """Return ``module`` if it is a Linear pruned at ``weight``, else raise."""
        if not isinstance(module, nn.Linear):
            raise InvalidTypeError(
                f"{self!r} prunes the weight of nn.Linear layers only; got a "
                f"{type(module).__name__}. Wanda weighs column j of a (out_features, "
                "in_features) weight by the norm of input feature j; exclude this module"
            )
        if name != "weight":
            raise InvalidArgumentError(
                f"{self!r} prunes the 2-D 'weight' of {module!r}, not {name!r}"
            )
        return module

    def config(self) -> dict[str, Any]:
        """Return ``{"sparsity": sparsity}``."""
        return {"sparsity": self.sparsity}

    def __getstate__(self) -> dict[str, Any]:
        # Calibration statistics are tied to module identities in this process: a copy
        # (copy.deepcopy, pickle) starts without them, like a fresh criterion.
        state = self.__dict__.copy()
        state["_statistics"] = {}
        return state
