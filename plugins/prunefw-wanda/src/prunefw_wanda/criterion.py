"""Wanda: prune by weights and activations, compared per output row.

Wanda (Sun, Liu, Bair and Kolter, "A Simple and Effective Pruning Approach for Large
Language Models", ICLR 2024, arXiv:2306.11695) scores the weight ``W[i, j]`` of a
linear layer (output ``i``, input feature ``j``) by

    ``S[i, j] = |W[i, j]| * ||X[:, j]||_2``

where ``X`` holds the layer's calibration inputs, one row per token (every leading
dimension of an input of shape ``(..., in_features)`` is a token dimension), so
``||X[:, j]||_2`` is the L2 norm of input feature ``j`` over all calibration tokens.
The weights are then compared **per output row**: in every row ``i``, the
``round(sparsity * in_features)`` entries of lowest score are pruned. With
``pattern="N:M"`` the comparison group is smaller: every run of ``M`` consecutive
input features of a row keeps its ``N`` best entries (N:M semi-structured sparsity,
as in the paper's 2:4 and 4:8 experiments).

**Linear-like layers.** Any module prunefw knows as linear-like (see
:mod:`prunefw.layouts`): ``nn.Linear``, whose weight is stored ``(out_features,
in_features)``, and Hugging Face's ``Conv1D`` (GPT-2), which computes the same
``x @ W + b`` with its weight stored ``(in_features, out_features)``. Scores are
returned in the weight's own storage layout; the layer context hands criteria like
this one the ``(out_features, in_features)`` view, so rows, groups and tie order are
the same for both.

**Calibration.** The criterion uses prunefw's calibration step
(``requires_calibration = True``): ``ctx.prune(calibration_data=batches)`` runs the
batches through the model and the criterion accumulates, per target module, the sum
of squares of every input feature (in float64, on the inputs' device). Scores are
``|W|`` times the square root of those sums, in the weight's dtype promoted to at
least float32.

**Already-pruned entries.** The criterion sees the whole weight and its current mask
(``PRUNING_TYPE = "global"``). ``sparsity`` is a *target* per row (per group with a
pattern), not a fraction of what remains: entries pruned earlier count first, then
the lowest-scored survivors are pruned until the row has ``round(sparsity *
in_features)`` pruned entries (the group ``M - N``). A row or group that already has
more keeps all its survivors; nothing is ever un-pruned (prunefw also multiplies the
result with the previous mask). So applying the criterion twice changes nothing. The
selection is :func:`prunefw.selection.smallest_k_per_row`, shared with prunefw's
``row-magnitude`` criterion and the ``nm`` plugin.

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
import re
import weakref
from dataclasses import dataclass
from typing import Any, NoReturn

import torch
from torch import nn

from prunefw import PruningCriterion
from prunefw.errors import InvalidArgumentError, InvalidTypeError
from prunefw.layouts import (
    WeightLayout,
    default_linear_layers,
    is_module_type,
    out_in_view,
    weight_layout,
)
from prunefw.selection import smallest_k_per_row

__all__ = ["WandaCriterion"]

_PATTERN = re.compile(r"([0-9]+):([0-9]+)")


@dataclass
class _InputStatistics:
    """What calibration recorded for one module."""

    module: weakref.ReferenceType[nn.Module]  # guards against a reused id()
    squared_sum: torch.Tensor  # float64, (in_features,)


class WandaCriterion(PruningCriterion):
    """Prune the lowest ``|W_ij| * ||X_j||_2`` of every output row of a linear-like weight.

    Wanda (Sun et al. 2023, arXiv:2306.11695): the importance of ``W[i, j]`` is its
    magnitude times the L2 norm of input feature ``j`` over all calibration tokens,
    and in every output row exactly ``round(sparsity * in_features)`` entries of
    lowest importance are pruned (Python's ``round``: halves go to the even number,
    as for the built-in criteria). Among equal scores the lower input index is
    pruned first. Entries pruned earlier count towards a row's pruned entries and
    are never un-pruned (see the module docstring).

    **N:M.** With ``pattern="N:M"`` (e.g. ``"2:4"``), every group of ``M``
    consecutive input features of every output row keeps its ``N`` highest scores
    and loses the other ``M - N`` (N:M as in the ``nm`` plugin and NVIDIA's sparse
    tensor cores: ``N`` kept of every ``M``), with the same tie and already-pruned
    rules inside each group. ``sparsity`` is then ``(M - N) / M``: leave it out, or
    give that value. ``in_features`` must be a multiple of ``M``.

    The criterion needs calibration data (``requires_calibration = True``): use it in
    a :class:`~prunefw.LayerPruningContext` with ``model=`` and call
    ``prune(calibration_data=batches)``. It prunes the ``weight`` of linear-like
    modules (:mod:`prunefw.layouts`): ``nn.Linear`` and Hugging Face's ``Conv1D``
    (GPT-2), each in its own storage layout. Its ``PRUNING_TYPE`` is ``"global"``
    (the whole tensor and its mask, as torch defines it), so
    :class:`~prunefw.GlobalPruningContext` refuses it with
    :class:`~prunefw.errors.PruningTypeError`: a ranking across layers would mix the
    activation scales of different layers, while Wanda's per-output comparison is
    what makes it work.

    Args:
        sparsity: The fraction of every row to prune, in ``[0, 1]``. Required
            without ``pattern``; with one, ``None`` (the default) means ``(M - N) / M``.
        pattern: ``"N:M"``, ints with ``0 <= N <= M`` and ``M >= 1``: keep the ``N``
            best of every ``M`` consecutive input features. ``None``: no groups.

    Raises:
        InvalidTypeError: ``sparsity`` is not a real number (bools are refused), or
            missing without a pattern; ``pattern`` is not a string.
        InvalidArgumentError: ``sparsity`` is NaN or outside ``[0, 1]``; ``pattern``
            is not ``"N:M"`` with ``0 <= N <= M``, ``M >= 1``; ``sparsity`` differs
            from the pattern's ``(M - N) / M``.

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

        2:4 Wanda in one call: every group of 4 inputs keeps its 2 best weights.

        >>> two_four = WandaCriterion(pattern="2:4")
        >>> two_four
        WandaCriterion(sparsity=0.5, pattern='2:4')
        >>> layer = nn.Linear(8, 3)
        >>> LayerPruningContext({layer: two_four}, model=layer).prune(calibration_data=batches)
        >>> layer.weight_mask.reshape(3, 2, 4).sum(dim=-1).tolist()
        [[2.0, 2.0], [2.0, 2.0], [2.0, 2.0]]

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

    def __init__(self, sparsity: float | None = None, *, pattern: str | None = None) -> None:
        call = f"WandaCriterion(sparsity={sparsity!r}" + (
            ")" if pattern is None else f", pattern={pattern!r})"
        )
        self.pattern: str | None = None
        self.n: int | None = None
        self.m: int | None = None
        if pattern is None:
            self.sparsity: float = _check_sparsity(sparsity, call)
        else:
            self.n, self.m = _parse_pattern(pattern, call)
            self.pattern = f"{self.n}:{self.m}"
            implied = (self.m - self.n) / self.m
            given = implied if sparsity is None else _check_sparsity(sparsity, call)
            if not math.isclose(given, implied, rel_tol=0.0, abs_tol=1e-9):
                raise InvalidArgumentError(
                    f"{call}: the pattern keeps {self.n} of every {self.m} input features, "
                    f"so its sparsity is {self.m - self.n}/{self.m} = {implied!r}; leave "
                    f"sparsity out or pass sparsity={implied!r}"
                )
            self.sparsity = implied
        self._statistics: dict[int, _InputStatistics] = {}

    # -- calibration -------------------------------------------------------------------

    def reset_calibration(self) -> None:
        """Forget every module's input statistics (called before each calibration run)."""
        self._statistics.clear()

    def observe(self, module: nn.Module, name: str, inputs: tuple[Any, ...], output: Any) -> None:
        """Add the squared input features of one forward call of ``module``.

        Args:
            module: A linear-like target (``nn.Linear``, ``Conv1D``, ...).
            name: The tensor to prune; must be the module's weight (``"weight"``).
            inputs: The positional inputs of the forward call; ``inputs[0]`` is the
                input of shape ``(..., in_features)`` (for every weight layout).
            output: Ignored.

        Raises:
            InvalidTypeError: ``module`` is not linear-like.
            InvalidArgumentError: ``name`` is not its weight, its ``in_features``
                are not a multiple of the pattern's ``M``, or the call had no
                positional input tensor of ``in_features`` features.
        """
        in_features = self._in_features(module, name)
        x = inputs[0] if inputs else None
        if not isinstance(x, torch.Tensor):
            raise InvalidArgumentError(
                f"{self!r} observed {module!r} called without a positional input tensor "
                f"(got {type(x).__name__}); Wanda needs the layer's input activations"
            )
        if x.dim() == 0 or x.shape[-1] != in_features:
            raise InvalidArgumentError(
                f"{self!r} observed {module!r} called with an input of shape "
                f"{tuple(x.shape)}; expected (..., {in_features})"
            )
        tokens = x.detach().reshape(-1, in_features)
        squared = torch.linalg.vector_norm(tokens, dim=0, dtype=torch.float64).square()
        stats = self._statistics.get(id(module))
        if stats is None or stats.module() is not module:
            self._statistics[id(module)] = _InputStatistics(weakref.ref(module), squared)
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
            what = repr(module) if weight_layout(module) is not None else type(module).__name__
            raise InvalidArgumentError(
                f"{self!r} has no calibration statistics for {what}: it was never observed. "
                "Wanda needs the module's input activations: prune it in a context with "
                "model=... and prune(calibration_data=batches), and make sure the batches run "
                "through this module's forward"
            )
        return stats.squared_sum.sqrt()

    # -- scores and masks --------------------------------------------------------------

    def importance_scores(self, module: nn.Module, name: str) -> torch.Tensor:
        """Return ``|W| * ||X_j||_2`` in the weight's own layout.

        The norm of input feature ``j`` multiplies column ``j`` of an ``"out_in"``
        weight (``nn.Linear``, ``(out_features, in_features)``) and row ``j`` of an
        ``"in_out"`` one (``Conv1D``, ``(in_features, out_features)``).

        Args:
            module: An observed linear-like module.
            name: Its weight's name (``"weight"``).

        Returns:
            The scores, of the weight's shape, in the weight's dtype promoted to at
            least float32 (float16/bfloat16 become float32), on the weight's device.

        Raises:
            InvalidTypeError: ``module`` is not linear-like.
            InvalidArgumentError: ``name`` is not its weight, the weight is not 2-D,
                does not match the observed inputs or (with a pattern) has
                ``in_features`` not a multiple of ``M``, or the module was never
                observed.
        """
        in_features = self._in_features(module, name)
        layout = weight_layout(module, name)
        weight: torch.Tensor = getattr(module, name).detach()
        norms = self.input_norms(module)
        if norms.numel() != in_features:
            raise InvalidArgumentError(
                f"{self!r}: the weight of {module!r} has shape {tuple(weight.shape)} "
                f"({in_features} input features), but its observed inputs had {norms.numel()} "
                "features"
            )
        magnitudes = weight.abs()
        dtype = torch.promote_types(magnitudes.dtype, torch.float32)
        norms = norms.to(device=weight.device, dtype=dtype)
        return magnitudes.to(dtype) * (norms if layout == "out_in" else norms.unsqueeze(1))

    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        """Prune the lowest scores of every row (or group) until it has its share.

        Args:
            scores: Wanda scores of the whole weight, ``(out_features,
                in_features)`` (the layer context transposes a ``Conv1D``'s).
            default_mask: The weight's current mask, same shape: entries where it is
                0 are already pruned, count first, and stay pruned.

        Returns:
            A bool keep-mask of ``scores``' shape. Every row has
            ``max(round(sparsity * in_features), already pruned)`` pruned entries;
            with a pattern, every group of ``M`` has ``max(M - N, already pruned)``.

        Raises:
            InvalidArgumentError: ``scores`` is not 2-D, ``default_mask`` has
                another shape, or (with a pattern) ``in_features`` is not a multiple
                of ``M``.

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

            With a pattern, groups of ``M`` inputs are compared, not whole rows:

            >>> WandaCriterion(pattern="1:2").compute_mask(scores, torch.ones(2, 4))
            tensor([[False,  True,  True, False],
                    [ True, False,  True, False]])
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
        if self.m is None:
            k = round(self.sparsity * scores.shape[1])
            return ~smallest_k_per_row(scores, k, default_mask)
        assert self.n is not None
        self._check_groups(scores.shape[1], f"a weight of shape {tuple(scores.shape)}")
        groups = scores.reshape(-1, self.m)
        pruned = smallest_k_per_row(groups, self.m - self.n, default_mask.reshape(-1, self.m))
        return ~pruned.reshape(scores.shape)

    # -- helpers -----------------------------------------------------------------------

    def _in_features(self, module: nn.Module, name: str) -> int:
        """Return the input features of a linear-like ``module.name``, else raise."""
        layout = weight_layout(module, name)
        if layout is None:
            _refuse(self, module, name)
        weight = getattr(module, name)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else weight
            raise InvalidArgumentError(
                f"{self!r} prunes a 2-D weight; {module!r}.{name} is {shape!r}"
            )
        in_features = out_in_view(weight, layout).shape[1]
        self._check_groups(in_features, f"the {name} of {module!r}")
        return in_features

    def _check_groups(self, in_features: int, what: str) -> None:
        """Raise unless ``in_features`` splits into groups of the pattern's ``M``."""
        if self.m is not None and in_features % self.m:
            raise InvalidArgumentError(
                f"{self!r} cannot prune {what}: its {in_features} input features are not a "
                f"multiple of M={self.m}. The {self.pattern} groups run along the input "
                "features of every output row; exclude this tensor or choose another M"
            )

    def config(self) -> dict[str, Any]:
        """Return ``{"sparsity": sparsity}``, plus ``"pattern"`` if one is set."""
        if self.pattern is None:
            return {"sparsity": self.sparsity}
        return {"sparsity": self.sparsity, "pattern": self.pattern}

    def __getstate__(self) -> dict[str, Any]:
        # Calibration statistics are tied to module identities in this process: a copy
        # (copy.deepcopy, pickle) starts without them, like a fresh criterion.
        state = self.__dict__.copy()
        state["_statistics"] = {}
        return state


def _check_sparsity(sparsity: object, call: str) -> float:
    """Return ``sparsity`` as a float in ``[0, 1]`` or raise naming the call."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real):
        hint = " (or give pattern='N:M')" if sparsity is None else ""
        raise InvalidTypeError(
            f"{call}: expected a float in [0, 1]{hint}, got {type(sparsity).__name__}"
        )
    value = float(sparsity)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise InvalidArgumentError(
            f"{call}: must be a fraction in [0, 1] (e.g. 0.5 to prune half of every row)"
        )
    return value


def _parse_pattern(pattern: object, call: str) -> tuple[int, int]:
    """Return ``(N, M)`` from ``"N:M"`` or raise naming the call."""
    if not isinstance(pattern, str):
        raise InvalidTypeError(
            f"{call}: pattern must be a string 'N:M' such as '2:4', got {type(pattern).__name__}"
        )
    match = _PATTERN.fullmatch(pattern.strip())
    if match is None:
        raise InvalidArgumentError(
            f"{call}: pattern must be 'N:M' with two non-negative ints, e.g. '2:4' (keep 2 of "
            "every 4 input features)"
        )
    n, m = int(match[1]), int(match[2])
    if m < 1 or n > m:
        raise InvalidArgumentError(
            f"{call}: pattern {pattern!r} needs M >= 1 and 0 <= N <= M (keep N of every M "
            "input features)"
        )
    return n, m


def _refuse(criterion: WandaCriterion, module: nn.Module, name: str) -> NoReturn:
    """Raise the error for a tensor that is not a linear-like layer's weight."""
    layers = default_linear_layers()
    weights = [t.weight for t in layers.types if is_module_type(module, [t.module_type])]
    if weights:
        raise InvalidArgumentError(
            f"{criterion!r} prunes the 2-D {weights[0]!r} of {module!r}, not {name!r}"
        )
    accepted = ", ".join(f"{t.label} ({_LAYOUT_WORDS[t.weight_layout]})" for t in layers.types)
    raise InvalidTypeError(
        f"{criterion!r} prunes the weight of linear-like layers only; got a "
        f"{type(module).__name__}. Accepted: {accepted}. Wanda weighs the entries of input "
        "feature j by that feature's norm, which needs a linear map of the last input "
        "dimension; exclude this module (or register its type with "
        "prunefw_register_linear_layers)"
    )


_LAYOUT_WORDS: dict[WeightLayout, str] = {
    "out_in": "weight (out_features, in_features)",
    "in_out": "weight (in_features, out_features)",
}
