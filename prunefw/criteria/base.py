"""The base class of every pruning criterion, built-in or third-party."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from prunefw.criteria.adapter import CriterionPruningMethod, make_pruning_method

__all__ = ["PruningCriterion", "RankSelection", "format_call"]


def format_call(name: str, kwargs: Mapping[str, Any]) -> str:
    """Format a criterion call, e.g. ``magnitude(amount=0.5)``.

    Example:
        >>> format_call("percentile", {"lower": 0.1, "upper": 0.9})
        'percentile(lower=0.1, upper=0.9)'
    """
    return f"{name}({', '.join(f'{key}={value!r}' for key, value in kwargs.items())})"


@dataclass(frozen=True)
class RankSelection:
    """A criterion's decision expressed as thresholds on ranks or values of scores.

    Criteria that can express their global mask this way (the built-ins can) work
    with ``GlobalPruningContext(..., strategy="streaming")``, which finds the exact
    global thresholds without concatenating the model. Of the ``n`` still-unpruned
    entries, the selection prunes those with score ``< min_threshold`` (if set),
    the ``smallest`` lowest-scored and the ``largest`` highest-scored, with the
    same tie rule as the default strategy (lower flat index counts as smaller, in
    target order).

    Attributes:
        min_threshold: Prune scores below this value (and ignore the counts).
        smallest: How many of the lowest scores to prune.
        largest: How many of the highest scores to prune.
        random_seed: If set, the scores are uniformly random keys drawn from
            generators seeded with ``random_seed + target index``, instead of the
            criterion's importance scores.
    """

    min_threshold: float | None = None
    smallest: int = 0
    largest: int = 0
    random_seed: int | None = None


class PruningCriterion(abc.ABC):
    """Decides which weights of a tensor to prune.

    A criterion turns importance scores into a keep-mask. By default the scores of a
    tensor are its magnitudes ``|w|``; a criterion that needs other scores (e.g. from
    activations) overrides :meth:`importance_scores`.

    **How a criterion sees a tensor.** prunefw runs every criterion through torch's
    :class:`~torch.nn.utils.prune.PruningContainer` logic (via the adapter
    ``cls.PruningMethod``, a :class:`~torch.nn.utils.prune.BasePruningMethod`
    subclass carrying :attr:`PRUNING_TYPE`). For ``"unstructured"`` criteria,
    :meth:`compute_mask` receives only the **still-unpruned** entries, flattened, so
    a ratio is a fraction of what remains: applying a 20% criterion twice prunes
    ``1 - 0.8 * 0.8 = 36%``. A pruned entry is never un-pruned, whatever the
    criterion returns. In :class:`~prunefw.GlobalPruningContext` the entries of all
    tensors are seen together, in :class:`~prunefw.LayerPruningContext` one tensor
    at a time.

    Subclasses set :attr:`name` (the registered name, used by
    :func:`prunefw.criterion` and recipes), implement :meth:`compute_mask`, and are
    made available to users through the ``prunefw_register_criteria`` hook.

    Example:
        >>> import torch
        >>> from prunefw import PruningCriterion
        >>> class SignCriterion(PruningCriterion):
        ...     '''Prune negative weights.'''
        ...     name = "sign"
        ...     def importance_scores(self, module, name):
        ...         return getattr(module, name).detach()
        ...     def compute_mask(self, scores, default_mask):
        ...         return scores >= 0
        >>> SignCriterion().compute_mask(torch.tensor([-1.0, 2.0]), torch.ones(2))
        tensor([False,  True])
    """

    #: Registered name of the criterion (lowercase; ``[a-z][a-z0-9_.-]*``).
    name: ClassVar[str]

    #: torch's pruning type: ``"unstructured"`` (entries), ``"structured"``
    #: (channels along ``self.dim``; layer context only) or ``"global"``.
    PRUNING_TYPE: ClassVar[str] = "unstructured"

    #: The ``BasePruningMethod`` subclass adapting this criterion class to torch.
    PruningMethod: ClassVar[type[CriterionPruningMethod]]

    #: Whether the criterion needs calibration batches before computing masks. If
    #: true, contexts call :meth:`reset_calibration`, then :meth:`observe` for every
    #: forward of every target module over the batches given to ``prune()``.
    requires_calibration: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.PruningMethod = make_pruning_method(cls)

    def importance_scores(self, module: nn.Module, name: str) -> torch.Tensor | None:
        """Return importance scores for ``getattr(module, name)``, or ``None``.

        ``None`` (the default) means magnitude scores ``|w|``, which prunefw
        computes itself without an extra copy. Higher scores mean more important.

        Args:
            module: The module holding the tensor.
            name: The tensor's attribute name, e.g. ``"weight"``.

        Returns:
            A tensor of the same shape as the pruned tensor, or ``None``.
        """
        return None

    def reset_calibration(self) -> None:  # noqa: B027 - optional step, no-op by default
        """Forget calibration statistics; called once before each calibration run.

        Only called if :attr:`requires_calibration` is true. The default does nothing.
        """

    def observe(self, module: nn.Module, name: str, inputs: tuple[Any, ...], output: Any) -> None:
        """Record statistics from one forward call of a target module during calibration.

        Only called if :attr:`requires_calibration` is true, under
        :func:`torch.no_grad` with the model in eval mode (see
        :mod:`prunefw.calibration`). Key statistics by ``(module, name)``; use them
        in :meth:`importance_scores`.

        Args:
            module: The target module that just ran.
            name: The name of the tensor that will be pruned in it.
            inputs: The positional inputs of the module's forward.
            output: What its forward returned.

        Raises:
            NotImplementedError: The criterion requires calibration but does not
                implement this method.
        """
        raise NotImplementedError(
            f"{type(self).__name__} sets requires_calibration = True but does not implement "
            "observe()"
        )

    @abc.abstractmethod
    def compute_mask(self, scores: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        """Compute the keep-mask for ``scores``.

        Args:
            scores: Importance scores of the entries this criterion may prune. For an
                ``"unstructured"`` criterion, a 1-D tensor of the still-unpruned
                entries only (see the class docstring).
            default_mask: The current mask of those entries (all ones for
                unstructured criteria), same shape as ``scores``.

        Returns:
            A bool tensor (or a 0/1 tensor) of ``scores``' shape: ``True``/1 keeps
            an entry, ``False``/0 prunes it.
        """

    def rank_selection(self, n: int) -> RankSelection | None:
        """Describe this criterion's mask over ``n`` unpruned entries as a :class:`RankSelection`.

        Optional: return ``None`` (the default) if the criterion cannot be expressed
        that way; it then only works with the default global strategy.

        Args:
            n: The number of still-unpruned entries over all targets.

        Returns:
            The selection, or ``None``.
        """
        return None

    @classmethod
    def supports_streaming(cls) -> bool:
        """Whether criteria of this class work with the streaming global strategy.

        True when the class defines :meth:`rank_selection` (all built-ins do), so
        ``GlobalPruningContext(..., strategy="streaming")`` can find its exact global
        thresholds without concatenating the model.

        Example:
            >>> from prunefw import MagnitudeCriterion, PruningCriterion
            >>> MagnitudeCriterion.supports_streaming()
            True
            >>> class KeepAll(PruningCriterion):
            ...     name = "keep-all"
            ...     def compute_mask(self, scores, default_mask):
            ...         return default_mask
            >>> KeepAll.supports_streaming()
            False
        """
        return cls.rank_selection is not PruningCriterion.rank_selection

    def config(self) -> dict[str, Any]:
        """Return the keyword arguments that rebuild this criterion.

        Returns:
            A dict such that ``type(self)(**self.config())`` is an equivalent criterion.
        """
        return {}

    def __repr__(self) -> str:
        return format_call(type(self).__name__, self.config())
