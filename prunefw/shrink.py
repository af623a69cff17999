"""Physically smaller models: remove the channels structured pruning zeroed.

Structured pruning (e.g. :class:`~prunefw.LnStructuredCriterion` in the layer
context) zeroes whole channels through masks, so the model computes as if they were
gone but keeps their full size. :func:`shrink` removes them, and everything coupled
to them, with `Torch-Pruning <https://github.com/VainF/Torch-Pruning>`_'s dependency
graph (``torch_pruning.DependencyGraph``, traced from ``example_inputs``): pruning
output channels of ``features.0`` also removes the input channels of the next
convolution; pruning rows of a Llama MLP's ``gate_proj`` also removes the same rows
of ``up_proj`` (multiplied element-wise with it) and columns of ``down_proj``.

The shrunk model computes what the masked model computed. Before changing
anything, :func:`shrink` checks that every removed channel contributes nothing
where it is consumed, on ``example_inputs``: the consumer's weights for that
channel are pruned, or the channel's values are exactly zero there (a channel
with pruned weights but a live bias carries ``act(bias)``, which is not zero:
:func:`prune_channel_biases` prunes those biases too). After shrinking it runs
``example_inputs`` again and compares the outputs with the masked model's, with
:func:`torch.testing.assert_close`'s default tolerance for their dtype (float32:
``rtol=1.3e-6, atol=1e-5``; the matrix products of fewer channels add the same
non-zero terms in a different order). Any failure restores the model exactly.

``torch-pruning`` is an optional extra (``pip install 'prunefw[shrink]'``), imported
only when :func:`shrink` runs.

Note: the top-level ``prunefw.shrink`` is the function; import the other names of
this module with ``from prunefw.shrink import ...``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from prunefw import LayerPruningContext, LnStructuredCriterion, shrink
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    >>> LayerPruningContext({model[0]: LnStructuredCriterion(amount=0.5)}).prune()
    >>> _ = prune_channel_biases(model)  # the pruned rows' biases too
    >>> x = torch.randn(8, 16)
    >>> expected = model(x)
    >>> _ = shrink(model, x)
    >>> model[0].out_features, model[2].in_features
    (16, 16)
    >>> torch.testing.assert_close(model(x), expected)
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from prunefw._rollback import RestorePoint, rollback_on_error
from prunefw.errors import PrunefwError
from prunefw.export import MissingExtraError
from prunefw.permanence import make_permanent
from prunefw.reparametrization import (
    install_deepcopy_support,
    iter_pruned_tensors,
    mask_of,
    original_of,
    qualified_names,
    release_mask_reference,
)

__all__ = [
    "PIP_SHRINK",
    "NotStructuredError",
    "NothingToShrinkError",
    "ShrinkError",
    "ShrinkReport",
    "UnsafeShrinkError",
    "prune_channel_biases",
    "shrink",
    "shrink_model",
]

#: How to install what this module needs (named in error messages).
PIP_SHRINK = "pip install 'prunefw[shrink]'"

#: Modules that may take part in a removed channel group (per-channel or channel-wise).
_CHANNEL_MODULES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._BatchNorm,
    nn.PReLU,
)
#: Element-wise operations (autograd names) that actually mix channels: removing a
#: channel changes their result.
_MIXING = ("Mean", "Sum", "Softmax", "Norm", "Var", "Std", "Sort", "Topk", "Prod", "Amax", "Amin")


class ShrinkError(PrunefwError, ValueError):
    """A model cannot be shrunk as asked; the model is unchanged."""


class NothingToShrinkError(ShrinkError):
    """The model has no pruning masks: there is nothing to remove."""


class NotStructuredError(ShrinkError):
    """A mask prunes entries that are not whole channels (the message names the tensor)."""


class UnsafeShrinkError(ShrinkError):
    """Removing the pruned channels would change the model's outputs (the message says where)."""


@dataclass(frozen=True)
class ShrinkReport:
    """What :func:`shrink_model` did.

    Attributes:
        model: The shrunk model (the same object that was passed in).
        parameters_before: Parameter count before (shared Parameters counted once).
        parameters_after: Parameter count after.
        removed: ``{"module.weight": (output channels removed, input channels
            removed)}`` for every Linear or convolution that lost channels.
        max_abs_diff: The largest absolute difference between the shrunk and the
            masked model's outputs on ``example_inputs``.
    """

    model: nn.Module
    parameters_before: int
    parameters_after: int
    removed: Mapping[str, tuple[int, int]]
    max_abs_diff: float

    def describe(self) -> str:
        """One line: parameters before and after, layers shrunk, output difference.

        Example:
            >>> from torch import nn
            >>> ShrinkReport(nn.Identity(), 1000, 600, {"0.weight": (4, 0)}, 0.0).describe()
            'parameters 1,000 -> 600 (0.60x), 1 layer shrunk, max |output difference| 0'
        """
        n = len(self.removed)
        ratio = self.parameters_after / self.parameters_before if self.parameters_before else 0.0
        return (
            f"parameters {self.parameters_before:,} -> {self.parameters_after:,} ({ratio:.2f}x), "
            f"{n} layer{'s' if n != 1 else ''} shrunk, max |output difference| "
            f"{self.max_abs_diff:.3g}"
        )


def _torch_pruning() -> ModuleType:
    try:
        import torch_pruning
    except ImportError as exc:
        raise MissingExtraError(
            f"prunefw.shrink needs the optional package torch-pruning ({type(exc).__name__}: "
            f"{exc}); install it with {PIP_SHRINK}"
        ) from exc
    return torch_pruning


# --- masks -> channels --------------------------------------------------------------------------


def _alive_channels(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which output (dim 0) and input (dim 1) channels of a weight keep any entry."""
    rows = keep.reshape(keep.shape[0], -1).any(1)
    cols = keep.transpose(0, 1).reshape(keep.shape[1], -1).any(1)
    return rows, cols


def _whole_channels(keep: torch.Tensor, label: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Dead output and input channels of a keep-mask that prunes whole channels only."""
    rows, cols = _alive_channels(keep)
    view = [1] * keep.dim()
    expected = rows.view(-1, *view[1:]) & cols.view(1, -1, *view[2:])
    partial = keep != expected.expand_as(keep)
    if bool(partial.any()):
        where = tuple(int(v) for v in partial.nonzero()[0])
        raise NotStructuredError(
            f"{label}: its mask prunes {int(partial.sum())} entries that are not whole output "
            f"or input channels (e.g. entry {where}, whose channels keep other entries); "
            "shrink removes whole channels only: prune them with a structured criterion "
            "such as LnStructuredCriterion (layer context)"
        )
    return ~rows, ~cols


@dataclass
class _Root:
    """A Linear or convolution whose masks remove channels, and which ones (current indices)."""

    label: str
    module: nn.Module
    dead_out: torch.Tensor  # bool per output channel
    dead_in: torch.Tensor  # bool per input channel


def _roots(model: nn.Module) -> list[_Root]:
    pruned = list(iter_pruned_tensors(model))
    if not pruned:
        raise NothingToShrinkError(
            f"{type(model).__name__} has no pruning masks: nothing to shrink. Prune whole "
            "channels first, e.g. LayerPruningContext({layer: LnStructuredCriterion(0.5)})"
        )
    roots: dict[int, _Root] = {}
    biases: list[tuple[str, nn.Module, torch.Tensor]] = []
    for qualname, module, name in pruned:
        label = f"{qualname}.{name}" if qualname else name
        keep = mask_of(module, name)
        assert keep is not None
        keep = keep != 0
        if not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) or isinstance(
            module, nn.modules.conv._ConvTransposeNd
        ):
            raise ShrinkError(
                f"{label}: shrink removes channels of nn.Linear and convolution layers; this "
                f"tensor belongs to a {type(module).__name__}"
            )
        if name == "bias":
            biases.append((label, module, keep))
            continue
        if name != "weight":
            raise NotStructuredError(f"{label}: shrink reads the masks of weights and biases only")
        dead_out, dead_in = _whole_channels(keep, label)
        grouped = isinstance(module, nn.modules.conv._ConvNd) and module.groups != 1
        if grouped and bool(dead_in.any()):
            raise ShrinkError(
                f"{label}: input channels of a grouped convolution (groups="
                f"{module.groups}) cannot be removed on their own"
            )
        roots[id(module)] = _Root(label, module, dead_out, dead_in)
    for label, module, keep in biases:
        root = roots.get(id(module))
        dead = root.dead_out if root is not None else torch.zeros_like(keep)
        if bool((~keep & ~dead).any()):
            index = int((~keep & ~dead).nonzero()[0])
            raise NotStructuredError(
                f"{label}: its mask prunes entry {index}, but that output channel's weights are "
                "not all pruned, so the channel is not removed"
            )
    return [root for root in roots.values() if bool(root.dead_out.any() or root.dead_in.any())]


def _bias_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of ``module.bias`` (pruned or not)."""
    bias = getattr(module, "bias")  # noqa: B009 - a Tensor attribute, typed as Tensor | Module
    assert isinstance(bias, torch.Tensor)
    return bias.dtype


def prune_channel_biases(model: nn.Module) -> list[str]:
    """Prune the bias entries of the output channels whose weights are entirely pruned.

    A channel whose weights are all pruned still outputs its bias (``act(bias)``
    after an activation), so the masked model depends on it and :func:`shrink`
    refuses to remove it. This prunes those bias entries with
    :func:`torch.nn.utils.prune.custom_from_mask` (torch's reparametrization, on top
    of any earlier bias mask): the model's outputs change as if the channels were
    gone, which is what shrinking then reproduces exactly.

    Args:
        model: A model pruned with whole output channels (e.g.
            :class:`~prunefw.LnStructuredCriterion` with ``dim=0``).

    Returns:
        The biases pruned (``"module.bias"``), in model order.

    Example:
        >>> from torch import nn
        >>> from prunefw import LayerPruningContext, LnStructuredCriterion
        >>> layer = nn.Linear(4, 6)
        >>> LayerPruningContext({layer: LnStructuredCriterion(amount=2)}).prune()
        >>> prune_channel_biases(layer)
        ['bias']
        >>> int((layer.bias_mask == 0).sum())
        2
    """
    todo: list[tuple[str, nn.Module, torch.Tensor]] = []
    names = qualified_names(model)
    for module in model.modules():
        keep = mask_of(module, "weight")
        bias = module._parameters.get("bias")
        if keep is None or (bias is None and original_of(module, "bias") is None):
            continue
        rows = (keep != 0).reshape(keep.shape[0], -1).any(1)
        current = module.bias
        if isinstance(current, torch.Tensor) and bool((current.detach()[~rows] != 0).any()):
            label = f"{names[id(module)]}.bias" if names[id(module)] else "bias"
            todo.append((label, module, rows))
    with rollback_on_error(module for _, module, _ in todo):
        for _, module, rows in todo:
            prune.custom_from_mask(module, "bias", rows.to(_bias_dtype(module)))
            release_mask_reference(module, "bias")
            install_deepcopy_support(module)
    return [label for label, _, _ in todo]


# --- running the model --------------------------------------------------------------------------


def _call(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor in a model's output (tensors, sequences, mappings, ModelOutputs)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for value in obj.values() for t in _tensors(value)]
    if isinstance(obj, (tuple, list)):
        return [t for value in obj for t in _tensors(value)]
    return []


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def _grad_for_tracing(model: nn.Module) -> Iterator[None]:
    """Autograd on, every floating Parameter requiring grad (the graph is traced from it)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        with torch.enable_grad():
            for p, _ in flags:
                if p.is_floating_point():
                    p.requires_grad_(True)
            yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


# --- the groups ---------------------------------------------------------------------------------


@dataclass
class _Consumer:
    label: str
    module: nn.Module
    idxs: list[int]
    root: str


def _check_group(group: Any, graph: Any, root: _Root, names: Mapping[int, str]) -> list[_Consumer]:
    """Refuse groups that reach the outputs or channel-mixing layers; return the consumers."""
    tp_ops = graph.ops
    consumers: list[_Consumer] = []
    for item in group:
        target = item.dep.target
        module = target.module
        if isinstance(module, tp_ops._OutputOp):
            raise UnsafeShrinkError(
                f"{root.label}: its pruned channels are among the model's outputs; removing "
                "them would change the output shape (leave this layer dense, or unpruned)"
            )
        if isinstance(module, tp_ops._ElementWiseOp):
            op = str(module._grad_fn)
            if any(word in op for word in _MIXING) and "Pool" not in op:
                raise UnsafeShrinkError(
                    f"{root.label}: its channels flow into {op}, which combines channels; "
                    "removing them would change its result"
                )
            continue
        if isinstance(
            module,
            (
                tp_ops._ReshapeOp,
                tp_ops._ConcatOp,
                tp_ops._SplitOp,
                tp_ops._SliceOp,
                tp_ops._ExpandOp,
                tp_ops._UnbindOp,
            ),
        ):
            continue
        if not isinstance(module, _CHANNEL_MODULES):
            name = names.get(id(module), "") or getattr(graph, "_param_to_name", {}).get(module, "")
            raise UnsafeShrinkError(
                f"{root.label}: its channels are coupled to {name or 'a tensor'} "
                f"({type(module).__name__}), whose channels shrink cannot remove without "
                "changing the outputs (a normalisation over channels, an embedding, a residual "
                "stream): prune channels that do not reach it"
            )
        is_in = graph.is_in_channel_pruning_fn(item.dep.handler)
        is_out = graph.is_out_channel_pruning_fn(item.dep.handler)
        if is_in and not is_out and isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            consumers.append(
                _Consumer(names.get(id(module), ""), module, list(item.idxs), root.label)
            )
    return consumers


def _pruning_fn(graph: Any, module: nn.Module, out: bool) -> Any:
    pruner = graph.get_pruner_of_module(module)
    return pruner.prune_out_channels if out else pruner.prune_in_channels


def _check_consumers(model: nn.Module, inputs: Any, consumers: Sequence[_Consumer]) -> None:
    """Every removed channel must be zero where it is consumed (or its weights pruned there)."""
    live: dict[int, list[_Consumer]] = {}
    for consumer in consumers:
        weight = consumer.module.get_parameter("weight").detach()
        columns = weight.transpose(0, 1)[consumer.idxs] if weight.dim() > 1 else weight
        if bool((columns != 0).any()):
            live.setdefault(id(consumer.module), []).append(consumer)
    if not live:
        return
    nonzero: dict[tuple[int, int], float] = {}

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0]
        for index, consumer in enumerate(live[id(module)]):
            channels = (
                x[..., consumer.idxs] if isinstance(module, nn.Linear) else x[:, consumer.idxs]
            )
            peak = float(channels.detach().abs().max()) if channels.numel() else 0.0
            key = (id(module), index)
            nonzero[key] = max(nonzero.get(key, 0.0), peak)

    modules = {id(c.module): c.module for group in live.values() for c in group}
    handles = [m.register_forward_pre_hook(hook) for m in modules.values()]
    try:
        with torch.no_grad():
            _call(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    for module_id, group in live.items():
        for index, consumer in enumerate(group):
            peak = nonzero.get((module_id, index), 0.0)
            if peak != 0.0:
                raise UnsafeShrinkError(
                    f"{consumer.root}: its pruned channels still reach {consumer.label} with "
                    f"values up to {peak:.3g} on example_inputs (e.g. a bias that is not pruned "
                    "with the weights: act(bias) is not zero), so removing them would change the "
                    "outputs; prune those biases too with prunefw.shrink.prune_channel_biases("
                    "model), or a normalisation's shift, first"
                )


# --- shrink -------------------------------------------------------------------------------------


def shrink_model(model: nn.Module, example_inputs: Any) -> ShrinkReport:
    """Remove the channels whose masks are all zero, and everything coupled; report it.

    See the module docstring and :func:`shrink`, which returns the model instead.

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
