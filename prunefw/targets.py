"""Which tensors a context prunes: resolving modules, names and patterns to targets."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from prunefw.errors import InvalidTypeError, NonFiniteWeightsError, TargetError
from prunefw.reparametrization import is_pruned_tensor, qualified_names

__all__ = [
    "DEFAULT_MODULE_TYPES",
    "PruningTarget",
    "check_finite",
    "check_unique",
    "is_module_type",
    "make_target",
    "resolve_module",
    "select_targets",
]

#: Module types whose ``weight`` the global context prunes by default.
DEFAULT_MODULE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


@dataclass(frozen=True, eq=False)
class PruningTarget:
    """One tensor to prune: ``getattr(module, name)``.

    Attributes:
        module: The module holding the tensor.
        name: The tensor's attribute name (a Parameter, or an already pruned one).
        module_name: The module's qualified name in the model (``"features.0"``),
            or a descriptive label when no model is known.
    """

    module: nn.Module
    name: str
    module_name: str

    @property
    def label(self) -> str:
        """``"module_name.name"``, for messages and reports."""
        return f"{self.module_name}.{self.name}" if self.module_name else self.name

    @property
    def key(self) -> tuple[int, str]:
        """Identity of the tensor: the module's id and the tensor name."""
        return (id(self.module), self.name)


def make_target(
    module: object, name: str, names: dict[int, str], model_given: bool
) -> PruningTarget:
    """Validate ``module.name`` as something torch can prune and wrap it.

    Args:
        module: Should be an :class:`torch.nn.Module`.
        name: The tensor's name.
        names: Qualified names of the model's modules by ``id``.
        model_given: Whether ``names`` comes from a model (then ``module`` must be in it).

    Returns:
        The target.

    Raises:
        InvalidTypeError: ``module`` is not an ``nn.Module`` or ``name`` not a str.
        TargetError: ``module`` is not part of the model, or has no Parameter ``name``.
    """
    if not isinstance(module, nn.Module):
        raise InvalidTypeError(f"expected an nn.Module to prune, got {module!r}")
    if not isinstance(name, str):
        raise InvalidTypeError(f"expected a tensor name (str), got {name!r}")
    if model_given and id(module) not in names:
        raise TargetError(f"{type(module).__name__} {module!r} is not a submodule of the model")
    module_name = names.get(id(module), type(module).__name__)
    parameter = module._parameters.get(name)
    if not is_pruned_tensor(module, name) and not isinstance(parameter, nn.Parameter):
        params = ", ".join(n for n, p in module.named_parameters(recurse=False)) or "none"
        raise TargetError(
            f"module {module_name!r} ({type(module).__name__}) has no parameter {name!r} "
            f"to prune; its parameters: {params}"
        )
    return PruningTarget(module, name, module_name)


def resolve_module(model: nn.Module | None, qualname: str) -> nn.Module:
    """Return ``model``'s submodule called ``qualname`` (``""`` is the model itself).

    Raises:
        TargetError: No model given, or no such submodule (close names are suggested).
    """
    if model is None:
        raise TargetError(
            f"the module name {qualname!r} needs a model to look it up in: pass model=..."
        )
    modules = dict(model.named_modules())
    if qualname not in modules:
        close = difflib.get_close_matches(qualname, list(modules), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise TargetError(f"the model has no submodule {qualname!r}{hint}")
    return modules[qualname]


def _patterns(value: str | Sequence[str] | None, argument: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, (str, Sequence)):
        raise InvalidTypeError(
            f"{argument}= expects a glob string or a list of them, got {value!r}"
        )
    patterns = [value] if isinstance(value, str) else list(value)
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise InvalidTypeError(f"{argument}= expects glob strings, got {pattern!r}")
    return patterns


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


def select_targets(
    model: nn.Module,
    *,
    parameters: Iterable[tuple[nn.Module, str]] | None = None,
    module_types: Sequence[type[nn.Module] | str] | None = None,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    tensor_name: str = "weight",
) -> list[PruningTarget]:
    """Resolve the tensors a global context prunes.

    Either explicit ``parameters`` pairs, or every module of ``module_types``
    (default :data:`DEFAULT_MODULE_TYPES`; classes, or class names as
    :func:`is_module_type` matches them) whose qualified name matches one of the
    ``include`` globs (default: all) and none of the ``exclude`` globs.

    Raises:
        TargetError: Empty result, duplicates, missing tensors, or ``parameters``
            combined with selection arguments.
        InvalidTypeError: Arguments of the wrong type.
    """
    if not isinstance(model, nn.Module):
        raise InvalidTypeError(f"model must be an nn.Module, got {model!r}")
    if not isinstance(tensor_name, str):
        raise InvalidTypeError(f"tensor_name= expects a str such as 'weight', got {tensor_name!r}")
    if module_types is not None and not isinstance(module_types, Sequence):
        raise InvalidTypeError(
            f"module_types= expects a list of nn.Module classes, got {module_types!r}"
        )
    names = qualified_names(model)
    if parameters is not None:
        if module_types is not None or include is not None or exclude is not None:
            raise TargetError(
                "pass either parameters=[(module, name), ...] or module_types=/include=/"
                "exclude=, not both"
            )
        targets = []
        for pair in parameters:
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise InvalidTypeError(
                    f"parameters= expects (module, tensor_name) pairs, got {pair!r}"
                )
            targets.append(make_target(pair[0], pair[1], names, model_given=True))
        check_unique(targets)
        if not targets:
            raise TargetError("parameters= is empty: there is nothing to prune")
        return targets

    types = tuple(DEFAULT_MODULE_TYPES if module_types is None else module_types)
    for item in types:
        if not (isinstance(item, str) or (isinstance(item, type) and issubclass(item, nn.Module))):
            raise InvalidTypeError(
                f"module_types= expects nn.Module subclasses or class names such as "
                f"'Linear', got {item!r}"
            )
    included = _patterns(include, "include")
    excluded = _patterns(exclude, "exclude")
    targets = []
    for qualname, module in model.named_modules():
        if not is_module_type(module, types):
            continue
        if included and not any(fnmatch.fnmatchcase(qualname, p) for p in included):
            continue
        if any(fnmatch.fnmatchcase(qualname, p) for p in excluded):
            continue
        has_tensor = getattr(module, tensor_name, None) is not None
        if has_tensor:
            targets.append(make_target(module, tensor_name, names, model_given=True))
    if not targets:
        type_names = ", ".join(t if isinstance(t, str) else t.__name__ for t in types)
        raise TargetError(
            f"no tensor to prune: no module of type ({type_names}) with a {tensor_name!r} "
            f"tensor matches include={included or '*'} exclude={excluded or []}"
        )
    return targets


def check_unique(targets: Sequence[PruningTarget]) -> None:
    """Raise :class:`TargetError` if a tensor is listed twice."""
    seen: dict[tuple[int, str], PruningTarget] = {}
    for target in targets:
        if target.key in seen:
            raise TargetError(
                f"{target.label} is listed twice (module {target.module_name!r}, tensor "
                f"{target.name!r}); list each tensor once, with all its criteria"
            )
        seen[target.key] = target


def check_finite(target: PruningTarget, tensor: torch.Tensor, what: str = "weights") -> None:
    """Refuse NaN or infinite values (see :class:`~prunefw.errors.NonFiniteWeightsError`).

    Args:
        target: The target the tensor belongs to, for the message.
        tensor: The weights or scores to check.
        what: ``"weights"`` or a description of the scores, for the message.

    Raises:
        NonFiniteWeightsError: ``tensor`` has NaN or infinite entries.
    """
    if not tensor.is_floating_point() or bool(torch.isfinite(tensor.sum())):
        return  # a sum is finite only if every term is (NaN and inf propagate)
    if not bool(torch.isfinite(tensor).all()):
        nan = int(torch.isnan(tensor).sum())
        inf = int(torch.isinf(tensor).sum())
        raise NonFiniteWeightsError(
            f"{target.label} has {nan} NaN and {inf} infinite {what}; pruning multiplies "
            "by a 0/1 mask and nan*0 (or inf*0) is nan, so these entries cannot be "
            "pruned away. Repair the tensor first, e.g. with torch.nan_to_num_()."
        )
