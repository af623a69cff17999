"""Progress of long pruning calls: a callback API, and an adapter for tqdm.

:meth:`prunefw.PruningContext.prune` takes ``progress=``, a callable that receives a
:class:`ProgressEvent` after each calibration batch (stage ``"calibrate"``) and after
each step of its plan (stage ``"prune"``: a criterion over its targets, see
:attr:`prunefw.PruningContext.steps`). It is called from the pruning thread; an
exception it raises aborts the prune like any other (the model is left unchanged).

Example:
    >>> from torch import nn
    >>> from prunefw import LayerPruningContext, MagnitudeCriterion
    >>> model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> events = []
    >>> ctx = LayerPruningContext({"0": MagnitudeCriterion(amount=0.5),
    ...                            "2": MagnitudeCriterion(amount=0.5)}, model=model)
    >>> ctx.prune(progress=events.append)
    >>> [(e.stage, e.done, e.total) for e in events]
    [('prune', 1, 2), ('prune', 2, 2)]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

__all__ = ["ProgressCallback", "ProgressEvent", "TqdmProgress"]


@dataclass(frozen=True)
class ProgressEvent:
    """One unit of work done.

    Attributes:
        stage: ``"calibrate"`` (a calibration batch ran through the model) or
            ``"prune"`` (a step of the plan was applied).
        done: How many units of this stage are done, counting this one.
        total: How many there are, or ``None`` if unknown (an iterator of batches).
        item: What was just done, for display (e.g. the criterion and tensor).
    """

    stage: Literal["calibrate", "prune"]
    done: int
    total: int | None
    item: str = ""


#: What ``progress=`` takes.
ProgressCallback = Callable[[ProgressEvent], None]


class TqdmProgress:
    """A progress callback that shows one ``tqdm`` bar per stage.

    Needs ``tqdm`` (installed with ``transformers``); imported when the first event
    arrives. Use it as a context manager to close the bars at the end.

    Args:
        **tqdm_kwargs: Passed to every ``tqdm(...)`` bar (e.g. ``leave=False``).

    Example:
        >>> from torch import nn
        >>> from prunefw import GlobalPruningContext, MagnitudeCriterion
        >>> model = nn.Sequential(nn.Linear(4, 4))
        >>> with TqdmProgress(disable=True) as progress:
        ...     GlobalPruningContext(model, MagnitudeCriterion(amount=0.5)).prune(
        ...         progress=progress
        ...     )
    """

    def __init__(self, **tqdm_kwargs: Any) -> None:
        self.tqdm_kwargs = tqdm_kwargs
        self.bars: dict[str, Any] = {}

    def __call__(self, event: ProgressEvent) -> None:
        """Advance the bar of ``event.stage`` (created on its first event)."""
        bar = self.bars.get(event.stage)
        if bar is None:
            from tqdm.auto import tqdm

            bar = tqdm(total=event.total, desc=event.stage, **self.tqdm_kwargs)
            self.bars[event.stage] = bar
        bar.update(event.done - bar.n)
        if event.item:
            bar.set_postfix_str(event.item, refresh=False)

    def close(self) -> None:
        """Close every bar."""
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
