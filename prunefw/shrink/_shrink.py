"""Shrinking a model: :func:`shrink_model` and :func:`shrink`, all-or-nothing.

The masks give the channels (:mod:`prunefw.shrink._channels`), Torch-Pruning's
dependency graph the groups coupled to them (:mod:`prunefw.shrink._groups`); the
groups are checked, pruned one by one, and the outputs compared with the masked
model's. Any failure restores the model exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import torch
from torch import nn

from prunefw._rollback import RestorePoint
from prunefw.export import MissingExtraError
from prunefw.permanence import make_permanent
from prunefw.reparametrization import qualified_names
from prunefw.shrink._channels import _Root, _roots
from prunefw.shrink._groups import _check_consumers, _check_group, _Consumer, _pruning_fn
from prunefw.shrink._report import ShrinkError, ShrinkReport, UnsafeShrinkError
from prunefw.shrink._run import _call, _count, _grad_for_tracing, _tensors

__all__ = ["PIP_SHRINK", "shrink", "shrink_model"]

#: How to install what this module needs (named in error messages).
PIP_SHRINK = "pip install 'prunefw[shrink]'"


def _torch_pruning() -> ModuleType:
    try:
        import torch_pruning
    except ImportError as exc:
        raise MissingExtraError(
            f"prunefw.shrink needs the optional package torch-pruning ({type(exc).__name__}: "
            f"{exc}); install it with {PIP_SHRINK}"
        ) from exc
    return torch_pruning


def shrink_model(model: nn.Module, example_inputs: Any) -> ShrinkReport:
    """Remove the channels whose masks are all zero, and everything coupled; report it.

    See the :mod:`prunefw.shrink` docstring and :func:`shrink`, which returns the model instead.

    Args:
        model: A model pruned with whole channels (masks from a structured
            criterion); modified in place. Its pruning becomes permanent.
        example_inputs: What the model takes: a tensor, a tuple of positional
            arguments, or a dict of keyword arguments (e.g. ``{"input_ids": ids}``).

    Returns:
        A :class:`ShrinkReport`.

    Raises:
        NothingToShrinkError: The model has no masks.
        NotStructuredError: A mask prunes entries that are not whole channels.
        UnsafeShrinkError: A removed channel still contributes to the outputs, its
            channels are the model's outputs, or they are coupled to a layer that
            mixes channels (LayerNorm, an embedding, a residual stream); or the
            shrunk model's outputs differ from the masked model's.
        ShrinkError: A pruned tensor that is not a Linear's or convolution's.
        MissingExtraError: torch-pruning is not installed.

    On any error the model is left exactly as it was (masks included).
    """
    tp = _torch_pruning()
    roots = _roots(model)
    training = model.training
    before = _count(model)
    names = qualified_names(model)
    points = [RestorePoint(module) for module in model.modules()]
    data = [(p, p.data) for p in model.parameters()]
    try:
        model.eval()
        with torch.no_grad():
            reference = [t.detach().clone() for t in _tensors(_call(model, example_inputs))]
        make_permanent(model)
        with _grad_for_tracing(model), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=_as_trace_inputs(example_inputs),
                output_transform=_tensors, verbose=False,
            )  # fmt: skip
        model.eval()
        consumers: list[_Consumer] = []
        for root in roots:
            for out, dead in ((True, root.dead_out), (False, root.dead_in)):
                idxs = dead.nonzero().flatten().tolist()
                if not idxs:
                    continue
                if root.module not in graph.module2node:
                    raise ShrinkError(
                        f"{root.label}: its layer does not run when the model is called with "
                        "example_inputs, so its channels' connections are unknown"
                    )
                group = graph.get_pruning_group(
                    root.module, _pruning_fn(graph, root.module, out), idxs
                )
                if not graph.check_pruning_group(group):
                    raise UnsafeShrinkError(
                        f"{root.label}: every channel of a layer coupled to it would be removed"
                    )
                consumers += _check_group(group, graph, root, names)
        _check_consumers(model, example_inputs, consumers)
        removed = _prune(graph, roots, names)
        with torch.no_grad():
            outputs = [t.detach() for t in _tensors(_call(model, example_inputs))]
        diff = _compare(outputs, reference)
    except BaseException:
        for p, tensor in data:
            p.data = tensor
        for point in points:
            point.restore()
        model.train(training)
        raise
    model.train(training)
    return ShrinkReport(model, before, _count(model), removed, diff)


def _as_trace_inputs(inputs: Any) -> Any:
    # Torch-Pruning calls model(**inputs) for a dict, model(*inputs) for a sequence.
    if isinstance(inputs, (Mapping, tuple, list)):
        return inputs
    return (inputs,)


def _prune(
    graph: Any, roots: Sequence[_Root], names: Mapping[int, str]
) -> dict[str, tuple[int, int]]:
    """Prune every root's dead channels, group by group, tracking indices as they shift."""
    dead = {id(root.module): [root.dead_out.clone(), root.dead_in.clone()] for root in roots}
    modules = {id(root.module): root.module for root in roots}
    removed: dict[str, list[int]] = {}
    while True:
        todo = next(
            (
                (mid, side)
                for mid, sides in dead.items()
                for side in (0, 1)
                if bool(sides[side].any())
            ),
            None,
        )
        if todo is None:
            break
        mid, side = todo
        module = modules[mid]
        idxs = dead[mid][side].nonzero().flatten().tolist()
        group = graph.get_pruning_group(module, _pruning_fn(graph, module, side == 0), idxs)
        group.prune()
        for item in group:
            target = item.dep.target.module
            if not isinstance(target, (nn.Linear, nn.modules.conv._ConvNd)):
                continue
            hit = 0 if graph.is_out_channel_pruning_fn(item.dep.handler) else 1
            name = names.get(id(target), "")
            counts = removed.setdefault(f"{name}.weight" if name else "weight", [0, 0])
            counts[hit] += len(item.idxs)
            vectors = dead.get(id(target))
            if vectors is not None:
                keep = torch.ones(len(vectors[hit]), dtype=torch.bool)
                keep[item.idxs] = False
                vectors[hit] = vectors[hit][keep]
    return {label: (c[0], c[1]) for label, c in removed.items()}


def _compare(outputs: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> float:
    if len(outputs) != len(reference) or any(
        o.shape != r.shape for o, r in zip(outputs, reference, strict=True)
    ):
        raise UnsafeShrinkError(
            "the shrunk model's outputs do not have the masked model's shapes "
            f"({[tuple(o.shape) for o in outputs]} vs {[tuple(r.shape) for r in reference]})"
        )
    diff = 0.0
    for out, ref in zip(outputs, reference, strict=True):
        if out.is_floating_point() or out.is_complex():
            if out.numel():
                diff = max(diff, float((out.double() - ref.double()).abs().max()))
            try:
                torch.testing.assert_close(out, ref)
            except AssertionError as exc:
                raise UnsafeShrinkError(
                    f"the shrunk model's outputs differ from the masked model's: {exc}"
                ) from None
        elif not torch.equal(out, ref):
            raise UnsafeShrinkError("the shrunk model's outputs differ from the masked model's")
    return diff


def shrink(model: nn.Module, example_inputs: Any) -> nn.Module:
    """Remove the channels whose masks are all zero and everything coupled to them.

    Uses Torch-Pruning's dependency graph traced from ``example_inputs``: removing
    output channels of a layer also removes the next layers' input channels, the
    per-channel entries of biases and batch norms, and the channels of every layer
    whose output is combined element-wise with them (a Llama MLP's ``gate_proj`` and
    ``up_proj``). The pruning becomes permanent (``make_permanent``) and the layers
    get smaller Parameters (``out_features``, ``in_channels``, ... updated).

    The shrunk model's outputs equal the masked model's, checked on
    ``example_inputs`` with :func:`torch.testing.assert_close`'s default tolerance
    (float32: ``rtol=1.3e-6, atol=1e-5``); every removed channel must contribute
    nothing where it is consumed (see :func:`prune_channel_biases` for biases).

    Args:
        model: A model pruned with whole channels; modified in place.
        example_inputs: A tensor, a tuple of positional arguments or a dict of
            keyword arguments, as the model takes them.

    Returns:
        ``model``, shrunk. :func:`shrink_model` returns a :class:`ShrinkReport`.

    Raises:
        NothingToShrinkError: The model has no masks.
        NotStructuredError: A mask is not whole channels (the message names it).
        UnsafeShrinkError: Removing the channels would change the outputs.
        ShrinkError: A pruned tensor of an unsupported layer type.
        MissingExtraError: torch-pruning is not installed
            (``pip install 'prunefw[shrink]'``).

    On any error the model is left exactly as it was.
    """
    return shrink_model(model, example_inputs).model
