"""The one exception hierarchy of prunefw.

Every exception prunefw raises on purpose derives from :class:`PrunefwError`.
Where an error is what Python calls a bad *value* it also derives from
:class:`ValueError`; where it is a bad *type* it derives from :class:`TypeError`,
so ``except ValueError`` keeps working for code written against plain torch.

Example:
    >>> from prunefw import MagnitudeCriterion
    >>> from prunefw.errors import InvalidArgumentError
    >>> try:
    ...     MagnitudeCriterion(min_threshold=-1.0)
    ... except InvalidArgumentError as err:
    ...     print(type(err).__mro__[1].__name__, isinstance(err, ValueError))
    PrunefwError True
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CriterionConflictError",
    "InvalidArgumentError",
    "InvalidMaskError",
    "InvalidTypeError",
    "NonFiniteWeightsError",
    "PluginError",
    "PluginLoadError",
    "PrunefwError",
    "PrunefwWarning",
    "PruningTypeError",
    "RecipeError",
    "TargetError",
    "UnknownCriterionError",
    "WholeTensorPrunedWarning",
    "add_note",
    "exception_reason",
]


def add_note(exc: BaseException, note: str) -> None:
    """Add ``note`` to ``exc`` (shown under its traceback) where Python supports it.

    Python 3.11+ has :meth:`BaseException.add_note`; on 3.10 the note is dropped.

    Example:
        >>> err = ValueError("bad")
        >>> add_note(err, "while pruning 0.weight")
        >>> getattr(err, "__notes__", ["while pruning 0.weight"])
        ['while pruning 0.weight']
    """
    if hasattr(exc, "add_note"):
        exc.add_note(note)


def exception_reason(exc: BaseException) -> str:
    """``Type: first line`` of an exception (its first sentence, if the line is long).

    How prunefw quotes another library's exception inside its own message.

    Example:
        >>> exception_reason(RuntimeError("PytorchStreamWriter failed writing file"))
        'RuntimeError: PytorchStreamWriter failed writing file'
        >>> exception_reason(KeyError())
        'KeyError'
    """
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(first) > 120 and ". " in first:
        first = first.split(". ")[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class PrunefwError(Exception):
    """Base class of every error prunefw raises on purpose."""


class InvalidArgumentError(PrunefwError, ValueError):
    """An argument has a value outside what is valid (e.g. a ratio above 1)."""


class InvalidTypeError(PrunefwError, TypeError):
    """An argument has the wrong type (e.g. a float where a criterion is expected)."""


class PruningTypeError(InvalidTypeError):
    """A criterion's ``PRUNING_TYPE`` does not fit the context.

    Raised, for example, when a ``"structured"`` criterion is given to
    :class:`~prunefw.GlobalPruningContext`, which (like
    :func:`torch.nn.utils.prune.global_unstructured`) only takes unstructured ones.
    """


class TargetError(PrunefwError, ValueError):
    """The set of tensors to prune is wrong.

    Examples: a module without the named tensor, a module listed twice, a qualified
    name that matches no module, or an empty set of tensors.
    """


class NonFiniteWeightsError(PrunefwError, ValueError):
    """A tensor to prune holds NaN or infinite values.

    torch's reparametrization computes ``weight = weight_orig * weight_mask`` and
    ``nan * 0`` is ``nan`` (``inf * 0`` too), so pruning cannot remove such
    entries; prunefw refuses them instead of producing a silently broken model.
    """


class InvalidMaskError(PrunefwError, ValueError):
    """A criterion returned a mask of the wrong shape, type or values."""


class UnknownCriterionError(PrunefwError, ValueError):
    """No criterion is registered under the requested name."""


class CheckpointError(PrunefwError, ValueError):
    """A state_dict does not fit the model it is loaded into."""


class RecipeError(PrunefwError, ValueError):
    """A pruning recipe is invalid, or does not fit the model it is applied to.

    The message names the recipe file, the section or rule (``[global]``,
    ``[layer #2]``) and how to fix it, e.g.
    ``recipe.toml: [layer #2] unknown key 'mtch'. Fix: use 'match' ...``.
    """


class PluginError(PrunefwError):
    """A plugin is broken: it failed to import, register or answer a hook."""


class PluginLoadError(PluginError, ImportError):
    """Importing a plugin's entry point failed; the message names it and its distribution."""


class CriterionConflictError(PluginError):
    """Two plugins registered criteria under the same name; the message names both."""


class PrunefwWarning(UserWarning):
    """Base class of the warnings prunefw issues."""


class WholeTensorPrunedWarning(PrunefwWarning):
    """A criterion pruned every entry of a tensor, which is rarely what was meant.

    Issued for threshold criteria (e.g. ``MagnitudeCriterion(min_threshold=0.1)`` on
    freshly initialised weights, whose magnitudes are all small).
    """
