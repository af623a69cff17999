"""The calibration step: criteria that look at activations see batches before masks.

A criterion with ``requires_calibration = True`` (e.g. Wanda, which weighs each
weight by the norm of its input feature) gets, before any mask is computed:

1. :meth:`~prunefw.PruningCriterion.reset_calibration` once;
2. :meth:`~prunefw.PruningCriterion.observe` for every forward call of every target
   module it will prune, for every calibration batch.

The batches run through the whole model under :func:`torch.no_grad`, with every
module in eval mode (so BatchNorm statistics and dropout do not change; training
flags are restored afterwards). The forward hooks are removed whatever happens.
The model is not otherwise touched, so a failing calibration leaves it unchanged.

What ``calibration_data`` may be (:func:`calibration_batches`): any iterable of
batches (a list, a generator, a ``DataLoader``), or one tensor:

* an **integer tensor of dimension 2** (token ids, ``(batch, sequence)``, what a
  tokenizer returns as ``input_ids``) is **one batch**: the model sees it whole,
  not row by row;
* any other tensor (e.g. float inputs ``(N, features)``) is iterated along dim 0,
  as any iterable: each row is one batch.

How a batch is passed to the model (unless you give ``forward=``): a
:class:`~collections.abc.Mapping` as keyword arguments (``{"input_ids": ...,
"attention_mask": ...}``), a tuple or list as positional arguments, anything else
(a tensor) as the single argument.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from prunefw.criteria.base import PruningCriterion
from prunefw.errors import InvalidArgumentError, add_note
from prunefw.targets import PruningTarget

__all__ = ["Forward", "calibrate", "calibration_batches", "call_model"]

#: Calls the model on one batch; the default is :func:`call_model`.
Forward = Callable[[nn.Module, Any], Any]


def call_model(model: nn.Module, batch: Any) -> Any:
    """Call ``model`` on one batch: a mapping as kwargs, a tuple/list as args, else as is.

    Example:
        >>> from torch import nn
        >>> import torch
        >>> call_model(nn.Identity(), torch.ones(1)).tolist()
        [1.0]
        >>> call_model(nn.Bilinear(2, 3, 1), (torch.ones(1, 2), torch.ones(1, 3))).shape
        torch.Size([1, 1])
    """
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def calibration_batches(data: Iterable[Any]) -> Iterable[Any]:
    """Return ``data`` as an iterable of batches: a 2-D integer tensor becomes one batch.

    A tensor of token ids ``(batch, sequence)`` is one batch for a language model;
    iterating it would feed single rows (1-D token sequences) one at a time. Any
    other ``data`` is returned as is (a float tensor still iterates along dim 0; an
    empty tensor gives no batch).

    Example:
        >>> import torch
        >>> tokens = torch.zeros(4, 16, dtype=torch.long)
        >>> [tuple(batch.shape) for batch in calibration_batches(tokens)]
        [(4, 16)]
        >>> [tuple(batch.shape) for batch in calibration_batches(torch.zeros(2, 3))]
        [(3,), (3,)]
    """
    if (
        isinstance(data, torch.Tensor)
        and data.dim() == 2
        and data.shape[0] > 0
        and not data.dtype.is_floating_point
        and not data.dtype.is_complex
        and data.dtype != torch.bool
    ):
        return [data]
    return data


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _observer(criterion: PruningCriterion, target: PruningTarget) -> Callable[..., None]:
    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        try:
            criterion.observe(module, target.name, inputs, output)
        except Exception as exc:
            add_note(exc, f"while calibrating {criterion!r} on {target.label}")
            raise

    return hook


def calibrate(
    model: nn.Module | None,
    plan: Sequence[tuple[PruningCriterion, Sequence[PruningTarget]]],
    batches: Iterable[Any] | None,
    forward: Forward | None = None,
) -> None:
    """Run the calibration step for the criteria of ``plan`` that require it.

    Args:
        model: The model to run the batches through.
        plan: Each criterion with the targets it will prune.
        batches: Calibration batches; may be ``None`` if no criterion needs them.
            A 2-D integer tensor (token ids) is one batch; any other tensor is
            iterated along dim 0 (see :func:`calibration_batches`).
        forward: How to call the model on a batch (default :func:`call_model`).

    Raises:
        InvalidArgumentError: A criterion needs calibration but no batches (or no
            model) were given, or ``batches`` is empty.
    """
    needed = [(crit, targets) for crit, targets in plan if crit.requires_calibration]
    if not needed:
        return
    names = ", ".join(repr(crit) for crit, _ in needed)
    if batches is None:
        raise InvalidArgumentError(
            f"{names} needs calibration data: call prune(calibration_data=batches) with an "
            "iterable of inputs for the model"
        )
    if model is None:
        raise InvalidArgumentError(
            f"{names} needs calibration, which runs the model: pass model=... to the context"
        )
    forward = forward or call_model
    for crit, _ in needed:
        crit.reset_calibration()
    handles = []
    count = 0
    try:
        for crit, targets in needed:
            for target in targets:
                hook = _observer(crit, target)
                handles.append(target.module.register_forward_hook(hook))
        with torch.no_grad(), _eval_mode(model):
            for batch in calibration_batches(batches):
                forward(model, batch)
                count += 1
    finally:
        for handle in handles:
            handle.remove()
    if count == 0:
        raise InvalidArgumentError(f"calibration_data was empty; {names} needs at least one batch")
