"""Global pruning: one criterion decision over all selected tensors at once."""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.nn.utils import prune

from prunefw.contexts.base import PruningContext, PruningStep, as_criteria, importance_scores
from prunefw.contexts.streaming import count_survivors, prune_streaming
from prunefw.criteria.base import PruningCriterion, RankSelection
from prunefw.errors import InvalidArgumentError, InvalidTypeError, PruningTypeError, add_note
from prunefw.reparametrization import convert_mask, mask_name, mask_of, release_mask_reference
from prunefw.targets import PruningTarget, select_targets

__all__ = [
    "AUTO_MEMORY_FRACTION",
    "GLOBAL_UNSTRUCTURED_PEAK",
    "STRATEGIES",
    "GlobalPruningContext",
    "available_memory",
    "check_global_criterion",
    "check_strategy",
    "choose_strategy",
    "streams_identically",
]

#: The global strategies: ``"auto"`` (the default: one of the other two, see
#: :func:`choose_strategy`), torch's ``global_unstructured``, and streaming.
STRATEGIES = ("auto", "global_unstructured", "streaming")

#: The peak memory of the ``global_unstructured`` strategy above the model, in
#: multiples of the targets' bytes (counted at 4 bytes or more per entry): measured
#: 6.8x (magnitude), 7.1x (percentile) and 7.8x (random) for fp32 at 50M and 403M
#: weights (``docs/benchmarks.md``), rounded up.
GLOBAL_UNSTRUCTURED_PEAK = 8.0
#: ``"auto"`` streams when that peak would exceed this fraction of the available memory.
AUTO_MEMORY_FRACTION = 0.5


def available_memory() -> int | None:
    """The memory available for new allocations, in bytes, or ``None`` if unknown.

    Linux's ``MemAvailable`` from ``/proc/meminfo`` (free memory plus what the page
    cache can give back); elsewhere the free physical pages (``os.sysconf``).
    ``strategy="auto"`` reads it when :meth:`~prunefw.PruningContext.prune` runs;
    tests replace this function to fix the figure.
    """
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def streams_identically(criterion: PruningCriterion, n: int) -> bool:
    """Whether both strategies give ``criterion`` the same masks over ``n`` survivors.

    True when it supports streaming and its :class:`~prunefw.criteria.base.RankSelection`
    ranks its own scores, not random keys (random criteria draw different random
    numbers in the two strategies). The selection is asked of a copy, so the
    criterion's state (a random generator) does not advance.
    """
    if not criterion.supports_streaming():
        return False
    try:
        selection = copy.deepcopy(criterion).rank_selection(n)
    except Exception:  # a criterion that cannot be copied or asked: keep the default
        return False
    return isinstance(selection, RankSelection) and selection.random_seed is None


def choose_strategy(
    criteria: Sequence[PruningCriterion],
    targets: Sequence[PruningTarget],
    available: int | None = None,
) -> str:
    """The strategy ``strategy="auto"`` picks for ``criteria`` over ``targets``.

    ``"streaming"`` if the concatenation would not fit comfortably, i.e.
    :data:`GLOBAL_UNSTRUCTURED_PEAK` times the targets' bytes (at least 4 per entry)
    exceeds :data:`AUTO_MEMORY_FRACTION` of the available memory, **and** every
    criterion gets the same masks from both strategies
    (:func:`streams_identically`: all built-ins but ``random``). Otherwise
    ``"global_unstructured"``, torch's own path, as for every model where it fits.

    Args:
        criteria: The criteria, in order.
        targets: The tensors they prune.
        available: Bytes available; ``None``: :func:`available_memory` now (if that
            is unknown too, ``"global_unstructured"``).

    Example:
        >>> from torch import nn
        >>> from prunefw import GlobalPruningContext, MagnitudeCriterion, RandomCriterion
        >>> model = nn.Sequential(nn.Linear(1024, 1024))  # 4 MiB of weights
        >>> ctx = GlobalPruningContext(model, MagnitudeCriterion(amount=0.5))
        >>> choose_strategy(ctx.criteria, ctx.targets, available=64 << 30)
        'global_unstructured'
        >>> choose_strategy(ctx.criteria, ctx.targets, available=32 << 20)
        'streaming'
        >>> choose_strategy([RandomCriterion(0.5)], ctx.targets, available=32 << 20)
        'global_unstructured'
    """
    if available is None:
        available = available_memory()
    if available is None:
        return "global_unstructured"
    size = sum(
        getattr(t.module, t.name).numel() * max(getattr(t.module, t.name).element_size(), 4)
        for t in targets
    )
    if GLOBAL_UNSTRUCTURED_PEAK * size <= AUTO_MEMORY_FRACTION * available:
        return "global_unstructured"
    n = count_survivors(targets)
    if all(streams_identically(crit, n) for crit in criteria):
        return "streaming"
    return "global_unstructured"


def _check_mask_dtype(mask_dtype: object) -> torch.dtype | None:
    if mask_dtype is None:
        return None
    if not isinstance(mask_dtype, torch.dtype):
        raise InvalidTypeError(
            f"GlobalPruningContext(mask_dtype={mask_dtype!r}): expected a torch.dtype "
            "(torch.bool, or a float dtype) or None"
        )
    if mask_dtype != torch.bool and not mask_dtype.is_floating_point:
        raise InvalidArgumentError(
            f"GlobalPruningContext(mask_dtype={mask_dtype}): masks are torch.bool or a float dtype"
        )
    return mask_dtype


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
        strategy: ``"auto"`` (default): ``"streaming"`` when the targets are too
            large for torch's concatenation to fit comfortably in the available
            memory and every criterion gets the same masks from both strategies,
            else ``"global_unstructured"`` (the rule: :func:`choose_strategy`,
            decided when :meth:`prune` runs; :attr:`strategy_used` says which).
            ``"global_unstructured"``: each criterion runs inside
            :func:`torch.nn.utils.prune.global_unstructured`. ``"streaming"``: for
            criteria with a :meth:`~prunefw.PruningCriterion.rank_selection` (all
            built-ins), the exact global thresholds are found without concatenating
            the model, then each tensor gets torch's reparametrization with its
            final mask (see :mod:`prunefw.contexts.streaming`); much faster and
            leaner on large models, same masks for magnitude and percentile.
        mask_dtype: The dtype of the ``weight_mask`` buffers after this context
            prunes. ``None`` (default): torch's choice, the weight's dtype (also
            for a tensor whose mask was bool: torch's ``PruningContainer`` casts).
            ``torch.bool``: 1 byte per entry, still torch's
            reparametrization (its hook casts the mask when it recomputes the
            weight); saves 3 bytes per fp32 weight while pruned and in checkpoints
            (see ``docs/scale.md``).

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
        strategy: str = "auto",
        include_output_head: bool = False,
        mask_dtype: torch.dtype | None = None,
    ) -> None:
        self.model = model
        self._criteria = as_criteria(criteria, "GlobalPruningContext")
        self.strategy = check_strategy(strategy)
        self.mask_dtype = _check_mask_dtype(mask_dtype)
        #: The strategy the last :meth:`prune` ran (``None`` before the first).
        self.strategy_used: str | None = None
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

    def resolve_strategy(self, available: int | None = None) -> str:
        """The strategy :meth:`prune` would run now: :attr:`strategy`, ``"auto"`` resolved.

        Args:
            available: Bytes of available memory to decide ``"auto"`` with
                (default: :func:`available_memory`).
        """
        if self.strategy != "auto":
            return self.strategy
        return choose_strategy(self._criteria, self.targets, available)

    def _prune(self, step_done: Callable[[str], None]) -> None:
        pairs = [(target.module, target.name) for target in self.targets]
        strategy = self.resolve_strategy()
        self.strategy_used = strategy
        for crit in self._criteria:
            try:
                if strategy == "streaming":
                    prune_streaming(crit, self.targets, mask_dtype=self.mask_dtype)
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
                    if self.mask_dtype is not None:
                        convert_mask(target.module, target.name, self.mask_dtype)
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
