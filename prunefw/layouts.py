"""Linear-like layers and how they store their weight.

``nn.Linear`` stores its weight as ``(out_features, in_features)``; Hugging Face's
``transformers.pytorch_utils.Conv1D`` (GPT-2's projections) computes the same
``x @ W + b`` with the weight stored ``(in_features, out_features)``. prunefw treats
every *linear-like* module type the same way:

* its ``weight`` is a default target of :class:`~prunefw.GlobalPruningContext`;
* criteria that see a tensor's shape (``PRUNING_TYPE`` ``"structured"`` or
  ``"global"``, e.g. per-row or N:M criteria) see it as ``(out_features,
  in_features)`` whatever the storage: the layer context hands them the transposed
  view of an ``"in_out"`` weight and transposes their mask back.

The types come from plugins through the ``prunefw_register_linear_layers`` hook;
prunefw's built-in plugin registers ``nn.Linear`` and, by name (nothing is imported),
``transformers.pytorch_utils.Conv1D``.

Example:
    >>> from torch import nn
    >>> weight_layout(nn.Linear(2, 3))
    'out_in'
    >>> weight_layout(nn.Conv2d(1, 1, 1)) is None
    True
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from prunefw.errors import InvalidArgumentError, InvalidTypeError, PluginError
from prunefw.plugin_manager import PluginManager

__all__ = [
    "WEIGHT_LAYOUTS",
    "LinearLayerType",
    "LinearLayers",
    "WeightLayout",
    "default_linear_layers",
    "is_module_type",
    "out_in_view",
    "weight_layout",
]

#: How a linear-like layer stores its weight.
WeightLayout = Literal["out_in", "in_out"]

#: The valid weight layouts.
WEIGHT_LAYOUTS: tuple[WeightLayout, ...] = ("out_in", "in_out")


def is_module_type(module: nn.Module, types: Sequence[type[nn.Module] | str]) -> bool:
    """Whether ``module`` is an instance of one of ``types``, given as classes or names.

    A name matches a class of the module's MRO by its short name (``"Linear"``) or
    its qualified name (``"torch.nn.modules.linear.Linear"``), so names select
    subclasses like classes do. Nothing is imported to resolve a name.

    Example:
        >>> from torch import nn
        >>> is_module_type(nn.Linear(2, 2), ["Linear"])
        True
        >>> is_module_type(nn.LazyLinear(2), ["torch.nn.modules.linear.Linear"])
        True
        >>> is_module_type(nn.Conv2d(1, 1, 1), [nn.Linear, "Conv1d"])
        False
    """
    classes = tuple(t for t in types if isinstance(t, type))
    if classes and isinstance(module, classes):
        return True
    names = {t for t in types if isinstance(t, str)}
    if not names:
        return False
    return any(
        cls.__name__ in names or f"{cls.__module__}.{cls.__qualname__}" in names
        for cls in type(module).__mro__
    )


@dataclass(frozen=True)
class LinearLayerType:
    """A module type that computes a linear map of its last input dimension.

    Attributes:
        module_type: The class, or its name (short or qualified, matched against the
            classes of a module's MRO without importing anything, see
            :func:`is_module_type`).
        weight_layout: ``"out_in"`` (``nn.Linear``: ``(out_features, in_features)``)
            or ``"in_out"`` (``Conv1D``: ``(in_features, out_features)``).
        weight: The name of the weight tensor (default ``"weight"``).

    Raises:
        InvalidTypeError: ``module_type`` is neither an ``nn.Module`` subclass nor a
            string.
        InvalidArgumentError: An unknown ``weight_layout`` or an empty name.
    """

    module_type: type[nn.Module] | str
    weight_layout: WeightLayout = "out_in"
    weight: str = "weight"

    def __post_init__(self) -> None:
        kind = self.module_type
        if not (isinstance(kind, str) or (isinstance(kind, type) and issubclass(kind, nn.Module))):
            raise InvalidTypeError(
                f"LinearLayerType.module_type must be an nn.Module subclass or a class name, "
                f"got {kind!r}"
            )
        if isinstance(kind, str) and not kind:
            raise InvalidArgumentError("LinearLayerType.module_type must not be empty")
        if self.weight_layout not in WEIGHT_LAYOUTS:
            raise InvalidArgumentError(
                f"LinearLayerType.weight_layout is {self.weight_layout!r}; expected one of "
                f"{', '.join(map(repr, WEIGHT_LAYOUTS))}"
            )
        if not isinstance(self.weight, str) or not self.weight:
            raise InvalidArgumentError(
                f"LinearLayerType.weight must be a tensor name, got {self.weight!r}"
            )

    @property
    def label(self) -> str:
        """The type's name, for messages."""
        kind = self.module_type
        return kind if isinstance(kind, str) else kind.__name__


class LinearLayers:
    """The linear-like layer types known to prunefw (an immutable collection).

    Args:
        types: The registered types, in order; the first one a module matches wins.

    Example:
        >>> from torch import nn
        >>> layers = LinearLayers([LinearLayerType(nn.Linear)])
        >>> layers.layout(nn.Linear(2, 2), "weight"), layers.layout(nn.Linear(2, 2), "bias")
        ('out_in', None)
    """

    def __init__(self, types: Iterable[LinearLayerType]) -> None:
        self.types: tuple[LinearLayerType, ...] = tuple(types)

    @classmethod
    def from_plugin_manager(cls, plugin_manager: PluginManager) -> LinearLayers:
        """Collect every plugin's ``prunefw_register_linear_layers``.

        Raises:
            PluginError: A plugin returned something that is not a sequence of
                :class:`LinearLayerType` (the message names the plugin).
        """
        types: list[LinearLayerType] = []
        for result, info in plugin_manager.call_per_plugin("prunefw_register_linear_layers"):
            if isinstance(result, (str, bytes)) or not isinstance(result, Sequence):
                raise PluginError(
                    f"{info.origin}: prunefw_register_linear_layers must return a sequence of "
                    f"prunefw.layouts.LinearLayerType, got {result!r}"
                )
            for item in result:
                if not isinstance(item, LinearLayerType):
                    raise PluginError(
                        f"{info.origin}: prunefw_register_linear_layers returned {item!r}, "
                        "which is not a prunefw.layouts.LinearLayerType"
                    )
                types.append(item)
        return cls(types)

    def module_types(self) -> tuple[type[nn.Module] | str, ...]:
        """The registered module types (classes or names), in order."""
        return tuple(t.module_type for t in self.types)

    def layout(self, module: nn.Module, name: str = "weight") -> WeightLayout | None:
        """The layout of ``module.name`` if it is a linear-like layer's weight, else ``None``."""
        for entry in self.types:
            if entry.weight == name and is_module_type(module, [entry.module_type]):
                return entry.weight_layout
        return None

    def __repr__(self) -> str:
        return f"LinearLayers({', '.join(f'{t.label}:{t.weight_layout}' for t in self.types)})"


@functools.cache
def default_linear_layers() -> LinearLayers:
    """Return the process-wide linear-like layer types, collected on first call.

    Built from a fresh :class:`~prunefw.plugin_manager.PluginManager`, like
    :func:`prunefw.registry.default_registry`; ``default_linear_layers.cache_clear()``
    forgets it.
    """
    return LinearLayers.from_plugin_manager(PluginManager())


def weight_layout(module: nn.Module, name: str = "weight") -> WeightLayout | None:
    """Return how ``module.name`` stores a linear map, or ``None`` if it is not linear-like.

    Args:
        module: Any module.
        name: The tensor's name.

    Returns:
        ``"out_in"``, ``"in_out"`` or ``None``.
    """
    return default_linear_layers().layout(module, name)


def out_in_view(tensor: torch.Tensor, layout: WeightLayout | None) -> torch.Tensor:
    """Return ``tensor`` as ``(out_features, in_features)``: a transposed view for ``"in_out"``.

    The view shares memory with ``tensor``; applying this function twice gives the
    original layout back.

    Example:
        >>> import torch
        >>> out_in_view(torch.zeros(3, 5), "in_out").shape
        torch.Size([5, 3])
    """
    return tensor.transpose(0, 1) if layout == "in_out" else tensor
