"""N:M on Hugging Face's Conv1D (GPT-2): groups run along the INPUT features.

A Conv1D stores its weight as (in_features, out_features). The 2:4 kernels need
groups of 4 consecutive input features of each output, i.e. groups along dim 0 of
the stored weight. NMCriterion's PRUNING_TYPE is "global", so the layer context
hands it the (out, in) view and transposes its mask back.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

from prunefw import LayerPruningContext, make_permanent
from prunefw.errors import InvalidArgumentError
from prunefw.testing import ModelSnapshot
from prunefw_nm import NMCriterion

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


def kept_per_input_group(mask: torch.Tensor, m: int) -> torch.Tensor:
    """Kept entries of every group of m consecutive input features of each output.

    ``mask`` is a Conv1D mask, stored (in, out): ``mask.T`` is (out, in).
    """
    out_features, in_features = mask.T.shape
    return mask.T.reshape(out_features, in_features // m, m).sum(dim=-1)


def test_the_criterion_sees_the_tensor_shape():
    """Only shape-aware criteria get the (out, in) view: nm must not be "unstructured"."""
    assert NMCriterion.PRUNING_TYPE == "global"
    assert NMCriterion.PruningMethod.PRUNING_TYPE == "global"


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8)])
def test_every_group_of_m_input_features_keeps_n_on_gpt2(n, m):
    """On every Conv1D of GPT-2: mask.T.reshape(out, in // m, m) sums to n everywhere."""
    model = tiny_gpt2()
    names = conv1d_names(model)
    assert len(names) == 8
    LayerPruningContext({name: NMCriterion(n, m) for name in names}, model=model).prune()
    for name in names:
        conv = model.get_submodule(name)
        assert conv.weight_mask.shape == (conv.nx, conv.nf)  # the stored layout is kept
        assert (kept_per_input_group(conv.weight_mask, m) == n).all(), name
        assert (kept_per_input_group(conv.weight.detach() != 0, m) == n).all(), name


def test_masks_are_the_transposed_masks_of_the_equivalent_linears():
    model = tiny_gpt2()
    reference = with_linears(model)
    names = conv1d_names(model)
    LayerPruningContext({name: NMCriterion(2, 4) for name in names}, model=model).prune()
    LayerPruningContext({name: NMCriterion(2, 4) for name in names}, model=reference).prune()
    for name in names:
        conv, linear = model.get_submodule(name), reference.get_submodule(name)
        assert torch.equal(conv.weight_mask.T, linear.weight_mask), name
    batch = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(batch).logits, reference(batch).logits)


def test_groups_run_along_dim_0_of_the_stored_weight():
    """Stored (in, out) weight: a group is 4 inputs of one output, not 4 outputs."""
    conv = Conv1D(4, 4)  # nf=4 outputs, nx=4 inputs
    with torch.no_grad():
        # Larger for later inputs (dim 0), and in each row larger for later outputs.
        conv.weight.copy_(torch.arange(1.0, 17.0).reshape(4, 4))
    LayerPruningContext({conv: NMCriterion(2, 4)}).prune()
    # Each output keeps its two largest inputs, 2 and 3: rows 2 and 3 of the stored mask.
    # (Groups along the stored rows would have kept columns 2 and 3 instead.)
    assert conv.weight_mask.tolist() == [[0.0] * 4, [0.0] * 4, [1.0] * 4, [1.0] * 4]


def test_in_features_not_a_multiple_of_m_is_refused():
    """Conv1D(nf=8, nx=6): 6 inputs per output do not split into groups of 4."""
    conv = Conv1D(8, 6)
    before = ModelSnapshot.take(conv)
    with pytest.raises(InvalidArgumentError, match="m=4") as info:
        LayerPruningContext({conv: NMCriterion(2, 4)}).prune()
    assert "is 6, not a multiple" in str(info.value)
    assert before.diff(ModelSnapshot.take(conv)) == []


def test_make_permanent_keeps_the_pattern_in_the_stored_layout():
    model = tiny_gpt2()
    names = conv1d_names(model)
    LayerPruningContext({name: NMCriterion(2, 4) for name in names}, model=model).prune()
    make_permanent(model)
    for name in names:
        weight = model.get_submodule(name).weight
        assert isinstance(weight, nn.Parameter)
        assert (kept_per_input_group(weight.detach() != 0, 4) == 2).all(), name
