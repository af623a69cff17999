"""Sequential calibration: block by block, each calibrated on the pruned blocks before it."""

from __future__ import annotations

import pytest
import torch
from conftest import model_state
from torch import nn

from prunefw import GlobalPruningContext, LayerPruningContext, MagnitudeCriterion
from prunefw import sequential as _sequential
from prunefw.errors import InvalidArgumentError, InvalidTypeError
from prunefw.progress import ProgressEvent
from prunefw.sequential import find_blocks, micro_batches, prune_sequential


class InputNorm(MagnitudeCriterion):
    """Wanda-like: |W| times the norm of each input feature, the `amount` smallest pruned."""

    name = "test-input-norm"
    requires_calibration = True

    def __init__(self, amount: float) -> None:
        super().__init__(amount=amount)
        self.stats: dict[int, torch.Tensor] = {}
        self.most_held = 0

    def reset_calibration(self) -> None:
        self.stats.clear()

    def observe(self, module, name, inputs, output):
        assert isinstance(output, torch.Tensor)  # the real output, as in calibrate()
        x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double()
        self.stats[id(module)] = self.stats.get(id(module), 0) + x.pow(2).sum(0)
        self.most_held = max(self.most_held, len(self.stats))

    def importance_scores(self, module, name):
        weight = getattr(module, name).detach()
        return weight.abs() * self.stats[id(module)].sqrt().to(weight.dtype)


def chain(seed: int = 0, blocks: int = 4) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(*(nn.Sequential(nn.Linear(16, 16), nn.Tanh()) for _ in range(blocks)))


def batches(seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 16, generator=gen) for _ in range(3)]


def masks(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight_mask for m in model.modules() if hasattr(m, "weight_mask")]


def block_by_block_reference(model: nn.Module, keys: list[str], data) -> None:
    """The semantics, the slow way: the plain context per block, calibrating the whole model."""
    for key in keys:
        LayerPruningContext({key: InputNorm(0.5)}, model=model).prune(calibration_data=data)


def test_equals_block_by_block_pruning_and_differs_from_one_shot():
    model, reference, one_shot = chain(), chain(), chain()
    crit = InputNorm(0.5)
    prune_sequential(LayerPruningContext({"*.0": crit}, model=model), batches(), blocks=model)
    block_by_block_reference(reference, [f"{i}.0" for i in range(4)], batches())
    LayerPruningContext({"*.0": InputNorm(0.5)}, model=one_shot).prune(calibration_data=batches())
    for a, b in zip(masks(model), masks(reference), strict=True):
        assert torch.equal(a, b)
    seq, shot = masks(model), masks(one_shot)
    assert torch.equal(seq[0], shot[0])  # block 0 sees the same inputs either way
    assert any(not torch.equal(a, b) for a, b in zip(seq[1:], shot[1:], strict=True))
    assert crit.most_held == 1  # the statistics of one block at a time


class Probe(nn.Module):
    """A block whose target does not feed the chain: its pruning changes no later input."""

    def __init__(self) -> None:
        super().__init__()
        self.probe = nn.Linear(16, 5)
        self.mix = nn.Linear(16, 16)

    def forward(self, x):
        self.probe(x)
        return torch.tanh(self.mix(x))


def test_equals_one_shot_when_blocks_are_independent():
    def make():
        torch.manual_seed(3)
        return nn.Sequential(*(Probe() for _ in range(3)))

    model, one_shot = make(), make()
    prune_sequential(LayerPruningContext({"*.probe": InputNorm(0.4)}, model=model), batches())
    LayerPruningContext({"*.probe": InputNorm(0.4)}, model=one_shot).prune(
        calibration_data=batches()
    )
    for a, b in zip(masks(model), masks(one_shot), strict=True):
        assert torch.equal(a, b)


def test_progress_per_block_and_block_forwards(monkeypatch):
    model = chain(blocks=3)
    calls = []
    real = _sequential._call_block
    monkeypatch.setattr(
        _sequential, "_call_block", lambda block, x: calls.append(block) or real(block, x)
    )
    events: list[ProgressEvent] = []
    ctx = LayerPruningContext({"*.0": InputNorm(0.5)}, model=model)
    prune_sequential(ctx, batches(), blocks=model, progress=events.append)
    assert [(e.stage, e.done, e.total) for e in events] == [("prune", i, 3) for i in (1, 2, 3)]
    assert [e.item for e in events] == ["0 (1 tensors)", "1 (1 tensors)", "2 (1 tensors)"]
    # each block: one observing pass and one pruned pass per batch; the last needs no outputs
    assert [calls.count(block) for block in model] == [6, 6, 3]


def test_failure_in_a_later_block_leaves_the_model_untouched():
    class FailsInBlock2(InputNorm):
        name = "test-fails-in-block-2"

        def importance_scores(self, module, name):
            if module is model[2][0]:
                raise RuntimeError("boom in block 2")
            return super().importance_scores(module, name)

    model = chain()
    before = model_state(model)
    ctx = LayerPruningContext({"*.0": FailsInBlock2(0.5)}, model=model)
    with pytest.raises(RuntimeError, match="boom in block 2"):
        prune_sequential(ctx, batches(), blocks=model)
    assert model_state(model) == before


def test_refusals():
    model = chain()
    with pytest.raises(InvalidArgumentError, match="global context ranks"):
        prune_sequential(GlobalPruningContext(model, MagnitudeCriterion(amount=0.5)), batches())
    with pytest.raises(InvalidArgumentError, match="model="):
        prune_sequential(LayerPruningContext({model[0][0]: InputNorm(0.5)}), batches())
    with pytest.raises(InvalidTypeError):
        prune_sequential("not a context", batches())  # type: ignore[arg-type]
    outer = nn.Sequential(nn.Linear(16, 16), chain())
    ctx = LayerPruningContext({"0": InputNorm(0.5), "1.0.0": InputNorm(0.5)}, model=outer)
    with pytest.raises(InvalidArgumentError, match="outside the blocks"):
        prune_sequential(ctx, batches(), blocks="1")
    ctx = LayerPruningContext({"*.0": InputNorm(0.5)}, model=model)
    with pytest.raises(InvalidArgumentError, match="empty"):
        prune_sequential(ctx, [], blocks=model)
    single = nn.Linear(16, 16)
    with pytest.raises(InvalidArgumentError, match=r"no nn\.ModuleList or nn\.Sequential"):
        prune_sequential(LayerPruningContext({single: InputNorm(0.5)}, model=single), batches())
    with pytest.raises(InvalidArgumentError, match="without reaching its first block"):
        prune_sequential(ctx, batches(), blocks=model, forward=lambda m, b: None)


def test_micro_batches_split_token_rows_only():
    tokens = torch.arange(60).reshape(6, 10)
    parts = list(micro_batches(tokens, 25))
    assert [tuple(p.shape) for p in parts] == [(2, 10)] * 3
    assert torch.equal(torch.cat(parts), tokens)
    mapping = {"input_ids": tokens, "attention_mask": torch.ones(6, 10), "flag": True}
    split = list(micro_batches(mapping, 30))
    assert [tuple(p["input_ids"].shape) for p in split] == [(3, 10), (3, 10)]
    assert all(p["flag"] is True for p in split)
    floats = torch.randn(6, 10)
    assert next(iter(micro_batches(floats, 10))) is floats  # not token ids: whole


# --- a transformers Llama with the Wanda plugin ---------------------------------------------


def tiny_llama(seed: int = 0):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=50,
    )
    return transformers.LlamaForCausalLM(config).eval()


def test_llama_with_wanda_block_by_block(monkeypatch):
    wanda = pytest.importorskip("prunefw_wanda")
    tokens = torch.randint(0, 50, (6, 12), generator=torch.Generator().manual_seed(0))
    model, reference, split = tiny_llama(), tiny_llama(), tiny_llama()
    key = "model.layers.*.*.*_proj"
    ctx = LayerPruningContext({key: wanda.WandaCriterion(0.5)}, model=model)
    assert [name for name, _ in find_blocks(model, ctx.targets)] == [
        f"model.layers.{i}" for i in range(3)
    ]
    events: list[ProgressEvent] = []
    prune_sequential(ctx, tokens, progress=events.append)
    assert [e.item for e in events] == [f"model.layers.{i} (7 tensors)" for i in range(3)]
    for i in range(3):
        LayerPruningContext(
            {f"model.layers.{i}.*.*_proj": wanda.WandaCriterion(0.5)}, model=reference
        ).prune(calibration_data=tokens)
    for a, b in zip(masks(model), masks(reference), strict=True):
        assert torch.equal(a, b)
    # micro-batches of 2 rows: the same masks (statistics summed in another grouping)
    monkeypatch.setattr(_sequential, "MICRO_BATCH_BYTES", 4 * 64 * 24)
    prune_sequential(LayerPruningContext({key: wanda.WandaCriterion(0.5)}, model=split), tokens)
    for a, b in zip(masks(split), masks(model), strict=True):
        assert torch.equal(a, b)
    x = torch.randint(0, 50, (2, 5))
    assert torch.equal(model(x).logits, reference(x).logits)


def test_a_forward_wrapper_that_catches_every_exception_still_works():
    """The capture's stop signal is not an Exception: wrappers such as the CLI's let it through."""
    model, reference = chain(), chain()
    calls = []

    def forward(net, batch):
        calls.append(batch.shape)
        try:
            return net(batch)
        except Exception as exc:  # what a wrapper naming the failing batch does
            raise RuntimeError("the batch failed") from exc

    keys = [f"{i}.0" for i in range(4)]
    prune_sequential(
        LayerPruningContext({key: InputNorm(0.5) for key in keys}, model=model),
        batches(),
        blocks=model,
        forward=forward,
    )
    prune_sequential(
        LayerPruningContext({key: InputNorm(0.5) for key in keys}, model=reference),
        batches(),
        blocks=reference,
    )
    assert len(calls) == 3
    for a, b in zip(masks(model), masks(reference), strict=True):
        assert torch.equal(a, b)


def test_apply_recipe_sequential_calibrates_block_by_block():
    import types

    import prunefw
    from prunefw.plugin_manager import PluginManager
    from prunefw.recipes import Recipe, apply_recipe
    from prunefw.registry import CriterionRegistry

    plugin = types.SimpleNamespace(prunefw_register_criteria=prunefw.hookimpl(lambda: [InputNorm]))
    manager = PluginManager(autoload=False)
    manager.register(plugin, name="input-norm")
    recipe = Recipe.from_dict(
        {"layer": [{"match": "*.0", "criteria": [{"name": "test-input-norm", "amount": 0.5}]}]},
        registry=CriterionRegistry.from_plugin_manager(manager),
    )
    model, reference, one_shot = chain(), chain(), chain()
    apply_recipe(model, recipe, calibration_data=batches(), sequential=True)
    keys = [f"{i}.0" for i in range(4)]
    prune_sequential(
        LayerPruningContext({key: InputNorm(0.5) for key in keys}, model=reference),
        batches(),
        blocks=reference,
    )
    apply_recipe(one_shot, recipe, calibration_data=batches())
    assert all(torch.equal(a, b) for a, b in zip(masks(model), masks(reference), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(masks(model), masks(one_shot), strict=True))
