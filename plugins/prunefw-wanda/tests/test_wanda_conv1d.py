"""Wanda on Hugging Face's Conv1D (GPT-2's projections), in its real (in, out) layout.

The reference is the same model with every Conv1D replaced by the equivalent
nn.Linear (weight transposed): the masks must be the transposed masks of that model.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

from prunefw import LayerPruningContext, make_permanent
from prunefw.errors import InvalidArgumentError, InvalidTypeError
from prunefw.testing import ModelSnapshot
from prunefw_wanda import WandaCriterion

transformers = pytest.importorskip("transformers")
Conv1D = pytest.importorskip("transformers.pytorch_utils").Conv1D


def tiny_gpt2(seed: int = 0) -> nn.Module:
    """A 2-layer GPT-2 (n_embd 32) from a config: random weights, no download."""
    return copy.deepcopy(_tiny_gpt2(seed))


@functools.cache
def _tiny_gpt2(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        vocab_size=100,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(config).eval()


def token_batches(seed: int = 0) -> list[torch.Tensor]:
    """4 batches of 2 sequences of 16 token ids: the model's single argument."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 100, (2, 16), generator=generator) for _ in range(4)]


def conv1d_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, Conv1D)]


def with_linears(model: nn.Module) -> nn.Module:
    """A copy with every Conv1D replaced by the equivalent nn.Linear (weight transposed)."""
    model = copy.deepcopy(model)
    for name in conv1d_names(model):
        conv = model.get_submodule(name)
        linear = nn.Linear(conv.nx, conv.nf)
        with torch.no_grad():
            linear.weight.copy_(conv.weight.T)
            linear.bias.copy_(conv.bias)
        parent, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent), attribute, linear)
    return model


def wanda_all(model: nn.Module, names: list[str], **kwargs: object) -> WandaCriterion:
    crit = WandaCriterion(**kwargs)
    LayerPruningContext({name: crit for name in names}, model=model).prune(
        calibration_data=token_batches()
    )
    return crit


def test_the_reference_model_computes_the_same_function():
    """Sanity check of the reference: Conv1D -> Linear changes nothing but the layout."""
    model = tiny_gpt2()
    reference = with_linears(model)
    names = conv1d_names(model)
    assert len(names) == 8
    assert all(isinstance(reference.get_submodule(name), nn.Linear) for name in names)
    with torch.no_grad():
        for batch in token_batches():
            torch.testing.assert_close(model(batch).logits, reference(batch).logits)


@pytest.mark.parametrize(
    "kwargs",
    [{"sparsity": 0.5}, {"sparsity": 0.3}, {"sparsity": 0.7}, {"pattern": "2:4"}],
    ids=["0.5", "0.3", "0.7", "2:4"],
)
def test_conv1d_masks_are_the_transposed_masks_of_the_linear_model(kwargs):
    """Every Conv1D's mask equals the transpose of the equivalent Linear's mask."""
    model = tiny_gpt2()
    reference = with_linears(model)
    names = conv1d_names(model)
    wanda_all(model, names, **kwargs)
    wanda_all(reference, names, **kwargs)
    for name in names:
        conv, linear = model.get_submodule(name), reference.get_submodule(name)
        assert conv.weight_mask.shape == (conv.nx, conv.nf)  # stored layout kept
        assert torch.equal(conv.weight_mask.T, linear.weight_mask), name
    with torch.no_grad():
        for batch in token_batches(seed=1):
            torch.testing.assert_close(model(batch).logits, reference(batch).logits)


def test_every_output_row_loses_its_share_of_input_features():
    """Rows are outputs (columns of the stored (in, out) weight): round(s * in) each."""
    model = tiny_gpt2()
    names = conv1d_names(model)
    wanda_all(model, names, sparsity=0.3)
    for name in names:
        conv = model.get_submodule(name)
        per_output = (conv.weight_mask == 0).sum(dim=0)  # over input features
        assert per_output.tolist() == [round(0.3 * conv.nx)] * conv.nf, name


def test_scores_are_in_the_storage_layout():
    """importance_scores has the Conv1D weight's shape: norms broadcast along dim 0."""
    model = tiny_gpt2()
    reference = with_linears(model)
    name = "transformer.h.0.mlp.c_proj"  # (128, 32): in != out, so a wrong axis would fail
    crits = [wanda_all(m, [name], sparsity=0.5) for m in (model, reference)]
    conv, linear = model.get_submodule(name), reference.get_submodule(name)
    norms = crits[0].input_norms(conv)
    assert norms.shape == (conv.nx,) == (128,)
    scores = crits[0].importance_scores(conv, "weight")
    assert scores.shape == conv.weight.shape == (128, 32)
    # The weight as pruned (zeros where masked), |W[j, i]| * ||X_j||: row j of (in, out).
    expected = conv.weight.detach().double().abs() * norms.unsqueeze(1)
    torch.testing.assert_close(scores, expected.float())
    linear_scores = crits[1].importance_scores(linear, "weight")
    torch.testing.assert_close(scores.T, linear_scores)


def test_observe_expects_inputs_of_in_features():
    """A Conv1D's input is (..., in_features) like a Linear's; other widths are refused."""
    conv = Conv1D(6, 4)  # nf=6 outputs, nx=4 inputs: weight (4, 6)
    crit = WandaCriterion(0.5)
    crit.observe(conv, "weight", (torch.ones(3, 5, 4),), None)
    assert crit.input_norms(conv).tolist() == [15**0.5] * 4
    with pytest.raises(InvalidArgumentError, match=r"shape \(3, 6\); expected \(\.\.\., 4\)"):
        crit.observe(conv, "weight", (torch.ones(3, 6),), None)


def test_conv1d_bias_is_refused_and_nothing_changes():
    model = tiny_gpt2()
    before = ModelSnapshot.take(model)
    with pytest.raises(InvalidArgumentError, match="not 'bias'"):
        LayerPruningContext(
            {("transformer.h.0.attn.c_attn", "bias"): WandaCriterion(0.5)}, model=model
        ).prune(calibration_data=token_batches())
    assert before.diff(ModelSnapshot.take(model)) == []


def test_other_modules_of_the_model_are_refused_naming_what_is_accepted():
    """An embedding is not linear-like: InvalidTypeError listing the accepted types."""
    model = tiny_gpt2()
    before = ModelSnapshot.take(model)
    with pytest.raises(InvalidTypeError, match="got a Embedding") as info:
        LayerPruningContext({"transformer.wte": WandaCriterion(0.5)}, model=model).prune(
            calibration_data=token_batches()
        )
    message = str(info.value)
    assert "Accepted: Linear (weight (out_features, in_features))" in message
    assert "transformers.pytorch_utils.Conv1D (weight (in_features, out_features))" in message
    assert before.diff(ModelSnapshot.take(model)) == []


def test_make_permanent_keeps_the_pruned_function():
    model = tiny_gpt2()
    wanda_all(model, conv1d_names(model), pattern="2:4")
    batch = token_batches(seed=2)[0]
    with torch.no_grad():
        pruned = model(batch).logits
    make_permanent(model)
    with torch.no_grad():
        assert torch.equal(model(batch).logits, pruned)
    for name in conv1d_names(model):
        weight = model.get_submodule(name).weight
        assert ((weight.T.reshape(weight.shape[1], -1, 4) != 0).sum(dim=-1) == 2).all()


# -- [wanda(0.5), nm(2, 4)] is not 2:4 Wanda -------------------------------------------------------


def group_counts(model: nn.Module, names: list[str]) -> tuple[float, torch.Tensor]:
    """(pruned fraction, kept entries of every group of 4 inputs) over the Conv1D weights."""
    masks = [model.get_submodule(name).weight_mask.T for name in names]  # (out, in)
    pruned = sum(int((mask == 0).sum()) for mask in masks) / sum(mask.numel() for mask in masks)
    return pruned, torch.cat([mask.reshape(-1, 4).sum(dim=1) for mask in masks])


def test_stacking_wanda_and_nm_is_not_two_four_wanda():
    """[wanda(0.5), nm(2, 4)] ends near 59% with groups of 0 or 1; pattern="2:4" is exact.

    Wanda first prunes half of every row wherever the low scores are, so groups of 4
    keep 0 to 4 weights; nm then cuts the groups with 3 or 4 survivors to 2 and cannot
    refill the others: roughly 1 - E[min(survivors, 2)] / 4 = 59% sparsity.
    """
    nm = pytest.importorskip("prunefw_nm")
    names = conv1d_names(tiny_gpt2())
    for seed in range(3):
        stacked = tiny_gpt2(seed)
        LayerPruningContext(
            {name: [WandaCriterion(0.5), nm.NMCriterion(2, 4)] for name in names}, model=stacked
        ).prune(calibration_data=token_batches())
        sparsity, kept = group_counts(stacked, names)
        zero, one = (float((kept == k).float().mean()) for k in (0, 1))
        print(
            f"\n[seed {seed}] [wanda(0.5), nm(2, 4)] on the Conv1D weights: {sparsity:.2%} "
            f"pruned; of the groups of 4, {zero:.1%} keep 0 weights and {one:.1%} keep 1"
        )
        below = zero + one
        assert 0.55 < sparsity < 0.65
        assert below > 0.2
        assert (kept <= 2).all()

        two_four = tiny_gpt2(seed)
        wanda_all(two_four, names, pattern="2:4")
        sparsity, kept = group_counts(two_four, names)
        assert sparsity == 0.5
        assert (kept == 2).all()


def test_nm_before_wanda_leaves_wanda_nothing_to_do():
    """[nm(2, 4), wanda(0.5)]: nm already pruned half of every row, so Wanda is a no-op."""
    nm = pytest.importorskip("prunefw_nm")
    names = conv1d_names(tiny_gpt2())
    stacked, magnitude = tiny_gpt2(), tiny_gpt2()
    LayerPruningContext(
        {name: [nm.NMCriterion(2, 4), WandaCriterion(0.5)] for name in names}, model=stacked
    ).prune(calibration_data=token_batches())
    LayerPruningContext({name: nm.NMCriterion(2, 4) for name in names}, model=magnitude).prune()
    for name in names:
        assert torch.equal(
            stacked.get_submodule(name).weight_mask, magnitude.get_submodule(name).weight_mask
        )
