"""prunefw on real transformer architectures built from configs: GPT-2, Llama, BERT, OPT.

Default targets (Conv1D in, embeddings and output head out), tied weights pruned as
one tensor, masked logits equal to permanent logits bit for bit, generation unchanged
by make_permanent, save/load, and the guards on save_pretrained and tie_weights.
"""

from __future__ import annotations

import copy
import warnings

import hf_models
import pytest
import torch
from hf_models import BUILDERS, CAUSAL, logits, tokens
from torch import nn

from prunefw import (
    GlobalPruningContext,
    LayerPruningContext,
    MagnitudeCriterion,
    criterion,
    load_pruned_state_dict,
    make_permanent,
    prune_model,
    sparsity_report,
)
from prunefw.errors import TargetError, WholeTensorPrunedWarning
from prunefw.huggingface import MaskedModelError
from prunefw.layouts import weight_layout
from prunefw.testing import ModelSnapshot

transformers = hf_models.transformers
STRATEGIES = ["global_unstructured", "streaming"]
TIED = ["gpt2", "llama-tied", "bert-mlm", "opt"]


def linear_like(model: nn.Module) -> list[str]:
    """Qualified names of every Linear and Conv1D, the output head included."""
    conv1d = transformers.pytorch_utils.Conv1D
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, conv1d))]


def head_name(model: nn.Module) -> str:
    head = model.get_output_embeddings()
    return next(name for name, module in model.named_modules() if module is head)


def is_tied(model: nn.Module) -> bool:
    return model.get_input_embeddings().weight is model.get_output_embeddings().weight


@pytest.mark.parametrize("name", list(BUILDERS))
def test_default_targets_are_the_blocks_linear_layers(name):
    model = BUILDERS[name]()
    ctx = GlobalPruningContext(model, MagnitudeCriterion(amount=0.5))
    selected = [t.module_name for t in ctx.targets]
    head = head_name(model)
    assert selected == [n for n in linear_like(model) if n != head]
    assert not any(isinstance(t.module, nn.Embedding) for t in ctx.targets)
    with_head = GlobalPruningContext(
        model, MagnitudeCriterion(amount=0.5), include_output_head=True
    )
    assert head in [t.module_name for t in with_head.targets]


def test_gpt2_conv1d_is_a_default_target_in_its_layout():
    model = hf_models.gpt2()
    ctx = GlobalPruningContext(model, MagnitudeCriterion(amount=0.5))
    assert len(ctx.targets) == 8  # c_attn, attn.c_proj, c_fc, mlp.c_proj in 2 blocks
    assert {weight_layout(t.module) for t in ctx.targets} == {"in_out"}
    ctx.prune()
    report = sparsity_report(model, pruned_only=True)
    assert report.sparsity == 0.5
    assert {t.module for t in report.tensors} == {t.module_name for t in ctx.targets}


def test_module_types_by_name_in_the_python_api():
    model = hf_models.gpt2()
    ctx = GlobalPruningContext(
        model, MagnitudeCriterion(amount=0.5), module_types=["Linear", "Conv1D"]
    )
    assert len(ctx.targets) == 8  # lm_head (Linear) is still left out by default


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", list(BUILDERS))
def test_default_call_masked_equals_permanent(name, strategy):
    model = BUILDERS[name]()
    ids = tokens()
    dense = logits(model, ids)
    GlobalPruningContext(model, MagnitudeCriterion(amount=0.5), strategy=strategy).prune()
    assert sparsity_report(model, pruned_only=True).sparsity == pytest.approx(0.5, abs=1e-3)
    masked = logits(model, ids)
    assert not torch.equal(masked, dense)
    make_permanent(model)
    assert torch.equal(logits(model, ids), masked)


@pytest.mark.parametrize("name", CAUSAL)
def test_generate_is_unchanged_by_make_permanent(name):
    model = BUILDERS[name]()
    prompt = tokens(batch=1, length=6)
    GlobalPruningContext(model, MagnitudeCriterion(amount=0.5)).prune()
    masked = model.generate(prompt, max_new_tokens=8, do_sample=False)
    make_permanent(model)
    assert torch.equal(model.generate(prompt, max_new_tokens=8, do_sample=False), masked)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", TIED)
def test_tied_output_head_is_one_tensor_with_one_mask(name, strategy):
    model = BUILDERS[name]()
    assert is_tied(model)
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    ctx = GlobalPruningContext(
        model, MagnitudeCriterion(amount=0.5), strategy=strategy, include_output_head=True
    )
    tied = [t for t in ctx.targets if t.aliases]
    assert len(tied) == 1
    assert {tied[0].module, tied[0].aliases[0].module} == {embedding, head}
    ids = tokens()
    ctx.prune()
    assert embedding.weight_orig is head.weight_orig
    assert embedding.weight_mask is head.weight_mask
    assert torch.equal(embedding.weight, head.weight)
    assert float((head.weight_mask == 0).float().mean()) > 0
    # Counted once: exactly half of the distinct weights are pruned.
    report = sparsity_report(model, pruned_only=True)
    assert report.numel == sum(getattr(t.module, t.name).numel() for t in ctx.targets)
    assert report.sparsity == pytest.approx(0.5, abs=1e-6)
    masked = logits(model, ids)
    make_permanent(model)
    assert is_tied(model)
    assert torch.equal(logits(model, ids), masked)


def test_both_strategies_give_the_same_masks_on_a_tied_model():
    masks = []
    for strategy in STRATEGIES:
        model = hf_models.gpt2()
        GlobalPruningContext(
            model, MagnitudeCriterion(amount=0.5), strategy=strategy, include_output_head=True
        ).prune()
        masks.append({k: v for k, v in model.state_dict().items() if k.endswith("_mask")})
    assert masks[0].keys() == masks[1].keys()
    assert all(torch.equal(masks[0][k], masks[1][k]) for k in masks[0])


def test_one_parameter_named_through_two_modules_is_counted_once():
    model = hf_models.gpt2()
    wte, head = model.transformer.wte, model.lm_head
    ctx = GlobalPruningContext(
        model, MagnitudeCriterion(amount=100), parameters=[(head, "weight"), (wte, "weight")]
    )
    assert len(ctx.targets) == 1
    ctx.prune()
    assert int((head.weight_mask == 0).sum()) == 100
    assert wte.weight_mask is head.weight_mask


def test_layer_context_tied_weight_gets_one_mask_and_refuses_two_keys():
    model = hf_models.llama_tied()
    with pytest.raises(TargetError, match=r"one shared Parameter \(tied weights\)"):
        LayerPruningContext(
            {
                "lm_head": MagnitudeCriterion(amount=0.5),
                "model.embed_tokens": criterion("random", prune_ratio=0.5),
            },
            model=model,
        )
    ids = tokens()
    LayerPruningContext({"lm_head": MagnitudeCriterion(amount=0.5)}, model=model).prune()
    assert model.model.embed_tokens.weight_mask is model.lm_head.weight_mask
    masked = logits(model, ids)
    make_permanent(model)
    assert is_tied(model)
    assert torch.equal(logits(model, ids), masked)


@pytest.mark.parametrize("name", TIED)
def test_tied_masked_model_deepcopies_and_reloads(name):
    model = BUILDERS[name]()
    GlobalPruningContext(model, MagnitudeCriterion(amount=0.5), include_output_head=True).prune()
    ids = tokens()
    masked = logits(model, ids)
    clone = copy.deepcopy(model)
    assert torch.equal(logits(clone, ids), masked)
    assert clone.get_input_embeddings().weight_orig is clone.get_output_embeddings().weight_orig
    fresh = BUILDERS[name]()
    with torch.no_grad():
        for param in fresh.parameters():
            param.add_(1.0)  # different weights: everything must come from the state_dict
    load_pruned_state_dict(fresh, model.state_dict())
    assert torch.equal(logits(fresh, ids), masked)
    assert fresh.get_input_embeddings().weight_mask is fresh.get_output_embeddings().weight_mask
    make_permanent(fresh)
    assert is_tied(fresh)
    assert torch.equal(logits(fresh, ids), masked)


def test_tie_weights_on_a_masked_model_keeps_it_consistent():
    model = hf_models.gpt2()
    GlobalPruningContext(model, MagnitudeCriterion(amount=0.5), include_output_head=True).prune()
    ids = tokens()
    masked = logits(model, ids)
    model.tie_weights()
    assert torch.equal(logits(model, ids), masked)
    make_permanent(model)
    model.tie_weights()
    assert is_tied(model)
    assert torch.equal(logits(model, ids), masked)


def test_save_pretrained_of_a_masked_model_stops_and_points_to_make_permanent(tmp_path):
    model = hf_models.llama()
    GlobalPruningContext(model, MagnitudeCriterion(amount=0.5)).prune()
    with pytest.raises(MaskedModelError, match=r"make_permanent\(model\) first"):
        model.save_pretrained(tmp_path / "masked")
    assert not (tmp_path / "masked").exists()
    ids = tokens()
    masked = logits(model, ids)
    make_permanent(model)
    model.save_pretrained(tmp_path / "permanent")
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "permanent").eval()
    assert torch.equal(logits(loaded, ids), masked)


def test_permanent_tied_model_saves_and_loads_tied(tmp_path):
    model = hf_models.gpt2()
    GlobalPruningContext(model, MagnitudeCriterion(amount=0.5), include_output_head=True).prune()
    ids = tokens()
    masked = logits(model, ids)
    make_permanent(model).save_pretrained(tmp_path)
    loaded = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert is_tied(loaded)
    assert torch.equal(logits(loaded, ids), masked)
    assert torch.equal(loaded.lm_head.weight == 0, model.lm_head.weight == 0)
    assert bool((loaded.lm_head.weight == 0).any())


def test_guards_follow_deepcopy_and_go_with_make_permanent():
    model = hf_models.gpt2()
    GlobalPruningContext(model, MagnitudeCriterion(amount=0.5)).prune()
    clone = copy.deepcopy(model)
    assert vars(clone)["save_pretrained"].model is clone
    make_permanent(model)
    assert "save_pretrained" not in vars(model)
    assert "tie_weights" not in vars(model)


def test_failed_prune_of_a_tied_model_changes_nothing():
    model = hf_models.gpt2()
    before = ModelSnapshot.take(model)

    class Boom(MagnitudeCriterion):
        name = "boom"

        def compute_mask(self, scores, default_mask):
            raise RuntimeError("injected")

    with pytest.raises(RuntimeError, match="injected"):
        LayerPruningContext(
            {
                "transformer.h.*.mlp.c_fc": MagnitudeCriterion(amount=0.5),
                "lm_head": Boom(amount=0.5),
            },
            model=model,
        ).prune()
    assert before.diff(ModelSnapshot.take(model)) == []
    assert "save_pretrained" not in vars(model)


def test_nm_on_gpt2_conv1d_groups_along_the_input_dimension():
    model = hf_models.gpt2()
    ctx = LayerPruningContext({"transformer.h.*.mlp.c_fc": criterion("nm", n=2, m=4)}, model=model)
    assert len(ctx.targets) == 2
    ctx.prune()
    for target in ctx.targets:
        mask = target.module.weight_mask  # stored (in, out)
        out_features = mask.shape[1]
        groups = mask.T.reshape(out_features, -1, 4)
        assert torch.equal(groups.sum(-1), torch.full(groups.shape[:2], 2.0))


def test_layer_context_glob_keys():
    model = hf_models.llama()
    ctx = LayerPruningContext(
        {"model.layers.*.mlp.*_proj": MagnitudeCriterion(amount=0.5)}, model=model
    )
    assert [t.module_name for t in ctx.targets] == [
        f"model.layers.{i}.mlp.{p}_proj" for i in range(2) for p in ("gate", "up", "down")
    ]
    with pytest.raises(TargetError, match=r"no module matching 'model\.layers\.\*\.nope'"):
        LayerPruningContext({"model.layers.*.nope": MagnitudeCriterion(amount=0.5)}, model=model)


def test_threshold_that_prunes_a_whole_tensor_warns():
    model = hf_models.llama()
    q_proj = model.model.layers[0].self_attn.q_proj
    with pytest.warns(
        WholeTensorPrunedWarning, match=r"model\.layers\.0\.self_attn\.q_proj\.weight"
    ):
        LayerPruningContext({q_proj: MagnitudeCriterion(min_threshold=10.0)}, model=model).prune()
    other = hf_models.llama()
    with warnings.catch_warnings():
        warnings.simplefilter("error", WholeTensorPrunedWarning)
        LayerPruningContext(
            {other.model.layers[0].self_attn.q_proj: MagnitudeCriterion(amount=0.5)}, model=other
        ).prune()


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_prune_model_in_one_call(name):
    model = BUILDERS[name]()
    ids = tokens()
    events = []
    ctx = prune_model(model, "magnitude", 0.5, progress=events.append)
    assert [s.scope for s in ctx.steps] == ["global"]
    assert [(e.stage, e.done, e.total) for e in events] == [("prune", 1, 1)]
    assert sparsity_report(model, pruned_only=True).sparsity == pytest.approx(0.5, abs=1e-3)
    layered = BUILDERS[name]()
    ctx = prune_model(layered, "magnitude", 0.5, scope="layer")
    assert {s.scope for s in ctx.steps} == {"layer"}
    for target in ctx.targets:
        mask = target.module.weight_mask
        assert int((mask == 0).sum()) == round(0.5 * mask.numel())
    masked = logits(layered, ids)
    make_permanent(layered)
    assert torch.equal(logits(layered, ids), masked)


def test_progress_reports_calibration_batches_then_steps():
    model = hf_models.llama()
    batches = [tokens(seed=i) for i in range(3)]
    events = []
    ctx = prune_model(model, "wanda", 0.5, calibration_data=batches, progress=events.append)
    steps = len(ctx.steps)
    assert steps == 14  # 7 linear layers in each of 2 blocks, each on its own
    assert [(e.stage, e.done, e.total) for e in events] == [
        *(("calibrate", i, 3) for i in (1, 2, 3)),
        *(("prune", i, steps) for i in range(1, steps + 1)),
    ]


def test_a_token_id_tensor_is_one_calibration_batch():
    model = hf_models.llama()
    events = []
    prune_model(model, "wanda", 0.5, calibration_data=tokens(batch=4), progress=events.append)
    assert [(e.stage, e.done, e.total) for e in events if e.stage == "calibrate"] == [
        ("calibrate", 1, 1)
    ]
