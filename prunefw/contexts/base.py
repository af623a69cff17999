"""What both pruning contexts share: criteria checks, scores, the plan, the prune transaction."""

from __future__ import annotations

import abc
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from prunefw._rollback import rollback_on_error
from prunefw.calibration import Forward, calibrate, calibration_batches
from prunefw.criteria.adapter import mask_problem
from prunefw.criteria.base import PruningCriterion
from prunefw.errors import (
    InvalidArgumentError,
    InvalidMaskError,
    InvalidTypeError,
    TargetError,
    WholeTensorPrunedWarning,
)
from prunefw.huggingface import install_guards, remove_guards
from prunefw.permanence import remove_pruning
from prunefw.progress import ProgressCallback, ProgressEvent
from prunefw.reparametrization import (
    install_deepcopy_support,
    iter_pruned_tensors,
    mask_of,
    original_of,
    refresh_pruned_tensor,
    share_mask,
)
from prunefw.targets import PruningTarget, check_finite

__all__ = [
    "PruningContext",
    "PruningStep",
    "as_criteria",
    "check_stored_mask",
    "importance_scores",
    "reporting_batches",
]


@dataclass(frozen=True)
class PruningStep:
    """One criterion applied to some targets, as a context will apply it.

    Attributes:
        criterion: The criterion.
        targets: The tensors it prunes.
        scope: ``"global"`` if the entries of all ``targets`` are ranked together
            (:class:`~prunefw.GlobalPruningContext`), ``"layer"`` if each tensor is
            pruned on its own (:class:`~prunefw.LayerPruningContext`).
    """

    criterion: PruningCriterion
    targets: tuple[PruningTarget, ...]
    scope: Literal["global", "layer"]


def as_criteria(value: object, where: str) -> tuple[PruningCriterion, ...]:
    """Normalize one criterion or a sequence of them, refusing anything else.

    Args:
        value: A :class:`~prunefw.PruningCriterion` or a non-empty sequence of them.
        where: What the criteria are for, for messages.

    Returns:
        The criteria as a tuple, in order.

    Raises:
        InvalidTypeError: Something that is not a criterion instance.
        InvalidArgumentError: An empty sequence.
    """
    if isinstance(value, type) and issubclass(value, PruningCriterion):
        value = [value]  # refused below with the "pass an instance" hint
    items = [value] if isinstance(value, PruningCriterion) else value
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise InvalidTypeError(
            f"criteria for {where} must be a PruningCriterion or a list of them, got {value!r}"
        )
    for item in items:
        if isinstance(item, type) and issubclass(item, PruningCriterion):
            raise InvalidTypeError(
                f"criteria for {where}: got the class {item.__name__}; pass an instance, "
                f"e.g. {item.__name__}(...)"
            )
        if not isinstance(item, PruningCriterion):
            raise InvalidTypeError(
                f"criteria for {where}: {item!r} is not a PruningCriterion (use a built-in "
                "criterion, prunefw.criterion(name, ...), or subclass PruningCriterion)"
            )
    if not items:
        raise InvalidArgumentError(f"no criteria given for {where}: pass at least one")
    return tuple(items)


def reporting_batches(batches: Iterable[Any], progress: ProgressCallback) -> Iterator[Any]:
    """Yield ``batches``, reporting a ``"calibrate"`` event after each one has run."""
    total = len(batches) if isinstance(batches, Sized) else None
    for done, batch in enumerate(batches, 1):
        yield batch  # the model runs on it before the next one is asked for
        progress(ProgressEvent("calibrate", done, total, f"batch {done}"))


def check_stored_mask(target: PruningTarget) -> None:
    """Refuse a target whose weights have no data or whose current mask is unusable.

    Raises:
        TargetError: The weights are on the meta device.
        InvalidMaskError: The mask torch stores for it is not a 0/1 tensor of its
            shape on its device (e.g. loaded or assigned by hand).
    """
    weights = getattr(target.module, target.name)
    if isinstance(weights, torch.Tensor) and weights.is_meta:
        raise TargetError(
            f"{target.label} is on the meta device (it has no values to rank): materialize "
            "the model first, e.g. model.to_empty(device='cpu') and load its weights"
        )
    original = original_of(target.module, target.name)
    mask = mask_of(target.module, target.name)
    if original is None or mask is None:
        return
    problem = mask_problem(mask, original.shape)
    if problem is None and mask.device != original.device:
        problem = f"on {mask.device} while the weights are on {original.device}"
    if problem is not None:
        raise InvalidMaskError(
            f"{target.label} has a mask {problem}; a mask is a 0/1 tensor of the weight's shape "
            "on its device (re-prune, or fix the checkpoint it came from)"
        )


def importance_scores(criterion: PruningCriterion, target: PruningTarget) -> torch.Tensor | None:
    """Ask ``criterion`` for its scores of ``target`` and check them.

    Returns:
        The detached scores, or ``None`` for the default magnitude scores.

    Raises:
        InvalidTypeError: The criterion returned something other than a tensor or None.
        InvalidArgumentError: Scores of the wrong shape.
        NonFiniteWeightsError: NaN or infinite scores.
    """
    scores = criterion.importance_scores(target.module, target.name)
    if scores is None:
        return None
    if not isinstance(scores, torch.Tensor):
        raise InvalidTypeError(
            f"{criterion!r}.importance_scores returned {type(scores).__name__} for "
            f"{target.label}; expected a tensor or None"
        )
    shape = getattr(target.module, target.name).shape
    if scores.shape != shape:
        raise InvalidArgumentError(
            f"{criterion!r}.importance_scores returned shape {tuple(scores.shape)} for "
            f"{target.label}; expected {tuple(shape)}"
        )
    check_finite(target, scores, f"importance scores from {criterion!r}")
    return scores.detach()


class PruningContext(abc.ABC):
    """Base class of the pruning contexts.

    A context knows which tensors it prunes (:attr:`targets`) and how
    (:attr:`steps`, the read-only plan). :meth:`prune` is all-or-nothing: if
    anything fails, every module is left exactly as it was (parameters, buffers,
    hooks, attributes, ``state_dict``).

    Example:
        >>> from torch import nn
        >>> from prunefw import GlobalPruningContext, MagnitudeCriterion
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> ctx = GlobalPruningContext(model, MagnitudeCriterion(amount=0.5))
        >>> [(s.criterion, [t.label for t in s.targets], s.scope) for s in ctx.steps]
        [(MagnitudeCriterion(amount=0.5), ['0.weight', '2.weight'], 'global')]
        >>> ctx.requires_calibration
        False
    """

    targets: tuple[PruningTarget, ...]
    model: nn.Module | None

    @property
    @abc.abstractmethod
    def steps(self) -> tuple[PruningStep, ...]:
        """What :meth:`prune` will do: each criterion with its targets, in order."""

    @property
    def criteria(self) -> tuple[PruningCriterion, ...]:
        """Every criterion of this context once, in the order they first apply."""
        unique: dict[int, PruningCriterion] = {}
        for step in self.steps:
            unique.setdefault(id(step.criterion), step.criterion)
        return tuple(unique.values())

    @property
    def requires_calibration(self) -> bool:
        """Whether :meth:`prune` needs ``calibration_data`` (some criterion calibrates)."""
        return any(crit.requires_calibration for crit in self.criteria)

    def _calibration_plan(self) -> list[tuple[PruningCriterion, list[PruningTarget]]]:
        """Each criterion with all the targets it prunes."""
        plan: dict[int, tuple[PruningCriterion, list[PruningTarget]]] = {}
        for step in self.steps:
            plan.setdefault(id(step.criterion), (step.criterion, []))[1].extend(step.targets)
        return list(plan.values())

    def prune(
        self,
        calibration_data: Iterable[Any] | None = None,
        *,
        forward: Forward | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        """Prune every target; on any error, leave the model untouched and re-raise.

        The criteria see each target as it is now: a tensor pruned before is first
        recomputed as ``name_orig * name_mask`` (what torch's forward pre-hook does at
        the next forward pass), so a prune right after ``optimizer.step()`` ranks the
        weights the optimizer just wrote.

        Args:
            calibration_data: Batches for criteria with ``requires_calibration``
                (see :mod:`prunefw.calibration`); ignored if no criterion needs them.
            forward: How to call the model on one batch; default: a mapping as
                keyword arguments, a tuple/list as positional arguments, else as is.
            progress: Called with a :class:`~prunefw.progress.ProgressEvent` after
                each calibration batch and each step of :attr:`steps` (see
                :mod:`prunefw.progress`; :class:`~prunefw.progress.TqdmProgress`
                shows tqdm bars).

        Under :mod:`torch.distributed` (initialised), with targets that are DTensor
        shards (FSDP2) or a model wrapped in ``DistributedDataParallel``, this is a
        collective: every rank calls it with the same plan and
        :mod:`prunefw.distributed` does the work (global thresholds by collectives,
        identical masks on every rank, every rank rolls back if one fails).

        Raises:
            NonFiniteWeightsError: A target holds NaN or infinite weights.
            InvalidMaskError: A criterion returned a bad mask.
            InvalidArgumentError: A criterion's amount does not fit a tensor.
            Exception: Whatever a criterion raised, with a note naming it and
                the tensor.
        """
        distributed = _distributed_prune(self)
        if distributed is not None:
            distributed(self, calibration_data, forward, progress)
            return
        with rollback_on_error(module for target in self.targets for module in target.modules):
            self._prune_all(calibration_data, forward, progress)
        if self.model is not None:
            install_guards(self.model)

    def _prune_all(
        self,
        calibration_data: Iterable[Any] | None,
        forward: Forward | None,
        progress: ProgressCallback | None,
        before_calibration: Callable[[], None] | None = None,
    ) -> None:
        """What :meth:`prune` does inside its transaction: checks, calibration, steps.

        ``before_calibration`` runs between the checks and the calibration (a
        distributed caller votes there: calibration runs the model, which is a
        collective under DDP or FSDP).
        """
        for target in self.targets:
            check_stored_mask(target)
            # Score the weights as they are now: after an optimizer step, a pruned
            # tensor's attribute is stale until the forward pre-hook recomputes it.
            refresh_pruned_tensor(target.module, target.name)
            check_finite(target, getattr(target.module, target.name).detach())
        batches = calibration_data
        if progress is not None and batches is not None and self.requires_calibration:
            batches = reporting_batches(calibration_batches(batches), progress)
        if before_calibration is not None:
            before_calibration()
        calibrate(self.model, self._calibration_plan(), batches, forward)
        steps = len(self.steps)
        done = 0

        def step_done(item: str) -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(ProgressEvent("prune", done, steps, item))

        self._prune(step_done)
        for target in self.targets:
            # Tied weights: every place of the Parameter gets the one mask.
            share_mask(target.module, target.name, ((a.module, a.name) for a in target.aliases))
            for module in target.modules:
                install_deepcopy_support(module)
        # Inside the transaction: it asks the criteria, which may raise.
        self._warn_whole_tensors()

    def _warn_whole_tensors(self) -> None:
        """Warn when a threshold criterion pruned every entry of a tensor."""
        for step in self.steps:
            crit = step.criterion
            # A threshold criterion (the built-in magnitude's min_threshold); asking
            # rank_selection() instead would draw from a random criterion's generator.
            if getattr(crit, "min_threshold", None) is None:
                continue
            for target in step.targets:
                mask = mask_of(target.module, target.name)
                if mask is not None and mask.numel() > 0 and not bool(mask.any()):
                    warnings.warn(
                        f"{crit!r} pruned all {mask.numel()} entries of {target.label}: every "
                        "magnitude is below the threshold (freshly initialised weights are "
                        "often small); use an amount, or a smaller threshold",
                        WholeTensorPrunedWarning,
                        stacklevel=4,  # the caller of prune()
                    )

    @abc.abstractmethod
    def _prune(self, step_done: Callable[[str], None]) -> None:
        """Apply the criteria; called inside the rollback transaction.

        Args:
            step_done: Call after each step of :attr:`steps`, with a label of it.
        """

    def make_permanent(self) -> None:
        """Make this context's pruning permanent (``prune.remove`` on its targets).

        Targets that are not pruned (any more) are skipped. See
        :func:`prunefw.make_permanent` for what stays and what goes.
        """
        remove_pruning(
            (module, name)
            for target in self.targets
            for module, name in [(target.module, target.name)]
            + [(alias.module, alias.name) for alias in target.aliases]
        )
        if self.model is not None and not any(True for _ in iter_pruned_tensors(self.model)):
            remove_guards(self.model)


def _distributed_prune(
    context: PruningContext,
) -> Callable[[PruningContext, Any, Any, Any], None] | None:
    """The distributed ``prune()`` for ``context``, or ``None`` to prune in process.

    Only when :mod:`torch.distributed` is initialised (checked first, so nothing more
    is imported otherwise); :func:`prunefw.distributed.distributed_prune_for` decides.
    """
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return None
    from prunefw.distributed import distributed_prune_for

    return distributed_prune_for(context)
