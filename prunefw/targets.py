"""Which tensors a context prunes: resolving modules, names and patterns to targets."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from prunefw.errors import InvalidTypeError, NonFiniteWeightsError, TargetError
from prunefw.layouts import WeightLayout, default_linear_layers, is_module_type
from prunefw.reparametrization import (
    ORIG_SUFFIX,
    is_pruned_tensor,
    original_of,
    qualified_names,
)

__all__ = [
    "CONVOLUTION_TYPES",
    "PruningTarget",
    "check_finite",
    "check_unique",
    "default_module_types",
    "is_glob",
    "is_module_type",
    "make_target",
    "match_modules",
    "output_head",
    "resolve_module",
    "select_targets",
    "share_tensors",
    "tensor_identity",
]

#: Convolutions, whose ``weight`` the global context prunes by default (besides the
#: linear-like types of :mod:`prunefw.layouts`).
CONVOLUTION_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def default_module_types() -> tuple[type[nn.Module] | str, ...]:
    """The module types the global context selects by default.

    Every linear-like type registered through ``prunefw_register_linear_layers``
    (``nn.Linear`` and Hugging Face's ``Conv1D`` built in) and the convolutions of
    :data:`CONVOLUTION_TYPES`. Embeddings are not among them.
    """
    return (*default_linear_layers().module_types(), *CONVOLUTION_TYPES)


def output_head(model: nn.Module) -> nn.Module | None:
    """The output head a model declares through ``get_output_embeddings()``, if any.

    Hugging Face models declare their language-modelling head this way; the global
    context leaves it dense by default (as the Wanda and SparseGPT papers do).
    """
    getter = getattr(model, "get_output_embeddings", None)
    if not callable(getter):
        return None
    try:
        head = getter()
    except (AttributeError, NotImplementedError):
        return None
    return head if isinstance(head, nn.Module) else None


def tensor_identity(module: nn.Module, name: str) -> int:
    """Identify the Parameter behind ``module.name`` (its ``name_orig`` once pruned).

    Two ``(module, name)`` pairs with the same identity are *aliases* of one
    tensor, e.g. tied input and output embeddings.
    """
    original = original_of(module, name)
    return id(original if original is not None else module._parameters.get(name))


@dataclass(frozen=True, eq=False)
class PruningTarget:
    """One tensor to prune: ``getattr(module, name)``.

    Attributes:
        module: The module holding the tensor.
        name: The tensor's attribute name (a Parameter, or an already pruned one).
        module_name: The module's qualified name in the model (``"features.0"``),
            or a descriptive label when no model is known.
        aliases: Other ``(module, name)`` places of the same Parameter (e.g. tied
            embeddings): the tensor is ranked once, and every alias gets its mask.
    """

    module: nn.Module
    name: str
    module_name: str
    aliases: tuple[PruningTarget, ...] = ()

    @property
    def modules(self) -> tuple[nn.Module, ...]:
        """The module and those of its aliases: everything pruning this tensor changes."""
        return (self.module, *(alias.module for alias in self.aliases))

    @property
    def layout(self) -> WeightLayout | None:
        """How the tensor stores a linear map (see :mod:`prunefw.layouts`), or ``None``."""
        return default_linear_layers().layout(self.module, self.name)

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
    modules = dict(model.named_modules(remove_duplicate=False))
    if qualname not in modules:
        close = difflib.get_close_matches(qualname, list(modules), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise TargetError(f"the model has no submodule {qualname!r}{hint}")
    return modules[qualname]


def is_glob(text: str) -> bool:
    """Whether a module name is a glob pattern (contains ``*``, ``?`` or ``[``)."""
    return any(char in text for char in "*?[")


def match_modules(model: nn.Module | None, pattern: str, tensor_name: str) -> list[nn.Module]:
    """The modules whose qualified name matches the glob ``pattern`` and that have the tensor.

    Raises:
        TargetError: No model given, or no module matches (the message lists some names).
    """
    if model is None:
        raise TargetError(f"the module pattern {pattern!r} needs a model to match: pass model=...")
    matched = [
        module
        for qualname, module in model.named_modules()
        if fnmatch.fnmatchcase(qualname, pattern) and getattr(module, tensor_name, None) is not None
    ]
    if not matched:
        sample = [name for name, _ in model.named_modules() if name][:8]
        raise TargetError(
            f"no module matching {pattern!r} has a {tensor_name!r} tensor; module names look "
            f"like {', '.join(map(repr, sample))}"
        )
    return matched


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


def select_targets(
    model: nn.Module,
    *,
    parameters: Iterable[tuple[nn.Module, str]] | None = None,
    module_types: Sequence[type[nn.Module] | str] | None = None,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    tensor_name: str = "weight",
    include_output_head: bool = False,
) -> list[PruningTarget]:
    """Resolve the tensors a global context prunes.

    Either explicit ``parameters`` pairs, or every module of ``module_types``
    (default :func:`default_module_types`; classes, or class names as
    :func:`is_module_type` matches them) whose qualified name matches one of the
    ``include`` globs (default: all) and none of the ``exclude`` globs, except the
    model's :func:`output_head` unless ``include_output_head``.

    A Parameter reachable from several modules (tied weights) is one target,
    named by its first place, with the others as its
    :attr:`~PruningTarget.aliases`.

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
        return share_tensors(targets, model)

    types = tuple(default_module_types() if module_types is None else module_types)
    for item in types:
        if not (isinstance(item, str) or (isinstance(item, type) and issubclass(item, nn.Module))):
            raise InvalidTypeError(
                f"module_types= expects nn.Module subclasses or class names such as "
                f"'Linear', got {item!r}"
            )
    included = _patterns(include, "include")
    excluded = _patterns(exclude, "exclude")
    head = None if include_output_head else output_head(model)
    skipped_head = False
    targets = []
    for qualname, module in model.named_modules():
        if not is_module_type(module, types):
            continue
        if module is head:
            skipped_head = True
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
        hint = (
            "; the output head is left out by default: pass include_output_head=True"
            if skipped_head
            else ""
        )
        raise TargetError(
            f"no tensor to prune: no module of type ({type_names}) with a {tensor_name!r} "
            f"tensor matches include={included or '*'} exclude={excluded or []}{hint}"
        )
    return share_tensors(targets, model)


def _places(model: nn.Module) -> dict[int, list[tuple[nn.Module, str, str]]]:
    """Every ``(module, qualified name, tensor name)`` of each Parameter, by identity."""
    places: dict[int, list[tuple[nn.Module, str, str]]] = {}
    for qualname, module in model.named_modules():
        for key, param in module._parameters.items():
            if param is None:
                continue
            name = key.removesuffix(ORIG_SUFFIX)
            if name == key or not is_pruned_tensor(module, name):
                name = key
            places.setdefault(id(param), []).append((module, qualname, name))
    return places


def share_tensors(targets: Sequence[PruningTarget], model: nn.Module | None) -> list[PruningTarget]:
    """Merge targets that name one Parameter, and attach all its places in ``model``.

    Args:
        targets: Candidate targets, in order.
        model: The model to find aliases in; ``None`` looks among ``targets`` only.

    Returns:
        One target per Parameter, in first-seen order, each with every other place of
        its Parameter as :attr:`~PruningTarget.aliases`.
    """
    places = _places(model) if model is not None else {}
    if model is None:
        for target in targets:
            ident = tensor_identity(target.module, target.name)
            places.setdefault(ident, []).append((target.module, target.module_name, target.name))
    merged: dict[int, PruningTarget] = {}
    for target in targets:
        ident = tensor_identity(target.module, target.name)
        if ident in merged:
            continue
        aliases = tuple(
            PruningTarget(module, name, qualname)
            for module, qualname, name in places.get(ident, [])
            if not (module is target.module and name == target.name)
        )
        merged[ident] = replace(target, aliases=aliases) if aliases else target
    return list(merged.values())


def check_unique(targets: Sequence[PruningTarget], *, aliases: bool = False) -> None:
    """Raise :class:`TargetError` if a tensor is listed twice.

    Args:
        targets: The targets.
        aliases: Also refuse two places of one Parameter (e.g. tied embeddings).
    """
    seen: dict[tuple[int, str], PruningTarget] = {}
    tensors: dict[int, PruningTarget] = {}
    for target in targets:
        first = seen.get(target.key)
        if first is not None and first.module_name != target.module_name:
            raise TargetError(
                f"{first.label} and {target.label} are the same tensor: {target.module_name!r} "
                f"is another name of module {first.module_name!r}; list it once"
            )
        if first is not None:
            raise TargetError(
                f"{target.label} is listed twice (module {target.module_name!r}, tensor "
                f"{target.name!r}); list each tensor once, with all its criteria"
            )
        seen[target.key] = target
        ident = tensor_identity(target.module, target.name)
        if aliases and ident in tensors:
            raise TargetError(
                f"{tensors[ident].label} and {target.label} are one shared Parameter (tied "
                "weights), listed twice; list it once: its mask applies to both"
            )
        tensors[ident] = target


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
