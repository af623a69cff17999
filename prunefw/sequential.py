"""Sequential calibration: calibrate and prune a model one block at a time.

The layer-wise procedure of SparseGPT (Frantar and Alistarh, 2023) and Wanda (Sun
et al., 2023) for large language models: the calibration batches are run up to the
first block (a decoder layer) once, then for each block in turn

1. the block runs on its inputs with the criteria's observers on its targets (the
   calibration step of :mod:`prunefw.calibration`, for this block only: criteria
   are reset first, so statistics of one block are held at a time);
2. the block's targets are pruned, exactly as the context would prune them;
3. the **pruned** block runs on the same inputs; its outputs are the next block's
   inputs.

So the statistics of block ``i + 1`` are taken on what the already-pruned blocks
``0 .. i`` produce, as the pruned model will see it, and only one block's inputs
(the hidden states of the calibration tokens) and statistics are held at a time,
instead of running the whole model per batch with every target's statistics alive.

Use it with a :class:`~prunefw.LayerPruningContext` (per-tensor criteria such as
Wanda, which compares per output row anyway); a global context ranks all blocks
together and cannot be split. Criteria that need no calibration are simply applied
block by block.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from prunefw import LayerPruningContext, MagnitudeCriterion
    >>> from prunefw.sequential import prune_sequential
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(*(nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(3)))
    >>> ctx = LayerPruningContext({"*.0": MagnitudeCriterion(amount=0.5)}, model=model)
    >>> events = []
    >>> prune_sequential(ctx, [torch.randn(4, 8)], blocks=model, progress=events.append)
    >>> [(e.stage, e.done, e.total, e.item) for e in events]  # doctest: +NORMALIZE_WHITESPACE
    [('prune', 1, 3, '0 (1 tensors)'), ('prune', 2, 3, '1 (1 tensors)'),
     ('prune', 3, 3, '2 (1 tensors)')]
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunefw._rollback import rollback_on_error
from prunefw.calibration import Forward, calibration_batches, call_model
from prunefw.contexts.base import PruningContext, check_stored_mask
from prunefw.contexts.layer_context import LayerPruningContext
from prunefw.errors import InvalidArgumentError, InvalidTypeError
from prunefw.huggingface import install_guards
from prunefw.progress import ProgressCallback, ProgressEvent
from prunefw.reparametrization import qualified_names, refresh_pruned_tensor
from prunefw.targets import PruningTarget, check_finite

__all__ = ["MICRO_BATCH_BYTES", "BlockInputs", "find_blocks", "micro_batches", "prune_sequential"]

#: ``prune_sequential`` splits batches of token rows so that a block's largest
#: activation (tokens x widest target dimension, fp32) stays below this many bytes:
#: glibc serves smaller allocations from its heap, larger ones are fresh memory
#: mapped (and page-faulted) at every op.
MICRO_BATCH_BYTES = 16 << 20

# Keyword arguments that carry a key/value cache between calls: a block must not
# keep one across the passes of sequential calibration.
_CACHE_KEYWORDS = ("cache", "past_key_values", "past_key_value", "layer_past")


@dataclass
class BlockInputs:
    """What one block is called with for one calibration batch."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]

    def with_hidden(self, hidden: torch.Tensor) -> BlockInputs:
        """The same call with ``hidden`` as the first positional argument (or ``hidden_states``)."""
        if self.args:
            return BlockInputs((hidden, *self.args[1:]), self.kwargs)
        if "hidden_states" in self.kwargs:
            return BlockInputs((), {**self.kwargs, "hidden_states": hidden})
        raise InvalidArgumentError(
            "a block was called without a positional input or hidden_states=: sequential "
            "calibration cannot tell which argument carries the previous block's output"
        )


def _call_block(block: nn.Module, inputs: BlockInputs) -> Any:
    return block(*inputs.args, **inputs.kwargs)


def _hidden(output: Any) -> torch.Tensor:
    """The hidden states a block returned: the tensor itself, or the first of a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, Mapping) and output:
        first = next(iter(output.values()))
        if isinstance(first, torch.Tensor):
            return first
    raise InvalidArgumentError(
        f"a block returned {type(output).__name__}; sequential calibration needs the hidden "
        "states (a tensor, or a tuple whose first item is one) to feed the next block"
    )


def find_blocks(model: nn.Module, targets: Sequence[PruningTarget]) -> list[tuple[str, nn.Module]]:
    """The model's blocks: the children of the container holding the most targets.

    Containers are ``nn.ModuleList`` (a transformer's stack of layers:
    ``model.layers`` in Llama, ``transformer.h`` in GPT-2) and ``nn.Sequential``;
    among those holding as many targets, a ``ModuleList`` wins, then the longer one.

    Raises:
        InvalidArgumentError: No container holds a target (pass ``blocks=``).
    """
    owner = {id(t.module) for t in targets}
    best: tuple[tuple[int, bool, int], str, nn.Module] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) == 0:
            continue
        held = sum(1 for m in module.modules() if id(m) in owner)
        rank = (held, isinstance(module, nn.ModuleList), len(module))
        if held and (best is None or rank > best[0]):
            best = (rank, name, module)
    if best is None:
        raise InvalidArgumentError(
            "sequential calibration found no nn.ModuleList or nn.Sequential of blocks holding "
            "the targets; pass blocks= (a ModuleList or Sequential, its qualified name, or a "
            "list of modules)"
        )
    _, prefix, blocks = best
    return [(f"{prefix}.{key}" if prefix else key, block) for key, block in blocks.named_children()]


def _resolve_blocks(
    model: nn.Module,
    targets: Sequence[PruningTarget],
    blocks: str | nn.Module | Sequence[nn.Module] | None,
) -> list[tuple[str, nn.Module]]:
    if blocks is None:
        return find_blocks(model, targets)
    names = qualified_names(model)
    if isinstance(blocks, str):
        found = dict(model.named_modules()).get(blocks)
        if found is None:
            raise InvalidArgumentError(f"blocks={blocks!r}: the model has no module of that name")
        blocks = found
    if isinstance(blocks, (nn.ModuleList, nn.Sequential)):
        blocks = list(blocks)
    if isinstance(blocks, nn.Module) or not isinstance(blocks, Sequence) or not blocks:
        raise InvalidTypeError(
            "blocks= must be a ModuleList or Sequential, its qualified name, or a non-empty "
            f"list of modules; got {type(blocks).__name__}"
        )
    resolved = []
    for block in blocks:
        if not isinstance(block, nn.Module) or id(block) not in names:
            raise InvalidArgumentError(f"blocks=: {block!r} is not a submodule of the model")
        resolved.append((names[id(block)], block))
    return resolved


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def micro_batches(batch: Any, max_tokens: int) -> Iterator[Any]:
    """Split a batch of token rows into batches of at most ``max_tokens`` tokens.

    A 2-D integer tensor ``(rows, sequence)`` (token ids) is split along its rows; a
    mapping (``{"input_ids": ..., "attention_mask": ...}``) whose tensors all have
    the same number of rows (dimension 0, at least 2-D) is split alike, other values
    shared. Rows are independent sequences, so the model computes the same per-row
    results. Anything else is yielded whole.

    Example:
        >>> import torch
        >>> [tuple(b.shape) for b in micro_batches(torch.zeros(5, 4, dtype=torch.long), 8)]
        [(2, 4), (2, 4), (1, 4)]
    """
    rows = _rows(batch)
    if rows is None:
        yield batch
        return
    count, length = rows
    step = max(1, max_tokens // max(length, 1))
    if step >= count:
        yield batch
        return
    for start in range(0, count, step):
        if isinstance(batch, torch.Tensor):
            yield batch[start : start + step]
        else:
            yield {
                key: value[start : start + step] if _splittable(value, count) else value
                for key, value in batch.items()
            }


def _splittable(value: Any, rows: int) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() >= 2 and value.shape[0] == rows


def _rows(batch: Any) -> tuple[int, int] | None:
    """``(rows, tokens per row)`` of a batch of token rows, else ``None``."""
    if isinstance(batch, torch.Tensor):
        if batch.dim() == 2 and not batch.dtype.is_floating_point and batch.dtype != torch.bool:
            return batch.shape[0], batch.shape[1]
        return None
    if isinstance(batch, Mapping):
        tensors = [v for v in batch.values() if isinstance(v, torch.Tensor)]
        if not tensors or any(t.dim() < 2 for t in tensors):
            return None
        counts = {t.shape[0] for t in tensors}
        if len(counts) != 1:
            return None
        return tensors[0].shape[0], tensors[0].shape[1]
    return None


class _Captured(BaseException):
    """Stops the model's forward once the first block's inputs are recorded.

    A ``BaseException`` (like ``KeyboardInterrupt``), so a ``forward=`` wrapper that
    turns every ``Exception`` into its own error lets it through.
    """


def _capture(
    model: nn.Module,
    first: nn.Module,
    batches: Iterable[Any],
    forward: Forward,
    max_tokens: int | None,
) -> list[BlockInputs]:
    """Run each batch up to ``first`` and record what it is called with."""
    captured: list[BlockInputs] = []

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        kwargs = dict(kwargs)
        for key in _CACHE_KEYWORDS:
            if kwargs.get(key) is not None:
                kwargs[key] = None
        if "use_cache" in kwargs:
            kwargs["use_cache"] = False
        captured.append(BlockInputs(tuple(args), kwargs))
        raise _Captured

    handle = first.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad(), _eval_mode(model):
            for whole in calibration_batches(batches):
                parts = [whole] if max_tokens is None else micro_batches(whole, max_tokens)
                for batch in parts:
                    _capture_one(model, batch, forward, captured)
    finally:
        handle.remove()
    if not captured:
        raise InvalidArgumentError("calibration_data was empty; give at least one batch")
    return captured


def _capture_one(
    model: nn.Module, batch: Any, forward: Forward, captured: list[BlockInputs]
) -> None:
    """Run one batch until the first block records its inputs."""
    count = len(captured)
    with contextlib.suppress(_Captured):
        forward(model, batch)
    if len(captured) == count:
        raise InvalidArgumentError(
            "a calibration batch ran through the model without reaching its first block; "
            "check blocks= (the blocks must run one after another)"
        )


def prune_sequential(
    context: PruningContext,
    calibration_data: Iterable[Any],
    *,
    blocks: str | nn.Module | Sequence[nn.Module] | None = None,
    forward: Forward | None = None,
    progress: ProgressCallback | None = None,
    split_batches: bool = True,
) -> None:
    """Prune ``context``'s targets block by block, calibrating each on the pruned blocks before.

    The result is what ``context.prune(calibration_data)`` gives, except that the
    statistics of each block's criteria are gathered on the outputs of the blocks
    already pruned (see the module docstring). All-or-nothing like
    :meth:`~prunefw.PruningContext.prune`: on any error every module is restored.

    Blocks run one after another: each block's first positional argument (or its
    ``hidden_states=``) is the previous block's output (or the first item of the
    tuple it returns), and its other arguments are those the model gave the first
    block (a key/value cache is dropped, ``use_cache`` set to false). This is how
    transformers' decoder layers and ``nn.Sequential`` chain.

    Args:
        context: A :class:`~prunefw.LayerPruningContext` with ``model=``; every target
            must lie inside a block.
        calibration_data: Batches for the model, as for ``prune(calibration_data=...)``
            (a 2-D tensor of token ids is one batch).
        blocks: The blocks, in the order they run: a ``ModuleList`` or
            ``Sequential``, its qualified name (``"model.layers"``), or a list of
            modules. ``None``: :func:`find_blocks` (the ``ModuleList`` or
            ``Sequential`` holding the most targets).
        forward: How to call the model on a batch (default
            :func:`~prunefw.calibration.call_model`); it only needs to reach the
            first block.
        progress: Called with ``ProgressEvent("prune", done, total, item)`` after
            each block (``total``: the number of blocks).
        split_batches: Split batches of token rows (:func:`micro_batches`) so that
            no block activation exceeds :data:`MICRO_BATCH_BYTES` (tokens times the
            widest target dimension, 4 bytes each): the same per-row computation,
            much less fresh memory per op. Statistics then sum over the same tokens
            in another grouping (equal up to floating-point rounding). ``False``:
            blocks see the batches as given.

    Raises:
        InvalidArgumentError: A global context, no model, a target outside the
            blocks, empty calibration data, or blocks that do not chain.
        InvalidTypeError: ``context`` is not a pruning context, or bad ``blocks``.
    """
    if not isinstance(context, PruningContext):
        raise InvalidTypeError(f"prune_sequential() needs a pruning context, got {context!r}")
    if not isinstance(context, LayerPruningContext):
        raise InvalidArgumentError(
            "prune_sequential() prunes block by block, but a global context ranks the entries "
            "of all blocks together; use a LayerPruningContext (e.g. with a glob key such as "
            "'model.layers.*.mlp.*_proj')"
        )
    model = context.model
    if model is None:
        raise InvalidArgumentError(
            "prune_sequential() runs the model: build the LayerPruningContext with model=..."
        )
    found = _resolve_blocks(model, context.targets, blocks)
    block_of: dict[int, int] = {}
    for index, (_, block) in enumerate(found):
        for module in block.modules():
            block_of.setdefault(id(module), index)
    outside = [t.label for t in context.targets if id(t.module) not in block_of]
    if outside:
        raise InvalidArgumentError(
            f"prune_sequential(): {', '.join(outside[:4])}{', ...' if len(outside) > 4 else ''} "
            "lie outside the blocks; prune them with another context"
        )
    plans: list[list[Any]] = [[] for _ in found]
    for entry in context.plan:
        plans[block_of[id(entry[0].module)]].append(entry)
    forward = forward or call_model
    with rollback_on_error(m for t in context.targets for m in t.modules):
        for target in context.targets:
            check_stored_mask(target)
            refresh_pruned_tensor(target.module, target.name)
            check_finite(target, getattr(target.module, target.name).detach())
        widest = max(max(getattr(t.module, t.name).shape, default=1) for t in context.targets)
        max_tokens = max(1, MICRO_BATCH_BYTES // (4 * widest)) if split_batches else None
        inputs = _capture(model, found[0][1], calibration_data, forward, max_tokens)
        last = max((i for i, plan in enumerate(plans) if plan), default=-1)
        for index, (name, block) in enumerate(found[: last + 1]):
            if plans[index]:
                sub = copy.copy(context)
                sub.plan = tuple(plans[index])
                sub.targets = tuple(target for target, _ in plans[index])
                sub.model = block
                sub._prune_all(inputs, _call_block, None)
            if index < last:
                with torch.no_grad(), _eval_mode(block):
                    inputs = [x.with_hidden(_hidden(_call_block(block, x))) for x in inputs]
            if progress is not None:
                progress(
                    ProgressEvent(
                        "prune", index + 1, last + 1, f"{name} ({len(plans[index])} tensors)"
                    )
                )
    install_guards(model)
