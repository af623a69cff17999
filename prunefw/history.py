"""Criterion history: which criteria pruned each tensor, kept inside the saved state_dict.

A :class:`PruningHistory` maps a tensor's qualified name (``"features.0.weight"``)
to the criteria that pruned it, in the order they ran. It is recorded from the
contexts that pruned a model (:meth:`PruningHistory.from_contexts`) and travels
with the weights as one JSON string, so reading it back never unpickles anything:

* in a PyTorch ``state_dict`` file, under the key ``"prunefw.history"`` of the
  root entry of the state_dict's ``_metadata`` (where torch keeps module
  versions). ``torch.save`` and ``torch.load(..., weights_only=True)`` keep it,
  and the file is still a plain state_dict: ``model.load_state_dict`` and
  :func:`prunefw.load_pruned_state_dict` load it as usual and ignore the entry;
* in a safetensors file, under the same key of the file's string metadata.

Each entry records the criterion's registered name, its
:meth:`~prunefw.PruningCriterion.config` (made JSON-ready: values JSON cannot hold
become their ``repr``) and the scope, ``"global"`` (ranked together with the
other tensors of a :class:`~prunefw.GlobalPruningContext`) or ``"layer"``.

Example:
    >>> from torch import nn
    >>> from prunefw import GlobalPruningContext, MagnitudeCriterion
    >>> model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> ctx = GlobalPruningContext(model, [MagnitudeCriterion(amount=0.5)])
    >>> ctx.prune()
    >>> history = PruningHistory.from_contexts([ctx])
    >>> history.describe("2.weight")
    'global magnitude(amount=0.5)'
    >>> state = history.attach(model.state_dict())
    >>> PruningHistory.from_state_dict(state) == history
    True
"""

from __future__ import annotations

import json
import reprlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prunefw.contexts import PruningContext
from prunefw.criteria.base import PruningCriterion, format_call
from prunefw.errors import CheckpointError, InvalidTypeError

__all__ = ["METADATA_KEY", "SCOPES", "HistoryEntry", "PruningHistory"]

#: Where the history is stored: a key of the state_dict's root ``_metadata`` entry,
#: and of a safetensors file's metadata.
METADATA_KEY = "prunefw.history"

#: The scopes of a history entry.
SCOPES = ("global", "layer")


def _json_ready(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr))


def _short_repr(value: object) -> str:
    """``repr`` cut to a readable length and depth (stored data can be anything)."""
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, 60, 60
    return short.repr(value)


@dataclass(frozen=True)
class HistoryEntry:
    """One criterion applied to one tensor.

    Attributes:
        criterion: The criterion's registered name (``"magnitude"``).
        config: Its keyword arguments, JSON-ready.
        scope: ``"global"`` or ``"layer"``.

    Example:
        >>> HistoryEntry("percentile", {"lower": 0.1, "upper": 0.9}, "layer").describe()
        'layer percentile(lower=0.1, upper=0.9)'
    """

    criterion: str
    config: Mapping[str, Any] = field(default_factory=dict)
    scope: str = "layer"

    @classmethod
    def from_criterion(cls, criterion: PruningCriterion, scope: str) -> HistoryEntry:
        """Record ``criterion`` (its registered name and JSON-ready config)."""
        name = getattr(type(criterion), "name", None)
        return cls(
            criterion=name if isinstance(name, str) else type(criterion).__name__,
            config=_json_ready(dict(criterion.config())),
            scope=scope,
        )

    @classmethod
    def from_dict(cls, data: object) -> HistoryEntry:
        """Read an entry written by :meth:`to_dict`.

        Raises:
            CheckpointError: ``data`` is not such an entry.
        """
        if (
            not isinstance(data, Mapping)
            or not isinstance(data.get("criterion"), str)
            or not isinstance(data.get("config", {}), Mapping)
            or data.get("scope") not in SCOPES
        ):
            raise CheckpointError(
                f"invalid prunefw history entry {_short_repr(data)}: expected "
                '{"criterion": name, "config": {...}, "scope": "global" or "layer"}'
            )
        return cls(data["criterion"], dict(data.get("config", {})), data["scope"])

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"criterion": ..., "config": {...}, "scope": ...}``."""
        return {"criterion": self.criterion, "config": dict(self.config), "scope": self.scope}

    def describe(self) -> str:
        """Return ``"<scope> <criterion>(key=value, ...)"``."""
        return f"{self.scope} {format_call(self.criterion, self.config)}"


@dataclass(frozen=True)
class PruningHistory:
    """Criteria applied to each tensor, by qualified tensor name, in order.

    Attributes:
        tensors: ``{"module.tensor": (entry, ...)}``.
    """

    tensors: Mapping[str, tuple[HistoryEntry, ...]] = field(default_factory=dict)

    @classmethod
    def from_contexts(cls, contexts: Iterable[PruningContext]) -> PruningHistory:
        """Record what ``contexts`` (already pruned, in the order given) applied.

        Tensors are named by their targets' labels: qualified names for a
        :class:`~prunefw.GlobalPruningContext`, and for a
        :class:`~prunefw.LayerPruningContext` built with ``model=``.

        Raises:
            InvalidTypeError: A context of another kind.
        """
        tensors: dict[str, list[HistoryEntry]] = {}
        for ctx in contexts:
            if not isinstance(ctx, PruningContext):
                raise InvalidTypeError(
                    f"cannot record the history of {ctx!r}: expected a PruningContext "
                    "(GlobalPruningContext or LayerPruningContext)"
                )
            for step in ctx.steps:
                entry = HistoryEntry.from_criterion(step.criterion, step.scope)
                for target in step.targets:
                    tensors.setdefault(target.label, []).append(entry)
        return cls({label: tuple(entries) for label, entries in tensors.items()})

    def __add__(self, other: PruningHistory) -> PruningHistory:
        """Return this history followed by ``other`` (entries appended per tensor)."""
        if not isinstance(other, PruningHistory):
            return NotImplemented
        merged = {label: list(entries) for label, entries in self.tensors.items()}
        for label, entries in other.tensors.items():
            merged.setdefault(label, []).extend(entries)
        return PruningHistory({label: tuple(entries) for label, entries in merged.items()})

    def __bool__(self) -> bool:
        return bool(self.tensors)

    def get(self, label: str) -> tuple[HistoryEntry, ...]:
        """Return the entries of tensor ``label`` (empty if none were recorded)."""
        return tuple(self.tensors.get(label, ()))

    def describe(self, label: str) -> str:
        """Return the entries of ``label`` as ``"a then b"``, or ``""``."""
        return " then ".join(entry.describe() for entry in self.get(label))

    def to_dict(self) -> dict[str, list[dict[str, Any]]]:
        """Return ``{label: [entry dict, ...]}``."""
        return {
            label: [entry.to_dict() for entry in entries] for label, entries in self.tensors.items()
        }

    def to_json(self) -> str:
        """Return the history as a compact JSON string."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, *, source: object = None) -> PruningHistory:
        """Read a history written by :meth:`to_json`.

        Args:
            text: The JSON string.
            source: Where ``text`` comes from (a file), named in error messages.

        Raises:
            CheckpointError: ``text`` is not such a history (not JSON, JSON nested
                too deeply to read, or not of the history's shape); the message
                names ``source``.

        Example:
            >>> from prunefw.errors import CheckpointError
            >>> try:
            ...     PruningHistory.from_json("[" * 100_000, source="model.pt")
            ... except CheckpointError as err:
            ...     print(err)
            model.pt: the stored prunefw history is corrupt: JSON nested too deeply to read
        """
        where = "" if source is None else f"{source}: "
        try:
            data = json.loads(text)
        except RecursionError:
            raise CheckpointError(
                f"{where}the stored prunefw history is corrupt: JSON nested too deeply to read"
            ) from None
        except (TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{where}the stored prunefw history is not valid JSON: {exc}"
            ) from None
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise CheckpointError(
                f"{where}the stored prunefw history must be a JSON object of lists, got "
                f"{type(data).__name__}"
            )
        try:
            return cls(
                {
                    str(label): tuple(HistoryEntry.from_dict(item) for item in entries)
                    for label, entries in data.items()
                }
            )
        except CheckpointError as exc:
            raise CheckpointError(f"{where}{exc}") from None

    def attach(self, state_dict: Mapping[str, Any]) -> OrderedDict[str, Any]:
        """Return a shallow copy of ``state_dict`` that carries this history.

        The copy holds the same tensors; its ``_metadata`` is a copy of the
        original one (module versions kept) with the history under
        :data:`METADATA_KEY` of the root entry. An empty history removes the key.
        """
        result: OrderedDict[str, Any] = OrderedDict(state_dict)
        metadata = OrderedDict(
            (key, dict(value)) for key, value in getattr(state_dict, "_metadata", {}).items()
        )
        root = metadata.setdefault("", {})
        root.pop(METADATA_KEY, None)
        if self.tensors:
            root[METADATA_KEY] = self.to_json()
        result._metadata = metadata  # type: ignore[attr-defined]
        return result

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, Any], *, source: object = None
    ) -> PruningHistory:
        """Read the history :meth:`attach` stored in ``state_dict`` (empty if none).

        Args:
            state_dict: The state_dict (its ``_metadata`` holds the history).
            source: Where it was read from (a file), named in error messages.

        Raises:
            CheckpointError: The stored history is corrupt.
        """
        metadata = getattr(state_dict, "_metadata", None)
        root = metadata.get("", {}) if isinstance(metadata, Mapping) else {}
        text = root.get(METADATA_KEY) if isinstance(root, Mapping) else None
        return cls() if text is None else cls.from_json(text, source=source)
