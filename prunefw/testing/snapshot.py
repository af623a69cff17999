"""Bit-level model snapshots: did pruning change anything about a model, even one bit?"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

__all__ = ["BitPattern", "ModelSnapshot", "same_bits"]


class BitPattern:
    """A tensor's dtype, shape and raw bytes; two are equal if their bits are.

    Unlike :func:`torch.equal`, ``0.0`` and ``-0.0`` differ and a NaN equals the same
    NaN. Tensors without raw bytes (meta, quantized, ...) compare by dtype and shape.

    Args:
        tensor: The tensor; its bytes are copied.

    Example:
        >>> import torch
        >>> BitPattern(torch.tensor([0.0])) == BitPattern(torch.tensor([-0.0]))
        False
        >>> nan = torch.tensor([float("nan")])
        >>> BitPattern(nan) == BitPattern(nan.clone())
        True
    """

    __slots__ = ("data", "dtype", "shape")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.dtype = tensor.dtype
        self.shape = tuple(tensor.shape)
        self.data: torch.Tensor | None
        try:
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            self.data = flat.view(torch.uint8).clone()
        except (RuntimeError, NotImplementedError):  # meta, quantized, ...: no raw bytes
            self.data = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BitPattern):
            return NotImplemented
        if self.data is None or other.data is None:
            return self.dtype == other.dtype and self.shape == other.shape
        return (
            self.dtype == other.dtype
            and self.shape == other.shape
            and torch.equal(self.data, other.data)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{str(self.dtype).removeprefix('torch.')} tensor of shape {self.shape}>"


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a`` and ``b`` have the same dtype, shape and bits (see :class:`BitPattern`)."""
    return BitPattern(a) == BitPattern(b)


#: The hook dicts of :class:`torch.nn.Module` a snapshot records.
_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_pre_hooks_always_called",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_backward_pre_hooks",
    "_backward_hooks",
    "_state_dict_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)


def _identity_and_bits(value: object) -> object:
    """Record a module attribute: its identity and type, and a tensor's bits too."""
    if isinstance(value, torch.Tensor) and value.layout == torch.strided:
        return (id(value), type(value).__name__, value.requires_grad, BitPattern(value))
    return (id(value), type(value).__name__)


@dataclass(frozen=True)
class ModelSnapshot:
    """Everything about a model that pruning may change, comparable bit for bit.

    Per module: its type, the keys of its ``__dict__`` and the identity of every
    value there (tensors also by dtype, shape and raw bytes); every parameter and
    buffer by identity, ``requires_grad`` and raw bytes (buffers also by
    persistence); every hook dict (forward pre-hooks, forward hooks, ...) by keys
    and hook identity, pruning hooks also by their attributes. For the whole
    model: the ``state_dict`` keys, in order, and the raw bytes of every value.

    Attributes:
        entries: The recorded values, by description.

    Example:
        >>> from torch import nn
        >>> layer = nn.Linear(2, 2)
        >>> before = ModelSnapshot.take(layer)
        >>> before.diff(ModelSnapshot.take(layer))
        []
        >>> with torch.no_grad():
        ...     _ = layer.bias.add_(1.0)
        >>> before.diff(ModelSnapshot.take(layer))  # doctest: +NORMALIZE_WHITESPACE
        ["module '' (Linear): parameter 'bias' changed",
         "state_dict: value of 'bias' changed"]
    """

    entries: dict[str, object]

    @classmethod
    def take(cls, model: nn.Module) -> ModelSnapshot:
        """Record the state of ``model`` and all its submodules.

        Args:
            model: The model.

        Returns:
            The snapshot.
        """
        entries: dict[str, object] = {}
        for qualname, module in model.named_modules(remove_duplicate=False):
            where = f"module {qualname!r} ({type(module).__name__})"
            attributes = vars(module)
            entries[f"{where}: type"] = type(module)
            entries[f"{where}: __dict__ keys"] = tuple(sorted(attributes))
            for key, value in attributes.items():
                if key not in ("_parameters", "_buffers", "_modules", *_HOOK_DICTS):
                    entries[f"{where}: attribute {key!r}"] = _identity_and_bits(value)
            for key, param in module._parameters.items():
                entries[f"{where}: parameter {key!r}"] = _identity_and_bits(param)
            for key, buffer in module._buffers.items():
                persistent = key not in module._non_persistent_buffers_set
                entries[f"{where}: buffer {key!r}"] = (_identity_and_bits(buffer), persistent)
            for hooks in _HOOK_DICTS:
                value = attributes.get(hooks)
                if value is None:
                    continue
                entries[f"{where}: {hooks}"] = (id(value), [(k, id(h)) for k, h in value.items()])
                for key, hook in value.items():
                    if isinstance(hook, prune.BasePruningMethod):
                        state = sorted((a, id(v)) for a, v in vars(hook).items())
                        entries[f"{where}: {hooks}[{key}] attributes"] = state
        state_dict = model.state_dict()
        entries["state_dict: keys"] = tuple(state_dict)
        for key, value in state_dict.items():
            recorded = BitPattern(value) if isinstance(value, torch.Tensor) else value
            entries[f"state_dict: value of {key!r}"] = recorded
        return cls(entries)

    def diff(self, other: ModelSnapshot) -> list[str]:
        """Describe how ``other`` differs from this snapshot (empty if identical).

        Args:
            other: A later snapshot of the same model.

        Returns:
            One line per difference, in this snapshot's order, then additions.
        """
        lines = []
        for key, value in self.entries.items():
            if key not in other.entries:
                lines.append(f"{key}: gone")
            elif other.entries[key] != value:
                lines.append(f"{key} changed")
        lines.extend(f"{key}: new" for key in other.entries if key not in self.entries)
        return lines
