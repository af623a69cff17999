"""Gradual pruning: drive a pruning context from a training loop along a sparsity curve.

:class:`GradualPruner` calls a context factory every ``frequency`` steps between
``start_step`` and ``end_step`` so that the sparsity of the context's targets follows
a curve, by default the cubic one of Zhu & Gupta (2017, "To prune, or not to prune").
Before each pruning event it counts the entries already pruned (from the masks) and
asks the factory for a context that prunes exactly the missing ones.
"""

from __future__ import annotations

import math
import numbers
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import nn

from prunefw.calibration import Forward
from prunefw.contexts.base import PruningContext
from prunefw.errors import InvalidArgumentError, InvalidTypeError
from prunefw.reparametrization import mask_of
from prunefw.sparsity import zero_count
from prunefw.validation import check_fraction

__all__ = ["AMOUNT_TYPES", "CURVES", "GradualPruner", "check_schedule"]

#: The built-in curves, as functions of the progress ``p`` in ``[0, 1]`` returning the
#: fraction of the way from the initial to the final sparsity.
CURVES: dict[str, Callable[[float], float]] = {
    "cubic": lambda p: 1.0 - (1.0 - p) ** 3,
    "linear": lambda p: p,
    "constant": lambda p: 1.0,
}

#: How the amount is passed to the context factory.
AMOUNT_TYPES = ("fraction", "count", "sparsity")

TargetKey = tuple[nn.Module, str]


def _check_int(value: object, argument: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidTypeError(
            f"GradualPruner({argument}={value!r}): expected an int, got {type(value).__name__}"
        )
    if value < minimum:
        raise InvalidArgumentError(f"GradualPruner({argument}={value!r}): must be >= {minimum}")
    return int(value)


def check_schedule(
    *,
    initial_sparsity: float = 0.0,
    final_sparsity: float,
    start_step: int = 0,
    end_step: int,
    frequency: int = 1,
    curve: str | Callable[[float], float] = "cubic",
    amount_type: str = "fraction",
    per_tensor: bool = False,
) -> dict[str, Any]:
    """Validate the settings of a :class:`GradualPruner` without building one.

    Takes the same keyword arguments as :class:`GradualPruner` (except the factory)
    and raises the same errors; recipes use it to check a ``[schedule]`` section
    before any model is involved.

    Returns:
        The settings, with the sparsities as floats and the steps as ints.

    Raises:
        InvalidArgumentError: ``final_sparsity < initial_sparsity``, a sparsity outside
            ``[0, 1]``, ``end_step <= start_step``, ``frequency < 1``, an unknown
            curve or amount type.
        InvalidTypeError: An argument of the wrong type.

    Example:
        >>> check_schedule(final_sparsity=0.9, end_step=100)["final_sparsity"]
        0.9
        >>> check_schedule(final_sparsity=0.9, end_step=100, frequency=0)
        Traceback (most recent call last):
        ...
        prunefw.errors.InvalidArgumentError: GradualPruner(frequency=0): must be >= 1
    """
    initial = check_fraction(initial_sparsity, "initial_sparsity", "GradualPruner")
    final = check_fraction(final_sparsity, "final_sparsity", "GradualPruner")
    if final < initial:
        raise InvalidArgumentError(
            f"GradualPruner(final_sparsity={final_sparsity!r}): must be >= "
            f"initial_sparsity={initial_sparsity!r} (pruning never un-prunes)"
        )
    start = _check_int(start_step, "start_step", 0)
    end = _check_int(end_step, "end_step", 0)
    if end <= start:
        raise InvalidArgumentError(
            f"GradualPruner(end_step={end_step!r}): must be > start_step={start_step!r} "
            "(zero pruning steps)"
        )
    freq = _check_int(frequency, "frequency", 1)
    if isinstance(curve, str):
        if curve not in CURVES:
            raise InvalidArgumentError(
                f"GradualPruner(curve={curve!r}): expected one of "
                f"{', '.join(map(repr, CURVES))} or a callable"
            )
    elif not callable(curve):
        raise InvalidTypeError(
            f"GradualPruner(curve={curve!r}): expected a curve name or a callable"
        )
    if amount_type not in AMOUNT_TYPES:
        raise InvalidArgumentError(
            f"GradualPruner(amount_type={amount_type!r}): expected one of "
            f"{', '.join(map(repr, AMOUNT_TYPES))}"
        )
    if not isinstance(per_tensor, bool):
        raise InvalidTypeError(
            f"GradualPruner(per_tensor={per_tensor!r}): expected a bool, "
            f"got {type(per_tensor).__name__}"
        )
    return {
        "initial_sparsity": initial,
        "final_sparsity": final,
        "start_step": start,
        "end_step": end,
        "frequency": freq,
        "curve": curve,
        "amount_type": amount_type,
        "per_tensor": per_tensor,
    }


def _pruned_count(module: nn.Module, name: str) -> tuple[int, int]:
    """``(pruned entries, entries)`` of one tensor, read from its mask."""
    n = getattr(module, name).numel()
    mask = mask_of(module, name)
    return (0 if mask is None else zero_count(mask)), n


class GradualPruner:
    """Prune gradually from a training loop, following a sparsity curve.

    Call :meth:`step` once per optimizer step (or once per epoch, with the steps
    counted in epochs). The ``t``-th call (counting from 0) is a *pruning event* when
    ``start_step <= t <= end_step`` and ``t - start_step`` is a multiple of
    ``frequency``; ``end_step`` itself is always an event, so the final sparsity is
    reached. At an event the target sparsity is :meth:`sparsity_at` ``(t)``::

        s_t = s_i + (s_f - s_i) * c((t - start_step) / (end_step - start_step))

    with ``c(p) = 1 - (1 - p)**3`` for ``"cubic"`` (Zhu & Gupta 2017:
    ``s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (n * dt))**3``), ``c(p) = p`` for
    ``"linear"``, ``c(p) = 1`` for ``"constant"`` (the final sparsity at the first
    event, then held), or a callable ``curve(p)`` returning a value in ``[0, 1]``.

    Exactness: the target is a count, ``round(s_t * n)`` of the ``n`` entries
    (Python's ``round``: ties to even). Before the event the pruner counts the
    ``P`` entries already pruned (zeros of the ``*_mask`` buffers) and calls
    ``context_factory(amount)`` with, for ``amount_type="fraction"`` (default), the
    fraction of what remains ``(K - P) / (n - P)`` -- a criterion that prunes
    ``round(amount * remaining)`` (``MagnitudeCriterion``, ``RandomCriterion``,
    torch's methods) then prunes exactly ``K - P`` -- or, for
    ``amount_type="count"``, the int ``K - P`` (for ``MagnitudeCriterion(amount=int)``),
    or, for ``amount_type="sparsity"``, the target ``s_t`` itself (for criteria whose
    parameter is the sparsity to reach, like the ``wanda`` plugin's ``sparsity``;
    exact as far as that criterion's own rounding goes). An event with nothing
    missing is skipped (per tensor: that tensor gets ``0``).
    With ``per_tensor=False`` (default) the count is over all the context's targets
    together, which is exact for a :class:`~prunefw.GlobalPruningContext` with one
    criterion. With ``per_tensor=True`` every tensor follows the curve on its own and
    the factory receives a mapping ``{(module, tensor name): amount}`` (build a
    :class:`~prunefw.LayerPruningContext` from it; its keys are accepted there as
    is). A layer context built from one scalar fraction rounds per tensor, so its
    total can miss by up to half an entry per tensor: use ``per_tensor=True``.

    The pruner never un-prunes: if the model is already sparser than the target
    (say a callable curve goes down), the event does nothing. Pruning goes through
    torch's reparametrization, so the Parameter objects (``weight_orig``) stay the
    same and an optimizer built before pruning keeps working. :meth:`state_dict` /
    :meth:`load_state_dict` save and restore the step counter (with the settings, to
    refuse a mismatched resume); the masks travel in the model's own ``state_dict``
    (see :func:`~prunefw.load_pruned_state_dict`).

    Args:
        context_factory: Called with the amount for this event (see above) and
            returns the :class:`~prunefw.PruningContext` to apply. It is called once
            at construction with a zero amount to learn the targets.
        initial_sparsity: ``s_i``, the sparsity at ``start_step``, in ``[0, 1]``.
        final_sparsity: ``s_f``, the sparsity from ``end_step`` on; ``>= s_i``.
        start_step: First pruning event (``t_0``), ``>= 0``.
        end_step: Last pruning event (``t_0 + n * dt``), ``> start_step``.
        frequency: Steps between events (``dt``), ``>= 1``.
        curve: ``"cubic"``, ``"linear"``, ``"constant"`` or a callable.
        amount_type: ``"fraction"``, ``"count"`` or ``"sparsity"``.
        per_tensor: Follow the curve per tensor instead of over all targets.

    Raises:
        InvalidArgumentError: ``final_sparsity < initial_sparsity``, a sparsity outside
            ``[0, 1]``, ``end_step <= start_step`` (zero steps), ``frequency < 1``,
            an unknown curve or amount type.
        InvalidTypeError: Arguments of the wrong type, or a factory that does not
            return a :class:`~prunefw.PruningContext`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from prunefw import GlobalPruningContext, GradualPruner, MagnitudeCriterion
        >>> model = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 10))
        >>> pruner = GradualPruner(
        ...     lambda fraction: GlobalPruningContext(model, MagnitudeCriterion(amount=fraction)),
        ...     final_sparsity=0.9, end_step=4, frequency=2)
        >>> for _ in range(5):
        ...     _ = pruner.step()
        >>> [round(pruner.sparsity_at(t), 4) for t in (0, 2, 4)], pruner.sparsity()
        ([0.0, 0.7875, 0.9], 0.9)
    """

    def __init__(
        self,
        context_factory: Callable[[Any], PruningContext],
        *,
        initial_sparsity: float = 0.0,
        final_sparsity: float,
        start_step: int = 0,
        end_step: int,
        frequency: int = 1,
        curve: str | Callable[[float], float] = "cubic",
        amount_type: str = "fraction",
        per_tensor: bool = False,
    ) -> None:
        if not callable(context_factory):
            raise InvalidTypeError(
                f"GradualPruner(context_factory={context_factory!r}): expected a callable "
                "amount -> PruningContext"
            )
        self.context_factory = context_factory
        settings = check_schedule(
            initial_sparsity=initial_sparsity,
            final_sparsity=final_sparsity,
            start_step=start_step,
            end_step=end_step,
            frequency=frequency,
            curve=curve,
            amount_type=amount_type,
            per_tensor=per_tensor,
        )
        self.initial_sparsity: float = settings["initial_sparsity"]
        self.final_sparsity: float = settings["final_sparsity"]
        self.start_step: int = settings["start_step"]
        self.end_step: int = settings["end_step"]
        self.frequency: int = settings["frequency"]
        self.curve: str | Callable[[float], float] = curve
        self._curve: Callable[[float], float] = CURVES[curve] if isinstance(curve, str) else curve
        self.amount_type: str = amount_type
        self.per_tensor: bool = per_tensor
        self.step_count = 0
        # Set by load_state_dict: a resumed pruner past end_step has no event left, so its
        # next step() catches up with the final sparsity.
        self._resumed = False
        zero: Any = 0 if amount_type == "count" else 0.0
        probe = self._build(defaultdict(lambda: zero) if per_tensor else zero)
        self.targets: tuple[TargetKey, ...] = tuple((t.module, t.name) for t in probe.targets)

    def _build(self, amount: Any) -> PruningContext:
        context = self.context_factory(amount)
        if not isinstance(context, PruningContext):
            raise InvalidTypeError(
                f"GradualPruner: context_factory returned {type(context).__name__}; "
                "expected a PruningContext (e.g. GlobalPruningContext(...))"
            )
        return context

    def sparsity_at(self, step: int) -> float:
        """The curve's target sparsity at ``step`` (``s_i`` before the start, ``s_f`` after)."""
        if step < self.start_step:
            return self.initial_sparsity
        progress = min(1.0, (step - self.start_step) / (self.end_step - self.start_step))
        value = float(self._curve(progress))
        if not (math.isfinite(value) and 0.0 <= value <= 1.0):
            raise InvalidArgumentError(
                f"GradualPruner: curve({progress!r}) returned {value!r}; expected a value in "
                "[0, 1] (the fraction of the way from initial to final sparsity)"
            )
        return self.initial_sparsity + (self.final_sparsity - self.initial_sparsity) * value

    def is_pruning_step(self, step: int) -> bool:
        """Whether ``step`` (0-based count of :meth:`step` calls) is a pruning event."""
        if not self.start_step <= step <= self.end_step:
            return False
        return step == self.end_step or (step - self.start_step) % self.frequency == 0

    def sparsity(self) -> float:
        """The current sparsity of all the targets together (pruned entries / entries)."""
        counts = [_pruned_count(m, n) for m, n in self.targets]
        return sum(p for p, _ in counts) / max(1, sum(n for _, n in counts))

    def _amount(self, target: float, pruned: int, n: int) -> float | int:
        missing = max(0, round(target * n) - pruned)
        if self.amount_type == "count":
            return missing
        if self.amount_type == "sparsity":
            return target if missing else 0.0
        remaining = n - pruned
        return missing / remaining if remaining else 0.0

    def step(
        self, calibration_data: Iterable[Any] | None = None, *, forward: Forward | None = None
    ) -> bool:
        """Record one step; at a pruning event, prune to the curve's target.

        Args:
            calibration_data: Passed to :meth:`PruningContext.prune` for criteria
                that need activations.
            forward: Likewise.

        Returns:
            Whether this step pruned anything.
        """
        t = self.step_count
        self.step_count += 1
        catch_up, self._resumed = self._resumed and t > self.end_step, False
        if not (self.is_pruning_step(t) or catch_up):
            return False
        target = self.sparsity_at(t)
        counts = {key: _pruned_count(*key) for key in self.targets}
        amount: Any
        if self.per_tensor:
            amount = {key: self._amount(target, p, n) for key, (p, n) in counts.items()}
            if not any(amount.values()):
                return False
        else:
            pruned = sum(p for p, _ in counts.values())
            total = sum(n for _, n in counts.values())
            amount = self._amount(target, pruned, total)
            if not amount:
                return False
        context = self._build(amount)
        keys = {(id(t.module), t.name) for t in context.targets}
        if keys != {(id(module), name) for module, name in self.targets}:
            raise InvalidArgumentError(
                f"GradualPruner: context_factory built {context!r}, whose targets differ from "
                "the ones it built at construction; the factory must always select the same "
                "tensors (the sparsity is measured over them)"
            )
        context.prune(calibration_data, forward=forward)
        return True

    def state_dict(self) -> dict[str, Any]:
        """The step counter and the settings, as plain Python values."""
        return {"step_count": self.step_count, "config": self._config()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the step counter from :meth:`state_dict`.

        The model's masks are restored separately (they live in its state_dict). The
        next pruning event then lands exactly on its target, and a pruner resumed
        after ``end_step`` prunes to ``final_sparsity`` at its next :meth:`step`.

        Raises:
            InvalidArgumentError: The state was saved with other settings, or is malformed.
        """
        if not isinstance(state_dict, Mapping) or not {"step_count", "config"} <= set(state_dict):
            raise InvalidArgumentError(
                "GradualPruner.load_state_dict: expected the mapping state_dict() returns, "
                f"with 'step_count' and 'config', got {state_dict!r}"
            )
        config = state_dict["config"]
        if not isinstance(config, Mapping):
            raise InvalidArgumentError(
                f"GradualPruner.load_state_dict: 'config' must be the settings mapping "
                f"state_dict() saved, got {config!r}"
            )
        if dict(config) != self._config():
            raise InvalidArgumentError(
                f"GradualPruner.load_state_dict: saved with settings {dict(config)!r}, "
                f"this pruner has {self._config()!r}"
            )
        self.step_count = _check_int(state_dict["step_count"], "step_count", 0)
        self._resumed = True

    def _config(self) -> dict[str, Any]:
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "start_step": self.start_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
            "curve": self.curve if isinstance(self.curve, str) else "<callable>",
            "amount_type": self.amount_type,
            "per_tensor": self.per_tensor,
        }

    def __repr__(self) -> str:
        return (
            f"GradualPruner({self.initial_sparsity} -> {self.final_sparsity}, steps "
            f"{self.start_step}..{self.end_step} every {self.frequency}, curve={self.curve!r}, "
            f"step_count={self.step_count})"
        )
