"""Global pruning: one criterion decision over all selected tensors at once."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.nn.utils import prune

from prunefw.contexts.base import PruningContext, PruningStep, as_criteria, importance_scores
from prunefw.contexts.streaming import prune_streaming
from prunefw.criteria.base import PruningCriterion
from prunefw.errors import InvalidArgumentError, PruningTypeError, add_note
from prunefw.reparametrization import mask_name, mask_of, release_mask_reference
from prunefw.targets import PruningTarget, select_targets

__all__ = ["STRATEGIES", "GlobalPruningContext", "check_global_criterion", "check_strategy"]

#: The global strategies: torch's ``global_unstructured`` (default) and streaming.
STRATEGIES = ("global_unstructured", "streaming")


def check_strategy(strategy: object) -> str:
    """Return ``strategy`` if it is one of :data:`STRATEGIES`.

    Raises:
        InvalidArgumentError: Any other value (the message lists the valid ones).
    """
    if strategy not in STRATEGIES:
        raise InvalidArgumentError(
            f"GlobalPruningContext(strategy={strategy!r}): expected one of "
            f"{', '.join(map(repr, STRATEGIES))}"
        )
    return str(strategy)


def check_global_criterion(criterion: PruningCriterion, strategy: str) -> None:
    """Check that ``criterion`` can be applied globally with ``strategy``.

    The rules of :class:`GlobalPruningContext`, also used to check recipes before
    any model exists.

    Raises:
        PruningTypeError: The criterion is not ``"unstructured"``.
        InvalidArgumentError: ``strategy`` is ``"streaming"`` and the criterion does
            not :meth:`~prunefw.PruningCriterion.supports_streaming`.
    """
    if criterion.PRUNING_TYPE != "unstructured":
        raise PruningTypeError(
            f"{criterion!r} has PRUNING_TYPE {criterion.PRUNING_TYPE!r}; global pruning "
            "(torch's global_unstructured) only takes 'unstructured' criteria. "
            "Use LayerPruningContext for it."
        )
    if strategy == "streaming" and not criterion.supports_streaming():
        raise InvalidArgumentError(
            f"{criterion!r} does not support strategy='streaming': it does not define "
            "rank_selection(); use the default strategy 'global_unstructured'"
        )


@contextlib.contextmanager
def _contiguous(targets: Sequence[PruningTarget]) -> Iterator[None]:
    """Give every target a contiguous layout (same values) for ``global_unstructured``.

    torch flattens the tensors and their masks with ``view(-1)``, which fails on a
    transposed (non-contiguous) weight. A Parameter's data is replaced by a contiguous
    copy (the same Parameter object), restored if the block raises; masks and
    recomputed attributes are replaced too (the rollback restores those).
    """
    changed: list[tuple[nn.Parameter, torch.Tensor]] = []
    try:
        for target in targets:
            module, name = target.module, target.name
            tensor = getattr(module, name)
            if isinstance(tensor, nn.Parameter) and not tensor.is_contiguous():
                changed.append((tensor, tensor.data))
                tensor.data = tensor.data.contiguous()
            elif not tensor.is_contiguous():
                setattr(module, name, tensor.contiguous())
            mask = mask_of(module, name)
            if mask is not None and not mask.is_contiguous():
                module._buffers[mask_name(name)] = mask.contiguous()
        yield
    except BaseException:
        for param, data in changed:
            param.data = data
        raise


class GlobalPruningContext(PruningContext):
    """Prune the tensors of a model together, with one or more unstructured criteria.

    Each criterion is dispatched to :func:`torch.nn.utils.prune.global_unstructured`
    with the criterion's ``PruningMethod`` adapter: the entries of all selected
    tensors are ranked together (so layers end up with different sparsities), and
    every tensor gets torch's native reparametrization (``weight_orig``,
    ``weight_mask``, forward pre-hook), so :func:`torch.nn.utils.prune.is_pruned`
    and :func:`torch.nn.utils.prune.remove` work. Criteria apply in order, each on
    the entries still unpruned (torch's ``PruningContainer`` semantics): two
    ``amount=0.5`` criteria prune 75%.

    Which tensors: by default ``weight`` of every linear-like module (``Linear``,
    Hugging Face's ``Conv1D`` and what plugins register, see :mod:`prunefw.layouts`),
    ``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d`` module, but not embeddings, and
    not the output head a model declares with ``get_output_embeddings()`` (Hugging
    Face's ``lm_head``: LLM pruning leaves it dense) unless ``include_output_head``.
    Narrow it with ``module_types``, ``include`` and ``exclude`` (globs on qualified
    module names, e.g. ``"features.*"``), choose another tensor with
    ``tensor_name``, or give explicit ``parameters``. A Parameter shared by several
    modules (tied weights) is ranked once and all its places get one mask.

    Args:
        model: The model to prune.
        criteria: One criterion or a list of them (all ``"unstructured"``).
        parameters: Explicit ``(module, tensor name)`` pairs; excludes the
            selection arguments below.
        module_types: Module classes, or class names such as ``"Linear"`` (matched
            by :func:`~prunefw.targets.is_module_type`, never imported), to select
            (default: Linear and convolutions).
        include: Glob(s) a module's qualified name must match (default: any).
        exclude: Glob(s) that remove matching modules.
        tensor_name: The tensor to prune in selected modules (default ``"weight"``).
        include_output_head: Also select the model's output head (see above).
        strategy: ``"global_unstructured"`` (default): each criterion runs inside
            :func:`torch.nn.utils.prune.global_unstructured`. ``"streaming"``: for
            criteria with a :meth:`~prunefw.PruningCriterion.rank_selection` (all
            built-ins), the exact global thresholds are found without concatenating
            the model, then each tensor is pruned with
            :func:`torch.nn.utils.prune.custom_from_mask` (see
            :mod:`prunefw.contexts.streaming`); much faster and leaner on large
            models, same masks for magnitude and percentile.

    Raises:
        PruningTypeError: A criterion is not ``"unstructured"``.
        TargetError: No tensor selected, a tensor listed twice, a missing tensor.
        InvalidTypeError: Arguments of the wrong type.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from prunefw import GlobalPruningContext, MagnitudeCriterion, sparsity_report
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
        >>> GlobalPruningContext(model, [MagnitudeCriterion(amount=0.75)]).prune()
        >>> round(sparsity_report(model, pruned_only=True).sparsity, 2)
        0.75
    """

    def __init__(
        self,
        model: nn.Module,
        criteria: PruningCriterion | Sequence[PruningCriterion],
        *,
        parameters: Iterable[tuple[nn.Module, str]] | None = None,
        module_types: Sequence[type[nn.Module] | str] | None = None,
        include: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        tensor_name: str = "weight",
        strategy: str = "global_unstructured",
        include_output_head: bool = False,
    ) -> None:
        self.model = model
        self._criteria = as_criteria(criteria, "GlobalPruningContext")
        self.strategy = check_strategy(strategy)
        for crit in self._criteria:
            check_global_criterion(crit, self.strategy)
        self.targets = tuple(
            select_targets(
                model,
                parameters=parameters,
                module_types=module_types,
                include=include,
                exclude=exclude,
                tensor_name=tensor_name,
                include_output_head=include_output_head,
            )
        )

    @property
    def steps(self) -> tuple[PruningStep, ...]:
        """One global step per criterion, each over every target."""
        return tuple(PruningStep(crit, self.targets, "global") for crit in self._criteria)

    def _prune(self, step_done: Callable[[str], None]) -> None:
        pairs = [(target.module, target.name) for target in self.targets]
        for crit in self._criteria:
            try:
                if self.strategy == "streaming":
                    prune_streaming(crit, self.targets)
                    step_done(f"{crit!r} on {len(pairs)} tensors")
                    continue
                scores = {target.key: importance_scores(crit, target) for target in self.targets}
                custom = any(s is not None for s in scores.values())
                importance = None
                if custom:
                    importance = {
                        (t.module, t.name): scores[t.key]
                        if scores[t.key] is not None
                        else getattr(t.module, t.name).detach().abs()
                        for t in self.targets
                    }
                with _contiguous(self.targets):
                    prune.global_unstructured(
                        pairs,
                        pruning_method=type(crit).PruningMethod,
                        importance_scores=importance,
                        criterion=crit,
                        magnitude=not custom,
                    )
                # Drop the hooks' views of this call's concatenated mask right away, so
                # several criteria never hold several concatenated masks at once.
                for target in self.targets:
                    release_mask_reference(target.module, target.name)
                step_done(f"{crit!r} on {len(pairs)} tensors")
            except Exception as exc:
                add_note(
                    exc,
                    f"while applying {crit!r} globally to {len(pairs)} tensors "
                    f"({', '.join(t.label for t in self.targets[:4])}"
                    f"{', ...' if len(pairs) > 4 else ''}); the model was left unchanged",
                )
                raise

    def __repr__(self) -> str:
        return (
            f"GlobalPruningContext({len(self.targets)} tensors, criteria={list(self._criteria)!r})"
        )
